"""Concurrency and shutdown: h2load with one repeated report (idempotent under concurrency),
distinct reports on many concurrent streams (exact row counts), and SIGTERM under load (every
report that got 204 is in the database). Load is bounded in count and time."""
import re
import signal
import subprocess
import threading
import time
from collections import Counter

from helpers import (EXPORTER_HEADERS_UA, STATS_TABLES, H2Client, body_bytes,
                     expected_counts, fixture_envelope, fixture_files, load_fixture,
                     make_envelope, need_tool, wait_until)


def stats_rows_by_connection(db):
    total = Counter()
    for t in STATS_TABLES:
        total.update(db.counts_by_connection(t))
    return total


def test_h2load_one_report_2000_times(kohaku, db, tmp_path):
    need_tool("h2load")
    env = fixture_envelope(max(fixture_files(), key=lambda p: len(load_fixture(p))))
    body = tmp_path / "report.json"
    body.write_bytes(body_bytes(env))
    out = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "32", "-d", str(body),
         "-H", "x-sora-stats-exporter-type: connection.user-agent",
         "-H", "content-type: application/json", f"{kohaku.url}/collector"],
        capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", text)
    assert m, text
    assert m.groups() == ("2000", "2000", "2000", "2000", "0", "0"), text
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    assert m, text
    assert m.groups() == ("2000", "0", "0", "0"), text
    # 2000 deliveries of one report store it once
    want = expected_counts(env["stats"])
    assert {t: db.count(t) for t in STATS_TABLES} == {t: want.get(t, 0) for t in STATS_TABLES}
    assert db.count("sora_connection") == 1


def run_clients(port, body_groups, concurrency, on_result=None, stop=None, timeout=90):
    """One H2Client (one TCP connection) per group, each in its own thread."""
    results = [None] * len(body_groups)
    errors = []

    def worker(i):
        try:
            cb = (lambda idx, res: on_result(i, idx, res)) if on_result else None
            results[i] = H2Client(port, timeout=timeout).post_all(
                body_groups[i], EXPORTER_HEADERS_UA, concurrency=concurrency, on_result=cb,
                stop=stop)
        except Exception as e:  # reported by the test
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(len(body_groups))]
    for t in threads:
        t.start()
    return threads, results, errors


def test_distinct_reports_on_concurrent_streams(kohaku, db):
    """64 distinct reports from every fixture over 4 connections x 16 open streams, with 6
    invalid reports among them: exact row counts, and only the invalid ones refused."""
    files = fixture_files()
    envs, bodies, invalid = [], [], set()
    for i in range(70):
        env = fixture_envelope(files[i % len(files)])
        if i % 12 == 5:
            env["connection_id"] += "X"  # 27 characters
            invalid.add(i)
        envs.append(env)
        bodies.append(body_bytes(env))
    groups = [bodies[i::4] for i in range(4)]
    index = [list(range(len(bodies)))[i::4] for i in range(4)]
    threads, results, errors = run_clients(kohaku.port, groups, concurrency=16)
    for t in threads:
        t.join(120)
    assert not errors, errors
    statuses = {}
    for g, res in enumerate(results):
        for j, r in enumerate(res):
            statuses[index[g][j]] = r["status"]
    assert {i for i, s in statuses.items() if s == 400} == invalid
    assert {i for i, s in statuses.items() if s == 204} == set(range(len(bodies))) - invalid

    want = Counter()
    for i, env in enumerate(envs):
        if i not in invalid:
            want.update(expected_counts(env["stats"]))
    assert {t: db.count(t) for t in STATS_TABLES} == {t: want.get(t, 0) for t in STATS_TABLES}
    assert db.count("sora_connection") == len(envs) - len(invalid)
    per_conn = stats_rows_by_connection(db)
    for i, env in enumerate(envs):
        if i not in invalid:
            assert per_conn[env["connection_id"]] == len(env["stats"]), i


def test_sigterm_under_load_keeps_every_acknowledged_report(kohaku_factory, db):
    """Four connections keep 8 streams each busy with distinct reports; SIGTERM arrives after
    the first 100 acknowledgements. kohaku exits 0 in time and every 204 is stored in full."""
    k = kohaku_factory(shutdown_timeout=10, batch_max_delay_ms=5)
    stats = load_fixture(min(fixture_files(), key=lambda p: len(load_fixture(p))))
    envs = [make_envelope(stats) for _ in range(2400)]
    bodies = [body_bytes(e) for e in envs]
    groups = [list(range(len(envs)))[i::4] for i in range(4)]
    lock = threading.Lock()
    acked, other, dropped = [], Counter(), []

    def on_result(g, idx, res):
        with lock:
            if res["status"] == 204:
                acked.append(groups[g][idx])
            elif res["outcome"] == "response":
                other[res["status"]] += 1
            elif res["outcome"] not in ("refused", "unsent"):
                # the server accepted the stream (no GOAWAY refused it) and never answered
                dropped.append((g, res["stream_id"], res["outcome"], res["goaway"]))

    stop = threading.Event()
    threads, _, errors = run_clients(k.port, [[bodies[i] for i in g] for g in groups],
                                     concurrency=8, on_result=on_result, stop=stop, timeout=60)
    try:
        wait_until(lambda: len(acked) >= 100 or not any(t.is_alive() for t in threads), 30,
                   interval=0.005, message="100 acknowledged reports")
        acked_at_signal = len(acked)
        assert acked_at_signal < len(envs), "the load finished before SIGTERM: not under load"
        t0 = time.monotonic()
        k.signal(signal.SIGTERM)
        rc = k.wait_exit(20)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert rc == 0, k.describe()
    assert elapsed < 15, f"exit took {elapsed:.1f}s"
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert acked_at_signal >= 100
    # in-flight streams are finished: every stream was answered (204, or 503 once shutting
    # down) unless the server's GOAWAY refused it
    assert set(other) <= {503}, other
    assert not dropped, f"{len(dropped)} accepted streams never answered: {dropped[:8]}"

    stored = {r["connection_id"] for r in db.rows("sora_connection")}
    per_conn = stats_rows_by_connection(db)
    missing = [envs[i]["connection_id"] for i in acked if envs[i]["connection_id"] not in stored]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged reports not stored"
    partial = [envs[i]["connection_id"] for i in acked
               if per_conn[envs[i]["connection_id"]] != len(stats)]
    assert not partial, f"{len(partial)} acknowledged reports stored partially"
    # nothing stored that was never sent, and no report split across the shutdown
    sent = {e["connection_id"] for e in envs}
    assert stored <= sent
    assert all(n == len(stats) for n in per_conn.values())

"""PostgreSQL backend end to end (issue: PostgreSQL and TimescaleDB storage): a real
PostgreSQL 15 cluster, the real daemon, real clients."""
import json
import os
import subprocess
import threading
import time

import pytest

from harness import (BIN, Kohaku, all_counts, envelope, fixture_files, load_stats, loadgen,
                     now_rfc3339, post_h2, sora_id, table_of)
from pgcluster import unique_db_name
from harness import PgStore
from stores import pg_cluster, pg_store, store  # noqa: F401  (pytest fixtures)


@pytest.fixture
def daemon():
    started = []

    def start(settings, env=None, ready=True):
        k = Kohaku(settings, env)
        started.append(k)
        return k.wait_ready() if ready else k

    yield start
    for k in started:
        rc = k.close()
        assert rc == 0, f"kohaku exited {rc}:\n{k.log_text()[-4000:]}"


def test_fixture_reports_stored_once_per_backend(store, daemon):
    """Every fixture report -> 204, one row per stats object in the right table, then a
    second delivery stores nothing new. Runs on SQLite and on PostgreSQL."""
    k = daemon(store.settings())
    expected = {}
    bodies = []
    for path in fixture_files():
        stats = load_stats(path)
        env = envelope(stats)
        bodies.append(env)
        for obj in stats:
            expected[table_of(obj)] = expected.get(table_of(obj), 0) + 1
        status, text, _ = post_h2(k.port, env)
        assert status == 204, text
    counts = all_counts(store)
    for table, n in expected.items():
        assert counts[table] == n, table
    assert counts["sora_connection"] == len(bodies)
    assert counts["sora_report"] == len(bodies)
    for env in bodies[:4]:
        assert post_h2(k.port, env)[0] == 204
    assert all_counts(store) == counts
    # typed values survive the trip: a 64-bit priority above 2^53, a float, JSON
    chromium = next(p for p in fixture_files() if "chromium-av-sender" in p)
    pair = next(o for o in load_stats(chromium) if o["type"] == "candidate-pair")
    rows = store.query('SELECT priority, stats_timestamp FROM "rtc_ice_candidate_pair_stats" '
                       "WHERE stats_id = ? ORDER BY priority", (pair["id"],))
    assert (pair["priority"], pair["timestamp"]) in [(int(a), float(b)) for a, b in rows]


def test_kohaku_2023_config_selects_postgres(pg_store, daemon):
    """A Kohaku 2023.1 config.ini (postgres_uri, no storage key) needs no edits."""
    k = daemon({"postgres_uri": pg_store.uri, "http2_max_concurrent_streams": 250,
                "http2_max_read_frame_size": 1048576, "http2_idle_timeout": 1800,
                "log_stdout": "true", "exporter_https": "false", "postgres_ca_cert_file": "",
                "tls_fullchain_file": "", "tls_privkey_file": "", "tls_verify_cacert_path": ""})
    assert '"storage":"postgres"' in k.log_text()
    env = envelope(load_stats(fixture_files()[0]))
    assert post_h2(k.port, env)[0] == 204
    assert pg_store.count("sora_report", "report_id = ?", (env["id"],)) == 1


def test_startup_log_names_the_mode(pg_store, daemon):
    """The plain cluster never preloads TimescaleDB, installed or not: postgresql mode, in
    the start-up line and in the mode gauge (the TimescaleDB modes: test_timescaledb.py)."""
    k = daemon(pg_store.settings())
    k.wait_log('"msg":"postgres schema ready"')
    ready = [l for l in k.log_lines() if l.get("msg") == "postgres schema ready"]
    assert len(ready) == 1
    assert (ready[0]["mode"], ready[0]["compression"], ready[0]["retention"]) == (
        "postgresql", False, "kohaku")
    assert k.metrics()[("kohaku_storage_mode", frozenset({("mode", "postgresql")}))] == 1


@pytest.mark.parametrize("kind", ["sqlite", "null"])
def test_storage_mode_gauge_of_the_other_backends(kind, daemon, tmp_path):
    settings = {"storage": kind}
    if kind == "sqlite":
        settings["sqlite_path"] = str(tmp_path / "kohaku.db")
    k = daemon(settings)
    modes = {dict(labels)["mode"]: v for (name, labels), v in k.metrics().items()
             if name == "kohaku_storage_mode"}
    assert modes == {kind: 1}


METHODS = ["unnest", "copy", "direct_copy"]


def test_every_write_method_and_copy_format_stores_the_same_values(pg_cluster, daemon):
    """The same fixture reports written by unnest (array text), copy and direct_copy with
    COPY's text format, and direct_copy with its binary format (the default) land as the
    same values in every column of every table: integers above 2^53, floats, booleans, text,
    jsonb `extra`, timestamps."""
    envs = [envelope(load_stats(p)) for p in fixture_files()]
    envs.append(envelope(load_stats(fixture_files()[0]), timestamp="0001-01-01T00:00:00.5Z"))
    variants = [("unnest", "text"), ("copy", "text"), ("direct_copy", "text"),
                ("copy", "binary"), ("direct_copy", "binary")]
    dumps, stores = {}, {}
    for method, fmt in variants:
        st = stores[(method, fmt)] = PgStore(pg_cluster, unique_db_name())
        k = daemon(dict(st.settings(), postgres_write_method=method, postgres_copy_format=fmt))
        for env in envs:
            status, text, _ = post_h2(k.port, env)
            assert status == 204, text
        dump = {}
        tables = [r[0] for r in st.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' AND left(table_name, 4) = 'rtc_' ORDER BY 1")]
        for t in tables:
            cols = [r[0] for r in st.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position", (t,))]
            # every column as PostgreSQL prints it (float8 with all its digits)
            sel = ", ".join(f'"{c}"::text' for c in cols)
            dump[t] = (cols, st.query(f'SELECT {sel} FROM "{t}" ORDER BY 1, 2, 3, 4, 5'))
        dumps[(method, fmt)] = dump
        assert sum(len(rows) for _, rows in dump.values()) == sum(len(e["stats"]) for e in envs)
    base = dumps[variants[0]]
    for v in variants[1:]:
        for t in base:
            assert dumps[v][t] == base[t], f"{v} differs from unnest in {t}"
    # and the values are the fixtures' own: spot checks across types
    cols, rows = base["rtc_ice_candidate_pair_stats"]
    assert any(int(r[cols.index("priority")]) > 2 ** 53 for r in rows)
    for v in variants:
        assert stores[v].count("rtc_transport_stats",
                               "\"time\" = '0001-01-01T00:00:00.5Z'::timestamptz") == 1, v


@pytest.mark.parametrize("method", METHODS)
def test_redelivery_stores_nothing_new(pg_store, daemon, method):
    """Every write method is idempotent: the same reports again (alone, and mixed with new
    ones in one batch) are answered 204 and add no row."""
    k = daemon(dict(pg_store.settings(), postgres_write_method=method, batch_max_delay_ms=100))
    assert f'"write_method":"{method}"' in k.log_text()
    envs = [envelope(load_stats(p)) for p in fixture_files()]
    for env in envs:
        assert post_h2(k.port, env)[0] == 204
    counts = all_counts(pg_store)
    assert counts["sora_report"] == len(envs)
    for env in envs[:3]:
        assert post_h2(k.port, env)[0] == 204
    assert all_counts(pg_store) == counts
    if method == "direct_copy":  # COPY met the stored rows and the batch went the other way
        k.wait_log("direct_copy: rows already stored")
    # old and new together, sent at once so that they share batches
    fresh = [envelope(load_stats(p)) for p in fixture_files()[:4]]
    results = []
    threads = [threading.Thread(target=lambda e=e: results.append(post_h2(k.port, e)[0]))
               for e in envs[:4] + fresh]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [204] * 8
    after = all_counts(pg_store)
    assert after["sora_report"] == len(envs) + len(fresh)
    nobj = sum(len(e["stats"]) for e in envs + fresh)
    assert sum(after[t] for t in after if t not in ("sora_report", "sora_connection")) == nobj
    # the metrics count what the database took, not what was sent: 7 redeliveries stored
    # nothing (whichever way each batch went)
    m = k.metrics()
    assert m[("kohaku_reports_stored_total", frozenset({("kind", "connection")}))] == \
        len(envs) + len(fresh)
    assert m[("kohaku_reports_duplicate_total", frozenset())] == 7
    for table in ("rtc_codec_stats", "rtc_transport_stats", "rtc_inbound_rtp_stream_stats"):
        assert m[("kohaku_rows_stored_total", frozenset({("table", table)}))] == after[table], \
            table


def test_node_stats_of_unknown_type_on_postgres(pg_store, daemon):
    """node_other_stats on PostgreSQL: one row per unknown item with its position, all
    members in extra; a redelivery adds nothing."""
    k = daemon(pg_store.settings())
    node = "sora-" + sora_id()[:6].lower() + "@10.0.0.5"
    env = {"type": "node.erlang-vm", "id": sora_id(), "timestamp": now_rfc3339(),
           "label": "WebRTC SFU Sora", "version": "2025.1.0", "node_name": node,
           "stats": [{"type": "erlang-vm-memory", "total": 1},
                     {"type": "erlang-vm-statistics", "run_queue": 3},
                     {"type": "sora-future-thing", "nested": {"a": [1, 2]}}]}
    for _ in range(2):
        status, text, _ = post_h2(k.port, env, exporter_type="node.erlang-vm")
        assert status == 204, text
    rows = pg_store.query("SELECT stats_type, stats_index, extra FROM node_other_stats "
                          "WHERE node_name = ? ORDER BY stats_index", (node,))
    assert [(r[0], r[1]) for r in rows] == [("erlang-vm-statistics", 1), ("sora-future-thing", 2)]
    assert rows[0][2] == {"run_queue": 3} and rows[1][2] == {"nested": {"a": [1, 2]}}


@pytest.mark.parametrize("method", METHODS)
def test_replay_after_lost_commit_ack_stores_once(pg_store, daemon, method):
    """The backend acts as if the connection died after COMMIT (before its answer) for the
    first 3 batches; the batcher retries them on a new connection; rows are stored once."""
    k = daemon(dict(pg_store.settings(), batch_max_reports=4, postgres_write_method=method),
               env={"KOHAKU_FAULT_LOSE_COMMIT_ACKS": "3"})
    envs = [envelope(load_stats(p)) for p in fixture_files()]
    for env in envs:
        status, text, _ = post_h2(k.port, env)
        assert status == 204, text
    assert "commit acknowledgement lost" in k.log_text()
    assert pg_store.count("sora_report") == len(envs)
    nobj = sum(len(e["stats"]) for e in envs)
    total = sum(pg_store.count(t) for t in
                {table_of(o) for e in envs for o in e["stats"]})
    assert total == nobj
    dup = pg_store.query('SELECT count(*) FROM (SELECT connection_id, stats_id, "time" FROM '
                         "rtc_transport_stats GROUP BY 1, 2, 3 HAVING count(*) > 1) d")[0][0]
    assert dup == 0


@pytest.mark.parametrize("method", METHODS)
def test_bad_value_rejects_only_that_report(pg_store, daemon, method):
    """A value PostgreSQL refuses (a number beyond numeric's range inside extra, large or
    small) costs only its own report a 400; the reports batched with it are stored. (Year 0,
    once such a value, is now refused by kohaku itself, before storage.)"""
    k = daemon(dict(pg_store.settings(), batch_max_delay_ms=200, postgres_write_method=method))
    stats = load_stats(fixture_files()[0])
    good = [envelope(stats) for _ in range(6)]
    huge = json.dumps(envelope([dict(stats[0], futureMetric=0)])).replace(
        '"futureMetric": 0', '"futureMetric": 1e999999')
    tiny = json.dumps(envelope([dict(stats[0], futureMetric=0)])).replace(
        '"futureMetric": 0', '"futureMetric": -1e999999')
    year0 = envelope(stats, timestamp="0000-01-01T00:00:00.000001Z")
    results = {}

    def send(name, body):
        results[name] = post_h2(k.port, body)

    threads = [threading.Thread(target=send, args=(f"good{i}", g)) for i, g in enumerate(good)]
    threads += [threading.Thread(target=send, args=("huge", huge)),
                threading.Thread(target=send, args=("tiny", tiny)),
                threading.Thread(target=send, args=("year0", year0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(good)):
        assert results[f"good{i}"][0] == 204, results[f"good{i}"]
    for name in ("huge", "tiny"):
        status, text, _ = results[name]
        assert status == 400, (name, status, text)
        assert json.loads(text)["message"].startswith("stats: PostgreSQL refused")
    status, text, _ = results["year0"]
    assert status == 400 and json.loads(text)["message"] == (
        "timestamp: must be in the years 0001 to 9999, got '0000-01-01T00:00:00.000001Z'"), text
    assert pg_store.count("sora_report") == len(good)


def test_unreachable_at_startup_then_recovers(pg_cluster, pg_store, daemon):
    """PostgreSQL down when kohaku starts: kohaku serves, /.ok and reports get 503 with
    retry-after (never 204 or 400); once PostgreSQL is back, reports get 204."""
    pg_cluster.stop()
    try:
        k = daemon(pg_store.settings())
        assert k.health() == 503
        status, text, headers = post_h2(k.port, envelope(load_stats(fixture_files()[0])))
        assert status == 503, text
        assert int(headers["retry-after"]) > 0
    finally:
        pg_cluster.start()
    k.wait_health(204, timeout=60)
    env = envelope(load_stats(fixture_files()[0]))
    assert post_h2(k.port, env)[0] == 204
    assert pg_store.count("sora_report", "report_id = ?", (env["id"],)) == 1


def test_outage_under_load_loses_no_acknowledged_report(pg_cluster, pg_store, daemon, tmp_path):
    """PostgreSQL stopped and started while a bounded load runs: every report answered 204
    is stored exactly once, and the others got 503 (not 400)."""
    k = daemon(dict(pg_store.settings(), storage_retry_ms=1000))
    acked = tmp_path / "acked.txt"
    result = {}

    def run():
        result["lg"] = loadgen(k.port, "-c", 2, "-m", 8, "-n", 50, "-r", 300, "-d", 6,
                               "-A", "204,503", "-a", str(acked))

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.5)
    pg_cluster.stop()
    time.sleep(1.5)
    pg_cluster.start()
    t.join()
    rc, summary, out = result["lg"]
    assert rc == 0, out
    assert summary["status"].get("204", 0) > 100, out
    assert summary["status"].get("503", 0) > 0, out
    assert set(summary["status"]) <= {"204", "503"}, out
    ids = [line.split()[0] for line in acked.read_text().splitlines()]
    assert len(ids) == summary["status"]["204"]
    k.wait_health(204, timeout=60)
    stored = dict(pg_store.query("SELECT report_id, count(*) FROM sora_report GROUP BY 1"))
    missing = [i for i in ids if i not in stored]
    assert not missing, f"{len(missing)} acknowledged reports missing"
    assert all(stored[i] == 1 for i in ids)


def run_migrate(config_path, *extra):
    return subprocess.run([BIN, "-C", config_path, *extra, "migrate"], capture_output=True,
                          text=True, timeout=60)


def test_older_schema_upgrades_in_place(store, tmp_path):
    """A database at schema version 1 with rows in it is upgraded by `kohaku migrate` with
    its rows intact."""
    cfg = tmp_path / "config.ini"
    cfg.write_text("".join(f"{k} = {v}\n" for k, v in store.settings().items()))
    out = run_migrate(str(cfg), "--schema-version", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert store.query("SELECT max(version) FROM kohaku_schema_version")[0][0] == 1
    ts = now_rfc3339()
    conn = sora_id()
    store.query("INSERT INTO sora_connection (connection_id, channel_id, session_id, client_id, "
                "role, label, version, node_name, first_seen, last_seen) VALUES "
                "(?, 'c', ?, 'x', 'sendrecv', 'l', 'v', 'n', ?, ?)", (conn, sora_id(), ts, ts))
    store.query('INSERT INTO rtc_transport_stats ("time", channel_id, connection_id, stats_type, '
                "stats_id, stats_timestamp, bytes_sent) VALUES (?, 'c', ?, 'transport', 'T01', "
                "1.5, 42)", (ts, conn))
    out = run_migrate(str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr
    versions = [v for (v,) in store.query("SELECT version FROM kohaku_schema_version ORDER BY 1")]
    assert versions == list(range(1, max(versions) + 1)) and max(versions) >= 3
    assert store.count("sora_connection", "connection_id = ?", (conn,)) == 1
    assert store.query("SELECT bytes_sent FROM rtc_transport_stats WHERE connection_id = ?",
                       (conn,))[0][0] == 42
    assert store.count("sora_report") == 0  # the table version 2 added exists


def test_two_instances_migrate_an_empty_database_together(pg_store, daemon):
    """Two kohaku processes starting at the same moment on an empty database both come up
    (the advisory lock serialises the migrations)."""
    a = daemon(pg_store.settings(), ready=False)
    b = daemon(pg_store.settings(), ready=False)
    a.wait_ready()
    b.wait_ready()
    a.wait_health(204)
    b.wait_health(204)
    versions = sorted(v for (v,) in pg_store.query("SELECT version FROM kohaku_schema_version"))
    assert versions == list(range(1, max(versions) + 1)) and max(versions) >= 3
    for k in (a, b):
        assert post_h2(k.port, envelope(load_stats(fixture_files()[0])))[0] == 204
    assert pg_store.count("sora_report") == 2


def test_retention_deletes_only_old_rows(pg_store, daemon):
    """Plain PostgreSQL (the test cluster does not preload TimescaleDB, even where it is
    installed): kohaku deletes rows older than retention_days, and only those."""
    k = daemon(dict(pg_store.settings(), retention_days=30, retention_interval=1))
    stats = load_stats(fixture_files()[0])
    old = [envelope(stats, timestamp=now_rfc3339(-86400 * d)) for d in (31, 45, 400)]
    new = [envelope(stats, timestamp=now_rfc3339(-86400 * d)) for d in (0, 1, 29)]
    for env in old + new:
        assert post_h2(k.port, env)[0] == 204
    deadline = time.time() + 30
    while time.time() < deadline and pg_store.count(
            "sora_report", "\"time\" < now() - interval '30 days'") > 0:
        time.sleep(0.2)
    assert pg_store.count("sora_report") == len(new)
    kept = {c for (c,) in pg_store.query("SELECT DISTINCT connection_id FROM rtc_transport_stats")}
    assert kept == {e["connection_id"] for e in new}
    for table in ("rtc_codec_stats", "rtc_transport_stats"):
        assert pg_store.count(table, "\"time\" < now() - interval '30 days'") == 0
        assert pg_store.count(table) > 0
    k.wait_log('"deleted_rows"')

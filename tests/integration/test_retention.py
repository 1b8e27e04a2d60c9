"""Retention that keeps up (issue 16): SQLite deletes old rows in small steps inside the
writer's batches while reports keep being acknowledged; plain PostgreSQL partitions the time
series by time, creates partitions ahead, drops whole old partitions, and migrates an
unpartitioned database in place with its rows kept."""
import threading
import time

import pytest

from helpers import (fixture_files, load_fixture, make_envelope, post_h2, rfc3339_now, sora_id,
                     wait_until)

OLD_ROWS = 300_000


def bulk_old_rows(store, n, days_ago):
    """n rows in rtc_transport_stats (and one sora_report row per 100) dated days_ago, as an
    old kohaku would have left them; one connection per 100 rows."""
    ts = rfc3339_now(-86400 * days_ago)
    store.execute(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?) "
        'INSERT INTO rtc_transport_stats ("time", channel_id, connection_id, stats_type, '
        "stats_id, stats_timestamp, bytes_sent) SELECT ?, 'old-room', "
        "printf('OLD%023d', i / 100), 'transport', printf('T%d', i % 100), 1.5, i FROM s",
        (n, ts))
    store.execute(
        "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?) "
        'INSERT INTO sora_report ("time", source, kind, report_id, channel_id, connection_id, '
        "node_name, stats_count, body_bytes, received_at) SELECT ?, printf('OLD%023d', i), "
        "'connection', NULL, 'old-room', printf('OLD%023d', i), 'n', 100, 1000, ? FROM s",
        (n // 100, ts, ts))


@pytest.mark.storage("sqlite")
def test_sqlite_retention_keeps_up_without_stalling_ingest(db, kohaku_factory):
    """300,000 rows 90 days old: with retention_days 30 they are deleted in steps between
    batches while reports keep coming; every report is acknowledged within a bound far below
    what one DELETE of them all takes, the new rows stay, the pass is logged and counted."""
    store = db
    k = kohaku_factory(retention_days=0)
    stats = load_fixture(fixture_files()[0])
    assert post_h2(k.port, make_envelope(stats)).status == 204
    k.stop()
    bulk_old_rows(store, OLD_ROWS, 90)
    assert store.count("rtc_transport_stats", "connection_id LIKE 'OLD%'") == OLD_ROWS
    k = kohaku_factory(retention_days=30, retention_interval=3600)
    latencies, seen_partial, stop = [], [], threading.Event()

    def watch():  # the pass is spread over batches: some old rows gone, some not yet
        while not stop.is_set():
            n = store.count("rtc_transport_stats", "connection_id LIKE 'OLD%'")
            if 0 < n < OLD_ROWS:
                seen_partial.append(n)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    new = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            env = make_envelope(stats)
            t0 = time.monotonic()
            assert post_h2(k.port, env).status == 204
            latencies.append(time.monotonic() - t0)
            new.append(env)
            if store.count("sora_report", "source LIKE 'OLD%'") == 0:  # the last table
                break
    finally:
        stop.set()
        watcher.join()
    assert store.count("rtc_transport_stats", "connection_id LIKE 'OLD%'") == 0
    assert store.count("sora_report", "source LIKE 'OLD%'") == 0
    assert seen_partial, "the old rows went in one step, not interleaved with the batches"
    # every new report kept, the first one (before retention) too
    assert store.count("sora_report") == len(new) + 1
    assert store.count("rtc_transport_stats") > 0
    latencies.sort()
    # post_h2 runs curl (a process per report): the bound is loose, a stall would not be
    assert latencies[-1] < 1.0, latencies[-5:]
    k.wait_log('"msg":"retention pass"', timeout=10)
    done = [l for l in k.log_lines() if l.get("msg") == "retention pass"]
    assert done[-1]["deleted_rows"] == OLD_ROWS + OLD_ROWS // 100, done[-1]
    assert done[-1]["storage"] == "sqlite" and "free_pages" in done[-1]
    m = k.metrics()
    assert m[("kohaku_retention_deleted_rows_total", frozenset())] == OLD_ROWS + OLD_ROWS // 100
    assert m[("kohaku_retention_passes_total", frozenset())] >= 1
    assert m[("kohaku_retention_last_pass_seconds", frozenset())] > 0
    print(f"sqlite pass over {OLD_ROWS} rows: {done[-1]['seconds']:.2f} s, "
          f"{len(latencies)} reports, ack max {latencies[-1] * 1000:.0f} ms, "
          f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms")


@pytest.mark.storage("sqlite")
def test_sqlite_retention_zero_keeps_everything(db, kohaku_factory):
    """retention_days 0 keeps every row whatever its age; no pass runs."""
    store = db
    stats = load_fixture(fixture_files()[0])
    k = kohaku_factory(retention_days=0, retention_interval=1)
    old = make_envelope(stats, timestamp=rfc3339_now(-86400 * 400))
    assert post_h2(k.port, old).status == 204
    for _ in range(3):
        assert post_h2(k.port, make_envelope(stats)).status == 204
    time.sleep(1.5)
    assert post_h2(k.port, make_envelope(stats)).status == 204
    assert store.count("sora_report", "report_id = ?", (old["id"],)) == 1
    assert k.metrics()[("kohaku_retention_passes_total", frozenset())] == 0


@pytest.mark.storage("sqlite")
def test_sqlite_retention_deletes_only_old_rows(db, kohaku_factory):
    """Rows older than retention_days go, in every time series, whatever connection they
    belong to (a connection reporting across the cutoff keeps its new rows)."""
    store = db
    stats = load_fixture(fixture_files()[0])
    k = kohaku_factory(retention_days=30, retention_interval=1)
    cid = sora_id()
    old = [make_envelope(stats, timestamp=rfc3339_now(-86400 * d)) for d in (31, 45, 400)]
    old.append(make_envelope(stats, connection_id=cid, timestamp=rfc3339_now(-86400 * 31)))
    new = [make_envelope(stats, timestamp=rfc3339_now(-86400 * d)) for d in (0, 1, 29)]
    new.append(make_envelope(stats, connection_id=cid, timestamp=rfc3339_now(-86400 * 29)))
    for env in old + new:
        assert post_h2(k.port, env).status == 204

    def old_left():
        assert post_h2(k.port, make_envelope(stats)).status == 204  # a batch to step in
        return store.count("sora_report", "report_id IN (%s)" % ",".join("?" * len(old)),
                           tuple(e["id"] for e in old))
    wait_until(lambda: old_left() == 0, 30, interval=0.3, message="old reports deleted")
    for e in new:
        assert store.count("sora_report", "report_id = ?", (e["id"],)) == 1
    cutoff = rfc3339_now(-86400 * 30)
    for table in ("rtc_codec_stats", "rtc_transport_stats", "quality_connection"):
        assert store.count(table, '"time" < ?', (cutoff,)) == 0, table
    assert store.count("rtc_transport_stats", "connection_id = ?", (cid,)) > 0

"""PostgreSQL backend end to end (issue: PostgreSQL and TimescaleDB storage): a real
PostgreSQL 15 cluster, the real daemon, real clients."""
import json
import subprocess
import threading

import pytest

from helpers import (KOHAKU_BIN, all_counts, fixture_files, load_fixture, loadgen,
                     make_envelope, post_h2, rfc3339_now, sora_id, table_for, wait_until)


@pytest.mark.storage("sqlite", "postgres")
def test_fixture_reports_stored_once_per_backend(db, kohaku):
    """Every fixture report -> 204, one row per stats object in the right table, then a
    second delivery stores nothing new. Runs on SQLite and on PostgreSQL."""
    k, store = kohaku, db
    expected = {}
    bodies = []
    for path in fixture_files():
        stats = load_fixture(path)
        env = make_envelope(stats)
        bodies.append(env)
        for obj in stats:
            expected[table_for(obj)] = expected.get(table_for(obj), 0) + 1
        r = post_h2(k.port, env)
        assert r.status == 204, r.text
    counts = all_counts(store)
    for table, n in expected.items():
        assert counts[table] == n, table
    assert counts["sora_connection"] == len(bodies)
    assert counts["sora_report"] == len(bodies)
    for env in bodies[:4]:
        assert post_h2(k.port, env).status == 204
    assert all_counts(store) == counts
    # typed values survive the trip: a 64-bit priority above 2^53, a float, JSON
    chromium = next(p for p in fixture_files() if "chromium-av-sender" in p)
    pair = next(o for o in load_fixture(chromium) if o["type"] == "candidate-pair")
    rows = store.query('SELECT priority, stats_timestamp FROM "rtc_ice_candidate_pair_stats" '
                       "WHERE stats_id = ? ORDER BY priority", (pair["id"],))
    assert (pair["priority"], pair["timestamp"]) in [(int(a), float(b)) for a, b in rows]


@pytest.mark.storage("postgres")
def test_kohaku_2023_config_selects_postgres(db, kohaku_factory):
    """A Kohaku 2023.1 config.ini (postgres_uri, no storage key) needs no edits."""
    pg_store = db
    # storage None: no storage line (kohaku_factory would write db's)
    k = kohaku_factory({"storage": None, "postgres_uri": pg_store.uri,
                        "http2_max_concurrent_streams": 250,
                        "http2_max_read_frame_size": 1048576, "http2_idle_timeout": 1800,
                        "log_stdout": "true", "exporter_https": "false",
                        "postgres_ca_cert_file": "", "tls_fullchain_file": "",
                        "tls_privkey_file": "", "tls_verify_cacert_path": ""})
    assert '"storage":"postgres"' in k.log_text()
    env = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(k.port, env).status == 204
    assert pg_store.count("sora_report", "report_id = ?", (env["id"],)) == 1


@pytest.mark.storage("postgres")
def test_startup_log_names_the_mode(db, kohaku):
    """The plain cluster never preloads TimescaleDB, installed or not: postgresql mode, in
    the start-up line and in the mode gauge (the TimescaleDB modes: test_timescaledb.py)."""
    k = kohaku
    k.wait_log('"msg":"postgres schema ready"')
    ready = [l for l in k.log_lines() if l.get("msg") == "postgres schema ready"]
    assert len(ready) == 1
    assert (ready[0]["mode"], ready[0]["compression"], ready[0]["retention"]) == (
        "postgresql", False, "kohaku drop partitions")
    assert ready[0]["partitioned"] is True and ready[0]["partition_hours"] == 24
    assert k.metrics()[("kohaku_storage_mode", frozenset({("mode", "postgresql")}))] == 1


@pytest.mark.parametrize("kind", ["sqlite", "null"])
def test_storage_mode_gauge_of_the_other_backends(kind, kohaku_factory):
    k = kohaku_factory(storage=kind)
    modes = {dict(labels)["mode"]: v for (name, labels), v in k.metrics().items()
             if name == "kohaku_storage_mode"}
    assert modes == {kind: 1}


METHODS = ["unnest", "copy", "direct_copy"]


@pytest.mark.storage("postgres")
def test_every_write_method_and_copy_format_stores_the_same_values(db, db_factory,
                                                                   kohaku_factory):
    """The same fixture reports written by unnest (array text), copy and direct_copy with
    COPY's text format, and direct_copy with its binary format (the default) land as the
    same values in every column of every table: integers above 2^53, floats, booleans, text,
    jsonb `extra`, timestamps."""
    envs = [make_envelope(load_fixture(p)) for p in fixture_files()]
    envs.append(make_envelope(load_fixture(fixture_files()[0]), timestamp="0001-01-01T00:00:00.5Z"))
    variants = [("unnest", "text"), ("copy", "text"), ("direct_copy", "text"),
                ("copy", "binary"), ("direct_copy", "binary")]
    dumps, stores = {}, {}
    for method, fmt in variants:
        st = stores[(method, fmt)] = db if not stores else db_factory("postgres")
        k = kohaku_factory(st.settings(), postgres_write_method=method,
                           postgres_copy_format=fmt)
        for env in envs:
            r = post_h2(k.port, env)
            assert r.status == 204, r.text
        dump = {}
        tables = [r[0] for r in st.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' AND left(table_name, 4) = 'rtc_' AND NOT EXISTS "
            "(SELECT 1 FROM pg_inherits i WHERE i.inhrelid = to_regclass(quote_ident(table_name)))"
            " ORDER BY 1")]
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
@pytest.mark.storage("postgres")
def test_redelivery_stores_nothing_new(db, kohaku_factory, method):
    """Every write method is idempotent: the same reports again (alone, and mixed with new
    ones in one batch) are answered 204 and add no row."""
    pg_store = db
    k = kohaku_factory(postgres_write_method=method, batch_max_delay_ms=100)
    assert f'"write_method":"{method}"' in k.log_text()
    envs = [make_envelope(load_fixture(p)) for p in fixture_files()]
    for env in envs:
        assert post_h2(k.port, env).status == 204
    counts = all_counts(pg_store)
    assert counts["sora_report"] == len(envs)
    for env in envs[:3]:
        assert post_h2(k.port, env).status == 204
    assert all_counts(pg_store) == counts
    if method == "direct_copy":  # COPY met the stored rows and the batch went the other way
        k.wait_log("direct_copy: rows already stored")
    # old and new together, sent at once so that they share batches
    fresh = [make_envelope(load_fixture(p)) for p in fixture_files()[:4]]
    results = []
    threads = [threading.Thread(target=lambda e=e: results.append(post_h2(k.port, e).status))
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


@pytest.mark.storage("postgres")
def test_node_stats_of_unknown_type_on_postgres(db, kohaku):
    """node_other_stats on PostgreSQL: one row per unknown item with its position, all
    members in extra; a redelivery adds nothing."""
    pg_store, k = db, kohaku
    node = "sora-" + sora_id()[:6].lower() + "@10.0.0.5"
    env = {"type": "node.erlang-vm", "id": sora_id(), "timestamp": rfc3339_now(),
           "label": "WebRTC SFU Sora", "version": "2025.1.0", "node_name": node,
           "stats": [{"type": "erlang-vm-memory", "total": 1},
                     {"type": "erlang-vm-statistics", "run_queue": 3},
                     {"type": "sora-future-thing", "nested": {"a": [1, 2]}}]}
    for _ in range(2):
        r = post_h2(k.port, env, exporter_type="node.erlang-vm")
        assert r.status == 204, r.text
    rows = pg_store.query("SELECT stats_type, stats_index, extra FROM node_other_stats "
                          "WHERE node_name = ? ORDER BY stats_index", (node,))
    assert [(r[0], r[1]) for r in rows] == [("erlang-vm-statistics", 1), ("sora-future-thing", 2)]
    assert rows[0][2] == {"run_queue": 3} and rows[1][2] == {"nested": {"a": [1, 2]}}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.storage("postgres")
def test_replay_after_lost_commit_ack_stores_once(db, kohaku_factory, method):
    """The backend acts as if the connection died after COMMIT (before its answer) for the
    first 3 batches; the batcher retries them on a new connection; rows are stored once."""
    pg_store = db
    k = kohaku_factory(batch_max_reports=4, postgres_write_method=method,
                       env={"KOHAKU_FAULT_LOSE_COMMIT_ACKS": "3"})
    envs = [make_envelope(load_fixture(p)) for p in fixture_files()]
    for env in envs:
        r = post_h2(k.port, env)
        assert r.status == 204, r.text
    assert "commit acknowledgement lost" in k.log_text()
    assert pg_store.count("sora_report") == len(envs)
    nobj = sum(len(e["stats"]) for e in envs)
    total = sum(pg_store.count(t) for t in
                {table_for(o) for e in envs for o in e["stats"]})
    assert total == nobj
    dup = pg_store.query('SELECT count(*) FROM (SELECT connection_id, stats_id, "time" FROM '
                         "rtc_transport_stats GROUP BY 1, 2, 3 HAVING count(*) > 1) d")[0][0]
    assert dup == 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.storage("postgres")
def test_bad_value_rejects_only_that_report(db, kohaku_factory, method):
    """A value PostgreSQL refuses (a number beyond numeric's range inside extra, large or
    small) costs only its own report a 400; the reports batched with it are stored. (Year 0,
    once such a value, is now refused by kohaku itself, before storage.)"""
    pg_store = db
    k = kohaku_factory(batch_max_delay_ms=200, postgres_write_method=method)
    stats = load_fixture(fixture_files()[0])
    good = [make_envelope(stats) for _ in range(6)]
    huge = json.dumps(make_envelope([dict(stats[0], futureMetric=0)])).replace(
        '"futureMetric": 0', '"futureMetric": 1e999999')
    tiny = json.dumps(make_envelope([dict(stats[0], futureMetric=0)])).replace(
        '"futureMetric": 0', '"futureMetric": -1e999999')
    year0 = make_envelope(stats, timestamp="0000-01-01T00:00:00.000001Z")
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
        assert results[f"good{i}"].status == 204, results[f"good{i}"]
    for name in ("huge", "tiny"):
        r = results[name]
        assert r.status == 400, (name, r)
        assert r.message.startswith("stats: PostgreSQL refused")
    r = results["year0"]
    assert r.status == 400 and r.message == (
        "timestamp: must be in the years 0001 to 9999, got '0000-01-01T00:00:00.000001Z'"), r
    assert pg_store.count("sora_report") == len(good)


@pytest.mark.storage("postgres")
def test_unreachable_at_startup_then_recovers(pg_cluster, db, kohaku_factory):
    """PostgreSQL down when kohaku starts: kohaku serves, /.ok and reports get 503 with
    retry-after (never 204 or 400); once PostgreSQL is back, reports get 204."""
    pg_store = db
    pg_cluster.stop()
    try:
        k = kohaku_factory(health=503)
        assert k.health() == 503
        r = post_h2(k.port, make_envelope(load_fixture(fixture_files()[0])))
        assert r.status == 503, r.text
        assert int(r.headers["retry-after"]) > 0
    finally:
        pg_cluster.start()
    k.wait_health(204, timeout=60)
    env = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(k.port, env).status == 204
    assert pg_store.count("sora_report", "report_id = ?", (env["id"],)) == 1


@pytest.mark.storage("postgres")
def test_outage_under_load_loses_no_acknowledged_report(pg_cluster, db, kohaku_factory, tmp_path):
    """PostgreSQL stopped and started while a bounded load runs: every report answered 204
    is stored exactly once, and the others got 503 (not 400)."""
    pg_store = db
    k = kohaku_factory(storage_retry_ms=1000)
    acked = tmp_path / "acked.txt"
    result = {}

    def run():
        result["lg"] = loadgen(k.port, "-c", 2, "-m", 8, "-n", 50, "-r", 300, "-d", 6,
                               "-A", "204,503", "-a", str(acked))

    t = threading.Thread(target=run)
    t.start()

    def answered(status):
        return k.metric("kohaku_http_requests_total", route="collector", protocol="h2",
                        status=status)

    # PostgreSQL goes away once the load is under way ...
    wait_until(lambda: answered("204") >= 200, 30, message="200 reports answered 204")
    pg_cluster.stop()
    # ... and comes back once kohaku has answered 503 for it
    wait_until(lambda: answered("503") > 0, 30, message="a report answered 503")
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
    return subprocess.run([KOHAKU_BIN, "-C", config_path, *extra, "migrate"], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.storage("sqlite", "postgres")
def test_older_schema_upgrades_in_place(db, tmp_path):
    """A database at schema version 1 with rows in it is upgraded by `kohaku migrate` with
    its rows intact."""
    cfg = tmp_path / "config.ini"
    store = db
    cfg.write_text("".join(f"{k} = {v}\n" for k, v in store.settings().items()))
    out = run_migrate(str(cfg), "--schema-version", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert store.query("SELECT max(version) FROM kohaku_schema_version")[0][0] == 1
    ts = rfc3339_now()
    conn = sora_id()
    store.execute("INSERT INTO sora_connection (connection_id, channel_id, session_id, client_id, "
                  "role, label, version, node_name, first_seen, last_seen) VALUES "
                  "(?, 'c', ?, 'x', 'sendrecv', 'l', 'v', 'n', ?, ?)", (conn, sora_id(), ts, ts))
    store.execute('INSERT INTO rtc_transport_stats ("time", channel_id, connection_id, stats_type, '
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


@pytest.mark.storage("postgres")
def test_two_instances_migrate_an_empty_database_together(db, kohaku_factory):
    """Two kohaku processes starting at the same moment on an empty database both come up
    (the advisory lock serialises the migrations)."""
    pg_store = db
    a = kohaku_factory(wait=False)
    b = kohaku_factory(wait=False)
    a.wait_ready()
    b.wait_ready()
    a.wait_health(204)
    b.wait_health(204)
    versions = sorted(v for (v,) in pg_store.query("SELECT version FROM kohaku_schema_version"))
    assert versions == list(range(1, max(versions) + 1)) and max(versions) >= 3
    for k in (a, b):
        assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204
    assert pg_store.count("sora_report") == 2


@pytest.mark.storage("postgres")
def test_migration_deadlocked_runs_again(db, kohaku_factory):
    """A start whose migration the server rolls back as a deadlock (another session holds
    kohaku_schema_version and then asks for kohaku's advisory lock) runs it again and comes
    up, logging the conflict."""
    import psycopg2
    k = kohaku_factory()
    assert k.stop() == 0
    # kohaku's session finds the deadlock (after 3 s), the other one never does
    db.query(f'ALTER DATABASE "{db.dbname}" SET deadlock_timeout = \'3s\'')
    other = psycopg2.connect(db.uri)
    try:
        cur = other.cursor()
        cur.execute("SET deadlock_timeout = '10min'")
        cur.execute("LOCK TABLE kohaku_schema_version IN ACCESS EXCLUSIVE MODE")
        k = kohaku_factory(wait=False)
        wait_until(lambda: db.query(
            "SELECT count(*) FROM pg_locks WHERE relation = 'kohaku_schema_version'::regclass "
            "AND NOT granted")[0][0] > 0, 20, message="kohaku waiting for the table")
        cur.execute("SELECT pg_advisory_xact_lock(7164746341)")  # granted once kohaku gave up
        k.wait_log("schema migration conflicted", timeout=20)
        other.commit()
    finally:
        other.close()
    k.wait_ready()
    k.wait_health(204)
    conflict = [l for l in k.log_lines() if l.get("msg") == "schema migration conflicted; "
                "running it again"]
    assert len(conflict) == 1 and "deadlock detected" in conflict[0]["error"], k.log_text()
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204
    assert db.count("sora_report") == 1


@pytest.mark.storage("postgres")
def test_retention_deletes_only_old_rows(db, kohaku_factory):
    """Plain PostgreSQL (the test cluster does not preload TimescaleDB, even where it is
    installed): kohaku deletes rows older than retention_days, and only those."""
    pg_store = db
    k = kohaku_factory(retention_days=30, retention_interval=1)
    stats = load_fixture(fixture_files()[0])
    old = [make_envelope(stats, timestamp=rfc3339_now(-86400 * d)) for d in (31, 45, 400)]
    new = [make_envelope(stats, timestamp=rfc3339_now(-86400 * d)) for d in (0, 1, 29)]
    for env in old + new:
        assert post_h2(k.port, env).status == 204
    # a pass running while the reports came may have done a stats table before its rows
    # arrived and sora_report (the last) after: every table is waited for
    wait_until(lambda: all(pg_store.count(
        t, "\"time\" < now() - interval '30 days'") == 0 for t in (
            "sora_report", "rtc_codec_stats", "rtc_transport_stats")), 30, interval=0.2,
        message="the rows past retention_days deleted")
    assert pg_store.count("sora_report") == len(new)
    kept = {c for (c,) in pg_store.query("SELECT DISTINCT connection_id FROM rtc_transport_stats")}
    assert kept == {e["connection_id"] for e in new}
    for table in ("rtc_codec_stats", "rtc_transport_stats"):
        assert pg_store.count(table, "\"time\" < now() - interval '30 days'") == 0
        assert pg_store.count(table) > 0
    k.wait_log('"deleted_rows"')

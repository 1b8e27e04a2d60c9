"""Citus mode (issue: several kohaku behind HAProxy, the stats distributed on Citus): the real
daemon against a Citus 13.2 cluster the suite builds itself (conftest's citus_cluster: a
coordinator and two workers on 127.0.0.1, three PostgreSQL instances preloading citus, the
extension created in each test database and the workers registered):

- the migrations distribute every table by the first column of its unique key, co-located
  with sora_connection; sora_node and kohaku_schema_version are reference tables; shards on
  both workers; a second start changes nothing;
- the time series are partitioned with Citus's functions (create_time_partitions ahead,
  drop_old_time_partitions past retention_days), old stats partitions become columnar, and
  reports for columnar times are stored once with every write method;
- kohaku-loadgen's acknowledged reports are stored exactly once with every write method, and
  they are on both workers; a report delivered twice is stored once;
- the rate views, the quality views and the console API answer, and their per-connection
  queries go to one shard (EXPLAIN: a router plan), the fleet-wide ones run on the shards;
- a worker stopped and started under load loses nothing acknowledged (the spool);
- timescaledb created next to citus is refused.

Without Citus the tests are skipped with the reason, or fail when KOHAKU_REQUIRE_CITUS=1
(scripts/test sets it where ../shared/third_party exists). The Grafana panel queries run on
Citus in test_grafana.py. Load is bounded in count and time."""
import json
import subprocess
import threading
import time
import urllib.parse

import pytest

from helpers import (FIXTURES_DIR, KOHAKU_BIN, KOHAKU_LOADGEN, STATS_TABLES, Kohaku, PgDb, curl,
                     fixture_envelope, fixture_files, load_fixture, loadgen, make_envelope, post_h2,
                     rfc3339_now, wait_until)
from pgcluster import SHARD_COUNT, PgCluster, require_citus, require_timescaledb, unique_db_name
from test_spool import acked_ids, assert_stored_once, wait_drained

CONNECTION_TABLES = STATS_TABLES + ["quality_connection", "quality_stream", "sora_connection",
                                    "sora_connection_lifecycle"]
DISTRIBUTED = dict({t: "connection_id" for t in CONNECTION_TABLES},
                   sora_report="source", erlang_vm_memory_stats="node_name",
                   node_other_stats="node_name", sora_session="session_id",
                   sora_webhook="webhook_id")
REFERENCE = ["kohaku_schema_version", "sora_node"]
METHODS = ["direct_copy", "unnest", "copy"]


@pytest.fixture
def daemon(kohaku_factory):
    """kohaku_factory, waiting for the PostgreSQL schema as well."""
    def start(settings=None, **keys):
        k = kohaku_factory(settings, **keys)
        k.wait_log('"msg":"postgres schema ready"', timeout=60)
        return k

    return start


def schema_ready(k):
    lines = [l for l in k.log_lines() if l.get("msg") == "postgres schema ready"]
    assert len(lines) == 1, k.log_text()[-3000:]
    return lines[0]


def problems(k):
    return [l for l in k.log_lines() if l.get("level") in ("warn", "error")]


def worker_ports(cluster):
    return {w.port for w in cluster.workers}


def reports_per_worker(store):
    """{worker port: sora_report rows on it}, from each row's shard."""
    port = dict(store.query("SELECT shardid, nodeport FROM citus_shards "
                            "WHERE table_name = 'sora_report'::regclass"))
    out = {}
    for shard, n in store.query("SELECT get_shard_id_for_distribution_column('sora_report', "
                                "source), count(*) FROM sora_report GROUP BY 1"):
        out[port[shard]] = out.get(port[shard], 0) + n
    return out


def assert_keys_unique_once(store):
    for t in CONNECTION_TABLES:
        if t in ("sora_connection", "sora_connection_lifecycle"):
            key = "connection_id"
        else:
            key = 'connection_id, "time", stats_id'
        dup = store.query(f'SELECT count(*) FROM (SELECT 1 FROM "{t}" GROUP BY {key} '
                          'HAVING count(*) > 1) d')[0][0]
        assert dup == 0, t


def plan(store, sql, params=()):
    return "\n".join(r[0] for r in store.query("EXPLAIN " + sql, params))


@pytest.mark.storage("citus")
def test_tables_distributed_by_their_key_and_colocated(citus_cluster, db, daemon):
    store = db
    k = daemon()
    ready = schema_ready(k)
    assert ready["mode"] == "citus" and ready["citus_version"].startswith("13.")
    assert ready["partitioned"] is True and ready["compression"] is True, k.log_text()[-3000:]
    assert ready["retention"] == "citus drop_old_time_partitions"
    assert ready["columnar_after_days"] == 7
    assert k.metric("kohaku_storage_mode", mode="citus") == 1
    assert not problems(k), k.log_text()[-3000:]

    # the tables (their time partitions are distributed with them: see test_time_partitions_*)
    rows = store.query("SELECT logicalrelid::text, partmethod, "
                       "column_to_column_name(logicalrelid, partkey), colocationid "
                       "FROM pg_dist_partition JOIN pg_class c ON c.oid = logicalrelid "
                       "WHERE NOT c.relispartition")
    got = {t: (m, c) for t, m, c, _ in rows}
    want = {t: ("h", c) for t, c in DISTRIBUTED.items()}
    want.update({t: ("n", None) for t in REFERENCE})
    assert got == want
    assert sorted(got) == store.tables()  # every table kohaku has is distributed
    assert len({g for t, m, _, g in rows if m == "h"}) == 1  # one co-location group

    # every unique index starts with its table's distribution column
    for t, col in DISTRIBUTED.items():
        firsts = store.query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = i.indkey[0] WHERE i.indrelid = ?::regclass AND i.indisunique",
            (t,))
        assert firsts and {f for (f,) in firsts} == {col}, (t, firsts)

    nodes = {p for (p,) in store.query("SELECT DISTINCT nodeport FROM citus_shards "
                                       "WHERE citus_table_type = 'distributed'")}
    assert nodes == worker_ports(citus_cluster)
    assert store.query("SELECT count(*) FROM citus_shards WHERE table_name = "
                       "'sora_node'::regclass")[0][0] == 3  # a reference table is everywhere

    # a second start: nothing to do, the same tables, still Citus
    assert k.stop() == 0
    k = daemon()
    assert schema_ready(k)["mode"] == "citus" and not problems(k)
    assert store.query("SELECT count(*) FROM pg_dist_partition JOIN pg_class c ON c.oid = "
                       "logicalrelid WHERE NOT c.relispartition")[0][0] == len(want)
    assert post_h2(k.port, fixture_envelope(fixture_files()[0])).status == 204
    assert store.count("sora_report") == 1


DAY = 86400


def today0():
    return int(time.time()) // DAY * DAY


def at_day(d, hour):
    """RFC 3339 time of `hour` o'clock (UTC) on the day d days from today."""
    return rfc3339_now(today0() + d * DAY + hour * 3600 - time.time())


def partitioned_tables(store):
    return sorted(t for (t,) in store.query(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind = 'p' AND NOT relispartition"))


def time_partitions(store, table):
    """{partition: (from, to as epoch seconds, or None for DEFAULT; access method)}, from
    Citus's time_partitions view."""
    return {p: (lo, hi, am) for p, lo, hi, am in store.query(
        "SELECT partition::text, extract(epoch FROM from_value::timestamptz)::bigint, "
        "extract(epoch FROM to_value::timestamptz)::bigint, access_method::text "
        "FROM time_partitions WHERE parent_table = ?::regclass", (table,))}


def day_partition(store, table, d):
    """The name of table's partition of the day d days from today, or None."""
    lo = today0() + d * DAY
    names = [p for p, (a, b, _) in time_partitions(store, table).items() if a == lo]
    return names[0] if names else None


def rows_of(store, tables, cid):
    return {t: store.count(t, "connection_id = ?", (cid,)) for t in tables}


@pytest.mark.once("Citus's own partition and columnar DDL, about 80 s; kohaku's partition "
                   "code runs in both passes in test_retention.py")
@pytest.mark.storage("citus")
def test_time_partitions_columnar_and_drop(citus_cluster, db, daemon):
    """Citus mode partitions the time series by time with Citus's own functions: a new
    database's tables are partitioned (today and 3 days ahead, a DEFAULT partition) before
    they are distributed, every partition distributed and co-located with its table. Old
    partitions of the stats tables (quality and node series included) become columnar
    (alter_table_set_access_method, the table's writes held off meanwhile), sora_report stays
    heap; reports for times in columnar partitions are stored, and stored once when
    delivered again, with each write method (columnar has no ON CONFLICT); rows the DEFAULT
    partition holds for a day that gets its partition move into it; drop_old_time_partitions
    drops the partitions past retention_days."""
    store = db
    k = daemon(retention_days=0)
    tables = partitioned_tables(store)
    assert "sora_report" in tables and "quality_connection" in tables
    assert set(STATS_TABLES) <= set(tables)
    t0 = today0()
    for t in tables:
        parts = time_partitions(store, t)
        assert parts.get(f"{t}_default") == (None, None, "heap"), (t, parts)
        assert sorted(lo for lo, _, _ in parts.values() if lo is not None) == [
            t0 + d * DAY for d in range(4)], (t, parts)
    distributed = {r for (r,) in store.query("SELECT logicalrelid::text "
                                             "FROM pg_dist_partition")}
    every = {p for (p,) in store.query(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE c.relkind = 'r'")}
    assert every and every <= distributed
    assert len({g for (g,) in store.query("SELECT DISTINCT colocationid FROM pg_dist_partition "
                                           "WHERE partmethod = 'h'")}) == 1
    today = day_partition(store, "rtc_inbound_rtp_stream_stats", 0)
    nodes = {p for (p,) in store.query("SELECT DISTINCT nodeport FROM citus_shards WHERE "
                                       "table_name = ?::regclass", (today,))}
    assert nodes == worker_ports(citus_cluster)
    assert k.stop() == 0

    # a week of partitions behind, as a kohaku running since then would have made them
    for t in tables:
        store.execute("SELECT create_time_partitions(?::regclass, '24 hours', "
                      "to_timestamp(?), to_timestamp(?))", (t, t0, t0 - 7 * DAY))
    settings = dict(citus_columnar_after=5, retention_interval=1)
    k = daemon(retention_days=0, **settings)
    assert schema_ready(k)["compression"] is True
    stats = load_fixture(fixture_files()[0])
    six = make_envelope(stats, timestamp=at_day(-6, 1))
    seven = make_envelope(stats, timestamp=at_day(-7, 1))
    for env in (six, seven):
        assert post_h2(k.port, env).status == 204

    stats_tables = [t for t in tables if t != "sora_report"]

    # waited for in the log: a reader of the partitions (as time_partitions is) while a
    # partition is converted can deadlock with it, and the conversion waits for the next pass
    def converted():
        return sum(l.get("columnar_partitions", 0) for l in k.log_lines()
                   if l.get("msg") == "retention pass")
    # reports for the days being converted keep coming meanwhile: each must keep its rows
    # (a row written into a shard the conversion copies and drops would go with it)
    during, stop = [], threading.Event()

    def late_reports():
        while not stop.is_set():
            env = make_envelope(stats, timestamp=at_day(-7 + len(during) % 2, 3))
            assert post_h2(k.port, env).status == 204
            during.append(env["connection_id"])
    th = threading.Thread(target=late_reports)
    th.start()
    try:
        wait_until(lambda: converted() >= 2 * len(stats_tables), 120, interval=0.5,
                   message="days -7 and -6 converted")
    finally:
        stop.set()
        th.join()
    assert converted() == 2 * len(stats_tables)
    for t in tables:
        for p, (lo, _, am) in time_partitions(store, t).items():
            old = lo is not None and lo <= t0 - 6 * DAY
            assert am == ("columnar" if old and t != "sora_report" else "heap"), (t, p, am)
    want = rows_of(store, STATS_TABLES, six["connection_id"])
    assert sum(want.values()) > 5
    assert rows_of(store, STATS_TABLES, seven["connection_id"]) == want
    assert during
    lost = {c: r for c in during if (r := rows_of(store, STATS_TABLES, c)) != want}
    assert not lost, (len(lost), len(during), list(lost.items())[:2])
    assert store.count(day_partition(store, "rtc_codec_stats", -6)) > 0

    # the same reports again: COPY meets their rows in columnar partitions, and the
    # fallback, without ON CONFLICT, leaves them out
    before = {t: store.count(t) for t in tables}
    for env in (six, seven):
        assert post_h2(k.port, env).status == 204
    assert {t: store.count(t) for t in tables} == before
    assert not problems(k), k.log_text()[-3000:]
    assert k.stop() == 0

    # new reports for a columnar day, each twice, with each write method
    for method in METHODS:
        k = daemon(retention_days=0, postgres_write_method=method, **settings)
        late = make_envelope(stats, timestamp=at_day(-6, 2))
        for _ in range(2):
            assert post_h2(k.port, late).status == 204
        assert rows_of(store, STATS_TABLES, late["connection_id"]) == want, method
        assert store.count("sora_report", "connection_id = ?", (late["connection_id"],)) == 1
        assert not problems(k), (method, k.log_text()[-3000:])
        assert k.stop() == 0
    assert_keys_unique_once(store)

    # rows in DEFAULT for a day whose partition is missing move into it when it is made: the
    # partition dropped and a report for that day stored in DEFAULT between two passes (an
    # hour apart), then the pass at the next start makes it
    k = daemon(retention_days=0, citus_columnar_after=5, retention_interval=3600)
    k.wait_log('"msg":"retention pass"')  # the start's pass is over: the next in an hour
    gone = day_partition(store, "rtc_transport_stats", 3)
    store.execute(f'DROP TABLE "{gone}"')
    stray = make_envelope(stats, timestamp=at_day(3, 1))
    assert post_h2(k.port, stray).status == 204
    cid = stray["connection_id"]
    assert store.count("rtc_transport_stats_default", "connection_id = ?", (cid,)) > 0
    assert k.stop() == 0
    k = daemon(retention_days=0, **settings)
    made = day_partition(store, "rtc_transport_stats", 3)
    assert made is not None
    assert store.count(made, "connection_id = ?", (cid,)) == want["rtc_transport_stats"] > 0
    assert store.count("rtc_transport_stats_default", "connection_id = ?", (cid,)) == 0
    assert not problems(k), k.log_text()[-3000:]
    assert k.stop() == 0

    # retention: day -7's partitions dropped whole (columnar or not), day -6's kept; an old
    # row in DEFAULT deleted
    k = daemon(retention_days=6, **settings)
    ancient = make_envelope(stats, timestamp=at_day(-30, 1))  # no partition: DEFAULT
    assert post_h2(k.port, ancient).status == 204
    wait_until(lambda: all(day_partition(store, t, -7) is None for t in tables), 60,
               interval=0.5, message="day -7 dropped")
    wait_until(lambda: store.count("sora_report", "connection_id = ?",
                                   (ancient["connection_id"],)) == 0, 60, interval=0.5,
               message="DEFAULT's old rows deleted")
    per_connection = [t for t in tables if t not in ("erlang_vm_memory_stats",
                                                      "node_other_stats")]
    assert sum(rows_of(store, per_connection, seven["connection_id"]).values()) == 0
    assert rows_of(store, STATS_TABLES, six["connection_id"]) == want
    assert all(day_partition(store, t, d) for t in tables for d in (-6, 0, 1, 2, 3))
    k.wait_log('"dropped_partitions"')
    assert sum(l.get("dropped_partitions", 0) for l in k.log_lines()
               if l.get("msg") == "retention pass") == len(tables)
    assert not problems(k), k.log_text()[-3000:]


@pytest.mark.once("each write method's encoding runs in both passes in test_postgres.py; "
                   "the default, direct_copy, stays here in both", method=("copy", "unnest"))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.storage("citus")
def test_loadgen_reports_stored_once_on_both_workers(citus_cluster, db, daemon, tmp_path,
                                                     method):
    store = db
    k = daemon(postgres_write_method=method, batch_max_delay_ms=20)
    acked = str(tmp_path / "acked.txt")
    rc, s, out = loadgen(k.port, "-N", 1500, "-n", 150, "-c", 4, "-m", 32, "-a", acked)
    assert rc == 0 and s["status"] == {"204": 1500}, out
    ids = acked_ids(acked)
    assert len(ids) == 1500
    assert_stored_once(store, ids)
    assert store.count("sora_connection") == 150
    assert_keys_unique_once(store)
    per_worker = reports_per_worker(store)
    assert set(per_worker) == worker_ports(citus_cluster) and min(per_worker.values()) > 100

    # the same report twice, and again among new ones: stored once
    env = fixture_envelope(fixture_files()[0])
    before = {t: store.count(t) for t in STATS_TABLES}
    for _ in range(2):
        r = post_h2(k.port, env)
        assert r.status == 204, (r, problems(k))
    once = {t: store.count(t) for t in STATS_TABLES}
    assert sum(once.values()) - sum(before.values()) == len(env["stats"])
    assert post_h2(k.port, env).status == 204
    assert {t: store.count(t) for t in STATS_TABLES} == once
    assert not problems(k), k.log_text()[-3000:]


@pytest.mark.once("Citus's plans (EXPLAIN), about 35 s; the views and the console API run "
                   "in both passes on PostgreSQL")
@pytest.mark.storage("citus")
def test_views_and_console_answer_with_shard_local_plans(citus_cluster, db, daemon):
    store = db
    k = daemon(batch_max_delay_ms=20)
    rc, s, out = loadgen(k.port, "-N", 600, "-n", 60, "-c", 2, "-m", 16, "-i", 10)
    assert rc == 0 and s["status"] == {"204": 600}, out
    # the rate views and quality views answer, fleet-wide and for one connection
    for view in ("rtc_inbound_rtp_rates", "rtc_outbound_rtp_rates",
                 "rtc_ice_candidate_pair_rates", "quality_connection_verdict"):
        per = dict(store.query(f'SELECT connection_id, count(*) FROM "{view}" GROUP BY 1'))
        assert per, view
        one = next(iter(per))
        assert store.query(f'SELECT count(*) FROM "{view}" WHERE connection_id = ?',
                           (one,))[0][0] == per[one], view
    cid = store.query("SELECT connection_id FROM rtc_inbound_rtp_rates LIMIT 1")[0][0]
    assert store.query("SELECT count(*) FROM rtc_outbound_rtp_rates WHERE bitrate > 0")[0][0]
    store.query("SELECT count(*) FROM quality_issue_span")

    # one connection's rows: one task on one shard (a router plan), no subplan
    for sql in ('SELECT * FROM rtc_inbound_rtp_rates WHERE connection_id = ?',
                'SELECT * FROM quality_connection_verdict WHERE connection_id = ?',
                'SELECT * FROM rtc_outbound_rtp_stream_stats WHERE connection_id = ? '
                'ORDER BY "time" DESC LIMIT 10'):
        p = plan(store, sql, (cid,))
        assert "Task Count: 1" in p and "Subplan" not in p, p
    # fleet-wide: the window and the grouping run on the shards (no intermediate results)
    for sql in ('SELECT connection_id, avg(bitrate) FROM rtc_outbound_rtp_rates '
                'GROUP BY connection_id',
                'SELECT verdict, count(*) FROM quality_connection_verdict GROUP BY verdict'):
        p = plan(store, sql)
        assert (f"Task Count: {SHARD_COUNT}" in p and "Subplan" not in p
                and "repartition" not in p), p

    # the console API on Citus
    base = f"http://127.0.0.1:{k.console_port}/api"
    r = curl(f"{base}/connections?per_page=500")  # every connection on one page
    assert r.status == 200, r.body
    listed = json.loads(r.body)
    assert cid in json.dumps(listed)
    # its row's quality columns come from the shards' quality rows, the counts from all rows
    row = next(row for row in listed["rows"] if row["connection_id"] == cid)
    assert row["reports"] and row["mos_avg"] is not None, row
    assert listed["counts"]["all"] == listed["total"] == len(listed["rows"])
    for path in (f"/connections/{cid}", f"/connections/{cid}/series", "/overview"):
        r = curl(base + path)
        assert r.status == 200, (path, r.body[:500])
        json.loads(r.body)
    chan = next(row["channel_id"] for row in listed["rows"] if row["connection_id"] == cid)
    r = curl(f"{base}/channels/" + urllib.parse.quote(chan, safe=""))
    assert r.status == 200, r.body[:500]
    got = json.loads(r.body)
    assert cid in {p["connection_id"] for p in got["quality"]["participants"]}
    assert cid in got["series"], got["series"].keys()
    assert not problems(k), k.log_text()[-3000:]


def start_loadgen(port, acked, seconds, seed, rate=800):
    cmd = [KOHAKU_LOADGEN, "-u", f"http://127.0.0.1:{port}/collector", "-F", FIXTURES_DIR,
           "-d", str(seconds), "-r", str(rate), "-n", "80", "-c", "4", "-m", "16", "-a", acked,
           "-s", str(seed), "--allow", "204,503"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.once("an outage under load, about 40 s; the same spool code runs in both passes "
                   "in test_postgres.py's and test_spool.py's outages")
@pytest.mark.storage("citus")
def test_worker_restarted_under_load_loses_nothing_acknowledged(citus_cluster, db, tmp_path):
    """A worker stopped for a few seconds and started again while loadgen runs: kohaku spools
    what it cannot commit and replays it; every acknowledged report is stored once."""
    store = db
    k = Kohaku(dict(store.settings(), spool_dir=str(tmp_path / "spool"),
                    storage_retry_ms=300, debug="false"), directory=tmp_path / "k").start()
    try:
        k.wait_log('"msg":"postgres schema ready"', timeout=60)
        acked = str(tmp_path / "acked.txt")
        lg = start_loadgen(k.port, acked, 20, 7)
        wait_until(lambda: len(acked_ids(acked)) > 500, 30, message="first acks")
        worker = citus_cluster.workers[0]
        worker.stop()
        before = len(acked_ids(acked))
        # bounds that hold on the sanitizer build too
        wait_until(lambda: len(acked_ids(acked)) > before + 300, 30,
                   message="acks with a worker away")
        worker.start()
        out, _ = lg.communicate(timeout=60)
        assert lg.returncode == 0, out
        wait_drained(k, timeout=90)
        ids = acked_ids(acked)
        assert len(ids) > before + 300
        assert_stored_once(store, ids)
        assert val_spooled(k) > 0, "the worker's outage never reached the spool"
    finally:
        assert k.close() == 0


def val_spooled(k):
    return k.metric("kohaku_spool_appended_total") or 0


def test_timescaledb_next_to_citus_is_refused(tmp_path):
    """One server preloading both, citus and timescaledb created in one database: kohaku
    refuses it at start-up (and `kohaku migrate` too) with the reason, and drops neither."""
    require_citus()
    require_timescaledb()
    cluster = PgCluster(preload=["citus", "timescaledb"])
    try:
        name = unique_db_name("both")
        uri = cluster.create_db(name)
        cluster.psql(name, "CREATE EXTENSION citus; CREATE EXTENSION timescaledb")
        cfg = tmp_path / "config.ini"
        cfg.write_text(f"storage = postgres\npostgres_uri = {uri}\n")
        out = subprocess.run([KOHAKU_BIN, "-C", str(cfg), "migrate"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode != 0, out.stdout + out.stderr
        assert "citus and timescaledb are both created in this database; they cannot share " \
            "one" in out.stdout + out.stderr
        k = Kohaku({"storage": "postgres", "postgres_uri": uri}).start(wait=False)
        assert k.proc.wait(30) != 0
        assert "storage failed to open" in k.log_text() and "cannot share one" in k.log_text()
        k.close()
        assert cluster.psql(name, "SELECT string_agg(extname, ',' ORDER BY extname) FROM "
                                  "pg_extension") == "citus,plpgsql,timescaledb"
        assert cluster.psql(name, "SELECT count(*) FROM pg_class WHERE relname = "
                                  "'sora_connection'") == "0"
    finally:
        cluster.close()

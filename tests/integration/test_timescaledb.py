"""TimescaleDB end to end (issue: Drop-in for Kohaku 2023.1, real TimescaleDB in CI): the real
daemon against a real TimescaleDB 2.17 (built from ../shared/third_party by scripts/install-deps
--test), in every state a server can be in:

- preloaded (shared_preload_libraries = 'timescaledb'): hypertables, compression, policies;
- installed but not preloaded (the plain test cluster): plain PostgreSQL, one warning, and
  never a CREATE EXTENSION (which would end the session with a FATAL);
- CREATE EXTENSION refused (a role without CREATE on the database): plain PostgreSQL, tried once;
- timescaledb.license = 'apache': hypertables, no compression, kohaku drops old chunks;
- created in a database whose server does not preload it: refused, with the reason;
- created at another version than the installed default: only when an older version is
  installable here (the 2.17.2 tarball ships update scripts only), else the unit test
  tests/unit/store/test_pg_timescale.c checks that decision.

Without TimescaleDB the tests are skipped with the reason, or fail when
KOHAKU_REQUIRE_TIMESCALEDB=1 (scripts/test sets it where ../shared/third_party exists). One
preloaded cluster and one Apache-licensed cluster serve the whole module."""
import subprocess
import threading
from datetime import datetime, timedelta, timezone

import pytest

from helpers import (KOHAKU_BIN, STATS_TABLES, Kohaku, PgDb, all_counts, fixture_files,
                     load_fixture, make_envelope, post_h2, sora_id, wait_until)
from pgcluster import require_timescaledb, timescaledb_cluster, unique_db_name

# every time series: the stats tables, the node's, kohaku's quality rows and sora_report
HYPERTABLES = STATS_TABLES + ["erlang_vm_memory_stats", "node_other_stats", "quality_connection",
                              "quality_stream", "sora_report"]
METHODS = ["direct_copy", "unnest", "copy"]


@pytest.fixture(scope="module")
def apache_cluster():
    cluster = timescaledb_cluster(**{"timescaledb.license": "apache"})
    yield cluster
    cluster.close()


@pytest.fixture
def daemon(kohaku_factory):
    """kohaku_factory, waiting for the PostgreSQL schema as well."""
    def start(settings=None, **keys):
        k = kohaku_factory(settings, **keys)
        k.wait_log('"msg":"postgres schema ready"', timeout=30)
        return k

    return start


def schema_ready(k):
    lines = [l for l in k.log_lines() if l.get("msg") == "postgres schema ready"]
    assert len(lines) == 1, k.log_text()[-3000:]
    return lines[0]


def storage_mode(k):
    modes = [dict(labels)["mode"] for (name, labels), v in k.metrics().items()
             if name == "kohaku_storage_mode" and v == 1]
    assert len(modes) == 1, modes
    return modes[0]


def warnings(k, text):
    return [l for l in k.log_lines() if l.get("level") == "warn" and text in l.get("msg", "")]


def at(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compress_all(store):
    """compress_chunk on every chunk not compressed yet; returns how many chunks are
    compressed now."""
    store.query("SELECT compress_chunk((quote_ident(chunk_schema) || '.' || "
                "quote_ident(chunk_name))::regclass, if_not_compressed => TRUE) "
                "FROM timescaledb_information.chunks WHERE NOT is_compressed")
    return store.query("SELECT count(*) FROM timescaledb_information.chunks "
                       "WHERE is_compressed")[0][0]


def jobs(store):
    """{(hypertable, proc): config} of the policies."""
    return {(h, p): c for h, p, c in store.query(
        "SELECT hypertable_name, proc_name, config FROM timescaledb_information.jobs "
        "WHERE hypertable_name IS NOT NULL")}


# --- preloaded ---------------------------------------------------------------------------------

@pytest.mark.storage("timescaledb")
def test_hypertables_compression_and_policies_follow_the_config(db, daemon):
    """Every stats table and sora_report is a hypertable on time, compressed by
    connection_id (node_name, source) ordered by its key, with the compression and retention
    policies of the config; a restart with other values replaces them."""
    ts_store = db
    k = daemon(retention_days=60, timescaledb_compress_after=7, timescaledb_chunk_interval=24)
    ready = schema_ready(k)
    assert (ready["mode"], ready["compression"], ready["retention"]) == (
        "timescaledb", True, "timescaledb policy")
    assert storage_mode(k) == "timescaledb"
    assert not [l for l in k.log_lines() if l.get("level") in ("warn", "error")], k.log_text()
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204

    hyper = dict(ts_store.query("SELECT hypertable_name, compression_enabled "
                                "FROM timescaledb_information.hypertables"))
    assert sorted(hyper) == sorted(HYPERTABLES) and all(hyper.values()), hyper
    seg, order = {}, {}
    for table, column, s, o in ts_store.query(
            "SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index "
            "FROM timescaledb_information.compression_settings ORDER BY 1, 4"):
        if s is not None:
            seg[table] = column
        if o is not None:
            order.setdefault(table, []).append(column)
    conn_scoped = STATS_TABLES + ["quality_connection", "quality_stream"]
    want_seg = {t: "connection_id" for t in conn_scoped}
    want_seg.update(erlang_vm_memory_stats="node_name", node_other_stats="node_name",
                    sora_report="source")
    assert seg == want_seg
    want_order = {t: ["time", "stats_id"] for t in conn_scoped}
    want_order["node_other_stats"] = ["time", "stats_index"]
    for t in HYPERTABLES:
        assert order[t] == want_order.get(t, ["time"]), t
    dims = ts_store.query("SELECT hypertable_name, column_name, time_interval "
                          "FROM timescaledb_information.dimensions")
    assert sorted(d[0] for d in dims) == sorted(HYPERTABLES)
    assert {(d[1], d[2]) for d in dims} == {("time", timedelta(hours=24))}
    policies = jobs(ts_store)
    for t in HYPERTABLES:
        assert policies[(t, "policy_compression")]["compress_after"] == "7 days", t
        assert policies[(t, "policy_retention")]["drop_after"] == "60 days", t
    assert len(policies) == 2 * len(HYPERTABLES)
    assert k.stop() == 0

    # the same values at the next start: the policies are left as they are (the same jobs),
    # not removed and added again (removing one cancels its job if it runs)
    def job_ids():
        return sorted(r[0] for r in ts_store.query(
            "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"))
    before = job_ids()
    k = daemon(retention_days=60, timescaledb_compress_after=7, timescaledb_chunk_interval=24)
    assert job_ids() == before
    assert k.stop() == 0

    # other values at the next start: the policies and the chunk interval follow
    k = daemon(retention_days=0, timescaledb_compress_after=3, timescaledb_chunk_interval=12)
    policies = jobs(ts_store)
    assert {p for (_, p) in policies} == {"policy_compression"}
    assert all(c["compress_after"] == "3 days" for c in policies.values())
    assert {d[0] for d in ts_store.query("SELECT time_interval FROM "
                                         "timescaledb_information.dimensions")} == {
        timedelta(hours=12)}
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[1]))).status == 204
    assert ts_store.count("sora_report") == 2


@pytest.mark.storage("timescaledb")
def test_compression_layout_an_operator_set_is_kept(db, daemon):
    """BENCHMARKS.md's other layout (no segmentby, ordered by the unique key), set by hand on
    a table: kohaku's next start leaves it as it is, and reports are still stored once and read
    back from its compressed chunks."""
    k = daemon()
    assert k.stop() == 0
    t = "rtc_inbound_rtp_stream_stats"
    db.query(f"ALTER TABLE {t} SET (timescaledb.compress_segmentby = '', "
             "timescaledb.compress_orderby = 'connection_id, time, stats_id')")

    def layout():
        return db.query("SELECT attname, segmentby_column_index, orderby_column_index FROM "
                        "timescaledb_information.compression_settings WHERE hypertable_name "
                        f"= '{t}' ORDER BY 3")
    want = [("connection_id", None, 1), ("time", None, 2), ("stats_id", None, 3)]
    assert layout() == want
    k = daemon()
    assert layout() == want
    env = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(k.port, env).status == 204
    stored = db.count(t)
    assert stored > 0
    assert compress_all(db) > 0
    assert post_h2(k.port, env).status == 204  # again, into the compressed chunk
    assert db.count(t, "connection_id = %s", (env["connection_id"],)) == stored
    assert k.stop() == 0
    assert layout() == want


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.storage("timescaledb")
def test_compressed_chunk_written_again_stores_once(db, daemon, method):
    """Reports of ten days ago, their chunks compressed with compress_chunk; then new rows
    into those chunks (the same connection at new times, a new connection) and a redelivered
    report: 204 each, new rows stored, the redelivered one stored once."""
    ts_store = db
    # every sample stored (dedup off): the counts below are of every object sent, several
    # fixtures of one scenario under one connection sharing their codecs and certificates
    k = daemon(postgres_write_method=method, batch_max_delay_ms=50, dedup=False)
    files = fixture_files()
    base = datetime.now(timezone.utc).replace(hour=6, minute=0, second=0, microsecond=0) - \
        timedelta(days=10)
    cid = sora_id()
    first = [make_envelope(load_fixture(f), connection_id=cid,
                           timestamp=at(base + timedelta(seconds=i)))
             for i, f in enumerate(files[:4])]
    for env in first:
        r = post_h2(k.port, env)
        assert r.status == 204, r.text
    nobj = sum(len(e["stats"]) for e in first)
    assert compress_all(ts_store) >= len({t for t, n in all_counts(ts_store).items()
                                          if n and t != "sora_connection"})
    counts = all_counts(ts_store)
    assert sum(counts[t] for t in STATS_TABLES) == nobj

    # the same report again, alone and in a batch with new ones
    assert post_h2(k.port, first[0]).status == 204
    assert all_counts(ts_store) == counts
    later = [make_envelope(load_fixture(files[0]), connection_id=cid,
                           timestamp=at(base + timedelta(seconds=30))),
             make_envelope(load_fixture(files[1]), timestamp=at(base + timedelta(seconds=31)))]
    results = []
    threads = [threading.Thread(target=lambda e=e: results.append(post_h2(k.port, e).status))
               for e in later + first[1:3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [204] * 4
    after = all_counts(ts_store)
    assert after["sora_report"] == len(first) + len(later)
    assert sum(after[t] for t in STATS_TABLES) == nobj + sum(len(e["stats"]) for e in later)
    for t in STATS_TABLES:
        dup = ts_store.query(f'SELECT count(*) FROM (SELECT 1 FROM "{t}" GROUP BY '
                             'connection_id, "time", stats_id HAVING count(*) > 1) d')[0][0]
        assert dup == 0, t
    # the chunks that held the first rows are still compressed, and they hold the new ones
    assert ts_store.query("SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
                          "WHERE hypertable_name = 'rtc_transport_stats'")[0][0] is True
    assert ts_store.count("rtc_transport_stats", "connection_id = ?", (cid,)) == sum(
        1 for e in first + later[:1] for o in e["stats"] if o["type"] == "transport")


@pytest.mark.storage("timescaledb")
def test_compression_policy_job_runs(ts_cluster, db, daemon):
    """The compression policy kohaku adds compresses a chunk past compress_after when run
    (CALL run_job, as TimescaleDB's scheduler would)."""
    ts_store = db
    k = daemon(timescaledb_compress_after=7, retention_days=0)
    old = datetime.now(timezone.utc) - timedelta(days=9)
    env = make_envelope(load_fixture(fixture_files()[0]), timestamp=at(old))
    assert post_h2(k.port, env).status == 204
    job = ts_store.query("SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = "
                         "'policy_compression' AND hypertable_name = 'rtc_transport_stats'")[0][0]
    ts_cluster.psql(ts_store.uri.rsplit("/", 1)[1], f"CALL run_job({int(job)})")  # autocommit
    assert ts_store.query("SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
                          "WHERE hypertable_name = 'rtc_transport_stats'")[0][0] is True
    assert ts_store.count("rtc_transport_stats") > 0


@pytest.mark.storage("timescaledb")
def test_create_extension_refused_is_tried_once(ts_cluster, db, daemon):
    """A preloaded server where kohaku's role may not create the extension (no CREATE on the
    database): one warning, plain PostgreSQL, and no second CREATE EXTENSION after the server
    restarts and kohaku reconnects."""
    role = unique_db_name("kh_role")
    store = db
    store.execute(f'CREATE ROLE "{role}" LOGIN; GRANT CREATE ON SCHEMA public TO "{role}"')
    uri = store.uri.replace("postgres@", f"{role}@")
    before = ts_cluster.log_text().count("permission denied to create extension")
    k = daemon({"storage": "postgres", "postgres_uri": uri})
    assert schema_ready(k)["mode"] == "postgresql" and storage_mode(k) == "postgresql"
    assert len(warnings(k, "timescaledb is available but cannot be used")) == 1
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204
    ts_cluster.stop()
    ts_cluster.start()
    k.wait_log('"msg":"postgres available"', timeout=30)
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[1]))).status == 204
    assert store.count("sora_report") == 2
    assert ts_cluster.log_text().count("permission denied to create extension") == before + 1
    assert len(warnings(k, "timescaledb is available but cannot be used")) == 1
    assert not store.query("SELECT extname FROM pg_extension WHERE extname = 'timescaledb'")


@pytest.mark.storage("timescaledb")
def test_extension_at_another_version_is_used_as_it_is(db, daemon):
    """An extension created at an older version than the installed default: kohaku uses it,
    with a warning. Runs only where such a version is installable; TimescaleDB 2.17.2's
    tarball ships update scripts to 2.17.2 only, not an older version's install script or
    library, so here the decision is tested by tests/unit/store/test_pg_timescale.c."""
    store = db
    older = [v for (v,) in store.query(
        "SELECT version FROM pg_available_extension_versions WHERE name = 'timescaledb' AND "
        "version <> (SELECT default_version FROM pg_available_extensions WHERE name = "
        "'timescaledb') ORDER BY string_to_array(version, '.')::int[] DESC")]
    if not older:
        pytest.skip("no TimescaleDB version other than the installed default is installable "
                    "here (only update scripts ship): checked by the unit test")
    store.execute(f"CREATE EXTENSION timescaledb VERSION '{older[0]}'")
    k = daemon()
    assert schema_ready(k)["mode"] == "timescaledb"
    w = warnings(k, "another version than the installed default")
    assert len(w) == 1 and w[0]["version"] == older[0]
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204


# --- installed, not preloaded ------------------------------------------------------------------

@pytest.mark.storage("postgres")
def test_installed_but_not_preloaded_is_plain_postgresql(pg_cluster, db, daemon):
    """The plain cluster has TimescaleDB available but not preloaded: kohaku comes up in
    postgresql mode, healthy, stores reports, warns once naming shared_preload_libraries, and
    never runs CREATE EXTENSION (its FATAL would show in the server log), also not after the
    server restarts and kohaku reconnects."""
    require_timescaledb()
    pg_store = db
    assert pg_store.query("SELECT count(*) FROM pg_available_extensions "
                          "WHERE name = 'timescaledb'")[0][0] == 1
    fatal = pg_cluster.log_text().count("must be preloaded")
    k = daemon()
    k.wait_health(204)
    ready = schema_ready(k)
    assert (ready["mode"], ready["compression"], ready["retention"]) == (
        "postgresql", False, "kohaku drop partitions")  # plain PostgreSQL partitions
    assert storage_mode(k) == "postgresql"
    w = warnings(k, "not in shared_preload_libraries")
    assert len(w) == 1 and w[0]["shared_preload_libraries"] == "", w
    env = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(k.port, env).status == 204
    pg_cluster.stop()
    pg_cluster.start()
    k.wait_log('"msg":"postgres available"', timeout=30)
    k.wait_health(204)
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[1]))).status == 204
    assert pg_store.count("sora_report") == 2
    assert len(warnings(k, "not in shared_preload_libraries")) == 1
    assert pg_cluster.log_text().count("must be preloaded") == fatal
    assert not pg_store.query("SELECT extname FROM pg_extension WHERE extname = 'timescaledb'")


@pytest.mark.storage("postgres")
def test_not_preloaded_seen_by_a_role_that_cannot_read_the_setting(pg_cluster, db, daemon):
    """A database owner without pg_read_all_settings sees no shared_preload_libraries; kohaku
    tells a missing preload by the loader's own setting instead, with the same outcome."""
    require_timescaledb()
    role = unique_db_name("kh_owner")
    store = db
    store.execute(f'CREATE ROLE "{role}" LOGIN')
    pg_cluster.psql("postgres", f'ALTER DATABASE "{store.uri.rsplit("/", 1)[1]}" OWNER TO "{role}"')
    fatal = pg_cluster.log_text().count("must be preloaded")
    k = daemon({"storage": "postgres", "postgres_uri": store.uri.replace("postgres@", f"{role}@")})
    k.wait_health(204)
    assert schema_ready(k)["mode"] == "postgresql"
    w = warnings(k, "not in shared_preload_libraries")
    assert len(w) == 1 and w[0]["shared_preload_libraries"] == "(not readable)", w
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204
    assert pg_cluster.log_text().count("must be preloaded") == fatal


# --- Apache license, and an extension the server does not preload ------------------------------

def test_apache_license_hypertables_and_chunk_retention(apache_cluster, daemon):
    """timescaledb.license = 'apache': hypertables without compression or policies (both
    Timescale-licensed), a warning, and kohaku's retention drops chunks past retention_days."""
    store = PgDb(apache_cluster, unique_db_name("apache"))
    k = daemon(store.settings(), retention_days=30, retention_interval=1)
    ready = schema_ready(k)
    assert (ready["mode"], ready["compression"], ready["retention"]) == (
        "timescaledb-apache", False, "kohaku drop_chunks")
    assert storage_mode(k) == "timescaledb-apache"
    assert len(warnings(k, "timescaledb.license = apache")) == 1
    hyper = dict(store.query("SELECT hypertable_name, compression_enabled "
                             "FROM timescaledb_information.hypertables"))
    assert sorted(hyper) == sorted(HYPERTABLES) and not any(hyper.values())
    assert jobs(store) == {}
    now = datetime.now(timezone.utc)
    stats = load_fixture(fixture_files()[0])
    old = [make_envelope(stats, timestamp=at(now - timedelta(days=d))) for d in (45, 400)]
    new = [make_envelope(stats, timestamp=at(now - timedelta(days=d))) for d in (0, 1, 28)]
    for env in old + new:
        assert post_h2(k.port, env).status == 204
    k.wait_log('"dropped_chunks"', timeout=30)
    wait_until(lambda: store.count("sora_report") == len(new), 20, interval=0.2,
               message="the reports past retention_days gone with their chunks")
    assert store.count("sora_report") == len(new)
    kept = {c for (c,) in store.query("SELECT DISTINCT connection_id FROM rtc_transport_stats")}
    assert kept == {e["connection_id"] for e in new}


def test_created_but_not_preloaded_is_refused_with_the_reason(apache_cluster, tmp_path):
    """A database where timescaledb is created, on a server restarted without preloading it:
    every write into a hypertable would end its session, so kohaku refuses the database at
    start-up, naming shared_preload_libraries, without touching a hypertable."""
    store = PgDb(apache_cluster, unique_db_name("unloaded"))
    store.execute("CREATE EXTENSION timescaledb")
    cfg = tmp_path / "config.ini"
    cfg.write_text(f"storage = postgres\npostgres_uri = {store.uri}\n")
    apache_cluster.stop()
    apache_cluster.preload = []
    apache_cluster.start()
    try:
        fatal = apache_cluster.log_text().count("must be preloaded")
        out = subprocess.run([KOHAKU_BIN, "-C", str(cfg), "migrate"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode != 0, out.stdout + out.stderr
        assert "created in this database but PostgreSQL does not preload it" in out.stdout + \
            out.stderr
        assert "shared_preload_libraries" in out.stdout + out.stderr
        k = Kohaku({"storage": "postgres", "postgres_uri": store.uri}).start(wait=False)
        assert k.proc.wait(30) != 0
        assert "storage failed to open" in k.log_text()
        k.close()
        assert apache_cluster.log_text().count("must be preloaded") == fatal
    finally:
        apache_cluster.stop()
        apache_cluster.preload = ["timescaledb"]
        apache_cluster.start()

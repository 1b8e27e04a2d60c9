"""Converting a plain PostgreSQL kohaku database to Citus mode (issue: several kohaku behind
HAProxy, the stats distributed on Citus; README "Converting a plain PostgreSQL database to
Citus"). On the CitusCluster's coordinator, a database without the extension is a plain
PostgreSQL database: kohaku migrates it in plain mode and stores reports into it. Then the
operator's steps, as the README gives them: the database created on each worker with the
extension, CREATE EXTENSION citus on the coordinator, the coordinator's host set and the
workers added, kohaku restarted. Its migration (under the advisory lock) distributes the
existing tables with their rows: every row is there once, on both workers and no longer in
the coordinator's local tables; the views, `kohaku quality` and the console API answer; new
reports go in."""
import json
import subprocess

import pytest

from helpers import KOHAKU_BIN, STATS_TABLES, Kohaku, curl, loadgen
from pgcluster import unique_db_name
from test_spool import acked_ids, assert_stored_once

COUNTED = STATS_TABLES + ["sora_report", "sora_connection", "sora_node", "quality_stream",
                          "quality_connection"]


def counts(con):
    return {t: con.query(f'SELECT count(*) FROM "{t}"')[0][0] for t in COUNTED}


class PlainDb:
    """A database on the coordinator made as a plain PostgreSQL one (no citus extension)."""

    kind = "postgres"

    def __init__(self, cluster, name):
        from helpers import PgDb
        self.cluster, self.dbname = cluster, name
        cluster.coordinator.psql("postgres", f'CREATE DATABASE "{name}"')
        self.uri = cluster.uri(name)
        self._pg = PgDb.__new__(PgDb)
        self._pg.cluster, self._pg.dbname, self._pg.uri = cluster, name, self.uri

    def settings(self):
        return {"storage": "postgres", "postgres_uri": self.uri}

    def query(self, sql, params=()):
        return self._pg.query(sql, params)

    def to_citus(self):
        """The operator's steps of the README, in that order."""
        c = self.cluster
        for w in c.workers:
            w.psql("postgres", f'CREATE DATABASE "{self.dbname}"')
            w.psql(self.dbname, "CREATE EXTENSION citus")
        c.psql(self.dbname, "CREATE EXTENSION citus")
        c.psql(self.dbname, f"SELECT citus_set_coordinator_host('127.0.0.1', {c.port})")
        for w in c.workers:
            c.psql(self.dbname, f"SELECT citus_add_node('127.0.0.1', {w.port})")
        c.psql(self.dbname, "CREATE EXTENSION citus_columnar")


def ready(k):
    k.wait_log('"msg":"postgres schema ready"', timeout=120)
    return [l for l in k.log_lines() if l.get("msg") == "postgres schema ready"][-1]


def problems(k):
    return [l for l in k.log_lines() if l.get("level") in ("warn", "error")]


def test_plain_database_converted_to_citus_keeps_its_rows(citus_cluster, tmp_path):
    d = PlainDb(citus_cluster, unique_db_name("plain"))
    # a database meant to become a Citus one is kept unpartitioned (README: Partitions)
    settings = dict(d.settings(), batch_max_delay_ms=20, postgres_partition_interval=0)
    # 1. plain PostgreSQL: kohaku migrates and stores
    k = Kohaku(settings, directory=tmp_path / "k1").start()
    try:
        assert ready(k)["mode"] != "citus"
        rc, s, out = loadgen(k.port, "-N", 400, "-n", 40, "-c", 2, "-m", 8, "-i", 10,
                             "-a", str(tmp_path / "acked1.txt"))
        assert rc == 0 and s["status"] == {"204": 400}, out
    finally:
        assert k.close() == 0
    before = counts(d)
    assert before["sora_report"] == 400 and all(before[t] for t in ("sora_connection",
                                                                    "rtc_inbound_rtp_stream_stats"))

    # 2. the operator: citus created, workers added; 3. kohaku restarted, now partitioning
    # (Citus mode's default): each old table becomes its new table's DEFAULT partition
    d.to_citus()
    settings.pop("postgres_partition_interval")
    k = Kohaku(settings, directory=tmp_path / "k2").start(timeout=120)
    try:
        line = ready(k)
        assert line["mode"] == "citus" and line["partitioned"] is True, line
        assert not problems(k), k.log_text()[-3000:]
        converted = [l["table"] for l in k.log_lines() if l.get("msg") == "table partitioned"]
        assert "sora_report" in converted and "rtc_inbound_rtp_stream_stats" in converted
        # the old rows of today, in DEFAULT at first, moved into today's partition when it
        # was made: DEFAULT keeps only times no partition covers
        assert d.query('SELECT count(*) FROM "sora_report_default" WHERE "time" >= '
                       "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
                       )[0][0] == 0
        assert d.query("SELECT count(*) FROM time_partitions WHERE parent_table = "
                       "'sora_report'::regclass AND from_value IS NOT NULL")[0][0] == 4
        # every row still there, once
        assert counts(d) == before
        assert_stored_once(d, acked_ids(str(tmp_path / "acked1.txt")))
        # every kohaku table distributed or a reference table; no local rows left behind on
        # the coordinator (create_distributed_table copies, the migration truncates the local
        # copy)
        local = d.query("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON "
                        "n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN "
                        "('r', 'p') AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE "
                        "p.logicalrelid = c.oid)")
        assert local == [], local
        left = d.query("SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN "
                       "pg_dist_partition p ON p.logicalrelid = c.oid "
                       "WHERE pg_relation_size(c.oid) > 0")
        assert left == [], ("rows left on disk in the coordinator's own tables", left)
        nodes = {p for (p,) in d.query("SELECT DISTINCT nodeport FROM citus_shards "
                                       "WHERE table_name = 'sora_report'::regclass")}
        assert nodes == {w.port for w in citus_cluster.workers}, nodes
        per = d.query("SELECT nodeport, sum(shard_size) FROM citus_shards WHERE table_name IN "
                      "(SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = "
                      "'rtc_inbound_rtp_stream_stats'::regclass) GROUP BY 1")  # partitions
        assert len(per) == 2 and all(int(size) > 0 for _, size in per), per

        # the views, the console API and kohaku quality answer on the converted database
        for view in ("rtc_inbound_rtp_rates", "rtc_outbound_rtp_rates",
                     "quality_connection_verdict"):
            assert d.query(f'SELECT count(*) FROM "{view}"')[0][0] > 0, view
        cid = d.query("SELECT connection_id FROM rtc_inbound_rtp_rates LIMIT 1")[0][0]
        base = f"http://127.0.0.1:{k.console_port}/api"
        for path in ("/connections", f"/connections/{cid}", f"/connections/{cid}/series",
                     "/overview"):
            r = curl(base + path)
            assert r.status == 200, (path, r.body[:500])
            json.loads(r.body)
        q = subprocess.run([KOHAKU_BIN, "-C", k.config_path, "quality", "--json", cid],
                           capture_output=True, text=True, timeout=60)
        assert q.returncode == 0, q.stderr
        assert json.loads(q.stdout)
        w = subprocess.run([KOHAKU_BIN, "-C", k.config_path, "quality", "--worst", "--since",
                            "30d", "--json"], capture_output=True, text=True, timeout=60)
        assert w.returncode == 0, w.stderr

        # new reports go in, beside the old ones
        rc, s, out = loadgen(k.port, "-N", 200, "-n", 20, "-c", 2, "-m", 8, "-i", 10, "-s", 99,
                             "-a", str(tmp_path / "acked2.txt"))
        assert rc == 0 and s["status"] == {"204": 200}, out
        assert_stored_once(d, acked_ids(str(tmp_path / "acked1.txt")) + acked_ids(str(tmp_path / "acked2.txt")))
        assert not problems(k), k.log_text()[-3000:]
    finally:
        assert k.close() == 0
    # 4. a second start changes nothing
    k = Kohaku(settings, directory=tmp_path / "k3").start()
    try:
        ready(k)
        assert not [l for l in k.log_lines() if l.get("msg") == "schema migrated"]
        assert d.query("SELECT count(*) FROM sora_report")[0][0] == 600
    finally:
        assert k.close() == 0


def test_database_partitioned_by_plain_mode_is_refused_by_citus_mode(citus_cluster, tmp_path):
    """A database plain PostgreSQL mode has partitioned (its <table>_unpartitioned partition of
    all times before the first: Citus's create_time_partitions cannot manage that) is refused
    once it has citus (`kohaku migrate`), with the reason, and nothing is distributed."""
    d = PlainDb(citus_cluster, unique_db_name("parted"))
    k = Kohaku(d.settings(), directory=tmp_path / "k1").start()
    try:
        assert ready(k)["partitioned"] is True
    finally:
        assert k.close() == 0
    d.to_citus()
    cfg = tmp_path / "migrate.ini"
    cfg.write_text(f"storage = postgres\npostgres_uri = {d.uri}\n")
    out = subprocess.run([KOHAKU_BIN, "-C", str(cfg), "migrate"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "made by plain PostgreSQL mode" in out.stderr, out.stderr
    assert "cannot become a Citus one" in out.stderr, out.stderr
    assert d.query("SELECT count(*) FROM pg_dist_partition")[0][0] == 0  # rolled back


def test_citus_without_citus_columnar_keeps_heap_and_says_so(citus_cluster, tmp_path):
    """Citus mode partitions, but without the citus_columnar extension old partitions stay
    heap: kohaku says so once (warn), and its schema line says no compression."""
    name = unique_db_name("nocol")
    uri = citus_cluster.create_db(name, columnar=False)
    k = Kohaku({"storage": "postgres", "postgres_uri": uri, "retention_days": 0,
                "retention_interval": 1}, directory=tmp_path / "k").start(timeout=90)
    try:
        line = ready(k)
        assert line["mode"] == "citus" and line["partitioned"] is True, line
        assert line["compression"] is False and "columnar_after_days" not in line, line
        k.wait_log('"msg":"retention pass"')
        warned = [l for l in k.log_lines() if l.get("msg") == "citus: old partitions stay heap"]
        assert len(warned) == 1 and warned[0]["level"] == "warn", warned
        assert "CREATE EXTENSION citus_columnar" in warned[0]["error"]
    finally:
        assert k.close() == 0

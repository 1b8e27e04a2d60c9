#!/usr/bin/python3
"""Unchanged objects stored once (issue 16): kohaku with SQLite (or PostgreSQL, or
TimescaleDB: --backend), dedup on and off in turn,
driven as bench/run.py's part 3 drives it (kohaku-loadgen, 1,000 emulated connections, 4
connections x 32 streams, as fast as answers allow, after a warm-up): reports/s, the stats
rows written per report (counted in the database afterwards), and the database's bytes per
report (SQLite: file + WAL after the run; PostgreSQL: its tables with their indexes and TOAST,
partitions included; TimescaleDB: the same after compress_chunk of every chunk, as its
policy would; each on a throwaway cluster, tests/integration/pgcluster.py, fsync off).

With --layouts (TimescaleDB) each run also measures the database compressed with no
segmentby, ordered by the unique key, against kohaku's segmentby connection_id: the bytes,
and how long one connection's rows take to read.

Usage: bench/dedup.py [--reports N] [--pairs N] [--backend B] [--layouts] [--json FILE]
The runs alternate (on, off, on, off ...) so a neighbour's load spreads over both."""
import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: Daemon, run_loadgen)


# The bytes a PostgreSQL database holds for kohaku: its tables with their indexes and TOAST,
# partitions and TimescaleDB chunks (compressed ones included) among them.
PG_BYTES = ("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN ('public', "
            "'_timescaledb_internal')")


def one(tmp, on, n, k, backend, cluster, with_layouts=False):
    name = f"dedup_{'on' if on else 'off'}_{k}"
    if backend == "sqlite":
        path = os.path.join(tmp, f"{name}.db")
        settings = {"storage": "sqlite", "sqlite_path": path}
    else:
        settings = {"storage": "postgres", "postgres_uri": cluster.create_db(name)}
    settings["dedup"] = "true" if on else "false"
    d = run.Daemon(tmp, settings)
    try:
        run.run_loadgen(d.port, "-N", 2000, "-c", 4, "-m", 32)  # warm-up (schema, caches)
        peak = run.run_loadgen(d.port, "-N", n, "-c", 4, "-m", 32, "-n", run.SORA_CONNS)
    finally:
        rc = d.stop()
    assert rc == 0, f"kohaku exited {rc}"
    if backend == "sqlite":
        db = sqlite3.connect(path)
        try:
            tables = [t for (t,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND "
                "(name LIKE 'rtc_%' OR name LIKE 'quality_%')")]
            rows = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
            reports = db.execute("SELECT count(*) FROM sora_report").fetchone()[0]
        finally:
            db.close()
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    else:
        import psycopg2
        db = psycopg2.connect(settings["postgres_uri"])
        db.autocommit = True
        cur = db.cursor()

        def q(sql):
            cur.execute(sql)
            return cur.fetchall() if cur.description else []
        tables = [t for (t,) in q("SELECT relname::text FROM pg_class WHERE relkind IN "
                                  "('r', 'p') AND NOT relispartition AND relnamespace = "
                                  "'public'::regnamespace AND (relname LIKE 'rtc%' OR "
                                  "relname LIKE 'quality%')")]
        rows = {t: q(f'SELECT count(*) FROM "{t}"')[0][0] for t in tables}
        reports = q("SELECT count(*) FROM sora_report")[0][0]
        if backend == "timescaledb":  # every chunk compressed, as the policy would
            q(COMPRESS_ALL)
        q("VACUUM ANALYZE")
        size = int(q(PG_BYTES)[0][0])
        layouts = {}
        if backend == "timescaledb" and with_layouts:
            layouts["segmentby connection_id (kohaku's)"] = {
                "bytes_per_report": size / reports, "lookup_ms": lookup_ms(q)}
            unsegmented(q)
            layouts["no segmentby, orderby connection_id, time, stats_id"] = {
                "bytes_per_report": int(q(PG_BYTES)[0][0]) / reports, "lookup_ms": lookup_ms(q)}
        db.close()
    return {"dedup": on, "reports_per_s": peak["reports_per_s"], "p99_ms": peak["p99_ms"],
            "reports": reports, "rows": sum(rows.values()), "rows_per_table": rows,
            "rows_per_report": sum(rows.values()) / reports, "bytes_per_report": size / reports,
            "layouts": layouts}


COMPRESS_ALL = ("SELECT count(compress_chunk(c, if_not_compressed => true)) FROM "
                "(SELECT show_chunks(format('%I', hypertable_name)::regclass) AS c FROM "
                "timescaledb_information.hypertables WHERE compression_enabled) x")
DECOMPRESS_ALL = COMPRESS_ALL.replace("compress_chunk(c, if_not_compressed",
                                      "decompress_chunk(c, if_compressed")


def lookup_ms(q, runs=20):
    """One connection's rows of a compressed table, as the console's and Grafana's connection
    pages read them: the median ms of `runs`."""
    cid = q("SELECT connection_id FROM sora_connection ORDER BY connection_id LIMIT 1 "
            "OFFSET 500")[0][0]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        q(f"SELECT * FROM rtc_inbound_rtp_stream_stats WHERE connection_id = '{cid}' "
          "ORDER BY time")
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def unsegmented(q):
    """Every table that kohaku compresses by connection_id compressed again with no segmentby
    and ordered by its unique key instead (TimescaleDB then keeps batches of up to 1,000
    rows of many connections, with min/max metadata, and no index to find a connection's)."""
    q(DECOMPRESS_ALL)
    for (t,) in q("SELECT DISTINCT hypertable_name::text FROM "
                  "timescaledb_information.compression_settings WHERE attname = "
                  "'connection_id' AND segmentby_column_index IS NOT NULL"):
        q(f"ALTER TABLE \"{t}\" SET (timescaledb.compress_segmentby = '', "
          "timescaledb.compress_orderby = 'connection_id, time, stats_id')")
    q(COMPRESS_ALL)
    q("VACUUM ANALYZE")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=int, default=20000)
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--backend", choices=("sqlite", "postgres", "timescaledb"),
                    default="sqlite")
    ap.add_argument("--layouts", action="store_true",
                    help="timescaledb: also the bytes and a connection's lookup time with the "
                         "tables compressed with no segmentby (ordered by the unique key)")
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="bench-kohaku-dedup-", dir="/tmp")
    cluster = None
    if args.backend != "sqlite":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "tests", "integration"))
        import pgcluster
        cluster = (pgcluster.timescaledb_cluster() if args.backend == "timescaledb"
                   else pgcluster.PgCluster())
    try:
        runs = [one(top, on, args.reports, k, args.backend, cluster, args.layouts)
                for k in range(args.pairs) for on in (True, False)]
    finally:
        shutil.rmtree(top, ignore_errors=True)
        if cluster:
            cluster.close()
    print(f"{'dedup':6} {'reports/s':>10} {'p99 ms':>7} {'rows/report':>12} {'bytes/report':>13}"
          f" {'codec':>7} {'cand':>7} {'cert':>7}")
    for r in runs:
        t = r["rows_per_table"]
        print(f"{'on' if r['dedup'] else 'off':6} {r['reports_per_s']:>10.0f} {r['p99_ms']:>7.1f}"
              f" {r['rows_per_report']:>12.2f} {r['bytes_per_report']:>13.0f}"
              f" {t.get('rtc_codec_stats', 0):>7} {t.get('rtc_ice_candidate_stats', 0):>7}"
              f" {t.get('rtc_certificate_stats', 0):>7}")
    for r in runs:
        for name, lay in r["layouts"].items():
            print(f"dedup {'on' if r['dedup'] else 'off'}, {name}: "
                  f"{lay['bytes_per_report']:.0f} bytes/report, a connection's "
                  f"rtc_inbound_rtp_stream_stats rows in {lay['lookup_ms']:.2f} ms")
    for on in (True, False):
        rs = [r["reports_per_s"] for r in runs if r["dedup"] == on]
        print(f"median reports/s, dedup {'on' if on else 'off'}: {statistics.median(rs):.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)


if __name__ == "__main__":
    main()

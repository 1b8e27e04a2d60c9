#!/usr/bin/python3
"""Citus on this machine: what each role spends per report, and what columnar saves.

    bench/citus.py [reports]   (default 6,000)

A throwaway Citus cluster (tests/integration/pgcluster.py: a coordinator and two workers on
127.0.0.1, fsync off, Citus's default 32 shards) and, beside it, one plain PostgreSQL
(the same settings). Against each, one kohaku with its defaults (direct_copy, quality on,
dedup on; on Citus also with ack_mode = log, whose transactions are larger, and with
ack_mode = log and batch_max_reports = 4,096, twice as many reports) takes
`reports` reports (4 times as many on plain PostgreSQL) from kohaku-loadgen (1,000
emulated connections, 5 HTTP/2 connections x 32 streams, as fast as answers allow). Measured per run, from /proc:

- the CPU time of kohaku, of the coordinator's server and of each worker's server
  (postmaster, its backends, and the children it reaped), per report committed;
- the wall time to the last report committed, the committed rate, and the reports per
  storage transaction.

CPU time per report is what the sizing in BENCHMARKS.md is derived from: on this 2-core
machine every process shares the same two cores, so the rates say little about a cluster,
but a role's CPU seconds per report do not depend much on who else runs.

Then, on the Citus database, columnar: the stats rows the run stored are copied to a day 10
days back (a partition made for it with create_time_partitions), and that partition of
each table is converted with alter_old_partitions_set_access_method (one shard at a time;
kohaku calls the function it calls, alter_table_set_access_method, partition by
partition): its size (citus_total_relation_size: the shards on the workers, indexes
included) before and after, and the time the conversion took."""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from pgcluster import CitusCluster, PgCluster  # noqa: E402
from run import Daemon, cpu_ticks, metric_values, pg_server_ticks, run_loadgen  # noqa: E402

import psycopg2  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
DAY = 86400


def committed(con):
    cur = con.cursor()
    cur.execute("SELECT count(*) FROM sora_report")
    return cur.fetchone()[0]


def ingest(tmp, uri, nodes, n, label, **extra):
    """One kohaku against uri (its defaults, plus extra); nodes: {role: PgCluster} whose CPU
    is counted, from the first report sent to the last one committed."""
    settings = {"storage": "postgres", "postgres_uri": uri}
    settings.update(extra)
    d = Daemon(tmp, settings)
    con = psycopg2.connect(uri)
    con.autocommit = True
    deadline = time.time() + 180  # the first migration of a Citus database takes a while
    while time.time() < deadline and "postgres schema ready" not in open(d.log_path).read():
        time.sleep(0.2)
    before = {role: pg_server_ticks(c) for role, c in nodes.items()}
    k0 = cpu_ticks(d.proc.pid)
    b0 = metric_values(d.metrics_port, ("kohaku_batch_reports_count",))
    t0 = time.monotonic()
    s = run_loadgen(d.port, "-N", n, "-n", 1000, "-c", 5, "-m", 32, "-i", 10, "-s", 7)
    answered = time.monotonic() - t0
    ok = s["status"].get("204", 0)
    deadline = time.time() + 900
    while committed(con) < ok and time.time() < deadline:  # ack_mode = log: not yet stored
        time.sleep(0.1)
    wall = time.monotonic() - t0
    kohaku = (cpu_ticks(d.proc.pid) - k0) / TICK
    spent = {role: (pg_server_ticks(c) - before[role]) / TICK for role, c in nodes.items()}
    b1 = metric_values(d.metrics_port, ("kohaku_batch_reports_count",))
    stored = committed(con)
    con.close()
    d.stop()
    batches = b1.get("kohaku_batch_reports_count", 0) - b0.get("kohaku_batch_reports_count", 0)
    out = {"label": label, "answered": ok, "stored": stored, "answered_s": answered,
           "stored_s": wall, "stored_per_s": stored / wall,
           "reports_per_batch": stored / batches if batches else None,
           "kohaku_cpu_ms_per_report": 1000 * kohaku / stored}
    for role, sec in spent.items():
        out[f"{role}_cpu_ms_per_report"] = 1000 * sec / stored
    return out


def columnar_sizes(uri):
    """The run's stats rows copied 10 days back, then that day's partitions made columnar."""
    con = psycopg2.connect(uri)
    con.autocommit = True
    cur = con.cursor()
    cur.execute("SET timezone = 'UTC'")
    t0 = int(time.time()) // DAY * DAY
    lo = t0 - 10 * DAY
    cur.execute("SELECT relname::text FROM pg_class WHERE relkind = 'p' AND NOT relispartition "
                "AND relnamespace = 'public'::regnamespace AND relname <> 'sora_report' "
                "ORDER BY 1")
    tables = [t for (t,) in cur.fetchall()]
    parts, rows = {}, 0
    for t in tables:
        cur.execute("SELECT create_time_partitions(%s::regclass, '24 hours', to_timestamp(%s),"
                    " to_timestamp(%s))", (t, lo + DAY, lo))
        cur.execute("SELECT partition::text FROM time_partitions WHERE parent_table = "
                    "%s::regclass AND from_value::timestamptz = to_timestamp(%s)", (t, lo))
        parts[t] = cur.fetchone()[0]
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "AND table_schema = 'public' ORDER BY ordinal_position", (t,))
        cols = [c for (c,) in cur.fetchall()]
        sel = ", ".join('"time" - interval \'10 days\'' if c == "time" else f'"{c}"'
                        for c in cols)
        names = ", ".join(f'"{c}"' for c in cols)
        cur.execute(f'INSERT INTO "{t}" ({names}) SELECT {sel} FROM "{t}" '
                    'WHERE "time" >= to_timestamp(%s)', (t0,))
        rows += cur.rowcount
        cur.execute(f'VACUUM ANALYZE "{parts[t]}"')

    def size():
        total = 0
        for p in parts.values():
            cur.execute("SELECT citus_total_relation_size(%s::regclass)", (p,))
            total += cur.fetchone()[0]
        return total
    heap = size()
    cur.execute("SET citus.multi_shard_modify_mode TO 'sequential'")
    t1 = time.monotonic()
    for t in tables:
        cur.execute("CALL alter_old_partitions_set_access_method(%s::regclass, "
                    "now() - interval '9 days', 'columnar')", (t,))
    spent = time.monotonic() - t1
    cur.execute("SELECT count(*) FROM time_partitions WHERE access_method = 'columnar'")
    converted = cur.fetchone()[0]
    col = size()
    con.close()
    return {"label": "columnar", "tables": len(tables), "partitions_converted": converted,
            "rows": rows, "heap_bytes": heap, "columnar_bytes": col,
            "saved": 1 - col / heap, "convert_s": spent, "rows_per_s": rows / spent}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
    tmp = tempfile.mkdtemp(prefix="kohaku-bench-citus-")
    results = []
    plain = PgCluster()
    try:
        uri = plain.create_db("bench_plain")
        results.append(ingest(tmp, uri, {"postgres": plain}, 4 * n, "plain PostgreSQL"))
    finally:
        plain.close()
    citus = CitusCluster(workers=2, shard_count=32)
    try:
        uri = citus.create_db("bench_citus")
        nodes = {"coordinator": citus.coordinator}
        nodes.update({f"worker{i + 1}": w for i, w in enumerate(citus.workers)})
        results.append(ingest(tmp, uri, nodes, n, "Citus, 2 workers"))
        results.append(columnar_sizes(uri))
        uri = citus.create_db("bench_citus_log")
        results.append(ingest(tmp, uri, nodes, n, "Citus, 2 workers, ack_mode = log",
                              ack_mode="log", spool_dir=os.path.join(tmp, "log")))
        # a distributed transaction costs the same whatever it carries (a COPY per shard of
        # each table it touches, two-phase commit on each worker): larger ones
        uri = citus.create_db("bench_citus_big")
        results.append(ingest(tmp, uri, nodes, 2 * n,
                              "Citus, 2 workers, ack_mode = log, batches up to 4,096 reports",
                              ack_mode="log", spool_dir=os.path.join(tmp, "log2"),
                              batch_max_reports=4096, batch_max_rows=200000))
    finally:
        citus.close()
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()

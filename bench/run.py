#!/usr/bin/python3
"""Kohaku benchmark: one run, one table, everything measured on this machine.

  1. the HTTP/2 ceiling: h2load posting a real report to nghttpd;
  2. kohaku with the null backend (receive, parse, validate, build rows), driven by h2load
     (same client and body as the ceiling) and by kohaku-loadgen (distinct, growing reports);
  3. kohaku with SQLite next to loading the same rows straight into SQLite;
  4. kohaku with PostgreSQL (unnest and copy write methods) next to `psql \\copy`;
  5. for each kohaku run: reports/s, rows/s, ack latency p50/p99, CPU us per report, peak
     RSS; p99 at half the peak rate; and instructions per report of the null path under
     callgrind;
  6. quality at ingest (issue #14): kohaku with quality on and off, alternated, on SQLite and
     PostgreSQL; the SQLite writer thread's steps alone (kohaku-benchtool writer) with
     quality on and off; and the "50 worst connections of the last hour" query over a
     database of 10,000 connections and a million stats rows filled through kohaku;
  7. kohaku import of a generated rtc_stats.jsonl (about 1 GB; 20 MB with --quick) into
     SQLite and PostgreSQL, its rows/s next to the live path's of the same run;
  8. the console (issue #15): over a database like part 6's (its reports spread over the
     last hour), its connections list (first page, worst first) timed by the daemon itself,
     and ingest with a browser-like client polling the console's API against ingest alone,
     alternated.

  9. log-first acknowledgement (issue #16): kohaku with its default configuration,
     acknowledging at commit against from its log (ack_mode = log), alternated, on SQLite
     and on a PostgreSQL with fsync on: answered and committed reports/s beside the targets.

Usage: bench/run.py [--reports N] [--quick] [--json FILE] [--quality-only] [--pairs N]
                    [--only-import] [--console-only] [--core-only] [--ack-only]
                    [--no-postgres] [--check]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pgcluster import PgCluster, PgStandby, free_port  # noqa: E402
import sora_logs  # noqa: E402

BUILD = os.path.join(ROOT, "build")
KOHAKU = os.path.join(BUILD, "kohaku")
LOADGEN = os.path.join(BUILD, "kohaku-loadgen")
BENCHTOOL = os.path.join(BUILD, "kohaku-benchtool")
FIXTURES = os.environ.get("KOHAKU_FIXTURES",
                          os.path.join(ROOT, "tests", "fixtures", "browser"))
CLK = os.sysconf("SC_CLK_TCK")
# emulated Sora connections in the peak runs, and in the rows the ceilings load
SORA_CONNS = 1000


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} never opened")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def thread_ticks(pid, name):
    """CPU ticks of pid's threads named name (kohaku names its threads: kh-console, ...)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            total += cpu_ticks(f"{pid}/task/{tid}")
        except OSError:
            continue
    return total


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, tmp, settings, wrapper=()):
        self.port = free_port()
        self.console_port = free_port()
        cfg = os.path.join(tmp, f"kohaku-{self.port}.ini")
        self.log_path = os.path.join(tmp, f"kohaku-{self.port}.log")
        self.metrics_port = free_port()
        with open(cfg, "w") as f:
            f.write(f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
                    f"exporter_listen_addr = 127.0.0.1\n"
                    f"exporter_listen_port = {self.metrics_port}\n"
                    f"console_listen_port = {self.console_port}\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([*wrapper, KOHAKU, "-C", cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, 120)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(120)
        self.log.close()
        return rc


def h2load(url, body, n, c=4, m=32):
    out = subprocess.run(["h2load", "-n", str(n), "-c", str(c), "-m", str(m), "-d", body,
                          "-H", "x-sora-stats-exporter-type: connection.user-agent",
                          "-H", "content-type: application/json", url],
                         capture_output=True, text=True, timeout=600).stdout
    rate = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    ok = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
    return {"reports_per_s": rate, "ok": ok}


def run_loadgen(port, *args):
    out = subprocess.run([LOADGEN, "-u", f"http://127.0.0.1:{port}/collector", "-F", FIXTURES,
                          "--json", *map(str, args)], capture_output=True, text=True,
                         timeout=900)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"loadgen failed: {out.stdout}{out.stderr}")
    return json.loads(line[-1])


def measure_kohaku(tmp, settings, n, rows_per_report, label):
    """Peak run (as fast as answers allow), then a run at half that rate for latency."""
    d = Daemon(tmp, settings)
    try:
        run_loadgen(d.port, "-N", 2000, "-c", 4, "-m", 32)  # warm-up (schema, caches)
        t0 = cpu_ticks(d.proc.pid)
        peak = run_loadgen(d.port, "-N", n, "-c", 4, "-m", 32, "-n", SORA_CONNS)
        t1 = cpu_ticks(d.proc.pid)
        half_rate = peak["reports_per_s"] / 2
        half = run_loadgen(d.port, "-r", f"{half_rate:.0f}", "-d", 5, "-c", 5, "-m", 64,
                           "-n", SORA_CONNS)
        inflight = run_loadgen(d.port, "-N", max(n // 2, 3000), "-c", 10, "-m", 100, "-n", 2000)
        rss = peak_rss_kib(d.proc.pid)
    finally:
        rc = d.stop()
    assert rc == 0, f"{label}: kohaku exited {rc}"
    return {
        "label": label,
        "reports_per_s": peak["reports_per_s"],
        "rows_per_s": peak["reports_per_s"] * rows_per_report,
        "p50_ms": peak["p50_ms"], "p99_ms": peak["p99_ms"],
        "half_rate": half_rate, "half_p99_ms": half["p99_ms"],
        "cpu_us_per_report": (t1 - t0) / CLK * 1e6 / max(peak["answered"], 1),
        "peak_rss_mib": rss / 1024, "inflight_1000_ok": inflight["status"].get("204", 0),
    }


def rows_per_report(tmp):
    out = subprocess.run([BENCHTOOL, "copy-files", "2000", os.path.join(tmp, "rpr"), FIXTURES,
                          str(SORA_CONNS)], capture_output=True, text=True, check=True).stdout
    info = json.loads(out.strip().splitlines()[-1])
    return info["rows"] / info["reports"]


def callgrind_per_report(tmp, body):
    """Instructions per report on the null path: two runs that differ by 2,000 reports."""
    if not shutil.which("valgrind"):
        return None
    totals = []
    for n in (500, 2500):
        d = Daemon(tmp, {"storage": "null"},
                   wrapper=("valgrind", "--tool=callgrind",
                            f"--callgrind-out-file={tmp}/cg.{n}.out"))
        h2load(f"http://127.0.0.1:{d.port}/collector", body, n, c=1, m=16)
        d.stop()
        with open(f"{tmp}/cg.{n}.out") as f:
            m = re.search(r"^summary: (\d+)", f.read(), re.M)
        totals.append(int(m.group(1)))
    return (totals[1] - totals[0]) / 2000


# --- 6. quality at ingest (issue #14) ------------------------------------------------------

# the issue's query: the 50 worst connections of the last hour, as `kohaku quality --worst`
# asks it (src/api/quality_report.c): the connections seen in the hour, by the verdict that
# ingest keeps in sora_connection (schema version 7), found by the hour of their last report
# (?2, the bound's hour: schema version 9), then the 50's reports of the hour
WORST50_SQLITE = """WITH w AS (SELECT connection_id, channel_id, client_id, severity, mos_min,
       video_score_min, severity_outbound, severity_inbound FROM sora_connection
  WHERE last_seen_hour >= ?2 AND last_seen >= ?1 AND severity IS NOT NULL
  ORDER BY severity DESC, mos_min IS NULL, mos_min, video_score_min IS NULL, video_score_min,
           connection_id LIMIT 50)
SELECT w.connection_id, w.channel_id, w.severity, w.mos_min, a.mos_avg, w.video_score_min,
       a.reports, a.last_report, w.client_id, w.severity_outbound, w.severity_inbound
FROM w LEFT JOIN (SELECT connection_id AS qid, avg(mos_avg) AS mos_avg, count(*) AS reports,
                         max("time") AS last_report FROM quality_connection
                  WHERE "time" >= ?1 AND connection_id IN (SELECT connection_id FROM w)
                  GROUP BY connection_id) a ON a.qid = w.connection_id
ORDER BY severity DESC, mos_min IS NULL, mos_min, video_score_min IS NULL, video_score_min,
         connection_id"""
WORST50_PG = (WORST50_SQLITE.replace("?1", "$1").replace("?2", "$2")
              .replace("mos_min IS NULL, mos_min,", "mos_min ASC NULLS LAST,")
              .replace("video_score_min IS NULL, video_score_min,",
                       "video_score_min ASC NULLS LAST,"))
# before schema version 7: every quality row of the hour, aggregated (kept for comparison)
WORST50_HOUR_SQLITE = """SELECT connection_id, channel_id, max(severity) AS severity, min(mos_min) AS mos_min,
       avg(mos_avg) AS mos_avg, min(video_score_min) AS video_score_min,
       count(*) AS reports, max("time") AS last_report
FROM quality_connection WHERE "time" >= ?1
GROUP BY connection_id, channel_id
ORDER BY severity DESC, mos_min IS NULL, mos_min ASC, video_score_min ASC LIMIT 50"""
WORST50_HOUR_PG = (WORST50_HOUR_SQLITE.replace("?1", "$1")
                   .replace("mos_min IS NULL, mos_min ASC", "mos_min ASC NULLS LAST"))
WORST50_CEILING_MS = 500
QUALITY_LOSS_CEILING = 0.10
SEED = 14  # the same reports in every run of a comparison


def pg_server_ticks(cluster):
    """CPU ticks of the whole PostgreSQL server: the postmaster with its reaped children, plus
    its live children (kohaku's backends among them)."""
    with open(os.path.join(cluster.data, "postmaster.pid")) as f:
        pm = int(f.readline())
    with open(f"/proc/{pm}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pm:
            total += int(fields[11]) + int(fields[12])
    return total


class Store:
    """A fresh database for one run: a SQLite file or a PostgreSQL database of the cluster."""

    def __init__(self, tmp, backend, cluster, name):
        self.backend, self.cluster, self.name = backend, cluster, name
        self.read_uri = None  # postgres_read_uri's database (a standby's), when one is used
        if backend == "sqlite":
            self.path = os.path.join(tmp, f"{name}.db")
            self.settings = {"storage": "sqlite", "sqlite_path": self.path}
        else:
            self.uri = cluster.create_db(name)
            self.settings = {"storage": "postgres", "postgres_uri": self.uri}

    def connect(self):
        if self.backend == "sqlite":
            return sqlite3.connect(self.path)
        import psycopg2
        return psycopg2.connect(self.uri)

    def tables(self, db):
        cur = db.cursor()
        if self.backend == "sqlite":
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            # partitioned tables once, not their partitions as well
            cur.execute("SELECT relname::text FROM pg_class WHERE relkind IN ('r', 'p') AND "
                        "NOT relispartition AND relnamespace = 'public'::regnamespace")
        return sorted(r[0] for r in cur.fetchall())

    def drop(self):
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.unlink(self.path + suffix)
        else:
            self.cluster.psql("postgres", f'DROP DATABASE "{self.name}"')


def scalar(db, sql, params=()):
    cur = db.cursor()
    cur.execute(sql, params)
    return cur.fetchone()[0]


def quality_run(tmp, backend, cluster, quality, n, label):
    """kohaku on a fresh database with quality on or off: a warm-up (other connections), then
    n reports from SORA_CONNS connections (the same reports in every run: one seed), as fast as
    answers allow. Counts the quality rows afterwards."""
    st = Store(tmp, backend, cluster, label)
    d = Daemon(tmp, {**st.settings, "quality": "true" if quality else "false"})
    try:
        run_loadgen(d.port, "-N", 1000, "-c", 4, "-m", 32, "-n", 100, "-s", SEED + 1)
        t0, s0 = cpu_ticks(d.proc.pid), pg_server_ticks(cluster) if cluster else 0
        lg = run_loadgen(d.port, "-N", n, "-c", 4, "-m", 32, "-n", SORA_CONNS, "-s", SEED)
        t1, s1 = cpu_ticks(d.proc.pid), pg_server_ticks(cluster) if cluster else 0
    finally:
        rc = d.stop()
    assert rc == 0, f"{label}: kohaku exited {rc}"
    db = st.connect()
    try:
        out = {
            "quality": quality, "reports_per_s": lg["reports_per_s"], "answered": lg["answered"],
            "cpu_us_per_report": (t1 - t0) / CLK * 1e6 / max(lg["answered"], 1),
            "reports_stored": scalar(db, "SELECT count(*) FROM sora_report"),
            "quality_connection_rows": scalar(db, "SELECT count(*) FROM quality_connection"),
            "quality_stream_rows": scalar(db, "SELECT count(*) FROM quality_stream"),
            # intervals rated against an earlier report (not since the stream began)
            "quality_stream_intervals": scalar(
                db, "SELECT count(*) FROM quality_stream WHERE NOT since_start"),
        }
        if cluster:
            out["server_cpu_us_per_report"] = (s1 - s0) / CLK * 1e6 / max(lg["answered"], 1)
    finally:
        db.close()
        st.drop()
    return out


def quality_cost(tmp, backend, cluster, n, pairs):
    """Quality on against off, alternated on, off, off, on, on, off... (so that a drift of the
    machine falls on both alike); medians over the pairs."""
    runs = []
    for i in range(pairs):
        for quality in ((True, False) if i % 2 == 0 else (False, True)):
            r = quality_run(tmp, backend, cluster, quality, n,
                            f"bench_q_{backend}_{i}_{'on' if quality else 'off'}")
            r["pair"] = i
            runs.append(r)
            print(f"  quality {backend} pair {i} {'on ' if quality else 'off'}: "
                  f"{r['reports_per_s']:.0f} reports/s, {r['cpu_us_per_report']:.1f} us/report, "
                  f"{r['quality_stream_rows']} quality_stream rows", flush=True)
    on = [r for r in runs if r["quality"]]
    off = [r for r in runs if not r["quality"]]
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    res = {"reports": n, "connections": SORA_CONNS, "pairs": pairs, "runs": runs,
           "on_reports_per_s": med(on, "reports_per_s"),
           "off_reports_per_s": med(off, "reports_per_s"),
           "on_cpu_us_per_report": med(on, "cpu_us_per_report"),
           "off_cpu_us_per_report": med(off, "cpu_us_per_report"),
           "pair_ratios": [a["reports_per_s"] / b["reports_per_s"]
                           for a, b in zip(on, off)]}
    if cluster:
        res["on_server_cpu_us_per_report"] = med(on, "server_cpu_us_per_report")
        res["off_server_cpu_us_per_report"] = med(off, "server_cpu_us_per_report")
    res["ratio"] = res["on_reports_per_s"] / res["off_reports_per_s"]
    res["median_pair_ratio"] = statistics.median(res["pair_ratios"])
    res["loss"] = 1 - res["ratio"]
    # met when both say so: the ratio of the medians, and the median of the pairs' ratios
    # (each pair ran back to back, so it is the less exposed to the machine's other load);
    # when they disagree, the noise decides, and the verdict says so
    within = [res["loss"] <= QUALITY_LOSS_CEILING,
              1 - res["median_pair_ratio"] <= QUALITY_LOSS_CEILING]
    res["met"] = all(within)
    res["verdict"] = "met" if all(within) else "NOT met" if not any(within) else \
        "unclear (the two ratios disagree)"
    return res


def time_query(run, runs=5):
    """One warm-up, then the median of `runs` timed runs (ms); run() returns the rows."""
    rows = run()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = run()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), times, rows


def worst50(tmp, backend, cluster, nconns, nreports):
    """Fills a fresh database through kohaku (quality on, the default): nreports from nconns
    connections, timed; then the issue's query over the last hour, timed, and its plan."""
    st = Store(tmp, backend, cluster, f"bench_worst50_{backend}")
    # every sample stored (dedup = false): the issue's size is a million stats rows
    d = Daemon(tmp, {**st.settings, "dedup": "false"})
    try:
        t0 = time.time()
        lg = run_loadgen(d.port, "-N", nreports, "-c", 4, "-m", 32, "-n", nconns, "-s", SEED)
        fill_s = time.time() - t0
    finally:
        rc = d.stop()
    assert rc == 0, f"worst50 {backend}: kohaku exited {rc}"
    res = {"connections_sent": nconns, "reports_sent": nreports, "fill_s": fill_s,
           "fill_reports_per_s": lg["reports_per_s"], "answered": lg["answered"]}
    db = st.connect()
    try:
        tables = st.tables(db)
        per_table = {t: scalar(db, f'SELECT count(*) FROM "{t}"') for t in tables
                     if t.startswith("rtc_")}
        res["stats_rows"] = sum(per_table.values())
        res["stats_rows_per_table"] = per_table
        res["connections"] = scalar(db, "SELECT count(*) FROM sora_connection")
        res["reports"] = scalar(db, "SELECT count(*) FROM sora_report")
        res["quality_connection_rows"] = scalar(db, "SELECT count(*) FROM quality_connection")
        res["quality_stream_rows"] = scalar(db, "SELECT count(*) FROM quality_stream")
        # the bound: now - 1 hour (loadgen stamps its reports with the wall clock)
        since = datetime.now(timezone.utc) - timedelta(hours=1)
        if backend == "sqlite":
            bound = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            sql, ph = WORST50_SQLITE, "?"
        else:
            bound = since
            sql, ph = WORST50_PG, "%s"
        res["bound"] = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        hour = int(since.timestamp()) // 3600
        cur = db.cursor()
        cur.execute(f'SELECT count(*), min("time"), max("time") FROM quality_connection '
                    f'WHERE "time" >= {ph}', (bound,))
        covered, first, last = cur.fetchone()
        res["bound_covers_rows"] = covered
        res["rows_time_range"] = [str(first), str(last)]
        if backend == "sqlite":
            def run():
                cur.execute(sql, (bound, hour))
                return cur.fetchall()
            res["query_ms"], res["query_runs_ms"], rows = time_query(run)
            cur.execute("EXPLAIN QUERY PLAN " + sql, (bound, hour))
            res["plan"] = [r[3] for r in cur.fetchall()]

            def run_hour():
                cur.execute(WORST50_HOUR_SQLITE, (bound,))
                return cur.fetchall()
            res["hour_query_ms"], res["hour_query_runs_ms"], _ = time_query(run_hour)
        else:
            # the query with $1 as the issue writes it, prepared; planned for its bound at each
            # execution (as a query with the bound in its text is), so that the plan EXPLAIN
            # shows is the one timed: after five executions PostgreSQL could otherwise switch to
            # a generic plan. Statistics fresh, as autovacuum would have them.
            cur.execute("ANALYZE quality_connection")
            cur.execute("ANALYZE sora_connection")
            cur.execute("SET plan_cache_mode = force_custom_plan")
            cur.execute(f"PREPARE worst50(timestamptz, bigint) AS {sql}")
            cur.execute(f"PREPARE worst50h(timestamptz) AS {WORST50_HOUR_PG}")

            def run_hour():
                cur.execute("EXECUTE worst50h(%s)", (bound,))
                return cur.fetchall()
            res["hour_query_ms"], res["hour_query_runs_ms"], _ = time_query(run_hour)

            def run():
                cur.execute("EXECUTE worst50(%s, %s)", (bound, hour))
                return cur.fetchall()
            res["query_ms"], res["query_runs_ms"], rows = time_query(run)
            t0 = time.perf_counter()
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) EXECUTE worst50(%s, %s)", (bound, hour))
            plan = [r[0] for r in cur.fetchall()]
            res["explain_analyze_wall_ms"] = (time.perf_counter() - t0) * 1000
            res["plan"] = plan
            for line in plan:
                m = re.match(r"\s*Execution Time: ([\d.]+) ms", line)
                if m:
                    res["explain_analyze_execution_ms"] = float(m.group(1))
        res["result_rows"] = len(rows)
        res["met"] = res["query_ms"] <= WORST50_CEILING_MS
    finally:
        db.close()
        st.drop()
    return res


def writer_run(tmp, n, quality, label):
    """One run of kohaku-benchtool writer: a SQLite writer thread's steps alone (dedup's
    decision, the quality stage, the write and its commit) on n reports from SORA_CONNS
    connections, 128 a batch (the most the loadgen's 4 x 32 streams have in flight; the
    daemon's batches under that load are smaller, BENCHMARKS.md), 5 s apart by the reports'
    clocks; no HTTP, no parsing, no loadgen on the cores."""
    db = os.path.join(tmp, f"{label}.db")
    env = {**os.environ, "KOHAKU_BENCH_QUALITY": "1" if quality else "0",
           "KOHAKU_BENCH_BATCH": "128"}
    out = subprocess.run([BENCHTOOL, "writer", str(n), db, FIXTURES, str(SORA_CONNS)],
                         env=env, check=True, capture_output=True, text=True).stdout
    for f in (db, db + "-wal", db + "-shm"):
        if os.path.exists(f):
            os.unlink(f)
    return json.loads(out.strip().splitlines()[-1])


def writer_cost(tmp, n, pairs):
    """Quality on against off for the SQLite writer alone, alternated as quality_cost does;
    medians of the writer's time and CPU per report. Where the writer thread is the bound
    (SQLite: BENCHMARKS.md), its time per report is what the ingest rate follows, measured
    without the loadgen's and the other threads' noise."""
    runs = []
    for i in range(pairs):
        for quality in ((True, False) if i % 2 == 0 else (False, True)):
            r = writer_run(tmp, n, quality, f"bench_writer_{i}_{'on' if quality else 'off'}")
            r["pair"] = i
            runs.append(r)
            print(f"  writer alone pair {i} {'on ' if quality else 'off'}: "
                  f"{r['us_per_report']:.1f} us/report, {r['quality_rows']} quality rows",
                  flush=True)
    on = [r for r in runs if r["quality"]]
    off = [r for r in runs if not r["quality"]]
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    res = {"reports": n, "connections": SORA_CONNS, "pairs": pairs, "runs": runs}
    for k in ("us_per_report", "cpu_us_per_report"):
        res[f"on_{k}"], res[f"off_{k}"] = med(on, k), med(off, k)
    for k in ("quality_s", "write_s", "after_s", "dedup_s"):
        res[f"on_{k[:-2]}_us"] = med(on, k) * 1e6 / n
        res[f"off_{k[:-2]}_us"] = med(off, k) * 1e6 / n
    res["pair_ratios"] = [b["us_per_report"] / a["us_per_report"] for a, b in zip(on, off)]
    res["median_pair_ratio"] = statistics.median(res["pair_ratios"])
    # the rate a writer-bound ingest keeps with quality on, of its rate with quality off
    res["ratio"] = res["off_us_per_report"] / res["on_us_per_report"]
    res["loss"] = 1 - res["ratio"]
    res["met"] = res["loss"] <= QUALITY_LOSS_CEILING and \
        1 - res["median_pair_ratio"] <= QUALITY_LOSS_CEILING
    return res


def quality_benchmarks(tmp, res, args, rpr):
    quick = args.quick
    n = 2000 if quick else 20000
    pairs = args.pairs or (1 if quick else 5)
    nconns = 500 if quick else 10000
    target_rows = 30000 if quick else 1000000
    # reports enough for the stats rows wanted, 5% over the average measured above
    nreports = int(target_rows * 1.05 / rpr) + 1
    res["worst50_size"] = "quick" if quick else "full"
    res["quality_writer_sqlite"] = writer_cost(tmp, n + 1000, pairs)
    cluster = None if args.no_postgres else PgCluster()
    try:
        backends = ("sqlite",) if args.no_postgres else ("sqlite", "postgres")
        for backend in backends:
            c = cluster if backend == "postgres" else None
            res[f"quality_cost_{backend}"] = quality_cost(tmp, backend, c, n, pairs)
            t0 = time.time()
            res[f"worst50_{backend}"] = worst50(tmp, backend, c, nconns, nreports)
            res[f"worst50_{backend}"]["part_s"] = time.time() - t0
    finally:
        if cluster:
            cluster.close()


def print_quality(r):
    if not any(k.startswith("quality_cost_") for k in r):
        return
    q0 = next(r[k] for k in r if k.startswith("quality_cost_"))
    print(f"\nQuality at ingest: quality = true against false, {q0['reports']} reports from "
          f"{q0['connections']} connections per run (the same reports), {q0['pairs']} pair(s) "
          f"alternated, medians" + (" -- ONE pair (--quick): a smoke test, no verdict to trust"
                                    if q0["pairs"] < 3 else ""))
    print("(on/off and loss: of the medians; pair ratios: on/off of each pair, their median "
          "after the colon; CPU: kohaku's, and the PostgreSQL server's, per report)")
    print(f"{'backend':10} {'on r/s':>8} {'off r/s':>8} {'on/off':>7} {'loss':>6} "
          f"{'pair ratios':>30} {'CPU us/rep on':>14} {'off':>6} {'server us on':>13} "
          f"{'off':>6}  ceiling")
    for backend in ("sqlite", "postgres"):
        q = r.get(f"quality_cost_{backend}")
        if not q:
            continue
        ratios = (" ".join(f"{x:.2f}" for x in q["pair_ratios"]) +
                  f": {q['median_pair_ratio']:.2f}")
        srv = (f"{q['on_server_cpu_us_per_report']:>13.1f} {q['off_server_cpu_us_per_report']:>6.1f}"
               if "on_server_cpu_us_per_report" in q else f"{'':>13} {'':>6}")
        print(f"{backend:10} {q['on_reports_per_s']:>8.0f} {q['off_reports_per_s']:>8.0f} "
              f"{q['ratio']:>7.3f} {q['loss']:>6.1%} {ratios:>30} "
              f"{q['on_cpu_us_per_report']:>14.1f} {q['off_cpu_us_per_report']:>6.1f} {srv}  "
              f"loss <= {QUALITY_LOSS_CEILING:.0%}: {q['verdict']}")
        on = [x for x in q["runs"] if x["quality"]]
        off = [x for x in q["runs"] if not x["quality"]]
        print(f"{'':10} quality rows written: on runs {[x['quality_stream_rows'] for x in on]} "
              f"quality_stream ({[x['quality_stream_intervals'] for x in on]} rated intervals), "
              f"off runs {[x['quality_stream_rows'] for x in off]}")
    w = r.get("quality_writer_sqlite")
    if w:
        print(f"\nThe SQLite writer alone (kohaku-benchtool writer): {w['reports']} reports "
              f"from {w['connections']} connections, {w['runs'][0]['batch']} a batch, "
              f"{w['pairs']} pair(s) "
              "alternated, medians; us per report")
        print(f"{'quality':8} {'writer us':>9} {'CPU us':>7} {'dedup':>6} {'quality':>8} "
              f"{'write':>7} {'after':>6}")
        for side in ("on", "off"):
            print(f"{side:8} {w[side + '_us_per_report']:>9.1f} "
                  f"{w[side + '_cpu_us_per_report']:>7.1f} {w[side + '_dedup_us']:>6.1f} "
                  f"{w[side + '_quality_us']:>8.1f} {w[side + '_write_us']:>7.1f} "
                  f"{w[side + '_after_us']:>6.1f}")
        ratios = " ".join(f"{x:.2f}" for x in w["pair_ratios"])
        print(f"writer-bound rate on/off {w['ratio']:.3f} (loss {w['loss']:.1%}; pairs "
              f"{ratios}: {w['median_pair_ratio']:.2f})  ceiling loss <= "
              f"{QUALITY_LOSS_CEILING:.0%}: {'met' if w['met'] else 'NOT met'}")
    w0 = next((r[k] for k in ("worst50_sqlite", "worst50_postgres") if k in r), None)
    if not w0:
        return
    size = ("QUICK size (not the issue's)" if r.get("worst50_size") == "quick"
            else "the issue's size")
    print(f"\nWorst 50 connections of the last hour, {size}: {w0['connections_sent']} "
          f"connections, {w0['reports_sent']} reports through kohaku (quality on)")
    print(f"{'backend':10} {'conns':>6} {'stats rows':>11} {'q_conn rows':>11} {'fill s':>7} "
          f"{'fill r/s':>8} {'query ms':>9} {'runs ms':>32}  ceiling")
    for backend in ("sqlite", "postgres"):
        w = r.get(f"worst50_{backend}")
        if not w:
            continue
        runs = " ".join(f"{x:.1f}" for x in w["query_runs_ms"])
        print(f"{backend:10} {w['connections']:>6} {w['stats_rows']:>11,} "
              f"{w['quality_connection_rows']:>11,} {w['fill_s']:>7.1f} "
              f"{w['fill_reports_per_s']:>8.0f} {w['query_ms']:>9.1f} {runs:>32}  "
              f"<= {WORST50_CEILING_MS} ms: {'met' if w['met'] else 'NOT met'}")
        if "hour_query_ms" in w:
            print(f"{'':10} the same over the hour's quality rows, aggregated (the query "
                  f"before schema version 7): {w['hour_query_ms']:.1f} ms")
        print(f"{'':10} bound {w['bound']} covers {w['bound_covers_rows']:,} of "
              f"{w['quality_connection_rows']:,} quality_connection rows "
              f"(time {w['rows_time_range'][0]} .. {w['rows_time_range'][1]}); "
              f"{w['result_rows']} rows returned")
        if "explain_analyze_execution_ms" in w:
            print(f"{'':10} EXPLAIN ANALYZE: execution {w['explain_analyze_execution_ms']:.1f} ms "
                  f"(wall {w['explain_analyze_wall_ms']:.1f} ms)")
        for line in w["plan"]:
            print(f"{'':10} | {line}")


def ingest_benchmarks(tmp, res, args, n, body, rpr):
    """Parts 1 to 5: the ingest table."""
    # 1. HTTP/2 ceiling
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    open(os.path.join(www, "collector"), "w").close()
    port = free_port()
    ng = subprocess.Popen(["nghttpd", "--no-tls", "-d", www, str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    try:
        res["nghttpd"] = h2load(f"http://127.0.0.1:{port}/collector", body, max(n, 20000))
    finally:
        ng.terminate()
        ng.wait()

    # 2. null backend: h2load (same body as the ceiling) and loadgen
    d = Daemon(tmp, {"storage": "null"})
    try:
        res["null_h2load"] = h2load(f"http://127.0.0.1:{d.port}/collector", body, max(n, 20000))
    finally:
        d.stop()
    # the same with the parse on the event loop thread (parse_threads = 0), for comparison
    d = Daemon(tmp, {"storage": "null", "parse_threads": 0})
    try:
        res["null_h2load_loop"] = h2load(f"http://127.0.0.1:{d.port}/collector", body,
                                         max(n, 20000))
    finally:
        d.stop()
    res["null"] = measure_kohaku(tmp, {"storage": "null"}, n, rpr, "kohaku null")

    # 3. SQLite
    res["sqlite"] = measure_kohaku(tmp, {"storage": "sqlite",
                                         "sqlite_path": os.path.join(tmp, "k.db")},
                                   n, rpr, "kohaku sqlite")
    out = subprocess.run([BENCHTOOL, "sqlite-direct", str(n), os.path.join(tmp, "direct.db"),
                          FIXTURES, str(SORA_CONNS)], capture_output=True, text=True,
                         check=True).stdout
    res["sqlite_direct"] = json.loads(out.strip().splitlines()[-1])

    # 4. PostgreSQL
    if not args.no_postgres:
        cluster = PgCluster()
        try:
            for method in ("direct_copy", "unnest", "copy"):
                uri = cluster.create_db(f"bench_{method}")
                res[f"pg_{method}"] = measure_kohaku(
                    tmp, {"storage": "postgres", "postgres_uri": uri,
                          "postgres_write_method": method}, n, rpr, f"kohaku postgres {method}")
            uri = cluster.create_db("bench_copy_ceiling")
            cfg = os.path.join(tmp, "migrate.ini")
            with open(cfg, "w") as f:
                f.write(f"storage = postgres\npostgres_uri = {uri}\n")
            subprocess.run([KOHAKU, "-C", cfg, "migrate"], check=True, capture_output=True)
            files = os.path.join(tmp, "copy")
            info = json.loads(subprocess.run(
                [BENCHTOOL, "copy-files", str(n), files, FIXTURES, str(SORA_CONNS)],
                capture_output=True,
                text=True, check=True).stdout.strip().splitlines()[-1])
            script = "".join(f"\\copy \"{t}\" FROM '{p}'\n" for t, p in
                             (l.split() for l in open(os.path.join(files, "tables"))))
            t0 = time.time()
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", uri], input=script,
                           text=True, check=True)
            secs = time.time() - t0
            res["psql_copy"] = {"reports_per_s": info["reports"] / secs,
                                "rows_per_s": info["rows"] / secs}
        finally:
            cluster.close()

    # 5. instructions per report (null path), and the parse alone: yajl's bare syntax check
    # (the floor of any parser built on it) against kohaku's whole envelope parse, same body
    res["callgrind_instructions_per_report"] = callgrind_per_report(tmp, body)
    out = subprocess.run([BENCHTOOL, "parse", "3000" if args.quick else "20000", body],
                         capture_output=True, text=True, check=True).stdout
    res["parse"] = json.loads(out.strip().splitlines()[-1])


# --- 8. the console (issue #15) ----------------------------------------------------------

CONSOLE_LIST = "/api/connections?sort=worst&page=1&per_page=50"
CONSOLE_LIST_CEILING_MS = 300
CONSOLE_LOSS_CEILING = 0.05
FILL_SLICES = 6  # the console database's fill, spread over the last hour


def console_get(port, path):
    """A GET on the console over loopback: (status, body, wall ms as the client saw it)."""
    import http.client
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        c.request("GET", path, headers={"accept": "application/json"})
        r = c.getresponse()
        body = r.read()
    finally:
        c.close()
    return r.status, body, (time.perf_counter() - t0) * 1000


def access_ms(log_path, offset, path, n):
    """The daemon's own times (ms) of the last n requests for `path` in its log after byte
    `offset`: the access line's usec, from the request's first byte to its answer. Info lines
    are written within about 100 ms: polls for them a little."""
    deadline = time.time() + 3
    while True:
        with open(log_path) as f:
            f.seek(offset)
            times = []
            for line in f:
                # whole lines only: `offset` may fall inside a line the daemon was writing,
                # and the last line may not be finished yet
                if not (line.startswith("{") and line.endswith("\n")) or \
                        '"msg":"access"' not in line:
                    continue
                try:
                    a = json.loads(line)
                except ValueError:
                    continue
                if a.get("path") == path and "usec" in a:
                    times.append(a["usec"] / 1000)
        if len(times) >= n or time.time() > deadline:
            return times[-n:]
        time.sleep(0.05)


class Browsing:
    """A browser-like client in a thread: page views of the console one after another, each
    the API calls its page makes (the list, worst first; its worst connection with its series
    and three sample pages; that connection's channel; the overview), `pause` seconds between
    page views (a quick operator)."""

    def __init__(self, port, pause=1.0):
        import threading
        self.port, self.pause = port, pause
        self.calls = self.views = self.errors = 0
        self.stop = threading.Event()
        self.gate = threading.Event()  # calls are made only while it is set
        self.gate.set()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def get(self, path):
        while not self.gate.wait(0.05):
            if self.stop.is_set():
                return None
        status, body, _ = console_get(self.port, path)
        self.calls += 1
        if status != 200:
            self.errors += 1
        return json.loads(body) if status == 200 else None

    def run(self):
        while not self.stop.is_set():
            top = self.get(CONSOLE_LIST)
            rows = top["rows"] if top else []
            if rows and not self.stop.wait(self.pause):
                cid, chan = rows[0]["connection_id"], rows[0]["channel_id"]
                base = "/api/connections/" + cid
                self.get(base)
                self.get(base + "/series")
                for t in ("rtc_inbound_rtp_stream_stats", "rtc_ice_candidate_pair_stats",
                          "rtc_ice_candidate_stats"):
                    self.get(f"{base}/samples?table={t}&limit=10")
                self.views += 1
                if not self.stop.wait(self.pause):
                    self.get("/api/channels/" + urllib.parse.quote(chan, safe=""))
                    self.views += 1
            if not self.stop.wait(self.pause):
                self.get("/api/overview?last=1h")
                self.views += 1
            self.views += 1
            self.stop.wait(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(120)


CALL_KINDS = ("list", "connection", "series", "samples", "channel", "overview")


def call_kind(path):
    """Which of the Browsing's API calls a request path is (None: not one)."""
    if path.startswith("/api/connections?"):
        return "list"
    if path.startswith("/api/connections/"):
        tail = path.split("?", 1)[0].rsplit("/", 1)[-1]
        return tail if tail in ("series", "samples") else "connection"
    if path.startswith("/api/channels/"):
        return "channel"
    return "overview" if path.startswith("/api/overview") else None


def call_times(log_path, offset):
    """{kind: [server ms]} of the console's answers in the access log from offset on."""
    out = {}
    with open(log_path, errors="replace") as f:
        f.seek(offset)
        for line in f:
            try:
                a = json.loads(line)
            except ValueError:
                continue
            kind = call_kind(a.get("path") or "")
            if kind and "usec" in a:
                out.setdefault(kind, []).append(a["usec"] / 1000)
    return out


def read_backend_pid(st):
    """The pid of kohaku's PostgreSQL read session (`kohaku read`), None when it has none;
    on the standby it reads when there is one (--console-read-replica)."""
    if st.read_uri:
        import psycopg2
        db = psycopg2.connect(st.read_uri)
    else:
        db = st.connect()
    try:
        cur = db.cursor()
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'kohaku read' "
                    "AND datname = current_database()")
        row = cur.fetchone()
        return row[0] if row else None
    finally:
        db.close()


def console_ingest(d, st, browsed, seconds, seed):
    """Reports from SORA_CONNS new connections (seed) for `seconds`, as fast as answers allow,
    with the console browsed meanwhile or not. A run of a fixed time, not of a fixed count:
    the browsing is then the same per second on both backends, however fast each ingests (a
    short run would see mostly the first page views, the heaviest). A browsed run also says
    what its calls cost under ingest: their server times from the access log, and on
    PostgreSQL the CPU of the read session's backend (where the console's questions run)."""
    b = Browsing(d.console_port) if browsed else None
    args = ("-d", seconds, "-c", 4, "-m", 32, "-n", SORA_CONNS, "-s", seed)
    offset = os.path.getsize(d.log_path)
    pid = read_backend_pid(st) if b and st.backend == "postgres" else None
    t0 = cpu_ticks(pid) if pid else None
    c0 = thread_ticks(d.proc.pid, "kh-console")
    if b:
        with b:
            lg = run_loadgen(d.port, *args)
    else:
        lg = run_loadgen(d.port, *args)
    res = {"browsed": browsed, "reports_per_s": lg["reports_per_s"],
           "answered": lg["answered"], "api_calls": b.calls if b else 0,
           "page_views": b.views if b else 0, "api_errors": b.errors if b else 0}
    if b:
        res["call_ms"] = call_times(d.log_path, offset)
        res["console_thread_cpu_s"] = (thread_ticks(d.proc.pid, "kh-console") - c0) / CLK
        if pid and read_backend_pid(st) == pid:  # the same session throughout
            res["read_backend_cpu_s"] = (cpu_ticks(pid) - t0) / CLK
    return res


WINDOW_S = 4      # the windowed measurement: browsing on or off for this long,
WINDOW_PAIRS = 24  # this many pairs of windows, in one continuous run of ingest (the median
#                   of the pairs' spread, bootstrapped from run M8's PostgreSQL windows: 0.048
#                   with 8 pairs, 0.036 with 24)


def console_windows(d, st, seed, window=WINDOW_S, npairs=WINDOW_PAIRS):
    """Ingest with the console browsed or not in windows of one continuous loadgen run: after
    a window of warm-up (the new connections' first reports), windows of `window` seconds,
    browsed and alone in the order B A A B B A A B ... so that a trend cancels, each window's
    rate read from kohaku_reports_stored_total. Against runs of their own, this takes out what
    differs between runs (their new connections, the database's growth between them, a
    checkpoint or an autovacuum landing in one run and not in the other)."""
    import threading
    name = "kohaku_reports_stored_total{kind=\"connection\"}"
    total = window * (2 * npairs + 1) + 2
    out = {}
    lg_thread = threading.Thread(target=lambda: out.update(lg=run_loadgen(
        d.port, "-d", total, "-c", 4, "-m", 32, "-n", SORA_CONNS, "-s", seed)))
    b = Browsing(d.console_port)
    b.gate.clear()
    offset = os.path.getsize(d.log_path)
    pid = read_backend_pid(st) if st.backend == "postgres" else None
    k0 = thread_ticks(d.proc.pid, "kh-console")
    s0 = cpu_ticks(pid) if pid else None
    windows = []
    with b:
        lg_thread.start()
        time.sleep(window)  # warm-up
        for i in range(2 * npairs):
            browsed = (i % 4) in (0, 3)
            (b.gate.set if browsed else b.gate.clear)()
            t0, n0 = time.monotonic(), metric_values(d.metrics_port, {name})[name]
            time.sleep(window)
            t1, n1 = time.monotonic(), metric_values(d.metrics_port, {name})[name]
            windows.append({"browsed": browsed, "reports_per_s": (n1 - n0) / (t1 - t0)})
        b.gate.clear()
    lg_thread.join(total + 120)
    pairs = [(windows[i], windows[i + 1]) for i in range(0, len(windows) - 1, 2)]
    ratios = [(x if x["browsed"] else y)["reports_per_s"] /
              (y if x["browsed"] else x)["reports_per_s"] for x, y in pairs]
    on = [w["reports_per_s"] for w in windows if w["browsed"]]
    off = [w["reports_per_s"] for w in windows if not w["browsed"]]
    res = {"window_s": window, "windows": windows, "pair_ratios": ratios,
           "median_pair_ratio": statistics.median(ratios),
           "browsed_reports_per_s": statistics.median(on),
           "alone_reports_per_s": statistics.median(off),
           "api_calls": b.calls, "api_errors": b.errors,
           "call_ms": call_times(d.log_path, offset),
           "console_thread_cpu_s": (thread_ticks(d.proc.pid, "kh-console") - k0) / CLK}
    if pid and read_backend_pid(st) == pid:
        res["read_backend_cpu_s"] = (cpu_ticks(pid) - s0) / CLK
    res["ratio"] = res["browsed_reports_per_s"] / res["alone_reports_per_s"]
    within = [1 - res["ratio"] <= CONSOLE_LOSS_CEILING,
              1 - res["median_pair_ratio"] <= CONSOLE_LOSS_CEILING]
    res["verdict"] = "met" if all(within) else "NOT met" if not any(within) else \
        "unclear (the two ratios disagree)"
    return res


def console_list_timing(d, runs=5):
    """GET CONSOLE_LIST: one warm-up, then `runs` timed; the daemon's time and the client's."""
    offset = os.path.getsize(d.log_path)
    walls, answer = [], None
    for _ in range(runs + 1):
        status, body, ms = console_get(d.console_port, CONSOLE_LIST)
        if status != 200:
            raise RuntimeError(f"console list: {status} {body[:300]!r}")
        walls.append(ms)
        answer = json.loads(body)
    server = access_ms(d.log_path, offset, CONSOLE_LIST, runs + 1)
    res = {"client_runs_ms": walls[1:], "client_ms": statistics.median(walls[1:]),
           "total": answer["total"], "counts": answer["counts"], "rows": len(answer["rows"])}
    if len(server) == runs + 1:
        res["server_runs_ms"] = server[1:]
        res["server_ms"] = statistics.median(server[1:])
    # the other pages' calls, once each after a warm-up (the daemon's time), for the record
    cid, chan = answer["rows"][0]["connection_id"], answer["rows"][0]["channel_id"]
    others = {"connection": f"/api/connections/{cid}", "series": f"/api/connections/{cid}/series",
              "channel": "/api/channels/" + urllib.parse.quote(chan, safe=""),
              "overview": "/api/overview?last=1h"}
    res["other_ms"] = {}
    for name, path in others.items():
        offset = os.path.getsize(d.log_path)
        console_get(d.console_port, path)
        console_get(d.console_port, path)
        got = access_ms(d.log_path, offset, path, 2)
        res["other_ms"][name] = got[-1] if len(got) == 2 else None
    key = "server_ms" if "server_ms" in res else "client_ms"
    res["met"] = res[key] <= CONSOLE_LIST_CEILING_MS
    return res


def browsing_cpu(d, cluster, seconds=10):
    """What browsing alone costs: CPU seconds of kohaku and of the PostgreSQL server while
    Browsing runs for `seconds` and nothing is ingested."""
    k0, s0 = cpu_ticks(d.proc.pid), pg_server_ticks(cluster) if cluster else 0
    with Browsing(d.console_port) as b:
        time.sleep(seconds)
    k1, s1 = cpu_ticks(d.proc.pid), pg_server_ticks(cluster) if cluster else 0
    return {"seconds": seconds, "api_calls": b.calls, "kohaku_cpu_s": (k1 - k0) / CLK,
            "server_cpu_s": (s1 - s0) / CLK if cluster else None}


def standby_lag(cluster, standby, timeout=120):
    """How far the standby is behind the primary now (bytes of WAL not yet replayed), and how
    long it then takes to replay them (None: not within timeout)."""
    lsn = cluster.psql("postgres", "SELECT pg_current_wal_lsn()")
    behind = int(float(standby.psql(
        "postgres", f"SELECT pg_wal_lsn_diff('{lsn}', pg_last_wal_replay_lsn())")))
    t0 = time.time()
    while standby.psql("postgres", f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") != "t":
        if time.time() - t0 > timeout:
            return {"behind_bytes": behind, "caught_up_s": None}
        time.sleep(0.05)
    return {"behind_bytes": behind, "caught_up_s": time.time() - t0}


def console_bench(tmp, backend, cluster, nconns, nreports, seconds, pairs, renice=False,
                  window_pairs=WINDOW_PAIRS, standby=None):
    """A database filled through kohaku as the worst-50 one is (nreports from nconns
    connections); the list's first page worst first, timed; what browsing costs alone; then
    ingest with the console browsed and not, alternated, on that same kohaku and database.
    standby: a hot standby of cluster (PgStandby) that the console reads
    (postgres_read_uri)."""
    st = Store(tmp, backend, cluster, f"bench_console_{backend}")
    if standby:
        st.read_uri = standby.uri(st.name)
        st.settings = {**st.settings, "postgres_read_uri": st.read_uri}
    # as the worst-50 database (every sample stored, the issue's million stats rows), but
    # spread over the hour the pages show, as an hour of a fleet is: FILL_SLICES loadgen runs
    # of as many connections each, stamped from 55 minutes ago to 5 minutes ago
    d = Daemon(tmp, {**st.settings, "dedup": "false"})
    try:
        t0 = time.time()
        sent = 0
        for i in range(FILL_SLICES):
            offset = 3300 - i * 3000 // (FILL_SLICES - 1)
            lg = run_loadgen(d.port, "-N", nreports // FILL_SLICES, "-c", 4, "-m", 32,
                             "-n", nconns // FILL_SLICES, "-s", SEED + i, "-T", offset)
            sent += lg["answered"]
        res = {"connections_sent": nconns // FILL_SLICES * FILL_SLICES, "reports_sent": sent,
               "fill_s": time.time() - t0, "fill_reports_per_s": sent / (time.time() - t0)}
        db = st.connect()
        try:
            res["stats_rows"] = sum(scalar(db, f'SELECT count(*) FROM "{t}"')
                                    for t in st.tables(db) if t.startswith("rtc_"))
            res["connections"] = scalar(db, "SELECT count(*) FROM sora_connection")
            res["quality_connection_rows"] = scalar(db, "SELECT count(*) FROM "
                                                        "quality_connection")
        finally:
            db.close()
        res["list"] = console_list_timing(d)
        if renice and backend == "postgres":  # the experiment of --renice-read
            os.setpriority(os.PRIO_PROCESS, read_backend_pid(st), 19)
            res["read_backend_reniced"] = True
        res["browsing_cpu"] = browsing_cpu(d, cluster, seconds + 2)
        runs = []
        for i in range(pairs):
            for browsed in ((True, False) if i % 2 == 0 else (False, True)):
                r = console_ingest(d, st, browsed, seconds, SEED + 100 + len(runs))
                r["pair"] = i
                runs.append(r)
                cost = ""
                if browsed:
                    cost = "; server ms " + ", ".join(
                        f"{k} {statistics.median(v):.1f}x{len(v)}"
                        for k, v in sorted(r["call_ms"].items()))
                    cost += f"; CPU s: kohaku's console thread {r['console_thread_cpu_s']:.2f}"
                    if "read_backend_cpu_s" in r:
                        cost += f", the read session's backend {r['read_backend_cpu_s']:.2f}"
                print(f"  console {backend} pair {i} {'browsed' if browsed else 'alone  '}: "
                      f"{r['reports_per_s']:.0f} reports/s, {r['api_calls']} API calls{cost}",
                      flush=True)
        res["windows"] = console_windows(d, st, SEED + 300, npairs=2 if seconds < 8 else
                                         window_pairs)
        wn = res["windows"]
        if standby:  # what the console's view lags by when ingest stops
            res["standby_lag"] = standby_lag(cluster, standby)
        print(f"  console {backend} windows of {wn['window_s']} s: pair ratios "
              + " ".join(f"{x:.3f}" for x in wn["pair_ratios"]) + f", {wn['api_calls']} API "
              f"calls", flush=True)
        db = st.connect()
        try:
            res["end_connections"] = scalar(db, "SELECT count(*) FROM sora_connection")
            res["end_quality_connection_rows"] = scalar(db, "SELECT count(*) FROM "
                                                            "quality_connection")
            if backend == "postgres":
                # how sora_connection's upserts went (schema version 9: no index on last_seen,
                # so that most are HOT), as the server's statistics have them by now
                cur = db.cursor()
                cur.execute("SELECT n_tup_upd, n_tup_hot_upd, n_live_tup, n_dead_tup, "
                            "pg_relation_size(relid) / 8192, pg_indexes_size(relid) / 8192 "
                            "FROM pg_stat_user_tables WHERE relname = 'sora_connection'")
                res["sora_connection_upserts"] = dict(zip(
                    ("updates", "hot_updates", "live_rows", "dead_rows", "table_pages",
                     "index_pages"), cur.fetchone()))
        finally:
            db.close()
    finally:
        rc = d.stop()
        st.drop()
    assert rc == 0, f"console {backend}: kohaku exited {rc}"
    on = [r for r in runs if r["browsed"]]
    off = [r for r in runs if not r["browsed"]]
    res.update(runs=runs, seconds=seconds, pairs=pairs,
               browsed_reports_per_s=statistics.median(r["reports_per_s"] for r in on),
               alone_reports_per_s=statistics.median(r["reports_per_s"] for r in off),
               pair_ratios=[a["reports_per_s"] / b["reports_per_s"] for a, b in zip(on, off)])
    res["ratio"] = res["browsed_reports_per_s"] / res["alone_reports_per_s"]
    # what the browsing cost under ingest: each call's server ms over every browsed run, the
    # console's server time per second of a run, and on PostgreSQL its read session's CPU
    res["browsed_call_ms"] = {
        k: statistics.median(x for r in on for x in r["call_ms"].get(k, []))
        for k in CALL_KINDS if any(r["call_ms"].get(k) for r in on)}
    res["browsed_console_ms_per_s"] = statistics.median(
        sum(sum(v) for v in r["call_ms"].values()) / seconds for r in on)
    # what the console took of the machine in a browsed run: its thread in kohaku, and on
    # PostgreSQL the read session's backend (median over the browsed runs)
    cpu = [r["console_thread_cpu_s"] + r.get("read_backend_cpu_s", 0) for r in on
           if st.backend != "postgres" or "read_backend_cpu_s" in r]
    if cpu:
        res["console_cpu_share"] = statistics.median(cpu) / (seconds * (os.cpu_count() or 1))
    res["median_pair_ratio"] = statistics.median(res["pair_ratios"])
    within = [1 - res["ratio"] <= CONSOLE_LOSS_CEILING,
              1 - res["median_pair_ratio"] <= CONSOLE_LOSS_CEILING]
    res["ingest_met"] = all(within)
    res["ingest_verdict"] = "met" if all(within) else "NOT met" if not any(within) else \
        "unclear (the two ratios disagree)"
    return res


def console_benchmarks(tmp, res, args, rpr):
    quick = args.quick
    nconns = 500 if quick else 10000
    nreports = int((30000 if quick else 1000000) * 1.05 / rpr) + 1
    seconds = 2 if quick else 8
    pairs = args.pairs or (1 if quick else 3)
    res["console_size"] = "quick" if quick else "full"
    res["console_pg_settings"] = dict(args.pg_set)
    cluster = None if args.no_postgres else PgCluster(settings=dict(args.pg_set))
    # --console-read-replica: the console reads a hot standby of that cluster, on this machine
    standby = PgStandby(cluster) if cluster and args.console_read_replica else None
    res["console_read_replica"] = bool(standby)
    try:
        for backend in ("sqlite",) if args.no_postgres else \
                (args.console_backend,) if args.console_backend else ("sqlite", "postgres"):
            t0 = time.time()
            res[f"console_{backend}"] = console_bench(tmp, backend,
                                                      cluster if backend == "postgres"
                                                      else None, nconns, nreports, seconds,
                                                      pairs, args.renice_read,
                                                      args.window_pairs,
                                                      standby if backend == "postgres"
                                                      else None)
            res[f"console_{backend}"]["part_s"] = time.time() - t0
    finally:
        if standby:
            standby.close()
        if cluster:
            if args.pg_log:
                with open(args.pg_log, "w") as f:
                    f.write(cluster.log_text())
            cluster.close()


def print_console(r):
    c0 = next((r[k] for k in ("console_sqlite", "console_postgres") if k in r), None)
    if not c0:
        return
    size = "QUICK size (not the issue's)" if r.get("console_size") == "quick" else \
        "the issue's size"
    print(f"\nConsole, {size}: {c0['connections_sent']} connections, {c0['reports_sent']} "
          f"reports through kohaku; GET {CONSOLE_LIST}, median of 5 after a warm-up")
    if r.get("console_pg_settings"):
        print("PostgreSQL with " + ", ".join(f"{k} = {v}" for k, v in
                                             r["console_pg_settings"].items()))
    if r.get("console_read_replica"):
        print("PostgreSQL: the console reads a hot standby of the database (postgres_read_uri; "
              "streaming replication, the standby on this machine too)")
    print("(server: the daemon's access-log usec, first byte to answer; client: wall time over "
          "loopback)")
    print(f"{'backend':10} {'conns':>6} {'stats rows':>11} {'server ms':>10} {'client ms':>10} "
          f"{'server runs ms':>32}  ceiling")
    for backend in ("sqlite", "postgres"):
        c = r.get(f"console_{backend}")
        if not c:
            continue
        li = c["list"]
        runs = " ".join(f"{x:.1f}" for x in li.get("server_runs_ms", []))
        server = f"{li['server_ms']:>10.1f}" if "server_ms" in li else f"{'n/a':>10}"
        print(f"{backend:10} {c['connections']:>6} {c['stats_rows']:>11,} {server} "
              f"{li['client_ms']:>10.1f} {runs:>32}  <= {CONSOLE_LIST_CEILING_MS} ms "
              f"({'server' if 'server_ms' in li else 'client'}): "
              f"{'met' if li['met'] else 'NOT met'}")
        other = ", ".join(f"{k} {v:.1f}" if v is not None else f"{k} n/a"
                          for k, v in li["other_ms"].items())
        print(f"{'':10} list total {li['total']} counts {li['counts']}; other calls, server "
              f"ms: {other}")
        bc = c["browsing_cpu"]
        srv = f", PostgreSQL server {bc['server_cpu_s']:.2f}" if bc["server_cpu_s"] is not None \
            else ""
        share = (bc["kohaku_cpu_s"] + (bc["server_cpu_s"] or 0)) / \
            (bc["seconds"] * (os.cpu_count() or 1))
        print(f"{'':10} browsing alone for {bc['seconds']} s ({bc['api_calls']} API calls): CPU "
              f"s kohaku {bc['kohaku_cpu_s']:.2f}{srv}: {share:.1%} of the machine's "
              f"{os.cpu_count()} CPUs (what it can take from an ingest bound by CPU)")
    print(f"\nIngest with the console browsed (a page view every second: {CONSOLE_LIST}, a "
          f"connection with its series and samples, its channel, the overview) against alone, "
          f"{c0['seconds']} s of reports from {SORA_CONNS} new connections per run, "
          f"{c0['pairs']} pair(s) alternated, medians")
    print(f"{'backend':10} {'browsed r/s':>11} {'alone r/s':>10} {'ratio':>6} "
          f"{'pair ratios':>24} {'API calls/run':>14}  ceiling")
    for backend in ("sqlite", "postgres"):
        c = r.get(f"console_{backend}")
        if not c:
            continue
        ratios = " ".join(f"{x:.3f}" for x in c["pair_ratios"]) + \
            f": {c['median_pair_ratio']:.3f}"
        calls = [x["api_calls"] for x in c["runs"] if x["browsed"]]
        print(f"{backend:10} {c['browsed_reports_per_s']:>11.0f} {c['alone_reports_per_s']:>10.0f} "
              f"{c['ratio']:>6.3f} {ratios:>24} {str(calls):>14}  loss <= "
              f"{CONSOLE_LOSS_CEILING:.0%}: {c['ingest_verdict']}")
        if "browsed_call_ms" in c:
            calls = ", ".join(f"{k} {v:.1f}" for k, v in c["browsed_call_ms"].items())
            share = ("; CPU of the console's thread" +
                     (" and read session" if backend == "postgres" else "") +
                     f": {c['console_cpu_share']:.1%} of the machine"
                     if "console_cpu_share" in c else "")
            print(f"{'':10} under ingest, server ms a call (median): {calls}; "
                  f"{c['browsed_console_ms_per_s']:.0f} ms of answers a second{share}")
        wn = c.get("windows")
        if wn:
            busy = sum(1 for w in wn["windows"] if w["browsed"]) * wn["window_s"]
            cpu = wn["console_thread_cpu_s"] + wn.get("read_backend_cpu_s", 0)
            print(f"{'':10} one run, windows of {wn['window_s']} s browsed or not (B A A B ...): "
                  f"browsed {wn['browsed_reports_per_s']:.0f} r/s, alone "
                  f"{wn['alone_reports_per_s']:.0f}, ratio {wn['ratio']:.3f}, pair ratios "
                  + " ".join(f"{x:.3f}" for x in wn["pair_ratios"]) +
                  f": {wn['median_pair_ratio']:.3f}; the console's CPU "
                  f"{cpu / (busy * (os.cpu_count() or 1)):.1%} of the machine while browsed; "
                  f"loss <= {CONSOLE_LOSS_CEILING:.0%}: {wn['verdict']}")
        print(f"{'':10} database at the end: {c['end_connections']} connections, "
              f"{c['end_quality_connection_rows']:,} quality_connection rows")
        u = c.get("sora_connection_upserts")
        if u:
            hot = f"{u['hot_updates'] / u['updates']:.0%}" if u["updates"] else "n/a"
            print(f"{'':10} sora_connection: {u['updates']:,} updates, {hot} of them HOT; "
                  f"{u['live_rows']:,} live and {u['dead_rows']:,} dead rows; "
                  f"{u['table_pages']:,} table pages, {u['index_pages']:,} index pages")
        lag = c.get("standby_lag")
        if lag:
            took = f"{lag['caught_up_s']:.1f} s" if lag["caught_up_s"] is not None else \
                "not within 120 s"
            print(f"{'':10} the standby the console read, when the windowed run's ingest "
                  f"stopped: {lag['behind_bytes'] / 1048576:.1f} MiB of WAL behind, replayed "
                  f"in {took}")


def sanity_console(r, backends):
    """Part 8: the database filled, the list answered with 50 rows, every browsed run and the
    windowed run made API calls without errors, every window stored reports."""
    bad = []
    for b in backends:
        c = r.get(f"console_{b}")
        if not c:
            bad.append(f"console_{b}: missing")
            continue
        if c["connections"] != c["connections_sent"] or c["list"]["rows"] != 50 or \
                c["list"]["total"] != c["connections"]:
            bad.append(f"console_{b}: {c['connections']} connections, the list "
                       f"{c['list']['rows']} rows of {c['list']['total']}")
        if "server_ms" not in c["list"]:
            bad.append(f"console_{b}: no access-log time for the list")
        for x in c["runs"]:
            if not x["reports_per_s"] > 0 or (x["browsed"] and (not x["api_calls"] or
                                                                 x["api_errors"])):
                bad.append(f"console_{b} pair {x['pair']}: {x}")
        wn = c.get("windows")
        if not wn or not wn["api_calls"] or wn["api_errors"] or \
                not all(w["reports_per_s"] > 0 for w in wn["windows"]):
            bad.append(f"console_{b} windows: {wn and {k: wn[k] for k in ('api_calls', 'api_errors')}}")
    return bad


# --- 9. log-first acknowledgement (issue #16) --------------------------------------------

ACK_TARGETS = {"sqlite": 8000, "postgres": 12000}  # reports/s, the issue's


def metric_values(port, names):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in names:
            out[parts[0]] = float(parts[1])
    return out


def wait_committed(d, timeout=600):
    """ack_mode = log: until nothing answered waits for its commit (held 0, log empty)."""
    names = ("kohaku_log_held_reports", "kohaku_spool_waiting_reports")
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = metric_values(d.metrics_port, names)
        if all(m.get(k, 0) == 0 for k in names):
            return
        time.sleep(0.02)
    raise RuntimeError("log-first run: reports still waiting for their commit")


def ack_run(tmp, backend, cluster, mode, n, label):
    """kohaku with its default configuration on a fresh database, acknowledging at commit or
    from the log: a warm-up, then n reports from 1,000 emulated connections at Sora-like
    concurrency (5 connections x 32 streams). The rate answers came at, and the rate the
    reports were committed at (the same with commit)."""
    st = Store(tmp, backend, cluster, label)
    settings = dict(st.settings)
    if mode == "log":
        settings.update(spool_dir=os.path.join(tmp, f"{label}-log"), ack_mode="log")
    d = Daemon(tmp, settings)
    try:
        run_loadgen(d.port, "-N", 1000, "-c", 5, "-m", 32, "-n", 100, "-s", SEED + 2)
        if mode == "log":
            wait_committed(d)
        c0 = cpu_ticks(d.proc.pid)
        b0 = metric_values(d.metrics_port, ("kohaku_batch_reports_count",))
        t0 = time.time()
        lg = run_loadgen(d.port, "-N", n, "-c", 5, "-m", 32, "-n", SORA_CONNS, "-s", SEED)
        t_ack = time.time() - t0
        if mode == "log":
            wait_committed(d)
        t_stored = time.time() - t0
        c1 = cpu_ticks(d.proc.pid)
        b1 = metric_values(d.metrics_port, ("kohaku_batch_reports_count",))
        rss = peak_rss_kib(d.proc.pid)
    finally:
        rc = d.stop()
    assert rc == 0, f"{label}: kohaku exited {rc}"
    db = st.connect()
    try:
        stored = scalar(db, "SELECT count(*) FROM sora_report")
        if backend == "sqlite":
            size = sum(os.path.getsize(st.path + x) for x in ("", "-wal")
                       if os.path.exists(st.path + x))
        else:
            size = scalar(db, "SELECT pg_database_size(current_database())")
    finally:
        db.close()
        st.drop()
    batches = b1.get("kohaku_batch_reports_count", 0) - b0.get("kohaku_batch_reports_count", 0)
    return {"mode": mode, "ack_per_s": lg["reports_per_s"], "answered": lg["answered"],
            "ack_s": t_ack, "stored_s": t_stored, "stored_per_s": lg["answered"] / t_stored,
            "p50_ms": lg["p50_ms"], "p99_ms": lg["p99_ms"], "peak_rss_mib": rss / 1024,
            "cpu_us_per_report": (c1 - c0) / CLK * 1e6 / max(lg["answered"], 1),
            "reports_per_batch": lg["answered"] / batches if batches else None,
            "reports_stored": stored, "bytes_per_report": size / max(stored, 1)}


def ack_benchmarks(tmp, res, args):
    """commit against log, alternated (commit, log, log, commit, ...), per backend."""
    n = 3000 if args.quick else 20000
    pairs = args.pairs or (1 if args.quick else 3)
    clusters = {"sqlite": None}
    if not args.no_postgres:
        # durable commits: fsync and synchronous_commit on (the test clusters keep fsync off)
        clusters["postgres"] = PgCluster(crash_safe=True,
                                         settings={"fsync": "on", "full_page_writes": "on"})
    out = {"reports": n, "connections": SORA_CONNS, "pairs": pairs}
    try:
        for backend, cluster in clusters.items():
            runs = []
            for i in range(pairs):
                for mode in (("commit", "log") if i % 2 == 0 else ("log", "commit")):
                    r = ack_run(tmp, backend, cluster, mode, n, f"bench_ack_{backend}_{i}_{mode}")
                    r["pair"] = i
                    runs.append(r)
                    print(f"  ack {backend} pair {i} {mode:6}: answered {r['ack_per_s']:.0f}/s, "
                          f"committed {r['stored_per_s']:.0f}/s, p99 {r['p99_ms']:.1f} ms, "
                          f"{r['reports_per_batch'] or 0:.0f} reports/batch", flush=True)
            med = lambda m, k: statistics.median(r[k] for r in runs if r["mode"] == m)  # noqa
            out[backend] = {
                "runs": runs, "target": ACK_TARGETS[backend],
                **{f"{m}_{k}": med(m, k) for m in ("commit", "log")
                   for k in ("ack_per_s", "stored_per_s", "p99_ms", "peak_rss_mib",
                             "cpu_us_per_report", "bytes_per_report")},
            }
    finally:
        for c in clusters.values():
            if c:
                c.close()
    res["ack"] = out


def print_ack(r):
    a = r.get("ack")
    if not a:
        return
    print(f"\nLog-first acknowledgement (ack_mode), default configuration, durable answers, "
          f"{a['reports']} reports from {a['connections']} connections, 5 x 32 streams, "
          f"medians of {a['pairs']} alternated pairs")
    print(f"{'backend':10} {'mode':7} {'answered/s':>10} {'committed/s':>11} {'p99 ms':>7} "
          f"{'RSS MiB':>8} {'us/report':>9} {'bytes/report':>12}  ceiling")
    for backend in ("sqlite", "postgres"):
        b = a.get(backend)
        if not b:
            continue
        for m in ("commit", "log"):
            rate = b[f"{m}_stored_per_s"]
            print(f"{backend:10} {m:7} {b[f'{m}_ack_per_s']:>10.0f} {rate:>11.0f} "
                  f"{b[f'{m}_p99_ms']:>7.1f} {b[f'{m}_peak_rss_mib']:>8.1f} "
                  f"{b[f'{m}_cpu_us_per_report']:>9.1f} {b[f'{m}_bytes_per_report']:>12.0f}  "
                  f">= {b['target']:,} committed/s: {'met' if rate >= b['target'] else 'NOT met'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=int, default=30000)
    ap.add_argument("--quick", action="store_true", help="small counts, for the test suite")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every number is present and sane (the test suite)")
    ap.add_argument("--quality-only", action="store_true",
                    help="only part 6: quality's ingest cost and the worst-50 query")
    ap.add_argument("--console-only", action="store_true",
                    help="only part 8: the console's list over the worst-50 database, and "
                         "ingest with the console browsed against alone")
    ap.add_argument("--console-backend", choices=("sqlite", "postgres"),
                    help="the console part on this backend only")
    ap.add_argument("--renice-read", action="store_true",
                    help="an experiment: the console part sets its PostgreSQL read session's "
                         "backend to nice 19 (as kohaku's own console thread is)")
    ap.add_argument("--console-read-replica", action="store_true",
                    help="the console part's kohaku reads a hot standby of its PostgreSQL "
                         "database (postgres_read_uri), started on this machine")
    ap.add_argument("--pg-set", action="append", default=[], metavar="KEY=VALUE",
                    type=lambda kv: tuple(kv.split("=", 1)) if "=" in kv else
                    ap.error(f"--pg-set: KEY=VALUE, got {kv!r}"),
                    help="a PostgreSQL setting of the console part's cluster (repeatable; "
                         "e.g. shared_buffers=1GB): the default is PostgreSQL's")
    ap.add_argument("--pg-log", metavar="FILE",
                    help="write the console part's PostgreSQL server log to FILE at its end "
                         "(with --pg-set log_min_duration_statement=MS, say)")
    ap.add_argument("--window-pairs", type=int, default=WINDOW_PAIRS, metavar="N",
                    help=f"the console part's windowed run: N pairs of {WINDOW_S} s windows "
                         f"(default {WINDOW_PAIRS}; more narrows the median of the pairs)")
    ap.add_argument("--pairs", type=int, default=0,
                    help="on/off pairs per backend (quality: default 5, console: 3; 1 with "
                         "--quick)")
    ap.add_argument("--core-only", action="store_true",
                    help="only parts 1 to 5 (HTTP/2, the stores, CPU and instructions per report)")
    ap.add_argument("--only-import", action="store_true",
                    help="only part 7: kohaku import, and the live runs it is compared with")
    ap.add_argument("--ack-only", action="store_true",
                    help="only part 9: ack_mode commit against log, on SQLite and a durable "
                         "PostgreSQL")
    args = ap.parse_args()
    if args.window_pairs < 1 or args.pairs < 0:
        ap.error("--window-pairs must be at least 1 and --pairs at least 0")
    n = 3000 if args.quick else args.reports
    # everything temporary (databases, the PostgreSQL cluster, logs) under /tmp/bench-kohaku-*,
    # removed at the end whatever happens; the cluster runs as postgres, which must get in
    top = tempfile.mkdtemp(prefix="bench-kohaku-", dir="/tmp")
    os.chmod(top, 0o711)
    tempfile.tempdir = top
    try:
        res = run_all(args, n, os.path.join(top, "run"))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print_table(res)
    print_quality(res)
    print_import(res)
    print_console(res)
    print_ack(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    if args.check:
        problems = ([] if args.quality_only or args.console_only or args.core_only or
                    args.ack_only else import_sanity(res))
        if args.ack_only:
            problems += ack_sanity(res)
        elif not args.only_import:
            problems = sanity(res, args) + problems
        for p in problems:
            print("not sane:", p)
        print(f"bench: {'1 passed, 0 failed' if not problems else '0 passed, 1 failed'}")
        sys.exit(1 if problems else 0)


def run_all(args, n, tmp):
    os.makedirs(tmp)
    res = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
           "reports": n}
    # a real report body, as the load generator sends it (about 9 KB)
    body = os.path.join(tmp, "report.json")
    subprocess.run([sys.executable, "-c", f"""
import json,glob
stats=json.load(open({os.path.join(FIXTURES, 'chromium-av-sender-t10.json')!r}))
env={{"type":"connection.user-agent","id":"Q4M2G8T1ZK7B3X9H5N6R0PWC2D","timestamp":"2026-11-24T06:15:42.123456Z","label":"WebRTC SFU Sora","version":"2024.1.0","node_name":"sora@127.0.0.1","multistream":True,"simulcast":False,"spotlight":False,"role":"sendrecv","channel_id":"bench","session_id":"7H3KQ2M9ZV1B8C4X6N0R5T2W9E","client_id":"c","connection_id":"F2ZK8Q1M7C3V9B5X0N6T4R2W8H","stats":stats}}
open({body!r},"w").write(json.dumps(env))
"""], check=True)
    res["body_bytes"] = os.path.getsize(body)
    rpr = rows_per_report(tmp)
    res["rows_per_report"] = rpr

    if args.only_import:
        res["import"] = measure_import(tmp, args.quick, args.no_postgres, n)
        return res
    if args.ack_only:
        ack_benchmarks(tmp, res, args)
        return res
    if not (args.quality_only or args.console_only):
        ingest_benchmarks(tmp, res, args, n, body, rpr)
        if args.core_only:
            return res
        res["import"] = measure_import(tmp, args.quick, args.no_postgres, n)
    if not args.console_only:
        quality_benchmarks(tmp, res, args, rpr)
    if not args.quality_only:
        console_benchmarks(tmp, res, args, rpr)
    if not (args.quality_only or args.console_only):
        ack_benchmarks(tmp, res, args)
    return res


def ack_sanity(r):
    problems = []
    a = r.get("ack") or {}
    for backend in ("sqlite", "postgres"):
        for run in (a.get(backend) or {}).get("runs", []):
            if run["reports_stored"] < run["answered"]:
                problems.append(f"ack {backend} {run['mode']}: {run['answered']} answered, "
                                f"{run['reports_stored']} stored")
    if "sqlite" not in a:
        problems.append("ack: no SQLite runs")
    return problems


def sanity(r, args):
    """Numbers a working run must have: no speed target, just signs of life and order."""
    backends = ("sqlite",) if args.no_postgres else ("sqlite", "postgres")
    bad = [] if args.console_only or args.core_only else sanity_quality(r, backends)
    if not (args.quality_only or args.core_only):
        bad += sanity_console(r, (args.console_backend,) if args.console_backend else backends)
    if not (args.quality_only or args.console_only or args.core_only):
        bad += ack_sanity(r)
    if args.quality_only or args.console_only:
        return bad
    for key in ("nghttpd", "null_h2load", "null_h2load_loop", "null", "sqlite", "sqlite_direct",
                "pg_direct_copy",
                "pg_unnest", "pg_copy", "psql_copy"):
        if key not in r or not r[key].get("reports_per_s", 0) > 0:
            bad.append(f"{key}: no reports/s")
    for key in ("null", "sqlite", "pg_direct_copy", "pg_unnest", "pg_copy"):
        x = r.get(key, {})
        if not (0 < x.get("p50_ms", 0) <= x.get("p99_ms", 0) < 10000):
            bad.append(f"{key}: latency percentiles out of order")
        if not (0 < x.get("cpu_us_per_report", 0) < 100000):
            bad.append(f"{key}: CPU per report")
        if not (1 < x.get("peak_rss_mib", 0) < 4096):
            bad.append(f"{key}: peak RSS")
        if x.get("inflight_1000_ok", 0) <= 0:
            bad.append(f"{key}: the 1,000-in-flight run stored nothing")
    if r.get("nghttpd", {}).get("reports_per_s", 0) < r.get("null_h2load", {}).get(
            "reports_per_s", 1e12):
        bad.append("kohaku faster than the bare HTTP/2 ceiling")
    if not (r.get("callgrind_instructions_per_report") or 0) > 10000:
        bad.append("callgrind: no instruction count")
    p = r.get("parse", {})
    if not (0 < p.get("yajl_us", 0) < p.get("envelope_us", 0) < 100000):
        bad.append("parse: yajl alone must be cheaper than the whole envelope parse")
    return bad


def sanity_quality(r, backends):
    """Part 6: every run measured; quality rows in each "on" run (one quality_connection row
    per stored report, intervals rated against the report before) and none in the "off" runs;
    the worst-50 database filled as asked and the bound covering all its rows."""
    bad = []
    w = r.get("quality_writer_sqlite")
    if not w:
        bad.append("quality_writer_sqlite: missing")
    for x in (w or {}).get("runs", []):
        tag = f"quality_writer_sqlite pair {x['pair']} {'on' if x['quality'] else 'off'}"
        if not (x["us_per_report"] > 0 and x["rows_stored"] > 0):
            bad.append(f"{tag}: no time or no rows stored")
        # quality on: a connection row per report and its streams' rows
        if x["quality"] and not x["quality_rows"] > x["reports"]:
            bad.append(f"{tag}: {x['quality_rows']} quality rows for {x['reports']} reports")
        if not x["quality"] and x["quality_rows"]:
            bad.append(f"{tag}: quality rows written with quality off")
    for b in backends:
        q = r.get(f"quality_cost_{b}")
        if not q:
            bad.append(f"quality_cost_{b}: missing")
            continue
        for x in q["runs"]:
            tag = f"quality_cost_{b} pair {x['pair']} {'on' if x['quality'] else 'off'}"
            if not (x["reports_per_s"] > 0 and 0 < x["cpu_us_per_report"] < 100000):
                bad.append(f"{tag}: no rate or CPU")
            if x["quality"] and not (x["quality_connection_rows"] == x["reports_stored"] and
                                     x["quality_stream_intervals"] > 0):
                bad.append(f"{tag}: {x['quality_connection_rows']} quality_connection rows for "
                           f"{x['reports_stored']} reports, {x['quality_stream_intervals']} "
                           "rated intervals")
            if not x["quality"] and (x["quality_connection_rows"] or x["quality_stream_rows"]):
                bad.append(f"{tag}: quality rows written with quality = false")
        w = r.get(f"worst50_{b}")
        if not w:
            bad.append(f"worst50_{b}: missing")
            continue
        if w["connections"] != w["connections_sent"]:
            bad.append(f"worst50_{b}: {w['connections']} connections stored")
        if w["stats_rows"] < (1000000 if r.get("worst50_size") == "full" else 30000):
            bad.append(f"worst50_{b}: only {w['stats_rows']} stats rows")
        if not (w["quality_connection_rows"] == w["reports"] == w["bound_covers_rows"]):
            bad.append(f"worst50_{b}: the bound does not cover every report's quality row")
        if not (w["result_rows"] == 50 and 0 < w["query_ms"] < 600000 and w["plan"]):
            bad.append(f"worst50_{b}: no answer, time or plan")
    return bad


def print_table(r):
    if "nghttpd" not in r:
        return
    print(f"\nKohaku benchmark: {r['reports']} reports of {r['body_bytes']} bytes "
          f"({r['rows_per_report']:.1f} stats rows each), {r['machine']['cpus']} CPUs\n")
    print(f"{'run':34} {'reports/s':>10} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99@half':>9} {'CPU us/rep':>10} {'RSS MiB':>8}")
    ng = r["nghttpd"]["reports_per_s"]
    print(f"{'nghttpd + h2load (HTTP/2 ceiling)':34} {ng:>10.0f}")
    print(f"{'kohaku null + h2load':34} {r['null_h2load']['reports_per_s']:>10.0f}")
    if "null_h2load_loop" in r:
        print(f"{'  same, parse_threads = 0':34} {r['null_h2load_loop']['reports_per_s']:>10.0f}")
    for key in ("null", "sqlite", "pg_direct_copy", "pg_unnest", "pg_copy"):
        if key not in r:
            continue
        x = r[key]
        print(f"{x['label'] + ' + loadgen':34} {x['reports_per_s']:>10.0f} {x['rows_per_s']:>10.0f} "
              f"{x['p50_ms']:>8.2f} {x['p99_ms']:>8.2f} {x['half_p99_ms']:>9.2f} "
              f"{x['cpu_us_per_report']:>10.1f} {x['peak_rss_mib']:>8.1f}")
        if key == "sqlite":
            sd = r["sqlite_direct"]
            print(f"{'SQLite direct load (ceiling)':34} {sd['reports_per_s']:>10.0f} "
                  f"{sd['rows_per_s']:>10.0f}")
        if key == "pg_copy" and "psql_copy" in r:
            pc = r["psql_copy"]
            label = "psql \\copy of the same rows"
            print(f"{label:34} {pc['reports_per_s']:>10.0f} "
                  f"{pc['rows_per_s']:>10.0f}")
    print()
    print(f"null / nghttpd (h2load both):    {r['null_h2load']['reports_per_s'] / ng:6.1%}")
    print(f"sqlite / direct load:            "
          f"{r['sqlite']['reports_per_s'] / r['sqlite_direct']['reports_per_s']:6.1%}")
    if "psql_copy" in r:
        for key in ("pg_direct_copy", "pg_unnest", "pg_copy"):
            print(f"{key:32} {r[key]['reports_per_s'] / r['psql_copy']['reports_per_s']:6.1%} "
                  "of psql \\copy")
    if r.get("callgrind_instructions_per_report"):
        print(f"instructions per report (null path, callgrind): "
              f"{r['callgrind_instructions_per_report']:,.0f}")
    if r.get("parse"):
        p = r["parse"]
        print(f"parse alone, one core, {p['bytes']} bytes: yajl syntax only {p['yajl_us']:.1f} us, "
              f"kohaku envelope {p['envelope_us']:.1f} us")


# --- 7. kohaku import ------------------------------------------------------------------------


def run_import(tmp, settings, log):
    """kohaku import of log with these storage settings: its --json summary and peak RSS."""
    cfg = os.path.join(tmp, f"import-{free_port()}.ini")
    with open(cfg, "w") as f:
        for k, v in settings.items():
            f.write(f"{k} = {v}\n")
    out = os.path.join(tmp, "import.out")
    pid = os.fork()
    if pid == 0:
        with open(out, "wb") as o:
            os.dup2(o.fileno(), 1)
        os.execv(KOHAKU, [KOHAKU, "-C", cfg, "import", "--json", log])
    _, status, usage = os.wait4(pid, 0)
    with open(out) as f:
        summary = json.load(f)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"kohaku import exited {status}: {summary}")
    summary["peak_rss_mib"] = usage.ru_maxrss / 1024
    summary["cpu_s"] = usage.ru_utime + usage.ru_stime
    return summary


def stats_rows(st):
    """The rows of the stats tables (rtc_*) of a Store's database."""
    db = st.connect()
    try:
        return sum(scalar(db, f'SELECT count(*) FROM "{t}"') for t in st.tables(db)
                   if t.startswith("rtc_"))
    finally:
        db.close()


def live_stored(tmp, backend, cluster, n):
    """The live path on a fresh database, as the import is measured: kohaku-loadgen's peak run
    (n reports from SORA_CONNS connections, after a warm-up of other connections) and the
    stats rows it stored, counted in the database (rows inserted: objects that did not change
    are not stored again, as for the import). Every report is answered after its commit, so
    the rows are all there when loadgen is done."""
    st = Store(tmp, backend, cluster, f"bench_live_{backend}")
    d = Daemon(tmp, st.settings)
    try:
        run_loadgen(d.port, "-N", 2000, "-c", 4, "-m", 32, "-n", 100, "-s", SEED + 1)
        before = stats_rows(st)
        lg = run_loadgen(d.port, "-N", n, "-c", 4, "-m", 32, "-n", SORA_CONNS, "-s", SEED)
        rows = stats_rows(st) - before
        rss = peak_rss_kib(d.proc.pid)
    finally:
        rc = d.stop()
        st.drop()
    assert rc == 0, f"live {backend}: kohaku exited {rc}"
    seconds = lg["answered"] / lg["reports_per_s"]
    return {"reports": lg["answered"], "reports_per_s": lg["reports_per_s"], "rows": rows,
            "rows_per_s": rows / seconds, "rows_per_report": rows / max(lg["answered"], 1),
            "seconds": seconds, "peak_rss_mib": rss / 1024}


def measure_import(tmp, quick, no_postgres, n):
    """kohaku import of a generated rtc_stats.jsonl (1,000 connections reporting in turn,
    the browser fixtures' objects) into a fresh SQLite and PostgreSQL (direct_copy) database,
    next to the live path's stored rows/s on a fresh database of the same backend."""
    log = os.path.join(tmp, "rtc_stats.jsonl")
    t0 = time.time()
    info = sora_logs.write_big_rtc_stats(log, (20 if quick else 1024) << 20,
                                         connections=SORA_CONNS)
    info["write_s"] = time.time() - t0
    out = {"log": info, "backends": ["sqlite"] if no_postgres else ["sqlite", "postgres"]}
    cluster = None if no_postgres else PgCluster()
    try:
        for backend in out["backends"]:
            c = cluster if backend == "postgres" else None
            live = live_stored(tmp, backend, c, n)
            st = Store(tmp, backend, c, f"bench_import_{backend}")
            try:
                x = run_import(tmp, st.settings, log)
            finally:
                st.drop()
            x["rows_per_report"] = x["rows"] / max(x["stored"], 1)
            x["live"] = live
            out[backend] = x
            print(f"  import {backend}: {x['rows_per_s']:.0f} rows/s, live "
                  f"{live['rows_per_s']:.0f} rows/s", flush=True)
    finally:
        if cluster:
            cluster.close()
        os.unlink(log)
    return out


def print_import(r):
    x = r.get("import")
    if not x:
        return
    info = x["log"]
    print(f"\nkohaku import: a generated rtc_stats.jsonl of {info['bytes'] / 1048576:.0f} MiB, "
          f"{info['lines']:,} lines, {info['reports']:,} reports of {info['connections']} "
          "connections; live: kohaku-loadgen's peak run on a fresh database of the backend")
    print("(rows: stats rows inserted, counted by the import / in the database; objects that "
          "did not change are not stored again)\n")
    print(f"{'backend':11} {'path':7} {'reports':>8} {'reports/s':>10} {'rows/s':>9} "
          f"{'rows/rep':>8} {'seconds':>8} {'CPU s':>6} {'RSS MiB':>8}  import/live rows/s")
    for key in x.get("backends", ()):
        s, lv = x[key], x[key]["live"]
        print(f"{key:11} {'import':7} {s['stored']:>8} {s['reports_per_s']:>10.0f} "
              f"{s['rows_per_s']:>9.0f} {s['rows_per_report']:>8.1f} {s['seconds']:>8.1f} "
              f"{s['cpu_s']:>6.1f} {s['peak_rss_mib']:>8.1f}  "
              f"{s['rows_per_s'] / lv['rows_per_s']:.2f}")
        print(f"{'':11} {'live':7} {lv['reports']:>8} {lv['reports_per_s']:>10.0f} "
              f"{lv['rows_per_s']:>9.0f} {lv['rows_per_report']:>8.1f} {lv['seconds']:>8.1f} "
              f"{'':>6} {lv['peak_rss_mib']:>8.1f}")


def import_sanity(r):
    """The import stored every report of its log, at a rate, in bounded memory; the live run
    beside it stored rows."""
    bad = []
    x = r.get("import")
    if not x or not x.get("backends"):
        return ["import: not measured"]
    for key in x["backends"]:
        s = x[key]
        if s.get("stored") != x["log"]["reports"] or s.get("refused"):
            bad.append(f"import {key}: stored {s.get('stored')} of {x['log']['reports']}")
        if not s.get("rows_per_s", 0) > 0 or not s["live"].get("rows_per_s", 0) > 0:
            bad.append(f"import {key}: no rows/s")
        if not 1 < s.get("peak_rss_mib", 0) < 1024:
            bad.append(f"import {key}: peak RSS")
    return bad

if __name__ == "__main__":
    main()

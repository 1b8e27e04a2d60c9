#!/usr/bin/python3
"""Kohaku benchmark: one run, one table, everything measured on this machine.

  1. the HTTP/2 ceiling: h2load posting a real report to nghttpd;
  2. kohaku with the null backend (receive, parse, validate, build rows), driven by h2load
     (same client and body as the ceiling) and by kohaku-loadgen (distinct, growing reports);
  3. kohaku with SQLite next to loading the same rows straight into SQLite;
  4. kohaku with PostgreSQL (unnest and copy write methods) next to `psql \\copy`;
  5. for each kohaku run: reports/s, rows/s, ack latency p50/p99, CPU us per report, peak
     RSS; p99 at half the peak rate; and instructions per report of the null path under
     callgrind.

Usage: bench/run.py [--reports N] [--quick] [--json FILE]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pgcluster import PgCluster, free_port  # noqa: E402

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


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, tmp, settings, wrapper=()):
        self.port = free_port()
        cfg = os.path.join(tmp, f"kohaku-{self.port}.ini")
        with open(cfg, "w") as f:
            f.write(f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
                    f"exporter_listen_addr = 127.0.0.1\nexporter_listen_port = {free_port()}\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        self.log = open(os.path.join(tmp, f"kohaku-{self.port}.log"), "w")
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=int, default=30000)
    ap.add_argument("--quick", action="store_true", help="small counts, for the test suite")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every number is present and sane (the test suite)")
    args = ap.parse_args()
    n = 3000 if args.quick else args.reports
    tmp = tempfile.mkdtemp(prefix="kohaku-bench-")
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
    shutil.rmtree(tmp, ignore_errors=True)
    print_table(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    if args.check:
        problems = sanity(res)
        for p in problems:
            print("not sane:", p)
        print(f"bench: {'1 passed, 0 failed' if not problems else '0 passed, 1 failed'}")
        sys.exit(1 if problems else 0)


def sanity(r):
    """Numbers a working run must have: no speed target, just signs of life and order."""
    bad = []
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


def print_table(r):
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


if __name__ == "__main__":
    main()

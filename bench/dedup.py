#!/usr/bin/python3
"""Unchanged objects stored once (issue 16): kohaku with SQLite, dedup on and off in turn,
driven as bench/run.py's part 3 drives it (kohaku-loadgen, 1,000 emulated connections, 4
connections x 32 streams, as fast as answers allow, after a warm-up): reports/s, the stats
rows written per report (counted in the database afterwards), and the database's bytes per
report (file + WAL after the run).

Usage: bench/dedup.py [--reports N] [--pairs N] [--json FILE]
The runs alternate (on, off, on, off ...) so a neighbour's load spreads over both."""
import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: Daemon, run_loadgen)


def one(tmp, on, n, k):
    path = os.path.join(tmp, f"dedup-{'on' if on else 'off'}-{k}.db")
    d = run.Daemon(tmp, {"storage": "sqlite", "sqlite_path": path,
                         "dedup": "true" if on else "false"})
    try:
        run.run_loadgen(d.port, "-N", 2000, "-c", 4, "-m", 32)  # warm-up (schema, caches)
        peak = run.run_loadgen(d.port, "-N", n, "-c", 4, "-m", 32, "-n", run.SORA_CONNS)
    finally:
        rc = d.stop()
    assert rc == 0, f"kohaku exited {rc}"
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
    return {"dedup": on, "reports_per_s": peak["reports_per_s"], "p99_ms": peak["p99_ms"],
            "reports": reports, "rows": sum(rows.values()), "rows_per_table": rows,
            "rows_per_report": sum(rows.values()) / reports, "bytes_per_report": size / reports}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=int, default=20000)
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="bench-kohaku-dedup-", dir="/tmp")
    try:
        runs = [one(top, on, args.reports, k) for k in range(args.pairs) for on in (True, False)]
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(f"{'dedup':6} {'reports/s':>10} {'p99 ms':>7} {'rows/report':>12} {'bytes/report':>13}"
          f" {'codec':>7} {'cand':>7} {'cert':>7}")
    for r in runs:
        t = r["rows_per_table"]
        print(f"{'on' if r['dedup'] else 'off':6} {r['reports_per_s']:>10.0f} {r['p99_ms']:>7.1f}"
              f" {r['rows_per_report']:>12.2f} {r['bytes_per_report']:>13.0f}"
              f" {t.get('rtc_codec_stats', 0):>7} {t.get('rtc_ice_candidate_stats', 0):>7}"
              f" {t.get('rtc_certificate_stats', 0):>7}")
    for on in (True, False):
        rs = [r["reports_per_s"] for r in runs if r["dedup"] == on]
        print(f"median reports/s, dedup {'on' if on else 'off'}: {statistics.median(rs):.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)


if __name__ == "__main__":
    main()

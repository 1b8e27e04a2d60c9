#!/usr/bin/python3
"""Retention on plain PostgreSQL: kohaku's row-by-row DELETE (5,000 rows per statement, the
statement of pg_conn.c, as kohaku before partitions ran it and as it still runs on
unpartitioned tables) against dropping one partition (kohaku_partitions_drop) holding the
same rows, on rtc_transport_stats as kohaku makes it (its unique key and time index).

    bench/retention_pg.py [rows]   (default 1,000,000)

A throwaway cluster (tests/integration/pgcluster.py, fsync off); kohaku builds the schema
(`kohaku migrate`). Prints one line per method."""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from pgcluster import PgCluster  # noqa: E402

import psycopg2  # noqa: E402

KOHAKU = os.path.join(HERE, "..", "build", "kohaku")
DELETE = ('DELETE FROM "{t}" WHERE ctid = ANY(ARRAY(SELECT ctid FROM "{t}" WHERE "time" < '
          "now() - interval '60 days' LIMIT 5000))")
LOAD = ('INSERT INTO "{t}" ("time", channel_id, connection_id, stats_type, stats_id, '
        "stats_timestamp, bytes_sent, bytes_received, packets_sent, packets_received, "
        "dtls_state, selected_candidate_pair_id) SELECT "
        "{day} + (i %% 86400) * interval '1 s', 'room-1', 'CONN' || lpad((i / 100)::text, 22, '0'), "
        "'transport', 'T' || (i %% 100), 1.7e12 + i, i, i, i, i, 'connected', 'CP' || (i %% 7) "
        "FROM generate_series(0, %s - 1) i")


def migrate(uri, partition_hours):
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
        f.write(f"storage = postgres\npostgres_uri = {uri}\n"
                f"postgres_partition_interval = {partition_hours}\n")
    subprocess.run([KOHAKU, "-C", f.name, "migrate"], check=True, capture_output=True)
    os.unlink(f.name)


def timed(cur, sql, params=()):
    t0 = time.monotonic()
    cur.execute(sql, params)
    return time.monotonic() - t0


def run(cluster, rows, partitioned):
    name = "bench_part" if partitioned else "bench_plain"
    cluster.create_db(name)
    uri = cluster.uri(name)
    migrate(uri, 24 if partitioned else 0)
    con = psycopg2.connect(uri)
    con.autocommit = True
    cur = con.cursor()
    t = "rtc_transport_stats"
    day = "date_trunc('day', now() - interval '70 days')"
    if partitioned:
        cur.execute(f'CREATE TABLE "{t}_old" PARTITION OF "{t}" FOR VALUES FROM ({day}) '
                    f"TO ({day} + interval '1 day')")
    load = timed(cur, LOAD.format(t=t, day=day), (rows,))
    cur.execute(f'VACUUM ANALYZE "{t}"')
    cur.execute("SELECT pg_total_relation_size(%s)", (f"{t}_old" if partitioned else t,))
    size = cur.fetchone()[0]
    cur.execute("SELECT pg_current_wal_lsn()")
    lsn = cur.fetchone()[0]
    vacuum = 0.0
    if partitioned:
        spent = timed(cur, "SELECT * FROM kohaku_partitions_drop(%s, '60 days')", (t,))
        statements = 1
    else:
        spent, statements = 0.0, 0
        while True:
            spent += timed(cur, DELETE.format(t=t))
            statements += 1
            if cur.rowcount < 5000:
                break
        # the dead rows' space is reusable only once vacuumed: autovacuum's work, timed here
        vacuum = timed(cur, f'VACUUM "{t}"')
    cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,))
    wal = float(cur.fetchone()[0])
    cur.execute(f'SELECT count(*) FROM "{t}"')
    left = cur.fetchone()[0]
    con.close()
    how = "DROP partition" if partitioned else "DELETE 5,000/statement"
    print(f"{how:24} rows {rows:>9,}  table+indexes {size / 2**20:7.1f} MiB  "
          f"load {load:6.1f} s  retention {spent:8.3f} s in {statements} statement(s) "
          f"({rows / spent:,.0f} rows/s)  then VACUUM {vacuum:6.3f} s  "
          f"WAL {wal / 2**20:7.1f} MiB  rows left {left}")


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    cluster = PgCluster()  # started
    try:
        run(cluster, rows, partitioned=False)
        run(cluster, rows, partitioned=True)
    finally:
        cluster.close()


if __name__ == "__main__":
    main()

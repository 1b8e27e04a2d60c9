"""The durable spool (issue: never lose an acknowledged report): acknowledgements continue
while PostgreSQL is away and the spool drains when it is back; kill -9 at random moments
loses nothing that was acknowledged; a full spool answers 503 with retry-after and recovers;
a torn or corrupt tail is cut at the last good record; SIGTERM under load exits 0 with
everything acknowledged kept; /metrics counts what the spool did.

Every check is against the report ids kohaku-loadgen saw answered 204 (--acked), looked up
in the database: each must be there exactly once."""
import os
import json
import random
import signal
import struct
import subprocess
import time
import zlib

import pytest

from helpers import (FIXTURES_DIR, KOHAKU_BIN, KOHAKU_LOADGEN, Kohaku, PgDb, SqliteDb,
                     fixture_files, free_port, load_fixture, loadgen, make_envelope, wait_until,
                     write_config)
from pgcluster import PgCluster, unique_db_name


@pytest.fixture
def own_pg():
    """A cluster of its own: these tests stop and start PostgreSQL, even by crashing it,
    so what it has committed must survive that."""
    cluster = PgCluster(crash_safe=True)
    yield cluster
    cluster.close()


def acked_ids(*paths):
    ids = []
    for p in paths:
        if os.path.exists(p):
            with open(p) as f:
                ids += [line.split()[0] for line in f if line.strip()]
    return ids


def assert_stored_once(store, ids):
    assert ids, "the load generator saw no acknowledgement at all"
    counts = dict(store.query("SELECT report_id, count(*) FROM sora_report "
                              "GROUP BY report_id"))
    missing = [i for i in ids if i not in counts]
    twice = {i: n for i, n in counts.items() if n != 1}
    assert not missing, f"{len(missing)} of {len(ids)} acknowledged reports are not stored, " \
                        f"e.g. {missing[:3]}"
    assert not twice, f"stored more than once: {list(twice.items())[:3]}"
    assert len(set(ids)) == len(ids), "loadgen acknowledged one id twice"


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0)


def wait_drained(k, timeout=60):
    """Polls /metrics until the spool holds nothing to replay and no segment file; returns
    that scrape."""
    last = {}

    def drained():
        last["m"] = m = k.metrics()
        return m if val(m, "kohaku_spool_waiting_reports") == 0 and \
            val(m, "kohaku_spool_segments") == 0 else None

    try:
        return wait_until(drained, timeout, interval=0.1)
    except AssertionError:
        m = last.get("m", {})
        raise AssertionError(f"spool not drained in {timeout}s: "
                             f"{ {n: v for (n, _), v in m.items() if 'spool' in n} }\n"
                             f"{k.log_text()[-3000:]}") from None


def segment_files(spool_dir):
    return sorted(f for f in os.listdir(spool_dir) if f.endswith(".spool"))


def read_segment(path):
    """Parses a segment independently of kohaku (the format of src/spool/spool_format.h):
    returns [(offset, record length, body bytes)]."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"KOHAKUSP" and struct.unpack("<I", data[8:12])[0] == 1
    out, pos = [], 16
    while pos + 8 <= len(data):
        plen, crc = struct.unpack("<II", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + plen]
        if len(payload) < plen or zlib.crc32(data[pos:pos + 4] + payload) != crc:
            break
        out.append((pos, 8 + plen, payload[12:]))
        pos += 8 + plen
    return out


@pytest.mark.parametrize("fsync", ["batch", "interval"])
def test_postgres_outage_acks_from_the_spool_and_drains(own_pg, tmp_path, fsync):
    store = PgDb(own_pg, unique_db_name())
    spool = tmp_path / "spool"
    k = Kohaku(dict(store.settings(), spool_dir=str(spool), spool_fsync=fsync,
                    storage_retry_ms=500, debug="false")).start()
    try:
        a1, a2, a3 = (str(tmp_path / f"acked{i}.txt") for i in (1, 2, 3))
        rc, s, out = loadgen(k.port, "-N", 300, "-n", 60, "-c", 2, "-m", 8, "-a", a1)
        assert rc == 0 and s["status"] == {"204": 300}, out
        m0 = k.metrics()
        assert val(m0, "kohaku_spool_appended_total") == 0  # storage kept up: no spooling

        own_pg.stop()
        rc, s, out = loadgen(k.port, "-N", 600, "-n", 60, "-c", 2, "-m", 8, "-a", a2)
        assert rc == 0 and s["status"] == {"204": 600}, out  # every one acknowledged
        k.wait_health(503)  # kohaku knows the database is away ...
        m1 = k.metrics()
        assert val(m1, "kohaku_storage_up") == 0
        # ... and the reports of the outage went to the spool (a few may have been in a
        # batch that committed just before PostgreSQL went down)
        assert val(m1, "kohaku_spool_appended_total") >= 550
        assert val(m1, "kohaku_spool_waiting_reports") == val(m1, "kohaku_spool_appended_total")
        assert val(m1, "kohaku_spool_bytes") > 550 * 3000
        assert len(segment_files(spool)) >= 1

        own_pg.start()
        # new traffic while the spool drains
        rc, s, out = loadgen(k.port, "-N", 300, "-n", 60, "-c", 2, "-m", 8, "-a", a3)
        assert rc == 0 and s["status"] == {"204": 300}, out
        m2 = wait_drained(k)
        assert segment_files(spool) == []
        # a replay that failed while PostgreSQL came back is replayed again, so drained may
        # count a record twice; storage keeps it once (checked below)
        assert val(m2, "kohaku_spool_drained_total") >= val(m2, "kohaku_spool_appended_total")
        assert val(m2, "kohaku_spool_dropped_total") == 0
        assert val(m2, "kohaku_storage_up") == 1
        ids = acked_ids(a1, a2, a3)
        assert len(ids) == 1200
        assert_stored_once(store, ids)
        assert store.count("sora_report") == 1200
        assert val(m2, "kohaku_reports_stored_total", kind="connection") >= 1200
    finally:
        assert k.close() == 0


def start_loadgen(port, acked, seconds, seed, rate=3000):
    cmd = [KOHAKU_LOADGEN, "-u", f"http://127.0.0.1:{port}/collector", "-F", FIXTURES_DIR,
           "-d", str(seconds), "-r", str(rate), "-n", "80", "-c", "4", "-m", "16", "-a", acked,
           "-s", str(seed), "--allow", "204,503"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.once("about 60 s each; the spool's and the log's recovery after kill -9 run in "
                   "both passes in the sqlite variants", backend="postgres")
@pytest.mark.parametrize("ack", ["commit", "log"])
@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_kill9_at_random_moments_loses_nothing_acknowledged(own_pg, tmp_path, backend, ack):
    """With ack_mode = log every report is answered from the log and stored from memory: a
    kill -9 loses the memory, and the next start replays the log."""
    rnd = random.Random(int(time.time()))
    store = PgDb(own_pg, unique_db_name()) if backend == "postgres" \
        else SqliteDb(str(tmp_path))
    spool = tmp_path / "spool"
    settings = dict(store.settings(), spool_dir=str(spool), debug="false",
                    storage_retry_ms=300, ack_mode=ack,
                    # a small storage queue: under load many reports take the spool path
                    spool_backlog_reports=8)
    port, mport = None, None
    acked = []
    replayed = 0
    rounds = 10
    for i in range(rounds):
        if backend == "postgres" and i == 4:
            own_pg.stop("immediate")  # rounds 4-6: the database is away too
        if backend == "postgres" and i == 7:
            own_pg.start()
        away = backend == "postgres" and 4 <= i < 7
        k = Kohaku(dict(settings, **({"listen_port": port, "exporter_listen_port": mport}
                                     if port else {}))).start(health=None if away else 204)
        port, mport = k.port, k.metrics_port
        path = str(tmp_path / f"acked{i}.txt")
        acked.append(path)
        replayed += sum(l.get("records_to_replay", 0) for l in k.log_lines()
                        if l.get("msg") == "spool ready")
        lg = start_loadgen(k.port, path, 5, rnd.randrange(1 << 30))
        time.sleep(rnd.uniform(0.3, 1.5))  # the random moment of the kill, not a wait
        k.stop(signal.SIGKILL)
        try:
            lg.wait(30)
        except subprocess.TimeoutExpired:
            lg.kill()
            raise AssertionError("kohaku-loadgen did not notice the dead server")
        k.close()
    ids = acked_ids(*acked)
    # the last start replays what every crash left in the spool
    k = Kohaku(dict(settings, listen_port=port, exporter_listen_port=mport)).start()
    try:
        replayed += sum(l.get("records_to_replay", 0) for l in k.log_lines()
                        if l.get("msg") == "spool ready")
        # with spool_backlog_reports = 8 most reports of the rounds took the spool, and the
        # drainer replays 4 at a time: tens of thousands of records, slow on a loaded machine
        wait_drained(k, timeout=360)
        assert_stored_once(store, ids)
        # the crashes did leave records in the spool that later starts replayed
        assert replayed > 0
        assert len(ids) > rounds * 50, f"only {len(ids)} acknowledgements in {rounds} rounds"
    finally:
        assert k.close() == 0


def test_log_first_acknowledgement_stores_from_memory(own_pg, tmp_path):
    """ack_mode = log: every report is answered once it is synced to the log, its rows go to
    the database from memory in transactions of many reports (never parsed again: nothing is
    replayed from the log while the database keeps up), and the log is cut as they commit."""
    store = PgDb(own_pg, unique_db_name())
    spool = tmp_path / "spool"
    # room for every report in memory (spool_backlog_reports bounds it: past it a burst is
    # logged as spooled reports are, and replayed)
    k = Kohaku(dict(store.settings(), spool_dir=str(spool), ack_mode="log",
                    spool_segment_bytes=1048576, spool_backlog_reports=100000,
                    debug="false")).start()
    try:
        a = str(tmp_path / "acked.txt")
        rc, s, out = loadgen(k.port, "-N", 3000, "-n", 300, "-c", 4, "-m", 32, "-a", a)
        assert rc == 0 and s["status"] == {"204": 3000}, out
        m = wait_drained(k)
        assert val(m, "kohaku_log_acknowledged_total") == 3000
        assert val(m, "kohaku_log_stored_total") == 3000
        assert val(m, "kohaku_log_held_reports") == 0
        assert val(m, "kohaku_log_released_total") == 0
        assert val(m, "kohaku_spool_appended_total") == 3000  # every one went to the log ...
        assert val(m, "kohaku_spool_drained_total") == 0      # ... and none came back from it
        # several 1 MiB segments were written and cut once their reports had committed
        assert segment_files(spool) == []
        # transactions of many reports: fewer batches than with one per answer
        batches = val(m, "kohaku_batch_reports_count")
        assert 0 < batches < 3000 / 8, batches
        assert_stored_once(store, acked_ids(a))
    finally:
        assert k.close() == 0


def test_log_first_clean_stop_commits_and_the_next_start_replays_as_no_ops(own_pg, tmp_path):
    """ack_mode = log, stopped (SIGTERM) straight after a burst: what was answered is
    committed before the process ends; a segment the stop leaves behind is replayed at the
    next start as no-ops (every record's report already stored), and then cut."""
    store = PgDb(own_pg, unique_db_name())
    spool = tmp_path / "spool"
    settings = dict(store.settings(), spool_dir=str(spool), ack_mode="log",
                    spool_backlog_reports=100000, debug="false")
    k = Kohaku(settings, directory=tmp_path / "k1").start()
    a = str(tmp_path / "acked.txt")
    try:
        rc, s, out = loadgen(k.port, "-N", 2000, "-n", 200, "-c", 4, "-m", 32, "-a", a)
        assert rc == 0 and s["status"] == {"204": 2000}, out
    finally:
        assert k.close() == 0  # at once: reports still in memory, records still held
    assert_stored_once(store, acked_ids(a))  # committed by the stop itself
    left = segment_files(spool)
    k = Kohaku(settings, directory=tmp_path / "k2").start()
    try:
        m = wait_drained(k)
        assert segment_files(spool) == []
        assert store.count("sora_report") == 2000
        assert_stored_once(store, acked_ids(a))
        # what the start replayed was already there: duplicates, nothing stored
        assert val(m, "kohaku_reports_stored_total", kind="connection") == 0
        if left:
            assert val(m, "kohaku_spool_drained_total") > 0
            assert val(m, "kohaku_reports_duplicate_total") == val(m,
                                                                   "kohaku_spool_drained_total")
    finally:
        assert k.close() == 0


def test_log_first_database_outage_replays_from_the_log(own_pg, tmp_path):
    """ack_mode = log with PostgreSQL crashing under load: reports whose batch fails after
    their 204 are released to the log and replayed from it once the database is back."""
    store = PgDb(own_pg, unique_db_name())
    k0 = Kohaku(store.settings()).start()  # the schema
    assert k0.close() == 0
    spool = tmp_path / "spool"
    k = Kohaku(dict(store.settings(), spool_dir=str(spool), ack_mode="log",
                    storage_retry_ms=300, debug="false")).start()
    try:
        acked = str(tmp_path / "acked.txt")
        lg = start_loadgen(k.port, acked, 8, 11, rate=1500)
        wait_until(lambda: len(acked_ids(acked)) > 1000, 30, message="1000 acks")
        own_pg.stop("immediate")
        time.sleep(2)  # reports keep coming: logged and answered, not stored
        own_pg.start()
        lg.wait(60)
        m = wait_drained(k, timeout=120)
        ids = acked_ids(acked)
        assert len(ids) > 3000
        assert val(m, "kohaku_log_held_reports") == 0
        # some failed after their 204 and came back from the log (or went there at once
        # while the database was marked down)
        assert val(m, "kohaku_log_released_total") + val(m, "kohaku_spool_drained_total") > 0
        assert_stored_once(store, ids)
    finally:
        assert k.close() == 0


def test_log_first_needs_a_spool_dir(tmp_path):
    cfg = tmp_path / "kohaku.ini"
    write_config(str(cfg), dict(SqliteDb(str(tmp_path)).settings(), ack_mode="log",
                                listen_port=free_port(), exporter_listen_port=free_port(),
                                console="false"))
    out = subprocess.run([KOHAKU_BIN, "-C", str(cfg)], capture_output=True, text=True,
                         timeout=10, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out.stderr
    assert "ack_mode: log needs spool_dir" in out.stderr, out.stderr


def test_full_spool_answers_503_and_recovers_when_space_frees(own_pg, tmp_path):
    store = PgDb(own_pg, unique_db_name())
    k0 = Kohaku(store.settings()).start()  # creates the schema
    assert k0.close() == 0
    own_pg.stop()
    spool = tmp_path / "spool"
    k = Kohaku(dict(store.settings(), spool_dir=str(spool), spool_max_bytes=1048576,
                    spool_segment_bytes=262144, retry_after=7, debug="false")).start(health=None)
    try:
        a1, a2 = str(tmp_path / "a1"), str(tmp_path / "a2")
        rc, s, out = loadgen(k.port, "-N", 400, "-n", 40, "-c", 1, "-m", 4, "-a", a1,
                             "--allow", "204,503")
        assert rc == 0, out
        assert 100 < s["status"].get("204", 0) < 400, s  # ~1 MiB of ~6 KB reports
        assert s["status"].get("503", 0) > 0, s
        m = k.metrics()
        assert val(m, "kohaku_spool_full_total") > 0
        assert val(m, "kohaku_spool_bytes") <= 1048576
        k.wait_log('"status":503')  # access lines are buffered for up to 100 ms
        # space frees once PostgreSQL is back and the spool drains
        own_pg.start()
        wait_drained(k)
        rc, s, out = loadgen(k.port, "-N", 200, "-n", 40, "-c", 1, "-m", 4, "-a", a2)
        assert rc == 0 and s["status"] == {"204": 200}, out
        wait_drained(k)
        assert_stored_once(store, acked_ids(a1, a2))
    finally:
        assert k.close() == 0


def test_503_from_a_full_spool_carries_retry_after(tmp_path):
    # storage that never answers: every report goes to a 1 MiB spool until it is full
    spool = tmp_path / "spool"
    k = Kohaku({"storage": "postgres",
                "postgres_uri": "postgresql://127.0.0.1:1/none?connect_timeout=1",
                "spool_dir": str(spool), "spool_max_bytes": 1048576, "retry_after": 7,
                "debug": "false"}).start(health=None)
    try:
        rc, s, out = loadgen(k.port, "-N", 300, "-n", 40, "-c", 1, "-m", 4,
                             "--allow", "204,503")
        assert rc == 0 and s["status"].get("503", 0) > 0, out
        body = json.dumps(make_envelope(load_fixture(fixture_files()[0]))).encode()
        out = subprocess.run(
            ["curl", "-s", "-i", "--http2-prior-knowledge", "-X", "POST",
             "-H", "x-sora-stats-exporter-type: connection.user-agent",
             "-H", "content-type: application/json", "--data-binary", "@-",
             f"http://127.0.0.1:{k.port}/collector"],
            input=body, capture_output=True, timeout=30)
        head = out.stdout.decode(errors="replace").lower()
        assert head.startswith("http/2 503"), head
        assert "retry-after: 7" in head
        assert "spool: full" in head
    finally:
        assert k.close() == 0


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_torn_or_corrupt_tail_is_cut_at_the_last_good_record(own_pg, tmp_path, damage):
    store = PgDb(own_pg, unique_db_name())
    k0 = Kohaku(store.settings()).start()
    assert k0.close() == 0
    own_pg.stop()
    spool = tmp_path / "spool"
    settings = dict(store.settings(), spool_dir=str(spool), debug="false")
    k = Kohaku(settings).start(health=None)
    acked = str(tmp_path / "acked")
    try:
        rc, s, out = loadgen(k.port, "-N", 50, "-n", 10, "-c", 1, "-m", 4, "-a", acked)
        assert rc == 0 and s["status"] == {"204": 50}, out
    finally:
        assert k.close() == 0
    segs = segment_files(spool)
    assert len(segs) == 1
    path = spool / segs[0]
    recs = read_segment(path)
    assert len(recs) == 50
    last_off, last_len, last_body = recs[-1]
    last_id = json.loads(last_body)["id"]
    if damage == "truncate":  # a crash in the middle of writing the last record
        os.truncate(path, last_off + last_len - 100)
    else:  # a bit flipped on disk inside the last record
        with open(path, "r+b") as f:
            f.seek(last_off + last_len - 50)
            b = f.read(1)
            f.seek(last_off + last_len - 50)
            f.write(bytes([b[0] ^ 0x01]))
    own_pg.start()
    k = Kohaku(settings).start()
    try:
        k.wait_log("spool: cut a torn tail")
        m = wait_drained(k)
        assert val(m, "kohaku_spool_tails_cut_total") == 1
        ids = acked_ids(acked)
        kept = [i for i in ids if i != last_id]
        assert len(kept) == 49
        assert_stored_once(store, kept)
        assert store.count("sora_report", "report_id = ?", (last_id,)) == 0  # never half
        assert store.count("sora_report") == 49
    finally:
        assert k.close() == 0


def test_sigterm_under_load_with_the_database_away(own_pg, tmp_path):
    store = PgDb(own_pg, unique_db_name())
    k0 = Kohaku(store.settings()).start()
    assert k0.close() == 0
    spool = tmp_path / "spool"
    settings = dict(store.settings(), spool_dir=str(spool), debug="false",
                    storage_retry_ms=300, shutdown_timeout=20)
    k = Kohaku(settings).start()
    acked = str(tmp_path / "acked")
    own_pg.stop()
    lg = start_loadgen(k.port, acked, 10, 7)
    # SIGTERM once the load is under way: a hundred reports acknowledged from the spool
    wait_until(lambda: k.metric("kohaku_spool_appended_total") >= 100, 60,
               message="100 reports spooled")
    t0 = time.time()
    rc = k.stop(signal.SIGTERM, timeout=30)
    assert rc == 0, k.log_text()[-3000:]
    assert time.time() - t0 < 20
    lg.wait(30)
    k.close()
    ids = acked_ids(acked)
    assert len(ids) > 50
    own_pg.start()
    k = Kohaku(settings).start()
    try:
        wait_drained(k)
        assert_stored_once(store, ids)
    finally:
        assert k.close() == 0


def test_spool_dir_used_by_another_process_is_refused(tmp_path):
    spool = tmp_path / "spool"
    st = SqliteDb(str(tmp_path))
    k = Kohaku(dict(st.settings(), spool_dir=str(spool))).start()
    try:
        os.makedirs(tmp_path / "x")
        other = Kohaku(dict(SqliteDb(str(tmp_path / "x")).settings(), spool_dir=str(spool)))
        other.start(wait=False)
        assert other.proc.wait(20) != 0
        assert "in use by another kohaku process" in other.log_text()
        other.close()
    finally:
        assert k.close() == 0


def test_second_sigterm_exits_at_once(tmp_path):
    st = SqliteDb(str(tmp_path))
    k = Kohaku(dict(st.settings(), shutdown_timeout=60, request_header_timeout=60)).start()
    import socket

    def h1_connections():
        return k.metric("kohaku_connections", protocol="h1")

    wait_until(lambda: h1_connections() == 0, 10, message="the readiness probe's connection gone")
    slow = socket.create_connection(("127.0.0.1", k.port))
    try:
        slow.sendall(b"POST /webhook/stats HTTP/1.1\r\nHost: x\r\n")  # headers never end
        # in progress once kohaku has read its first bytes (an HTTP/1.1 connection from then on)
        wait_until(lambda: h1_connections() == 1, 10, message="the slow request read")
        k.proc.send_signal(signal.SIGTERM)
        k.wait_log("shutting down")
        # a second of the grace period: the first SIGTERM waits for the request in progress
        time.sleep(1.0)
        assert k.proc.poll() is None
        t0 = time.time()
        k.proc.send_signal(signal.SIGTERM)
        assert k.proc.wait(5) == 1
        assert time.time() - t0 < 2
        assert "second signal: exiting now" in k.log_text()
    finally:
        slow.close()
        k.close()


def test_sqlite_locked_then_released_drains_the_spool(tmp_path):
    """SQLite learns it is back only by writing: while another process holds the database
    locked, reports go to the spool; once the lock goes, the drainer's probe write succeeds
    and the spool drains (it must not wait for a write that only the spool could send)."""
    import sqlite3
    st = SqliteDb(str(tmp_path))
    spool = tmp_path / "spool"
    settings = dict(st.settings(), spool_dir=str(spool), storage_retry_ms=300, debug="false")
    k = Kohaku(settings).start()
    try:
        a1, a2 = str(tmp_path / "a1"), str(tmp_path / "a2")
        rc, s, out = loadgen(k.port, "-N", 100, "-n", 20, "-c", 1, "-m", 4, "-a", a1)
        assert rc == 0 and s["status"] == {"204": 100}, out
        locker = sqlite3.connect(st.path, timeout=10, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            # the first batch waits out SQLite's busy timeout and fails; its reports and
            # everything after it go to the spool and are acknowledged from there
            rc, s, out = loadgen(k.port, "-N", 200, "-n", 20, "-c", 1, "-m", 4, "-a", a2,
                                 timeout=120)
            assert rc == 0 and s["status"] == {"204": 200}, out
            m = k.metrics()
            assert val(m, "kohaku_storage_up") == 0
            assert val(m, "kohaku_spool_appended_total") > 0
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        m = wait_drained(k, timeout=60)
        assert val(m, "kohaku_storage_up") == 1
        ids = acked_ids(a1, a2)
        assert len(ids) == 300
        assert_stored_once(st, ids)
    finally:
        assert k.close() == 0

"""The load generator (issue: load generator, benchmark suite): its reports validate against
kohaku, counters and timestamps grow from one report to the next, ids are unique, and the
acked-id file matches the database. Plus a bounded soak: memory stays flat."""
import re
import threading
import time

import pytest

from helpers import loadgen, sanitizer_build


@pytest.mark.storage("sqlite")
def test_reports_grow_like_live_clients(db, kohaku, tmp_path):
    k, st = kohaku, db
    acked = tmp_path / "acked.txt"
    rc, summary, out = loadgen(k.port, "-n", 8, "-N", 40, "-c", 1, "-m", 1, "-i", 5,
                               "-a", str(acked))
    assert rc == 0, out
    assert summary["status"] == {"204": 40}
    lines = [l.split() for l in acked.read_text().splitlines()]
    ids = [l[0] for l in lines]
    assert len(ids) == 40 == len(set(ids))  # report ids unique
    assert all(re.fullmatch(r"[0-9A-Z]{26}", i) for i in ids)
    stored = {r for (r,) in st.query("SELECT report_id FROM sora_report")}
    assert stored == set(ids)  # the acked file is exactly what is stored
    conns = {r for (r,) in st.query("SELECT connection_id FROM sora_connection")}
    assert conns == {l[1] for l in lines} and len(conns) == 8
    for cid in conns:
        times = [t for (t,) in st.query('SELECT "time" FROM sora_report WHERE connection_id = ? '
                                        'ORDER BY "time"', (cid,))]
        assert len(times) == 5 and times == sorted(set(times))
        series = st.query(
            'SELECT stats_id, stats_timestamp, bytes_sent, NULL FROM rtc_outbound_rtp_stream_stats '
            'WHERE connection_id = ? UNION ALL SELECT stats_id, stats_timestamp, NULL, '
            'bytes_received FROM rtc_inbound_rtp_stream_stats WHERE connection_id = ? '
            'ORDER BY 1, 2', (cid, cid))
        assert series, cid
        by_id = {}
        for sid, ts, sent, received in series:
            by_id.setdefault(sid, []).append((ts, sent if sent is not None else received))
        for sid, points in by_id.items():
            assert len(points) == 5
            stamps = [p[0] for p in points]
            counts = [p[1] for p in points]
            assert stamps == sorted(stamps) and len(set(stamps)) == 5
            assert counts == sorted(counts) and counts[-1] > counts[0], (cid, sid, counts)


def test_unexpected_status_fails_the_run(kohaku_factory):
    k = kohaku_factory(max_body_bytes=2048)
    rc, summary, out = loadgen(k.port, "-N", 10)
    assert rc == 1, out
    assert summary["status"] == {"413": 10}
    rc, summary, out = loadgen(k.port, "-N", 10, "-A", "204,413")
    assert rc == 0, out


@pytest.mark.storage("sqlite")
def test_webhook_modes(db, kohaku):
    k, st = kohaku, db
    for args in (("-W",), ("-W", "-1", "-m", 8)):
        rc, summary, out = loadgen(k.port, "-N", 60, "-n", 10, *args)
        assert rc == 0 and summary["status"] == {"204": 60}, out
    assert st.count("sora_report") == 120


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_soak_memory_stays_flat(kohaku):
    """A bounded 60-second soak at a steady rate: the daemon's memory after the first third
    stays within a small margin of what it reached then (no growth per report)."""
    k = kohaku
    samples = []
    result = {}
    t = threading.Thread(target=lambda: result.update(lg=loadgen(
        k.port, "-d", 60, "-r", 600, "-c", 5, "-m", 16, "-n", 500, timeout=120)))
    t.start()
    while t.is_alive():
        samples.append(rss_kib(k.proc.pid))
        time.sleep(2)  # the sampling period of the soak, not a wait for anything
    t.join()
    rc, summary, out = result["lg"]
    assert rc == 0, out
    # the load was applied: most of its 36,000 reports answered (the rate is the soak's load,
    # not a speed target; a shared machine may fall short of it)
    assert summary["status"]["204"] >= 600 * 40
    third = max(1, len(samples) // 3)
    early, late = max(samples[:third]), max(samples[-third:])
    # an ASan build's RSS holds its quarantine of freed memory (256 MiB), which fills and
    # churns with the allocation pattern (in one run 358 -> 427 MiB): there the bound is the
    # quarantine, and its leak check at exit is what finds memory kept per report
    margin = 256 << 10 if sanitizer_build() else early * 0.15 + 4096
    assert late <= early + margin, f"RSS grew from {early} to {late} KiB: {samples}"

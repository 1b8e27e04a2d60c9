"""/metrics (issue: durable spool, crash recovery, metrics and operations): Prometheus text
on exporter_listen_addr:exporter_listen_port whose counters match what a test sent and
stored, and whose labels never carry a connection or channel id."""
import urllib.error
import urllib.request

import pytest

from helpers import (STATS_TABLES, CurlError, fixture_files, load_fixture, loadgen,
                     make_envelope, post_h2)


@pytest.mark.storage("sqlite")
def test_metrics_match_what_was_sent_and_stored(db, kohaku_factory, tmp_path):
    st = db
    k = kohaku_factory(max_body_bytes=65536)
    acked = tmp_path / "acked.txt"
    rc, summary, out = loadgen(k.port, "-N", 200, "-n", 40, "-c", 2, "-m", 8,
                               "-a", str(acked))
    assert rc == 0, out
    for _ in range(3):
        assert post_h2(k.port, b'{"type": 1}').status == 400
    big = make_envelope(load_fixture(fixture_files()[0]) * 20)
    try:  # curl may see the stream reset before it has sent the whole body
        assert post_h2(k.port, big).status == 413
    except CurlError as e:
        assert e.returncode == 92  # HTTP/2 stream error: the reset after the 413
    m = k.metrics()

    def val(name, **labels):
        return m.get((name, frozenset(labels.items())), 0)

    assert val("kohaku_http_requests_total", route="collector", protocol="h2",
               status="204") == 200
    assert val("kohaku_http_requests_total", route="collector", protocol="h2",
               status="400") == 3
    assert val("kohaku_reports_stored_total", kind="connection") == 200
    assert st.count("sora_report") == 200
    for table in STATS_TABLES:
        assert val("kohaku_rows_stored_total", table=table) == st.count(table), table
    assert val("kohaku_reports_rejected_total", reason="invalid") == 3
    assert val("kohaku_reports_rejected_total", reason="too_large") == 1
    assert val("kohaku_batch_reports_count") >= 1
    assert val("kohaku_batch_reports_sum") == 200
    assert val("kohaku_batch_commit_seconds_count") == val("kohaku_batch_reports_count")
    assert val("kohaku_storage_up") == 1
    assert val("kohaku_process_resident_memory_bytes") > 1e6
    assert val("kohaku_process_open_fds") > 3
    assert ("kohaku_connections", frozenset({("protocol", "h2")})) in m
    ids = {l.split()[1] for l in acked.read_text().splitlines()}
    ids |= {c for (c,) in st.query("SELECT channel_id FROM sora_connection")}
    for (_, labels) in m:
        assert not any(v in ids for _, v in labels)
    # /metrics lives on the metrics listener only
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{k.port}/metrics", timeout=5)
        raise AssertionError("/metrics answered on the stats port")
    except urllib.error.HTTPError as e:
        assert e.code == 404

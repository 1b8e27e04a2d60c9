"""Gateway core end to end (issue: Sora stats over HTTP/2 and HTTP/1.1 into storage): the
real daemon on 127.0.0.1 with a generated config, driven by curl, h2load, python3-h2 and
kohaku-loadgen. Ingest tests run on SQLite and on PostgreSQL."""
import json
import os
import re
import signal
import socket
import subprocess
import threading

import pytest

from helpers import (KOHAKU_BIN, REPO_ROOT, CurlError, all_counts, fixture_files, load_fixture,
                     loadgen, make_envelope, need_tool, post_h2, sora_id, table_for, wait_until)


def curl(*args, data=None):
    need_tool("curl")
    out = subprocess.run(["curl", "-s", "-S", "-o", "-", "-w", "\n%{http_code}", *args],
                         input=data, capture_output=True, timeout=60)
    text, _, code = out.stdout.decode().rpartition("\n")
    return int(code), text


# --- storage of real browser reports --------------------------------------------------------

@pytest.mark.storage("sqlite", "postgres")
def test_every_fixture_stored_with_its_values(db, kohaku):
    k = kohaku
    for path in fixture_files():
        stats = load_fixture(path)
        # two members no schema has: they must come back from `extra`
        stats[0] = dict(stats[0], fooFutureMetric=12.5, barVendorNote='say "hi"')
        env = make_envelope(stats)
        r = post_h2(k.port, env)
        assert r.status == 204, (path, r.text)
        cid = env["connection_id"]
        for table in {table_for(o) for o in stats}:
            want = sum(1 for o in stats if table_for(o) == table)
            assert db.count(table, "connection_id = ?", (cid,)) == want, (path, table)
        row = db.query(f'SELECT extra FROM "{table_for(stats[0])}" WHERE connection_id = ? '
                       "AND stats_id = ?", (cid, stats[0]["id"]))[0][0]
        extra = row if isinstance(row, dict) else json.loads(row)
        assert extra == {"fooFutureMetric": 12.5, "barVendorNote": 'say "hi"'}
        for obj in stats:
            if obj["type"] == "inbound-rtp":
                got = db.query("SELECT bytes_received, jitter, kind FROM "
                               "rtc_inbound_rtp_stream_stats WHERE connection_id = ? AND "
                               "stats_id = ?", (cid, obj["id"]))[0]
                assert (got[0], got[1], got[2]) == (obj["bytesReceived"], obj["jitter"],
                                                    obj["kind"])
            if obj["type"] == "codec":
                got = db.query("SELECT mime_type, clock_rate FROM rtc_codec_stats WHERE "
                               "connection_id = ? AND stats_id = ?", (cid, obj["id"]))[0]
                assert tuple(got) == (obj["mimeType"], obj["clockRate"])
            if "qualityLimitationDurations" in obj:
                got = db.query("SELECT quality_limitation_durations, stats_timestamp FROM "
                               "rtc_outbound_rtp_stream_stats WHERE connection_id = ? AND "
                               "stats_id = ?", (cid, obj["id"]))[0]
                qld = got[0] if isinstance(got[0], dict) else json.loads(got[0])
                assert qld == obj["qualityLimitationDurations"]
                assert got[1] == obj["timestamp"]
        conn = db.query("SELECT channel_id, client_id, role, multistream, simulcast FROM "
                        "sora_connection WHERE connection_id = ?", (cid,))
        client = env["client_id"]
        assert [tuple(conn[0])] == [(env["channel_id"], client, "sendrecv", True, False)] or \
            [tuple(conn[0])] == [(env["channel_id"], client, "sendrecv", 1, 0)]


@pytest.mark.storage("sqlite", "postgres")
def test_same_report_twice_stores_nothing_new(db, kohaku):
    k = kohaku
    env = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(k.port, env).status == 204
    before = all_counts(db)
    assert post_h2(k.port, env).status == 204
    assert all_counts(db) == before


@pytest.mark.storage("sqlite", "postgres")
def test_node_erlang_vm_stored(db, kohaku):
    k = kohaku
    mem = {"type": "erlang-vm-memory", "total": 123456789, "processes": 1000, "processes_used":
           900, "system": 5000, "atom": 10, "atom_used": 9, "binary": 77, "code": 88, "ets": 99}
    body = {"type": "node.erlang-vm", "id": sora_id(), "timestamp": "2026-11-24T06:15:42.5Z",
            "label": "WebRTC SFU Sora", "version": "2024.1.0", "node_name": "sora@10.0.0.5",
            "stats": [mem]}
    r = post_h2(k.port, body, exporter_type="node.erlang-vm")
    assert r.status == 204, r.text
    row = db.query('SELECT total, processes, processes_used, system, atom, atom_used, '
                   '"binary", code, ets, label FROM erlang_vm_memory_stats WHERE node_name = ?',
                   ("sora@10.0.0.5",))
    assert [tuple(row[0])] == [(123456789, 1000, 900, 5000, 10, 9, 77, 88, 99, "WebRTC SFU Sora")]
    assert db.count("sora_node", "node_name = ?", ("sora@10.0.0.5",)) == 1


# --- refusals ---------------------------------------------------------------------------------

def base():
    return make_envelope(load_fixture(fixture_files()[0])[:3])


def drop(key):
    env = base()
    del env[key]
    return env


BROKEN = [
    ("type", drop("type"), "type: required"),
    ("timestamp", drop("timestamp"), "timestamp: required"),
    ("timestamp-format", dict(base(), timestamp="2026-11-24 06:15:42"), "timestamp: must be RFC 3339"),
    ("timestamp-no-fraction", dict(base(), timestamp="2026-11-24T06:15:42Z"), "timestamp:"),
    ("timestamp-not-utc", dict(base(), timestamp="2026-11-24T06:15:42.1+09:00"), "timestamp: must be UTC"),
    ("label", drop("label"), "label: required"),
    ("label-empty", dict(base(), label=""), "label: must not be empty"),
    ("version", drop("version"), "version: required"),
    ("node_name", drop("node_name"), "node_name: required"),
    ("multistream", drop("multistream"), "multistream: required"),
    ("multistream-null", dict(base(), multistream=None), "multistream: must be a boolean, got null"),
    ("simulcast-string", dict(base(), simulcast="false"), "simulcast: must be a boolean, got string"),
    ("spotlight", drop("spotlight"), "spotlight: required"),
    ("role", dict(base(), role="both"), "role: must be sendrecv, sendonly or recvonly"),
    ("role-missing", drop("role"), "role: required"),
    ("channel_id-empty", dict(base(), channel_id=""), "channel_id: must not be empty"),
    ("channel_id-256", dict(base(), channel_id="c" * 256), "channel_id: must be 1..255 bytes, got 256"),
    ("channel_id-number", dict(base(), channel_id=5), "channel_id: must be a string, got number"),
    ("client_id", drop("client_id"), "client_id: required"),
    ("session_id-25", dict(base(), session_id="A" * 25), "session_id: must be 26 characters, got 25"),
    ("connection_id-27", dict(base(), connection_id="A" * 27), "connection_id: must be 26 characters, got 27"),
    ("connection_id", drop("connection_id"), "connection_id: required"),
    ("stats", drop("stats"), "stats: required"),
    ("stats-object", dict(base(), stats={}), "stats: must be an array, got object"),
    ("stats-item", dict(base(), stats=[{"id": "a", "type": "codec", "timestamp": 1}, "x"]),
     "stats[1]: must be an object, got string"),
    ("stats-type", dict(base(), stats=[{"id": "a", "timestamp": 1}]), "stats[0].type: required"),
    ("stats-id", dict(base(), stats=[{"type": "codec", "timestamp": 1}]), "stats[0].id: required"),
    ("stats-ts", dict(base(), stats=[{"type": "codec", "id": "a", "timestamp": "1"}]),
     "stats[0].timestamp: must be a number, got string"),
    ("nul", dict(base(), client_id="a\u0000b"), "client_id: must not contain \\u0000"),
]


@pytest.mark.parametrize("name,env,message", BROKEN, ids=[b[0] for b in BROKEN])
@pytest.mark.storage("sqlite")
def test_each_envelope_rule_refused(name, env, message, db, kohaku):
    st, k = db, kohaku
    before = all_counts(st)
    r = post_h2(k.port, env)
    assert r.status == 400, r.text
    assert json.loads(r.text)["message"].startswith(message), r.text
    assert all_counts(st) == before


@pytest.mark.parametrize("body,message", [
    (b'{"type": "connection.user-agent", "label": ', "body: truncated JSON"),
    (b'{"type": connection}', "body: malformed JSON"),
    (b'', "body: empty"),
    (b'[1, 2]', "body: must be a JSON object"),
    (b'{"type": "\xff\xfe"}', "body: malformed JSON"),
])
@pytest.mark.storage("sqlite")
def test_malformed_bodies_refused(body, message, db, kohaku):
    st, k = db, kohaku
    r = post_h2(k.port, body)
    assert r.status == 400, r.text
    assert json.loads(r.text)["message"].startswith(message), r.text
    assert all_counts(st)["sora_report"] == 0


def test_exporter_type_header(kohaku):
    k = kohaku
    env = base()
    r = post_h2(k.port, env, exporter_type=None)
    assert r.status == 400 and "x-sora-stats-exporter-type: required" in r.text
    r = post_h2(k.port, env, exporter_type="connection.foo")
    assert r.status == 400 and "x-sora-stats-exporter-type: must be" in r.text


def test_http1_collector_and_h2c_upgrade_refused(kohaku):
    k = kohaku
    body = json.dumps(base()).encode()
    code, text = curl("--http1.1", "-H", "x-sora-stats-exporter-type: connection.user-agent",
                      "--data-binary", "@-", f"http://127.0.0.1:{k.port}/collector", data=body)
    assert code == 400 and "HTTP/2" in json.loads(text)["message"]
    code, text = curl("--http2", f"http://127.0.0.1:{k.port}/.ok")  # h2c upgrade attempt
    assert code == 400 and json.loads(text)["message"].startswith("upgrade:")


@pytest.mark.storage("sqlite")
def test_oversize_body_413(db, kohaku_factory):
    st = db
    k = kohaku_factory(max_body_bytes=4096)
    try:
        r = post_h2(k.port, make_envelope(load_fixture(fixture_files()[0])))
        assert r.status == 413, r
    except CurlError as e:
        # the 413 comes at the headers, with RST_STREAM(NO_ERROR) after it; curl reports
        # that as a stream error (92) when it had body left to send
        assert e.returncode == 92
        k.wait_log('"status":413')
    assert all_counts(st)["sora_report"] == 0
    # without content-length the limit is enforced while the body streams (python3-h2)
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", k.port))
    c = h2.connection.H2Connection()
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":path", "/collector"), (":scheme", "http"),
                       (":authority", "x"), ("x-sora-stats-exporter-type",
                                             "connection.user-agent")])
    s.sendall(c.data_to_send())
    status = None
    for _ in range(20):
        try:
            c.send_data(1, b" " * 1000)
            s.sendall(c.data_to_send())
        except Exception:
            break
    s.settimeout(5)
    while status is None:
        for ev in c.receive_data(s.recv(65536)):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"]
        s.sendall(c.data_to_send())
    s.close()
    assert status == b"413"


def test_health_and_routes(kohaku):
    k = kohaku
    url = f"http://127.0.0.1:{k.port}"
    assert curl("--http1.1", f"{url}/.ok")[0] == 204
    assert curl("--http2-prior-knowledge", f"{url}/.ok")[0] == 204
    assert curl("--http1.1", "-X", "POST", f"{url}/health")[0] == 204
    assert curl("--http2-prior-knowledge", "-X", "POST", f"{url}/health")[0] == 204
    assert curl("--http2-prior-knowledge", f"{url}/nope")[0] == 404
    assert curl("--http2-prior-knowledge", f"{url}/collector")[0] == 405
    # HTTP/1.1 keep-alive: three requests on one connection, answered in order
    s = socket.create_connection(("127.0.0.1", k.port))
    s.sendall(b"GET /.ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /health HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 0\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    s.settimeout(5)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    codes = re.findall(rb"HTTP/1.1 (\d+)", data)
    assert codes == [b"204", b"204", b"404"]
    k.wait_log('"path":"/nope"')
    access = [l for l in k.log_lines() if l.get("msg") == "access"]
    assert {"h1", "h2"} <= {l["proto"] for l in access}
    assert all({"method", "path", "status", "peer", "usec"} <= set(l) for l in access)


@pytest.mark.storage("sqlite", "postgres")
def test_h2load_concurrent_streams(db, kohaku, tmp_path):
    """2,000 posts over 4 connections x 32 streams: all 204; the identical body is stored
    once. Then 3,000 distinct reports from the load generator: row counts are exact."""
    need_tool("h2load")
    k = kohaku
    env = make_envelope(load_fixture(fixture_files()[0]))
    body = tmp_path / "body.json"
    body.write_text(json.dumps(env))
    out = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "32", "-d", str(body),
                          "-H", "x-sora-stats-exporter-type: connection.user-agent",
                          f"http://127.0.0.1:{k.port}/collector"],
                         capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx", out), out
    assert db.count("sora_report") == 1
    assert db.count("rtc_transport_stats") == sum(
        1 for o in env["stats"] if o["type"] == "transport")
    acked = tmp_path / "acked.txt"
    rc, summary, text = loadgen(k.port, "-N", 3000, "-c", 4, "-m", 32, "-n", 300,
                                "-a", str(acked))
    assert rc == 0, text
    assert summary["status"] == {"204": 3000}
    assert db.count("sora_report") == 3001
    assert db.count("sora_connection") == 301
    stored = db.query("SELECT sum(stats_count) FROM sora_report")[0][0]
    total = sum(db.count(t) for t in all_counts(db) if t.startswith("rtc_"))
    # the unchanged codec, certificate and candidate objects of a connection's later reports
    # are not written again (dedup): every object is either a row or counted as skipped
    skipped = k.metric("kohaku_dedup_rows_total", result="skipped")
    assert skipped > 0
    assert total + skipped == stored


@pytest.mark.storage("sqlite", "postgres")
def test_sigterm_under_load_loses_nothing(db, kohaku_factory, tmp_path):
    """SIGTERM while reports stream in: exit 0, and every report that got 204 is stored."""
    k = kohaku_factory(shutdown_timeout=30)  # kohaku's default
    acked = tmp_path / "acked.txt"
    result = {}
    t = threading.Thread(target=lambda: result.update(lg=loadgen(
        k.port, "-d", 10, "-r", 2000, "-c", 4, "-m", 16, "-n", 200, "-a", str(acked),
        "-A", "204,503")))
    t.start()
    # SIGTERM once the load is well under way: a thousand reports answered
    wait_until(lambda: k.metric("kohaku_http_requests_total", route="collector", protocol="h2",
                                status="204") >= 1000, 60, message="1,000 reports answered 204")
    rc = k.stop(signal.SIGTERM, timeout=60)
    t.join()
    assert rc == 0, k.log_text()[-3000:]
    assert '"msg":"shutting down"' in k.log_text()
    ids = [l.split()[0] for l in acked.read_text().splitlines()]
    assert len(ids) > 100
    stored = {r for (r,) in db.query("SELECT report_id FROM sora_report")}
    assert not [i for i in ids if i not in stored]


# --- command line and config --------------------------------------------------------------------

def test_cli_version_help_and_config_errors(tmp_path):
    out = subprocess.run([KOHAKU_BIN, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and re.match(r"kohaku \d+\.\d+\.\d+", out.stdout)
    out = subprocess.run([KOHAKU_BIN, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "http2_max_concurrent_streams" in out.stdout
    cfg = tmp_path / "bad.ini"
    cfg.write_text("listen_addr = 127.0.0.1\nno_such_key = 1\n")
    out = subprocess.run([KOHAKU_BIN, "-C", str(cfg)], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0 and f"{cfg}:2: unknown key 'no_such_key'" in out.stderr
    cfg.write_text("# comment\nlisten_port = 99999\n")
    out = subprocess.run([KOHAKU_BIN, "-C", str(cfg)], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0 and f"{cfg}:2: listen_port: must be between 1 and 65535" in out.stderr
    out = subprocess.run([KOHAKU_BIN, "-C", str(tmp_path / "missing.ini")],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode != 0 and "cannot open" in out.stderr


def test_config_example_is_current():
    """config.example.ini is what `kohaku --config-example` prints (every key documented)."""
    out = subprocess.run([KOHAKU_BIN, "--config-example"], capture_output=True, text=True)
    with open(os.path.join(REPO_ROOT, "config.example.ini")) as f:
        assert f.read() == out.stdout

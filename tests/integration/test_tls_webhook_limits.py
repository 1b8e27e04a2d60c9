"""TLS and mTLS, the stats webhook, and hostile input (issue: TLS and mTLS, the Sora stats
webhook, and hostile input). Certificates are made at test time with the openssl CLI; hostile
peers are scripted with python3-h2's frame layer (hyperframe, hpack) and raw sockets."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from helpers import (CurlError, Kohaku, all_counts, fixture_files, load_fixture, make_cert,
                     make_envelope, make_pki, need_tool, post_h2, sora_id, wait_until)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# --- certificates -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def tls_settings(pki, store, mtls=False):
    s = dict(store.settings(), https="true",
             tls_fullchain_file=os.path.join(pki, "fullchain.pem"),
             tls_privkey_file=os.path.join(pki, "server.key"))
    if mtls:
        s["tls_verify_cacert_path"] = os.path.join(pki, "ca.crt")
    return s


def curl_tls(k, pki, *args, path="/collector", cert=None, data=None):
    need_tool("curl")
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code} %{http_version}", "--cacert",
           os.path.join(pki, "ca.crt"), *args]
    if cert:
        cmd += ["--cert", os.path.join(pki, f"{cert}.crt"), "--key",
                os.path.join(pki, f"{cert}.key")]
    cmd.append(f"https://127.0.0.1:{k.port}{path}")
    out = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
    if out.returncode != 0:
        return None, None, out.returncode
    text, _, tail = out.stdout.decode().rpartition("\n")
    code, version = tail.split()
    return int(code), version, text


def report_body():
    return json.dumps(make_envelope(load_fixture(fixture_files()[0]))).encode()


EXPORTER = ("-H", "x-sora-stats-exporter-type: connection.user-agent")


@pytest.mark.storage("sqlite")
def test_tls_h2_and_http1(pki, db, kohaku_factory, tmp_path):
    st = db
    k = kohaku_factory(tls_settings(pki, st))
    code, version, text = curl_tls(k, pki, "--http2", *EXPORTER, "--data-binary", "@-",
                                   data=report_body())
    assert (code, version) == (204, "2"), text
    code, version, _ = curl_tls(k, pki, "--http1.1", path="/.ok")
    assert (code, version) == (204, "1.1")
    env = make_envelope(load_fixture(fixture_files()[1]), type="connection.rtc")
    del env["multistream"]
    code, version, text = curl_tls(k, pki, "--http1.1", "-H", "sora-stats-webhook-type: "
                                   "connection.rtc", "--data-binary", "@-",
                                   path="/webhook/stats", data=json.dumps(env).encode())
    assert (code, version) == (204, "1.1"), text
    assert st.count("sora_report") == 2
    for proto, want in (("h2", "h2"), ("http/1.1", "http/1.1")):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{k.port}",
                              "-alpn", proto, "-CAfile", os.path.join(pki, "ca.crt")],
                             input=b"", capture_output=True, timeout=30).stdout.decode()
        assert f"ALPN protocol: {want}" in out


@pytest.mark.storage("sqlite")
def test_mtls(pki, db, kohaku_factory, tmp_path):
    st = db
    k = kohaku_factory(tls_settings(pki, st, mtls=True))
    code, _, text = curl_tls(k, pki, "--http2", *EXPORTER, "--data-binary", "@-",
                             cert="client", data=report_body())
    assert code == 204, text
    before = all_counts(st)
    for cert in (None, "stranger"):
        code, _, rc = curl_tls(k, pki, "--http2", *EXPORTER, "--data-binary", "@-", cert=cert,
                               data=report_body())
        assert code is None and rc != 0, f"{cert}: the handshake should fail"
    assert all_counts(st) == before
    k.wait_log('"client":"/CN=sora-node-1/O=Sora"')
    k.wait_log("peer did not return a certificate")
    k.wait_log("certificate verify failed")


@pytest.mark.storage("sqlite")
def test_ca_directory_must_hold_only_certificates(pki, db, tmp_path):
    cas = tmp_path / "cas"
    cas.mkdir()
    shutil.copy(os.path.join(pki, "ca.crt"), cas / "ca.pem")
    shutil.copy(os.path.join(pki, "otherca.crt"), cas / "other.pem")
    st = db
    settings = dict(tls_settings(pki, st), tls_verify_cacert_path=str(cas))
    k = Kohaku(settings).start()  # a directory of certificates is fine
    assert k.close() == 0
    (cas / "notes.txt").write_text("not a certificate\n")
    k = Kohaku(settings).start(wait=False)
    rc = k.proc.wait(20)
    assert rc != 0
    assert "notes.txt holds no PEM certificate" in k.log_text()


@pytest.mark.storage("sqlite")
def test_sighup_reloads_certificates(pki, db, kohaku_factory, tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    for f in ("fullchain.pem", "server.key"):
        shutil.copy(os.path.join(pki, f), d / f)
    st = db
    settings = dict(tls_settings(pki, st), tls_fullchain_file=str(d / "fullchain.pem"),
                    tls_privkey_file=str(d / "server.key"), exporter_https="true")
    k = kohaku_factory(settings)

    def served_subject(port=None):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port or k.port}"],
                             input=b"", capture_output=True, timeout=30).stdout.decode()
        return re.search(r"subject=(.*)", out).group(1)

    assert "127.0.0.1" in served_subject()
    assert "127.0.0.1" in served_subject(k.metrics_port)  # the metrics listener's own TLS
    # an open HTTP/1.1 connection survives the reload
    s = socket.create_connection(("127.0.0.1", k.port))
    import ssl
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    ctx.set_alpn_protocols(["http/1.1"])
    tls = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    for f in ("ca.crt", "ca.key"):
        shutil.copy(os.path.join(pki, f), d / f)
    make_cert(str(d), "renewed", "ca", "/CN=localhost", server=True)
    with open(d / "fullchain.pem", "w") as out:
        out.write((d / "renewed.crt").read_text() + open(os.path.join(pki, "ca.crt")).read())
    shutil.copy(d / "renewed.key", d / "server.key")
    k.proc.send_signal(signal.SIGHUP)
    k.wait_log("reloaded: tls certificates")
    assert "localhost" in served_subject()
    assert "localhost" in served_subject(k.metrics_port)
    tls.sendall(b"GET /.ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert tls.recv(4096).startswith(b"HTTP/1.1 204")
    tls.close()
    # broken files on the next reload: the certificates in use stay
    (d / "fullchain.pem").write_text("not a certificate\n")
    k.proc.send_signal(signal.SIGHUP)
    k.wait_log("reload failed; keeping the previous certificates")
    assert "localhost" in served_subject()
    assert "localhost" in served_subject(k.metrics_port)


# --- the stats webhook -------------------------------------------------------------------------

@pytest.mark.storage("sqlite")
def test_webhook_http1_keepalive_and_h2_rows_match_exporter(db, kohaku_factory, tmp_path):
    st = db
    k = kohaku_factory()
    stats = load_fixture(fixture_files()[0])
    exporter = make_envelope(stats)
    assert post_h2(k.port, exporter).status == 204
    hooks = []
    for _ in range(3):
        env = make_envelope(stats, type="connection.rtc", bundle_id=sora_id())
        del env["multistream"]
        hooks.append(env)
    s = socket.create_connection(("127.0.0.1", k.port))
    for env in hooks:  # one keep-alive connection, several reports
        body = json.dumps(env).encode()
        s.sendall(b"POST /webhook/stats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"sora-stats-webhook-type: connection.rtc\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 204"), head
    s.close()
    # an invalid report on a keep-alive connection is answered 400 and the connection goes
    # on (found by the HTTP/1.1 fuzz target: the answer came from inside the parser)
    s = socket.create_connection(("127.0.0.1", k.port))
    for body in (b'{"a":1}', json.dumps(hooks[0]).encode()):
        s.sendall(b"POST /webhook/stats HTTP/1.1\r\nHost: x\r\n"
                  b"sora-stats-webhook-type: connection.rtc\r\nTransfer-Encoding: chunked\r\n"
                  b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 400" if body == b'{"a":1}' else b"HTTP/1.1 204"), head
    s.close()
    h2env = make_envelope(stats, type="connection.rtc")
    r = post_h2(k.port, h2env, exporter_type=None, path="/webhook/stats",
                headers=["sora-stats-webhook-type: connection.rtc"])
    assert r.status == 204, r.text
    r = post_h2(k.port, h2env, exporter_type=None, path="/webhook/stats")
    assert r.status == 400 and "sora-stats-webhook-type: required" in r.text

    def rows(cid):
        return sorted(st.query("SELECT stats_id, stats_type, stats_timestamp, bytes_sent, "
                               "packets_sent, extra FROM rtc_transport_stats WHERE "
                               "connection_id = ?", (cid,)) +
                      st.query("SELECT stats_id, stats_type, stats_timestamp, mime_type, "
                               "clock_rate, extra FROM rtc_codec_stats WHERE connection_id = ?",
                               (cid,)))
    want = rows(exporter["connection_id"])
    assert want
    for env in hooks + [h2env]:
        assert rows(env["connection_id"]) == want
    assert st.query("SELECT bundle_id FROM sora_connection WHERE connection_id = ?",
                    (hooks[0]["connection_id"],))[0][0] == hooks[0]["bundle_id"]


# --- limits and hostile peers -------------------------------------------------------------------

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def h2_conn(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    return s


def read_frames(s, seconds=3):
    s.settimeout(seconds)
    data, closed, end = b"", False, time.time() + seconds
    try:
        while time.time() < end:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    frames, i = [], 0
    while i + 9 <= len(data):
        f, n = Frame.parse_frame_header(memoryview(data[i:i + 9]))
        f.parse_body(memoryview(data[i + 9:i + 9 + n]))
        frames.append(f)
        i += 9 + n
    return frames, closed


HEADERS = [(":method", "POST"), (":path", "/collector"), (":scheme", "http"),
           (":authority", "x"), ("x-sora-stats-exporter-type", "connection.user-agent")]


def abuse(case):
    enc = hpack.Encoder()
    if case == "ping-flood":
        return b"".join(PingFrame(0, opaque_data=b"12345678").serialize() for _ in range(5000))
    if case == "settings-flood":
        return b"".join(SettingsFrame(0, settings={4: 65535}).serialize() for _ in range(5000))
    if case == "rapid-reset":
        blk = enc.encode(HEADERS)
        return b"".join(HeadersFrame(i, blk, flags=["END_HEADERS"]).serialize() +
                        RstStreamFrame(i, error_code=8).serialize()
                        for i in range(1, 6000, 2))
    if case == "continuation-flood":
        return HeadersFrame(1, enc.encode(HEADERS)[:5]).serialize() + b"".join(
            ContinuationFrame(1, b"\x00").serialize() for _ in range(20000))
    if case == "data-past-content-length":
        return (HeadersFrame(1, enc.encode(HEADERS + [("content-length", "10")]),
                             flags=["END_HEADERS"]).serialize() +
                DataFrame(1, b"x" * 100, flags=["END_STREAM"]).serialize())
    if case == "window-overflow":
        return b"".join(WindowUpdateFrame(0, window_increment=2**31 - 1).serialize()
                        for _ in range(2))
    raise ValueError(case)


@pytest.mark.parametrize("case", ["ping-flood", "settings-flood", "rapid-reset",
                                  "continuation-flood", "data-past-content-length",
                                  "window-overflow"])
def test_http2_abuse_closes_only_that_connection(case, kohaku_factory, tmp_path):
    k = kohaku_factory()
    bystander = h2_conn(k.port)
    read_frames(bystander, 0.3)
    rss0 = rss_kib(k.proc.pid)
    for _ in range(3):
        s = h2_conn(k.port)
        try:
            s.sendall(abuse(case))
        except (BrokenPipeError, ConnectionResetError):
            pass
        frames, closed = read_frames(s, 5)
        assert closed, f"{case}: connection left open"
        s.close()
    # the well-behaved connection that was open all along still works
    bystander.sendall(HeadersFrame(1, hpack.Encoder().encode(
        [(":method", "GET"), (":path", "/.ok"), (":scheme", "http"), (":authority", "x")]),
        flags=["END_HEADERS", "END_STREAM"]).serialize())
    frames, _ = read_frames(bystander, 1)
    assert any(isinstance(f, HeadersFrame) for f in frames)
    bystander.close()
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204
    assert rss_kib(k.proc.pid) < rss0 + 32 * 1024


def test_header_limits(kohaku_factory, tmp_path):
    k = kohaku_factory(max_headers=16, max_header_bytes=2048)
    many = [f"x-h{i}: v" for i in range(40)]
    r = post_h2(k.port, b"{}", headers=many)
    assert r.status == 431, r.text
    s = socket.create_connection(("127.0.0.1", k.port))
    s.sendall(b"GET /.ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 431")
    s.close()
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204


def test_slow_clients_are_timed_out(kohaku_factory, tmp_path):
    k = kohaku_factory(request_header_timeout=1, request_body_timeout=2)
    # HTTP/1.1 headers that never finish: 408 and closed
    slow = socket.create_connection(("127.0.0.1", k.port))
    slow.sendall(b"POST /webhook/stats HTTP/1.1\r\nHost: x\r\n")
    # an HTTP/2 body that never finishes: 408
    h2s = h2_conn(k.port)
    h2s.sendall(HeadersFrame(1, hpack.Encoder().encode(HEADERS), flags=["END_HEADERS"])
                .serialize() + DataFrame(1, b'{"type"').serialize())
    # a connection that never says anything
    silent = socket.create_connection(("127.0.0.1", k.port))
    t0 = time.time()
    slow.settimeout(10)
    head = slow.recv(4096)
    assert head.startswith(b"HTTP/1.1 408"), head
    # the stream's 408 (the connection stays open): read until it is there
    data, statuses, frames = b"", [], []
    h2s.settimeout(0.5)
    while "408" not in statuses and time.time() - t0 < 10:
        try:
            chunk = h2s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
        frames, i = [], 0
        while i + 9 <= len(data):
            f, n = Frame.parse_frame_header(memoryview(data[i:i + 9]))
            if i + 9 + n > len(data):
                break  # the rest of this frame is still on its way
            f.parse_body(memoryview(data[i + 9:i + 9 + n]))
            frames.append(f)
            i += 9 + n
        statuses = [dict(hpack.Decoder().decode(f.data)).get(":status") for f in frames
                    if isinstance(f, HeadersFrame)]
    assert "408" in statuses, frames
    silent.settimeout(10)
    assert silent.recv(10) == b""
    # timeouts of 1 and 2 s, checked by a once-a-second sweep: all three well within 6 s
    assert time.time() - t0 < 6
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204


def test_max_connections(kohaku_factory, tmp_path):
    k = kohaku_factory(max_connections=3)
    # the readiness probe's connection must be gone first: it would count
    wait_until(lambda: k.metric("kohaku_connections", protocol="h1") +
               k.metric("kohaku_connections", protocol="h2") == 0, 10,
               message="the readiness probe's connection closed")
    held = []
    for _ in range(3):  # each answered once, so each is surely counted
        s = socket.create_connection(("127.0.0.1", k.port))
        s.sendall(b"GET /.ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 204")
        held.append(s)
    extra = socket.create_connection(("127.0.0.1", k.port))
    extra.settimeout(5)
    try:
        assert extra.recv(10) == b""  # closed at once
    except ConnectionResetError:
        pass
    k.wait_log("max_connections reached")
    for s in held:
        s.close()
    def accepted_again():
        try:
            return post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status
        except CurlError:
            return None

    assert wait_until(accepted_again, 5, interval=0.1,
                      message="kohaku accepting again after connections closed") == 204


@pytest.mark.storage("sqlite")
def test_json_limits(db, kohaku_factory, tmp_path):
    st = db
    k = kohaku_factory(max_json_depth=8, max_stats_per_report=5)
    env = make_envelope([{"type": "codec", "id": str(i), "timestamp": 1} for i in range(6)])
    r = post_h2(k.port, env)
    assert r.status == 400 and "stats: more than 5 objects" in r.text
    env = make_envelope([{"type": "codec", "id": "a", "timestamp": 1,
                     "x": [[[[[[[[[1]]]]]]]]]}])
    r = post_h2(k.port, env)
    assert r.status == 400 and "nested deeper than 8" in r.text
    assert st.count("sora_report") == 0


def test_concurrent_streams_and_idle_timeout(kohaku_factory, tmp_path):
    k = kohaku_factory(http2_max_concurrent_streams=4, http2_idle_timeout=2)
    s = h2_conn(k.port)
    frames, _ = read_frames(s, 0.5)
    settings = [f for f in frames if isinstance(f, SettingsFrame) and "ACK" not in f.flags]
    assert settings and settings[0].settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS) == 4
    s.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
    enc = hpack.Encoder()
    # six streams opened and left without their bodies: past the fourth, refused
    s.sendall(b"".join(HeadersFrame(i, enc.encode(HEADERS), flags=["END_HEADERS"]).serialize()
                       for i in range(1, 13, 2)))
    frames, _ = read_frames(s, 1)
    refused = [f for f in frames if isinstance(f, (RstStreamFrame, GoAwayFrame))]
    assert refused, frames
    s.close()
    # an idle connection is closed after http2_idle_timeout
    idle = h2_conn(k.port)
    t0 = time.time()
    frames, closed = read_frames(idle, 6)
    assert closed and 1.5 < time.time() - t0 < 6
    assert any(isinstance(f, GoAwayFrame) for f in frames)
    assert post_h2(k.port, make_envelope(load_fixture(fixture_files()[0]))).status == 204


@pytest.mark.storage("sqlite")
def test_metrics_over_tls(pki, db, kohaku_factory, tmp_path):
    """exporter_https serves /metrics over TLS with the same certificate."""
    st = db
    k = kohaku_factory(dict(tls_settings(pki, st), exporter_https="true"))
    assert curl_tls(k, pki, "--http2", *EXPORTER, "--data-binary", "@-",
                    data=report_body())[0] == 204
    need_tool("curl")
    out = subprocess.run(["curl", "-s", "--cacert", os.path.join(pki, "ca.crt"),
                          f"https://127.0.0.1:{k.metrics_port}/metrics"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert 'kohaku_reports_stored_total{kind="connection"} 1' in out.stdout
    plain = subprocess.run(["curl", "-s", f"http://127.0.0.1:{k.metrics_port}/metrics"],
                           capture_output=True, text=True, timeout=30)
    assert "kohaku_reports_stored_total" not in plain.stdout

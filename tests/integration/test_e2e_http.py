"""The HTTP surface: health endpoints over both protocols, routing (404/405), HTTP/1.1
keep-alive, the collector path setting, and the JSON access log (without bodies)."""
import http.client
import json
import re
import subprocess

import pytest

from helpers import (curl, fixture_envelope, fixture_files, make_envelope, need_tool, post_h2,
                     post_h2_frames, sora_id)


@pytest.mark.parametrize("proto", ["--http1.1", "--http2-prior-knowledge"])
@pytest.mark.parametrize("method,path,status", [
    ("GET", "/.ok", 204),
    ("POST", "/health", 204),
    ("GET", "/no/such/path", 404),
    ("POST", "/collectorx", 404),
])
def test_health_and_unknown_paths(proto, method, path, status, kohaku):
    r = curl(f"{kohaku.url}{path}", proto, "-X", method)
    assert r.status == status, r
    if status == 204:
        assert r.body == b""


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_on_collector_is_405(method, kohaku, db):
    before = db.count_all()
    r = curl(f"{kohaku.url}/collector", "--http2-prior-knowledge", "-X", method)
    assert r.status == 405, r
    assert db.count_all() == before


def test_http2_response_is_really_http2(kohaku):
    """curl says which protocol it got: h2 prior knowledge is answered in HTTP/2, plain
    requests in HTTP/1.1, on the same port."""
    need_tool("curl")
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          "--http2-prior-knowledge", f"{kohaku.url}/.ok"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "2 204", out
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          "--http1.1", f"{kohaku.url}/.ok"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "1.1 204", out


def test_http1_keep_alive_with_curl(kohaku):
    """curl given two URLs reuses the connection: the second transfer opens none."""
    need_tool("curl")
    url = f"{kohaku.url}/.ok"
    out = subprocess.run(["curl", "-sS", "--http1.1", "-o", "/dev/null", "-o", "/dev/null",
                          "-o", "/dev/null", "-w", "%{http_code} %{num_connects} %{local_port}\n",
                          url, url, url], capture_output=True, text=True, timeout=30)
    lines = [l.split() for l in out.stdout.splitlines()]
    assert [l[:2] for l in lines] == [["204", "1"], ["204", "0"], ["204", "0"]], out
    assert len({l[2] for l in lines}) == 1, out


def test_http1_keep_alive_with_http_client(kohaku):
    """Five requests, one TCP connection: the access log shows one peer for all of them."""
    c = http.client.HTTPConnection("127.0.0.1", kohaku.port, timeout=10)
    c.connect()
    sock = c.sock
    local = sock.getsockname()
    statuses = []
    for method, path in [("GET", "/.ok"), ("POST", "/health"), ("GET", "/nope"),
                         ("GET", "/.ok"), ("POST", "/health")]:
        c.request(method, path)
        resp = c.getresponse()
        resp.read()
        statuses.append(resp.status)
        assert c.sock is sock, "http.client had to reconnect: the connection was not kept"
    c.close()
    assert statuses == [204, 204, 404, 204, 204]
    peer = f"{local[0]}:{local[1]}"
    lines = kohaku.wait_access(lambda ls: sum(l.get("peer") == peer for l in ls) >= 5)
    mine = [l for l in lines if l.get("peer") == peer]
    assert [(l["method"], l["path"], l["status"], l["proto"]) for l in mine] == [
        ("GET", "/.ok", 204, "h1"), ("POST", "/health", 204, "h1"), ("GET", "/nope", 404, "h1"),
        ("GET", "/.ok", 204, "h1"), ("POST", "/health", 204, "h1")]


def test_access_log_lines(kohaku):
    """One JSON access line per request with method, path, proto, status and peer; every log
    line is a JSON object with time, level and msg; `listening` was logged once."""
    env = fixture_envelope(fixture_files()[0])
    assert post_h2(kohaku.port, env).status == 204
    assert curl(f"{kohaku.url}/.ok", "--http1.1").status == 204
    assert curl(f"{kohaku.url}/nope", "--http2-prior-knowledge").status == 404
    assert post_h2(kohaku.port, dict(env, role="x")).status == 400
    access = kohaku.wait_access(
        lambda ls: any(l.get("path") == "/collector" and l.get("status") == 400 for l in ls))
    got = [(l["method"], l["path"], l["proto"], l["status"]) for l in access]
    # readiness polling made its own GET /.ok requests first
    assert got[-4:] == [("POST", "/collector", "h2", 204), ("GET", "/.ok", "h1", 204),
                        ("GET", "/nope", "h2", 404), ("POST", "/collector", "h2", 400)]
    for l in access:
        assert re.fullmatch(r"127\.0\.0\.1(:\d+)?", str(l["peer"])), l
        assert isinstance(l["status"], int), l
    lines = kohaku.log_lines()
    bad = [l for l in lines if not {"time", "level", "msg"} <= set(l)]
    assert not bad, bad[:5]
    for l in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", l["time"]), l
    assert sum(1 for l in lines if l["msg"] == "listening") == 1


def test_bodies_never_logged(kohaku):
    """debug = true, and still nothing of a report body reaches the log."""
    marker = "BODYMARKER" + sora_id()
    stats = [{"type": "transport", "id": "T" + marker, "timestamp": 1795500198544.297,
              "dtlsState": marker, "someVendorNote": marker}]
    ok = make_envelope(stats)
    assert post_h2(kohaku.port, ok).status == 204
    refused = make_envelope(stats, role="bogus")
    assert post_h2(kohaku.port, refused).status == 400
    assert post_h2(kohaku.port, json.dumps(ok)[:-30]).status == 400
    kohaku.wait_access(lambda ls: sum(l.get("status") == 400 for l in ls) >= 2)
    assert marker not in kohaku.log_text()


def test_collector_path_setting(kohaku_factory, db):
    k = kohaku_factory(collector_path="/sora/stats")
    env = make_envelope([{"type": "transport", "id": "T01", "timestamp": 1.5}])
    assert post_h2(k.port, env, path="/sora/stats").status == 204
    assert db.count("rtc_transport_stats", "connection_id = ?", (env["connection_id"],)) == 1
    # a 404 may come before the body is read: see post_h2_frames
    r = post_h2_frames(k.port, make_envelope([]), path="/collector")
    assert r.status == 404, r

"""One bad report never costs Sora its connection (issue: HTTP/2 and request-level
correctness).

Sora keeps a few long-lived HTTP/2 connections to kohaku and multiplexes its reports on them;
whatever one report does wrong must cost that report only. Here one python3-h2 connection
plays Sora: 2,000 reports, 100 streams at a time, 5% of them bad in assorted ways, plaintext
and over TLS; then curl (what an operator types) checks the 413, the paths, the methods and
the refusal messages, and the access log and the metrics are checked for what they say.
"""
import json
import os
import random
import re
import socket

import pytest

from helpers import (EXPORTER_HEADER, USER_AGENT, H2Client, H2Request, body_bytes, curl,
                     fixture_files, load_fixture, make_envelope, make_erlang_vm_envelope,
                     make_pki, post_h2, sora_id, tls_client_context,
                     tls_server_settings, wait_until)

LIMIT = 256 * 1024  # max_body_bytes here, so that oversized bodies stay small
GOOD = [(EXPORTER_HEADER, USER_AGENT), ("content-type", "application/json")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def templates():
    return [load_fixture(p) for p in fixture_files()]


def good_report(templates, rng):
    return make_envelope(rng.choice(templates))


# --- the kinds of bad report, each with what kohaku must answer -------------------------------
# (name, builder(templates, rng) -> H2Request, expected status or None for no answer)

def missing_header(t, rng):
    return H2Request(good_report(t, rng), headers=[("content-type", "application/json")])


def wrong_path(t, rng):
    return H2Request(good_report(t, rng), path="/collect0r", headers=GOOD)


def wrong_method(t, rng):
    return H2Request(b"", path="/collector", headers=GOOD, method="GET")


def truncated_json(t, rng):
    raw = body_bytes(good_report(t, rng))
    return H2Request(raw[: len(raw) // 2], headers=GOOD)


def bad_envelope_field(t, rng):
    return H2Request(make_envelope(rng.choice(t), connection_id=sora_id() + "X"), headers=GOOD)


def type_mismatch(t, rng):
    return H2Request(make_erlang_vm_envelope(), headers=GOOD)


def oversized(how):
    def build(t, rng):
        env = good_report(t, rng)
        env["pad"] = "p" * (LIMIT + 1000)
        return H2Request(env, headers=GOOD, on_early_answer=how)
    return build


def oversized_streamed(t, rng):
    """No content-length: the limit is met while the body streams."""
    env = good_report(t, rng)
    env["pad"] = "p" * (LIMIT + 50000)
    return H2Request(env, headers=GOOD, content_length=False, on_early_answer="end")


def client_reset(t, rng):
    return H2Request(good_report(t, rng), headers=GOOD, reset_after=2000)


BAD_KINDS = [
    ("missing exporter-type header", missing_header, 400),
    ("wrong path", wrong_path, 404),
    ("wrong method", wrong_method, 405),
    ("truncated JSON", truncated_json, 400),
    ("bad envelope field", bad_envelope_field, 400),
    ("type contradicts the header", type_mismatch, 400),
    ("oversized, client ends its stream", oversized("end"), 413),
    ("oversized, client resets its stream", oversized("reset"), 413),
    ("oversized, client keeps sending", oversized("continue"), 413),
    ("oversized, no content-length", oversized_streamed, 413),
    ("client resets mid-body", client_reset, None),
]


def sora_mix(templates, n=2000, bad_share=0.05, seed=11):
    """n requests: good reports (some on /collector/, which is /collector) and, spread among
    them, bad_share of bad ones cycling through BAD_KINDS."""
    rng = random.Random(seed)
    bad_at = set(rng.sample(range(n), int(n * bad_share)))
    reqs, expect = [], []
    k = 0
    for i in range(n):
        if i in bad_at:
            name, build, status = BAD_KINDS[k % len(BAD_KINDS)]
            k += 1
            reqs.append(build(templates, rng))
            expect.append((name, status, None))
        else:
            env = good_report(templates, rng)
            path = "/collector/" if i % 50 == 7 else "/collector"
            reqs.append(H2Request(env, path=path, headers=GOOD))
            expect.append(("good" + (" (trailing slash)" if path.endswith("/") else ""), 204,
                           env["id"]))
    return reqs, expect


def run_sora_connection(k, db, templates, tls=None):
    reqs, expect = sora_mix(templates)
    client = H2Client(k.port, timeout=240, tls=tls)
    results = client.post_all(reqs, [], concurrency=100, ping_at_end=True)
    wrong = []
    for (name, status, _), res in zip(expect, results):
        if status is None:
            if res["outcome"] != "client_reset":
                wrong.append((name, res["outcome"], res["status"]))
        elif res["outcome"] != "response" or res["status"] != status:
            wrong.append((name, status, res["outcome"], res["status"], res["body"][:200]))
    assert not wrong, f"{len(wrong)} requests answered wrongly, e.g. {wrong[:5]}"
    # the connection carried everything and is still open and working
    assert client.goaways == [], client.goaways
    assert not client.closed
    assert client.alive_at_end, "PING after the load was not answered"
    assert "misbehaved" not in k.log_text()
    # every good report is stored, once; no bad one is
    good_ids = [rid for _, status, rid in expect if status == 204]
    assert len(good_ids) == len(expect) - 100
    stored = {r for (r,) in db.query("SELECT report_id FROM sora_report")}
    missing = [rid for rid in good_ids if rid not in stored]
    assert not missing, f"{len(missing)} acknowledged reports not stored"
    assert len(stored) == len(good_ids), "something besides the good reports was stored"
    return results


def test_one_connection_survives_bad_reports(kohaku_factory, db, templates):
    k = kohaku_factory(max_body_bytes=LIMIT, debug="false")
    run_sora_connection(k, db, templates)


def test_one_tls_connection_survives_bad_reports(kohaku_factory, db, templates, pki):
    k = kohaku_factory(max_body_bytes=LIMIT, debug="false", **tls_server_settings(pki))
    run_sora_connection(k, db, templates, tls=tls_client_context(pki))


def test_early_answer_resets_a_stream_whose_body_keeps_coming(kohaku_factory, db):
    """An answer sent before the body ended, to a client that neither ends nor resets its
    stream: kohaku resets that stream with NO_ERROR (RFC 9113 8.1) after its grace, the
    rest of the body is discarded, and the connection goes on."""
    import h2.config
    import h2.connection
    import h2.events
    k = kohaku_factory()
    s = socket.create_connection(("127.0.0.1", k.port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/collector"),
                       (":authority", "x"), ("content-length", "1000000")])  # no exporter type
    s.sendall(c.data_to_send())
    events = []
    s.settimeout(0.1)

    def pump():
        try:
            data = s.recv(65536)
        except socket.timeout:
            return
        events.extend(c.receive_data(data))
        out = c.data_to_send()
        if out:
            s.sendall(out)

    def resets():
        pump()
        try:  # keep sending, slowly, as a client that ignores the answer would
            if c.local_flow_control_window(1) > 0:
                c.send_data(1, b"x" * 1000)
                s.sendall(c.data_to_send())
        except Exception:
            pass
        return [e for e in events if isinstance(e, h2.events.StreamReset)]

    reset = wait_until(resets, 10, interval=0.05, message="RST_STREAM for the stream")
    assert reset[0].error_code == 0, reset[0]
    statuses = [dict(e.headers)[b":status"] for e in events
                if isinstance(e, h2.events.ResponseReceived)]
    assert statuses == [b"400"], statuses
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    # the same connection serves the next request
    c.send_headers(3, [(":method", "GET"), (":scheme", "http"), (":path", "/.ok"),
                       (":authority", "x")], end_stream=True)
    s.sendall(c.data_to_send())
    wait_until(lambda: pump() or any(isinstance(e, h2.events.ResponseReceived) and
                                     e.stream_id == 3 for e in events), 5)
    s.close()


# --- curl, as an operator tries it ------------------------------------------------------------

def big_body(size):
    env = make_envelope(load_fixture(fixture_files()[0]))
    env["pad"] = "p" * size
    return body_bytes(env)


def test_curl_shows_413_over_h2c(kohaku_factory, db, tmp_path):
    k = kohaku_factory()
    body = big_body(5 * 1024 * 1024)
    r = post_h2(k.port, body)
    assert r.status == 413, r
    assert r.message == f"body: {len(body)} bytes is over max_body_bytes (4194304)"
    # no content-length: the limit is met while the body streams
    r = post_h2(k.port, body, headers=["transfer-encoding: chunked"])
    assert r.status == 413, r
    m = re.fullmatch(r"body: (\d+) bytes received so far is over max_body_bytes \(4194304\)",
                     r.message)
    assert m and int(m.group(1)) > 4194304, r.message
    assert "misbehaved" not in k.log_text()


def test_curl_shows_413_over_h2(kohaku_factory, db, pki):
    k = kohaku_factory(**tls_server_settings(pki))
    body = big_body(5 * 1024 * 1024)
    r = curl(f"https://127.0.0.1:{k.port}/collector", "--http2", "--cacert",
             os.path.join(pki, "ca.crt"), "-H", f"{EXPORTER_HEADER}: {USER_AGENT}", data=body)
    assert r.status == 413, r
    assert r.message == f"body: {len(body)} bytes is over max_body_bytes (4194304)"


def test_curl_burst_of_early_answers_keeps_connections(kohaku_factory, db):
    """The issue's reproduction: 20 bodies without the exporter-type header, one curl each;
    all 400, and kohaku closes none of the connections as misbehaving."""
    k = kohaku_factory()
    body = body_bytes(make_envelope(load_fixture(fixture_files()[0])))
    for _ in range(20):
        r = post_h2(k.port, body, exporter_type=None)
        assert r.status == 400, r
        assert r.message == "x-sora-stats-exporter-type: required header"
        r = post_h2(k.port, body, path="/collector/", exporter_type=None)
        assert r.status == 400, r
    assert "misbehaved" not in k.log_text()


def test_paths_and_methods_as_kohaku_2023(kohaku_factory, db):
    k = kohaku_factory()
    env = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(k.port, env, path="/collector/").status == 204
    assert db.count("sora_report", "report_id = ?", (env["id"],)) == 1
    for proto in ("--http2-prior-knowledge", "--http1.1"):
        r = curl(f"{k.url}/collector", proto)  # GET
        assert r.status == 405, r
        assert r.headers.get("allow") == "POST", r.headers
        assert r.message == "method: GET is not allowed on this path (allowed: POST)"
        r = curl(f"{k.url}/.ok/", proto)
        assert r.status == 204, r
        r = curl(f"{k.url}/.ok", proto, "-X", "DELETE")
        assert r.status == 405 and r.headers.get("allow") == "GET, HEAD", (r, r.headers)
        r = curl(f"{k.url}/health", proto)
        assert r.status == 405 and r.headers.get("allow") == "POST", (r, r.headers)
        r = curl(f"{k.url}/nowhere", proto)
        assert r.status == 404 and "allow" not in r.headers, r


def test_body_type_must_match_header(kohaku_factory, db):
    k = kohaku_factory()
    before = db.count_all()
    r = post_h2(k.port, make_erlang_vm_envelope())
    assert r.status == 400, r
    assert r.message == ("type: 'node.erlang-vm' does not match the x-sora-stats-exporter-type "
                         "header 'connection.user-agent'")
    r = post_h2(k.port, make_envelope(load_fixture(fixture_files()[0])),
                exporter_type="node.erlang-vm")
    assert r.status == 400, r
    assert r.message.startswith("type: 'connection.user-agent' does not match"), r.message
    r = curl(f"{k.url}/webhook/stats", "--http1.1", "-H", "sora-stats-webhook-type: "
             "connection.rtc", data=make_envelope(load_fixture(fixture_files()[0])))
    assert r.status == 400, r
    assert r.message == ("type: 'connection.user-agent' does not match the "
                         "sora-stats-webhook-type header 'connection.rtc'")
    assert db.count_all() == before


def test_node_stats_of_unknown_type_are_stored(kohaku_factory, db):
    k = kohaku_factory()
    env = make_erlang_vm_envelope(stats=[
        {"type": "erlang-vm-memory", "total": 1, "processes": 2},
        {"type": "erlang-vm-statistics", "run_queue": 3, "reductions": 12345678901},
        {"type": "sora-future-thing", "nested": {"a": [1, 2]}, "name": "x"},
    ])
    r = post_h2(k.port, env, exporter_type="node.erlang-vm")
    assert r.status == 204, r
    assert db.count("erlang_vm_memory_stats", "node_name = ?", (env["node_name"],)) == 1
    rows = db.rows("node_other_stats", "node_name = ?", (env["node_name"],),
                   order_by="stats_index")
    assert [(r["stats_type"], r["stats_index"]) for r in rows] == [
        ("erlang-vm-statistics", 1), ("sora-future-thing", 2)]
    assert json.loads(rows[0]["extra"]) == {"run_queue": 3, "reductions": 12345678901}
    assert json.loads(rows[1]["extra"]) == {"nested": {"a": [1, 2]}, "name": "x"}
    assert rows[0]["label"] == env["label"]
    # stored once when delivered again
    assert post_h2(k.port, env, exporter_type="node.erlang-vm").status == 204
    assert db.count("node_other_stats", "node_name = ?", (env["node_name"],)) == 2


def test_access_line_says_why(kohaku_factory, db):
    """At info level (debug off): each refusal's access line carries the reason and, once the
    envelope got that far, the channel and connection ids. Never the body."""
    k = kohaku_factory(debug="false")
    env = make_envelope(load_fixture(fixture_files()[0]), role="listener")
    r = post_h2(k.port, env)
    assert r.status == 400 and r.message.startswith("role: "), r
    r = post_h2(k.port, make_envelope([]), exporter_type=None)
    assert r.status == 400, r
    ok = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(k.port, ok).status == 204
    # the three POSTs' lines, once the last one (the 204) is written: the readiness check's
    # GET may be among the access lines too
    lines = k.wait_access(lambda ls: any(x.get("method") == "POST" and x.get("status") == 204
                                         for x in ls))
    bad, missing, good = [x for x in lines if x.get("method") == "POST"][-3:]
    assert bad["status"] == 400 and bad["reason"] == r"role: must be sendrecv, sendonly or " \
        r"recvonly, got 'listener'", bad
    assert bad["channel_id"] == env["channel_id"]
    assert bad["connection_id"] == env["connection_id"]
    assert missing["reason"] == "x-sora-stats-exporter-type: required header", missing
    assert "connection_id" not in missing  # refused before the body was read
    assert good["status"] == 204 and "reason" not in good
    assert good["connection_id"] == ok["connection_id"]
    assert env["client_id"] not in k.log_text(), "the body reached the log"


def metrics_text(k):
    return curl(f"http://127.0.0.1:{k.settings['exporter_listen_port']}/metrics").text


def metric(k, name, **labels):
    text = metrics_text(k)
    want = name + ("{" + ",".join(f'{a}="{b}"' for a, b in labels.items()) + "}"
                   if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{want} not in /metrics")


def test_metrics_count_what_was_stored(kohaku_factory, db):
    k = kohaku_factory()
    assert re.search(r'^kohaku_build_info\{version="\d+\.\d+\.\d+[^"]*"\} 1$',
                     metrics_text(k), re.M)
    env = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(k.port, env).status == 204
    rows = metric(k, "kohaku_rows_stored_total", table="rtc_codec_stats")
    assert rows == db.count("rtc_codec_stats") > 0
    assert metric(k, "kohaku_reports_stored_total", kind="connection") == 1
    assert metric(k, "kohaku_reports_duplicate_total") == 0
    for _ in range(2):  # redelivered: acknowledged, nothing new stored
        assert post_h2(k.port, env).status == 204
    assert metric(k, "kohaku_rows_stored_total", table="rtc_codec_stats") == rows
    assert metric(k, "kohaku_reports_stored_total", kind="connection") == 1
    assert metric(k, "kohaku_reports_duplicate_total") == 2
    assert db.count("rtc_codec_stats") == rows


def test_http1_header_limit_follows_config(kohaku_factory, db):
    k = kohaku_factory(max_header_bytes=200000)

    def status(n):
        s = socket.create_connection(("127.0.0.1", k.port), timeout=10)
        s.sendall(b"GET /.ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * n + b"\r\n\r\n")
        head = s.recv(4096).split(b"\r\n")[0]
        s.close()
        return head

    assert status(9000) == b"HTTP/1.1 204 No Content"
    assert status(190000) == b"HTTP/1.1 204 No Content"
    assert status(210000) == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert status(400000) == b"HTTP/1.1 431 Request Header Fields Too Large"
    r = curl(f"{k.url}/.ok", "--http2-prior-knowledge", "-H", "x-big: " + "a" * 9000)
    assert r.status == 204

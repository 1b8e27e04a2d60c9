"""Refused requests: 400 with a JSON message naming the field, 413 for oversize bodies, and
in every case nothing at all stored."""
import json
import re
import socket

import h2.config
import h2.connection
import h2.events
import pytest

from helpers import (ERLANG_VM, EXPORTER_HEADER, USER_AGENT, body_bytes, curl, fixture_files,
                     load_fixture, make_envelope, make_erlang_vm_envelope, post_h2,
                     post_h2_frames)

REQUIRED = ["type", "timestamp", "label", "version", "node_name", "multistream", "simulcast",
            "spotlight", "role", "channel_id", "client_id", "session_id", "connection_id",
            "stats"]


def small_stats():
    return load_fixture(fixture_files()[0])[:4]


def base(**over):
    env = make_envelope(small_stats())
    env.update(over)
    return env


def without(key):
    env = base()
    del env[key]
    return env


def stats_with(*items):
    return base(stats=[{"type": "transport", "id": "T01", "timestamp": 1795500198544.297},
                       *items])


# (id, envelope, field the message must start with, exact message or None)
CASES = [(f"missing-{k}", without(k), k, None) for k in REQUIRED]
CASES += [
    ("type-number", base(type=1), "type", None),
    ("label-number", base(label=5), "label", None),
    ("label-empty", base(label=""), "label", None),
    ("version-empty", base(version=""), "version", None),
    ("version-object", base(version={}), "version", None),
    ("node_name-empty", base(node_name=""), "node_name", None),
    ("node_name-array", base(node_name=["a"]), "node_name", None),
    ("multistream-string", base(multistream="true"), "multistream",
     "multistream: must be a boolean, got string"),
    ("multistream-number", base(multistream=1), "multistream", None),
    ("multistream-null", base(multistream=None), "multistream", None),
    ("simulcast-null", base(simulcast=None), "simulcast", None),
    ("spotlight-null", base(spotlight=None), "spotlight", None),
    ("spotlight-string", base(spotlight="false"), "spotlight", None),
    ("role-bad", base(role="both"), "role", None),
    ("role-case", base(role="SENDRECV"), "role", None),
    ("role-number", base(role=1), "role", None),
    ("channel_id-empty", base(channel_id=""), "channel_id", None),
    ("channel_id-256-bytes", base(channel_id="c" * 256), "channel_id", None),
    ("channel_id-256-utf8-bytes", base(channel_id="\u00e9" * 128), "channel_id", None),
    ("channel_id-number", base(channel_id=42), "channel_id", None),
    ("client_id-empty", base(client_id=""), "client_id", None),
    ("client_id-256-bytes", base(client_id="a" * 256), "client_id", None),
    ("client_id-null", base(client_id=None), "client_id", None),
    ("connection_id-25", base(connection_id="A" * 25), "connection_id",
     "connection_id: must be 26 characters, got 25"),
    ("connection_id-27", base(connection_id="A" * 27), "connection_id",
     "connection_id: must be 26 characters, got 27"),
    ("connection_id-number", base(connection_id=12345678901234567890123456), "connection_id",
     None),
    ("session_id-25", base(session_id="B" * 25), "session_id", None),
    ("session_id-27", base(session_id="B" * 27), "session_id", None),
    ("session_id-empty", base(session_id=""), "session_id", None),
    ("timestamp-number", base(timestamp=1795500198544), "timestamp", None),
    ("timestamp-garbage", base(timestamp="yesterday"), "timestamp", None),
    ("timestamp-space", base(timestamp="2026-11-24 06:15:42.123Z"), "timestamp", None),
    ("timestamp-not-utc", base(timestamp="2026-11-24T06:15:42.123+09:00"), "timestamp", None),
    ("timestamp-month-13", base(timestamp="2026-13-24T06:15:42.123Z"), "timestamp", None),
    ("timestamp-day-32", base(timestamp="2026-11-32T06:15:42.123Z"), "timestamp", None),
    ("timestamp-hour-25", base(timestamp="2026-11-24T25:15:42.123Z"), "timestamp", None),
    ("timestamp-empty", base(timestamp=""), "timestamp", None),
    ("stats-object", base(stats={}), "stats", None),
    ("stats-string", base(stats="[]"), "stats", None),
    ("stats-null", base(stats=None), "stats", None),
    ("stats-item-string", stats_with("x"), r"stats\[1\]", None),
    ("stats-item-number", stats_with(5), r"stats\[1\]", None),
    ("stats-item-array", stats_with([]), r"stats\[1\]", None),
    ("stats-item-null", stats_with(None), r"stats\[1\]", None),
    ("stats-item-no-type", stats_with({"id": "x", "timestamp": 1.5}), r"stats\[1\]\.?type",
     None),
    ("stats-item-no-id", stats_with({"type": "codec", "timestamp": 1.5}), r"stats\[1\]\.?id",
     None),
    ("stats-item-type-number", stats_with({"type": 1, "id": "x", "timestamp": 1.5}),
     r"stats\[1\]\.?type", None),
    ("stats-item-id-number", stats_with({"type": "codec", "id": 7, "timestamp": 1.5}),
     r"stats\[1\]\.?id", None),
    ("stats-item-no-timestamp", stats_with({"type": "codec", "id": "x"}),
     r"stats\[1\]\.?timestamp", None),
    ("stats-item-timestamp-string", stats_with({"type": "codec", "id": "x", "timestamp": "1"}),
     r"stats\[1\]\.?timestamp", None),
]


def assert_refused(resp, field_regex, exact=None):
    assert resp.status == 400, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    msg = resp.message
    assert re.match(field_regex + r"\s*:", msg), \
        f"message does not start with the field name {field_regex!r}: {msg!r}"
    if exact is not None:
        assert msg == exact
    return msg


@pytest.mark.parametrize("env,field,exact", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_envelope_rule_broken_is_400_naming_the_field(env, field, exact, kohaku, db):
    before = db.count_all()
    assert before, "the schema should exist once kohaku is listening"
    field_regex = field if field.startswith("stats\\") else re.escape(field)
    msg = assert_refused(post_h2(kohaku.port, env), field_regex, exact)
    if field in REQUIRED and field not in env:
        assert msg.startswith(f"{field}: required"), msg
    assert db.count_all() == before


def valid_body():
    return json.dumps(base()).encode()


BAD_BODIES = [
    ("malformed", b'{"type": connection.user-agent}', "body: malformed JSON"),
    ("truncated", valid_body()[:-40], "body:"),
    ("truncated-in-string", b'{"type": "connection.us', "body:"),
    ("empty", b"", "body:"),
    ("array", b"[]", "body:"),
    ("number", b"42", "body:"),
    ("trailing-garbage", valid_body() + b" x", "body:"),
    ("invalid-utf8", b'{"type": "\xff\xfe", "label": "x"}', "body:"),
]


@pytest.mark.parametrize("body,prefix", [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_bad_body_is_400(body, prefix, kohaku, db):
    before = db.count_all()
    r = post_h2(kohaku.port, body)
    assert r.status == 400, r
    assert r.message.startswith(prefix), r.message
    assert db.count_all() == before


@pytest.mark.parametrize("exporter_type", [None, "", "connection.foo", "node.erlang-vm.x",
                                           "connection.rtc"])
def test_exporter_type_missing_or_unknown_is_400(exporter_type, kohaku, db):
    before = db.count_all()
    # kohaku may answer on the HEADERS frame, before the body: see post_h2_frames
    r = post_h2_frames(kohaku.port, base(), exporter_type=exporter_type)
    assert r.status == 400, r
    assert r.message.startswith(EXPORTER_HEADER), r.message
    assert db.count_all() == before


def test_erlang_vm_envelope_rules(kohaku, db):
    before = db.count_all()
    for key in ("type", "timestamp", "label", "version", "node_name", "stats"):
        env = make_erlang_vm_envelope()
        del env[key]
        r = post_h2(kohaku.port, env, exporter_type=ERLANG_VM)
        assert r.status == 400, (key, r)
        assert r.message.startswith(key), (key, r.message)
    r = post_h2(kohaku.port, make_erlang_vm_envelope(stats={}), exporter_type=ERLANG_VM)
    assert r.status == 400 and r.message.startswith("stats"), r
    assert db.count_all() == before


def test_http1_collector_is_400(kohaku, db):
    before = db.count_all()
    r = curl(f"{kohaku.url}/collector", "--http1.1", "-H", f"{EXPORTER_HEADER}: {USER_AGENT}",
             "-H", "content-type: application/json", data=valid_body())
    assert r.status == 400, r
    assert r.message, r
    assert db.count_all() == before


@pytest.mark.parametrize("method,path,data", [("POST", "/collector", True),
                                              ("GET", "/.ok", False)])
def test_h2c_upgrade_is_400(method, path, data, kohaku, db):
    before = db.count_all()
    args = ["--http1.1", "-X", method, "-H", "Connection: Upgrade, HTTP2-Settings",
            "-H", "Upgrade: h2c", "-H", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            "-H", f"{EXPORTER_HEADER}: {USER_AGENT}", "-H", "content-type: application/json"]
    r = curl(f"{kohaku.url}{path}", *args, data=valid_body() if data else None)
    assert r.status == 400, r
    assert r.message, r
    assert db.count_all() == before


def test_curl_http2_upgrade_attempt_is_400(kohaku):
    """`curl --http2` on http:// tries Upgrade: h2c, which kohaku refuses."""
    r = curl(f"{kohaku.url}/.ok", "--http2")
    assert r.status == 400, r


# --- body size ----------------------------------------------------------------------------------

LIMIT = 4096


def padded(size):
    """A valid envelope of exactly `size` bytes (padded in an ignored envelope key)."""
    env = base(stats=[{"type": "transport", "id": "T01", "timestamp": 1795500198544.297}],
               pad="")
    raw = body_bytes(env)
    env["pad"] = "p" * (size - len(raw))
    raw = body_bytes(env)
    assert len(raw) == size
    return env, raw


def test_body_over_max_body_bytes_is_413(kohaku_factory, db):
    k = kohaku_factory(max_body_bytes=LIMIT)
    before = db.count_all()
    big = make_envelope(load_fixture(max(fixture_files(), key=lambda p: len(open(p).read()))))
    assert len(body_bytes(big)) > LIMIT
    # a content-length over the limit may be answered before the body: see post_h2_frames
    r = post_h2_frames(k.port, big)
    assert r.status == 413, r
    _, over = padded(LIMIT + 1)
    r = post_h2_frames(k.port, over)
    assert r.status == 413, r
    assert db.count_all() == before
    # the limit itself is accepted
    env, exact = padded(LIMIT)
    r = post_h2(k.port, exact)
    assert r.status == 204, r
    assert db.count("sora_connection", "connection_id = ?", (env["connection_id"],)) == 1


def test_streamed_body_over_limit_is_413(kohaku_factory, db):
    """Without content-length, and with a body that never ends (no END_STREAM), the limit is
    enforced while the body streams: 413 must come before the client stops (python3-h2)."""
    k = kohaku_factory(max_body_bytes=LIMIT)
    before = db.count_all()
    s = socket.create_connection(("127.0.0.1", k.port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/collector"),
                       (":authority", "127.0.0.1"), (EXPORTER_HEADER, USER_AGENT),
                       ("content-type", "application/json")])
    s.sendall(c.data_to_send())
    status = None
    sent = 0
    while status is None and sent < 64 * 1024:
        try:
            c.send_data(1, b" " * 1024)
            sent += 1024
            s.sendall(c.data_to_send())
        except Exception:
            break
        s.settimeout(0.05)
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1:
                status = dict(ev.headers)[b":status"]
    s.settimeout(5)
    while status is None:
        data = s.recv(65536)
        if not data:
            break
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1:
                status = dict(ev.headers)[b":status"]
    s.close()
    assert status == b"413", (status, sent)
    assert db.count_all() == before

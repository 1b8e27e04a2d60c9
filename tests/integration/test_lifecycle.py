"""Sora's session and event webhooks (issue: connection lifecycle from Sora's webhooks): the
real daemon takes the sample logs' webhooks (tests/fixtures/sora-logs-sample) over HTTP/1.1
and HTTP/2, answers 200 {} once stored, and fills sora_session and sora_connection_lifecycle
on SQLite and PostgreSQL; delivered twice or backwards (destroyed before created, one at a
time or many at once) the tables end up the same; bad bodies get 400 naming the field and
store nothing; the stats and quality tables are left alone, and the lifecycle joins the
quality verdicts by connection_id; the paths are configurable; webhooks go through the spool
while PostgreSQL is away."""
import json
import os
import subprocess

import pytest

from helpers import (KOHAKU_BIN, H2Client, H2Request, Kohaku, PgDb, all_counts, curl,
                     fixture_files, load_fixture, make_envelope, post_h2, wait_until)
from pgcluster import PgCluster, unique_db_name

LOGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                    "sora-logs-sample")
SID = "H45PD3HLXUKBBK2BP3ANE657ZM"
CA, CB = "W56JLRJEYNIZ4TOADMXTOE3RRU", "QXC56Q55A2O5BXBRLJC2RRMOKE"


def log_bodies(name):
    with open(os.path.join(LOGS, name)) as f:
        return [json.loads(line)["req"] for line in f if line.strip()]


SESSION = log_bodies("session_webhook.jsonl")  # created, updated, destroyed
EVENT = log_bodies("event_webhook.jsonl")  # created A, created B, updated A, destroyed A, B
# (path, header, body) of every webhook, in the order Sora sent them
ALL = sorted([("/webhook/session", "sora-session-webhook-type", b) for b in SESSION] +
             [("/webhook/event", "sora-event-webhook-type", b) for b in EVENT],
             key=lambda w: w[2]["timestamp"])


def post(k, path, header, body, h2=False):
    """One webhook as Sora posts it (HTTP/1.1 unless h2), its type in the header."""
    args = ["--http2-prior-knowledge" if h2 else "--http1.1", "-H",
            "content-type: application/json"]
    if header:
        args += ["-H", f"{header}: {body['type'] if isinstance(body, dict) else header}"]
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return curl(f"http://127.0.0.1:{k.port}{path}", *args, data=data)


def post_all_ok(k, webhooks, h2_every=2):
    for i, (path, header, body) in enumerate(webhooks):
        r = post(k, path, header, body, h2=i % h2_every == 0)
        assert r.status == 200, (body["type"], r)
        assert r.body == b"{}" and r.headers["content-type"] == "application/json"


def lifecycle_rows(db):
    """sora_session and sora_connection_lifecycle, every column, as comparable text."""
    return {t: [tuple(str(v) for v in row) for row in
                db.query(f'SELECT * FROM "{t}" ORDER BY 1')]
            for t in ("sora_session", "sora_connection_lifecycle")}


def times(db, sql, params=()):
    """A row of times, normalised (SQLite keeps text, PostgreSQL gives datetimes)."""
    row = db.query(sql, params)[0]
    return tuple(None if v is None else
                 v if isinstance(v, (str, int)) else v.isoformat().replace("+00:00", "Z")
                 for v in row)


def pg_time(text):
    return text.replace("T", " ").replace("Z", "+00:00")


@pytest.mark.storage("sqlite", "postgres")
def test_webhooks_fill_sessions_and_lifetimes(db, kohaku):
    post_all_ok(kohaku, ALL)
    pg = isinstance(db, PgDb)
    s = db.rows("sora_session")
    assert len(s) == 1
    s = s[0]
    assert s["session_id"] == SID and s["channel_id"] == "sample-room"
    assert s["node_name"] == "sora@192.0.2.10"
    assert s["end_type"] == "session.destroyed"
    assert (s["max_connections"], s["total_connections"]) == (2, 2)
    created, destroyed = times(db, "SELECT created, destroyed FROM sora_session")
    assert created.startswith("2026-11-30T08:59:55.123456")
    assert destroyed.startswith("2026-11-30T09:01:15.123456")
    rows = {r["connection_id"]: r for r in db.rows("sora_connection_lifecycle")}
    assert set(rows) == {CA, CB}
    a, b = rows[CA], rows[CB]
    assert (a["role"], b["role"]) == ("sendrecv", "recvonly")
    assert (a["end_type"], a["end_reason"]) == ("connection.destroyed", "normal")
    assert b["end_reason"] == "websocket-closed"
    assert a["total_sent_bytes"] == 4702311 and a["minutes"] == 1
    assert a["video_codec_type"] == "VP8" and a["session_id"] == SID
    end_data = a["end_data"] if pg else json.loads(a["end_data"])
    assert end_data["destroyed_timestamp"] == "2026-11-30T09:01:14.123456Z"
    got = times(db, "SELECT created, destroyed FROM sora_connection_lifecycle WHERE "
                    "connection_id = ?", (CA,))
    assert got[0].startswith("2026-11-30T08:59:56.123456")
    assert got[1].startswith("2026-11-30T09:01:14.123456")
    assert db.count("sora_webhook") == len(ALL)
    assert db.count("sora_webhook", "type = ?", ("connection.destroyed",)) == 2
    assert db.count("sora_webhook", "connection_id = ?", (CB,)) == 2
    m = kohaku.metrics()
    assert m[("kohaku_webhooks_stored_total", frozenset({("kind", "session")}))] == 3
    assert m[("kohaku_webhooks_stored_total", frozenset({("kind", "event")}))] == 5
    assert m[("kohaku_webhooks_duplicate_total", frozenset())] == 0
    lines = kohaku.wait_access(lambda ls: len(ls) >= len(ALL))
    seen = {(l["path"], l["proto"], l.get("type")) for l in lines}
    assert ("/webhook/session", "h1", "session.updated") in seen
    assert ("/webhook/event", "h2", "connection.created") in seen
    assert all(l.get("session_id") == SID for l in lines if l["path"].startswith("/webhook/"))


@pytest.mark.storage("sqlite", "postgres")
def test_redelivered_and_backwards_end_the_same(db, db_factory, kohaku_factory):
    """Forward once into one database; into another: backwards, every webhook twice, then all
    of them again at once over one HTTP/2 connection (several webhooks of one connection in
    one batch)."""
    k = kohaku_factory()
    post_all_ok(k, ALL)
    want = lifecycle_rows(db)
    other = db_factory("postgres" if isinstance(db, PgDb) else "sqlite")
    k2 = kohaku_factory(other.settings())
    backwards = [w for w in reversed(ALL) for _ in (0, 1)]
    post_all_ok(k2, backwards, h2_every=3)
    assert lifecycle_rows(other) == want
    reqs = [H2Request(json.dumps(body), path=path, headers=[(header, body["type"])])
            for path, header, body in ALL * 3]
    batches = k2.metrics()
    results = H2Client(k2.port).post_all(reqs, headers=(), concurrency=24)
    assert [r["status"] for r in results] == [200] * len(reqs)
    assert lifecycle_rows(other) == want
    # some of those went several to a batch (one statement merging rows of one key)
    m = k2.metrics()
    single = ("kohaku_batch_reports_bucket", frozenset({("le", "1")}))
    count = ("kohaku_batch_reports_count", frozenset())
    assert m[count] - batches[count] > m[single] - batches[single]
    assert other.count("sora_webhook") == len(ALL)
    m = k2.metrics()
    assert m[("kohaku_webhooks_duplicate_total", frozenset())] == len(ALL) * 4
    stored = sum(m[("kohaku_webhooks_stored_total", frozenset({("kind", kd)}))]
                 for kd in ("session", "event"))
    assert stored == len(ALL)


def with_(body, **changes):
    b = dict(body)
    for key, v in changes.items():
        if v is None:
            b.pop(key, None)
        else:
            b[key] = v
    return b


S0, S1, E0, E3 = SESSION[0], SESSION[1], EVENT[0], EVENT[3]
BAD = [
    # (id, path, header value (None: no header), body, message)
    ("malformed", "/webhook/event", None, b'{"type": "connection.created",,}',
     "body: malformed JSON at byte"),
    ("truncated", "/webhook/session", None, b'{"type": "session.created", "id": "x"',
     "body: truncated JSON"),
    ("empty", "/webhook/event", None, b"", "body: empty; expected a JSON object"),
    ("array", "/webhook/event", None, b"[]", "body: must be a JSON object, got array"),
    ("no-type", "/webhook/session", None, with_(S0, type=None), "type: required"),
    ("header-contradicts", "/webhook/event", "connection.created", E3,
     "type: 'connection.destroyed' does not match the sora-event-webhook-type header "
     "'connection.created'"),
    ("session-to-event", "/webhook/event", None, S0,
     "type: 'session.created' is a session webhook type"),
    ("event-to-session", "/webhook/session", None, E0,
     "type: 'connection.created' is not a session webhook type (session.*)"),
    ("stats-report", "/webhook/event", None,
     make_envelope(load_fixture(fixture_files()[0]), type="connection.rtc"),
     "type: 'connection.rtc' is a stats report"),
    ("no-id", "/webhook/session", None, with_(S0, id=None), "id: required"),
    ("bad-timestamp", "/webhook/session", None, with_(S0, timestamp="today"), "timestamp: "),
    ("short-session", "/webhook/session", None, with_(S0, session_id="H45PD3"),
     "session_id: must be 26 characters, got 6"),
    ("no-channel", "/webhook/event", None, with_(E0, channel_id=None), "channel_id: required"),
    ("no-connection", "/webhook/event", None, with_(E0, connection_id=None),
     "connection_id: required"),
    ("bad-role", "/webhook/event", None, with_(E0, role="viewer"),
     "role: must be sendrecv, sendonly or recvonly, got 'viewer'"),
    ("peak-string", "/webhook/session", None, with_(S1, max_connections="2"),
     "max_connections: must be a non-negative integer, got string"),
    ("connections-object", "/webhook/session", None, with_(S1, connections={}),
     "connections: must be an array, got object"),
    ("entry-without-id", "/webhook/session", None,
     with_(S1, connections=[S1["connections"][0], {"role": "sendrecv"}]),
     "connections[1].connection_id: required"),
    ("entry-bad-time", "/webhook/session", None,
     with_(S1, connections=[dict(S1["connections"][0], connection_created_timestamp=5)]),
     "connections[0].connection_created_timestamp: must be an RFC 3339 time string, got "
     "number"),
    ("data-bad-time", "/webhook/event", None,
     with_(E3, data=dict(E3["data"], destroyed_timestamp="later")),
     "data.destroyed_timestamp: "),
    ("nul", "/webhook/event", None, with_(E0, client_id="a\u0000b"),
     "client_id: must not contain \\u0000"),
]


@pytest.mark.parametrize("path,header,body,message", [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_webhooks_get_400_naming_the_field(kohaku, db, path, header, body, message):
    hname = "sora-session-webhook-type" if "session" in path else "sora-event-webhook-type"
    for h2 in (False, True):
        args = ["--http2-prior-knowledge" if h2 else "--http1.1"]
        if header:
            args += ["-H", f"{hname}: {header}"]
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        r = curl(f"http://127.0.0.1:{kohaku.port}{path}", *args, data=data)
        assert r.status == 400, r
        assert r.message.startswith(message), (r.message, message)
    # nothing of it stored, and the next good one is
    for t in ("sora_webhook", "sora_session", "sora_connection_lifecycle"):
        assert db.count(t) == 0, t
    assert post(kohaku, "/webhook/session", "sora-session-webhook-type", S0).status == 200
    assert db.count("sora_session") == 1
    lines = kohaku.wait_access(lambda ls: sum(l["status"] == 400 for l in ls) >= 2)
    bad = [l for l in lines if l["status"] == 400]
    assert {l["proto"] for l in bad} == {"h1", "h2"}
    assert all(l["reason"].startswith(message) for l in bad)


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


def readme_queries(pg):
    """The README's lifecycle-and-quality queries, as written (SQLite) or as it says to run
    them in PostgreSQL."""
    text = open(README).read()
    block = text[text.index("-- each connection of a session"):]
    block = block[:block.index("```")]
    queries = [q.strip() for q in block.split(";") if q.strip()]
    if pg:
        queries = [q.replace("(julianday(l.destroyed) - julianday(l.created)) * 86400",
                             "extract(epoch FROM l.destroyed - l.created)") for q in queries]
    return [q.replace("?1", "?") for q in queries]


def report_for(cid, t, stats):
    return make_envelope(stats, connection_id=cid, session_id=SID, channel_id="sample-room",
                         client_id=cid, timestamp=t)


@pytest.mark.storage("sqlite", "postgres")
def test_stats_untouched_and_joined_to_quality(db, kohaku):
    """Reports of the two connections, 10 s apart, then the webhooks: the stats, quality and
    envelope tables count what the reports alone gave; the README's query joins each
    connection's lifetime to its verdict."""
    stats = load_fixture(fixture_files()[0])
    for cid in (CA, CB):
        for t in ("2026-11-30T09:00:00.123456Z", "2026-11-30T09:00:10.123456Z"):
            r = post_h2(kohaku.port, json.dumps(report_for(cid, t, stats)))
            assert r.status == 204, r
    before = all_counts(db)
    quality = {t: db.count(t) for t in ("quality_stream", "quality_connection")}
    assert quality["quality_connection"] == 4
    post_all_ok(kohaku, ALL)
    assert all_counts(db) == before
    assert {t: db.count(t) for t in quality} == quality
    pg = isinstance(db, PgDb)
    seconds = ("extract(epoch FROM l.destroyed - l.created)" if pg else
               "(julianday(l.destroyed) - julianday(l.created)) * 86400")
    rows = db.query(
        f"SELECT l.connection_id, l.client_id, l.end_type, l.end_reason, "
        f"round({seconds}) AS seconds, v.verdict, v.reports "
        "FROM sora_connection_lifecycle l "
        "LEFT JOIN quality_connection_verdict v ON v.connection_id = l.connection_id "
        "WHERE l.session_id = ? ORDER BY l.created", (SID,))
    assert [(r[0], r[3], int(r[4]), r[6]) for r in rows] == [
        (CA, "normal", 78, 2), (CB, "websocket-closed", 78, 2)]
    assert all(r[5] in ("ok", "warning", "bad") for r in rows)
    # the README's queries, as it gives them
    each, ended_badly, span = readme_queries(pg)
    rows = db.query(each, (SID,))
    assert [(r[0], int(r[5]), r[7], r[11]) for r in rows] == [(CA, 78, "normal", 2),
                                                              (CB, 78, "websocket-closed", 2)]
    rows = db.query(ended_badly, ("2026-11-29T00:00:00.000000Z",))
    assert {r[1] for r in rows} <= {CA, CB} and all(r[4] == "bad" for r in rows)
    rows = db.query(span, ("sample-room",))
    assert [(r[0], r[4], r[5]) for r in rows] == [(SID, 2, 2)]


def test_no_webhook_no_lifecycle(kohaku, db):
    """The stats-only path: reports alone leave the webhook tables empty."""
    env = make_envelope(load_fixture(fixture_files()[0]))
    assert post_h2(kohaku.port, json.dumps(env)).status == 204
    assert db.count("sora_connection") == 1
    for t in ("sora_webhook", "sora_session", "sora_connection_lifecycle"):
        assert db.count(t) == 0


def test_paths_configurable(kohaku_factory, db):
    k = kohaku_factory(session_webhook_path="/sora/session", event_webhook_path="/sora/event")
    assert post(k, "/webhook/session", None, S0).status == 404
    assert post(k, "/sora/session", "sora-session-webhook-type", S0).status == 200
    assert post(k, "/sora/event/", "sora-event-webhook-type", E0).status == 200
    r = curl(f"http://127.0.0.1:{k.port}/sora/event", "--http1.1")
    assert r.status == 405
    assert db.count("sora_webhook") == 2


@pytest.mark.parametrize("line,message", [
    ("session_webhook_path = webhook/session",
     "session_webhook_path: must start with '/', got 'webhook/session'"),
    ("event_webhook_path = /collector",
     "event_webhook_path: '/collector' is collector_path already"),
    ("session_webhook_path = /webhook/event",
     "session_webhook_path: '/webhook/event' is event_webhook_path already"),
], ids=["relative", "collector", "each-other"])
def test_bad_paths_stop_kohaku(tmp_path, line, message):
    cfg = tmp_path / "kohaku.ini"
    cfg.write_text(f"storage = null\nlisten_addr = 127.0.0.1\n{line}\n")
    out = subprocess.run([KOHAKU_BIN, "-C", str(cfg)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 2, out
    assert f"{cfg}:3: {message}" in out.stderr, out.stderr


@pytest.fixture
def own_pg():
    cluster = PgCluster()
    yield cluster
    cluster.close()


def test_spooled_while_postgres_is_away(tmp_path, own_pg):
    """With a spool, webhooks are answered 200 while PostgreSQL is down and stored when it is
    back, replayed through the same parser."""
    db = PgDb(own_pg, unique_db_name())
    k = Kohaku(dict(db.settings(), spool_dir=str(tmp_path / "spool"), storage_retry_ms=300),
               directory=tmp_path / "k").start()
    try:
        own_pg.stop()
        k.wait_health(503)
        post_all_ok(k, ALL)
        m = k.metrics()
        assert m[("kohaku_spool_appended_total", frozenset())] >= len(ALL)
        own_pg.start()
        wait_until(lambda: db.count("sora_webhook") == len(ALL), 60, interval=0.2,
                   message="spooled webhooks stored")
        assert db.count("sora_connection_lifecycle", "end_type IS NOT NULL") == 2
        assert db.rows("sora_session")[0]["max_connections"] == 2
    finally:
        assert k.stop() == 0

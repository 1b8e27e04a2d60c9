"""The console end to end (issue: kohaku's own console): its JSON API over HTTP and its pages in
headless Chromium, against the real daemon on SQLite and PostgreSQL.

The daemon of a module is fed, a few minutes before now (so the pages' default "last hour"
shows them):
- every browser call of tests/fixtures/browser as one connection (its t=3 and t=10 snapshots),
  in two channels of four participants (room-audio, room-av);
- the impaired calls of tests/fixtures/impaired (test_quality.CALLS), each call's two sides as
  two connections of one channel, 2 s apart, in order;
- one hostile call: an impaired call whose label, version, node, channel, client ids, RTP
  stream ids, track ids, mids, candidate addresses and unknown members carry <script> and
  <img onerror> markup that would set window.__pwned if it ever ran.

API: the list's verdicts are `kohaku quality --worst --json`'s, a connection's series are its
stored quality rows, its samples its stored stats rows; bad parameters are 400 naming the
field, an unknown connection or channel 404; authentication (bearer token, basic) is refused
without or with a wrong secret and accepted with the right one, also over TLS; a console off
loopback without a secret does not start.

Browser (Debian's chromium and chromium-driver through python3-selenium; missing ones FAIL
the tests, as every tool the suite needs): the list shows the connections with their
verdicts; clicking a connection id opens its page; its charts are drawn (canvases with pixels
on them) from the stored values; the channel page shows every participant; the overview
renders; no page logs a console error; nothing of the hostile call runs or becomes an element,
on any page nor in the JSON sample viewer. Screenshots of every page go to
build/console-screenshots/STORAGE/ (KOHAKU_SCREENSHOTS overrides the directory).
"""
import base64
import glob
import json
import math
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from helpers import (EXPORTER_HEADERS_UA, FIXTURES_DIR, KOHAKU_BIN, REPO_ROOT, H2Client, Kohaku,
                     PgDb, SqliteDb, load_fixture, make_envelope, make_pki, need_tool, sora_id,
                     tls_server_settings, wait_until, write_config)
from pgcluster import PgCluster, PgStandby, unique_db_name
from test_quality import CALLS

SHOTS = os.environ.get("KOHAKU_SCREENSHOTS") or os.path.join(REPO_ROOT, "build",
                                                             "console-screenshots")

# What a hostile report carries: markup that sets the sentinel if it ever runs, and marks
# the element it would create (class "pwned").
XSS = ('<img src=x class=pwned onerror="window.__pwned=1">'
       '<script class=pwned>window.__pwned=2</script>"\'&')


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ms_of(value):
    """A stored time (SQLite text, psycopg2 datetime) in ms since the epoch."""
    if isinstance(value, str):
        value = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return (value - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


# --- feeding the daemon --------------------------------------------------------------------------

def hostile(stats):
    """A copy of a fixture's stats whose RTP stream ids (and every reference to them), track
    ids, mids and candidate addresses carry XSS, and with unknown members that do too."""
    rename = {o["id"]: o["id"] + XSS for o in stats
              if o["type"] in ("inbound-rtp", "outbound-rtp")}
    out = []
    for o in stats:
        o = {k: rename.get(v, v) if isinstance(v, str) else v for k, v in o.items()}
        for k in ("trackIdentifier", "mid", "address", "ip"):
            if k in o:
                o[k] = str(o[k]) + XSS
        if o["type"] in ("inbound-rtp", "outbound-rtp", "candidate-pair"):
            o["vendor" + XSS] = XSS
            o["fooNote"] = {"html": XSS}
        out.append(o)
    return out


def post_in_order(k, envelopes):
    """Every report over one h2c connection, one at a time (quality reads them in order)."""
    bodies = [json.dumps(e).encode() for e in envelopes]
    results = H2Client(k.port, timeout=120).post_all(bodies, EXPORTER_HEADERS_UA, concurrency=1)
    bad = [r for r in results if r["status"] != 204]
    assert not bad, bad[:3]


def browser_calls(base):
    """The browser fixtures: {name: envelope list}, one connection per t3/t10 pair."""
    out = []
    conns = {}
    for early in sorted(glob.glob(os.path.join(FIXTURES_DIR, "*-t3.json"))):
        name = os.path.basename(early)[:-8]
        s3, s10 = load_fixture(early), load_fixture(early.replace("-t3.json", "-t10.json"))
        cid = sora_id()
        conns[cid] = {"channel": "room-" + name.split("-")[1], "client": name}
        dt = (s10[0]["timestamp"] - s3[0]["timestamp"]) / 1000.0
        for stats, at in ((s3, base), (s10, base + timedelta(seconds=dt))):
            out.append(make_envelope(stats, connection_id=cid, channel_id=conns[cid]["channel"],
                                     client_id=name, timestamp=iso(at),
                                     role="sendonly" if "sender" in name else "recvonly"))
    return out, conns


def impaired_calls(base, call_filter=None, rewrite=None, **env):
    """The impaired calls (or those call_filter keeps) as envelopes in time order; rewrite
    changes each stats array. Returns (envelopes, {connection_id: {channel, client}})."""
    out, conns = [], {}
    for (browser, scenario), sides in sorted(CALLS.items()):
        if call_filter and not call_filter(browser, scenario):
            continue
        channel = env.get("channel_id") or f"{browser}-{scenario}-{sora_id()[:6].lower()}"
        ids = {side: sora_id() for side in sides}
        for side in sides:
            conns[ids[side]] = {"channel": channel,
                                "client": env.get("client_id", "") + f"{side}-{browser}"}
        steps = sorted((t, side, p) for side, files in sides.items() for t, p in files)
        for t, side, path in steps:
            stats = load_fixture(path)
            e = dict(env, channel_id=channel, client_id=conns[ids[side]]["client"],
                     connection_id=ids[side], timestamp=iso(base + timedelta(seconds=t)))
            out.append(make_envelope(rewrite(stats) if rewrite else stats, **e))
    return out, conns


class Loaded:
    """A daemon fed as the module says; conns: {connection_id: {channel, client}}; bad: the
    hostile call's connection ids and channel."""

    def __init__(self, kind, k, db, conns, bad_ids, bad_channel):
        self.kind, self.k, self.db = kind, k, db
        self.conns, self.bad_ids, self.bad_channel = conns, bad_ids, bad_channel

    @property
    def url(self):
        return f"http://127.0.0.1:{self.k.console_port}"

    def get(self, path, headers=None):
        return http_get(self.url + path, headers)

    def api(self, path, **params):
        status, _, body = self.get("/api/" + path + ("?" + urllib.parse.urlencode(params)
                                                       if params else ""))
        assert status == 200, (path, status, body)
        return json.loads(body)

    def quality(self, *args):
        out = subprocess.run([KOHAKU_BIN, "-C", self.k.config_path, "quality", *args,
                              "--json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def loaded(request, tmp_path_factory):
    if request.param == "sqlite":
        db = SqliteDb(tmp_path_factory.mktemp("console-db"))
    else:
        db = PgDb(request.getfixturevalue("pg_cluster"), unique_db_name("console"))
    k = Kohaku(db.settings(), directory=tmp_path_factory.mktemp("console-kohaku")).start()
    now = datetime.now(timezone.utc)
    reports, conns = browser_calls(now - timedelta(minutes=5))
    more, c2 = impaired_calls(now - timedelta(minutes=10))
    bad_channel = "hostile/" + XSS
    evil, c3 = impaired_calls(now - timedelta(minutes=8),
                              lambda b, s: (b, s) == ("chromium", "loss3"), hostile,
                              channel_id=bad_channel, client_id=XSS, label="Sora " + XSS,
                              version="2025.1.0" + XSS, node_name="sora@" + XSS)
    post_in_order(k, reports + more + evil)
    conns.update(c2)
    conns.update(c3)
    # the hostile call's receiver first (its inbound streams for the samples' checks)
    bad_ids = sorted(c3, key=lambda c: (not c3[c]["client"].endswith("receiver-chromium"), c))
    yield Loaded(request.param, k, db, conns, bad_ids, bad_channel)
    assert k.close() == 0


def http_get(url, headers=None, context=None):
    """(status, headers, body text) of a GET, error statuses included."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as r:
            return r.status, dict((k.lower(), v) for k, v in r.headers.items()), \
                r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict((k.lower(), v) for k, v in e.headers.items()), e.read().decode()


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# --- the API -----------------------------------------------------------------------------------

def test_list_has_every_connection_with_kohaku_qualitys_verdict(loaded):
    got = loaded.api("connections", per_page=500)
    assert got["total"] == len(loaded.conns) == got["counts"]["all"]
    rows = {r["connection_id"]: r for r in got["rows"]}
    assert set(rows) == set(loaded.conns)
    for cid, want in loaded.conns.items():
        assert rows[cid]["channel_id"] == want["channel"]
        assert rows[cid]["client_id"] == want["client"]
    worst = loaded.quality("--worst", "--since", "1h", "--limit", "500")["connections"]
    assert {w["connection_id"] for w in worst} <= set(rows)
    for w in worst:
        r = rows[w["connection_id"]]
        assert r["verdict"] == w["verdict"], (r, w)
        for key in ("uplink", "downlink", "mos_min", "mos_avg", "video_score_min", "reports"):
            assert r[key] == w[key] or close(r[key], w[key]), (key, r, w)
    # the impaired calls are rated: some bad, some warning, some ok
    assert got["counts"]["bad"] and got["counts"]["warning"] and got["counts"]["ok"]
    assert sum(got["counts"][v] for v in ("bad", "warning", "ok", "unrated")) == got["total"]
    # worst first: severity never rises down the list
    sev = [r["severity"] if r["severity"] is not None else -1 for r in got["rows"]]
    assert sev == sorted(sev, reverse=True)


def test_list_filters_sorts_and_pages(loaded):
    cid = loaded.bad_ids[0]
    chan = loaded.api("connections", channel=loaded.bad_channel)
    assert {r["connection_id"] for r in chan["rows"]} == set(loaded.bad_ids)
    client = loaded.conns[cid]["client"]
    one = loaded.api("connections", client=client)
    assert [r["connection_id"] for r in one["rows"]] == [cid]
    # filters together, and with a verdict: their intersection; the counts per verdict are
    # over the filters', before the verdict's
    assert [r["connection_id"] for r in loaded.api("connections", channel=loaded.bad_channel,
                                                   client=client)["rows"]] == [cid]
    assert loaded.api("connections", channel=loaded.bad_channel + "x", client=client)[
        "total"] == 0
    ff = loaded.api("connections", browser="firefox", per_page=500)
    verdicts = {r["verdict"] for r in ff["rows"]}
    assert len(verdicts) > 1, verdicts  # so that the verdict's filter leaves some out
    for v in verdicts:
        both = loaded.api("connections", browser="firefox", verdict=v, per_page=500)
        want = {r["connection_id"] for r in ff["rows"] if r["verdict"] == v}
        assert {r["connection_id"] for r in both["rows"]} == want
        assert both["total"] == len(want) and both["counts"] == ff["counts"]
    bad = loaded.api("connections", verdict="bad", per_page=500)
    assert bad["total"] == bad["counts"]["bad"] and all(r["verdict"] == "bad"
                                                        for r in bad["rows"])
    assert loaded.api("connections", browser="firefox")["total"] > 0
    assert all(r["browser"] == "firefox"
               for r in loaded.api("connections", browser="firefox")["rows"])
    n = len(loaded.conns) // 5 + 2
    pages = [loaded.api("connections", per_page=5, page=p) for p in range(1, n + 1)]
    ids = [r["connection_id"] for p in pages for r in p["rows"]]
    assert len(ids) == len(set(ids)) == len(loaded.conns)
    assert pages[-1]["rows"] == []
    recent = loaded.api("connections", sort="recent", per_page=500)["rows"]
    last = [r["last_seen"] for r in recent]
    assert last == sorted(last, reverse=True)
    longest = loaded.api("connections", sort="longest", per_page=500)["rows"]
    secs = [r["seconds"] for r in longest]
    assert secs == sorted(secs, reverse=True)
    # a range before the reports holds nothing
    old = loaded.api("connections", to="2020-01-01T00:00:00.000Z", last="1h")
    assert old["total"] == 0 and old["rows"] == []


def test_connection_envelope_quality_and_tables(loaded):
    cid = loaded.bad_ids[0]
    c = loaded.api("connections/" + cid)
    assert c["connection"]["connection_id"] == cid
    assert c["connection"]["label"] == "Sora " + XSS
    assert c["connection"]["channel_id"] == loaded.bad_channel
    q = loaded.quality(cid)
    assert c["quality"]["verdict"] == q["verdict"]
    assert c["quality"]["issues"] == q["issues"]
    tables = {t["table"]: t["rows"] for t in c["tables"]}
    for table, n in tables.items():
        assert loaded.db.count(table, "connection_id = ?", (cid,)) == n, table
    assert "rtc_inbound_rtp_stream_stats" in tables and "quality_stream" in tables
    assert c["transport"]["candidate_pair_id"]


def test_series_are_the_stored_quality_rows(loaded):
    cid = next(c for c, v in loaded.conns.items() if v["client"] == "receiver-chromium"
               and v["channel"].startswith("chromium-loss3"))
    s = loaded.api(f"connections/{cid}/series")
    assert s["streams"]
    for st in s["streams"]:
        stype = "outbound-rtp" if st["direction"] == "outbound" else "inbound-rtp"
        rows = loaded.db.rows("quality_stream", "connection_id = ? AND stats_id = ? AND "
                              "stats_type = ?", (cid, st["stats_id"], stype), order_by='"time"')
        assert [ms_of(r["time"]) for r in rows] == st["time"]
        for key in ("bitrate", "packet_rate", "loss_percent", "jitter_ms", "mos",
                    "frames_per_second"):
            assert all(close(r[key], v) for r, v in zip(rows, st[key])), key
    rows = loaded.db.rows("quality_connection", "connection_id = ?", (cid,), order_by='"time"')
    assert [ms_of(r["time"]) for r in rows] == s["connection"]["time"]
    assert all(close(r["round_trip_time_ms"], v)
               for r, v in zip(rows, s["connection"]["round_trip_time_ms"]))


def test_samples_are_the_stored_rows(loaded):
    cid = loaded.bad_ids[0]
    table = "rtc_inbound_rtp_stream_stats"
    stored = loaded.db.rows(table, "connection_id = ?", (cid,), order_by='"time", stats_id')
    got = loaded.api(f"connections/{cid}/samples", table=table, limit=1000)["samples"]
    assert len(got) == len(stored) > 0
    for g, r in zip(got, stored):
        assert g["id"] == r["stats_id"] and g["id"].endswith(XSS)
        assert g["packetsReceived"] == r["packets_received"]
        assert g["bytesReceived"] == r["bytes_received"]
        extra = json.loads(g["extra"]) if isinstance(g["extra"], str) else g["extra"]
        assert extra["vendor" + XSS] == XSS
    page = loaded.api(f"connections/{cid}/samples", table=table, offset=2, limit=3)
    assert [s["id"] for s in page["samples"]] == [r["stats_id"] for r in stored[2:5]]


def test_channel_has_every_participant(loaded):
    for channel in {v["channel"] for v in loaded.conns.values()}:
        c = loaded.api("channels/" + urllib.parse.quote(channel, safe=""))
        want = {cid for cid, v in loaded.conns.items() if v["channel"] == channel}
        got = {p["connection_id"] for p in c["quality"]["participants"]}
        assert got == want, channel
        rated = {cid for cid in want if loaded.db.count("quality_stream", "connection_id = ?",
                                                        (cid,))}
        assert set(c["series"]) == rated, channel


def stored_buckets(db, b_ms):
    """{bucket start in ms: reports} of the stored reports, as the overview buckets them (date_bin
    on PostgreSQL, integer arithmetic on SQLite: the same bucket starts)."""
    want = {}
    for (t,) in db.query("SELECT time FROM sora_report"):
        start = ms_of(t) // b_ms * b_ms
        want[start] = want.get(start, 0) + 1
    return want


def overview_buckets(o):
    return {round(t): round(n * o["bucket_seconds"])
            for t, n in zip(o["reports"]["time"], o["reports"]["per_second"])}


def test_overview(loaded):
    asked = datetime.now(timezone.utc) - timedelta(hours=1)
    o = loaded.api("overview", last="1h")
    # the range starts at its first bucket's start, less than a bucket before the hour
    b_ms = round(o["bucket_seconds"] * 1000)
    start = ms_of(o["from"])
    assert start % b_ms == 0 and 0 <= ms_of(iso(asked)) - start < b_ms + 1000, (o["from"], asked)
    stored = loaded.db.count("sora_report")
    assert round(sum(o["reports"]["per_second"]) * o["bucket_seconds"]) == stored
    nodes = {n["node_name"] for n in o["nodes"]}
    assert nodes == {"sora@127.0.0.1", "sora@" + XSS}
    assert all(max(n["connections"]) > 0 for n in o["nodes"])
    assert overview_buckets(o) == stored_buckets(loaded.db, round(o["bucket_seconds"] * 1000))


HOLD = 8  # console_cache_seconds of the test below


def import_bodies(k, envelopes, tmp_path):
    """`kohaku import` of envelopes (a process of its own) into k's database."""
    path = os.path.join(tmp_path, f"late-{sora_id()[:6]}.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in envelopes)
    cfg = os.path.join(tmp_path, f"import-{sora_id()[:6]}.ini")
    write_config(cfg, {kk: v for kk, v in k.settings.items()
                       if kk.startswith(("storage", "sqlite_", "postgres_"))})
    out = subprocess.run([KOHAKU_BIN, "-C", cfg, "import", "--format", "bodies", path],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_overview_keeps_settled_buckets(kind, request, tmp_path):
    """With console_cache_seconds = HOLD the overview counts settled buckets once and reads
    only newer rows: a report of now shows at once; one this kohaku stores late into a bucket
    the cache holds shows at the next call (the batch's earliest time makes the cache read
    from its bucket on again); one another process stores there (`kohaku import`) shows only
    once the cache is HOLD old, and then every bucket is the stored reports' again."""
    if kind == "sqlite":
        db = SqliteDb(tmp_path)
    else:
        db = PgDb(request.getfixturevalue("pg_cluster"), unique_db_name("overview"))
    k = Kohaku({**db.settings(), "console_cache_seconds": HOLD}, directory=tmp_path).start()
    try:
        loaded = Loaded(kind, k, db, {}, [], "")
        now = datetime.now(timezone.utc)
        post_in_order(k, impaired_calls(now - timedelta(minutes=10))[0])
        held = datetime.now(timezone.utc)
        first = loaded.api("overview", last="1h")
        b_ms = round(first["bucket_seconds"] * 1000)
        assert overview_buckets(first) == stored_buckets(db, b_ms)
        again = loaded.api("overview", last="1h")  # from the cache
        assert again["reports"] == first["reports"] and again["nodes"] == first["nodes"]
        # a report of now: in the newest buckets, read on every call
        post_in_order(k, browser_calls(datetime.now(timezone.utc))[0][:1])
        # a report of eight minutes ago, through this kohaku, into a bucket the cache holds
        mine = browser_calls(now - timedelta(minutes=8))[0][0]
        post_in_order(k, [mine])
        assert overview_buckets(loaded.api("overview", last="1h")) == stored_buckets(db, b_ms)
        # one of five minutes ago stored by another process, into a cache started anew
        time.sleep(max(0.0, HOLD + 0.5 - (datetime.now(timezone.utc) - held).total_seconds()))
        built = datetime.now(timezone.utc)
        assert overview_buckets(loaded.api("overview", last="1h")) == stored_buckets(db, b_ms)
        late = browser_calls(now - timedelta(minutes=5))[0][0]
        import_bodies(k, [late], tmp_path)
        o = loaded.api("overview", last="1h")
        if (datetime.now(timezone.utc) - built).total_seconds() >= HOLD - 1:
            pytest.fail("the machine was too slow to see the cache within its hold")
        late_ms = ms_of(late["timestamp"]) // b_ms * b_ms
        want = stored_buckets(db, b_ms)
        got = overview_buckets(o)
        assert got.get(late_ms, 0) == want[late_ms] - 1  # not yet
        assert {t: n for t, n in got.items() if t != late_ms} == \
            {t: n for t, n in want.items() if t != late_ms}
        # once the cache is HOLD old every bucket is read again
        time.sleep(max(0.0, HOLD + 0.5 - (datetime.now(timezone.utc) - built).total_seconds()))
        o = loaded.api("overview", last="1h")
        assert overview_buckets(o) == stored_buckets(db, b_ms)
        nodes = {n["node_name"]: n for n in o["nodes"]}
        assert sum(nodes["sora@127.0.0.1"]["connections"]) > 0
    finally:
        assert k.close() == 0


def stored_nodes(db, b_ms, from_ms, to_ms):
    """{node: {bucket ms: [connections, with issues, bad]}} of the stored quality rows of
    [from_ms, to_ms): each connection once per bucket, with its worst severity there."""
    node = {cid: n for cid, n in db.query("SELECT connection_id, node_name FROM sora_connection")}
    worst = {}
    for t, cid, sev in db.query("SELECT time, connection_id, severity FROM quality_connection"):
        if from_ms <= ms_of(t) < to_ms:
            key = (ms_of(t) // b_ms * b_ms, cid)
            worst[key] = max(worst.get(key, 0), sev or 0)
    out = {}
    for (b, cid), sev in worst.items():
        n = out.setdefault(node[cid], {}).setdefault(b, [0, 0, 0])
        n[0] += 1
        n[1] += sev > 0
        n[2] += sev > 1
    return out


def overview_nodes(o):
    return {n["node_name"]: {round(t): [c, w, b] for t, c, w, b in
                             zip(n["time"], n["connections"], n["with_issues"], n["bad"])}
            for n in o["nodes"]}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_overview_live_buckets_count_as_a_whole_read(kind, request, tmp_path):
    """The buckets still filling are counted from the rows since the previous call's frontier
    (the live part): calls between reports of the last minute, stored in time order (each older
    than the frontier, so each batch makes the cache read its bucket again) and as they happen,
    on two nodes, give what the stored rows give: reports per bucket, and per node and bucket
    the connections, those with issues and those bad, each connection once with its worst."""
    if kind == "sqlite":
        db = SqliteDb(tmp_path)
    else:
        db = PgDb(request.getfixturevalue("pg_cluster"), unique_db_name("live"))
    k = Kohaku(db.settings(), directory=tmp_path).start()
    try:
        loaded = Loaded(kind, k, db, {}, [], "")

        def check(o):
            b_ms = round(o["bucket_seconds"] * 1000)
            assert overview_buckets(o) == stored_buckets(db, b_ms)
            assert overview_nodes(o) == stored_nodes(db, b_ms, ms_of(o["from"]), ms_of(o["to"]))

        # the impaired calls of the last 40 s, half on each node, in four parts
        start = datetime.now(timezone.utc) - timedelta(seconds=40)
        envs = impaired_calls(start, node_name="sora@a")[0]
        envs += impaired_calls(start, lambda b, sc: sc != "clean", node_name="sora@b")[0]
        envs.sort(key=lambda e: e["timestamp"])
        part = len(envs) // 4 + 1
        for i in range(0, len(envs), part):
            post_in_order(k, envs[i:i + part])
            check(loaded.api("overview", last="1h"))
        # then two calls' reports as they happen (their issues begin mid-call, so that a
        # connection's worst in a bucket comes after the frontier), a call after each pair
        live = impaired_calls(datetime.now(timezone.utc),
                              lambda b, sc: b == "chromium" and sc in ("loss3", "delay"),
                              node_name="sora@c")[0]
        t0 = time.monotonic()
        for i in range(0, len(live), 2):
            now = iso(datetime.now(timezone.utc))
            for e in live[i:i + 2]:
                e["timestamp"] = now
            post_in_order(k, live[i:i + 2])
            check(loaded.api("overview", last="1h"))
            time.sleep(max(0.0, t0 + 0.3 * (i // 2 + 1) - time.monotonic()))
        # and once all of it has settled
        time.sleep(6)
        o = loaded.api("overview", last="1h")
        check(o)
        assert set(overview_nodes(o)) == {"sora@a", "sora@b", "sora@c"}
        assert any(v[1] for n in overview_nodes(o).values() for v in n.values())
    finally:
        assert k.close() == 0


def test_postgres_read_connection_is_named(request, tmp_path):
    """The console's questions come from a PostgreSQL session named `kohaku read`, the writers'
    from `kohaku`, so that an operator tells them apart in pg_stat_activity."""
    db = PgDb(request.getfixturevalue("pg_cluster"), unique_db_name("appname"))
    k = Kohaku(db.settings(), directory=tmp_path).start()
    try:
        loaded = Loaded("postgres", k, db, {}, [], "")
        post_in_order(k, browser_calls(datetime.now(timezone.utc))[0][:1])
        assert loaded.api("overview", last="1h")["reports"]["time"]
        names = [r[0] for r in db.query(
            "SELECT application_name FROM pg_stat_activity WHERE datname = %s "
            "AND pid <> pg_backend_pid()", (db.dbname,))]
        assert names.count("kohaku read") == 1, names
        assert "kohaku" in names, names
    finally:
        assert k.close() == 0
    # a URI's own application_name names every session
    uri = db.settings()["postgres_uri"]
    uri += ("&" if "?" in uri else "?") + "application_name=fleet-a"
    k = Kohaku({**db.settings(), "postgres_uri": uri}, directory=tmp_path).start()
    try:
        loaded = Loaded("postgres", k, db, {}, [], "")
        assert loaded.api("overview", last="1h")["reports"]["time"]

        def names():  # the first kohaku's sessions may take a moment to go
            return {r[0] for r in db.query(
                "SELECT application_name FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid()", (db.dbname,))}
        wait_until(lambda: names() == {"fleet-a"}, 10,
                   message="only sessions named fleet-a")
    finally:
        assert k.close() == 0


def read_sessions(cluster, dbname):
    """The application names of the sessions on dbname of cluster (a primary or a standby)."""
    return cluster.psql("postgres", "SELECT application_name FROM pg_stat_activity WHERE "
                        f"datname = '{dbname}'").splitlines()


def test_postgres_read_uri_reads_a_streaming_replica(tmp_path):
    """postgres_read_uri: the console and kohaku quality ask a hot standby of the database
    kohaku writes, so their reads cost the primary nothing; with the standby away the
    console answers 503 naming it and ingest goes on; a database without kohaku's schema is
    refused by name."""
    primary = PgCluster()
    standby = None
    try:
        db = PgDb(primary, unique_db_name("primary"))
        standby = PgStandby(primary)
        settings = {**db.settings(), "postgres_read_uri": standby.uri(db.dbname)}
        k = Kohaku(settings, directory=tmp_path).start()
        try:
            loaded = Loaded("postgres", k, db, {}, [], "")
            reports, conns = browser_calls(datetime.now(timezone.utc) - timedelta(minutes=2))
            post_in_order(k, reports)
            wait_until(lambda: standby.replayed(primary), 30, message="the standby replayed")
            got = loaded.api("connections", per_page=500)
            assert {r["connection_id"] for r in got["rows"]} == set(conns), got
            stored = {r[0]: r[1] for r in db.query(
                "SELECT connection_id, severity FROM sora_connection")}
            assert {r["connection_id"]: r["severity"] for r in got["rows"]} == stored
            # the console's session is on the standby, none on the primary
            assert read_sessions(standby, db.dbname).count("kohaku read") == 1
            assert "kohaku read" not in read_sessions(primary, db.dbname)
            assert "kohaku" in read_sessions(primary, db.dbname)
            # every page's calls are answered there (a standby refuses any write)
            cid = reports[0]["connection_id"]
            assert loaded.quality(cid)["connection_id"] == cid
            assert loaded.api("connections/" + cid)["connection"]["connection_id"] == cid
            assert loaded.api("connections/" + cid + "/series")["streams"]
            chan = urllib.parse.quote(conns[cid]["channel"], safe="")
            assert loaded.api("channels/" + chan)["quality"]["participants"]
            assert loaded.api("overview", last="1h")["reports"]["time"]

            # the standby away: the console says so, by the key; ingest answers as before
            standby.stop()
            status, _, body = loaded.get("/api/connections")
            assert status == 503, (status, body)
            assert json.loads(body)["message"].startswith("postgres_read_uri: "), body
            more, more_conns = browser_calls(datetime.now(timezone.utc) - timedelta(minutes=1))
            post_in_order(k, more[:2])
            standby.start()
            wait_until(lambda: standby.replayed(primary), 30, message="the standby replayed")
            got = loaded.api("connections", per_page=500)
            assert more[0]["connection_id"] in {r["connection_id"] for r in got["rows"]}
        finally:
            assert k.close() == 0

        # a database without kohaku's schema (on the primary: any database will do)
        empty = primary.create_db(unique_db_name("empty"))
        k = Kohaku({**db.settings(), "postgres_read_uri": empty}, directory=tmp_path).start()
        try:
            status, _, body = Loaded("postgres", k, db, {}, [], "").get("/api/connections")
            assert status == 503, (status, body)
            assert json.loads(body)["message"].startswith(
                "postgres_read_uri: no kohaku schema there"), body
            assert empty not in body  # a URI may hold credentials: never echoed
            # a database at another schema version (a standby still replaying an upgrade)
            primary.psql(empty.rsplit("/", 1)[1], "CREATE TABLE kohaku_schema_version "
                                                  "(version integer); INSERT INTO "
                                                  "kohaku_schema_version VALUES (8)")
            status, _, body = Loaded("postgres", k, db, {}, [], "").get("/api/connections")
            assert status == 503, (status, body)
            assert json.loads(body)["message"].startswith(
                "postgres_read_uri: the database there is at schema version 8, this "
                "kohaku's is "), body
            # a version that cannot be read is said to be that, not a missing schema
            primary.psql(empty.rsplit("/", 1)[1], "DROP TABLE kohaku_schema_version; "
                                                  "CREATE VIEW kohaku_schema_version AS "
                                                  "SELECT 1 / 0 AS version")
            status, _, body = Loaded("postgres", k, db, {}, [], "").get("/api/connections")
            assert status == 503, (status, body)
            message = json.loads(body)["message"]
            assert message.startswith("postgres_read_uri: cannot read the schema version "
                                      "there ("), body
            assert "division by zero" in message, body
        finally:
            assert k.close() == 0
    finally:
        if standby:
            standby.close()
        primary.close()


def _log_entries(text):
    """The server log's entries (a line and the tab-indented lines that continue it)."""
    entries = []
    for line in text.splitlines():
        if line.startswith(("\t", " ")) and entries:
            entries[-1] += "\n" + line
        else:
            entries.append(line)
    return entries


def test_postgres_read_connection_runs_without_jit(request, tmp_path):
    """The console's questions run without JIT: the estimates of jsonb_each make a channel's
    issue spans look large enough (cost ~170k) for PostgreSQL to compile ~90 functions at
    every call, most of a 300-600 ms answer under ingest. The database here JITs every query
    (jit_above_cost = 0) and auto_explain logs every plan; the test's own session's plan shows
    JIT (so it is on and would be used), the `kohaku read` session's plans do not."""
    cluster = request.getfixturevalue("pg_cluster")
    db = PgDb(cluster, unique_db_name("nojit"))
    for setting in ("jit = on", "jit_above_cost = 0", "session_preload_libraries = auto_explain",
                    "auto_explain.log_min_duration = 0"):
        cluster.psql("postgres", f'ALTER DATABASE "{db.dbname}" SET {setting}')
    seen = len(cluster.log_text())
    k = Kohaku(db.settings(), directory=tmp_path).start()
    try:
        loaded = Loaded("postgres", k, db, {}, [], "")
        reports, conns = impaired_calls(datetime.now(timezone.utc) - timedelta(minutes=2),
                                        lambda b, s: (b, s) == ("chromium", "loss3"))
        post_in_order(k, reports)
        wait_until(lambda: db.count("quality_stream") > 0, 30, message="quality rows")
        channel = next(iter(conns.values()))["channel"]
        c = loaded.api("channels/" + urllib.parse.quote(channel, safe=""))
        assert {p["connection_id"] for p in c["quality"]["participants"]} == set(conns)
        assert loaded.api("overview", last="1h")["reports"]["time"]
        read = [r[0] for r in db.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'kohaku read'", (db.dbname,))]
        assert len(read) == 1, read
        ours = "\n".join(r[0] for r in db.query(
            "EXPLAIN (ANALYZE) SELECT count(*) FROM quality_issue_span"))
    finally:
        assert k.close() == 0
    # JIT is there and this database uses it (PostgreSQL's llvmjit, in Debian's postgresql-15)
    assert "JIT:" in ours, "no JIT in this PostgreSQL, so the test shows nothing:\n" + ours
    plans = [e for e in _log_entries(cluster.log_text()[seen:])
             if f"[{read[0]}]" in e.split("\n")[0] and "plan:" in e]
    spans = [e for e in plans if "FROM quality_issue_span" in e]
    assert spans, "no plan of the channel's issue spans from the read session was logged"
    jitted = [e for e in plans if "JIT:" in e]
    assert not jitted, jitted[0]


BAD_PARAMS = [
    ("connections?sort=best", "sort"),
    ("connections?verdict=fine", "verdict"),
    ("connections?page=0", "page"),
    ("connections?page=x", "page"),
    ("connections?per_page=501", "per_page"),
    ("connections?last=forever", "last"),
    ("connections?from=yesterday", "from"),
    ("connections?to=2026-13-01T00:00:00Z", "to"),
    ("connections?from=2026-12-01T10:00:00.000Z&to=2026-12-01T09:00:00.000Z", "from"),
    ("connections?channel=%zz", "channel"),
    ("connections?client=" + "x" * 300, "client"),
    ("overview?last=-1h", "last"),
    ("connections/{id}/samples?table=sora_connection", "table"),
    ("connections/{id}/samples?table=rtc_inbound_rtp_stream_stats&limit=0", "limit"),
    ("connections/{id}/samples?table=rtc_inbound_rtp_stream_stats&offset=-1", "offset"),
]


@pytest.mark.parametrize("path,field", BAD_PARAMS, ids=[p for p, _ in BAD_PARAMS])
def test_bad_parameter_is_400_naming_it(loaded, path, field):
    status, headers, body = loaded.get("/api/" + path.replace("{id}", loaded.bad_ids[0]))
    assert status == 400, body
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["message"].startswith(field + ":"), body


@pytest.mark.parametrize("path", ["connections/0123456789ABCDEFGHJKMNPQRS",
                                  "connections/0123456789ABCDEFGHJKMNPQRS/series",
                                  "connections/0123456789ABCDEFGHJKMNPQRS/samples?table="
                                  "rtc_transport_stats",
                                  "channels/no-such-channel", "nothing", "connections/x/y"])
def test_unknown_is_404(loaded, path):
    status, _, body = loaded.get("/api/" + path)
    assert status == 404, body
    assert json.loads(body)["message"]


def test_pages_files_and_headers(loaded):
    for path in ("/", "/connections", "/overview", "/connection/X", "/channel/X"):
        status, h, body = loaded.get(path)
        assert status == 200 and h["content-type"].startswith("text/html"), path
        assert "<script" not in re.sub(r'<script (type="module" )?src="/[^"]+"></script>', "",
                                       body), path
        assert "script-src 'self'" in h["content-security-policy"]
        assert "unsafe-inline" not in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff"
    status, h, _ = loaded.get("/static/common.js")
    assert status == 200 and h["content-type"].startswith("text/javascript")
    status, h, _ = loaded.get("/vendor/dygraph.min.js")
    assert status == 200 and h["content-type"].startswith("text/javascript")
    assert loaded.get("/static/../README.md")[0] == 404
    assert loaded.get("/vendor/../../etc/passwd")[0] == 404
    status, h, _ = loaded.get("/api/overview")
    assert h["cache-control"] == "no-store" and "default-src 'none'" in \
        h["content-security-policy"]


# --- authentication, TLS, where it listens ------------------------------------------------------

@pytest.fixture
def pki(tmp_path):
    (tmp_path / "pki").mkdir()
    return make_pki(str(tmp_path / "pki"))


def console_get(k, path, headers=None, tls=None):
    scheme = "https" if tls else "http"
    return http_get(f"{scheme}://127.0.0.1:{k.console_port}{path}", headers, context=tls)


def check_auth(k, good, wrong, tls=None):
    for path in ("/api/connections", "/", "/static/common.js", "/api/nothing"):
        status, h, body = console_get(k, path, tls=tls)
        assert status == 401, (path, body)
        assert json.loads(body)["message"] == "console: authentication required"
        assert "www-authenticate" in h
        for w in wrong:
            assert console_get(k, path, {"authorization": w}, tls=tls)[0] == 401, (path, w)
    assert console_get(k, "/api/connections", {"authorization": good}, tls=tls)[0] == 200
    assert console_get(k, "/", {"authorization": good}, tls=tls)[0] == 200
    assert console_get(k, "/api/nothing", {"authorization": good}, tls=tls)[0] == 404


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_token_is_required_when_set(kohaku_factory):
    k = kohaku_factory(console_token="s3cret-token")
    check_auth(k, "Bearer s3cret-token", ["Bearer s3cret-tokeN", "Bearer s3cret-token2",
                                          "Bearer ", "s3cret-token", basic("a", "b")])


def test_basic_auth_is_required_when_set(kohaku_factory):
    k = kohaku_factory(console_user="ops", console_password="pa ss:word")
    check_auth(k, basic("ops", "pa ss:word"), [basic("ops", "pa ss:wore"), basic("op", "x"),
                                               "Bearer pa ss:word", "Basic"])
    status, h, _ = console_get(k, "/")
    assert h["www-authenticate"].startswith("Basic realm=")


def test_console_over_tls_with_a_token(kohaku_factory, pki):
    s = tls_server_settings(pki)
    del s["https"]  # the stats listener stays cleartext: only the console serves TLS
    k = kohaku_factory(s, console_https="true", console_token="tls-token")
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    check_auth(k, "Bearer tls-token", ["Bearer other"], tls=ctx)
    # cleartext on the TLS port gets no answer
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{k.console_port}/", timeout=5).read()
    # the certificate is the configured one: a client trusting another CA refuses it
    with pytest.raises(urllib.error.URLError):
        console_get(k, "/", tls=ssl.create_default_context())


@pytest.mark.parametrize("addr", ["0.0.0.0", "::"])
def test_no_console_off_loopback_without_a_secret(kohaku_factory, addr):
    k = kohaku_factory(console_listen_addr=addr, wait=False)
    assert k.wait_exit(20) != 0
    text = k.log_text() + k.stderr_text()
    assert "console_listen_addr" in text and "console_token" in text, text


# --- the pages in headless Chromium ------------------------------------------------------------

class Browser:
    """Headless Chromium through chromedriver: pages opened until their body says
    data-ready, the console messages of each page, full-page screenshots."""

    def __init__(self, profile):
        need_tool("chromium")
        need_tool("chromedriver")
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            pytest.fail("python3-selenium is not installed (scripts/install-deps --test)")
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1000", f"--user-data-dir={profile}",
                  "--no-first-run", "--disable-extensions", "--disable-background-networking"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        self.d.set_page_load_timeout(30)

    def open(self, url):
        self.d.get(url)
        return self.ready()

    def ready(self):
        state = wait_until(lambda: self.js("return document.body && "
                                           "['true', 'error'].includes(document.body.dataset"
                                           ".ready) && document.body.dataset.ready"), 30,
                           interval=0.05, message="the page to be ready")
        return state

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def logs(self):
        return self.d.get_log("browser")

    def shot(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        height = self.js("return document.documentElement.scrollHeight")
        self.d.set_window_size(1400, min(max(height + 200, 800), 12000))
        self.d.save_screenshot(path)
        self.d.set_window_size(1400, 1000)

    def quit(self):
        self.d.quit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(str(tmp_path_factory.mktemp("chromium-profile")))
    yield b
    b.quit()


@pytest.fixture
def page(loaded, browser, request):
    """browser on loaded's console; at the end, no page may have logged an error or warning
    to the console (CSP refusals, failed requests, exceptions)."""
    browser.logs()  # what earlier tests left
    yield browser
    # (the tests' own getImageData calls make Chromium suggest willReadFrequently)
    problems = [l for l in browser.logs() if l["level"] in ("SEVERE", "WARNING")
                and "willReadFrequently" not in l["message"]]
    assert not problems, problems


def shot(page, loaded, name):
    page.shot(os.path.join(SHOTS, loaded.kind, name + ".png"))


# JS: for every drawn chart, its id and how many pixels its canvases have drawn on.
INKED = """
return [...document.querySelectorAll('figure[data-chart]')].map((f) => {
    let inked = 0;
    for (const c of f.querySelectorAll('canvas')) {
        if (!c.width || !c.height) continue;
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < px.length; i += 4) if (px[i]) inked++;
    }
    return [f.dataset.chart, inked];
});
"""

# JS: the plot canvas of each chart (dygraphs draws the lines on hidden_): how many pixels
# have one of the series' colours (the grid and axes are grey).
LINES = """
return (window.kohakuCharts || []).map((e) => {
    const g = e.dygraph;
    if (!g) return [e.id, -1];
    const rgb = g.getColors().map((c) => {
        const x = document.createElement('canvas').getContext('2d');
        x.fillStyle = c; x.fillRect(0, 0, 1, 1);
        return x.getImageData(0, 0, 1, 1).data;
    });
    const c = g.hidden_;
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4)
        if (px[i + 3] > 200 && rgb.some((k) => Math.abs(k[0] - px[i]) + Math.abs(k[1] -
            px[i + 1]) + Math.abs(k[2] - px[i + 2]) < 60)) n++;
    return [e.id, n];
});
"""

# JS: what would show that report text became markup or ran.
PWNED = """
return {pwned: window.__pwned === undefined ? null : String(window.__pwned),
        injected: document.querySelectorAll('.pwned, [onerror], img').length,
        scripts: [...document.scripts].map((s) => s.getAttribute('src'))};
"""


def assert_clean(page):
    got = page.js(PWNED)
    assert got["pwned"] is None, got
    assert got["injected"] == 0, got
    assert all(s and s.startswith(("/static/", "/vendor/")) for s in got["scripts"]), got


def list_rows(page):
    return page.js("return [...document.querySelectorAll('#list tbody tr[data-connection]')]"
                   ".map((r) => [r.dataset.connection, r.cells[7].textContent, "
                   "r.cells[2].textContent])")


def test_browser_list_shows_the_verdicts_and_opens_a_connection(loaded, page):
    assert page.open(loaded.url + "/?per_page=200") == "true"
    rows = list_rows(page)
    api = {r["connection_id"]: r for r in loaded.api("connections", per_page=500)["rows"]}
    assert [r[0] for r in rows] == list(api)  # the API's order: worst first
    for cid, verdict, client in rows:
        assert verdict == api[cid]["verdict"], cid
        assert client == loaded.conns[cid]["client"]
    worst = loaded.quality("--worst", "--since", "1h", "--limit", "500")["connections"]
    shown = {cid: v for cid, v, _ in rows}
    assert all(shown[w["connection_id"]] == w["verdict"] for w in worst)
    counts = page.js("return Object.fromEntries([...document.querySelectorAll('#counts a')]"
                     ".map((a) => [a.dataset.verdict, a.textContent]))")
    for v in ("all", "bad", "warning", "ok"):
        assert counts[v] == f"{v} {loaded.api('connections')['counts'][v]}"
    assert_clean(page)
    shot(page, loaded, "connections")
    # the filter form: verdict bad
    from selenium.webdriver.support.ui import Select
    Select(page.d.find_element("name", "verdict")).select_by_value("bad")
    page.d.find_element("css selector", "#filters button[type=submit]").click()
    wait_until(lambda: "verdict=bad" in page.d.current_url, 10)
    page.ready()
    assert {r[1] for r in list_rows(page)} == {"bad"}
    # clicking the first connection id opens its page
    page.open(loaded.url + "/")
    first = page.d.find_element("css selector", "#list tbody tr[data-connection] td.id a")
    cid = first.text
    first.click()
    wait_until(lambda: urllib.parse.urlparse(page.d.current_url).path == "/connection/" + cid,
               10,
               message=f"/connection/{cid} to open (at {page.d.current_url})")
    assert page.ready() == "true"
    assert page.js("return document.getElementById('title').textContent") == cid


def test_browser_connection_charts_are_drawn_from_the_stored_values(loaded, page):
    cid = next(c for c, v in loaded.conns.items() if v["client"] == "receiver-chromium"
               and v["channel"].startswith("chromium-loss3"))
    assert page.open(loaded.url + "/connection/" + cid) == "true"
    charts = page.js("return window.kohakuCharts.map((e) => ({id: e.id, x: e.x, "
                     "series: e.series, spans: e.spans.length}))")
    ids = [c["id"] for c in charts]
    for want in ("bitrate", "packet_rate", "loss_percent", "jitter_ms", "frames_per_second",
                 "frame_height", "concealment_percent", "mos"):
        assert any(i.endswith(":" + want) for i in ids), (want, ids)
    assert "timeline" in ids and any(i.startswith("connection:") for i in ids)
    inked = dict(page.js(INKED))
    assert set(inked) == set(ids) and all(n > 500 for n in inked.values()), inked
    lines = dict(page.js(LINES))
    # a line of zeros lies on the x axis: the others must show in their series' colours
    nonzero = {c["id"] for c in charts if any(v for s in c["series"] for v in s["values"])}
    assert not {i: n for i, n in lines.items() if i in nonzero - {"timeline"} and n <= 20}, \
        lines
    # the values are the stored quality rows
    for c in charts:
        m = re.fullmatch(r"(inbound|outbound):(.+):([a-z_]+)", c["id"])
        if not m:
            continue
        stype = m[1] + "-rtp"
        rows = loaded.db.rows("quality_stream", "connection_id = ? AND stats_id = ? AND "
                              "stats_type = ?", (cid, m[2], stype), order_by='"time"')
        assert c["x"] == [ms_of(r["time"]) for r in rows], c["id"]
        for s in c["series"]:
            assert all(close(r[s["key"]], v) for r, v in zip(rows, s["values"])), \
                (c["id"], s["key"])
    # and, where a chart shows a member as the browser reported it, the stored stats rows:
    # the received resolution and jitter (ms) of each inbound stream
    raw_checked = 0
    for c in charts:
        m = re.fullmatch(r"inbound:(.+):(frame_height|jitter_ms)", c["id"])
        if not m:
            continue
        raw = {ms_of(r["time"]): r for r in loaded.db.rows(
            "rtc_inbound_rtp_stream_stats", "connection_id = ? AND stats_id = ?", (cid, m[1]))}
        column, scale = ("frame_height", 1) if m[2] == "frame_height" else ("jitter", 1000)
        for t, v in zip(c["x"], c["series"][0]["values"]):
            if v is not None:
                assert close(raw[t][column] * scale, v), (c["id"], t)
                raw_checked += 1
    assert raw_checked > 20
    # the issues of the connection are spans of its charts and lines of the table
    q = loaded.quality(cid)
    issues = page.js("return document.querySelectorAll('#issues tbody tr').length")
    assert issues == max(1, len(q["issues"]))
    assert any(c["spans"] for c in charts) == bool(q["issues"])
    shot(page, loaded, "connection")


def test_browser_sample_viewer_shows_the_stored_rows(loaded, page):
    cid = next(c for c, v in loaded.conns.items() if v["client"] == "sender-chromium"
               and v["channel"].startswith("chromium-clean"))
    table = "rtc_outbound_rtp_stream_stats"
    assert page.open(f"{loaded.url}/connection/{cid}?table={table}&offset=0") == "true"
    wait_until(lambda: page.js("return document.querySelectorAll('pre.sample').length"), 10)
    shown = [json.loads(t) for t in page.js(
        "return [...document.querySelectorAll('pre.sample')].map((p) => p.textContent)")]
    stored = loaded.db.rows(table, "connection_id = ?", (cid,), order_by='"time", stats_id')
    assert len(shown) == min(10, len(stored))
    for s, r in zip(shown, stored):
        assert s["id"] == r["stats_id"] and s["packetsSent"] == r["packets_sent"]
        assert s["bytesSent"] == r["bytes_sent"] and ms_of(r["time"]) == ms_of(s["time"])
    page.d.find_element("id", "next").click()
    wait_until(lambda: page.js("return document.getElementById('position').textContent")
               .startswith("rows 11.."), 10)
    wait_until(lambda: page.js("return document.querySelector('pre.sample') && "
                               "JSON.parse(document.querySelector('pre.sample').textContent)"
                               ".id") == stored[10]["stats_id"], 10)


def test_browser_channel_shows_every_participant(loaded, page):
    for channel in ("room-av", "room-audio",
                    next(v["channel"] for v in loaded.conns.values()
                         if v["channel"].startswith("chromium-bw"))):
        want = {cid for cid, v in loaded.conns.items() if v["channel"] == channel}
        assert page.open(loaded.url + "/channel/" + urllib.parse.quote(channel, safe="")) \
            == "true"
        got = page.js("return [...document.querySelectorAll('#participants tbody "
                      "tr[data-connection]')].map((r) => r.dataset.connection)")
        assert set(got) == want and len(got) == len(want), channel
        charts = page.js("return window.kohakuCharts.map((e) => [e.id, e.series.map((s) => "
                         "s.key)])")
        assert len(charts) == 5
        assert all(set(keys) == want for _, keys in charts)
        inked = dict(page.js(INKED))
        assert all(n > 500 for n in inked.values()), inked
        if channel.startswith("chromium-bw"):
            # the sender with the bandwidth limit is the one pointed at
            culprit = page.js("return [...document.querySelectorAll('#participants tr.culprit')]"
                              ".map((r) => r.dataset.connection)")
            assert [loaded.conns[c]["client"] for c in culprit] == ["sender-chromium"]
            shot(page, loaded, "channel")


def test_browser_overview_renders(loaded, page):
    assert page.open(loaded.url + "/overview") == "true"
    inked = dict(page.js(INKED))
    assert set(inked) == {"overview:reports", "overview:connections", "overview:with_issues",
                          "overview:bad"}
    assert all(n > 500 for n in inked.values()), inked
    nodes = page.js("return [...document.querySelectorAll('#nodes tbody tr')].map((r) => "
                    "r.cells[0].textContent)")
    assert set(nodes) == {"sora@127.0.0.1", "sora@" + XSS}
    assert_clean(page)
    shot(page, loaded, "overview")


def test_browser_hostile_report_runs_nothing(loaded, page):
    from selenium.webdriver.common.action_chains import ActionChains
    cid = loaded.bad_ids[0]
    enc = urllib.parse.quote(loaded.bad_channel, safe="!'()*")  # as encodeURIComponent
    checks = [
        ("/?client=" + urllib.parse.quote(loaded.conns[cid]["client"], safe=""), XSS),
        ("/?channel=" + enc, loaded.bad_channel),
        ("/connection/" + cid, "Sora " + XSS),
        ("/channel/" + enc, loaded.bad_channel),
        ("/overview", "sora@" + XSS),
    ]
    for path, text in checks:
        assert page.open(loaded.url + path) == "true", path
        assert text in page.js("return document.body.textContent"), path  # shown, as text
        # hovering the charts makes the legends write the series' names
        for fig in page.d.find_elements("css selector", "figure[data-chart] .plot")[:3]:
            ActionChains(page.d).move_to_element(fig).perform()
        assert_clean(page)
    page.open(loaded.url + "/?channel=" + enc)
    assert set(r[0] for r in list_rows(page)) == set(loaded.bad_ids)
    # the links are built from the ids: they lead to the pages of those ids
    hrefs = page.js("return [...document.querySelectorAll('#list a')].map((a) => "
                    "a.getAttribute('href'))")
    assert "/channel/" + enc in hrefs
    # every table of the JSON viewer, every page of it
    page.open(loaded.url + "/connection/" + cid)
    tables = page.js("return [...document.getElementById('table').options].map((o) => o.value)")
    assert "rtc_inbound_rtp_stream_stats" in tables
    for t in tables:
        page.open(f"{loaded.url}/connection/{cid}?table={t}")
        wait_until(lambda: page.js("return document.querySelectorAll('pre.sample').length"), 10)
        assert_clean(page)
    page.open(f"{loaded.url}/connection/{cid}?table=rtc_inbound_rtp_stream_stats")
    wait_until(lambda: page.js("return document.querySelectorAll('pre.sample').length"), 10)
    text = page.js("return document.getElementById('sample-list').textContent")
    assert "vendor" in text and "pwned" in text  # the markup is there, as text
    shot(page, loaded, "hostile-connection")
    page.open(loaded.url + "/channel/" + enc)
    shot(page, loaded, "hostile-channel")

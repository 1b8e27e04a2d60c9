"""Unchanged objects stored once (issue 16, first part): a codec, certificate or ICE
candidate object whose content (every member but `timestamp`) equals the last stored sample
of the same (connection_id, stats_id) is not written again.

On SQLite and PostgreSQL, the browser fixtures (each a t3/t10 pair), the impaired calls and a
made-up call with a codec change, a change back and a new candidate after an ICE restart are
sent to two daemons, dedup on and off, each with a database of its own and the same reports:
- on: the deduplicated tables hold one row per content change of each object, as computed
  here from the reports; off: one row per sample; the other tables are the same;
- the rate views, the quality rows, `kohaku quality ID --json`, the console API and the
  "codec / candidate in use at T" question (README's query: the latest row at or before T)
  give the same answers on and off.
Two daemons on one PostgreSQL database, a connection's reports alternating between them,
give the same answers (for calls whose objects do not change and change back: README,
"Limits"). Then: a redelivered report loses no row, a restart (empty map) stores again, and
a kill -9 with reports in the spool replays them with every answer intact."""
import json
import os
import signal
import sqlite3
import subprocess
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from helpers import (KOHAKU_BIN, Kohaku, PgDb, SqliteDb, load_fixture, make_envelope,
                     post_h2, sora_id, wait_until)
from pgcluster import unique_db_name

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER = os.path.join(HERE, "..", "fixtures", "browser")
IMPAIRED = os.path.join(HERE, "..", "fixtures", "impaired")
DEDUP_TYPES = {"codec": "rtc_codec_stats", "certificate": "rtc_certificate_stats",
               "local-candidate": "rtc_ice_candidate_stats",
               "remote-candidate": "rtc_ice_candidate_stats"}
VIEWS = ["rtc_inbound_rtp_rates", "rtc_outbound_rtp_rates", "rtc_ice_candidate_pair_rates"]
KEEP_TABLES = ["rtc_inbound_rtp_stream_stats", "rtc_outbound_rtp_stream_stats",
               "rtc_remote_inbound_rtp_stream_stats", "rtc_transport_stats",
               "rtc_ice_candidate_pair_stats", "quality_stream", "quality_connection"]


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def content(obj):
    return json.dumps({k: v for k, v in obj.items() if k != "timestamp"}, sort_keys=True)


def files_of(directory):
    """{(browser, scenario, side): [path, ...] in time order} of a fixture directory."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json") or "-t" not in name:
            continue
        stem, t = name[:-5].rsplit("-t", 1)
        browser, scenario, side = stem.split("-")
        out.setdefault((browser, scenario, side), []).append((int(t), os.path.join(directory,
                                                                                   name)))
    return {k: [p for _, p in sorted(v)] for k, v in out.items()}


def changed_call():
    """One call's stats arrays: the chromium av sender, a codec's fmtp changed in the third
    report and back in the fourth, a new local candidate from the fifth (an ICE restart)."""
    t3 = load_fixture(os.path.join(BROWSER, "chromium-av-sender-t3.json"))
    t10 = load_fixture(os.path.join(BROWSER, "chromium-av-sender-t10.json"))
    codec = next(o["id"] for o in t10 if o["type"] == "codec")
    cand = next(o for o in t10 if o["type"] == "local-candidate")

    def edit(stats, fmtp=None, extra_cand=False):
        out = [dict(o) for o in stats]
        for o in out:
            if fmtp and o["id"] == codec:
                o["sdpFmtpLine"] = fmtp
        if extra_cand:
            out.append(dict(cand, id=cand["id"] + "-restart", port=cand.get("port", 0) + 1))
        return out
    return [t3, t10, edit(t10, fmtp="minptime=20"), t10, edit(t10, extra_cand=True),
            edit(t10, extra_cand=True)]


def reports(base):
    """Every envelope, in time order per connection: (envelopes, {connection_id: [stats
    arrays in time order]})."""
    envs, seqs = [], {}
    calls = [(k, [load_fixture(p) for p in v]) for k, v in files_of(BROWSER).items()]
    calls += [(k, [load_fixture(p) for p in v]) for k, v in files_of(IMPAIRED).items()]
    calls.append((("chromium", "changed", "sender"), changed_call()))
    for n, ((browser, scenario, side), arrays) in enumerate(calls):
        cid = sora_id()
        channel = f"{browser}-{scenario}-{n}"
        seqs[cid] = arrays
        for i, stats in enumerate(arrays):
            envs.append(make_envelope(stats, connection_id=cid, channel_id=channel,
                                      client_id=f"{side}-{browser}",
                                      timestamp=iso(base + timedelta(seconds=2 * i))))
    return envs, seqs


def expected_rows(arrays):
    """{(stats_type, stats_id): rows} dedup on stores: one per content change."""
    out, last = {}, {}
    for stats in arrays:
        for o in stats:
            if o["type"] not in DEDUP_TYPES:
                continue
            key = (o["type"], o["id"])
            c = content(o)
            if last.get(key) != c:
                out[key] = out.get(key, 0) + 1
                last[key] = c
    return out


def samples(arrays):
    out = {}
    for stats in arrays:
        for o in stats:
            if o["type"] in DEDUP_TYPES:
                out[(o["type"], o["id"])] = out.get((o["type"], o["id"]), 0) + 1
    return out


def make_db(request, tmp_path_factory, kind, tag):
    if kind == "sqlite":
        return SqliteDb(tmp_path_factory.mktemp(f"dedup-{tag}"))
    return PgDb(request.getfixturevalue("pg_cluster"), unique_db_name("dedup" + tag))


def post_all(k, envs):
    for env in envs:
        r = post_h2(k.port, env)
        assert r.status == 204, r


def norm(v):
    if isinstance(v, datetime):
        return iso(v.astimezone(timezone.utc))
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def table_rows(db, table, order):
    return [{c: norm(v) for c, v in r.items()} for r in db.rows(table, order_by=order)]


class Fed:
    def __init__(self, k, db, seqs, envs):
        self.k, self.db, self.seqs, self.envs = k, db, seqs, envs

    def api(self, path):
        url = f"http://127.0.0.1:{self.k.console_port}/api/{path}"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200
            return json.loads(r.read())

    def quality(self, cid):
        out = subprocess.run([KOHAKU_BIN, "-C", self.k.config_path, "quality", cid, "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fed(request, tmp_path_factory):
    """{True: Fed, False: Fed}: the same reports through a daemon with dedup on and off."""
    envs, seqs = reports(datetime.now(timezone.utc) - timedelta(minutes=10))
    out = {}
    try:
        for on in (True, False):
            db = make_db(request, tmp_path_factory, request.param, "on" if on else "off")
            k = Kohaku(dict(db.settings(), dedup=on, debug="false"),
                       directory=tmp_path_factory.mktemp("dedup-daemon")).start()
            out[on] = Fed(k, db, seqs, envs)
            post_all(k, envs)
        yield out
    finally:
        for f in out.values():
            assert f.k.close() == 0, f.k.describe()


def stored_counts(db, table, types):
    where = "stats_type IN (" + ",".join("?" * len(types)) + ")"
    got = {}
    for cid, st, sid, n in db.query(
            f'SELECT connection_id, stats_type, stats_id, count(*) FROM "{table}" WHERE {where} '
            "GROUP BY connection_id, stats_type, stats_id", tuple(types)):
        got.setdefault(cid, {})[(st, sid)] = n
    return got


def test_unchanged_objects_stored_once(fed):
    on, off = fed[True], fed[False]
    for table in sorted(set(DEDUP_TYPES.values())):
        types = [t for t, tb in DEDUP_TYPES.items() if tb == table]
        got_on, got_off = stored_counts(on.db, table, types), stored_counts(off.db, table, types)
        for cid, arrays in on.seqs.items():
            want = {k: v for k, v in expected_rows(arrays).items() if k[0] in types}
            every = {k: v for k, v in samples(arrays).items() if k[0] in types}
            assert got_on.get(cid, {}) == want, (table, cid)
            assert got_off.get(cid, {}) == every, (table, cid)
    total_on = sum(on.db.count(t) for t in set(DEDUP_TYPES.values()))
    total_off = sum(off.db.count(t) for t in set(DEDUP_TYPES.values()))
    assert total_on < total_off / 2, (total_on, total_off)
    m = on.k.metrics()
    skipped = m[("kohaku_dedup_rows_total", frozenset({("result", "skipped")}))]
    assert skipped == total_off - total_on
    assert ("kohaku_dedup_rows_total", frozenset({("result", "skipped")})) not in off.k.metrics()
    # the made-up call: the codec stored thrice (first, changed, back), the new candidate once
    cid = next(c for c, a in on.seqs.items() if len(a) == 6 and
               any(o["id"].endswith("-restart") for o in a[-1]))
    by = stored_counts(on.db, "rtc_codec_stats", ["codec"])[cid]
    assert sorted(by.values())[-1] == 3
    cands = stored_counts(on.db, "rtc_ice_candidate_stats", ["local-candidate"])[cid]
    assert [n for (t, i), n in cands.items() if i.endswith("-restart")] == [1]


def test_other_tables_and_rate_views_the_same(fed):
    on, off = fed[True], fed[False]
    for table in KEEP_TABLES:
        order = "connection_id, stats_id, time"
        assert table_rows(on.db, table, order) == table_rows(off.db, table, order), table
    for view in VIEWS:
        order = "connection_id, stats_id, time"
        a, b = table_rows(on.db, view, order), table_rows(off.db, view, order)
        assert a and a == b, view


def test_quality_verdicts_the_same(fed):
    on, off = fed[True], fed[False]
    for cid in on.seqs:
        assert on.quality(cid) == off.quality(cid), cid


def without_dedup_counts(c):
    c = dict(c)
    c["tables"] = [t for t in c.get("tables", []) if t["table"] not in DEDUP_TYPES.values()]
    return c


def test_console_answers_the_same(fed):
    on, off = fed[True], fed[False]
    span = "from=2020-01-01T00:00:00.000Z&to=2099-01-01T00:00:00.000Z"
    a = on.api(f"connections?per_page=500&{span}")
    b = off.api(f"connections?per_page=500&{span}")
    assert a["total"] == len(on.seqs) and a == b
    assert on.api(f"overview?{span}") == off.api(f"overview?{span}")
    for cid in on.seqs:
        a, b = on.api(f"connections/{cid}"), off.api(f"connections/{cid}")
        # the row counts of the deduplicated tables are what differs, by design
        assert without_dedup_counts(a) == without_dedup_counts(b), cid
        ta = {t["table"]: t["rows"] for t in a["tables"]}
        tb = {t["table"]: t["rows"] for t in b["tables"]}
        for t in set(DEDUP_TYPES.values()) & set(tb):
            assert 0 < ta[t] <= tb[t]


# README's query: the codec of each inbound/outbound RTP row, the latest codec row at or
# before the row's time (with dedup off the same row is at that very time).
IN_USE = {
    "codec": (
        'SELECT s."time", s.connection_id, s.stats_id, c.mime_type, c.sdp_fmtp_line '
        'FROM {rtp} s LEFT JOIN rtc_codec_stats c ON c.connection_id = s.connection_id '
        'AND c.stats_id = s.codec_id AND c."time" = (SELECT max(c2."time") '
        'FROM rtc_codec_stats c2 WHERE c2.connection_id = s.connection_id '
        'AND c2.stats_id = s.codec_id AND c2."time" <= s."time") '
        'ORDER BY 2, 3, 1'),
    "candidate": (
        'SELECT p."time", p.connection_id, p.stats_id, l.candidate_type, l.protocol, '
        'l.port, r.candidate_type, r.address '
        'FROM rtc_ice_candidate_pair_stats p '
        'LEFT JOIN rtc_ice_candidate_stats l ON l.connection_id = p.connection_id '
        'AND l.stats_id = p.local_candidate_id AND l."time" = (SELECT max(x."time") '
        'FROM rtc_ice_candidate_stats x WHERE x.connection_id = p.connection_id '
        'AND x.stats_id = p.local_candidate_id AND x."time" <= p."time") '
        'LEFT JOIN rtc_ice_candidate_stats r ON r.connection_id = p.connection_id '
        'AND r.stats_id = p.remote_candidate_id AND r."time" = (SELECT max(x."time") '
        'FROM rtc_ice_candidate_stats x WHERE x.connection_id = p.connection_id '
        'AND x.stats_id = p.remote_candidate_id AND x."time" <= p."time") '
        'ORDER BY 2, 3, 1'),
}
EXACT = {
    "codec": (
        'SELECT s."time", s.connection_id, s.stats_id, c.mime_type, c.sdp_fmtp_line '
        'FROM {rtp} s LEFT JOIN rtc_codec_stats c ON c.connection_id = s.connection_id '
        'AND c.stats_id = s.codec_id AND c."time" = s."time" ORDER BY 2, 3, 1'),
}


def rows_of(db, sql):
    return [tuple(norm(v) for v in r) for r in db.query(sql)]


def test_in_use_at_t_the_same(fed):
    on, off = fed[True], fed[False]
    for rtp in ("rtc_inbound_rtp_stream_stats", "rtc_outbound_rtp_stream_stats"):
        a = rows_of(on.db, IN_USE["codec"].format(rtp=rtp))
        b = rows_of(off.db, EXACT["codec"].format(rtp=rtp))
        assert a and a == b, rtp
        assert any(r[3] is not None for r in a)
        assert rows_of(off.db, IN_USE["codec"].format(rtp=rtp)) == b
    a, b = rows_of(on.db, IN_USE["candidate"]), rows_of(off.db, IN_USE["candidate"])
    assert a and a == b
    assert any(r[3] is not None for r in a)
    # the made-up call's changed codec is seen while it was in use, and not after
    cid = next(c for c, arr in on.seqs.items() if len(arr) == 6 and
               any(o["id"].endswith("-restart") for o in arr[-1]))
    fmtps = [r[4] for r in rows_of(on.db, IN_USE["codec"].format(
        rtp="rtc_outbound_rtp_stream_stats")) if r[1] == cid]
    assert "minptime=20" in fmtps and fmtps[-1] != "minptime=20"


def grafana_panel_sql(title):
    with open(os.path.join(HERE, "..", "..", "grafana", "dashboards", "connection.json")) as f:
        dash = json.load(f)
    for p in dash["panels"]:
        if p.get("title") == title:
            return p["targets"][0]["rawSql"]
    raise AssertionError(f"no panel {title}")


def test_grafana_candidate_pairs_the_same(fed):
    on, off = fed[True], fed[False]
    if on.db.kind != "postgres":
        pytest.skip("Grafana's panels are PostgreSQL SQL")
    for cid in list(on.seqs)[:6]:
        sql = grafana_panel_sql("Candidate pairs").replace("$connection_id", cid).replace(
            '$__timeFilter(p."time")', "true")
        a, b = rows_of(on.db, sql), rows_of(off.db, sql)
        assert a == b, cid
        assert a and all(r[4] is not None for r in a), cid  # the local candidate's type


def test_two_instances_alternating(fed, request, tmp_path_factory):
    """Two daemons (dedup on) on one PostgreSQL database, a connection's reports alternating
    between them: each stores what it has not seen, and the answers at every T are those of
    dedup off. (Left out: the made-up call, whose codec changes and changes back: README,
    "Limits", says why two writers of one connection can then answer wrongly.)"""
    on, off = fed[True], fed[False]
    if on.db.kind != "postgres":
        pytest.skip("two daemons on one database: the PostgreSQL case")
    changed = {c for c, arr in on.seqs.items() if len(arr) == 6 and
               any(o["id"].endswith("-restart") for o in arr[-1])}
    db = make_db(request, tmp_path_factory, "postgres", "two")
    ks = [Kohaku(dict(db.settings(), debug="false"),
                 directory=tmp_path_factory.mktemp("dedup-two")).start() for _ in range(2)]
    try:
        seen = {}
        for env in on.envs:
            cid = env["connection_id"]
            if cid in changed:
                continue
            i = seen[cid] = seen.get(cid, -1) + 1
            r = post_h2(ks[i % 2].port, env)
            assert r.status == 204, r
    finally:
        for k in ks:
            assert k.close() == 0, k.describe()
    keep = lambda rows: [r for r in rows if r[1] not in changed]  # noqa: E731
    for rtp in ("rtc_inbound_rtp_stream_stats", "rtc_outbound_rtp_stream_stats"):
        sql = IN_USE["codec"].format(rtp=rtp)
        assert keep(rows_of(db, sql)) == keep(rows_of(off.db, sql)), rtp
    assert keep(rows_of(db, IN_USE["candidate"])) == keep(rows_of(off.db, IN_USE["candidate"]))
    n = db.count("rtc_codec_stats")
    assert n < off.db.count("rtc_codec_stats")


# --- redelivery, restart, spool replay ------------------------------------------------------

def call_envs(n, base):
    t10 = load_fixture(os.path.join(BROWSER, "chromium-av-sender-t10.json"))
    cid, ch = sora_id(), "dedup-" + sora_id()[:6].lower()
    return cid, [make_envelope(t10, connection_id=cid, channel_id=ch,
                               timestamp=iso(base + timedelta(seconds=5 * i)))
                 for i in range(n)]


def codec_rows(db, cid):
    return db.query("SELECT count(*) FROM rtc_codec_stats WHERE connection_id = ?", (cid,))[0][0]


def codec_objects():
    t10 = load_fixture(os.path.join(BROWSER, "chromium-av-sender-t10.json"))
    return sum(1 for o in t10 if o["type"] == "codec")


def answers(db, cid):
    return [r for r in rows_of(db, IN_USE["codec"].format(rtp="rtc_outbound_rtp_stream_stats"))
            if r[1] == cid]


@pytest.mark.storage("sqlite", "postgres", "timescaledb")
def test_redelivery_and_restart(db, kohaku_factory):
    n = codec_objects()
    cid, envs = call_envs(6, datetime.now(timezone.utc) - timedelta(minutes=5))
    k = kohaku_factory()
    post_all(k, envs[:3])
    assert codec_rows(db, cid) == n
    # the same reports again (Sora retrying): answered, nothing lost, nothing doubled
    post_all(k, envs[:3])
    assert db.count("sora_report", "source = ?", (cid,)) == 3
    assert codec_rows(db, cid) in (n, 2 * n, 3 * n)  # older samples stored again, never fewer
    assert all(r[3] is not None for r in answers(db, cid))
    assert len(answers(db, cid)) == 3 * len([1 for o in envs[0]["stats"]
                                             if o["type"] == "outbound-rtp"])
    before = codec_rows(db, cid)
    assert k.stop() == 0
    # a restart: the map is empty, so the next sample is stored, the one after skipped
    k = kohaku_factory()
    post_all(k, envs[3:4])
    assert codec_rows(db, cid) == before + n
    post_all(k, envs[4:6])
    assert codec_rows(db, cid) == before + n
    got = answers(db, cid)
    assert len(got) == 6 * len([1 for o in envs[0]["stats"] if o["type"] == "outbound-rtp"])
    assert all(r[3] is not None for r in got)


def test_kill9_with_reports_in_the_spool(tmp_path):
    """Reports acknowledged from the spool while SQLite is locked, then kill -9: the next
    start replays them (with an empty map) and every report's codec is there at its time."""
    st = SqliteDb(str(tmp_path))
    settings = dict(st.settings(), spool_dir=str(tmp_path / "spool"), storage_retry_ms=300,
                    debug="false")
    cid, envs = call_envs(8, datetime.now(timezone.utc) - timedelta(minutes=5))
    k = Kohaku(settings).start()
    port, mport = k.port, k.metrics_port
    try:
        post_all(k, envs[:2])
        locker = sqlite3.connect(st.path, timeout=10, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            post_all(k, envs[2:6])  # acknowledged from the spool
            m = k.metrics()
            assert m.get(("kohaku_spool_appended_total", frozenset()), 0) > 0
            k.stop(signal.SIGKILL)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
    finally:
        k.close()
    k = Kohaku(dict(settings, listen_port=port, exporter_listen_port=mport)).start()
    try:
        wait_until(lambda: st.count("sora_report", "source = ?", (cid,)) == 6, 60,
                   message="the spool replayed")
        post_all(k, envs[6:])
        assert st.count("sora_report", "source = ?", (cid,)) == 8
        got = answers(st, cid)
        per = len([1 for o in envs[0]["stats"] if o["type"] == "outbound-rtp"])
        assert len(got) == 8 * per and all(r[3] is not None for r in got)
        assert codec_rows(st, cid) >= 2 * codec_objects()  # stored again after the restart
    finally:
        assert k.close() == 0

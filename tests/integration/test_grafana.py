"""Grafana dashboards and rate views (issue: Grafana dashboards that answer "why was this
call bad"). Fixture reports go through kohaku into a real PostgreSQL; then every panel query,
annotation query and template-variable query of the dashboards is taken out of the JSON,
Grafana's macros are expanded the way its PostgreSQL datasource does, and each query is run
and checked. The impaired calls (tests/fixtures/impaired, sent as test_quality sends them)
check the quality panels: verdicts, issue spans, MOS and video score, uplink and downlink."""
import glob
import json
import os
import re
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from helpers import (FIXTURES_DIR, KOHAKU_BIN, REPO_ROOT, Kohaku, PgDb, load_fixture,
                     make_envelope, post_h2, sora_id)
from pgcluster import unique_db_name
from test_quality import CALLS, post_to, send_calls

GRAFANA = os.path.join(REPO_ROOT, "grafana")
BOARDS = {n: json.load(open(os.path.join(GRAFANA, "dashboards", n)))
          for n in ("overview.json", "connection.json", "channel.json")}


def test_dashboards_are_current_valid_and_linked():
    out = subprocess.run(["/usr/bin/python3", os.path.join(GRAFANA, "build_dashboards.py")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in BOARDS:  # the committed JSON is what the generator writes
        with open(os.path.join(GRAFANA, "dashboards", name)) as f:
            assert json.load(f) == BOARDS[name]
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids)
    for b in BOARDS.values():
        names = [v["name"] for v in b["templating"]["list"]]
        assert names[0] == "datasource" and b["templating"]["list"][0]["type"] == "datasource"
        ids = [p["id"] for p in b["panels"]]
        assert len(set(ids)) == len(ids)
        titles = [p["title"] for p in b["panels"]]  # run_dashboard's results are by title
        assert len(set(titles)) == len(titles)
        for p in b["panels"]:
            assert p["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        for a in b["annotations"]["list"]:
            assert a["datasource"]["uid"] == "${datasource}"
            assert a["target"]["datasource"]["uid"] == "${datasource}"
    links = [l for b in BOARDS.values() for p in b["panels"]
             for o in p["fieldConfig"]["overrides"] for prop in o["properties"]
             if prop["id"] == "links" for l in prop["value"]]
    assert links
    for l in links:
        assert l["url"].startswith("/d/kohaku-connection/")
        assert "var-connection_id=${__value.raw}" in l["url"]
        assert "from=${__data.fields.from_ms}" in l["url"]
        assert "to=${__data.fields.to_ms}" in l["url"]
    for f in ("provisioning/datasources/kohaku.yaml", "provisioning/dashboards/kohaku.yaml"):
        assert os.path.exists(os.path.join(GRAFANA, f))


# --- Grafana's PostgreSQL macros -----------------------------------------------------------------

def grafana_time(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(sql, frm, to, interval_s, variables, timescale):
    def group(m, alias):
        col, iv = m.group(1).strip(), m.group(2).strip()
        secs = interval_s if iv == "$__interval" else int(iv.rstrip("s"))
        expr = (f"time_bucket('{secs}s', {col})" if timescale
                else f"floor(extract(epoch from {col})/{secs})*{secs}")
        return expr + (' AS "time"' if alias else "")
    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", lambda m: group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(([^,]+),([^)]+)\)", lambda m: group(m, False), sql)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)",
                 lambda m: f"{m.group(1)} BETWEEN '{grafana_time(frm)}' AND '{grafana_time(to)}'",
                 sql)
    sql = sql.replace("$__unixEpochFrom()", str(int(frm.timestamp())))
    sql = sql.replace("$__timeFrom()", f"'{grafana_time(frm)}'")
    sql = sql.replace("$__timeTo()", f"'{grafana_time(to)}'")
    sql = sql.replace("$__interval", f"{interval_s}s")
    for name in sorted(variables, key=len, reverse=True):
        value = variables[name]
        if isinstance(value, list):  # multi-value: quoted and comma separated
            value = ",".join("'" + v.replace("'", "''") + "'" for v in value)
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in sql.replace("$kh$", ""), sql
    return sql


@pytest.fixture(scope="module", params=["postgresql", "timescaledb", "citus"])
def loaded(request, tmp_path_factory):
    """Every browser call in the fixtures as one connection with its t=3 and t=10 snapshots,
    7 s apart in Sora's time as in the browser's, in two channels; then the impaired calls,
    each call's two sides as two connections of one channel (test_quality.send_calls: at
    their own fixed time, 2 s apart); on plain PostgreSQL, on TimescaleDB (conftest's
    ts_cluster: time_bucket against hypertables), its chunks compressed, and on Citus
    (conftest's citus_cluster: every table distributed over two workers)."""
    cluster = request.getfixturevalue({"postgresql": "pg_cluster", "timescaledb": "ts_cluster",
                                       "citus": "citus_cluster"}[request.param])
    store = PgDb(cluster, unique_db_name("grafana"))
    k = Kohaku(store.settings()).start(timeout=90)
    k.wait_log('"msg":"postgres schema ready"', timeout=30)
    assert f'"mode":"{request.param}"' in k.log_text()
    conns = {}
    base = datetime.now(timezone.utc) - timedelta(minutes=5)
    for early in sorted(glob.glob(os.path.join(FIXTURES_DIR, "*-t3.json"))):
        name = os.path.basename(early)[:-8]
        late = early.replace("-t3.json", "-t10.json")
        cid = sora_id()
        conns[name] = cid
        channel = "room-" + name.split("-")[1]
        s3, s10 = load_fixture(early), load_fixture(late)
        dt = (s10[0]["timestamp"] - s3[0]["timestamp"]) / 1000.0
        for stats, at in ((s3, base), (s10, base + timedelta(seconds=dt))):
            env = make_envelope(stats, connection_id=cid, channel_id=channel,
                                client_id=name, role="sendonly" if "sender" in name else "recvonly",
                                timestamp=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
            r = post_h2(k.port, env)
            assert r.status == 204, r.text
    impaired = send_calls(post_to(k))  # {(browser, scenario, side): connection_id}
    if request.param == "timescaledb":  # the panels then read compressed chunks
        store.query("SELECT compress_chunk((quote_ident(chunk_schema) || '.' || "
                    "quote_ident(chunk_name))::regclass) FROM timescaledb_information.chunks")
        assert store.query("SELECT bool_and(is_compressed) FROM "
                           "timescaledb_information.chunks")[0][0] is True
    yield store, conns, impaired
    assert k.close() == 0


def run_dashboard(store, board, variables, frm=None, to=None):
    """{panel title (or "annotation: name"): (columns, rows)} of every query of the board
    over frm..to (default: the last hour)."""
    import psycopg2
    frm = frm or datetime.now(timezone.utc) - timedelta(hours=1)
    to = to or datetime.now(timezone.utc) + timedelta(minutes=1)
    timescale = bool(store.query("SELECT count(*) FROM pg_extension WHERE extname = "
                                 "'timescaledb'")[0][0])
    if timescale:  # Grafana's $__timeGroup becomes time_bucket, on hypertables
        assert store.query("SELECT count(*) FROM timescaledb_information.hypertables")[0][0]
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            rows = store.query(expand(v["query"], frm, to, 10, variables, timescale))
            assert rows, f"variable {v['name']}: no values"
    queries = [(p["title"], t["rawSql"], t["format"]) for p in board["panels"]
               for t in p["targets"]]
    queries += [("annotation: " + a["name"], a["target"]["rawSql"], "annotation")
                for a in board["annotations"]["list"]]
    results = {}
    con = psycopg2.connect(store.uri)
    try:
        for title, sql, fmt in queries:
            with con.cursor() as cur:
                cur.execute(expand(sql, frm, to, 10, variables, timescale))
                cols = [d[0] for d in cur.description]
                results[title] = (cols, cur.fetchall())
            if fmt == "time_series":
                assert cols[0] == "time", (title, cols)
            if fmt == "annotation":  # the columns Grafana reads
                assert cols[0] == "time" and set(cols) <= {"time", "timeend", "text", "tags"}
    finally:
        con.close()
    return results


def lifetime(store, cids):
    """The time range a connection link opens: the first to the last report, a minute either
    side (from_ms and to_ms of the connection lists)."""
    first, last = store.query("SELECT min(first_seen), max(last_seen) FROM sora_connection "
                              "WHERE connection_id = ANY(?)", (list(cids),))[0]
    return first - timedelta(minutes=1), last + timedelta(minutes=1)


def rows_of(result):
    cols, rows = result
    return [dict(zip(cols, r)) for r in rows]


def verdicts(store, cids):
    return {r[0]: dict(zip(("verdict", "severity", "uplink", "downlink", "mos_min", "mos_avg",
                            "video_score_min"), r[1:]))
            for r in store.query("SELECT connection_id, verdict, severity, severity_outbound, "
                                 "severity_inbound, mos_min, mos_avg, video_score_min FROM "
                                 "quality_connection_verdict WHERE connection_id = ANY(?)",
                                 (list(cids),))}


WORDS = {0: "ok", 1: "warning", 2: "bad"}


def test_overview_and_channel_queries(loaded):
    store, conns, _ = loaded
    channels = sorted({"room-" + name.split("-")[1] for name in conns})
    res = run_dashboard(store, BOARDS["overview.json"], {
        "channel": channels, "label": ["WebRTC SFU Sora"], "node": ["sora@127.0.0.1"],
        "client": sorted(conns)})
    for title, (cols, rows) in res.items():
        assert rows, f"overview: {title} is empty"
    cols, rows = res["Latest connections"]
    assert {"channel_id", "connection_id", "client_id", "role", "label", "node_name",
            "first_seen", "last_seen", "browser", "from_ms", "to_ms"} <= set(cols)
    browsers = {r[cols.index("client_id")]: r[cols.index("browser")] for r in rows}
    assert browsers["firefox-av-sender"] == "Firefox"
    assert browsers["chromium-av-sender"] == "Chromium"
    assert sum(r[1] for r in res["Reports"][1]) == 2 * len(conns)
    cols, rows = res["Connections by quality, worst first"]
    assert sorted(r[cols.index("client_id")] for r in rows) == sorted(conns)
    assert all(r[cols.index("verdict")] in ("ok", "warning", "bad") for r in rows)
    for channel in channels:
        res = run_dashboard(store, BOARDS["channel.json"], {"channel": channel})
        for title, (cols, rows) in res.items():
            if "video" in title and channel == "room-audio":
                assert not rows  # an audio-only call has no video
                continue
            assert rows, f"channel {channel}: {title} is empty"


@pytest.fixture(scope="module")
def impaired_boards(loaded):
    """The connection dashboard of each side of each impaired call, over its lifetime as the
    connection links open it: {(browser, scenario, side): run_dashboard's results}."""
    store, _, impaired = loaded
    return {key: run_dashboard(store, BOARDS["connection.json"], {"connection_id": cid},
                               *lifetime(store, [cid]))
            for key, cid in impaired.items()}


def test_connection_queries(loaded, impaired_boards):
    store, conns, _ = loaded
    seen = {}
    runs = [run_dashboard(store, BOARDS["connection.json"], {"connection_id": cid})
            for cid in conns.values()] + list(impaired_boards.values())
    for res in runs:
        for title, (cols, rows) in res.items():
            seen[title] = seen.get(title, False) or bool(rows)
    empty = [t for t, ok in seen.items() if not ok]
    assert not empty, f"panels empty for every fixture connection: {empty}"


def check_list(rows, expected, call_of, reports):
    """A connection list: the verdicts of quality_connection_verdict, worst first, what the
    impairments of the calls make of them, and the range its links open."""
    assert sorted(r["connection_id"] for r in rows) == sorted(expected)
    severities = [r["severity"] for r in rows]
    assert severities == sorted(severities, reverse=True), severities
    for r in rows:
        cid = r["connection_id"]
        for col, value in expected[cid].items():
            assert r[col] == pytest.approx(value), (call_of[cid], col)
        assert r["verdict"] == WORDS[r["severity"]]
        assert 1 <= r["mos_min"] <= r["mos_avg"] + 1e-9 <= 4.5 + 1e-9, call_of[cid]
        assert 1 <= r["video_score_min"] <= 5, call_of[cid]
        issues = set((r["issue_names"] or "").split())
        browser, scenario, side = call_of[cid]
        if scenario == "clean":
            assert r["verdict"] != "bad", (call_of[cid], issues)
        if scenario == "bw" and side == "sender":
            assert "bandwidth_limited" in issues and r["uplink"] >= 1
        if scenario == "loss3" and side == "receiver":
            assert "high_loss" in issues and r["downlink"] >= 1
        if scenario == "delay":
            assert "high_rtt" in issues
        first, last = (1000 * t.timestamp() for t in reports[cid])
        assert (r["from_ms"], r["to_ms"]) == (first - 60000, last + 60000)


def test_quality_connection_lists(loaded):
    """The overview's and each channel's connection list, and the channel's uplink and
    downlink per participant, over the impaired calls."""
    store, _, impaired = loaded
    call_of = {cid: key for key, cid in impaired.items()}
    frm, to = lifetime(store, call_of)
    expected = verdicts(store, call_of)
    assert len(expected) == len(call_of)
    reports = {r[0]: r[1:] for r in store.query(
        "SELECT connection_id, first_report, last_report FROM quality_connection_verdict "
        "WHERE connection_id = ANY(?)", (list(call_of),))}
    envs = store.query("SELECT channel_id, client_id FROM sora_connection WHERE connection_id "
                       "= ANY(?)", (list(call_of),))
    res = run_dashboard(store, BOARDS["overview.json"], {
        "channel": sorted({e[0] for e in envs}), "label": ["WebRTC SFU Sora"],
        "node": ["sora@127.0.0.1"], "client": sorted({e[1] for e in envs})}, frm, to)
    check_list(rows_of(res["Connections by quality, worst first"]), expected, call_of,
               reports)
    by_channel = {}
    for cid, channel in store.query("SELECT connection_id, channel_id FROM sora_connection "
                                    "WHERE connection_id = ANY(?)", (list(call_of),)):
        by_channel.setdefault(channel, []).append(cid)
    for channel, cids in sorted(by_channel.items()):
        res = run_dashboard(store, BOARDS["channel.json"], {"channel": channel}, frm, to)
        for title, (cols, rows) in res.items():
            assert rows, f"channel {channel}: {title} is empty"
        check_list(rows_of(res["Connections in this channel"]),
                   {c: expected[c] for c in cids}, call_of, reports)
        sides = rows_of(res["Uplink and downlink per connection"])
        assert sorted(r["connection_id"] for r in sides) == sorted(cids)
        assert [r["uplink"] for r in sides] == sorted((r["uplink"] for r in sides), reverse=True)
        for r in sides:
            browser, scenario, side = call_of[r["connection_id"]]
            # over the whole call, the worst of the intervals is the verdict's
            assert r["uplink"] == expected[r["connection_id"]]["uplink"]
            assert r["downlink"] == expected[r["connection_id"]]["downlink"]
            if side == "receiver":  # it sends no media
                assert r["uplink"] == 0 and r["uplink_issues"] is None
            if scenario == "bw" and side == "sender":
                assert r["uplink"] >= 1 and "bandwidth_limited" in r["uplink_issues"].split()
            if scenario == "loss3" and side == "receiver":
                assert "high_loss" in r["downlink_issues"].split()
        for title in ("Uplink severity per connection", "Downlink severity per connection"):
            cols, rows = res[title]
            assert {r[1] for r in rows} == set(cids)
            assert {r[2] for r in rows} <= {0, 1, 2}
        up = {}
        for t, cid, value in res["Uplink severity per connection"][1]:
            up[cid] = max(up.get(cid, 0), value)
        assert up == {c: expected[c]["uplink"] for c in cids}


def test_connection_quality_panels(loaded, impaired_boards):
    """The connection dashboard of each side of each impaired call, over its lifetime: its
    verdict, its issue spans (table and annotations), the per-stream ratings."""
    store, _, impaired = loaded
    for key, cid in sorted(impaired.items()):
        browser, scenario, side = key
        res = impaired_boards[key]
        verdict = rows_of(res["Verdict"])
        assert len(verdict) == 1
        for col, value in verdicts(store, [cid])[cid].items():
            assert verdict[0][col] == pytest.approx(value), (key, col)
        times = [t for t, _ in CALLS[(browser, scenario)][side]]  # a report per fixture
        assert verdict[0]["reports"] == len(times)
        assert float(verdict[0]["seconds"]) == times[-1] - times[0]
        if scenario == "clean":
            assert verdict[0]["verdict"] != "bad", key

        spans = rows_of(res["Issue spans"])
        stored = store.query("SELECT count(*) FROM quality_issue_span WHERE connection_id = ?",
                             (cid,))[0][0]
        assert len(spans) == stored, key  # every span is within the call's lifetime
        for s in spans:
            assert s["began"] <= s["ended"] and s["severity"] in ("warning", "bad")
            assert float(s["seconds"]) == (s["ended"] - s["began"]).total_seconds()
        names = {(s["issue"], s["began"] < s["ended"]) for s in spans}
        if scenario == "bw" and side == "sender":
            assert ("bandwidth_limited", True) in names, key
        if scenario == "loss3" and side == "receiver":
            assert ("high_loss", True) in names, key
        if scenario == "delay":
            assert any(n == "high_rtt" for n, _ in names), key
        marks = []
        for severity in ("bad", "warning"):
            for time, timeend, text, tags in res[f"annotation: Issues ({severity})"][1]:
                assert time <= timeend and text.split()[1] == severity
                assert tags.split(",")[:2] == [text.split()[0], severity]
                marks.append((time, timeend, text.split()[0], severity))
        assert sorted(marks) == sorted((s["began"], s["ended"], s["issue"], s["severity"])
                                       for s in spans)

        mos = [r[2] for r in res["Audio MOS per stream"][1]]
        assert mos and all(1 <= v <= 4.5 for v in mos), key
        score = [r[2] for r in res["Video score per stream"][1]]
        assert score and all(1 <= v <= 5 for v in score), key
        states = res["Severity per stream"][1]
        assert {r[2] for r in states} <= {0, 1, 2}
        assert sum(1 for r in states if r[1] == "connection") == len(times)
        for title in ("Loss per stream", "Round-trip time per stream", "Jitter per stream",
                      "Bitrate per stream"):
            assert res[title][1], (key, title)
        assert all(r[2] >= 0 for r in res["Bitrate per stream"][1])
        shares = res["Quality limitation shares"][1]
        assert all(0 <= r[2] <= 100 for r in shares)
        if side == "receiver":
            assert not shares  # the limitation is the sender's encoder's
        if scenario == "bw" and side == "sender" and shares:
            assert max(r[2] for r in shares if r[1].endswith(" bandwidth")) > 90
        if scenario == "loss3" and side == "receiver":
            loss = [r[2] for r in res["Loss per stream"][1] if r[1].startswith("inbound audio")]
            assert 1 < sum(loss) / len(loss) < 10, loss
        if scenario == "delay":
            rtt = [r[2] for r in res["Round-trip time per stream"][1]]
            assert 200 < sum(rtt) / len(rtt) < 450, rtt


def test_rate_views_match_the_fixture_numbers(loaded):
    store, conns, _ = loaded
    cid = conns["chromium-av-receiver"]
    early = load_fixture(os.path.join(FIXTURES_DIR, "chromium-av-receiver-t3.json"))
    late = load_fixture(os.path.join(FIXTURES_DIR, "chromium-av-receiver-t10.json"))
    for kind in ("audio", "video"):
        a = next(o for o in early if o["type"] == "inbound-rtp" and o["kind"] == kind)
        b = next(o for o in late if o["id"] == a["id"])
        dt = (b["timestamp"] - a["timestamp"]) / 1000.0
        rows = store.query("SELECT bitrate, packets_per_second, jitter_ms FROM "
                           "rtc_inbound_rtp_rates WHERE connection_id = ? AND stats_id = ? "
                           "ORDER BY \"time\"", (cid, a["id"]))
        assert rows[0][0] is None  # the first sample has no rate
        bitrate, pps, jitter = (float(x) for x in rows[1])
        assert bitrate == pytest.approx(8 * (b["bytesReceived"] - a["bytesReceived"]) / dt)
        assert pps == pytest.approx((b["packetsReceived"] - a["packetsReceived"]) / dt)
        assert jitter == pytest.approx(b["jitter"] * 1000)
    sender = conns["chromium-av-sender"]
    a = next(o for o in load_fixture(os.path.join(FIXTURES_DIR, "chromium-av-sender-t3.json"))
             if o["type"] == "outbound-rtp" and o["kind"] == "video")
    b = next(o for o in load_fixture(os.path.join(FIXTURES_DIR, "chromium-av-sender-t10.json"))
             if o["id"] == a["id"])
    rows = store.query("SELECT bitrate, frames_per_second FROM rtc_outbound_rtp_rates WHERE "
                       "connection_id = ? AND stats_id = ? ORDER BY \"time\"", (sender, a["id"]))
    dt = (b["timestamp"] - a["timestamp"]) / 1000.0
    assert float(rows[1][0]) == pytest.approx(8 * (b["bytesSent"] - a["bytesSent"]) / dt)
    assert float(rows[1][1]) == pytest.approx((b["framesEncoded"] - a["framesEncoded"]) / dt)


@pytest.mark.storage("postgres")
def test_rate_view_counter_reset_gives_null(db, tmp_path):
    pg_store = db
    with open(tmp_path / "c.ini", "w") as f:
        f.write(f"storage = postgres\npostgres_uri = {pg_store.uri}\n")
    out = subprocess.run([KOHAKU_BIN, "-C", str(tmp_path / "c.ini"), "migrate"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    t0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
    # 1 s apart: 1000 -> 2000 -> 500 (the client restarted its counters) -> 1500
    for i, (nbytes, packets, lost) in enumerate(((1000, 10, 0), (2000, 20, 1), (500, 5, 0),
                                                 (1500, 15, 2))):
        pg_store.execute("INSERT INTO rtc_inbound_rtp_stream_stats (\"time\", channel_id, "
                       "connection_id, stats_type, stats_id, stats_timestamp, kind, "
                       "bytes_received, packets_received, packets_lost) VALUES "
                       "(?, 'c', 'RESET', 'inbound-rtp', 'IT1', ?, 'audio', ?, ?, ?)",
                       (t0 + timedelta(seconds=i), 1000.0 * i, nbytes, packets, lost))
    rows = pg_store.query("SELECT bitrate, packets_per_second, loss_percent FROM "
                          "rtc_inbound_rtp_rates WHERE connection_id = 'RESET' ORDER BY \"time\"")
    assert rows[0] == (None, None, None)
    assert [float(x) for x in rows[1]] == [8000.0, 10.0, pytest.approx(100 / 11)]
    assert rows[2] == (None, None, None)  # the reset: no negative spike
    assert [float(x) for x in rows[3]] == [8000.0, 10.0, pytest.approx(200 / 12)]

"""Quality end to end: the impaired fixtures (real Chromium and Firefox reports of calls under
packet loss, delay and a bandwidth limit, tests/fixtures/impaired) go in order through the
real daemon, each call's two sides as two connections of one channel, and the quality rows
kohaku stored say what went wrong:

- the clean calls have no `bad` issue and an audio MOS >= 4.0, and Chromium's start-of-call
  bandwidth ramp-up (qualityLimitationReason "bandwidth" for ~20 s) is not reported;
- 3 % loss is a high_loss warning on the receiving side and lowers the MOS;
- the delayed call gets high_rtt;
- the bandwidth-limited call gets a sustained bandwidth_limited and a lower video score;
- the rows are the same on SQLite, PostgreSQL and TimescaleDB, and the same again when two
  kohaku instances sharing one database take the reports in turn.

The scenarios come from the files there (the list is never hard-coded); the checks name the
impairments they are about.
"""
import glob
import json
import math
import os
import re
from datetime import datetime, timezone

import pytest

import subprocess

from helpers import (KOHAKU_BIN, Kohaku, PgDb, SqliteDb, load_fixture, make_envelope, post_h2,
                     sora_id)
from pgcluster import unique_db_name

IMPAIRED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                        "impaired")
NAME = re.compile(r"(?P<browser>[a-z]+)-(?P<scenario>[a-z0-9]+)-(?P<side>sender|receiver)"
                  r"-t(?P<t>\d+)\.json$")


def calls():
    """{(browser, scenario): {side: [(t, path), ...] in time order}} of the files there."""
    out = {}
    for path in glob.glob(os.path.join(IMPAIRED, "*-t*.json")):
        m = NAME.search(os.path.basename(path))
        assert m, f"unexpected fixture name {path}"
        side = out.setdefault((m["browser"], m["scenario"]), {}).setdefault(m["side"], [])
        side.append((int(m["t"]), path))
    for sides in out.values():
        for files in sides.values():
            files.sort()
    assert out, f"no impaired fixtures in {IMPAIRED}"
    return out


CALLS = calls()


def send_calls(post):
    """Every call, its two sides interleaved in time order, through post(envelope). Returns
    {(browser, scenario, side): connection_id}."""
    ids = {}
    for (browser, scenario), sides in sorted(CALLS.items()):
        channel = f"{browser}-{scenario}-{sora_id()[:6].lower()}"
        conn = {side: sora_id() for side in sides}
        for side in sides:
            ids[(browser, scenario, side)] = conn[side]
        steps = sorted((t, side, path) for side, files in sides.items() for t, path in files)
        for t, side, path in steps:
            env = make_envelope(load_fixture(path), channel_id=channel,
                                connection_id=conn[side], client_id=f"{side}-{browser}",
                                timestamp=f"2026-12-01T10:{t // 60:02d}:{t % 60:02d}.000Z")
            post(env)
    return ids


def post_to(k):
    def post(env):
        r = post_h2(k.port, env)
        assert r.status == 204, r
    return post


def parsed(value):
    if value is None or isinstance(value, (dict, list)):
        return value
    return json.loads(value)


def time_text(value):
    """SQLite keeps the text; psycopg2 gives a datetime."""
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def boolean(value):
    return None if value is None else bool(value)


STREAM_COLS = ["kind", "ssrc", "mime_type", "since_start", "seconds", "bitrate", "packet_rate",
               "loss_percent", "jitter_ms", "round_trip_time_ms", "jitter_buffer_ms",
               "concealment_percent", "frames_per_second", "frame_height", "freeze_seconds",
               "limitation_bandwidth_percent", "limitation_cpu_percent", "r_factor", "mos",
               "video_score", "severity", "issues", "best_frame_height", "state"]
CONN_COLS = ["since_start", "seconds", "round_trip_time_ms", "send_bitrate", "connected",
             "relay_tcp", "candidate_pair_id", "severity", "severity_outbound",
             "severity_inbound", "issues", "issue_names", "streams", "mos_min", "mos_avg",
             "video_score_min", "state"]


VERDICT_COLS = ["severity", "severity_outbound", "severity_inbound", "mos_min",
                "video_score_min"]
VERDICT_MERGES = [("severity", "severity", max), ("severity_outbound", "severity_outbound", max),
                  ("severity_inbound", "severity_inbound", max), ("mos_min", "mos_min", min),
                  ("video_score_min", "video_score_min", min)]


def normal(row, cols):
    out = {}
    for c in cols:
        v = row[c]
        if c in ("issues", "state"):
            v = parsed(v)
        elif c in ("since_start", "connected", "relay_tcp"):
            v = boolean(v)
        out[c] = v
    return out


class Stored:
    """What a database holds of the calls: quality rows by (call side, time, stream)."""

    def __init__(self, db, ids):
        self.ids = ids
        side_of = {cid: key for key, cid in ids.items()}
        self.streams = {}
        for r in db.rows("quality_stream"):
            key = (side_of[r["connection_id"]], time_text(r["time"]), r["stats_type"],
                   r["stats_id"])
            self.streams[key] = normal(r, STREAM_COLS)
        self.connections = {}
        self.channels = set()
        self.browsers = {}
        for r in db.rows("quality_connection"):
            self.channels.add(r["channel_id"])
            key = (side_of[r["connection_id"]], time_text(r["time"]))
            self.connections[key] = normal(r, CONN_COLS)
            names = self.browsers.setdefault(key[0], set())
            if r["browser"] is not None:
                names.add(r["browser"])
        # the verdict so far that ingest keeps in sora_connection (schema version 7)
        self.verdicts = {side_of[r["connection_id"]]: {c: r[c] for c in VERDICT_COLS + ["browser"]}
                         for r in db.rows("sora_connection") if r["connection_id"] in side_of}

    def expected_verdicts(self):
        """The verdict columns as the connections' quality rows say they should be."""
        out = {}
        for (side, _), r in self.connections.items():
            v = out.setdefault(side, {c: None for c in VERDICT_COLS})
            for col, src, fn in VERDICT_MERGES:
                x = r[src] if src != "browser" else None
                if x is not None:
                    v[col] = x if v[col] is None else fn(v[col], x)
        for side, names in self.browsers.items():
            assert len(names) <= 1, (side, names)  # a connection's stack does not change
            out[side]["browser"] = next(iter(names), None)
        return out

    def of(self, browser, scenario, side, kind=None, stats_type=None):
        """The stream rows of one side in time order (optionally of one kind and type)."""
        rows = [(k[1], v) for k, v in self.streams.items()
                if k[0] == (browser, scenario, side) and (kind is None or v["kind"] == kind)
                and (stats_type is None or k[2] == stats_type)]
        return [v for _, v in sorted(rows, key=lambda x: x[0])]

    def conn(self, browser, scenario, side):
        rows = [(k[1], v) for k, v in self.connections.items()
                if k[0] == (browser, scenario, side)]
        return [v for _, v in sorted(rows, key=lambda x: x[0])]


def make_db(request, tmp_path_factory, kind):
    if kind == "sqlite":
        return SqliteDb(tmp_path_factory.mktemp("quality-sqlite"))
    cluster, prefix = {"postgres": ("pg_cluster", "q"), "timescaledb": ("ts_cluster", "qts"),
                       "citus": ("citus_cluster", "qcitus")}[kind]
    return PgDb(request.getfixturevalue(cluster), unique_db_name(prefix))


def run_daemon(db, directory, **settings):
    conf = dict(db.settings())
    conf.update(settings)
    return Kohaku(conf, directory=directory).start()


def ingest(request, tmp_path_factory, kind):
    db = make_db(request, tmp_path_factory, kind)
    k = run_daemon(db, tmp_path_factory.mktemp(f"quality-{kind}-daemon"))
    try:
        ids = send_calls(post_to(k))
        metrics = k.metrics()
        metrics_text = k.metrics_text()
    finally:
        assert k.stop() == 0, k.describe()
    st = Stored(db, ids)
    st.metrics, st.metrics_text, st.config = metrics, metrics_text, k.config_path
    return st


@pytest.fixture(scope="module")
def stored(request, tmp_path_factory):
    """The calls sent once per storage kind (cached for the module)."""
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = ingest(request, tmp_path_factory, kind)
        return cache[kind]
    return get


STORES = ["sqlite", "postgres", "timescaledb"]


def scenarios(name):
    return sorted(b for (b, s) in CALLS if s == name)


def rated(rows):
    return [r for r in rows if not r["since_start"]]


def mean(values):
    values = [v for v in values if v is not None]
    assert values, "no values"
    return sum(values) / len(values)


def issue_rows(rows, issue):
    return [r for r in rows if r["issues"] and issue in r["issues"]]


@pytest.mark.parametrize("kind", STORES)
def test_clean_calls(stored, kind):
    s = stored(kind)
    assert scenarios("clean"), "no clean call among the fixtures"
    for browser in scenarios("clean"):
        for side in ("sender", "receiver"):
            rows = s.of(browser, "clean", side)
            assert rows, (browser, side)
            bad = [r for r in rows if r["severity"] == 2]
            assert not bad, f"{browser} clean {side}: bad issues {[r['issues'] for r in bad]}"
            assert all(r["severity"] < 2 for r in s.conn(browser, "clean", side))
            mos = [r["mos"] for r in rated(rows) if r["kind"] == "audio" and r["mos"]]
            assert mos, f"{browser} clean {side}: no audio MOS"
            assert min(mos) >= 4.0, (browser, side, min(mos))


@pytest.mark.parametrize("kind", STORES)
def test_ramp_up_not_reported(stored, kind):
    """Chromium reports qualityLimitationReason "bandwidth" for the first ~20 s of a clean
    call while its estimate is far above what it sends: no bandwidth_limited."""
    s = stored(kind)
    for browser in scenarios("clean"):
        sender = s.of(browser, "clean", "sender", kind="video", stats_type="outbound-rtp")
        assert sender
        if browser == "chromium":  # the raw limitation is there ...
            assert max(r["limitation_bandwidth_percent"] or 0 for r in sender) > 90
        assert not issue_rows(sender, "bandwidth_limited")  # ... and is not reported
        for c in s.conn(browser, "clean", "sender"):
            assert "bandwidth_limited" not in (c["issue_names"] or "")


@pytest.mark.parametrize("kind", STORES)
def test_loss_flagged_on_the_receiver(stored, kind):
    s = stored(kind)
    assert scenarios("loss3"), "no loss3 call among the fixtures"
    for browser in scenarios("loss3"):
        received = rated(s.of(browser, "loss3", "receiver", stats_type="inbound-rtp"))
        flagged = issue_rows(received, "high_loss")
        assert flagged, f"{browser} loss3: no high_loss on the receiving side"
        assert any(r["issues"]["high_loss"]["severity"] == "warning" for r in flagged)
        loss = mean([r["loss_percent"] for r in received if r["kind"] == "audio"])
        assert 1 < loss < 10, (browser, loss)  # 3 % each way, as measured
        lossy = mean([r["mos"] for r in received if r["kind"] == "audio"])
        if browser in scenarios("clean"):
            clean = mean([r["mos"] for r in rated(s.of(browser, "clean", "receiver",
                                                       kind="audio"))])
            assert lossy < clean, (browser, lossy, clean)
        # the span: every row of it names the start it began with
        for r in flagged:
            assert r["issues"]["high_loss"]["began"] <= max(
                x["issues"]["high_loss"]["began"] for x in flagged)


@pytest.mark.parametrize("kind", STORES)
def test_delay_gets_rtt(stored, kind):
    s = stored(kind)
    assert scenarios("delay"), "no delay call among the fixtures"
    for browser in scenarios("delay"):
        for side in ("sender", "receiver"):
            rows = rated(s.of(browser, "delay", side))
            flagged = issue_rows(rows, "high_rtt")
            assert flagged, f"{browser} delay {side}: no high_rtt"
            assert all(r["issues"]["high_rtt"]["value"] >= 250 for r in flagged)
            # 150 ms +- 40 ms each way: round trips around 300 ms
            assert 200 < mean([r["round_trip_time_ms"] for r in rows]) < 450


@pytest.mark.parametrize("kind", STORES)
def test_bandwidth_limit(stored, kind):
    s = stored(kind)
    assert scenarios("bw"), "no bandwidth-limited call among the fixtures"
    for browser in scenarios("bw"):
        video = s.of(browser, "bw", "sender", kind="video", stats_type="outbound-rtp")
        flagged = issue_rows(video, "bandwidth_limited")
        assert len(flagged) >= 2, f"{browser} bw: no sustained bandwidth_limited"
        began = {r["issues"]["bandwidth_limited"]["began"] for r in flagged}
        assert len(began) == 1, began  # one span, from where it began
        first = min(i for i, r in enumerate(video) if r in flagged)
        assert video[first]["state"]["run.bandwidth_limited"] >= 9.9  # sustained 10 s
        score = mean([r["video_score"] for r in rated(video)])
        if browser in scenarios("clean"):
            clean = mean([r["video_score"] for r in rated(s.of(
                browser, "clean", "sender", kind="video", stats_type="outbound-rtp"))])
            assert score < clean, (browser, score, clean)
        conn = s.conn(browser, "bw", "sender")
        assert any("bandwidth_limited" in (c["issue_names"] or "") for c in conn)
        assert max(c["severity_outbound"] for c in conn) >= 1  # its uplink


def close(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    return a == b


def differences(a, b):
    out = []
    for table in ("streams", "connections"):
        x, y = getattr(a, table), getattr(b, table)
        if x.keys() != y.keys():
            out.append(f"{table}: rows only in one: {sorted(set(x) ^ set(y))[:5]}")
            continue
        for key in sorted(x):
            for col in x[key]:
                if not close(x[key][col], y[key][col]):
                    out.append(f"{table} {key} {col}: {x[key][col]!r} != {y[key][col]!r}")
    return out


def test_same_on_every_store(stored):
    base = stored("sqlite")
    assert len(base.streams) > 100
    for kind in ("postgres", "timescaledb"):
        diff = differences(base, stored(kind))
        assert not diff, f"sqlite and {kind} differ:\n" + "\n".join(diff[:20])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_instances_alternating(request, tmp_path_factory, stored, kind):
    """Two daemons on one database, each report to the other one than the one before: every
    interval still starts from its previous report (read back from the database), so the
    rows are those one daemon stores."""
    db = make_db(request, tmp_path_factory, kind)
    daemons = [run_daemon(db, tmp_path_factory.mktemp(f"alt-{kind}-{i}")) for i in (0, 1)]
    turns = {}  # per connection: its reports so far

    def post(env):
        n = turns.get(env["connection_id"], 0)
        post_to(daemons[n % 2])(env)
        turns[env["connection_id"]] = n + 1
    try:
        ids = send_calls(post)
        stale = sum(previous_from(k.metrics(), "cache_stale") for k in daemons)
    finally:
        for k in daemons:
            assert k.stop() == 0, k.describe()
    alternating = Stored(db, ids)
    # each daemon's memory holds the report before the other daemon's: stale, read again
    assert stale > 0
    one = stored(kind)
    # the same calls under other connection ids: compare by call side
    diff = differences(one, alternating)
    assert not diff, "one daemon and two alternating differ:\n" + "\n".join(diff[:20])
    # the verdict merged in sora_connection by two writers is the one writer's
    diff = same_verdicts(alternating.verdicts, one.verdicts)
    assert not diff, "\n".join(diff[:20])
    assert not any(r["since_start"] for k, r in alternating.connections.items()
                   if k[1] != min(t for (side, t) in alternating.connections if side == k[0]))


def same_verdicts(a, b):
    """Differences between two {side: verdict columns} maps (MOS and scores to 1e-9)."""
    out = []
    for side in sorted(set(a) | set(b)):
        va, vb = a.get(side), b.get(side)
        if va is None or vb is None:
            out.append(f"{side}: {va} / {vb}")
            continue
        for c in va:
            x, y = va[c], vb[c]
            if isinstance(x, float) or isinstance(y, float):
                if x is None or y is None or abs(x - y) > 1e-9:
                    out.append(f"{side} {c}: {x} / {y}")
            elif x != y:
                out.append(f"{side} {c}: {x} / {y}")
    return out


@pytest.mark.parametrize("kind", STORES)
def test_connection_verdict_kept_at_ingest(stored, kind):
    """sora_connection's verdict columns are the MAX and MIN of the connection's quality rows
    (the list and the worst connections read them)."""
    s = stored(kind)
    want = s.expected_verdicts()
    assert len(want) == len(s.ids)
    assert any(v["severity"] == 2 for v in want.values())
    assert any(v["mos_min"] is not None for v in want.values())
    assert any(v["browser"] == "firefox" for v in want.values())
    diff = same_verdicts(s.verdicts, want)
    assert not diff, "\n".join(diff[:20])


def send_once(db, directory):
    """The calls sent through a daemon of their own on db; their connection ids."""
    k = run_daemon(db, directory)
    try:
        return send_calls(post_to(k))
    finally:
        assert k.stop() == 0, k.describe()


def migrate(db, directory):
    """`kohaku migrate` on db, which must succeed."""
    ini = directory / "k.ini"
    ini.write_text("".join(f"{a} = {b}\n" for a, b in db.settings().items()))
    out = subprocess.run([KOHAKU_BIN, "-C", str(ini), "migrate"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def back_to_version_8(db):
    """sora_connection as schema version 8 had it: indexes on last_seen, no last_seen_hour."""
    db.execute("DROP INDEX sora_connection_last_seen_hour")
    db.execute("DROP INDEX sora_connection_channel_id")
    db.execute("ALTER TABLE sora_connection DROP COLUMN last_seen_hour")
    db.execute("CREATE INDEX sora_connection_channel ON sora_connection (channel_id, last_seen)")
    db.execute("CREATE INDEX sora_connection_last_seen ON sora_connection (last_seen)")
    if db.kind == "postgres":
        db.execute("ALTER TABLE sora_connection RESET (fillfactor)")
    db.execute("DELETE FROM kohaku_schema_version WHERE version >= 9")


def hour_of(t):
    """Hours since 1970-01-01T00:00Z, rounded down, of a stored time (SQLite's text or
    PostgreSQL's datetime)."""
    if isinstance(t, str):
        t = datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(t.timestamp() // 3600)


def connection_indexes(db):
    if db.kind == "postgres":
        return {r[0] for r in db.query("SELECT indexname FROM pg_indexes "
                                       "WHERE tablename = 'sora_connection'")}
    return {r[0] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                   "tbl_name = 'sora_connection' AND sql IS NOT NULL")}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_verdict_columns_filled_by_the_migration(request, tmp_path_factory, stored, kind):
    """A database of schema version 6 (no verdict columns) with quality rows: `kohaku migrate`
    adds the columns and fills them from the quality rows, as ingest would have."""
    db = make_db(request, tmp_path_factory, kind)
    ids = send_once(db, tmp_path_factory.mktemp(f"v6-{kind}"))
    back_to_version_8(db)
    for c in VERDICT_COLS + ["browser"]:
        db.execute(f"ALTER TABLE sora_connection DROP COLUMN {c}")
    db.execute("DELETE FROM kohaku_schema_version WHERE version >= 7")
    migrate(db, tmp_path_factory.mktemp(f"v6-{kind}-migrate"))
    assert db.query("SELECT max(version) FROM kohaku_schema_version")[0][0] >= 7
    migrated = Stored(db, ids)
    diff = same_verdicts(migrated.verdicts, migrated.expected_verdicts())
    assert not diff, "\n".join(diff[:20])
    diff = same_verdicts(migrated.verdicts, stored(kind).verdicts)
    assert not diff, "\n".join(diff[:20])


@pytest.mark.once("the same migration as the postgres variant, on Citus's DDL, about 40 s",
                   kind="citus")
@pytest.mark.parametrize("kind", ["sqlite", "postgres", "citus"])
def test_last_seen_hour_filled_by_the_migration(request, tmp_path_factory, kind):
    """Ingest stores each connection's last_seen_hour as the hour of its last_seen; a database
    of schema version 8 (indexes on last_seen, no hour) with connections in it: `kohaku
    migrate` adds the hour with the same values, indexes it in place of last_seen, and on
    PostgreSQL leaves the table's pages 30% free; there with the database's time zone 5:30
    off UTC. Citus: every statement on the distributed table (the workers refuse a text of
    several commands)."""
    db = make_db(request, tmp_path_factory, kind)
    ids = send_once(db, tmp_path_factory.mktemp(f"v8-{kind}"))
    rows = db.query("SELECT connection_id, last_seen, last_seen_hour FROM sora_connection")
    assert len(rows) == len(ids)
    want = {r[0]: hour_of(r[1]) for r in rows}
    assert {r[0]: r[2] for r in rows} == want
    new_indexes = {"sora_connection_channel_id", "sora_connection_last_seen_hour"}
    assert new_indexes <= connection_indexes(db)
    back_to_version_8(db)
    assert not new_indexes & connection_indexes(db)
    if db.kind == "postgres":  # the hour is UTC's, whatever the sessions' time zone
        db.execute(f"ALTER DATABASE {db.dbname} SET timezone = 'Asia/Kolkata'")
    migrate(db, tmp_path_factory.mktemp(f"v8-{kind}-migrate"))
    assert db.query("SELECT max(version) FROM kohaku_schema_version")[0][0] >= 9
    got = {r[0]: r[1] for r in db.query("SELECT connection_id, last_seen_hour "
                                         "FROM sora_connection")}
    assert got == want
    indexes = connection_indexes(db)
    assert new_indexes <= indexes
    assert not {"sora_connection_channel", "sora_connection_last_seen"} & indexes
    if db.kind == "postgres":
        opts = db.query("SELECT reloptions FROM pg_class WHERE relname = 'sora_connection'")
        assert opts[0][0] == ["fillfactor=70"]


def previous_from(metrics, source):
    return metrics.get(("kohaku_quality_previous_total", frozenset({("from", source)})), 0)


@pytest.mark.parametrize("kind", STORES)
def test_previous_reports_from_memory(stored, kind):
    """One daemon: each connection's first report finds nothing in memory (the database is
    asked); every later one finds its previous report in memory. On SQLite (nobody else
    wrote the file) the second report of a connection checks the latest time once and the
    rest need no read; on PostgreSQL every one is checked. The rows are still those of
    test_same_on_every_store and test_two_instances_alternating."""
    s = stored(kind)
    first, later = len(s.ids), len(s.connections) - len(s.ids)
    assert later > first
    assert previous_from(s.metrics, "database") == first
    assert previous_from(s.metrics, "cache_stale") == 0
    if kind == "sqlite":
        assert previous_from(s.metrics, "cache_checked") == first
        assert previous_from(s.metrics, "cache") == later - first
    else:
        assert previous_from(s.metrics, "cache_checked") == later
        assert previous_from(s.metrics, "cache") == 0
    assert s.metrics[("kohaku_quality_cache_entries", frozenset())] == first
    assert 0 < s.metrics[("kohaku_quality_cache_bytes", frozenset())] <= 64 << 20
    assert s.metrics[("kohaku_quality_cache_max_bytes", frozenset())] == 64 << 20


def test_without_the_cache(request, tmp_path_factory, stored):
    """quality_cache_mb = 0: every previous report read from the database, the same rows."""
    db = make_db(request, tmp_path_factory, "sqlite")
    k = run_daemon(db, tmp_path_factory.mktemp("nocache"), quality_cache_mb=0)
    try:
        ids = send_calls(post_to(k))
        m = k.metrics()
    finally:
        assert k.stop() == 0, k.describe()
    assert previous_from(m, "database") == len(Stored(db, ids).connections)
    assert previous_from(m, "cache") == 0
    diff = differences(stored("sqlite"), Stored(db, ids))
    assert not diff, "with and without the cache differ:\n" + "\n".join(diff[:20])


# --- kohaku quality ------------------------------------------------------------------------


def cli(config, *args):
    return subprocess.run([KOHAKU_BIN, "-C", config, "quality", *args], capture_output=True,
                          text=True, timeout=60)


def cli_json(config, *args):
    out = cli(config, *args, "--json")
    assert out.returncode == 0, out.stderr
    assert not out.stderr, out.stderr  # nothing logged on the way
    return json.loads(out.stdout)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_cli_connection(stored, kind):
    s = stored(kind)
    browser = scenarios("loss3")[0]
    cid = s.ids[(browser, "loss3", "receiver")]
    text = cli(s.config, cid)
    assert text.returncode == 0, text.stderr
    assert f"Connection {cid}" in text.stdout
    assert "Verdict: warning" in text.stdout or "Verdict: bad" in text.stdout
    assert re.search(r"high_loss +inbound +audio", text.stdout), text.stdout
    assert "MOS" in text.stdout
    j = cli_json(s.config, cid)
    assert j["connection_id"] == cid and j["verdict"] in ("warning", "bad")
    assert j["downlink"] in ("warning", "bad")
    spans = [i for i in j["issues"] if i["issue"] == "high_loss"]
    assert spans and all(i["began"] < i["ended"] for i in spans if i["intervals"] > 1)
    audio = [x for x in j["streams"] if x["kind"] == "audio" and x["direction"] == "inbound"]
    assert audio and 1 < audio[0]["loss_percent_avg"] < 10 and audio[0]["mos_avg"] < 4.4
    assert j["reports"] == len(s.conn(browser, "loss3", "receiver"))
    assert j["mos_min"] == pytest.approx(min(r["mos_min"] for r in s.conn(
        browser, "loss3", "receiver") if r["mos_min"] is not None))
    ivs = cli_json(s.config, cid, "--intervals")["intervals"]
    assert len(ivs) == len(s.of(browser, "loss3", "receiver"))
    assert ivs[0]["since_start"] and not ivs[-1]["since_start"]
    clean = cli_json(s.config, s.ids[(scenarios("clean")[0], "clean", "receiver")])
    assert clean["verdict"] != "bad" and clean["mos_min"] >= 4.0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_cli_channel_names_the_uplink(stored, kind):
    """The bandwidth-limited call: the sender's uplink has the problem, and what the receiver
    suffers is put down to it."""
    s = stored(kind)
    browser = scenarios("bw")[0]
    sender, receiver = s.ids[(browser, "bw", "sender")], s.ids[(browser, "bw", "receiver")]
    channel = cli_json(s.config, sender)["channel_id"]
    j = cli_json(s.config, "--channel", channel)
    who = {p["connection_id"]: p for p in j["participants"]}
    assert set(who) == {sender, receiver}
    # each participant's verdict and spans (read for the whole channel at once) are its own
    for cid in (sender, receiver):
        own = cli_json(s.config, cid)
        assert who[cid]["issues"] == own["issues"] and who[cid]["issues"], (cid, who[cid])
        for key in ("verdict", "mos_min", "reports", "first_report", "last_report"):
            assert who[cid][key] == own[key], (key, who[cid], own)
    assert who[sender]["issues"] != who[receiver]["issues"]
    assert "bandwidth_limited" in who[sender]["uplink_issues"]
    assert who[sender]["uplink"] in ("warning", "bad")
    if who[receiver]["downlink_issues"]:
        assert f"sender-{browser}" in who[receiver]["downlink_from_others_uplink"]
    text = cli(s.config, "--channel", channel).stdout
    assert f"Channel {channel}: 2 connections" in text
    assert re.search(r"sender-\w+ \(" + sender + r"\): \w+; uplink (warning|bad) \([^)]*"
                     r"bandwidth_limited", text), text


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_cli_worst(stored, kind):
    s = stored(kind)
    j = cli_json(s.config, "--worst", "--since", "3650d", "--limit", "5")
    rows = j["connections"]
    assert len(rows) == 5
    sev = [r["severity"] for r in rows]
    assert sev == sorted(sev, reverse=True) and sev[0] == 2
    ours = set(s.ids.values())
    assert all(r["connection_id"] in ours for r in rows)
    everyone = cli_json(s.config, "--worst", "--since", "3650d", "--limit", "1000")
    assert len(everyone["connections"]) == len(ours)
    # the clean calls come after every call with a bad interval
    order = [r["connection_id"] for r in everyone["connections"]]
    clean = [s.ids[(b, "clean", side)] for b in scenarios("clean") for side in
             ("sender", "receiver")]
    bad = [r["connection_id"] for r in everyone["connections"] if r["severity"] == 2]
    assert max(order.index(b) for b in bad) < min(order.index(c) for c in clean)
    # nothing in the last second
    assert cli_json(s.config, "--worst", "--since", "1s")["connections"] == []


def test_cli_errors(stored, tmp_path):
    s = stored("sqlite")
    out = cli(s.config, "0" * 26)
    assert out.returncode == 1 and "no quality rows for connection" in out.stderr
    assert out.stdout == ""
    out = cli(s.config, "--channel", "nope")
    assert out.returncode == 1 and "no connections stored for channel nope" in out.stderr
    missing = tmp_path / "missing.ini"
    missing.write_text(f"sqlite_path = {tmp_path}/none.db\n")
    out = cli(str(missing), "--worst")
    assert out.returncode == 2 and "no database at" in out.stderr
    assert not os.path.exists(tmp_path / "none.db")  # reading never creates one
    for args, msg in [((), "needs one connection id"), (("a", "b"), "unexpected argument"),
                      (("--since", "1h", "x"), "only go with quality --worst"),
                      (("--worst", "--since", "soon"), "not a duration"),
                      (("--worst", "--limit", "0"), "--limit"),
                      (("--channel", "c", "--intervals"), "--intervals only goes")]:
        out = cli(s.config, *args)
        assert out.returncode == 2 and msg in out.stderr, (args, out.stderr)
    out = subprocess.run([KOHAKU_BIN, "-C", s.config, "migrate", "--json"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "only go with quality" in out.stderr


def test_cli_old_schema(tmp_path):
    db = tmp_path / "old.db"
    ini = tmp_path / "old.ini"
    ini.write_text(f"sqlite_path = {db}\nlog_stdout = true\n")
    out = subprocess.run([KOHAKU_BIN, "-C", str(ini), "--schema-version", "4", "migrate"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = cli(str(ini), "--worst")
    assert out.returncode == 2 and "schema is version 4" in out.stderr
    assert "run kohaku migrate" in out.stderr


# --- /metrics --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_fleet_metrics(stored, kind):
    s = stored(kind)
    m = s.metrics
    node = frozenset({("node", "sora@127.0.0.1")})
    rated = [r for r in s.streams.values() if not r["since_start"]]
    with_loss = [r for r in rated if r["loss_percent"] is not None]
    assert m[("kohaku_quality_interval_loss_percent_count", node)] == len(with_loss)
    with_mos = [r for r in rated if r["mos"] is not None]
    assert m[("kohaku_quality_interval_mos_count", node)] == len(with_mos)
    assert m[("kohaku_quality_interval_mos_sum", node)] == pytest.approx(
        sum(r["mos"] for r in with_mos), rel=1e-5)
    assert m[("kohaku_quality_interval_rtt_ms_count", node)] > 0
    by = {v: m[("kohaku_quality_connections", frozenset({("node", "sora@127.0.0.1"),
                                                         ("verdict", v)}))]
          for v in ("ok", "warning", "bad")}
    assert sum(by.values()) == len(s.ids)
    worst = {}
    for (side, _), r in s.connections.items():
        worst[side] = max(worst.get(side, 0), r["severity"])
    assert by["bad"] == sum(1 for v in worst.values() if v == 2)
    assert m[("kohaku_quality_reports_total", frozenset({("result", "rated")}))] == len(
        s.connections)
    for cid in list(s.ids.values()) + sorted(s.channels):  # never a connection's or channel's id
        assert cid not in s.metrics_text
    assert "connection_id" not in s.metrics_text and "channel_id" not in s.metrics_text

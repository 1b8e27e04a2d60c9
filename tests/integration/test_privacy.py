"""IP privacy end to end (README, "IP privacy"): every browser fixture goes through the real
daemon under each privacy_ip mode, on SQLite and PostgreSQL, and then no raw candidate address
of the fixtures (Chromium's 192.0.2.2 and fd00::2, and those of one synthetic relay candidate
with a relatedAddress, a TURN url and an address in extra) is left anywhere in the database:
every column of every table is read back as text. What each mode stores instead is checked
per field; mDNS names stay; privacy_keep_networks keeps what it names; the hash is the same
in two daemons with the same key and differs with another; `kohaku import` of Sora's log
applies it too; bad values are refused with the key named, at start-up and on SIGHUP, and
the key is never logged.
"""
import json
import os
import re
import signal
import subprocess

import pytest

from helpers import (FIXTURES_DIR, KOHAKU_BIN, Kohaku, fixture_files, free_port, load_fixture,
                     make_envelope, post_h2, sora_id, wait_until, write_config)

KEY = "a-test-key-of-at-least-sixteen-bytes"
OTHER_KEY = "another-key-just-as-long-as-that"
SAMPLE = os.path.join(os.path.dirname(FIXTURES_DIR), "sora-logs-sample")

# The synthetic relay candidate: the operator's TURN server (198.51.100.20) and the client's
# addresses behind it, in every field privacy covers.
RELAY = {"id": "Irelay01", "type": "local-candidate", "timestamp": 1795500181544.5,
         "transportId": "T01", "address": "203.0.113.50", "port": 61000, "protocol": "udp",
         "candidateType": "relay", "relatedAddress": "192.0.2.2", "relatedPort": 50404,
         "url": "turn:198.51.100.20:3478?transport=udp", "relayProtocol": "udp",
         "vendorPublicAddress": "fd00::2", "vendorHosts": ["192.0.2.2", "x.local"]}
RAW = ["192.0.2.2", "fd00::2", "203.0.113.50", "198.51.100.20"]
TOKEN = re.compile(r"^h:[0-9a-f]{16}$")


def candidates(db, connection_id=None):
    where, params = ("connection_id = ?", (connection_id,)) if connection_id else (None, ())
    return db.rows("rtc_ice_candidate_stats", where, params)


def as_text(value):
    if isinstance(value, (dict, list)):  # jsonb from psycopg2
        return json.dumps(value)
    return "" if value is None else str(value)


def dump(db):
    """Every value of every table, as text: what a leak would be found in."""
    out = []
    for table in db.tables():
        for row in db.rows(table):
            out.extend(f"{table}.{col}={as_text(v)}" for col, v in row.items())
    return out


def leaks(db, raw=RAW):
    return [v for v in dump(db) if any(a in v for a in raw)]


def post_all(k, connection_ids=None):
    """Every fixture as a report of its own, the relay candidate added to the first one.
    Returns the connection ids used."""
    ids = []
    for i, path in enumerate(fixture_files()):
        stats = load_fixture(path) + ([RELAY] if i == 0 else [])
        cid = connection_ids[i] if connection_ids else sora_id()
        r = post_h2(k.port, make_envelope(stats, connection_id=cid))
        assert r.status == 204, r
        ids.append(cid)
    return ids


def extra_of(row):
    x = row["extra"]
    return x if isinstance(x, dict) or x is None else json.loads(x)


@pytest.mark.storage("sqlite", "postgres")
def test_keep_stores_the_addresses(db, kohaku_factory):
    """The default: nothing changes (and the leak check sees them when they are there)."""
    k = kohaku_factory()
    post_all(k)
    found = leaks(db)
    for a in RAW:
        assert any(a in v for v in found), a
    relay = [c for c in candidates(db) if c["stats_id"] == "Irelay01"][0]
    assert relay["url"] == "turn:198.51.100.20:3478?transport=udp"


@pytest.mark.storage("sqlite", "postgres")
@pytest.mark.parametrize("mode", ["truncate", "hash", "drop"])
def test_no_raw_address_is_stored(db, kohaku_factory, mode):
    k = kohaku_factory(privacy_ip=mode, privacy_hash_key=KEY if mode == "hash" else None)
    post_all(k)
    assert leaks(db) == []
    rows = candidates(db)
    assert len(rows) >= 4 * len(fixture_files()) // 2
    chromium = [c for c in rows if c["stats_id"].startswith("I") and c["stats_id"] != "Irelay01"
                and c["candidate_type"] == "host"]
    mdns = [c for c in rows if (c["address"] or "").endswith(".local")]
    assert chromium and mdns
    assert all(c["address"].endswith(".local") for c in mdns)  # not IPs: as they came
    relay = [c for c in rows if c["stats_id"] == "Irelay01"][0]
    x = extra_of(relay)
    if mode == "truncate":
        assert {c["address"] for c in chromium} == {"192.0.2.0", "fd00::"}
        assert all(c["ip"] == c["address"] for c in chromium)
        assert relay["address"] == "203.0.113.0"
        assert relay["related_address"] == "192.0.2.0"
        assert relay["url"] == "turn:198.51.100.0:3478?transport=udp"
        assert x["vendorPublicAddress"] == "fd00::"
        assert x["vendorHosts"] == ["192.0.2.0", "x.local"]
    elif mode == "hash":
        assert all(TOKEN.match(c["address"]) and c["ip"] == c["address"] for c in chromium)
        tokens = {c["address"] for c in chromium}
        assert len(tokens) == 2  # one token per address: 192.0.2.2 and fd00::2
        token_v4 = relay["related_address"]  # 192.0.2.2 too: the same token
        assert token_v4 in tokens
        assert TOKEN.match(relay["address"])
        assert re.match(r"^turn:\[h:[0-9a-f]{16}\]:3478\?transport=udp$", relay["url"])
        assert x["vendorHosts"] == [token_v4, "x.local"]
    else:
        assert all(c["address"] is None and c["ip"] is None for c in chromium)
        assert relay["address"] is None and relay["related_address"] is None
        assert relay["url"] is None
        assert relay["port"] == 61000 and relay["related_port"] == 50404  # the rest stays
        assert x["vendorPublicAddress"] is None
        assert x["vendorHosts"] == [None, "x.local"]


@pytest.mark.storage("sqlite", "postgres")
def test_kept_networks_stay(db, kohaku_factory):
    """The operator's TURN server and one client network kept, the rest truncated."""
    k = kohaku_factory(privacy_ip="truncate",
                       privacy_keep_networks="198.51.100.0/24, 192.0.2.0/24")
    post_all(k)
    assert leaks(db, ["fd00::2", "203.0.113.50"]) == []
    relay = [c for c in candidates(db) if c["stats_id"] == "Irelay01"][0]
    assert relay["url"] == "turn:198.51.100.20:3478?transport=udp"
    assert relay["related_address"] == "192.0.2.2"
    assert relay["address"] == "203.0.113.0"
    assert extra_of(relay)["vendorPublicAddress"] == "fd00::"


@pytest.mark.storage("sqlite", "postgres")
def test_hash_is_stable_per_key(db, kohaku_factory):
    """Two daemons with one key give the same tokens (in one database); another key others."""
    def tokens(cid):
        return sorted(c["address"] for c in candidates(db, cid) if TOKEN.match(c["address"] or ""))

    path = fixture_files()[0]
    assert "chromium" in os.path.basename(path)
    ids = []
    for key in (KEY, KEY, OTHER_KEY):
        k = kohaku_factory(privacy_ip="hash", privacy_hash_key=key)
        cid = sora_id()
        assert post_h2(k.port, make_envelope(load_fixture(path), connection_id=cid)).status == 204
        assert k.stop() == 0
        ids.append(cid)
    first, second, other = (tokens(cid) for cid in ids)
    assert len(first) == 4  # Chromium's four host candidates (two addresses)
    assert first == second
    assert not set(first) & set(other)
    assert leaks(db) == []


def test_spool_replay_applies_it(tmp_path):
    """The spool keeps bodies as they came; what is stored from them when they are replayed
    follows privacy_ip (here a daemon whose PostgreSQL is away spools the reports, and the
    next one, on SQLite, replays them)."""
    spool = str(tmp_path / "spool")
    away = Kohaku({"storage": "postgres", "spool_dir": spool, "privacy_ip": "truncate",
                   "postgres_uri": "postgresql://127.0.0.1:1/none?connect_timeout=1",
                   "console": "false"}, directory=tmp_path / "away").start(health=None)
    try:
        post_all(away)
    finally:
        assert away.close() == 0
    raw = b"".join(open(os.path.join(spool, f), "rb").read() for f in os.listdir(spool)
                   if f.endswith(".spool"))
    assert b"192.0.2.2" in raw  # the body as it arrived, until it is stored
    db_path = str(tmp_path / "replay.db")
    k = Kohaku({"storage": "sqlite", "sqlite_path": db_path, "spool_dir": spool,
                "privacy_ip": "truncate", "console": "false"},
               directory=tmp_path / "replay").start()
    try:
        wait_until(lambda: not [f for f in os.listdir(spool) if f.endswith(".spool")], 30,
                   message="the spool drained")
    finally:
        assert k.close() == 0
    import sqlite3
    con = sqlite3.connect(db_path)
    try:
        text = "\n".join(str(v) for r in con.execute("SELECT * FROM rtc_ice_candidate_stats")
                         for v in r)
        n = con.execute("SELECT count(*) FROM rtc_ice_candidate_stats").fetchone()[0]
    finally:
        con.close()
    assert n >= 4 * len(fixture_files()) // 2
    assert not any(a in text for a in RAW)
    assert "192.0.2.0" in text


def test_import_applies_it(tmp_path):
    """kohaku import of Sora's rtc_stats.jsonl: the same rules."""
    db_path = str(tmp_path / "import.db")
    cfg = str(tmp_path / "import.ini")
    write_config(cfg, {"storage": "sqlite", "sqlite_path": db_path, "privacy_ip": "truncate"})
    log = os.path.join(SAMPLE, "rtc_stats.jsonl")
    with open(log) as f:
        assert "192.0.2.2" in f.read()
    out = subprocess.run([KOHAKU_BIN, "-C", cfg, "import", log], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out
    import sqlite3
    con = sqlite3.connect(db_path)
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = "
                                            "'table' AND name NOT LIKE 'sqlite_%'")]
        text = "\n".join(str(v) for t in tables for r in con.execute(f'SELECT * FROM "{t}"')
                         for v in r)
        addresses = {a for (a,) in con.execute("SELECT address FROM rtc_ice_candidate_stats")}
    finally:
        con.close()
    assert "192.0.2.2" not in text and "fd00::2" not in text
    assert {"192.0.2.0", "fd00::"} <= addresses


def run_config(tmp_path, **keys):
    cfg = tmp_path / "kohaku.ini"
    settings = {"listen_addr": "127.0.0.1", "listen_port": free_port(),
                "exporter_listen_addr": "127.0.0.1", "exporter_listen_port": free_port(),
                "console": "false", "storage": "null"}
    settings.update(keys)
    write_config(str(cfg), settings)
    lines = cfg.read_text().splitlines()
    out = subprocess.run([KOHAKU_BIN, "-C", str(cfg)], capture_output=True, text=True,
                         timeout=10, stdin=subprocess.DEVNULL)
    return out, cfg, lines


BAD = [
    ({"privacy_ip": "anonymize"}, "privacy_ip",
     "privacy_ip: must be one of keep|truncate|hash|drop, got 'anonymize'"),
    ({"privacy_ip": "hash"}, "privacy_ip",
     "privacy_hash_key: required when privacy_ip = hash"),
    ({"privacy_ip": "hash", "privacy_hash_key": "too-short"}, "privacy_hash_key",
     "privacy_hash_key: must be 16 to 256 bytes, got 9"),
    ({"privacy_keep_networks": "192.0.2.0/24, 10.0.0.1/8"}, "privacy_keep_networks",
     "privacy_keep_networks: '10.0.0.1/8': has bits set past its prefix length"),
    ({"privacy_keep_networks": "turn.example.com"}, "privacy_keep_networks",
     "privacy_keep_networks: 'turn.example.com': not an IPv4 or IPv6 address"),
    ({"privacy_keep_networks": "2001:db8::/200"}, "privacy_keep_networks",
     "privacy_keep_networks: '2001:db8::/200': the prefix length must be 0..128"),
]


@pytest.mark.parametrize("keys,line_key,message", BAD, ids=[b[2].split(":")[0] + str(i)
                                                         for i, b in enumerate(BAD)])
def test_bad_values_are_refused(tmp_path, keys, line_key, message):
    out, cfg, lines = run_config(tmp_path, **keys)
    assert out.returncode == 2, out
    lineno = next(i for i, l in enumerate(lines, 1) if l.startswith(line_key + " "))
    assert out.stderr.startswith(f"kohaku: {cfg}:{lineno}: {message}"), out.stderr
    assert '"msg":"listening"' not in out.stdout


def test_reload_checks_and_needs_a_restart(tmp_path):
    """SIGHUP: a bad value is refused (nothing changes), a good one needs a restart; the key
    never shows in the log, not even in debug's effective-config lines."""
    k = Kohaku({"storage": "null", "privacy_ip": "hash", "privacy_hash_key": KEY,
                "console": "false"}, directory=tmp_path / "k").start()
    try:
        assert '"key":"privacy_hash_key","value":"(set)"' in k.log_text()

        def hup(changes, msg):
            settings = dict(k.settings, **changes)
            write_config(k.config_path, settings)
            before = k.log_text().count(f'"msg":"{msg}"')
            k.signal(signal.SIGHUP)
            wait_until(lambda: k.log_text().count(f'"msg":"{msg}"') > before, 10,
                       message=f"{msg} after SIGHUP")
            return [json.loads(l) for l in k.log_text().splitlines()
                    if f'"msg":"{msg}"' in l][-1]

        line = hup({"privacy_hash_key": "short-key"},
                   "config reload failed; keeping the current values")
        assert "privacy_hash_key: must be 16 to 256 bytes, got 9" in line["error"], line
        line = hup({"privacy_keep_networks": "10.0.0.0/33"},
                   "config reload failed; keeping the current values")
        assert "privacy_keep_networks: '10.0.0.0/33'" in line["error"], line
        line = hup({"privacy_ip": "truncate"}, "config changed; needs a restart")
        assert line["key"] == "privacy_ip"
        assert KEY not in k.log_text() and KEY not in k.stderr_text()
    finally:
        assert k.close() == 0

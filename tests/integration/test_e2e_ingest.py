"""Real browser reports in, rows out: every fixture, idempotency, the `time` column, type
mismatches kept in `extra`, unknown types, and node.erlang-vm reports."""
import os

import pytest

from helpers import (ERLANG_VM, STATS_TABLES, UNCHANGING_TABLES, UNKNOWN_MEMBERS, as_json,
                     body_bytes, curl, erlang_vm_memory, expected_counts, fixture_envelope, fixture_files,
                     load_fixture, make_envelope, make_erlang_vm_envelope, normalised_time,
                     post_h2, snake_case, stored_matches, table_for)


def richest_fixture():
    """The fixture with the most distinct stats types (not a hard-coded name)."""
    return max(fixture_files(), key=lambda p: (len({o["type"] for o in load_fixture(p)}), p))


def member_value(row, name):
    """A member as stored: its column, else its entry in `extra`."""
    col = snake_case(name)
    if row.get(col) is not None:
        return row[col]
    return (as_json(row.get("extra")) or {}).get(name)


def post_ok(port, env, **kw):
    r = post_h2(port, env, **kw)
    assert r.status == 204, r
    assert r.body == b"", r
    return r


@pytest.mark.parametrize("path", fixture_files(), ids=os.path.basename)
def test_fixture_report_stored(path, kohaku, db):
    env = fixture_envelope(path)
    stats = env["stats"]
    cid = env["connection_id"]
    post_ok(kohaku.port, env)

    # one row per stats object, in the right table, and nothing anywhere else
    want = expected_counts(stats)
    got = {t: db.count(t, "connection_id = ?", (cid,)) for t in STATS_TABLES}
    assert got == {t: want.get(t, 0) for t in STATS_TABLES}

    # every member of every object is in its own column with the fixture's value; the
    # injected unknown members are in `extra`
    problems = []
    time_col = normalised_time(env["timestamp"])
    injected = 0
    for obj in stats:
        table = table_for(obj)
        rows = db.rows(table, "connection_id = ? AND stats_id = ?", (cid, obj["id"]))
        if len(rows) != 1:
            problems.append(f"{obj['type']} {obj['id']!r}: {len(rows)} rows in {table}")
            continue
        row = rows[0]
        for col, value in (("time", time_col), ("channel_id", env["channel_id"]),
                           ("stats_type", obj["type"]), ("stats_id", obj["id"])):
            if row[col] != value:
                problems.append(f"{table}.{col} = {row[col]!r}, want {value!r}")
        if not (isinstance(row["stats_timestamp"], float)
                and row["stats_timestamp"] == obj["timestamp"]):
            problems.append(f"{table}.stats_timestamp = {row['stats_timestamp']!r}, "
                            f"want {obj['timestamp']!r}")
        extra = as_json(row["extra"]) or {}
        want_extra = {k: v for k, v in obj.items() if k in UNKNOWN_MEMBERS}
        injected += bool(want_extra)
        if extra != want_extra:
            problems.append(f"{table} {obj['id']!r}: extra = {extra!r}, want {want_extra!r}")
        for name, value in obj.items():
            if name in ("type", "id", "timestamp") or name in UNKNOWN_MEMBERS:
                continue
            col = snake_case(name)
            if col not in row:
                problems.append(f"{table}: no column {col!r} for member {name!r}")
            elif not stored_matches(value, row[col]):
                problems.append(f"{table}.{col} = {row[col]!r} "
                                f"({type(row[col]).__name__}), want {value!r}")
    assert injected > 0
    assert not problems, "\n".join(problems[:60])

    # the brief's spot values, spelled out
    for obj in stats:
        row = db.rows(table_for(obj), "connection_id = ? AND stats_id = ?", (cid, obj["id"]))[0]
        if obj["type"] == "inbound-rtp":
            assert row["bytes_received"] == obj["bytesReceived"]
            assert row["jitter"] == obj["jitter"]
        if obj["type"] == "codec":
            assert row["mime_type"] == obj["mimeType"]
        if "qualityLimitationDurations" in obj:
            assert as_json(row["quality_limitation_durations"]) == \
                obj["qualityLimitationDurations"]
        assert row["stats_timestamp"] == obj["timestamp"]

    conn = db.rows("sora_connection", "connection_id = ?", (cid,))
    assert len(conn) == 1
    c = conn[0]
    for key in ("channel_id", "session_id", "client_id", "role", "label", "version",
                "node_name"):
        assert c[key] == env[key], key
    assert (bool(c["multistream"]), bool(c["simulcast"]), bool(c["spotlight"])) == \
        (True, False, False)
    assert c["multistream"] in (1, True) and c["simulcast"] in (0, False)
    assert c["first_seen"] and c["last_seen"] and c["first_seen"] <= c["last_seen"]


def test_same_report_twice_stores_nothing_new(kohaku, db):
    env = fixture_envelope(richest_fixture())
    post_ok(kohaku.port, env)
    before = db.count_all()
    assert sum(before[t] for t in STATS_TABLES) == len(env["stats"])
    post_ok(kohaku.port, env)
    assert db.count_all() == before
    assert db.count("sora_connection", "connection_id = ?", (env["connection_id"],)) == 1


def test_next_report_of_same_connection_adds_rows(kohaku, db):
    """A later report of the same connection is new data (the key includes `time`)."""
    env = fixture_envelope(richest_fixture(), timestamp="2026-11-24T06:15:40.000001Z")
    cid = env["connection_id"]
    post_ok(kohaku.port, env)
    first = db.rows("sora_connection", "connection_id = ?", (cid,))[0]
    post_ok(kohaku.port, dict(env, timestamp="2026-11-24T06:15:45.000001Z"))
    want = expected_counts(env["stats"])
    for table, n in want.items():
        got = db.count(table, "connection_id = ?", (cid,))
        if table in UNCHANGING_TABLES:  # may be stored only when they change
            assert n <= got <= 2 * n, table
        else:
            assert got == 2 * n, table
    rows = db.rows("sora_connection", "connection_id = ?", (cid,))
    assert len(rows) == 1
    assert rows[0]["first_seen"] == first["first_seen"]
    assert rows[0]["last_seen"] > first["last_seen"]


@pytest.mark.parametrize("ts,want", [
    ("2026-11-24T06:15:42.5Z", "2026-11-24T06:15:42.500000Z"),
    ("2026-11-24T06:15:42.123Z", "2026-11-24T06:15:42.123000Z"),
    ("2026-11-24T06:15:42.123456Z", "2026-11-24T06:15:42.123456Z"),
    ("2026-02-28T23:59:59.000001Z", "2026-02-28T23:59:59.000001Z"),
])
def test_time_column_is_envelope_timestamp_with_6_digits(ts, want, kohaku, db):
    stats = [{"type": "transport", "id": "T01", "timestamp": 1795500198544.297,
              "bytesSent": 56012001, "dtlsState": "connected"}]
    env = make_envelope(stats, timestamp=ts)
    post_ok(kohaku.port, env)
    rows = db.rows("rtc_transport_stats", "connection_id = ?", (env["connection_id"],))
    assert [(r["time"], r["stats_timestamp"], r["bytes_sent"], r["dtls_state"])
            for r in rows] == [(want, 1795500198544.297, 56012001, "connected")]


def test_mismatched_member_types_kept_in_extra(kohaku, db):
    """A value whose JSON type does not fit the column is kept in `extra`, not rejected;
    an integer in a REAL column is a fit (JSON has no float type)."""
    obj = {"type": "outbound-rtp", "id": "OT01V1", "timestamp": 1795500198544.297,
           "kind": "video", "ssrc": 1234567, "packetsSent": 10635,
           "bytesSent": "lots",                 # string for an INTEGER column
           "headerBytesSent": 1.5,              # fraction for an INTEGER column
           "targetBitrate": "fast",             # string for a REAL column
           "framesPerSecond": {"x": 1},         # object for a REAL column
           "mid": 5,                            # number for a TEXT column
           "active": "yes",                     # string for a boolean column
           "totalEncodeTime": 3,                # whole number for a REAL column: a fit
           "powerEfficientEncoder": False,
           "qualityLimitationDurations": {"bandwidth": 1.5, "cpu": 0, "none": 2.25,
                                          "other": 0}}
    env = make_envelope([obj])
    post_ok(kohaku.port, env)
    rows = db.rows("rtc_outbound_rtp_stream_stats", "connection_id = ?", (env["connection_id"],))
    assert len(rows) == 1
    row = rows[0]
    assert as_json(row["extra"]) == {"bytesSent": "lots", "headerBytesSent": 1.5,
                                     "targetBitrate": "fast", "framesPerSecond": {"x": 1},
                                     "mid": 5, "active": "yes"}
    for col in ("bytes_sent", "header_bytes_sent", "target_bitrate", "frames_per_second",
                "mid", "active"):
        assert row[col] is None, col
    assert (row["ssrc"], row["packets_sent"], row["kind"]) == (1234567, 10635, "video")
    assert row["total_encode_time"] == 3 and isinstance(row["total_encode_time"], float)
    assert row["power_efficient_encoder"] in (0, False) and \
        row["power_efficient_encoder"] is not None
    assert as_json(row["quality_limitation_durations"]) == obj["qualityLimitationDurations"]


def test_unknown_and_legacy_types_stored_in_other_stats(kohaku, db):
    ts = 1795500198544.297
    stats = [
        {"type": "track", "id": "TR1", "timestamp": ts, "trackIdentifier": "abc",
         "framesReceived": 5},
        {"type": "future-thing", "id": "F1", "timestamp": ts, "fooBar": 1.25, "ok": True},
        {"type": "transport", "id": "T01", "timestamp": ts, "bytesSent": 42},
        {"type": "media-source", "id": "SV1", "timestamp": ts, "kind": "video",
         "width": 1280, "height": 720, "framesPerSecond": 20},
        {"type": "media-source", "id": "SA1", "timestamp": ts, "kind": "audio",
         "audioLevel": 0.5, "echoReturnLoss": -22.29},
    ]
    env = make_envelope(stats)
    post_ok(kohaku.port, env)
    cid = env["connection_id"]
    other = {r["stats_id"]: r for r in db.rows("rtc_other_stats", "connection_id = ?", (cid,))}
    assert sorted(other) == ["F1", "TR1"]
    assert other["TR1"]["stats_type"] == "track"
    assert member_value(other["TR1"], "trackIdentifier") == "abc"
    assert member_value(other["TR1"], "framesReceived") == 5
    assert other["F1"]["stats_type"] == "future-thing"
    assert member_value(other["F1"], "fooBar") == 1.25
    assert member_value(other["F1"], "ok") in (True, 1)
    assert [r["bytes_sent"] for r in db.rows("rtc_transport_stats", "connection_id = ?",
                                             (cid,))] == [42]
    video = db.rows("rtc_video_source_stats", "connection_id = ?", (cid,))
    assert [(r["stats_id"], r["width"], r["height"]) for r in video] == [("SV1", 1280, 720)]
    audio = db.rows("rtc_audio_source_stats", "connection_id = ?", (cid,))
    assert [(r["stats_id"], r["audio_level"], r["echo_return_loss"]) for r in audio] == \
        [("SA1", 0.5, -22.29)]


@pytest.mark.parametrize("flags,role", [((False, False, False), "sendonly"),
                                        ((True, True, True), "recvonly")])
def test_envelope_variants_accepted(flags, role, kohaku, db):
    """false booleans are valid, an empty stats array is valid, unknown envelope keys and a
    missing optional `id` are ignored, 255-byte ids are valid."""
    env = make_envelope([], multistream=flags[0], simulcast=flags[1], spotlight=flags[2],
                        role=role, channel_id="c" * 255, client_id="\u00e9" * 127,
                        someFutureKey={"a": [1, 2]})
    del env["id"]
    post_ok(kohaku.port, env)
    rows = db.rows("sora_connection", "connection_id = ?", (env["connection_id"],))
    assert len(rows) == 1
    r = rows[0]
    assert (r["role"], r["channel_id"], r["client_id"]) == (role, "c" * 255, "\u00e9" * 127)
    assert (bool(r["multistream"]), bool(r["simulcast"]), bool(r["spotlight"])) == flags
    assert sum(db.count(t) for t in STATS_TABLES) == 0


def test_erlang_vm_report_stored(kohaku, db):
    item = erlang_vm_memory(total=9_123_456_789, fooFutureMetric=12.5)
    env = make_erlang_vm_envelope([item], timestamp="2026-11-24T06:15:42.25Z")
    post_ok(kohaku.port, env, exporter_type=ERLANG_VM)
    rows = db.rows("erlang_vm_memory_stats", "node_name = ?", (env["node_name"],))
    assert len(rows) == 1
    row = rows[0]
    for key in ("total", "processes", "processes_used", "system", "atom", "atom_used",
                "binary", "code", "ets"):
        assert row[key] == item[key], key
        assert isinstance(row[key], int), key
    assert row["time"] == "2026-11-24T06:15:42.250000Z"
    assert row["label"] == env["label"]
    assert as_json(row["extra"]) == {"fooFutureMetric": 12.5}
    nodes = db.rows("sora_node", "node_name = ?", (env["node_name"],))
    assert len(nodes) == 1
    assert (nodes[0]["label"], nodes[0]["version"]) == (env["label"], env["version"])
    assert nodes[0]["first_seen"] and nodes[0]["last_seen"]
    # a node report is not a connection report
    assert db.count("sora_connection") == 0
    assert sum(db.count(t) for t in STATS_TABLES) == 0


def test_erlang_vm_and_connection_reports_kept_apart(kohaku, db):
    """Both exporter types through the same daemon: each lands in its own tables."""
    env = fixture_envelope(fixture_files()[0])
    node = make_erlang_vm_envelope()
    post_ok(kohaku.port, node, exporter_type=ERLANG_VM)
    post_ok(kohaku.port, env)
    assert db.count("erlang_vm_memory_stats") == 1
    assert db.count("sora_node") == 1
    assert db.count("sora_connection") == 1
    assert sum(db.count(t) for t in STATS_TABLES) == len(env["stats"])


def test_null_storage_accepts_reports(kohaku_factory, db):
    """storage = null (for benchmarks): reports are validated and answered, nothing stored."""
    k = kohaku_factory(storage="null")
    env = fixture_envelope(fixture_files()[0])
    post_ok(k.port, env)
    r = post_h2(k.port, dict(env, connection_id="short"))
    assert r.status == 400 and r.message.startswith("connection_id"), r
    assert not os.path.exists(db.path)


def test_parse_on_loop_and_in_pool_agree(kohaku_factory, db):
    """parse_threads = 0 (streaming parse on the event loop) and parse_threads = 2 (whole bodies
    parsed on pool threads) store the same rows and refuse the same bodies with the same
    message; the webhook path goes through the same pool."""
    files = fixture_files()
    bad = [b'{"type": connection.user-agent}', b'{"type": "connection.us', b"[]",
           b'{"type": "\xff\xfe", "label": "x"}']
    answers = {}
    for threads in (0, 2):
        k = kohaku_factory(parse_threads=threads)
        got = []
        for i, path in enumerate(files):
            env = fixture_envelope(path)
            env["connection_id"] = f"P{threads}{i:024d}"
            post_ok(k.port, env)
            got.append(sum(db.count(t, "connection_id = ?", (env["connection_id"],))
                           for t in STATS_TABLES))
            assert got[-1] == sum(expected_counts(env["stats"]).values())
        for body in bad:
            r = post_h2(k.port, body)
            assert r.status == 400, r
            got.append(r.message)
        env = fixture_envelope(files[0], type="connection.rtc",
                               connection_id=f"W{threads}{0:024d}")
        del env["multistream"]
        for http in ("--http1.1", "--http2-prior-knowledge"):  # the webhook, both protocols
            r = curl(f"http://127.0.0.1:{k.port}/webhook/stats", http, "-X", "POST",
                     "-H", "sora-stats-webhook-type: connection.rtc",
                     "-H", "content-type: application/json", data=body_bytes(env))
            got.append(r.status)
        got.append(db.count("sora_report", "connection_id = ?", (env["connection_id"],)))
        answers[threads] = got
        k.stop()
    assert answers[0] == answers[2]
    assert answers[0][-3:] == [204, 204, 1]  # one report: the second delivery stored nothing

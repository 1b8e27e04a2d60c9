"""Sora's log files made from reports, for the import tests and the benchmark.

- `webhook_body(stats, **over)`: a stats webhook report (type connection.rtc, no
  multistream), as helpers.make_envelope makes an exporter one;
- `rtc_stats_lines(body)`: the lines Sora 2025.x writes to rtc_stats.jsonl for that report:
  one per stats object, the envelope flattened beside it (in Sora's order, with group_id and
  log_written), the object in rtc_data, and rtc_id / rtc_timestamp / rtc_type; floats
  written the way Sora writes them, with exponents (1.75342361155652490234e+12);
- `webhook_log_line(body)`: a webhook log line, {"id", "timestamp", "req": body};
- `write_big_rtc_stats(path, size)`: a log of about `size` bytes from the browser fixtures,
  many connections reporting in turn, as a busy Sora writes it (built from templates, so a
  gigabyte takes seconds).

JSON is written here by a small encoder only because Python's json has no way to choose how
a float is written; nothing here reads JSON.
"""
import json
import math
import os

from helpers import fixture_files, load_fixture, make_envelope, sora_id

ENVELOPE_ORDER = ("connection_id", "id", "label", "timestamp", "type", "version", "node_name",
                  "session_id", "role", "channel_id", "spotlight", "bundle_id", "client_id",
                  "group_id", "simulcast", "log_written")


def erlang_float(x):
    """A float as Sora's log writes it: 20 digits after the point, with an exponent."""
    return format(x, ".20e")


def dumps(value, exp_floats=True):
    """JSON text; floats with exponents (exp_floats) or as Python writes them."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        assert math.isfinite(value)
        return erlang_float(value) if exp_floats else json.dumps(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{dumps(v, exp_floats)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v, exp_floats) for v in value) + "]"
    raise TypeError(type(value))


def webhook_body(stats, **over):
    """A report of Sora's stats webhook: connection.rtc, a bundle_id, no multistream."""
    env = make_envelope(stats, type="connection.rtc")
    del env["multistream"]
    env["bundle_id"] = env["connection_id"]
    env.update(over)
    return env


def rtc_stats_lines(body, exp_floats=True):
    """The rtc_stats.jsonl lines of one stats webhook report (a dict)."""
    env = {k: body[k] for k in ENVELOPE_ORDER if k in body}
    env.setdefault("group_id", body["session_id"])
    env.setdefault("log_written", False)
    lines = []
    for obj in body["stats"]:
        line = dict(env)
        line["rtc_data"] = obj
        line["rtc_id"] = obj.get("id")
        line["rtc_timestamp"] = obj.get("timestamp")
        line["rtc_type"] = obj.get("type")
        lines.append(dumps(line, exp_floats))
    return lines


def webhook_log_line(body, exp_floats=False):
    return dumps({"id": sora_id(), "timestamp": body["timestamp"], "req": body}, exp_floats)


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    return path


# --- big logs -----------------------------------------------------------------------------------

PLACES = ("@CONN@", "@REPORT@", "@TIME@", "@SESSION@", "@CHANNEL@")


def _templates():
    """Per fixture, its report's rtc_stats.jsonl lines with the ids and time as places."""
    out = []
    for path in fixture_files():
        body = webhook_body(load_fixture(path), connection_id=PLACES[0], id=PLACES[1],
                            timestamp=PLACES[2], session_id=PLACES[3], channel_id=PLACES[4],
                            client_id="client-" + os.path.basename(path)[:20],
                            bundle_id=PLACES[0])
        out.append("\n".join(rtc_stats_lines(body)) + "\n")
    return out


def _time_text(sec):
    whole = int(sec)
    frac = int((sec - whole) * 1e6)
    days, rest = divmod(whole, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"2026-11-{1 + days:02d}T{h:02d}:{m:02d}:{s:02d}.{frac:06d}Z"


def write_big_rtc_stats(path, size, connections=1000, interval=10.0):
    """About `size` bytes of rtc_stats.jsonl: `connections` Sora connections (each with a
    fixture of its own) reporting every `interval` seconds, one round after another.
    Returns {"reports", "lines", "bytes", "connections"}."""
    templates = _templates()
    conns = [(sora_id(), sora_id(), "room-" + sora_id()[:6].lower(), templates[i % len(templates)])
             for i in range(connections)]
    written = reports = lines = 0
    with open(path, "w", encoding="utf-8") as f:
        rnd = 0
        while written < size:
            for i, (conn, session, channel, tmpl) in enumerate(conns):
                text = (tmpl.replace(PLACES[0], conn).replace(PLACES[1], sora_id())
                        .replace(PLACES[2], _time_text(rnd * interval + i * interval / connections))
                        .replace(PLACES[3], session).replace(PLACES[4], channel))
                f.write(text)
                written += len(text)
                reports += 1
                lines += text.count("\n")
                if written >= size:
                    break
            rnd += 1
    return {"reports": reports, "lines": lines, "bytes": os.path.getsize(path),
            "connections": connections}

"""kohaku import end to end: Sora's log files into real databases, against the live path.

- each format (rtc-stats, webhook-log, bodies) imported into SQLite and PostgreSQL holds,
  table by table and row by row (quality rows included), what the same reports sent live
  (the stats webhook over HTTP/1.1, the exporter over h2c) stored; only when kohaku read a
  report (received_at) differs, and the size of a body rebuilt from rtc_stats.jsonl lines;
- importing again, or importing what arrived live, stores nothing (already present);
- Sora's session and event webhook logs fill the lifecycle tables as the same webhooks
  posted live do, and a webhook breaking the rules is refused with its line and field;
- broken, invalid, too long and truncated lines are refused with their line numbers and
  reasons, and the rest is stored; gzip (several members) and standard input (gzip too);
- a 100 MB log imports in bounded memory (peak RSS, against a 30 MB one);
- an import into the database a daemon is storing into under load (SQLite and PostgreSQL);
- the command line: the summary as text and JSON, exit statuses, errors, several files of
  different formats, a file whose format cannot be told, the progress line on a terminal.

Files go under /tmp/import-* and are removed.
"""
import datetime
import glob
import gzip
import json
import os
import pty
import re
import select
import shutil
import subprocess
import tempfile

import pytest

from helpers import (ERLANG_VM, FIXTURES_DIR, KOHAKU_BIN, curl, fixture_files, load_fixture,
                     loadgen, make_envelope, make_erlang_vm_envelope, post_h2, sora_id,
                     sanitizer_build, write_config)
from sora_logs import (rtc_stats_lines, webhook_body, webhook_log_line, write_big_rtc_stats,
                       write_lines)

IMPAIRED = os.path.join(os.path.dirname(FIXTURES_DIR), "impaired")
SAMPLE = os.path.join(os.path.dirname(FIXTURES_DIR), "sora-logs-sample")


@pytest.fixture
def work():
    d = tempfile.mkdtemp(prefix="import-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def config_for(db, directory, **keys):
    path = os.path.join(directory, f"import-{sora_id()[:6]}.ini")
    settings = dict(db.settings())
    settings.update(keys)
    write_config(path, settings)
    return path


def run_import(config, *args, stdin=None, timeout=600):
    """kohaku import; returns (exit status, its --json summary or None, stdout, stderr)."""
    out = subprocess.run([KOHAKU_BIN, "-C", config, "import", *args], input=stdin,
                         capture_output=True, timeout=timeout)
    text = out.stdout.decode("utf-8", "replace")
    summary = json.loads(text) if "--json" in args and text.startswith("{") else None
    return out.returncode, summary, text, out.stderr.decode("utf-8", "replace")


# --- the reports ---------------------------------------------------------------------------------

def ts(minute, second):
    return f"2026-12-01T10:{minute:02d}:{second:02d}.250000Z"


def impaired_calls(names=("chromium-loss3", "firefox-loss3")):
    """Stats webhook bodies of two real calls (their sides interleaved in time order)."""
    out = []
    for name in names:
        channel = f"{name}-{sora_id()[:6].lower()}"
        ids = {side: sora_id() for side in ("sender", "receiver")}
        steps = []
        for side in ids:
            for path in glob.glob(os.path.join(IMPAIRED, f"{name}-{side}-t*.json")):
                t = int(re.search(r"-t(\d+)\.json$", path).group(1))
                steps.append((t, side, path))
        assert steps, f"no impaired fixtures {name}"
        for t, side, path in sorted(steps):
            out.append(webhook_body(load_fixture(path), channel_id=channel,
                                    connection_id=ids[side], client_id=f"{side}-{name}",
                                    timestamp=ts(t // 60, t % 60)))
    return out


def browser_bodies(make):
    """One connection per browser fixture pair (t3, t10), made by make(stats, **over)."""
    pairs = {}
    for path in fixture_files():
        pairs.setdefault(re.sub(r"-t\d+\.json$", "", os.path.basename(path)), []).append(path)
    out = []
    for name, paths in sorted(pairs.items()):
        conn = sora_id()
        for i, path in enumerate(sorted(paths, key=lambda p: int(re.search(r"-t(\d+)", p)[1]))):
            out.append(make(load_fixture(path), connection_id=conn, client_id=name,
                            timestamp=ts(20, 3 + 7 * i)))
    return out


def webhook_reports():
    return impaired_calls() + browser_bodies(webhook_body)


def mixed_reports():
    """[(kind, body)]: stats webhook, exporter and node reports."""
    out = [("webhook", b) for b in webhook_reports()]
    out += [("exporter", b) for b in browser_bodies(make_envelope)]
    out += [("node", make_erlang_vm_envelope(timestamp=ts(30, s))) for s in range(3)]
    return out


def send_live(k, kind, body):
    if kind == "webhook":
        r = curl(f"http://127.0.0.1:{k.port}/webhook/stats", "--http1.1", "-X", "POST",
                 "-H", "sora-stats-webhook-type: connection.rtc",
                 "-H", "content-type: application/json", data=body)
    elif kind == "node":
        r = post_h2(k.port, body, exporter_type=ERLANG_VM)
    else:
        r = post_h2(k.port, body)
    assert r.status == 204, r


# --- the database, row by row -------------------------------------------------------------------

def normal(value):
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    if isinstance(value, bool):
        return int(value)
    return value


# what Sora's session and event webhooks fill (and stats never do)
LIFECYCLE = ("sora_webhook", "sora_session", "sora_connection_lifecycle")


def dump(db, skip=("received_at",), without=(), only=None):
    """{table: sorted rows as tuples of normalised values} of every table but the schema's
    (and those of without; only those of only, when given)."""
    out = {}
    for table in db.tables():
        if table == "kohaku_schema_version" or table in without or \
                (only is not None and table not in only):
            continue
        cols = [c for c in db.columns(table) if c not in skip]
        sel = ", ".join(f'"{c}"' for c in cols)
        rows = [tuple(normal(v) for v in r) for r in db.query(f'SELECT {sel} FROM "{table}"')]
        out[table] = sorted(rows, key=repr)
    return out


def differences(want, got):
    diff = []
    for table in sorted(set(want) | set(got)):
        a, b = want.get(table, []), got.get(table, [])
        if a != b:
            only_a = [r for r in a if r not in b][:2]
            only_b = [r for r in b if r not in a][:2]
            diff.append(f"{table}: {len(a)} rows live, {len(b)} imported; live only "
                        f"{only_a}; imported only {only_b}")
    return diff


@pytest.fixture(scope="module")
def live(request, tmp_path_factory):
    """The reports sent live, once per (storage, set): (reports, dump of what was stored)."""
    from helpers import Kohaku, PgDb, SqliteDb
    from pgcluster import unique_db_name
    cache = {}

    def get(kind, which):
        if (kind, which) not in cache:
            if kind == "sqlite":
                db = SqliteDb(tmp_path_factory.mktemp(f"live-{which}"))
            else:
                db = PgDb(request.getfixturevalue("pg_cluster"), unique_db_name("live"))
            reports = mixed_reports() if which == "mixed" else \
                [("webhook", b) for b in webhook_reports()]
            # kohaku import stores every sample (README, "Unchanged objects stored once"):
            # the live path it is held to stores every sample too
            k = Kohaku(dict(db.settings(), dedup=False),
                       directory=tmp_path_factory.mktemp("live-daemon"))
            k.start()
            try:
                for kind_, body in reports:
                    send_live(k, kind_, body)
            finally:
                assert k.stop() == 0, k.describe()
            cache[(kind, which)] = (reports, db)
        return cache[(kind, which)]
    return get


def write_format(fmt, reports, path):
    lines = []
    if fmt == "rtc-stats":
        for _, body in reports:
            lines += rtc_stats_lines(body)
    elif fmt == "webhook-log":
        session = open(os.path.join(SAMPLE, "session_webhook.jsonl")).read().splitlines()
        for i, (_, body) in enumerate(reports):
            lines.append(webhook_log_line(body, exp_floats=i % 2 == 1))
            if i % 10 == 0:
                lines.append(session[(i // 10) % len(session)])
    else:
        lines = [json.dumps(body) for _, body in reports]
    return write_lines(path, lines)


@pytest.mark.storage("sqlite", "postgres")
@pytest.mark.parametrize("fmt", ["rtc-stats", "webhook-log", "bodies"])
def test_import_matches_live(db, live, work, fmt):
    """What each format stores is what the live path stored, row by row; importing it again,
    or importing it into the live database, stores nothing."""
    reports, live_db = live(db.kind, "mixed" if fmt == "bodies" else "webhook")
    path = write_format(fmt, reports, os.path.join(work, f"log.{fmt}.jsonl"))
    cfg = config_for(db, work)
    rc, s, _, err = run_import(cfg, "--json", path)
    assert rc == 0, err
    assert s["reports"] == len(reports) and s["stored"] == len(reports), s
    assert s["already_present"] == 0 and s["refused"] == 0 and s["errors"] == [], s
    # webhook-log: a line of the sample session webhook log every ten (the three in turn)
    hooks = (len(reports) + 9) // 10 if fmt == "webhook-log" else 0
    assert s["webhooks"] == hooks and s["webhooks_stored"] == min(hooks, 3), s
    assert s["webhooks_already_present"] == hooks - min(hooks, 3), s
    skip = ("received_at",) if fmt == "bodies" else ("received_at", "body_bytes")
    # the live path had the reports only: the lifecycle tables are test_import_webhook_logs'
    want = dump(live_db, skip, without=LIFECYCLE)
    got = dump(db, skip, without=LIFECYCLE)
    if fmt == "webhook-log":
        assert len(db.rows("sora_session")) == 1 and db.count("sora_webhook") == 3
        assert db.count("sora_connection_lifecycle") == 2
    assert sum(len(r) for r in want.values()) > 1000
    assert want["quality_stream"] and want["quality_connection"]
    diff = differences(want, got)
    assert not diff, "\n".join(diff)
    assert s["rows"] == sum(len(want[t]) for t in want if t.startswith("rtc_")
                            or t in ("erlang_vm_memory_stats", "node_other_stats"))
    assert s["quality_rows"] == len(want["quality_stream"]) + len(want["quality_connection"])
    # again: everything is there already, and nothing changes
    rc, s, _, err = run_import(cfg, "--json", path)
    assert rc == 0, err
    assert s["stored"] == 0 and s["already_present"] == len(reports) and s["rows"] == 0, s
    assert s["webhooks_stored"] == 0 and s["webhooks_already_present"] == hooks, s
    assert not differences(want, dump(db, skip, without=LIFECYCLE))
    # into the database the live path stored them in: nothing new either
    rc, s, _, err = run_import(config_for(live_db, work), "--json", path)
    assert rc == 0 and s["stored"] == 0 and s["already_present"] == len(reports), (s, err)
    assert not differences(want, dump(live_db, skip, without=LIFECYCLE))


@pytest.mark.storage("sqlite", "postgres")
def test_import_gzip_and_stdin(db, live, work):
    """gzip (two members, as rotated logs are appended) and standard input, plain or
    gzip, store the same rows as the plain file."""
    reports, live_db = live(db.kind, "webhook")
    lines = []
    for _, body in reports:
        lines += rtc_stats_lines(body)
    text = ("\n".join(lines) + "\n").encode()
    half = len(text) // 2
    half = text.index(b"\n", half) + 1
    gz = os.path.join(work, "rtc_stats.jsonl.gz")
    with open(gz, "wb") as f:
        f.write(gzip.compress(text[:half]) + gzip.compress(text[half:]))
    cfg = config_for(db, work)
    rc, s, _, err = run_import(cfg, "--json", gz)
    assert rc == 0, err
    assert s["stored"] == len(reports) and s["lines"] == len(lines), s
    skip = ("received_at", "body_bytes")
    assert not differences(dump(live_db, skip, without=LIFECYCLE),
                           dump(db, skip, without=LIFECYCLE))
    # standard input: plain, then gzip; all there already
    for data in (text, open(gz, "rb").read()):
        rc, s, _, err = run_import(cfg, "--json", "-", stdin=data)
        assert rc == 0, err
        assert s["already_present"] == len(reports) and s["lines"] == len(lines), s


# --- Sora's session and event webhook logs ------------------------------------------------------

SESSION_LOG = os.path.join(SAMPLE, "session_webhook.jsonl")
EVENT_LOG = os.path.join(SAMPLE, "event_webhook.jsonl")


def logged_webhooks():
    """[(route, header, type, body as logged)] of the two sample logs, in Sora's order: the
    body is the text of the line's "req", byte for byte."""
    out = []
    for path, route, header in ((SESSION_LOG, "/webhook/session", "sora-session-webhook-type"),
                                (EVENT_LOG, "/webhook/event", "sora-event-webhook-type")):
        for line in open(path).read().splitlines():
            req = json.loads(line)["req"]
            raw = line[line.index('"req":') + len('"req":'):line.rindex("}")]
            assert json.loads(raw) == req
            out.append((req["timestamp"], route, header, req["type"], raw.encode()))
    return [w[1:] for w in sorted(out)]


@pytest.mark.storage("sqlite", "postgres")
def test_import_webhook_logs(db, db_factory, kohaku_factory, work):
    """session_webhook.jsonl and event_webhook.jsonl imported fill sora_webhook, sora_session
    and sora_connection_lifecycle row by row as the same webhooks posted live to
    /webhook/session and /webhook/event do (the event log first, not Sora's order: the
    merge rules make it the same); importing again, or into the live database, stores
    nothing twice; the stats tables are left alone."""
    live_db = db_factory(db.kind)
    k = kohaku_factory(live_db.settings())
    hooks = logged_webhooks()
    for route, header, typ, body in hooks:
        r = curl(f"http://127.0.0.1:{k.port}{route}", "--http1.1", "-H", f"{header}: {typ}",
                 "-H", "content-type: application/json", data=body)
        assert r.status == 200 and r.body == b"{}", (typ, r)
    want = dump(live_db, only=LIFECYCLE)
    assert [len(want[t]) for t in LIFECYCLE] == [len(hooks), 1, 2], want
    cfg = config_for(db, work)
    rc, s, _, err = run_import(cfg, "--json", EVENT_LOG, SESSION_LOG)
    assert rc == 0, (s, err)
    assert s["webhooks"] == len(hooks) and s["webhooks_stored"] == len(hooks), s
    assert s["reports"] == 0 and s["refused"] == 0 and s["lines"] == len(hooks), s
    diff = differences(want, dump(db, only=LIFECYCLE))
    assert not diff, "\n".join(diff)
    assert all(not rows for t, rows in dump(db, without=LIFECYCLE).items()), \
        "webhooks wrote beside the lifecycle tables"
    # again, in Sora's order, and through standard input: all there already
    for args, stdin in ((("--json", SESSION_LOG, EVENT_LOG), None),
                        (("--json", "-"), open(EVENT_LOG, "rb").read())):
        rc, s, _, err = run_import(cfg, *args, stdin=stdin)
        assert rc == 0, (s, err)
        assert s["webhooks_stored"] == 0 and s["webhooks_already_present"] == s["webhooks"], s
        assert not differences(want, dump(db, only=LIFECYCLE))
    # into the database the live path stored them in: nothing new
    rc, s, _, err = run_import(config_for(live_db, work), "--json", SESSION_LOG, EVENT_LOG)
    assert rc == 0 and s["webhooks_already_present"] == len(hooks), (s, err)
    assert not differences(want, dump(live_db, only=LIFECYCLE))


@pytest.mark.storage("sqlite")
def test_import_bad_webhook_lines(db, work):
    """A webhook breaking the lifecycle rules is refused with its line and the field (as
    the live route's 400 names it), a broken line as a line; the others are stored."""
    lines = open(SESSION_LOG).read().splitlines()
    updated = json.loads(lines[1])
    updated["req"]["connections"][1]["connection_id"] = "short"
    destroyed = json.loads(lines[2])
    destroyed["req"]["timestamp"] = "yesterday"
    path = write_lines(os.path.join(work, "session_webhook.jsonl"),
                       [lines[0], json.dumps(updated), lines[1][:60], json.dumps(destroyed),
                        lines[2]])
    rc, s, _, err = run_import(config_for(db, work), "--json", path)
    assert rc == 1, (s, err)
    assert refused_of(s) == [
        (2, "connections[1].connection_id: must be 26 characters, got 5"),
        (3, "line: truncated JSON (ends after 60 bytes)"),
        (4, "timestamp: must be RFC 3339 UTC with a fraction, like "
            "2026-11-24T06:15:42.123456Z, got 'yesterday'"),
    ], refused_of(s)
    assert s["webhooks"] == 4 and s["webhooks_stored"] == 2 and s["refused_webhooks"] == 2, s
    assert s["refused_lines"] == 1 and s["reports"] == 0, s
    assert db.count("sora_webhook") == 2 and db.count("sora_connection_lifecycle") == 2


# --- bad lines -----------------------------------------------------------------------------------

def refused_of(summary):
    return [(r["line"], r["reason"]) for r in summary["refused_list"]]


@pytest.mark.storage("sqlite")
def test_import_bad_rtc_stats_lines(db, work):
    """Each bad line or report is refused with its line and reason; the rest is stored."""
    stats = load_fixture(fixture_files()[0])
    good = [webhook_body(stats, timestamp=ts(0, i)) for i in range(4)]
    bad_id = webhook_body(stats, connection_id=sora_id() + "X")
    bad_obj = webhook_body(stats)
    bad_obj["stats"] = [dict(o) for o in stats]
    bad_obj["stats"][2]["timestamp"] = "soon"
    L = [rtc_stats_lines(b) for b in (good[0], good[1], bad_id, bad_obj, good[2], good[3])]
    n = [len(x) for x in L]
    lines = list(L[0])
    lines += L[1][:3] + ['{"connection_id": "broken', *L[1][3:]]    # a broken line inside
    lines += L[2]
    lines += L[3]
    lines += ['{"connection_id": "' + sora_id() + '", "id": "x"}']   # no rtc_data
    lines += ["", "   "]                                              # blank: not counted
    lines += ['{"big": "' + "x" * 200000 + '"}']                      # over max_line
    lines += L[4]
    lines += ['"a string"']
    lines += L[5][:-1]
    path = os.path.join(work, "rtc_stats.jsonl")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + L[5][-1][:40])                # cut last line
    at = {}
    pos = 1
    for name, count in (("g0", n[0]), ("g1", n[1] + 1), ("bad_id", n[2]), ("bad_obj", n[3]),
                        ("no_data", 1), ("blank", 2), ("big", 1), ("g2", n[4]), ("str", 1),
                        ("g3", n[5])):
        at[name] = pos
        pos += count
    rc, s, text, err = run_import(config_for(db, work, max_body_bytes=100000), "--json", path)
    assert rc == 1, (s, err)
    got = refused_of(s)
    bad_obj_end = at["bad_obj"] + n[3] - 1
    assert got == [
        (at["g1"] + 3, "line: truncated JSON (ends after 25 bytes)"),
        (at["bad_id"], "connection_id: must be 26 characters, got 27 (the report of lines "
                       f"{at['bad_id']}-{at['bad_id'] + n[2] - 1})"),
        (at["bad_obj"] + 2, "rtc_data.timestamp: must be a number, got string (the report of "
                            f"lines {at['bad_obj']}-{bad_obj_end})"),
        (at["no_data"], "rtc_data: required (a line of rtc_stats.jsonl holds one stats object "
                        "there)"),
        (at["big"], "line: 200011 bytes is over the longest a report may take "
                    "(max_body_bytes 100000)"),
        (at["str"], "line: must be a JSON object"),
        (at["g3"] + n[5] - 1, "line: truncated JSON (ends after 40 bytes)"),
    ], got
    assert s["refused"] == 7 and s["refused_reports"] == 2 and s["refused_lines"] == 5, s
    # g0..g3 are stored (g3 without its cut last line)
    assert s["reports"] == 6 and s["stored"] == 4, s
    assert db.count("sora_report") == 4
    assert db.count("sora_report", "stats_count = ?", (len(stats),)) == 3
    assert db.count("sora_report", "stats_count = ?", (len(stats) - 1,)) == 1
    assert s["lines"] == pos - 1, s
    # the text summary lists the same, FILE:LINE first
    rc, _, text, _ = run_import(config_for(db, work, max_body_bytes=100000), path)
    assert rc == 1
    assert f"  {path}:{at['bad_obj'] + 2}: rtc_data.timestamp: must be a number" in text, text
    assert re.search(r"already present +4\n", text), text


@pytest.mark.storage("sqlite")
def test_import_bad_bodies_and_webhook_lines(db, work):
    stats = load_fixture(fixture_files()[1])
    good = make_envelope(stats)
    node = make_erlang_vm_envelope()
    body_lines = [json.dumps(good), json.dumps(make_envelope(stats, role="listener")),
                  '{"type": "connection.user-agent", "stats": [', json.dumps({"stats": []}),
                  json.dumps({"type": "session.created", "id": "x", "channel_id": "c",
                              "timestamp": ts(0, 1)}),
                  json.dumps(node), json.dumps(make_envelope(stats, type="node.erlang-vm")),
                  *[json.dumps(json.loads(line)["req"]) for line in
                    open(os.path.join(SAMPLE, "event_webhook.jsonl")).read().splitlines()[:2]]]
    path = write_lines(os.path.join(work, "bodies.jsonl"), body_lines)
    cfg = config_for(db, work)
    rc, s, _, err = run_import(cfg, "--json", "--format", "bodies", path)
    assert rc == 1, err
    assert refused_of(s) == [
        (2, "role: must be sendrecv, sendonly or recvonly, got 'listener'"),
        (3, "body: truncated JSON (ends after 44 bytes)"),
        (4, "type: required"),
        (5, "session_id: required"),
    ], refused_of(s)
    # the seventh is a node report by its type: its objects are kept as other node stats;
    # a session or event webhook's body is one by its type, as on its own route
    assert s["stored"] == 3 and s["reports"] == 6, s
    assert s["webhooks"] == 3 and s["webhooks_stored"] == 2 and s["refused_webhooks"] == 1, s
    assert s["refused_reports"] == 3, s
    # webhook logs: the stats webhook's body is a report, the session webhook's a webhook;
    # lines that are no webhook are refused
    hook = webhook_body(stats)
    wl = [webhook_log_line(hook), '{"id": "x", "timestamp": "t", "req": "text"}',
          '{"id": "x", "timestamp": "t"}', '{"id": "x", "req": {"stats": []}}',
          *open(os.path.join(SAMPLE, "session_webhook.jsonl")).read().splitlines(),
          webhook_log_line(webhook_body(stats, channel_id=""))]
    path = write_lines(os.path.join(work, "stats_webhook.jsonl"), wl)
    rc, s, _, err = run_import(cfg, "--json", path)
    assert rc == 1, err
    assert refused_of(s) == [
        (2, "req: must be an object"),
        (3, "req: required (a line of a webhook log holds the webhook's body there)"),
        (4, "req.type: required"),
        (8, "channel_id: must not be empty"),
    ], refused_of(s)
    assert s["webhooks"] == 3 and s["webhooks_stored"] == 3, s
    assert s["stored"] == 1 and s["reports"] == 2, s


# --- memory --------------------------------------------------------------------------------------

def peak_rss_mib(config, path):
    """Runs kohaku import on path; (exit status, summary, peak RSS in MiB, from wait4)."""
    pid = os.fork()
    if pid == 0:  # the child: kohaku import, its output to a file
        with open(path + ".out", "wb") as out:
            os.dup2(out.fileno(), 1)
        os.execv(KOHAKU_BIN, [KOHAKU_BIN, "-C", config, "import", "--json", path])
    _, status, usage = os.wait4(pid, 0)
    with open(path + ".out") as f:
        summary = json.load(f)
    return os.waitstatus_to_exitcode(status), summary, usage.ru_maxrss / 1024


@pytest.mark.storage("sqlite")
def test_import_100mb_in_bounded_memory(db, work):
    """Memory reaches its plateau (the reports read ahead, the batches) and stays there:
    100 MB take what 30 MB take (measured 81 and 100 MiB; 300 MB, 102)."""
    small = os.path.join(work, "small.jsonl")
    big = os.path.join(work, "big.jsonl")
    info_small = write_big_rtc_stats(small, 30 << 20)
    info_big = write_big_rtc_stats(big, 100 << 20)
    assert info_big["bytes"] >= 100 << 20
    cfg = config_for(db, work)
    rc, s, rss_small = peak_rss_mib(cfg, small)
    assert rc == 0 and s["stored"] == info_small["reports"], s
    rc, s, rss_big = peak_rss_mib(cfg, big)
    assert rc == 0, s
    assert s["stored"] == info_big["reports"] and s["lines"] == info_big["lines"], s
    assert db.count("sora_report") == info_small["reports"] + info_big["reports"]
    print(f"peak RSS: {rss_small:.1f} MiB for 30 MB, {rss_big:.1f} MiB for 100 MB "
          f"({s['reports_per_s']:.0f} reports/s)")
    if sanitizer_build():
        # ASan's quarantine (256 MiB) fills as memory is freed: measured 477 and 597 MiB
        assert rss_big < 1024 and rss_big < rss_small + 300, (rss_small, rss_big)
    else:
        assert rss_big < 160, rss_big
        assert rss_big < rss_small + 40, (rss_small, rss_big)


# --- beside a daemon -----------------------------------------------------------------------------

@pytest.mark.storage("sqlite", "postgres")
def test_import_while_daemon_ingests(db, kohaku_factory, work):
    """The daemon takes a bounded load while kohaku import writes the same database: every
    report of both is stored once, the daemon answers all 204, the import exits 0."""
    k = kohaku_factory()
    path = os.path.join(work, "rtc_stats.jsonl")
    info = write_big_rtc_stats(path, 12 << 20, connections=200)
    acked = os.path.join(work, "acked.txt")
    lg = subprocess.Popen([os.path.join(os.path.dirname(KOHAKU_BIN), "kohaku-loadgen"), "-u",
                           f"http://127.0.0.1:{k.port}/collector", "-F", FIXTURES_DIR, "-r",
                           "300", "-d", "8", "-c", "2", "-m", "16", "-n", "100", "-a", acked,
                           "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, s, _, err = run_import(config_for(db, work), "--json", path)
    out, lerr = lg.communicate(timeout=120)
    assert lg.returncode == 0, out + lerr
    assert rc == 0, (s, err)
    assert s["stored"] == info["reports"], s
    sent = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    assert sent["status"] == {"204": sent["sent"]}, sent
    with open(acked) as f:
        n_acked = len([l for l in f if l.strip()])
    assert n_acked == sent["sent"]
    assert db.count("sora_report") == info["reports"] + n_acked


# --- the command line ----------------------------------------------------------------------------

def test_import_usage_errors(work):
    cfg = os.path.join(work, "k.ini")
    write_config(cfg, {"storage": "sqlite", "sqlite_path": os.path.join(work, "k.db")})

    def run(*args):
        out = subprocess.run([KOHAKU_BIN, "-C", cfg, *args], capture_output=True, text=True,
                             timeout=30)
        return out.returncode, out.stderr, out.stdout
    assert run("import") == (2, "kohaku: import needs at least one FILE (- for standard "
                                "input); see kohaku --help\n", "")
    assert run("import", "--format", "csv", "x")[:2] == (
        2, "kohaku: --format: must be auto, rtc-stats, webhook-log or bodies, got 'csv'\n")
    assert run("import", "--worst", "x")[0] == 2
    assert run("serve", "--format", "bodies")[:2] == (2, "kohaku: --format only goes with "
                                                         "import\n")
    missing = os.path.join(work, "nope.jsonl")
    assert run("import", missing) == (2, f"kohaku: {missing}: No such file or directory\n", "")
    assert not os.path.exists(os.path.join(work, "k.db"))  # nothing was touched
    # a database that cannot be reached
    bad = os.path.join(work, "pg.ini")
    write_config(bad, {"storage": "postgres",
                       "postgres_uri": "postgresql://nobody@127.0.0.1:1/none"})
    out = subprocess.run([KOHAKU_BIN, "-C", bad, "import", os.path.join(SAMPLE, "rtc_stats.jsonl")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stdout == "", out
    assert out.stderr.startswith("kohaku: storage (postgres): "), out.stderr


@pytest.mark.storage("sqlite")
def test_import_several_files_and_formats(db, work):
    """Each file's format is told by its first line; one that tells none is not read (exit
    2), the others are stored."""
    stats = load_fixture(fixture_files()[2])
    a = write_lines(os.path.join(work, "a.jsonl"), rtc_stats_lines(webhook_body(stats)))
    b = write_lines(os.path.join(work, "b.jsonl"), [webhook_log_line(webhook_body(stats))])
    c = write_lines(os.path.join(work, "c.jsonl"), ["", json.dumps(make_envelope(stats))])
    d = write_lines(os.path.join(work, "d.jsonl"), ['{"hello": "world"}',
                                                    json.dumps(make_envelope(stats))])
    cfg = config_for(db, work)
    rc, s, _, err = run_import(cfg, "--json", a, d, b, c)
    assert rc == 2, (s, err)
    assert s["stored"] == 3 and s["files"] == 4, s
    assert s["errors"] == [{"file": d, "line": 1, "reason": "cannot tell the format from its "
                            "first line (no rtc_data, req or type in it); name it with "
                            "--format rtc-stats, webhook-log or bodies"}], s
    rc, s, _, err = run_import(cfg, "--json", "--format", "bodies", d)
    assert rc == 1 and s["stored"] == 1 and refused_of(s) == [(1, "type: required")], s
    # the sample log of the repository
    rc, s, text, err = run_import(cfg, os.path.join(SAMPLE, "rtc_stats.jsonl"))
    assert rc == 0, err
    assert re.search(r"^Imported 1 file: 60 lines, 4 reports in ", text), text
    assert re.search(r"stored +4\n", text) and err == "", (text, err)


@pytest.mark.storage("sqlite")
def test_import_progress_on_a_terminal(db, work):
    """On a terminal stderr gets a progress line, over and over; elsewhere nothing."""
    path = os.path.join(work, "rtc_stats.jsonl")
    # big enough to outlast the 250 ms between progress lines several times over: 24 MiB
    # once took less than one on a fast machine, and only the clearing was written
    write_big_rtc_stats(path, 96 << 20, connections=300)
    cfg = config_for(db, work)
    master, slave = pty.openpty()
    p = subprocess.Popen([KOHAKU_BIN, "-C", cfg, "import", path], stdout=subprocess.PIPE,
                         stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    out, _ = p.communicate(timeout=60)
    os.close(master)
    assert p.returncode == 0
    text = seen.decode()
    assert re.search(r"\r\x1b\[Kimport: [\d.]+ MiB of [\d.]+ MiB \(\d+%\), \d+ lines, \d+ "
                     r"reports, \d+ reports/s, ETA \d+m\d\ds", text), repr(text[:500])
    assert text.endswith("\r\x1b[K"), repr(text[-100:])  # cleared before the summary
    assert b"stored" in out
    # not a terminal: quiet
    rc, _, _, err = run_import(cfg, path)
    assert rc == 0 and err == "", err

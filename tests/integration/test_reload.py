"""SIGHUP: the config file is read again and the keys marked "reloaded on SIGHUP" take effect
in the running daemon (log level, limits, retry-after ...); a key that needs a restart is
named in a warning and keeps its value; a config file that does not load changes nothing;
and the log file is reopened at its path, so logrotate can move it away and signal."""
import json
import os
import signal
import socket
import subprocess
import time

from helpers import (CurlError, Kohaku, fixture_files, free_port, load_fixture, loadgen,
                     make_envelope, need_tool, post_h2, wait_until)

UNREACHABLE_PG = "postgresql://127.0.0.1:1/none?connect_timeout=1"


def read_config(k):
    out = {}
    with open(k.config_path) as f:
        for line in f:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def write_config(k, settings, extra_lines=""):
    with open(k.config_path, "w") as f:
        for key, value in settings.items():
            f.write(f"{key} = {value}\n")
        f.write(extra_lines)


def change_config(k, **changes):
    cfg = read_config(k)
    cfg.update({key: str(v).lower() if isinstance(v, bool) else str(v)
                for key, v in changes.items()})
    write_config(k, cfg)
    return cfg


def lines_of(text):
    """The log's complete lines, parsed. A last line without its newline is still being
    written by the daemon (read while it writes): left for the next read."""
    out = []
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    for line in text.splitlines():
        out.append(json.loads(line) if line.startswith("{") else {"raw": line})
    return out


def count_msg(text, msg):
    return sum(1 for l in lines_of(text) if l.get("msg") == msg)


def wait_for(predicate, what, timeout=10):
    return wait_until(predicate, timeout, message=what)


def hup(k, log_text=None, msg="reloaded: config"):
    """Sends SIGHUP and waits for one more `msg` line; returns that line."""
    log_text = log_text or k.log_text
    before = count_msg(log_text(), msg)
    k.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: count_msg(log_text(), msg) > before, f"{msg!r} after SIGHUP")
    return [l for l in lines_of(log_text()) if l.get("msg") == msg][-1]


def get_ok(port):
    """GET /.ok over HTTP/1.1 with curl; returns (status, headers)."""
    need_tool("curl")
    out = subprocess.run(["curl", "-s", "-S", "-D", "-", "-o", "/dev/null",
                          f"http://127.0.0.1:{port}/.ok"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    lines = out.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (l.partition(":") for l in lines[1:] if l)}
    return int(lines[0].split()[1]), headers


def access_lines(text, path="/.ok"):
    return [l for l in lines_of(text) if l.get("msg") == "access" and l.get("path") == path]


def request_and_wait_access(k, log_text=None):
    """One GET /.ok, then waits until its access line is out (info lines are buffered)."""
    log_text = log_text or k.log_text
    before = len(access_lines(log_text()))
    status, _ = get_ok(k.port)
    assert status == 204
    wait_for(lambda: len(access_lines(log_text())) > before, "the access line")


def post_status(k, report):
    """POSTs a report over h2c; returns the status, from the access log when curl cannot
    tell it: a 413 comes at the headers with RST_STREAM(NO_ERROR) after it, which curl
    reports as a stream error (92) when it had body left to send."""
    before = len(access_lines(k.log_text(), "/collector"))
    try:
        return post_h2(k.port, report).status
    except CurlError as e:
        assert e.returncode == 92, e
    wait_for(lambda: len(access_lines(k.log_text(), "/collector")) > before, "the access line")
    return access_lines(k.log_text(), "/collector")[-1]["status"]


def test_debug_level_follows_the_config():
    k = Kohaku({"storage": "null", "debug": "false"}).start()
    try:
        request_and_wait_access(k)
        assert count_msg(k.log_text(), "connection accepted") == 0
        change_config(k, debug=True)
        line = hup(k)
        assert line["level"] == "info"
        assert line["changed"] == "debug"
        assert line["file"] == k.config_path
        request_and_wait_access(k)
        wait_for(lambda: count_msg(k.log_text(), "connection accepted") > 0,
                 "a debug line after debug = true")
        # the effective config is logged again at debug level
        assert any(l.get("msg") == "config" and l.get("key") == "debug" and l.get("value")
                   is True for l in lines_of(k.log_text()))
        # and back
        change_config(k, debug=False)
        assert hup(k)["changed"] == "debug"
        seen = count_msg(k.log_text(), "connection accepted")
        for _ in range(3):
            request_and_wait_access(k)
        assert count_msg(k.log_text(), "connection accepted") == seen
        # SIGHUP with nothing changed
        assert hup(k)["changed"] == ""
    finally:
        assert k.close() == 0


def test_retry_after_of_503_follows_the_config():
    # PostgreSQL that never answers: /.ok and reports get 503 with retry-after
    k = Kohaku({"storage": "postgres", "postgres_uri": UNREACHABLE_PG, "retry_after": 5,
                "debug": "false"}).start(health=503)
    try:
        body = make_envelope(load_fixture(fixture_files()[0]))
        status, headers = get_ok(k.port)
        assert status == 503 and headers["retry-after"] == "5"
        r = post_h2(k.port, body)
        assert r.status == 503 and r.headers["retry-after"] == "5", r.text
        change_config(k, retry_after=11)
        assert hup(k)["changed"] == "retry_after"
        status, headers = get_ok(k.port)
        assert status == 503 and headers["retry-after"] == "11"
        r = post_h2(k.port, body)
        assert r.status == 503 and r.headers["retry-after"] == "11", r.text
    finally:
        assert k.close() == 0


def test_a_broken_config_changes_nothing():
    k = Kohaku({"storage": "null", "debug": "false"}).start()
    try:
        report = make_envelope(load_fixture(fixture_files()[0]))
        assert len(json.dumps(report)) > 2048
        assert post_status(k, report) == 204
        good = read_config(k)

        def broken(extra, reason):
            # good values that would change something, then one bad line
            settings = dict(good, debug="true", max_body_bytes="1024")
            write_config(k, settings, extra)
            line = hup(k, msg="config reload failed; keeping the current values")
            assert line["level"] == "error"
            assert line["error"] == f"{k.config_path}:{len(settings) + 1}: {reason}", line
            # every value stays: no debug lines, large bodies still accepted
            assert post_status(k, report) == 204
            request_and_wait_access(k)
            assert count_msg(k.log_text(), "connection accepted") == 0
            assert count_msg(k.log_text(), "reloaded: config") == 0

        broken("max_json_depth = 1000\n", "max_json_depth: must be between 4 and 64, got 1000")
        broken("this is not a setting\n", "syntax error (expected key = value)")
        broken("no_such_key = 1\n", "unknown key 'no_such_key'")
        # a file that does not exist any more (it was given with -C)
        os.rename(k.config_path, k.config_path + ".moved")
        line = hup(k, msg="config reload failed; keeping the current values")
        assert line["error"].startswith(f"{k.config_path}: cannot open"), line
        os.rename(k.config_path + ".moved", k.config_path)
        # fixed: the new values apply
        write_config(k, dict(good, debug="true", max_body_bytes="1024"))
        assert hup(k)["changed"] == "debug,max_body_bytes"
        assert post_status(k, report) == 413
        request_and_wait_access(k)
        wait_for(lambda: count_msg(k.log_text(), "connection accepted") > 0, "debug lines")
    finally:
        assert k.close() == 0


def test_a_key_that_needs_a_restart_is_named_and_kept():
    k = Kohaku({"storage": "null", "debug": "false"}).start()
    try:
        old_port = k.port
        new_port = free_port()
        change_config(k, listen_port=new_port, batch_max_reports=7, retry_after=6)
        line = hup(k)
        assert line["changed"] == "retry_after"
        warned = [l for l in lines_of(k.log_text())
                  if l.get("msg") == "config changed; needs a restart"]
        assert sorted(l["key"] for l in warned) == ["batch_max_reports", "listen_port"]
        assert all(l["level"] == "warn" for l in warned)
        # still serving on the old port, nothing on the new one
        assert get_ok(old_port)[0] == 204
        try:
            socket.create_connection(("127.0.0.1", new_port), 1).close()
            raise AssertionError("kohaku listens on the new port without a restart")
        except ConnectionRefusedError:
            pass
        # another SIGHUP warns again: the key still differs from the running value
        hup(k)
        warned = [l for l in lines_of(k.log_text())
                  if l.get("msg") == "config changed; needs a restart"]
        assert len(warned) == 4
    finally:
        assert k.close() == 0


def start_logging_to_file(settings, log_dir):
    """A daemon logging to log_dir/kohaku.jsonl (stdout stays empty): waits for it."""
    k = Kohaku(dict(settings, log_stdout="false", log_dir=str(log_dir),
                    log_name="kohaku.jsonl")).start(wait=False)
    path = os.path.join(str(log_dir), "kohaku.jsonl")

    def ready():
        assert k.proc.poll() is None, f"kohaku exited early:\n{k.log_text()}"
        if not os.path.exists(path) or '"msg":"listening"' not in read(path):
            return False
        try:
            socket.create_connection(("127.0.0.1", k.port), 0.5).close()
            return True
        except OSError:
            return False

    wait_for(ready, "kohaku to listen", timeout=20)
    return k, path


def read(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def test_log_file_is_reopened_for_logrotate(tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    k, path = start_logging_to_file({"storage": "null", "debug": "false"}, log_dir)
    rotated = path + ".1"
    try:
        cur = lambda: read(path)  # noqa: E731
        request_and_wait_access(k, cur)
        # logrotate without copytruncate: move the file away, then SIGHUP
        os.rename(path, rotated)
        old = lambda: read(rotated)  # noqa: E731
        request_and_wait_access(k, old)  # until the signal, lines go to the moved file
        assert not os.path.exists(path)
        line = hup(k, cur)
        assert line["log_file"] == path
        request_and_wait_access(k, cur)
        new_text, old_text = read(path), read(rotated)
        assert len(access_lines(old_text)) == 2
        assert '"msg":"listening"' in old_text and '"msg":"reloaded: config"' not in old_text
        assert len(access_lines(new_text)) == 1 and '"msg":"listening"' not in new_text
        assert k.log_text() == ""  # nothing on stdout
        # every line of both files is whole
        for text in (old_text, new_text):
            for l in lines_of(text):
                assert "raw" not in l, l
        # log_name changed: the next SIGHUP moves the log there
        other = os.path.join(str(log_dir), "other.jsonl")
        change_config(k, log_name="other.jsonl")
        other_text = lambda: read(other)  # noqa: E731
        line = hup(k, other_text)
        assert line["changed"] == "log_name" and line["log_file"] == other
        request_and_wait_access(k, other_text)
        assert len(access_lines(read(path))) == 1
        # a log file that cannot be opened: an error, and the current file stays in use
        change_config(k, log_dir=str(tmp_path / "missing"))
        before = count_msg(other_text(), "log file reopen failed; keeping the current one")
        line = hup(k, other_text)
        assert line["changed"] == "log_dir" and "log_file" not in line
        failed = [l for l in lines_of(other_text())
                  if l.get("msg") == "log file reopen failed; keeping the current one"]
        assert len(failed) == before + 1
        assert failed[-1]["level"] == "error"
        assert failed[-1]["path"] == str(tmp_path / "missing" / "other.jsonl")
        request_and_wait_access(k, other_text)
        # back to stdout
        change_config(k, log_stdout=True)
        line = hup(k)
        assert line["changed"] == "log_stdout"
        request_and_wait_access(k)
    finally:
        assert k.close() == 0
    assert '"msg":"stopped"' in k.log_text()  # the last lines went to stdout


def test_reopen_under_load_loses_no_line(tmp_path):
    """Reports stream in while the log file is moved and reopened again and again: every
    request's access line is in exactly one of the files, and every line is whole."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    k, path = start_logging_to_file({"storage": "sqlite",
                                     "sqlite_path": str(tmp_path / "kohaku.db"),
                                     "sqlite_synchronous": "normal", "debug": "true"}, log_dir)
    result = {}
    import threading

    def run():
        result["lg"] = loadgen(k.port, "-c", 4, "-m", 8, "-n", 100, "-N", 3000)

    t = threading.Thread(target=run)
    try:
        t.start()
        rotations = 0
        while t.is_alive() or rotations < 3:
            rotations += 1
            os.rename(path, f"{path}.{rotations}")
            k.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: os.path.exists(path), "the reopened log file")
            time.sleep(0.05)  # the pace of the rotations under load, not a wait
        t.join()
        rc, summary, out = result["lg"]
        assert rc == 0, out
        assert summary["status"] == {"204": 3000}, out
    finally:
        t.join()
        assert k.close() == 0
    texts = [read(path)] + [read(f"{path}.{i}") for i in range(1, rotations + 1)]
    assert rotations >= 3
    total = 0
    for text in texts:
        for l in lines_of(text):
            assert "raw" not in l, l
        total += len(access_lines(text, "/collector"))
    assert total == 3000
    assert sum(count_msg(t_, "reloaded: config") for t_ in texts) == rotations


def test_log_file_rotates_by_size(tmp_path):
    """log_rotate_max_size (MB) and log_rotate_max_backups, as Kohaku 2023.1 has them: under
    load kohaku renames a full log file to kohaku-TIME.jsonl and starts a new one, keeps the
    newest backups only, and every line lands whole in one file."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    k, path = start_logging_to_file({"storage": "null", "debug": "true",
                                     "log_rotate_max_size": 1, "log_rotate_max_backups": 2},
                                    log_dir)
    try:
        # debug logs a few lines per report: 12,000 reports write several MB
        rc, summary, out = loadgen(k.port, "-c", 4, "-m", 16, "-n", 200, "-N", 12000)
        assert rc == 0 and summary["status"] == {"204": 12000}, out
    finally:
        assert k.close() == 0
    backups = sorted(f for f in os.listdir(log_dir) if f.startswith("kohaku-"))
    assert len(backups) == 2, os.listdir(log_dir)
    for name in backups:
        assert len(name) == len("kohaku-2026-11-30T10-23-12.345.jsonl"), name
        size = os.path.getsize(log_dir / name)
        assert 1048576 <= size < 1048576 + 4096, (name, size)  # cut at the line that crossed
        for l in lines_of(read(str(log_dir / name))):
            assert "raw" not in l, l
    # the newest lines are in the live file, which ends with the shutdown
    assert os.path.getsize(path) < 1048576 + 4096
    assert count_msg(read(path), "stopped") == 1

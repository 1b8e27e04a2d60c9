"""The command line: --version (with the libraries' versions), --help, bad options, config
errors reported as FILE:LINE with the key, and a config file with comments and blank lines."""
import re
import sqlite3
import subprocess

import pytest

from helpers import KOHAKU_BIN, Kohaku, curl, free_port, make_envelope, post_h2

HELP_KEYS = ["listen_addr", "listen_port", "storage", "sqlite_path", "max_body_bytes",
             "batch_max_reports", "batch_max_delay_ms", "debug", "shutdown_timeout",
             "collector_path"]


def run(*args, timeout=10):
    return subprocess.run([KOHAKU_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


LIBRARIES = ["nghttp2", "libevent", "OpenSSL", "SQLite", "libpq", "yajl", "http-parser"]


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag):
    """kohaku's version, then each library's run-time version, one per line."""
    out = run(flag)
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    assert re.fullmatch(r"kohaku \d+\.\d+\.\d+", lines[0]), out.stdout
    versions = {}
    for line in lines[1:]:
        m = re.fullmatch(r"(\S+) (\d+\.\d+(?:\.\d+)?)\S*(?: .*)?", line)
        assert m, f"not 'library version': {line!r}"
        versions[m.group(1)] = m.group(2)
    assert list(versions) == LIBRARIES, out.stdout
    # the library actually loaded: Debian's python3 uses the same libsqlite3
    assert versions["SQLite"] == sqlite3.sqlite_version, (versions, sqlite3.sqlite_version)
    assert out.stderr == ""


@pytest.mark.parametrize("args,message", [
    (["--x"], "kohaku: unknown option '--x'; see kohaku --help\n"),
    (["--no-such=1"], "kohaku: unknown option '--no-such'; see kohaku --help\n"),
    (["-x"], "kohaku: unknown option '-x'; see kohaku --help\n"),
    (["-C"], "kohaku: option '-C' needs a value; see kohaku --help\n"),
    (["--config"], "kohaku: option '--config' needs a value; see kohaku --help\n"),
    (["--version=2"], "kohaku: option '--version' takes no value; see kohaku --help\n"),
    (["serve", "now"], "kohaku: unexpected argument 'now'; see kohaku --help\n"),
], ids=["long", "long-with-value", "short", "short-needs-value", "long-needs-value",
        "flag-with-value", "extra-argument"])
def test_bad_option_prints_one_line(args, message):
    """Not the whole help: one line naming the option, exit status 2, nothing started."""
    out = run(*args)
    assert out.returncode == 2, out
    assert out.stderr == message
    assert out.stdout == ""


def test_help_lists_config_keys():
    out = run("--help")
    assert out.returncode == 0, out
    missing = [k for k in HELP_KEYS if not re.search(rf"\b{k}\b", out.stdout)]
    assert not missing, f"--help does not list {missing}:\n{out.stdout}"
    assert "-C" in out.stdout and "--version" in out.stdout


def config_lines(*lines):
    return ["listen_addr = 127.0.0.1", f"listen_port = {free_port()}",
            "exporter_listen_addr = 127.0.0.1", f"exporter_listen_port = {free_port()}",
            "storage = null", *lines]


# (id, bad line, the name the message must carry: the key)
BAD = [
    ("unknown-key", "no_such_key = 1", "no_such_key"),
    ("unknown-key-typo", "listen_prot = 5890", "listen_prot"),
    ("port-too-big", "listen_port = 99999", "listen_port"),
    ("port-zero", "listen_port = 0", "listen_port"),
    ("port-not-number", "listen_port = http", "listen_port"),
    ("port-trailing-junk", "listen_port = 5890x", "listen_port"),
    ("bool", "debug = maybe", "debug"),
    ("storage", "storage = mongodb", "storage"),
    ("body-bytes", "max_body_bytes = lots", "max_body_bytes"),
    ("body-bytes-negative", "max_body_bytes = -5", "max_body_bytes"),
    ("batch", "batch_max_reports = 0", "batch_max_reports"),
    ("shutdown", "shutdown_timeout = never", "shutdown_timeout"),
]


@pytest.mark.parametrize("line,key", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_exits_with_file_line_and_key(line, key, tmp_path):
    cfg = tmp_path / "kohaku.ini"
    lines = config_lines("# a comment", "", line, "debug = false")
    cfg.write_text("\n".join(lines) + "\n")
    lineno = lines.index(line) + 1
    out = run("-C", str(cfg))
    assert out.returncode != 0, out
    assert f"{cfg}:{lineno}" in out.stderr, out.stderr
    assert key in out.stderr, out.stderr
    assert '"msg":"listening"' not in out.stdout


def test_one_port_for_both_listeners_is_refused(tmp_path):
    cfg = tmp_path / "kohaku.ini"
    cfg.write_text("listen_addr = 127.0.0.1\nlisten_port = 5990\n"
                   "exporter_listen_addr = 127.0.0.1\nexporter_listen_port = 5990\n")
    out = run("-C", str(cfg))
    assert out.returncode == 2, out
    assert "exporter_listen_port: the metrics listener needs a port of its own" in out.stderr
    assert '"msg":"listening"' not in out.stdout


def test_line_without_equals_is_reported_with_file_line(tmp_path):
    cfg = tmp_path / "kohaku.ini"
    lines = config_lines("just some words")
    cfg.write_text("\n".join(lines) + "\n")
    out = run("-C", str(cfg))
    assert out.returncode != 0, out
    assert f"{cfg}:{len(lines)}" in out.stderr, out.stderr


def test_missing_config_file_fails(tmp_path):
    path = tmp_path / "nope.ini"
    out = run("-C", str(path))
    assert out.returncode != 0, out
    assert str(path) in out.stderr, out.stderr


def test_config_with_comments_blank_lines_and_spaces(tmp_path, db):
    """Comments, blank lines and free spacing around `=` are fine; the values are used.
    (Indented lines are not: inih reads them as continuations of the previous value.)"""
    k = Kohaku(tmp_path / "k")
    k.config_text = "\n".join([
        "; kohaku test config",
        "# hash comment",
        "",
        "listen_addr=127.0.0.1",
        f"listen_port   =   {k.port}   ",
        "exporter_listen_addr = 127.0.0.1",
        f"exporter_listen_port = {free_port()}",
        "storage = sqlite",
        f"sqlite_path = {db.path}",
        "collector_path = /in",
        "debug = false",
        "",
    ])
    k.start()
    try:
        env = make_envelope([{"type": "transport", "id": "T01", "timestamp": 1.5}])
        assert post_h2(k.port, env, path="/in").status == 204
        assert db.count("rtc_transport_stats", "connection_id = ?",
                        (env["connection_id"],)) == 1
        assert curl(f"{k.url}/.ok", "--http1.1").status == 204
        # debug = false: no debug lines
        assert not [l for l in k.log_lines() if l.get("level") == "debug"]
    finally:
        assert k.stop() == 0, k.describe()

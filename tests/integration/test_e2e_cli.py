"""The command line: --version (with the libraries' versions), --help, bad options, config
errors reported as FILE:LINE with the key (also those found after parsing), a config file with
comments and blank lines, a config written like Kohaku 2023.1's example (quoted values) that
kohaku serves on unchanged, the hint for a YAML config, and start-up failures that reach
stderr when the log goes to a file."""
import os
import re
import socket
import sqlite3
import subprocess

import pytest

from helpers import KOHAKU_BIN, Kohaku, PgDb, curl, free_port, make_envelope, post_h2
from pgcluster import PgCluster, unique_db_name

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
    k = Kohaku(directory=tmp_path / "k")
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


# --- Kohaku 2023.1's config --------------------------------------------------------------------

# Written the way Kohaku 2023.1's example config is (its key names and order, its comments,
# strings in double quotes, "" for what is not set); ports, paths and the database are
# rewritten below for the test, keeping the quotes.
KOHAKU_2023_1_EXAMPLE = """debug = false

# Kohaku の HTTP リクエストで HTTPS を利用するかどうか
https = false
# Kohaku の HTTP リクエストの待ち受けアドレスとポートです
listen_addr = "0.0.0.0"
listen_port = 5890

exporter_https = false
# Kohaku の Prometheus の待ち受けアドレスとポートです
exporter_listen_addr = "0.0.0.0"
exporter_listen_port = 5891

# [log]
log_dir = "."
log_name = "kohaku.jsonl"
log_stdout = true

# log_rotate_max_size = 200
# log_rotate_max_backups = 7
# log_rotate_max_age = 30

postgres_uri = "postgres://postgres:password@127.0.0.1:5432/kohaku"
# postgres_ca_cert_file = ""

# pem なのは前提とする
tls_fullchain_file = ""
tls_privkey_file = ""
tls_verify_cacert_path = ""

http2_max_concurrent_streams = 250
http2_max_read_frame_size = 1048576
http2_idle_timeout = 60
"""


def kohaku_2023_1_config(port, metrics_port, log_dir, uri, upper_keys=False):
    text = KOHAKU_2023_1_EXAMPLE
    for old, new in [('listen_addr = "0.0.0.0"', 'listen_addr = "127.0.0.1"'),
                     ("listen_port = 5890", f"listen_port = {port}"),
                     ("exporter_listen_port = 5891", f"exporter_listen_port = {metrics_port}"),
                     ('log_dir = "."', f'log_dir = "{log_dir}"'),
                     ('postgres_uri = "postgres://postgres:password@127.0.0.1:5432/kohaku"',
                      f'postgres_uri = "{uri}"')]:
        assert old in text
        text = text.replace(old, new)
    if upper_keys:
        text = "\n".join(l if l.startswith("#") or "=" not in l else
                         l.split("=", 1)[0].upper() + "=" + l.split("=", 1)[1]
                         for l in text.split("\n"))
    return text


@pytest.fixture(scope="module")
def pg_2023_1():
    """A PostgreSQL cluster of this module's own. kohaku creates the TimescaleDB extension
    whenever the server lists it as available, and the extension cannot be created unless it
    is preloaded: where TimescaleDB is installed, the cluster preloads it."""
    cluster = PgCluster()
    try:
        listed = cluster.psql("postgres", "SELECT count(*) FROM pg_available_extensions "
                                          "WHERE name = 'timescaledb'")
        if listed == "1":
            cluster.stop()
            with open(os.path.join(cluster.data, "postgresql.conf"), "a") as f:
                f.write("shared_preload_libraries = 'timescaledb'\n")
            cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.mark.parametrize("upper_keys", [False, True], ids=["as-written", "keys-in-upper-case"])
def test_kohaku_2023_1_config_serves_unchanged(tmp_path, pg_2023_1, upper_keys):
    """The quoted values are read without their quotes: the listener binds the quoted address
    and the quoted postgres_uri reaches the server in it (over TCP; the cluster's Unix socket
    is in a directory of its own, so a URI read as a database name would not get there)."""
    store = PgDb(pg_2023_1, unique_db_name())
    k = Kohaku(directory=tmp_path / "k")
    k.config_text = kohaku_2023_1_config(k.port, free_port(), tmp_path / "k", store.uri,
                                         upper_keys)
    assert '"127.0.0.1"' in k.config_text
    assert 'tls_verify_cacert_path = ""' in k.config_text.lower()
    k.start()
    try:
        assert curl(f"{k.url}/.ok", "--http1.1").status == 204
        ready = [l for l in k.log_lines() if l.get("msg") == "storage ready"]
        assert ready and ready[0]["storage"] == "postgres", k.describe()
        env = make_envelope([{"type": "transport", "id": "T01", "timestamp": 1.5}])
        assert post_h2(k.port, env).status == 204
        assert store.count("rtc_transport_stats", "connection_id = ?",
                           (env["connection_id"],)) == 1
        listening = [l for l in k.log_lines() if l.get("msg") == "listening"][0]
        assert listening["addr"] == "127.0.0.1" and listening["port"] == k.port
    finally:
        assert k.stop() == 0, k.describe()


# --- YAML ---------------------------------------------------------------------------------------

KOHAKU_2022_1_YAML = """collector_port: 5890

timescale_url: postgres://postgres:password@127.0.0.1:5432/kohaku
timescale_sslmode: "disable"

http2_max_concurrent_streams: 250
log_dir: .
log_stdout: true
"""


@pytest.mark.parametrize("name", ["config.yaml", "config.yml", "config.ini"])
def test_yaml_config_gets_the_ini_hint(tmp_path, name):
    """Kohaku 2022.1 read config.yaml; a YAML file, by its name or by a 'key: value' line,
    stops kohaku with the hint, and the file and line when the content gave it away."""
    cfg = tmp_path / name
    cfg.write_text(KOHAKU_2022_1_YAML)
    out = run("-C", str(cfg))
    assert out.returncode == 2, out
    assert "kohaku reads INI; see config.example.ini" in out.stderr, out.stderr
    if name.endswith(".ini"):
        assert out.stderr.startswith(f"kohaku: {cfg}:1: collector_port: a YAML line"), out.stderr
    assert out.stdout == ""


# --- errors found after parsing -----------------------------------------------------------------

def test_cross_key_error_names_file_and_line(tmp_path):
    cfg = tmp_path / "kohaku.ini"
    lines = config_lines("https = false", "# client certificates",
                         'tls_verify_cacert_path = "/etc/kohaku/ca.pem"', "debug = false")
    cfg.write_text("\n".join(lines) + "\n")
    out = run("-C", str(cfg))
    assert out.returncode == 2, out
    lineno = lines.index('tls_verify_cacert_path = "/etc/kohaku/ca.pem"') + 1
    assert out.stderr == (f"kohaku: {cfg}:{lineno}: tls_verify_cacert_path: client "
                          "certificates need https = true\n")


def test_unterminated_quote_names_file_and_line(tmp_path):
    cfg = tmp_path / "kohaku.ini"
    lines = config_lines('log_dir = "/var/log/kohaku', "debug = false")
    cfg.write_text("\n".join(lines) + "\n")
    out = run("-C", str(cfg))
    assert out.returncode == 2, out
    assert out.stderr.startswith(f"kohaku: {cfg}:{lines.index(lines[-2]) + 1}: log_dir: "
                                 "unterminated quote"), out.stderr


# --- start-up failures on stderr ----------------------------------------------------------------

def start_and_fail(tmp_path, lines, merged=False):
    """Runs kohaku on a config that cannot start; returns (status, stdout, stderr)."""
    cfg = tmp_path / "kohaku.ini"
    cfg.write_text("\n".join(lines) + "\n")
    out = subprocess.run([KOHAKU_BIN, "-C", str(cfg)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                         text=True, timeout=30)
    return out.returncode, out.stdout, out.stderr or ""


@pytest.fixture
def busy_port():
    """A port of 127.0.0.1 that something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def stats_listener(port):
    return ["listen_addr = 127.0.0.1", f"listen_port = {port}",
            "exporter_listen_addr = 127.0.0.1", f"exporter_listen_port = {free_port()}"]


def test_port_in_use_reaches_stderr_with_log_to_file(tmp_path, busy_port):
    rc, out, err = start_and_fail(tmp_path, stats_listener(busy_port) + [
        "storage = null", "log_stdout = false", f'log_dir = "{tmp_path}"'])
    assert rc == 1
    assert out == ""
    assert err == (f"kohaku: listener failed: cannot listen on 127.0.0.1:{busy_port}: "
                   "Address already in use\n")
    log = (tmp_path / "kohaku.jsonl").read_text()
    assert '"level":"error","msg":"listener failed"' in log, log


def test_storage_failure_reaches_stderr_with_log_to_file(tmp_path):
    rc, out, err = start_and_fail(tmp_path, stats_listener(free_port()) + [
        "storage = sqlite", f"sqlite_path = {tmp_path}/missing/dir/kohaku.db",
        "log_stdout = false", f"log_dir = {tmp_path}"])
    assert rc == 1
    assert out == ""
    assert err.startswith("kohaku: storage failed to open: "), err
    assert err.count("\n") == 1, err
    assert '"msg":"storage failed to open"' in (tmp_path / "kohaku.jsonl").read_text()


def test_port_in_use_is_said_once_when_logging_to_stdout(tmp_path, busy_port):
    """log_stdout = true: the JSON line on stdout and, stderr being another file, the plain
    line there; when stdout and stderr are one file (a terminal, a journal stream, 2>&1) the
    JSON line is there and only once."""
    lines = stats_listener(busy_port) + ["storage = null", "log_stdout = true"]
    rc, out, err = start_and_fail(tmp_path, lines)
    assert rc == 1
    assert out.count('"msg":"listener failed"') == 1, out
    assert err == (f"kohaku: listener failed: cannot listen on 127.0.0.1:{busy_port}: "
                   "Address already in use\n")
    rc, both, _ = start_and_fail(tmp_path, lines, merged=True)
    assert rc == 1
    assert both.count("listener failed") == 1, both
    assert '"msg":"listener failed"' in both


@pytest.mark.parametrize("extra,bad,key", [
    ([], "listen_addr = localhost", "listen_addr"),
    (["https = true", 'tls_privkey_file = "/etc/hostname"'],
     'tls_fullchain_file = "/nonexistent/server.crt"', "tls_fullchain_file"),
], ids=["listen-address", "certificate-file"])
def test_value_refused_at_start_up_names_file_and_line(tmp_path, extra, bad, key):
    """A value the listener refuses (not a numeric address, a certificate that does not load)
    is named with the line that set it, on stderr and in the log."""
    lines = stats_listener(free_port()) + ["storage = null"] + extra + [bad]
    rc, out, err = start_and_fail(tmp_path, lines)
    assert rc == 1
    cfg = tmp_path / "kohaku.ini"
    assert err.startswith(f"kohaku: listener failed: {cfg}:{len(lines)}: {key}: "), err
    failed = [l for l in out.splitlines() if '"msg":"listener failed"' in l]
    assert failed and f"{cfg}:{len(lines)}: {key}: " in failed[0], out

"""The one harness of the end-to-end suite: every test module and conftest.py import it.

- where things are: the repo root (from this file), the binaries (KOHAKU_BIN, and
  kohaku-loadgen beside it), the browser fixtures (KOHAKU_FIXTURES);
- `wait_until`: polling for a condition, the way every wait in the suite is done;
- report builders: Sora-like envelopes around the real getStats() fixtures, erlang-vm reports;
- the stats type -> table mapping and the expected row counts of a report;
- databases behind one interface, `SqliteDb` and `PgDb` (`query`, `execute`, `count`, `rows`,
  `count_all`, `columns`, `tables`, `settings`; SQL with `?` placeholders on both);
- `Kohaku`: the daemon as a child process with its own directory, config (a dict of keys, or
  hand-written text), environment, log and stderr files; readiness by polling, /.ok, /metrics,
  the log, signals, exit codes;
- certificates made with the openssl CLI;
- real clients: curl (HTTP/1.1 and h2c prior knowledge, answers as `Response`), an h2c/TLS
  client on python3-h2 for many concurrent streams, and kohaku-loadgen.

The pytest fixtures that hand these out (a database per test, daemons stopped at teardown)
are in conftest.py. Nothing here sleeps for a fixed time: waits poll for what they wait for.
"""
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from pgcluster import free_port  # one source of ports, also for the clusters

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KOHAKU_BIN = os.environ.get("KOHAKU_BIN") or os.path.join(REPO_ROOT, "build", "kohaku")
KOHAKU_LOADGEN = os.path.join(os.path.dirname(KOHAKU_BIN), "kohaku-loadgen")
FIXTURES_DIR = os.environ.get("KOHAKU_FIXTURES") or os.path.normpath(
    os.path.join(REPO_ROOT, "tests", "fixtures", "browser"))

EXPORTER_HEADER = "x-sora-stats-exporter-type"
USER_AGENT = "connection.user-agent"
ERLANG_VM = "node.erlang-vm"

# Sora's ids are 26 characters of Crockford base32 (upper-case letters and digits).
B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# Members injected into some fixture objects: no schema has them, so they must land in `extra`.
UNKNOWN_MEMBERS = {"fooFutureMetric": 12.5, "barVendorNote": "x"}


# --- tools and ports ------------------------------------------------------------------------

def sanitizer_build(path=KOHAKU_BIN):
    """Whether the binary at path is an ASan build (it links libasan)."""
    try:
        with open(path, "rb") as f:
            return b"libasan.so" in f.read()
    except OSError:
        return False


def need_tool(name):
    """A test that needs a tool FAILS (never skips) when it is missing."""
    path = shutil.which(name)
    assert path, f"required tool {name!r} is not installed (not on PATH)"
    return path




def wait_until(predicate, timeout, interval=0.02, message="condition"):
    """Polls `predicate` until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# --- reports ----------------------------------------------------------------------------------

def sora_id():
    return "".join(random.choice(B32) for _ in range(26))


def rfc3339_now(offset_s=0.0, digits=6):
    """The time now (plus offset_s seconds) as UTC RFC 3339 with `digits` of fraction."""
    t = time.time() + offset_s
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    frac = ("%.9f" % (t % 1))[2:2 + digits]
    return f"{base}.{frac}Z"


def normalised_time(ts):
    """The `time` column for an envelope timestamp: the fraction padded/cut to 6 digits."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d+)Z", ts)
    assert m, f"test bug: not a UTC RFC 3339 timestamp with fraction: {ts}"
    return f"{m.group(1)}.{(m.group(2) + '000000')[:6]}Z"


def fixture_files():
    """Every browser fixture (`*-t*.json`); the list is never hard-coded."""
    files = sorted(glob.glob(os.path.join(FIXTURES_DIR, "*-t*.json")))
    assert files, f"no browser fixtures (*-t*.json) in {FIXTURES_DIR}"
    return files


def load_fixture(path):
    with open(path, encoding="utf-8") as f:
        stats = json.load(f)
    assert isinstance(stats, list) and stats, f"{path}: not a non-empty JSON array"
    return stats


def inject_unknown(stats, every=3):
    """A copy of `stats` where every `every`-th object also carries UNKNOWN_MEMBERS."""
    out = []
    for i, obj in enumerate(stats):
        obj = dict(obj)
        if i % every == 0:
            obj.update(UNKNOWN_MEMBERS)
        out.append(obj)
    return out


def make_envelope(stats, **overrides):
    """A `connection.user-agent` report as Sora sends it, with fresh ids."""
    env = {
        "type": "connection.user-agent",
        "id": sora_id(),
        "timestamp": rfc3339_now(),
        "label": "WebRTC SFU Sora",
        "version": "2025.1.0",
        "node_name": "sora@127.0.0.1",
        "multistream": True,
        "simulcast": False,
        "spotlight": False,
        "role": "sendrecv",
        "channel_id": "room-" + sora_id()[:8].lower(),
        "session_id": sora_id(),
        "client_id": "client-" + sora_id()[:6].lower(),
        "connection_id": sora_id(),
        "stats": stats,
    }
    env.update(overrides)
    return env


def fixture_envelope(path, inject=True, **overrides):
    stats = load_fixture(path)
    if inject:
        stats = inject_unknown(stats)
    return make_envelope(stats, **overrides)


def erlang_vm_memory(**over):
    item = {"type": "erlang-vm-memory", "total": 73400320, "processes": 20971520,
            "processes_used": 20905984, "system": 52428800, "atom": 1056905,
            "atom_used": 1040384, "binary": 1310720, "code": 26214400, "ets": 3145728}
    item.update(over)
    return item


def make_erlang_vm_envelope(stats=None, **overrides):
    env = {
        "type": "node.erlang-vm",
        "id": sora_id(),
        "timestamp": rfc3339_now(),
        "label": "WebRTC SFU Sora",
        "version": "2025.1.0",
        "node_name": "sora-" + sora_id()[:6].lower() + "@10.0.0.5",
        "stats": [erlang_vm_memory()] if stats is None else stats,
    }
    env.update(overrides)
    return env


def body_bytes(body):
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


# --- stats type -> table ----------------------------------------------------------------------

TYPE_TABLE = {
    "codec": "rtc_codec_stats",
    "inbound-rtp": "rtc_inbound_rtp_stream_stats",
    "outbound-rtp": "rtc_outbound_rtp_stream_stats",
    "remote-inbound-rtp": "rtc_remote_inbound_rtp_stream_stats",
    "remote-outbound-rtp": "rtc_remote_outbound_rtp_stream_stats",
    "media-playout": "rtc_audio_playout_stats",
    "data-channel": "rtc_data_channel_stats",
    "transport": "rtc_transport_stats",
    "candidate-pair": "rtc_ice_candidate_pair_stats",
    "local-candidate": "rtc_ice_candidate_stats",
    "remote-candidate": "rtc_ice_candidate_stats",
    "certificate": "rtc_certificate_stats",
    "peer-connection": "rtc_peer_connection_stats",
}
MEDIA_SOURCE_TABLE = {"audio": "rtc_audio_source_stats", "video": "rtc_video_source_stats"}
OTHER_TABLE = "rtc_other_stats"
STATS_TABLES = sorted(set(TYPE_TABLE.values()) | set(MEDIA_SOURCE_TABLE.values())
                      | {OTHER_TABLE})
# Tables whose rows may be skipped when the object did not change since the last report of the
# same connection (DESIGN 2: codec, certificate, candidates).
UNCHANGING_TABLES = {"rtc_codec_stats", "rtc_certificate_stats", "rtc_ice_candidate_stats"}
COMMON_COLUMNS = ("time", "channel_id", "connection_id", "stats_type", "stats_id",
                  "stats_timestamp", "extra")
BASE_MEMBERS = ("type", "id", "timestamp")


def table_for(obj):
    if obj["type"] == "media-source" and obj.get("kind") in MEDIA_SOURCE_TABLE:
        return MEDIA_SOURCE_TABLE[obj["kind"]]
    return TYPE_TABLE.get(obj["type"], OTHER_TABLE)


def expected_counts(stats):
    """Rows per table that one report's stats array must produce."""
    return Counter(table_for(o) for o in stats)


def all_counts(db):
    """Rows in every stats table, sora_connection and sora_report."""
    return {t: db.count(t) for t in STATS_TABLES + ["sora_connection", "sora_report"]}


def snake_case(name):
    """bytesReceived -> bytes_received, qualityLimitationDurations -> ..._durations."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


# --- value comparison (backend-neutral) ---------------------------------------------------------

def as_json(value):
    """A JSON column as Python: SQLite gives text, PostgreSQL jsonb gives the object."""
    if value is None or isinstance(value, (dict, list)):
        return value
    return json.loads(value)


def stored_matches(json_value, stored):
    """Whether a stored column value is the member's JSON value (typed: ints stay ints,
    floats are REAL, booleans 0/1, nested objects JSON)."""
    if isinstance(json_value, bool):
        return stored in (0, 1) and not isinstance(stored, float) and bool(stored) == json_value
    if isinstance(json_value, int):
        # JSON has no float type: a whole number may sit in a REAL column.
        return isinstance(stored, (int, float)) and not isinstance(stored, bool) \
            and stored == json_value
    if isinstance(json_value, float):
        return isinstance(stored, float) and stored == json_value
    if isinstance(json_value, str):
        return isinstance(stored, str) and stored == json_value
    if isinstance(json_value, (dict, list)):
        return stored is not None and as_json(stored) == json_value
    return stored is None and json_value is None


# --- databases --------------------------------------------------------------------------------
# SqliteDb and PgDb answer the same calls: `query` returns tuples, `rows` dicts; SQL is written
# with `?` placeholders, which PgDb turns into psycopg2's.

class SqliteDb:
    """The daemon's SQLite file in `directory`. Reads go through a read-only connection (WAL
    mode: readers never block the writer, and a reader never creates the database);
    `execute` writes."""

    kind = "sqlite"

    def __init__(self, directory):
        self.path = os.path.join(str(directory), "kohaku.db")

    def settings(self):
        return {"storage": "sqlite", "sqlite_path": self.path}

    def _connect(self, write=False):
        assert os.path.exists(self.path), f"database file {self.path} does not exist"
        if write:
            return sqlite3.connect(self.path, timeout=10)
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)

    def query(self, sql, params=()):
        con = self._connect()
        try:
            return [tuple(r) for r in con.execute(sql, params).fetchall()]
        finally:
            con.close()

    def execute(self, sql, params=()):
        con = self._connect(write=True)
        try:
            rows = [tuple(r) for r in con.execute(sql, params).fetchall()]
            con.commit()
            return rows
        finally:
            con.close()

    def _dicts(self, sql, params=()):
        con = self._connect()
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute(sql, params).fetchall()]
        finally:
            con.close()

    def tables(self):
        return [name for (name,) in self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]

    def columns(self, table):
        return [r["name"] for r in self._dicts(f'PRAGMA table_info("{table}")')]

    def count(self, table, where=None, params=()):
        sql = f'SELECT count(*) FROM "{table}"' + (f" WHERE {where}" if where else "")
        return self.query(sql, params)[0][0]

    def rows(self, table, where=None, params=(), order_by=None):
        sql = f'SELECT * FROM "{table}"' + (f" WHERE {where}" if where else "")
        if order_by:
            sql += f" ORDER BY {order_by}"
        return self._dicts(sql, params)

    def count_all(self):
        """Rows in every table of the database (for 'nothing was stored' checks)."""
        return {t: self.count(t) for t in self.tables()}

    def counts_by_connection(self, table):
        return dict(self.query(
            f'SELECT connection_id, count(*) FROM "{table}" GROUP BY connection_id'))


class PgDb(SqliteDb):
    """A database of its own on a PostgreSQL cluster (pgcluster.PgCluster), created here. The
    calls of SqliteDb; `query` and `execute` both commit, so either may change the database.
    Values come back as psycopg2 gives them (jsonb as Python objects, timestamptz as
    datetime)."""

    kind = "postgres"

    def __init__(self, cluster, dbname):
        self.cluster = cluster
        self.dbname = dbname
        self.uri = cluster.create_db(dbname)

    def settings(self):
        return {"storage": "postgres", "postgres_uri": self.uri}

    def _run(self, sql, params, as_dicts=False):
        import psycopg2
        con = psycopg2.connect(self.uri)
        try:
            with con.cursor() as cur:
                if params:
                    cur.execute(sql.replace("?", "%s"), tuple(params))
                else:  # no parameters: the text goes as it is ('?' and '%' included)
                    cur.execute(sql)
                rows = cur.fetchall() if cur.description else []
                if as_dicts and rows:
                    names = [d[0] for d in cur.description]
                    rows = [dict(zip(names, r)) for r in rows]
            con.commit()
            return [r if as_dicts else tuple(r) for r in rows]
        finally:
            con.close()

    def query(self, sql, params=()):
        return self._run(sql, params)

    def execute(self, sql, params=()):
        return self._run(sql, params)

    def _dicts(self, sql, params=()):
        return self._run(sql, params, as_dicts=True)

    def tables(self):
        return [name for (name,) in self.query(
            "SELECT table_name FROM information_schema.tables t WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' AND NOT EXISTS (SELECT 1 FROM pg_inherits i "
            "WHERE i.inhrelid = to_regclass(quote_ident(t.table_name))) ORDER BY 1")]

    def columns(self, table):
        return [name for (name,) in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = ? ORDER BY ordinal_position", (table,))]


STORAGE_KINDS = [k.strip() for k in os.environ.get("KOHAKU_TEST_STORAGE", "sqlite").split(",")
                 if k.strip()]


# --- the daemon ---------------------------------------------------------------------------------

def write_config(path, settings):
    """One `key = value` line per setting; a value of None leaves its key out."""
    with open(path, "w") as f:
        for key, value in settings.items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            f.write(f"{key} = {value}\n")


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset of (label, value)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z0-9_]+)(?:\{(.*)\})? (\S+)', line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


class Kohaku:
    """The daemon as a child process: its config, log (stdout) and stderr files in a directory
    of its own.

    settings: keys over the test defaults (127.0.0.1, free ports for the three listeners, debug,
    a short shutdown_timeout, retention_days 0). config_text: a hand-written config file used as it is instead
    (then set listen_port to self.port). env: variables over this process's environment.
    directory: where the files go; without one, a temporary directory that close() removes.
    Nothing runs until start()."""

    def __init__(self, settings=None, directory=None, config_text=None, env=None):
        self.own_dir = directory is None
        self.dir = tempfile.mkdtemp(prefix="kohaku-test-") if directory is None \
            else str(directory)
        os.makedirs(self.dir, exist_ok=True)
        # the metrics listener (exporter_*) defaults to 0.0.0.0:5891: keep it local and free
        self.settings = {"listen_addr": "127.0.0.1", "listen_port": free_port(),
                         "exporter_listen_addr": "127.0.0.1",
                         "exporter_listen_port": free_port(),
                         "console_listen_port": free_port(),
                         "debug": "true", "shutdown_timeout": 10,
                         # the fixtures carry the times they were recorded at: without this
                         # the default retention (60 days) would delete them as they age; the
                         # retention tests set it
                         "retention_days": 0}
        self.settings.update(settings or {})
        self.port = int(self.settings["listen_port"])
        self.config_text = config_text
        self.env = dict(env or {})
        self.config_path = os.path.join(self.dir, "kohaku.ini")
        self.log_path = os.path.join(self.dir, "kohaku.log")
        self.err_path = os.path.join(self.dir, "kohaku.stderr")
        self.proc = None
        self.returncode = None
        self._kept = None  # (log, stderr) once close() removed the directory

    @property
    def metrics_port(self):
        return int(self.settings["exporter_listen_port"])

    @property
    def console_port(self):
        return int(self.settings["console_listen_port"])

    @property
    def https(self):
        return str(self.settings.get("https", "false")).lower() == "true"

    @property
    def url(self):
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    def start(self, wait=True, timeout=20, health=204):
        """Writes the config and starts kohaku; with `wait`, returns once it is ready
        (wait_ready). Returns self."""
        assert os.path.exists(KOHAKU_BIN), (
            f"{KOHAKU_BIN} does not exist: run `make` in {REPO_ROOT} (or set KOHAKU_BIN)")
        if self.config_text is None:
            write_config(self.config_path, self.settings)
        else:
            with open(self.config_path, "w") as f:
                f.write(self.config_text)
        env = dict(os.environ, **self.env)
        with open(self.log_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([KOHAKU_BIN, "-C", self.config_path], stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL, env=env)
        if wait:
            self.wait_ready(timeout, health)
        return self

    @property
    def mtls(self):
        return self.https and bool(self.settings.get("tls_verify_cacert_path"))

    def _accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 2).close()
            return True
        except OSError:
            return False

    def wait_ready(self, timeout=20, health=204):
        """Polls (never a fixed sleep): 'listening' logged, then GET /.ok answers `health`
        (None: any status, for a daemon whose storage is away on purpose). Where kohaku asks
        for client certificates (mTLS) the probe has none to show: the port accepting a
        connection is enough then."""
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            assert rc is None, f"kohaku exited with {rc} during start-up\n{self.describe()}"
            if any(l.get("msg") == "listening" for l in self.log_lines()):
                if self.mtls:
                    if self._accepts():
                        return self
                else:
                    status = self.health()
                    if status is not None and (health is None or status == health):
                        return self
            assert time.monotonic() < deadline, \
                f"kohaku not ready (/.ok {health}) within {timeout}s\n{self.describe()}"
            time.sleep(0.02)

    def _http(self, port, path, tls):
        import http.client
        import ssl
        if tls:  # the certificate is checked by the tests that are about it
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                               context=ssl._create_unverified_context())
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def health(self):
        """The status of GET /.ok, or None when nothing answers."""
        try:
            c = self._http(self.port, "/.ok", self.https)
            c.request("GET", "/.ok")
            status = c.getresponse().status
            c.close()
            return status
        except OSError:
            return None

    def wait_health(self, status, timeout=30):
        wait_until(lambda: self.health() == status, timeout,
                   message=f"/.ok to answer {status}\n{self.describe(3000)}")

    def metrics_text(self):
        """Scrapes /metrics on the metrics listener; returns its text."""
        tls = str(self.settings.get("exporter_https", "false")).lower() == "true"
        c = self._http(self.metrics_port, "/metrics", tls)
        c.request("GET", "/metrics")
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        assert r.status == 200, (r.status, text)
        return text

    def metrics(self):
        """Scrapes /metrics on the metrics listener; returns {(name, labels): value}."""
        return parse_metrics(self.metrics_text())

    def metric(self, name, **labels):
        """One value of /metrics (0 when the series is not there)."""
        return self.metrics().get((name, frozenset(labels.items())), 0)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"kohaku did not exit within {timeout}s (killed)\n"
                                 f"{self.describe()}")
        return self.returncode

    def stop(self, sig=None, timeout=20):
        """Sends `sig` (default SIGTERM), then the exit code (kills and fails after
        `timeout`)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if sig is None else sig)
        return self.wait_exit(timeout)

    def close(self):
        """stop(); then the directory goes if it is the daemon's own (the log and stderr stay
        readable through log_text() and stderr_text())."""
        rc = self.stop()
        if self.own_dir and self._kept is None:
            self._kept = (self.log_text(), self.stderr_text())
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc

    def _read(self, path, kept):
        if self._kept is not None:
            return self._kept[kept]
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_text(self):
        return self._read(self.log_path, 0)

    def stderr_text(self):
        return self._read(self.err_path, 1)

    def log_lines(self):
        """Parsed log lines; a line that is not a JSON object becomes {"_raw": text}."""
        out = []
        for line in self.log_text().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            out.append(obj if isinstance(obj, dict) else {"_raw": line})
        return out

    def wait_log(self, text, timeout=5):
        """Polls until `text` is in the log (info lines are buffered for up to 100 ms)."""
        wait_until(lambda: text in self.log_text(), timeout,
                   message=f"{text!r} in the log\n{self.describe(3000)}")

    def access_lines(self):
        return [l for l in self.log_lines() if l.get("msg") == "access"]

    def wait_access(self, until, timeout=5):
        """Access lines may be buffered briefly: polls until `until(lines)` is true (or, for
        an int, until that many access lines exist); returns the access lines."""
        def check():
            lines = self.access_lines()
            done = len(lines) >= until if isinstance(until, int) else until(lines)
            return lines if done else None
        return wait_until(check, timeout, message=f"access log lines ({until})\n"
                                                  f"{self.describe()}")

    def describe(self, tail=6000):
        config = ""
        if os.path.exists(self.config_path):
            with open(self.config_path) as f:
                config = f.read()
        return (f"--- config {self.config_path}\n{config}"
                f"--- log (last {tail} chars)\n{self.log_text()[-tail:]}"
                f"--- stderr\n{self.stderr_text()[-2000:]}")


# --- certificates (made at test time with the openssl CLI) ---------------------------------------

def openssl(*args, cwd):
    need_tool("openssl")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.crt", "-subj", f"/CN={name}", "-days", "2", cwd=d)


def make_cert(d, name, ca, cn, server=False):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", cn, cwd=d)
    ext = []
    if server:
        with open(os.path.join(d, "san.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        ext = ["-extfile", "san.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext, cwd=d)


def make_pki(d):
    """In directory d: a CA (ca.crt), another CA (otherca), a server certificate for
    127.0.0.1/localhost (server.key, fullchain.pem), a client certificate of the CA (client)
    and one of the other CA (stranger). Returns d."""
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_cert(d, "server", "ca", "/CN=127.0.0.1", server=True)
    make_cert(d, "client", "ca", "/CN=sora-node-1/O=Sora")
    make_cert(d, "stranger", "otherca", "/CN=stranger")
    with open(os.path.join(d, "fullchain.pem"), "w") as out:
        for part in ("server.crt", "ca.crt"):
            out.write(open(os.path.join(d, part)).read())
    return d


def tls_server_settings(pki):
    """The keys that make kohaku serve TLS with make_pki's server certificate."""
    return {"https": "true", "tls_fullchain_file": os.path.join(pki, "fullchain.pem"),
            "tls_privkey_file": os.path.join(pki, "server.key")}


def tls_client_context(pki, alpn=("h2",)):
    import ssl
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


# --- clients ------------------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    @property
    def message(self):
        """The `message` of a JSON error body."""
        obj = self.json()
        assert isinstance(obj, dict) and isinstance(obj.get("message"), str), self.text
        return obj["message"]

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


class CurlError(AssertionError):
    """curl exited with an error (`returncode`): a failed check unless a test expects it, as
    the 92 (HTTP/2 stream error) curl reports when a stream it still sends on is reset after
    its answer, e.g. a 413 sent at the headers."""

    def __init__(self, returncode, stderr):
        super().__init__(f"curl failed ({returncode}): {stderr}")
        self.returncode = returncode
        self.stderr = stderr


def curl(url, *args, data=None, timeout=60):
    """Runs curl; returns Response (status, last response's headers, body). Raises CurlError
    when curl fails."""
    need_tool("curl")
    cmd = ["curl", "-sS", "-D", "-", "-o", "-", *args]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    cmd.append(url)
    out = subprocess.run(cmd, input=body_bytes(data) if data is not None else None,
                         capture_output=True, timeout=timeout)
    if out.returncode != 0:
        raise CurlError(out.returncode, out.stderr.decode(errors="replace"))
    raw = out.stdout
    # with -D - the headers come first; skip 1xx interim responses
    while True:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"no HTTP response from curl: {raw[:500]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if 100 <= status < 200:
            raw = rest
            continue
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return Response(status, headers, rest)


def post_h2(port, body, exporter_type=USER_AGENT, path="/collector",
            content_type="application/json", headers=()):
    """POST over h2c with prior knowledge, as Sora does; returns Response. headers: more
    header lines ("name: value")."""
    args = ["--http2-prior-knowledge", "-X", "POST"]
    if exporter_type is not None:
        args += ["-H", f"{EXPORTER_HEADER}: {exporter_type}"]
    if content_type is not None:
        args += ["-H", f"content-type: {content_type}"]
    for h in headers:
        args += ["-H", h]
    return curl(f"http://127.0.0.1:{port}{path}", *args, data=body_bytes(body))


GOAWAY_FRAME = 0x7


def split_goaway(buf):
    """Splits received bytes into whole frames for python3-h2 and the GOAWAY frames, which
    are taken out: h2 closes its state machine on a GOAWAY and then refuses the responses to
    the streams the server still finishes (RFC 9113 6.8 graceful shutdown).
    Returns (bytes for h2, the incomplete rest, [(last_stream_id, error_code)])."""
    out = bytearray()
    goaways = []
    pos = 0
    while len(buf) - pos >= 9:
        length = int.from_bytes(buf[pos:pos + 3], "big")
        if len(buf) - pos < 9 + length:
            break
        ftype = buf[pos + 3]
        frame = buf[pos:pos + 9 + length]
        if ftype == GOAWAY_FRAME:
            payload = frame[9:]
            goaways.append((int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF,
                            int.from_bytes(payload[4:8], "big")))
        else:
            out += frame
        pos += 9 + length
    return bytes(out), buf[pos:], goaways


class H2Request:
    """One request for H2Client.post_all, when its requests differ from one another.

    content_length: announced length (None: the body's, False: no content-length header).
    on_early_answer: what the client does when the answer is complete before its body is
    all sent: "reset" (RST_STREAM CANCEL), "end" (an empty DATA with END_STREAM, as curl
    does) or "continue" (keeps sending the body until it is sent or the stream is reset).
    reset_after: sends this many bytes of the body, then resets the stream itself."""

    def __init__(self, body, path="/collector", headers=(), content_length=None,
                 on_early_answer="reset", reset_after=None, method="POST"):
        self.body = body_bytes(body)
        self.path = path
        self.headers = list(headers)
        self.content_length = content_length
        self.on_early_answer = on_early_answer
        self.reset_after = reset_after
        self.method = method


class H2Client:
    """An HTTP/2 client on python3-h2 over a raw socket (h2c with prior knowledge, or TLS
    with ALPN h2 when `tls` is an ssl.SSLContext) that keeps up to `concurrency` streams open
    at once and honours flow control.

    post_all() sends every body and returns one result per body, in order: {"status": int or
    None, "body": bytes, "headers": dict, "stream_id": int or None, "outcome": str,
    "body_sent": bool, "goaway": {"last_stream_id", "error_code"} or None}. outcome is
    "response" (a complete response), "reset" (RST_STREAM before the response ended),
    "refused" (above the last stream id of the server's GOAWAY: not processed), "closed" (the
    connection ended without an answer), "client_reset" (the client reset it: H2Request's
    reset_after) or "unsent" (never sent: stop or GOAWAY came first). A body may be an
    H2Request. After the call, `goaways` lists the GOAWAY frames received and `closed` says
    whether the server closed the connection."""

    def __init__(self, port, timeout=60, tls=None):
        self.port = port
        self.timeout = timeout
        self.tls = tls
        self.goaways = []
        self.closed = False

    def _connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        sock.settimeout(0.2)
        return sock

    def _ping(self, sock, conn, rxbuf):
        """A PING on the connection after the requests: True when its ACK comes back (the
        connection is alive and well) before anything closes it."""
        conn.ping(b"kohaku!!")
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                self.closed = True
                return False
            rxbuf += data
            frames, rxbuf, goaways = split_goaway(rxbuf)
            self.goaways += goaways
            for ev in conn.receive_data(frames) if frames else []:
                if isinstance(ev, h2.events.PingAckReceived):
                    return True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        return False

    def post_all(self, bodies, headers, concurrency=16, on_result=None, stop=None,
                 path="/collector", ping_at_end=False):
        """ping_at_end: once everything is answered, checks that the connection still works
        (self.alive_at_end)."""
        self.alive_at_end = None
        sock = self._connect()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.increment_flow_control_window(1 << 24)
        sock.sendall(conn.data_to_send())
        reqs = [b if isinstance(b, H2Request) else H2Request(b, path=path, headers=headers)
                for b in bodies]
        results = [None] * len(bodies)
        pending = list(range(len(bodies)))
        pending.reverse()
        active = {}
        closed = False
        goaway = False
        goaway_info = {}
        rxbuf = b""
        deadline = time.monotonic() + self.timeout

        def request_headers(req, data):
            hdrs = [(":method", req.method), (":scheme", "https" if self.tls else "http"),
                    (":path", req.path), (":authority", f"127.0.0.1:{self.port}"),
                    *req.headers]
            length = len(data) if req.content_length is None else req.content_length
            if length is not False:
                hdrs.append(("content-length", str(length)))
            return hdrs

        def send_body(sid, st):
            req = st["req"]
            while not st["sent"]:
                try:
                    window = conn.local_flow_control_window(sid)
                except h2.exceptions.StreamClosedError:
                    st["sent"] = True
                    break
                left = len(st["data"]) - st["off"]
                if req.reset_after is not None:
                    left = min(left, req.reset_after - st["off"])
                n = min(window, conn.max_outbound_frame_size, left)
                if req.reset_after is not None and left <= 0:
                    conn.reset_stream(sid, error_code=8)  # CANCEL
                    st["sent"] = True
                    finish(sid, "client_reset")
                    break
                if n <= 0:
                    break
                end = st["off"] + n == len(st["data"])
                try:
                    conn.send_data(sid, st["data"][st["off"]:st["off"] + n], end_stream=end)
                except h2.exceptions.StreamClosedError:
                    st["sent"] = True  # the server reset it meanwhile
                    break
                st["off"] += n
                st["sent"] = end

        def early_answer(sid, st):
            """The answer is complete and the body is not all sent."""
            how = st["req"].on_early_answer
            try:
                if how == "reset":
                    conn.reset_stream(sid)
                    st["sent"] = True
                elif how == "end":
                    conn.end_stream(sid)
                    st["sent"] = True
            except h2.exceptions.H2Error:
                st["sent"] = True

        def finish(sid, outcome):
            st = active.pop(sid)
            res = {"status": st["status"], "body": bytes(st["resp"]), "outcome": outcome,
                   "reset": outcome != "response", "headers": st.get("headers", {}),
                   "stream_id": sid, "body_sent": st["sent"],
                   "goaway": goaway_info.copy() if goaway_info else None}
            results[st["idx"]] = res
            if on_result:
                on_result(st["idx"], res)

        try:
            while (pending or active) and not closed:
                assert time.monotonic() < deadline, "H2Client: deadline passed"
                limit = min(concurrency, conn.remote_settings.max_concurrent_streams)
                while pending and len(active) < limit and not goaway and \
                        not (stop is not None and stop.is_set()):
                    idx = pending.pop()
                    sid = conn.get_next_available_stream_id()
                    req = reqs[idx]
                    data = req.body
                    conn.send_headers(sid, request_headers(req, data), end_stream=not data)
                    active[sid] = {"idx": idx, "req": req, "data": data, "off": 0,
                                   "sent": not data, "status": None, "resp": bytearray(),
                                   "answered": False}
                if (stop is not None and stop.is_set()) or goaway:
                    pending.clear()
                for sid, st in list(active.items()):
                    send_body(sid, st)
                    if st["answered"] and (st["sent"] or sid not in active):
                        if sid in active:
                            finish(sid, "response")
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
                if not pending and not active:
                    break
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                if not data:
                    closed = True
                    self.closed = True
                    break
                rxbuf += data
                frames, rxbuf, goaways = split_goaway(rxbuf)
                events = conn.receive_data(frames) if frames else []
                for last_stream_id, error_code in goaways:
                    events.append(("GOAWAY", last_stream_id, error_code))
                for ev in events:
                    if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id in active:
                        hdrs = dict(ev.headers)
                        active[ev.stream_id]["status"] = int(hdrs[":status"])
                        active[ev.stream_id]["headers"] = hdrs
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        if ev.stream_id in active:
                            active[ev.stream_id]["resp"] += ev.data
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in active:
                        st = active[ev.stream_id]
                        st["answered"] = True
                        if not st["sent"]:
                            early_answer(ev.stream_id, st)
                        if st["sent"]:
                            finish(ev.stream_id, "response")
                        # "continue": finished once the rest is sent or the server resets it
                    elif isinstance(ev, h2.events.StreamReset) and ev.stream_id in active:
                        st = active[ev.stream_id]
                        st["sent"] = True
                        finish(ev.stream_id, "response" if st["answered"] else "reset")
                    elif isinstance(ev, tuple) and ev[0] == "GOAWAY":
                        goaway = True
                        self.goaways.append((ev[1], ev[2]))
                        goaway_info.update(last_stream_id=ev[1], error_code=ev[2])
                        goaway_info.setdefault("all", []).append((ev[1], ev[2]))
                        for sid in [s for s in active if s > ev[1]]:
                            finish(sid, "refused")
                out = conn.data_to_send()
                if out:
                    try:
                        sock.sendall(out)
                    except OSError:
                        closed = True
            if ping_at_end and not closed:
                self.alive_at_end = self._ping(sock, conn, rxbuf)
        except (BrokenPipeError, ConnectionResetError, h2.exceptions.ProtocolError):
            pass
        finally:
            for sid in list(active):
                finish(sid, "closed")
            for i, r in enumerate(results):
                if r is None:
                    results[i] = {"status": None, "body": b"", "outcome": "unsent",
                                  "reset": False, "headers": {}, "stream_id": None,
                                  "body_sent": False, "goaway": goaway_info or None}
            try:
                sock.close()
            except OSError:
                pass
        return results


EXPORTER_HEADERS_UA = [(EXPORTER_HEADER, USER_AGENT), ("content-type", "application/json")]


def post_h2_frames(port, body, exporter_type=USER_AGENT, path="/collector"):
    """One h2c POST through python3-h2 instead of curl.

    For requests kohaku may answer before it has read the body (bad exporter type, a
    content-length over the limit): RFC 9113 8.1 lets a server send the whole response and
    then RST_STREAM(NO_ERROR). curl 7.88 reports that as error 92 and drops the response when
    the reset overtakes its upload, so those cases are checked at the frame level."""
    headers = [("content-type", "application/json")]
    if exporter_type is not None:
        headers.append((EXPORTER_HEADER, exporter_type))
    res = H2Client(port, timeout=30).post_all([body_bytes(body)], headers, path=path)[0]
    assert res["status"] is not None, f"no response to POST {path}: {res}"
    return Response(res["status"], res["headers"], res["body"])


def loadgen(port, *args, timeout=120):
    """Runs kohaku-loadgen against 127.0.0.1:port (the webhook path with -W); returns (exit
    code, its --json summary, its output)."""
    assert os.path.exists(KOHAKU_LOADGEN), f"{KOHAKU_LOADGEN} is not built"
    path = "/webhook/stats" if "-W" in args else "/collector"
    cmd = [KOHAKU_LOADGEN, "-u", f"http://127.0.0.1:{port}{path}", "-F", FIXTURES_DIR,
           "--json", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    summary = None
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    return out.returncode, summary, out.stdout + out.stderr

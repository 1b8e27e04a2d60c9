"""Shared helpers for the end-to-end tests: run the real kohaku daemon with a generated
config on 127.0.0.1, talk to it with real clients (curl, h2load, kohaku-loadgen), and read
what it stored, in SQLite or PostgreSQL."""
import glob
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

from pgcluster import free_port  # one source of ports for every harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("KOHAKU_BIN", os.path.join(ROOT, "build", "kohaku"))
BUILD = os.path.dirname(BIN)
LOADGEN = os.path.join(BUILD, "kohaku-loadgen")
FIXTURES = os.environ.get("KOHAKU_FIXTURES",
                          os.path.join(ROOT, "tests", "fixtures", "browser"))
B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def need_tool(name):
    """A test that needs a tool fails (never skips) when the tool is missing."""
    path = shutil.which(name)
    assert path, f"required tool '{name}' is not installed"
    return path




def sora_id():
    return "".join(random.choice(B32) for _ in range(26))


def fixture_files():
    files = sorted(glob.glob(os.path.join(FIXTURES, "*-t*.json")))
    assert files, f"no browser fixtures in {FIXTURES}"
    return files


def load_stats(path):
    with open(path) as f:
        return json.load(f)


def now_rfc3339(offset_s=0.0):
    t = time.time() + offset_s
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def envelope(stats, **over):
    env = {
        "type": "connection.user-agent", "id": sora_id(), "timestamp": now_rfc3339(),
        "label": "WebRTC SFU Sora", "version": "2024.1.0", "node_name": "sora@127.0.0.1",
        "multistream": True, "simulcast": False, "spotlight": False, "role": "sendrecv",
        "channel_id": "room-" + sora_id()[:6], "session_id": sora_id(), "client_id": "alice",
        "connection_id": sora_id(), "stats": stats,
    }
    env.update(over)
    return env


def post_h2(port, body, exporter_type="connection.user-agent", path="/collector",
            extra_headers=()):
    """POST with curl over h2c; returns (status, body text, headers dict)."""
    need_tool("curl")
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    cmd = ["curl", "-s", "-S", "--http2-prior-knowledge", "-D", "-", "-o", "-",
           "-H", "content-type: application/json", "--data-binary", "@-",
           f"http://127.0.0.1:{port}{path}"]
    if exporter_type is not None:
        cmd[1:1] = ["-H", f"x-sora-stats-exporter-type: {exporter_type}"]
    for h in extra_headers:
        cmd[1:1] = ["-H", h]
    out = subprocess.run(cmd, input=body, capture_output=True, timeout=60, check=True).stdout
    head, _, rest = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (l.partition(":") for l in lines[1:])}
    return status, rest.decode(), headers


class Kohaku:
    """The daemon as a child process with its own config and log file."""

    def __init__(self, settings, env=None):
        self.dir = tempfile.mkdtemp(prefix="kohaku-test-")
        self.port = settings.get("listen_port") or free_port()
        self.metrics_port = settings.get("exporter_listen_port") or free_port()
        cfg = {"listen_addr": "127.0.0.1", "listen_port": self.port, "debug": "true",
               "exporter_listen_addr": "127.0.0.1", "exporter_listen_port": self.metrics_port}
        cfg.update(settings)
        self.config = os.path.join(self.dir, "config.ini")
        with open(self.config, "w") as f:
            for k, v in cfg.items():
                f.write(f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n")
        self.log_path = os.path.join(self.dir, "kohaku.log")
        self.log = open(self.log_path, "w")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([BIN, "-C", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=e)

    def wait_ready(self, timeout=20):
        """Polls until the port accepts and the "listening" line is logged."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"kohaku exited early:\n{self.log_text()}"
            if '"msg":"listening"' in self.log_text():
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.02)
        raise AssertionError(f"kohaku not ready in {timeout}s:\n{self.log_text()}")

    def metrics(self):
        """Scrapes /metrics; returns {(name, frozenset(labels)): value}."""
        import re
        import urllib.request
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                      timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r'([a-z0-9_]+)(?:\{(.*)\})? (\S+)', line)
            assert m, line
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def health(self):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://127.0.0.1:{self.port}/.ok"],
                             capture_output=True, text=True, timeout=10)
        return int(out.stdout or 0)

    def wait_health(self, status, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.health() == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"/.ok never answered {status}:\n{self.log_text()[-3000:]}")

    def wait_log(self, text, timeout=5):
        """Info lines are buffered for up to 100 ms: poll for one."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log_text():
                return
            time.sleep(0.02)
        raise AssertionError(f"{text!r} never logged:\n{self.log_text()[-3000:]}")

    def log_text(self):
        if not os.path.exists(self.log_path):
            return getattr(self, "final_log", "")
        with open(self.log_path) as f:
            return f.read()

    def log_lines(self):
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc

    def close(self):
        rc = self.stop()
        self.final_log = self.log_text()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def loadgen(port, *args, timeout=120):
    """Runs kohaku-loadgen against port; returns (exit code, summary dict, output)."""
    assert os.path.exists(LOADGEN), f"{LOADGEN} is not built"
    path = "/webhook/stats" if "-W" in args else "/collector"
    cmd = [LOADGEN, "-u", f"http://127.0.0.1:{port}{path}", "-F", FIXTURES, "--json",
           *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    summary = None
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    return out.returncode, summary, out.stdout + out.stderr


class SqliteStore:
    kind = "sqlite"

    def __init__(self, tmpdir):
        self.path = os.path.join(tmpdir, "kohaku.db")

    def settings(self):
        return {"storage": "sqlite", "sqlite_path": self.path}

    def query(self, sql, args=()):
        con = sqlite3.connect(self.path, timeout=10)
        try:
            rows = con.execute(sql, args).fetchall()
            con.commit()
            return rows
        finally:
            con.close()

    def count(self, table, where="1=1", args=()):
        return self.query(f'SELECT count(*) FROM "{table}" WHERE {where}', args)[0][0]


class PgStore:
    kind = "postgres"

    def __init__(self, cluster, dbname):
        self.cluster = cluster
        self.uri = cluster.create_db(dbname)

    def settings(self):
        return {"storage": "postgres", "postgres_uri": self.uri}

    def query(self, sql, args=()):
        import psycopg2
        con = psycopg2.connect(self.uri)
        try:
            with con.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), args)
                rows = cur.fetchall() if cur.description else []
            con.commit()
            return rows
        finally:
            con.close()

    def count(self, table, where="1=1", args=()):
        return self.query(f'SELECT count(*) FROM "{table}" WHERE {where}', args)[0][0]


STATS_TABLES = ["rtc_codec_stats", "rtc_inbound_rtp_stream_stats",
                "rtc_outbound_rtp_stream_stats", "rtc_remote_inbound_rtp_stream_stats",
                "rtc_remote_outbound_rtp_stream_stats", "rtc_audio_source_stats",
                "rtc_video_source_stats", "rtc_audio_playout_stats", "rtc_peer_connection_stats",
                "rtc_data_channel_stats", "rtc_transport_stats", "rtc_ice_candidate_pair_stats",
                "rtc_ice_candidate_stats", "rtc_certificate_stats", "rtc_other_stats"]

TYPE_TABLE = {
    "codec": "rtc_codec_stats", "inbound-rtp": "rtc_inbound_rtp_stream_stats",
    "outbound-rtp": "rtc_outbound_rtp_stream_stats",
    "remote-inbound-rtp": "rtc_remote_inbound_rtp_stream_stats",
    "remote-outbound-rtp": "rtc_remote_outbound_rtp_stream_stats",
    "media-playout": "rtc_audio_playout_stats", "peer-connection": "rtc_peer_connection_stats",
    "data-channel": "rtc_data_channel_stats", "transport": "rtc_transport_stats",
    "candidate-pair": "rtc_ice_candidate_pair_stats",
    "local-candidate": "rtc_ice_candidate_stats", "remote-candidate": "rtc_ice_candidate_stats",
    "certificate": "rtc_certificate_stats",
}


def table_of(obj):
    if obj["type"] == "media-source":
        return {"audio": "rtc_audio_source_stats",
                "video": "rtc_video_source_stats"}.get(obj.get("kind"), "rtc_other_stats")
    return TYPE_TABLE.get(obj["type"], "rtc_other_stats")


def all_counts(store):
    return {t: store.count(t) for t in STATS_TABLES + ["sora_connection", "sora_report"]}

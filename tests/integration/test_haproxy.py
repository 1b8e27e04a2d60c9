"""Several kohaku behind HAProxy (issue: several kohaku behind HAProxy, the stats distributed on
Citus): packaging/haproxy.cfg as it is (Debian's haproxy 2.6, h2c on both sides, health checks
on /.ok), its addresses rewritten to free ports of 127.0.0.1, in front of two kohaku instances
that store into one database, on plain PostgreSQL and on Citus:

- the migrations run once (under the advisory lock) although both start together;
- kohaku-loadgen through HAProxy: both instances take reports, every acknowledged report is
  stored exactly once;
- one instance stopped (SIGTERM) under load drains (README "Stopping") and exits 0, HAProxy
  takes it out of the rotation and sends the rest to the other: not one request fails (none
  reset, none answered other than 204), nothing acknowledged is lost.

Load is bounded in count and time."""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile

import pytest

from helpers import FIXTURES_DIR, KOHAKU_LOADGEN, REPO_ROOT, need_tool, wait_until
from pgcluster import free_port
from test_spool import acked_ids, assert_stored_once

CONFIG = os.path.join(REPO_ROOT, "packaging", "haproxy.cfg")


class HAProxy:
    """haproxy -db (foreground) with packaging/haproxy.cfg, the frontend on `port` and one
    server line per backend port, plus an admin socket for `servers()`."""

    def __init__(self, backend_ports):
        need_tool("haproxy")
        self.dir = tempfile.mkdtemp(prefix="kohaku-haproxy-")
        self.port = free_port()
        self.sock = os.path.join(self.dir, "admin.sock")
        text = open(CONFIG).read()
        text = re.sub(r"(?m)^(\s*bind )127\.0\.0\.1:5890", rf"\g<1>127.0.0.1:{self.port}", text)
        servers = "".join(f"    server kohaku{i + 1} 127.0.0.1:{p}\n"
                          for i, p in enumerate(backend_ports))
        text = re.sub(r"(?m)^\s*server kohaku\d+ .*\n", "", text).rstrip("\n") + "\n" + servers
        text = text.replace("global\n", f"global\n    stats socket {self.sock} level admin\n", 1)
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(text)
        self.log = open(os.path.join(self.dir, "haproxy.log"), "w+")
        check = subprocess.run(["haproxy", "-c", "-f", self.cfg], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def admin(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(command.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def servers(self):
        """{server name: status} of the kohaku backend ("UP", "DOWN", ...)."""
        if not os.path.exists(self.sock):
            return {}
        lines = self.admin("show stat").splitlines()
        head = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("pxname") == "kohaku" and row.get("svname", "").startswith("kohaku"):
                out[row["svname"]] = row["status"]
        return out

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def haproxy():
    made = []

    def start(ports):
        h = HAProxy(ports)
        made.append(h)
        return h

    yield start
    for h in made:
        h.close()


def start_loadgen(port, acked, seconds, rate, seed):
    cmd = [KOHAKU_LOADGEN, "-u", f"http://127.0.0.1:{port}/collector", "-F", FIXTURES_DIR,
           "-d", str(seconds), "-r", str(rate), "-n", "120", "-c", "4", "-m", "16", "-a", acked,
           "-s", str(seed), "--allow", "204,502,503", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def migrations(k):
    return [l for l in k.log_lines() if l.get("msg") == "schema migrated"]


def stored(k):
    return sum(v for (name, _), v in k.metrics().items()
               if name == "kohaku_reports_stored_total")


@pytest.mark.once("the postgres variant runs in both passes", db="citus")
@pytest.mark.storage("postgres", "citus")
def test_two_kohaku_behind_haproxy_one_stopped_under_load(db, kohaku_factory, haproxy,
                                                          tmp_path):
    store = db
    # both started at once, on an empty database
    both = [kohaku_factory(batch_max_delay_ms=20, shutdown_timeout=20, wait=False)
            for _ in range(2)]
    for k in both:
        k.wait_ready(timeout=60)
        k.wait_log('"msg":"postgres schema ready"', timeout=60)
    a, b = both
    # the migrations ran once in all, by whichever got the advisory lock first
    versions = [l["version"] for k in both for l in migrations(k)]
    assert sorted(versions) == list(range(1, max(versions) + 1)), versions

    h = haproxy([a.port, b.port])
    wait_until(lambda: h.servers() == {"kohaku1": "UP", "kohaku2": "UP"}, 20,
               message="both kohaku UP in HAProxy")

    acked = str(tmp_path / "acked.txt")
    # a rate both stores keep up with on 2 shared cores (Citus here is three PostgreSQL
    # instances on them: some 40 reports/s with two kohaku and HAProxy beside them)
    lg = start_loadgen(h.port, acked, 20, 100, 11)
    wait_until(lambda: len(acked_ids(acked)) > 100, 30, message="acks through HAProxy")
    assert stored(a) > 0 and stored(b) > 0, "HAProxy sent reports to one kohaku only"
    a.signal(signal.SIGTERM)
    assert a.wait_exit(30) == 0, a.describe()
    at_stop = len(acked_ids(acked))
    assert lg.poll() is None, "the load ended before the stop was over"

    wait_until(lambda: h.servers().get("kohaku1") not in ("UP", None), 10,
               message="the stopped kohaku out of the rotation")
    out, _ = lg.communicate(timeout=60)
    summary = [l for l in out.splitlines() if l.startswith("{")]
    assert summary and lg.returncode in (0, 1), out
    s = json.loads(summary[-1])
    ids = acked_ids(acked)
    assert_stored_once(store, ids)
    # the drain (two-step GOAWAY, /.ok 503, the listener open until it is done, lingering
    # closes) and HAProxy's retries on connection failures: not one request fails, none is
    # reset, every one is answered 204
    assert s["failed_streams"] == 0, (s, h.log_text()[-3000:])
    assert s["status"] == {"204": s["sent"]} and s["answered"] == s["sent"], \
        (s, h.log_text()[-3000:])
    assert s["status"]["204"] == len(ids)
    # the load went on after the stop (Citus on these 2 shared cores takes some 10-40
    # reports/s in all, fewer while other builds run)
    assert len(ids) > at_stop + 50, "no load after the stop"
    drain = [l for l in a.log_lines() if l.get("msg", "").startswith("drain")]
    assert drain and drain[-1]["msg"] == "drain done: connections closed", a.log_text()[-3000:]
    print("drain:", json.dumps(drain[-1]), "sent:", s["sent"], "after the stop:",
          len(ids) - at_stop)

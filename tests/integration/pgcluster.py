"""A throwaway PostgreSQL 15 cluster for the end-to-end tests.

CI runs as root and initdb refuses root, so the cluster is created and run as the
`postgres` user (through `runuser`), in a temporary directory, on a free port of 127.0.0.1,
with fsync off. Tests may stop and start it to simulate an outage.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("KOHAKU_PG_BIN", "/usr/lib/postgresql/15/bin")


_issued = set()


def free_port():
    """A port of 127.0.0.1 that is free now and that this process has not handed out
    before: the kernel may give the same ephemeral port to two binds in a row once the first
    socket is closed, and a daemon's two listeners must not both get it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _issued:
            _issued.add(port)
            return port


def _as_postgres(args, **kw):
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


class PgCluster:
    def __init__(self, crash_safe=False):
        """crash_safe: keep synchronous_commit on, so a commit PostgreSQL has answered
        survives its own crash (stop("immediate")); off by default for speed. fsync stays off
        either way: the machine itself does not crash in these tests."""
        self.crash_safe = crash_safe
        if not os.path.exists(os.path.join(PG_BIN, "initdb")):
            raise RuntimeError(f"PostgreSQL server binaries not found in {PG_BIN} "
                               "(Debian package postgresql-15)")
        self.dir = tempfile.mkdtemp(prefix="kohaku-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        _as_postgres([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-A", "trust",
                      "-U", "postgres", "-E", "UTF8", "--locale=C"])
        self.start()

    def start(self):
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=200")
        if not self.crash_safe:
            opts += " -c synchronous_commit=off"
        _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-o", opts,
                      "-l", os.path.join(self.dir, "log"), "-w", "-t", "30", "start"])

    def stop(self, mode="fast"):
        _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                      "-t", "30", "stop"])

    def uri(self, db):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, db, sql):
        out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              self.uri(db), "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def create_db(self, name):
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def close(self):
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


_counter = [0]


def unique_db_name(prefix="kohaku"):
    _counter[0] += 1
    return f"{prefix}_{os.getpid()}_{_counter[0]}_{int(time.time() * 1000) % 100000}"

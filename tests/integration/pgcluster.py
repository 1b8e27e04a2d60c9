"""A throwaway PostgreSQL 15 cluster for the end-to-end tests.

CI runs as root and initdb refuses root, so the cluster is created and run as the
`postgres` user (through `runuser`), in a temporary directory, on a free port of 127.0.0.1,
with fsync off. Tests may stop and start it to simulate an outage. `preload` names
shared_preload_libraries (`PgCluster(preload=["timescaledb"])`) and `settings` adds server
settings (`{"timescaledb.license": "apache"}`); both are attributes a test may change before
a restart. The server's log is `log_text()`.
"""
import os
import shlex
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
    def __init__(self, crash_safe=False, preload=(), settings=None):
        """crash_safe: keep synchronous_commit on, so a commit PostgreSQL has answered
        survives its own crash (stop("immediate")); off by default for speed. fsync stays off
        either way: the machine itself does not crash in these tests."""
        self.crash_safe = crash_safe
        self.preload = list(preload)
        self.settings = dict(settings or {})
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
        settings = dict(self.settings)
        if self.preload:
            settings["shared_preload_libraries"] = ",".join(self.preload)
        for key, value in settings.items():
            opts += f" -c {key}={shlex.quote(str(value))}"
        _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-o", opts,
                      "-l", os.path.join(self.dir, "log"), "-w", "-t", "30", "start"])

    def stop(self, mode="fast"):
        _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                      "-t", "30", "stop"])

    def log_text(self):
        with open(os.path.join(self.dir, "log"), errors="replace") as f:
            return f.read()

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


class PgStandby(PgCluster):
    """A hot standby of a running PgCluster: its base backup (pg_basebackup -R, streaming the
    WAL), started on a port of its own; it replays what the primary commits and answers
    read-only queries. Stop and start it as a PgCluster."""

    def __init__(self, primary):
        self.crash_safe, self.preload, self.settings = True, [], {}
        self.dir = tempfile.mkdtemp(prefix="kohaku-pg-standby-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        _as_postgres([os.path.join(PG_BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p",
                      str(primary.port), "-U", "postgres", "-D", self.data, "-R", "-X",
                      "stream", "-c", "fast"])
        self.start()

    def replayed(self, primary):
        """Whether the standby has replayed everything the primary has written so far."""
        lsn = primary.psql("postgres", "SELECT pg_current_wal_lsn()")
        return self.psql("postgres", f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t"


_counter = [0]


def unique_db_name(prefix="kohaku"):
    _counter[0] += 1
    return f"{prefix}_{os.getpid()}_{_counter[0]}_{int(time.time() * 1000) % 100000}"


# --- TimescaleDB ---------------------------------------------------------------------------------
# Debian does not package TimescaleDB: scripts/install-deps --test builds it from the tarball in
# ../shared/third_party (beside the repository) when that directory exists, and scripts/test then
# sets KOHAKU_REQUIRE_TIMESCALEDB=1, so that a TimescaleDB that did not get installed fails the
# tests instead of skipping them.

THIRD_PARTY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "shared", "third_party")


def _pg_sharedir():
    pg_config = os.path.join(PG_BIN, "pg_config")
    if os.path.exists(pg_config):
        out = subprocess.run([pg_config, "--sharedir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return os.path.join("/usr/share/postgresql", os.path.basename(os.path.dirname(PG_BIN)))


def timescaledb_installed():
    """TimescaleDB is installed into this PostgreSQL: available to every cluster, loaded only
    by those whose shared_preload_libraries names it."""
    return os.path.exists(os.path.join(_pg_sharedir(), "extension", "timescaledb.control"))


def require_timescaledb():
    """Returns when TimescaleDB is installed. Otherwise the calling test (or fixture) fails
    when KOHAKU_REQUIRE_TIMESCALEDB=1 and is skipped, saying why, when not."""
    import pytest
    if timescaledb_installed():
        return
    if os.environ.get("KOHAKU_REQUIRE_TIMESCALEDB") == "1":
        pytest.fail("TimescaleDB is required (KOHAKU_REQUIRE_TIMESCALEDB=1) but is not installed "
                    f"in {_pg_sharedir()}: scripts/install-deps --test builds it with "
                    "../shared/third_party/build-pg-extension timescaledb", pytrace=False)
    if not os.path.isdir(THIRD_PARTY):
        pytest.skip("TimescaleDB not available (../shared/third_party not present)")
    pytest.skip("TimescaleDB not available (not installed; scripts/install-deps --test builds "
                "it from ../shared/third_party)")


def timescaledb_cluster(**settings):
    """A cluster that preloads TimescaleDB (after require_timescaledb)."""
    require_timescaledb()
    return PgCluster(preload=["timescaledb"], settings=settings)


# --- Citus ---------------------------------------------------------------------------------------
# Debian does not package Citus either: scripts/install-deps --test builds it from
# ../shared/third_party as it does TimescaleDB, and scripts/test sets KOHAKU_REQUIRE_CITUS=1 there,
# so that a Citus that could not be built fails its tests instead of skipping them.

def citus_installed():
    """Citus is installed into this PostgreSQL (loaded only by clusters that preload it)."""
    return os.path.exists(os.path.join(_pg_sharedir(), "extension", "citus.control"))


def require_citus():
    """Returns when Citus is installed. Otherwise the calling test (or fixture) fails when
    KOHAKU_REQUIRE_CITUS=1 and is skipped, saying why, when not."""
    import pytest
    if citus_installed():
        return
    if os.environ.get("KOHAKU_REQUIRE_CITUS") == "1":
        pytest.fail("Citus is required (KOHAKU_REQUIRE_CITUS=1) but is not installed in "
                    f"{_pg_sharedir()}: scripts/install-deps --test builds it with "
                    "../shared/third_party/build-pg-extension citus", pytrace=False)
    if not os.path.isdir(THIRD_PARTY):
        pytest.skip("Citus not available (../shared/third_party not present)")
    pytest.skip("Citus not available (not installed; scripts/install-deps --test builds it "
                "from ../shared/third_party)")


SHARD_COUNT = 8


class CitusCluster:
    """A Citus cluster on 127.0.0.1: a coordinator and `workers` workers, each a PgCluster
    preloading citus (first in the list, as Citus requires). Databases are made with
    create_db, which creates them on every node, runs CREATE EXTENSION citus in each,
    registers the workers with the coordinator (Citus keeps its node list per database) and
    creates citus_columnar (unless columnar=False).
    `coordinator` takes the PgCluster calls (uri, psql, log_text); a worker may be stopped and
    started again to simulate an outage."""

    def __init__(self, workers=2, shard_count=SHARD_COUNT):
        require_citus()
        self.nodes = []
        try:
            for _ in range(workers + 1):
                # 8 shards per table instead of Citus's 32: each time partition of each
                # table is 8 tables on the workers, which keeps a new database's migration
                # (about 15 s with 32 here) short for the many tests that make one
                self.nodes.append(PgCluster(preload=["citus"],
                                            settings={"max_prepared_transactions": 100,
                                                      "citus.shard_count": shard_count}))
        except Exception:
            self.close()
            raise
        self.coordinator = self.nodes[0]
        self.workers = self.nodes[1:]
        self.port = self.coordinator.port

    def uri(self, db):
        return self.coordinator.uri(db)

    def psql(self, db, sql):
        return self.coordinator.psql(db, sql)

    def log_text(self):
        return self.coordinator.log_text()

    def create_db(self, name, columnar=True):
        for node in self.nodes:
            node.psql("postgres", f'CREATE DATABASE "{name}"')
            node.psql(name, "CREATE EXTENSION citus")
        self.psql(name, f"SELECT citus_set_coordinator_host('127.0.0.1', {self.port})")
        for w in self.workers:
            self.psql(name, f"SELECT citus_add_node('127.0.0.1', {w.port})")
        if columnar:  # created on the coordinator, Citus creates it on the workers
            self.psql(name, "CREATE EXTENSION citus_columnar")
        return self.uri(name)

    def close(self):
        for node in self.nodes:
            node.close()

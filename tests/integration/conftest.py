"""pytest fixtures of the end-to-end suite; what they hand out is defined in helpers.py.

Storage: a test asks for `db`, the database kohaku stores into, and names the backends it runs
on with the `storage` marker, once per backend:

    @pytest.mark.storage("sqlite", "postgres")
    def test_stored(db, kohaku): ...

Without the marker a test runs on the backends of KOHAKU_TEST_STORAGE (comma-separated,
default "sqlite"). The kinds:
- sqlite: a file in the test's tmp_path (helpers.SqliteDb);
- postgres: a database of its own on the session's PostgreSQL 15 cluster, `pg_cluster`
  (helpers.PgDb; the cluster is pgcluster.PgCluster, run as the postgres user);
- timescaledb: a database of its own on the module's cluster that preloads TimescaleDB,
  `ts_cluster` (skipped without TimescaleDB, failed then when KOHAKU_REQUIRE_TIMESCALEDB=1).
A test that needs another database besides `db` calls `db_factory(kind)`; a fixture of a wider
scope, or a test with clusters of its own, builds `PgDb(cluster, unique_db_name())` itself.

Daemons:
- `kohaku_factory(settings=None, **keys, env=None, wait=True, health=204)`: starts kohaku in
  a directory of tmp_path, storing into `db` when the test asks for it (else into a SQLite
  file in that directory), settings and keys over those (a key set to None is left out of
  the config file), and waits until /.ok answers `health` (None: any status, for storage
  that is away on purpose; wait=False: no wait). At teardown every daemon still running gets
  SIGTERM and must exit 0 within 20 s (its config, log and stderr are shown when not); a
  test that stops one itself checks the exit code it gets.
- `kohaku`: one daemon with the default settings.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import STORAGE_KINDS, Kohaku, PgDb, SqliteDb  # noqa: E402
from pgcluster import (CitusCluster, PgCluster, timescaledb_cluster,  # noqa: E402
                       unique_db_name)

KINDS = ("sqlite", "postgres", "timescaledb", "citus")


def pytest_configure(config):
    config.addinivalue_line("markers", "storage(*kinds): run the test once per storage kind "
                            f"({', '.join(KINDS)}), the `db` fixture being that database")
    config.addinivalue_line("markers", "once(why, **params): a long test that the second pass "
                            "of scripts/test (the ASan+UBSan build, KOHAKU_TEST_REPEAT=1) "
                            "leaves out; with params, only its variants whose parameters "
                            "take those values (a value or a tuple of values)")


def once_matches(item):
    """Whether the `once` marker, if any, covers this variant of the test."""
    marker = item.get_closest_marker("once")
    if marker is None:
        return False
    assert len(marker.args) == 1 and isinstance(marker.args[0], str) and marker.args[0], (
        f"{item.nodeid}: once() needs the reason it runs in one pass only")
    params = item.callspec.params if hasattr(item, "callspec") else {}
    for name, wanted in marker.kwargs.items():
        assert name in params, f"{item.nodeid}: once({name}=...) but no such parameter"
        if params[name] not in (wanted if isinstance(wanted, tuple) else (wanted,)):
            return False
    return True


def pytest_collection_modifyitems(config, items):
    """KOHAKU_TEST_REPEAT=1 (scripts/test's ASan+UBSan pass, after the release pass ran
    everything) deselects the tests marked `once`: long ones whose subject is timing, load or
    the database's own behaviour, each with a shorter test of the same kohaku code kept."""
    if os.environ.get("KOHAKU_TEST_REPEAT") != "1":
        for item in items:
            once_matches(item)  # the marker's arguments are checked on every pass
        return
    left_out = [item for item in items if once_matches(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        gone = set(map(id, left_out))
        items[:] = [item for item in items if id(item) not in gone]


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("storage")
    if "db" not in metafunc.fixturenames:
        assert marker is None, (f"{metafunc.definition.nodeid}: a storage marker without the "
                                "db fixture (kohaku_factory stores into db only when the test "
                                "asks for it)")
        return
    kinds = list(marker.args) if marker else STORAGE_KINDS
    unknown = [k for k in kinds if k not in KINDS]
    assert not unknown, f"{metafunc.definition.nodeid}: unknown storage {unknown}"
    metafunc.parametrize("db", kinds, indirect=True)


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = PgCluster()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def ts_cluster():
    """A cluster that preloads TimescaleDB (skipped, or failed with
    KOHAKU_REQUIRE_TIMESCALEDB=1, where TimescaleDB is not installed)."""
    cluster = timescaledb_cluster()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def citus_cluster():
    """A Citus coordinator and two workers (skipped, or failed with KOHAKU_REQUIRE_CITUS=1,
    where Citus is not installed)."""
    cluster = CitusCluster(workers=2)
    yield cluster
    cluster.close()


@pytest.fixture
def db_factory(request, tmp_path):
    made = []

    def make(kind):
        made.append(kind)
        if kind == "sqlite":
            d = tmp_path / ("db" if len(made) == 1 else f"db{len(made)}")
            d.mkdir()
            return SqliteDb(d)
        if kind == "postgres":
            return PgDb(request.getfixturevalue("pg_cluster"), unique_db_name())
        if kind == "timescaledb":
            return PgDb(request.getfixturevalue("ts_cluster"), unique_db_name("tsdb"))
        if kind == "citus":
            return PgDb(request.getfixturevalue("citus_cluster"), unique_db_name("citus"))
        raise AssertionError(f"no storage kind {kind!r} (one of {', '.join(KINDS)})")

    return make


@pytest.fixture
def db(request, db_factory):
    return db_factory(request.param)


@pytest.fixture
def kohaku_factory(request, tmp_path):
    db = request.getfixturevalue("db") if "db" in request.fixturenames else None
    started = []

    def start(settings=None, *, env=None, wait=True, health=204, timeout=None, **keys):
        directory = tmp_path / f"kohaku{len(started)}"
        conf = dict(db.settings()) if db is not None else {
            "storage": "sqlite", "sqlite_path": str(directory / "kohaku.db")}
        conf.update(settings or {})
        conf.update(keys)
        k = Kohaku(conf, directory=directory, env=env)
        started.append(k)
        if timeout is None:  # a new Citus database's migration makes every time partition
            timeout = 90 if conf.get("postgres_uri", "").find("/citus_") >= 0 else 20
        return k.start(wait=wait, health=health, timeout=timeout)

    yield start
    failures = []
    for k in started:
        if k.proc is None or k.returncode is not None:  # not started, or stopped by the test
            continue
        try:
            rc = k.stop(timeout=20)
        except AssertionError as e:
            failures.append(str(e))
            continue
        if rc != 0:
            failures.append(f"kohaku on port {k.port} exited {rc} after SIGTERM\n"
                            f"{k.describe()}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def kohaku(kohaku_factory):
    return kohaku_factory()

"""pytest fixtures for the end-to-end suite.

- `storage_kind`: the storage backend under test, one run per backend in KOHAKU_TEST_STORAGE
  (comma-separated, default "sqlite"; "postgres" needs an adapter in helpers.make_db).
- `db`: read access to that backend's database (count, rows, count_all, columns).
- `kohaku_factory(**settings)`: starts a daemon on a free 127.0.0.1 port, storing into `db`,
  and waits for it by polling; at teardown every daemon gets SIGTERM and must exit 0 (the log
  is shown when it does not).
- `kohaku`: one daemon with the default settings.

Module-level fixtures of the same names in older test modules override these there.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import STORAGE_KINDS, Kohaku, make_db  # noqa: E402


@pytest.fixture(scope="session", params=STORAGE_KINDS)
def storage_kind(request):
    return request.param


@pytest.fixture
def db(storage_kind, tmp_path):
    d = tmp_path / "db"
    d.mkdir()
    return make_db(storage_kind, d)


@pytest.fixture
def kohaku_factory(db, tmp_path):
    started = []

    def start(**settings):
        conf = dict(db.settings())
        conf.update(settings)
        k = Kohaku(tmp_path / f"kohaku{len(started)}", conf)
        started.append(k)
        return k.start()

    yield start
    failures = []
    for k in started:
        if k.proc is None:
            continue
        if k.returncode is not None:  # the test already stopped it and checked the exit
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

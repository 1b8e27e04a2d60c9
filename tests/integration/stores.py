"""pytest fixtures for the storage backends: `store` runs a test once on SQLite and once on
a real PostgreSQL 15 (one throwaway cluster per test session, one database per test)."""
import pytest

from harness import PgStore, SqliteStore
from pgcluster import PgCluster, unique_db_name


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = PgCluster()
    yield cluster
    cluster.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return SqliteStore(str(tmp_path))
    cluster = request.getfixturevalue("pg_cluster")
    return PgStore(cluster, unique_db_name())


@pytest.fixture
def pg_store(pg_cluster):
    return PgStore(pg_cluster, unique_db_name())

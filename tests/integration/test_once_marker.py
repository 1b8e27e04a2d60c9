"""The `once` marker (conftest.py): the second pass of scripts/test (KOHAKU_TEST_REPEAT=1)
leaves out exactly the variants marked, and the first pass leaves out none."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# what the ASan+UBSan pass leaves to the release pass; a change here is a change of what the
# sanitizers see, to be made on purpose
LEFT_OUT = {
    "test_citus.py::test_time_partitions_columnar_and_drop[citus]",
    "test_citus.py::test_loadgen_reports_stored_once_on_both_workers[citus-unnest]",
    "test_citus.py::test_loadgen_reports_stored_once_on_both_workers[citus-copy]",
    "test_citus.py::test_views_and_console_answer_with_shard_local_plans[citus]",
    "test_citus.py::test_worker_restarted_under_load_loses_nothing_acknowledged[citus]",
    "test_haproxy.py::test_two_kohaku_behind_haproxy_one_stopped_under_load[citus]",
    "test_quality.py::test_last_seen_hour_filled_by_the_migration[citus]",
    "test_spool.py::test_kill9_at_random_moments_loses_nothing_acknowledged[postgres-commit]",
    "test_spool.py::test_kill9_at_random_moments_loses_nothing_acknowledged[postgres-log]",
}


def collected(repeat):
    env = {k: v for k, v in os.environ.items() if k != "KOHAKU_TEST_REPEAT"}
    if repeat:
        env["KOHAKU_TEST_REPEAT"] = "1"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--collect-only", HERE], capture_output=True, text=True, env=env,
                         cwd=HERE, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    ids = {re.sub(r"^.*tests/integration/", "", l) for l in out.stdout.splitlines()
           if "::" in l}
    return ids, out.stdout.strip().splitlines()[-1]


def test_second_pass_leaves_out_the_marked_variants_only():
    first, summary = collected(False)
    assert "deselected" not in summary, summary
    assert LEFT_OUT <= first, LEFT_OUT - first
    second, summary = collected(True)
    assert first - second == LEFT_OUT, first - second ^ LEFT_OUT
    assert f"({len(LEFT_OUT)} deselected)" in summary, summary
    # the shorter tests of the same code stay in both passes
    for kept in ("test_spool.py::test_kill9_at_random_moments_loses_nothing_acknowledged"
                 "[sqlite-commit]",
                 "test_citus.py::test_loadgen_reports_stored_once_on_both_workers"
                 "[citus-direct_copy]",
                 "test_haproxy.py::test_two_kohaku_behind_haproxy_one_stopped_under_load"
                 "[postgres]"):
        assert kept in second, kept

"""The Debian package end to end: scripts/package builds kohaku_VERSION_ARCH.deb from this
tree, apt installs it, systemd-analyze verifies the installed unit, and the INSTALLED
/usr/sbin/kohaku runs as the user kohaku on a copy of the INSTALLED /etc/kohaku/config.ini in
which only what a test must change is changed (listen and metrics addresses and ports to
127.0.0.1 and free ports, sqlite_path and log_dir into a temporary directory). It takes one
real report built from an installed fixture (curl h2c, then kohaku-send-sample and
kohaku-loadgen as installed), stores it, stops on SIGTERM with status 0, and the package is
purged.

It installs a system package, so it needs root and a machine without a kohaku package of
its own (it fails, and touches nothing, when one is installed); concurrent runs wait for each
other on a lock file. It builds its own binary from the tree, so it runs once per
scripts/test, in the release pass: with KOHAKU_BIN an ASan build it is skipped.
Missing tools (dpkg-buildpackage, debhelper, systemd-analyze ...) fail it.
"""
import fcntl
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile

import pytest

from helpers import (KOHAKU_BIN, REPO_ROOT, Kohaku, SqliteDb, expected_counts,
                     fixture_envelope, free_port, need_tool, post_h2, sanitizer_build)

DEB_TOOLS = ("dpkg-buildpackage", "dh", "fakeroot", "dpkg-shlibdeps", "dpkg-deb", "apt-get",
             "systemd-analyze", "setpriv", "curl")
UNIT = "/lib/systemd/system/kohaku.service"
CONFIG = "/etc/kohaku/config.ini"
FIXTURES = "/usr/share/kohaku/fixtures/browser"
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-y", "-q"]
# the keys a test run must not share with a real installation
OVERRIDES = ("listen_addr", "listen_port", "exporter_listen_addr", "exporter_listen_port",
             "sqlite_path", "log_dir")


pytestmark = pytest.mark.skipif(
    sanitizer_build(KOHAKU_BIN),
    reason="the package test builds its own release binary: it runs in the release pass only")


def project_version():
    with open(os.path.join(REPO_ROOT, "CMakeLists.txt")) as f:
        m = re.search(r"^project\(kohaku VERSION ([0-9.]+)", f.read(), re.M)
    assert m, "no project VERSION in CMakeLists.txt"
    return m.group(1)


def run(cmd, timeout=600, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, (f"{' '.join(cmd)} exited {out.returncode}\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def package_installed():
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "kohaku"],
                         capture_output=True, text=True)
    return out.returncode == 0 and "installed" in out.stdout.split()


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """kohaku_VERSION_ARCH.deb, built by scripts/package (unit tests left to ctest)."""
    for tool in DEB_TOOLS:
        need_tool(tool)
    out = tmp_path_factory.mktemp("deb")
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck")
    lines = run([os.path.join(REPO_ROOT, "scripts", "package"), "-o", str(out)], timeout=1200,
                env=env).strip().splitlines()
    path = lines[-1]
    assert os.path.basename(path).startswith(f"kohaku_{project_version()}_"), lines
    return path


def test_package_fields_and_files(deb):
    fields = run(["dpkg-deb", "--field", deb, "Package", "Version", "Depends"])
    assert f"Version: {project_version()}" in fields
    depends = fields.split("Depends:", 1)[1]
    # dpkg-shlibdeps' work (debian/control names none of them but adduser and the console's
    # charting library): every library kohaku links
    for lib in ("libnghttp2-14", "libevent-2.1-7", "libevent-openssl-2.1-7", "libyajl2",
                "libinih1", "libsqlite3-0", "libpq5", "libssl3", "libhttp-parser2.9",
                "zlib1g", "libc6", "adduser", "libjs-dygraphs"):
        assert re.search(rf"(^|[ ,]){re.escape(lib)}( |,|$)", depends), (lib, depends)
    names = {line.split()[-1].lstrip(".") for line in
             run(["dpkg-deb", "--contents", deb]).splitlines()}
    for path in ("/usr/sbin/kohaku", "/usr/bin/kohaku-loadgen", "/usr/bin/kohaku-send-sample",
                 CONFIG, UNIT, "/usr/share/man/man8/kohaku.8.gz",
                 "/usr/share/man/man1/kohaku-loadgen.1.gz", "/usr/share/kohaku/config.example.ini",
                 f"{FIXTURES}/chromium-av-sender-t3.json", f"{FIXTURES}/manifest.json",
                 "/usr/share/kohaku/grafana/dashboards/overview.json",
                 "/usr/share/kohaku/grafana/provisioning/datasources/kohaku.yaml",
                 "/usr/share/kohaku/console/connections.html",
                 "/usr/share/kohaku/console/common.js",
                 "/usr/share/doc/kohaku/copyright"):
        assert path in names, f"{path} is not in {deb}"
    assert "/usr/bin/kohaku-benchtool" not in names


def ini_value(text, key):
    values = re.findall(rf"^{key} = (.*)$", text, re.M)
    assert len(values) == 1, f"{key}: {values}"
    return values[0].strip()


def check_unit():
    """The installed unit loads cleanly offline and keeps its sandbox."""
    out = subprocess.run(["systemd-analyze", "verify", UNIT], capture_output=True, text=True,
                         timeout=60)
    said = [l for l in (out.stdout + out.stderr).splitlines() if "kohaku" in l]
    assert out.returncode == 0 and not said, f"systemd-analyze verify {UNIT}:\n" + "\n".join(said)
    sec = run(["systemd-analyze", "security", "--offline=true", UNIT], timeout=60)
    m = re.search(r"Overall exposure level for kohaku.service: ([0-9.]+)", sec)
    assert m and float(m.group(1)) <= 2.0, sec[-2000:]
    unit = open(UNIT).read()
    for line in ("User=kohaku", "StateDirectory=kohaku", "ExecStart=/usr/sbin/kohaku -C " + CONFIG,
                 "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM",
                 "Restart=on-failure", "ProtectSystem=strict", "CapabilityBoundingSet=\n"):
        assert line in unit, line


def check_installed_files():
    user = pwd.getpwnam("kohaku")
    assert user.pw_shell.endswith("nologin") and user.pw_dir == "/var/lib/kohaku", user
    st = os.stat(CONFIG)
    assert st.st_uid == 0 and st.st_gid == user.pw_gid and stat.S_IMODE(st.st_mode) == 0o640, st
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "kohaku"])
    assert CONFIG in conffiles, conffiles
    text = open(CONFIG).read()
    assert ini_value(text, "sqlite_path") == "/var/lib/kohaku/kohaku.db"
    assert ini_value(text, "log_stdout") == "true"  # JSON lines to the journal
    version = run(["/usr/sbin/kohaku", "-V"]).splitlines()
    assert version[0] == f"kohaku {project_version()}", version  # then the libraries'
    assert any(line.startswith("nghttp2 ") for line in version[1:]), version
    return text, user


def test_install_run_purge(deb):
    assert os.geteuid() == 0, "the package test installs a system package: run it as root"
    with open("/tmp/kohaku-package-test.lock", "w") as lock:  # /tmp: always there
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run at a time on this machine
        assert not package_installed(), (
            "a kohaku package is installed on this machine; this test installs and purges "
            "its own: remove it first (apt-get purge kohaku)")
        workdir = tempfile.mkdtemp(prefix="kohaku-package-test.")
        daemon = purge = None
        try:
            run(APT + ["install", os.path.abspath(deb)])
            check_unit()
            installed_text, user = check_installed_files()
            daemon = start_installed(installed_text, user, workdir)
            send_reports(daemon, workdir)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait_exit(30) == 0, daemon.describe()
            assert any(l.get("msg") == "stopped" for l in daemon.log_lines()), daemon.describe()
        finally:
            if daemon is not None and daemon.proc.poll() is None:
                daemon.proc.kill()
                daemon.proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)
            if package_installed() or os.path.exists(CONFIG):
                purge = subprocess.run(APT + ["purge", "kohaku"], capture_output=True,
                                       text=True, timeout=600)
        assert purge is not None and purge.returncode == 0, \
            purge and purge.stdout[-2000:] + purge.stderr[-2000:]
        assert not package_installed()
        for path in ("/usr/sbin/kohaku", "/etc/kohaku", UNIT, "/var/lib/kohaku",
                     "/etc/systemd/system/multi-user.target.wants/kohaku.service"):
            assert not os.path.lexists(path), f"{path} is still there after purge"


def start_installed(installed_text, user, workdir):
    """/usr/sbin/kohaku as the user kohaku, on the installed config with OVERRIDES changed."""
    port, metrics_port = free_port(), free_port()
    new = {"listen_addr": "127.0.0.1", "listen_port": str(port),
           "exporter_listen_addr": "127.0.0.1", "exporter_listen_port": str(metrics_port),
           "sqlite_path": os.path.join(workdir, "kohaku.db"), "log_dir": workdir}
    text = installed_text
    for key in OVERRIDES:
        ini_value(text, key)  # present exactly once
        text = re.sub(rf"^{key} = .*$", f"{key} = {new[key]}", text, flags=re.M)
    daemon = Kohaku({"listen_port": port}, directory=workdir)
    with open(daemon.config_path, "w") as f:
        f.write(text)
    os.chown(workdir, user.pw_uid, user.pw_gid)
    os.chown(daemon.config_path, 0, user.pw_gid)
    os.chmod(daemon.config_path, 0o640)
    with open(daemon.log_path, "wb") as out, open(daemon.err_path, "wb") as err:
        # setpriv execs kohaku: the signals below reach kohaku itself
        daemon.proc = subprocess.Popen(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
             "/usr/sbin/kohaku", "-C", daemon.config_path],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir)
    daemon.wait_ready(20)
    return daemon


def send_reports(daemon, workdir):
    db = SqliteDb(workdir)
    # 1. curl --http2-prior-knowledge, the body from an installed fixture
    fixture = os.path.join(FIXTURES, "chromium-av-sender-t3.json")
    env = fixture_envelope(fixture)
    r = post_h2(daemon.port, env)
    assert r.status == 204, (r, daemon.describe())
    cid = env["connection_id"]
    assert db.count("sora_connection", "connection_id = ?", (cid,)) == 1
    for table, n in expected_counts(env["stats"]).items():
        assert db.count(table, "connection_id = ?", (cid,)) == n, table
    # 2. kohaku-send-sample as installed (finds the fixtures at ../share/kohaku)
    out = run(["/usr/bin/kohaku-send-sample", f"{daemon.url}/collector"], timeout=60)
    m = re.search(r"connection_id ([0-9A-Z]{26})", out)
    assert out.startswith("204 ") and m, out
    assert db.count("sora_connection", "connection_id = ?", (m.group(1),)) == 1
    # 3. kohaku-loadgen as installed, with its default fixtures (the build tree is gone)
    out = run(["/usr/bin/kohaku-loadgen", "-u", f"{daemon.url}/collector", "-N", "1", "-n", "1",
               "-c", "1", "-m", "1"], timeout=60)
    assert "204=1" in out, out
    assert db.count("sora_connection") == 3

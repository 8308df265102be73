"""Session fixtures that run real database servers on loopback for the integration tests.

    pg            PostgreSQL 15   .host .port .sockdir .user .dbname .dsn .unix_dsn
    redis_server  Redis           .host .port .unix_path
    mariadb       MariaDB         .host .port .user .password .socket
    mongo         CongoDB (MongoDB wire protocol, tests/mongo/server.mjs)   .host .port .uri

Each server gets a spare port (bind port 0, read it back), its own temp dir, and is "ready" only
once a real client has connected to it (polled with a deadline). Each runs under
`setpriv --pdeathsig`, so even if pytest is killed the server goes with it; normal teardown
stops it with its fast-shutdown signal and waits. Every fixture fails loudly (no skips): in CI
everything is installed, and a skipped server test would hide breakage.

Every server object also has .dir (its temp dir), .log (its log file), .proc (the Popen) and
.startup_seconds (spawn to ready) and .prepare_seconds (one-off initialisation before that:
initdb, mariadb-install-db). The classes (PostgresServer, RedisServer, MariaDBServer, MongoServer)
can be used directly for a private server, e.g. one a test stops on purpose:
    srv = PostgresServer().start(); ...; srv.stop()
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers  # noqa: E402
from helpers import ROOT  # noqa: E402

# Suites and apps the tests run under the shim (tests/integration/data/): not tests of this run.
collect_ignore = ["data"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADBD = "/usr/sbin/mariadbd"
MONGO_SERVER = ROOT / "tests" / "mongo" / "server.mjs"
KEEP_DIRS = bool(os.environ.get("LEAKSHIM_KEEP_SERVER_DIRS"))


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _require(path):
    if not (shutil.which(path) if os.sep not in str(path) else os.access(path, os.X_OK)):
        raise RuntimeError(f"{path} not found: install the packages listed in .ci/run")
    return str(path)


class ServerError(RuntimeError):
    pass


class Server:
    """One server process: temp dir, log file, start/readiness/stop."""

    name = "server"
    host = "127.0.0.1"
    ready_timeout = 60.0
    stop_signal = signal.SIGTERM
    stop_timeout = 30.0
    pdeathsig = "TERM"
    run_as = None  # user name, or None for the current user

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix=f"leakshim-{self.name}-"))
        self.log = self.dir / f"{self.name}.log"
        self.proc = None
        self.port = None
        self.startup_seconds = None
        self.prepare_seconds = None

    # --- to override -------------------------------------------------------------------
    def prepare(self):
        """One-off set-up before the first spawn (initdb, install-db...)."""

    def argv(self):
        raise NotImplementedError

    def check_ready(self):
        """Raise if the server does not answer a real client yet."""
        raise NotImplementedError

    # --- machinery ---------------------------------------------------------------------
    def _wrap(self, argv):
        wrap = ["setpriv", f"--pdeathsig={self.pdeathsig}"]
        if self.run_as:
            wrap += ["--reuid", self.run_as, "--regid", self.run_as, "--init-groups"]
        return wrap + ["--"] + [str(a) for a in argv]

    def log_tail(self, n=40):
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def _spawn(self):
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                self._wrap(self.argv()), stdin=self.stdin(), stdout=logf, stderr=subprocess.STDOUT,
                cwd=self.dir, env=self.env(), start_new_session=True)
        finally:
            logf.close()

    def stdin(self):
        return subprocess.DEVNULL

    def env(self):
        e = dict(os.environ)
        e.pop("LD_PRELOAD", None)
        e["LC_ALL"] = "C"
        return e

    def start(self, attempts=3):
        t0 = time.monotonic()
        try:
            self.prepare()
        except BaseException:
            self.cleanup()
            raise
        self.prepare_seconds = time.monotonic() - t0
        last = None
        for _ in range(attempts):
            self.port = free_port(self.host)
            t0 = time.monotonic()
            self._spawn()
            try:
                self._wait_ready()
            except ServerError as exc:
                last = exc
                self._kill()
                if "in use" in self.log_tail().lower():
                    continue  # lost the race for the spare port: take another
                break
            except BaseException:  # e.g. a client library missing, or ^C
                self._kill()
                self.cleanup()
                raise
            self.startup_seconds = time.monotonic() - t0
            return self
        self.cleanup()
        raise last

    def _wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with status {self.proc.returncode} before "
                                  f"it was ready; log {self.log}:\n{self.log_tail()}")
            try:
                self.check_ready()
                return
            except ImportError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                err = exc
            time.sleep(0.05)
        raise ServerError(f"{self.name} not ready after {self.ready_timeout:.0f}s on port "
                          f"{self.port} (last error: {err!r}); log {self.log}:\n{self.log_tail()}")

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                sys.stderr.write(f"{self.name} did not stop in {self.stop_timeout:.0f}s; killing\n")
                self._kill()
        self.cleanup()

    def cleanup(self):
        if self.dir and not KEEP_DIRS:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self):
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.proc and self.proc.pid}>"


class PostgresServer(Server):
    name = "pg"
    user = "postgres"
    dbname = "postgres"
    run_as = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: does not wait for clients to disconnect
    pdeathsig = "INT"
    max_connections = 200

    def __init__(self):
        super().__init__()
        self.data = self.dir / "data"
        self.sockdir = str(self.dir / "sock")

    def prepare(self):
        _require(PG_BIN / "postgres")
        os.makedirs(self.sockdir, exist_ok=True)
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.sockdir, "postgres", "postgres")
        os.chmod(self.dir, 0o755)
        if not (self.data / "PG_VERSION").exists():
            r = subprocess.run(
                self._wrap([PG_BIN / "initdb", "-D", self.data, "-U", self.user, "-A", "trust",
                            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]),
                cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL, capture_output=True,
                text=True, timeout=120)
            if r.returncode != 0:
                raise ServerError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")

    def argv(self):
        return [PG_BIN / "postgres", "-D", self.data, "-p", self.port, "-k", self.sockdir,
                "-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={self.max_connections}",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "shared_buffers=32MB", "-c", "logging_collector=off"]

    @property
    def dsn(self):
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    @property
    def unix_dsn(self):
        return f"host={self.sockdir} port={self.port} user={self.user} dbname={self.dbname}"

    @property
    def socket_path(self):
        return os.path.join(self.sockdir, f".s.PGSQL.{self.port}")

    def check_ready(self):
        import psycopg2

        for dsn in (self.dsn, self.unix_dsn):
            conn = psycopg2.connect(dsn, connect_timeout=2)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchone()
            finally:
                conn.close()


class RedisServer(Server):
    name = "redis"

    def __init__(self):
        super().__init__()
        self.unix_path = str(self.dir / "redis.sock")

    def argv(self):
        return [_require("redis-server"), "--port", self.port, "--bind", self.host,
                "--save", "", "--appendonly", "no", "--unixsocket", self.unix_path,
                "--unixsocketperm", "777", "--dir", self.dir, "--daemonize", "no",
                "--maxclients", "4000", "--protected-mode", "no"]

    def check_ready(self):
        import redis

        for kw in ({"host": self.host, "port": self.port}, {"unix_socket_path": self.unix_path}):
            c = redis.Redis(socket_connect_timeout=1, socket_timeout=2, **kw)
            try:
                if not c.ping():
                    raise ServerError("PING failed")
            finally:
                c.close()


class MariaDBServer(Server):
    name = "mariadb"
    user = "root"
    password = ""
    ready_timeout = 90.0

    def __init__(self):
        super().__init__()
        self.data = self.dir / "data"
        self.socket = str(self.dir / "mysqld.sock")

    def prepare(self):
        _require(MARIADBD)
        if not (self.data / "mysql").exists():
            r = subprocess.run(
                [_require("mariadb-install-db"), "--no-defaults", "--user=root",
                 f"--datadir={self.data}", "--auth-root-authentication-method=normal",
                 "--skip-test-db", "--skip-name-resolve"],
                cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL, capture_output=True,
                text=True, timeout=180)
            if r.returncode != 0:
                raise ServerError(f"mariadb-install-db failed ({r.returncode}):\n"
                                  f"{r.stdout}\n{r.stderr}")

    def argv(self):
        return [MARIADBD, "--no-defaults", "--user=root", f"--datadir={self.data}",
                f"--port={self.port}", f"--bind-address={self.host}", f"--socket={self.socket}",
                f"--pid-file={self.dir / 'mysqld.pid'}", f"--tmpdir={self.dir}",
                "--skip-name-resolve", "--skip-log-bin", "--max-connections=300",
                "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0",
                "--skip-innodb-doublewrite", f"--log-error={self.dir / 'mariadb-error.log'}"]

    def log_tail(self, n=40):
        own = super().log_tail(n)
        try:
            err = (self.dir / "mariadb-error.log").read_text(errors="replace").splitlines()[-n:]
        except OSError:
            err = []
        return own + "\n" + "\n".join(err)

    def client_argv(self, *sql, tcp=True):
        """argv for the `mariadb` CLI running the statements `sql` on this server (over TCP, or
        the unix socket)."""
        conn = ([f"-h{self.host}", f"-P{self.port}", "--protocol=TCP"] if tcp
                else [f"--socket={self.socket}", "--protocol=SOCKET"])
        pw = [f"-p{self.password}"] if self.password else []
        argv = [_require("mariadb"), "--no-defaults", *conn, f"-u{self.user}", *pw,
                "--connect-timeout=2", "--batch", "--skip-column-names"]
        if sql:
            argv += ["-e", ";\n".join(sql)]
        return argv

    def check_ready(self):
        for tcp in (True, False):
            r = subprocess.run(self.client_argv("SELECT 1", tcp=tcp), capture_output=True,
                               text=True, timeout=10, stdin=subprocess.DEVNULL, env=self.env())
            if r.returncode != 0 or r.stdout.strip() != "1":
                raise ServerError(f"mariadb client: rc={r.returncode} {r.stderr.strip()}")


class MongoServer(Server):
    name = "mongo"
    ready_timeout = 30.0

    def prepare(self):
        _require("node")
        if not (MONGO_SERVER.parent / "node_modules").is_dir():
            raise ServerError("the mongo test server is not installed: run "
                              "`bash tests/mongo/setup.sh`")

    def stdin(self):
        return subprocess.PIPE  # server.mjs --exit-on-stdin-eof: goes away with us

    def argv(self):
        return [_require("node"), MONGO_SERVER, self.port, "--host", self.host,
                "--exit-on-stdin-eof"]

    @property
    def uri(self):
        return f"mongodb://{self.host}:{self.port}/?serverSelectionTimeoutMS=5000"

    def check_ready(self):
        import pymongo

        c = pymongo.MongoClient(self.host, self.port, serverSelectionTimeoutMS=500,
                                connectTimeoutMS=500)
        try:
            c.admin.command("ping")
        finally:
            c.close()

    def stop(self):
        if self.proc and self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        super().stop()


def _serve(cls):
    server = cls().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg():
    yield from _serve(PostgresServer)


@pytest.fixture(scope="session")
def redis_server():
    yield from _serve(RedisServer)


@pytest.fixture(scope="session")
def mariadb():
    yield from _serve(MariaDBServer)


@pytest.fixture(scope="session")
def mongo():
    yield from _serve(MongoServer)


# ---------------------------------------------------------------- sanitizer-built shim
# make integration-asan sets LEAKSHIM_TEST_SHIM to the ASan+UBSan shim (see helpers.shim_env).


def pytest_configure(config):
    config.addinivalue_line("markers", "no_asan(reason): cannot run under the ASan-built shim "
                                       "(make integration-asan deselects it; the reason says why)")


# Tests in files that do not carry the marker themselves: "file::test" -> why.
NOT_UNDER_ASAN = {
    "test_noexport.py::test_bare_name_dlopen_still_searches_the_callers_runpath":
        "ASan intercepts dlopen, so glibc searches the RUNPATH of libasan (its caller), not the host's",
    # GCC 12's libasan has no fork() interceptor (only vfork), so its allocator is not fork-safe in
    # a multi-threaded process: a child forked while another thread (the program's, or the shim's
    # reporter taking a timeline sample every second) holds an allocator lock blocks forever in its
    # first malloc. The plain shim runs these tests: glibc's malloc is fork-safe.
    "test_core.py::test_stress_threads_dumps_and_forks":
        "GCC 12's ASan allocator is not fork-safe with threads: the forked children can block in malloc",
    "test_core.py::test_forked_child_has_its_own_dump_trigger":
        "GCC 12's ASan allocator is not fork-safe with threads: the forked child can block in malloc",
    # Seen in CI and reproduced here (1 run in 10-15, with the previous build's ASan shim too): the
    # child's reporter thread blocked in ASan's allocator lock, inherited held from the parent's.
    "test_core.py::test_fork_parent_and_child_report_their_own":
        "GCC 12's ASan allocator is not fork-safe with threads: the forked child can block in malloc",
}


@pytest.hookimpl(tryfirst=True)  # before -m 'not no_asan' deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        why = NOT_UNDER_ASAN.get(f"{item.path.name}::{item.originalname}")
        if why and not item.get_closest_marker("no_asan"):
            item.add_marker(pytest.mark.no_asan(why))
    if not helpers.sanitizer_runtimes():
        return
    for item in items:
        mark = item.get_closest_marker("no_asan")
        if mark:
            item.add_marker(pytest.mark.skip(reason="not under the ASan shim: " + " ".join(mark.args)))


def pytest_sessionfinish(session, exitstatus):
    """The sanitizer log directory goes when it is empty (a report in it already failed a test,
    which named it: it stays for reading)."""
    logs = helpers.sanitizer_log_dir()
    if logs is not None:
        try:
            logs.rmdir()
        except OSError:
            pass


@pytest.fixture(autouse=True)
def _sanitizer_reports():
    """Under a sanitizer-built shim, an ASan or UBSan report from any program the test ran fails
    the test, with the report (they go to files, not to the programs' stderr)."""
    logs = helpers.sanitizer_log_dir()
    if logs is None:
        yield
        return
    before = set(os.listdir(logs))
    yield
    new = sorted(set(os.listdir(logs)) - before)
    if new:
        reports = "\n".join(f"--- {n}\n" + (logs / n).read_text(errors="replace") for n in new)
        pytest.fail(f"sanitizer reports in {logs}:\n{reports}", pytrace=False)


# ---------------------------------------------------------------- every JSON report matches the schema
# shim/report.schema.json documents the JSON reports; here every report the suite produces is held
# to it, in one place: each report a test decodes (json.loads / json.load: report files, stderr,
# `leakshim dump --json`), and each report file a test leaves in its tmp_path, read or not.


@pytest.fixture(scope="session", autouse=True)
def _report_schema():
    """The schema describes every field, and the unit tests' golden JSON matches it."""
    helpers.report_validator()  # a schema that is not valid draft 2020-12 fails here
    missing = helpers.undescribed_schema_fields()
    if missing:
        pytest.fail(f"{helpers.SCHEMA}: fields without a description: {missing}", pytrace=False)
    for path in sorted(helpers.GOLDEN.glob("*.json")):
        helpers.validate_report(json.loads(path.read_text()), str(path))


def _report_files(root):
    """Regular files under root (never a FIFO or a symlink a test planted)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size < (256 << 20):
                yield path


@pytest.fixture(autouse=True)
def _reports_match_schema(request, monkeypatch):
    real_loads = json.loads

    def loads(s, *args, **kwargs):
        doc = real_loads(s, *args, **kwargs)
        if helpers.is_report(doc):
            helpers.validate_report(doc, "a JSON report the test read")
        return doc

    monkeypatch.setattr(json, "loads", loads)  # json.load calls it too
    yield
    monkeypatch.setattr(json, "loads", real_loads)
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is not None:
        for path in _report_files(tmp):
            helpers.validate_report_file(path)

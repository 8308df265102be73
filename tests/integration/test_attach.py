"""`leakshim attach PID` / `leakshim detach PID` (tools/attach.c, shim/hook_attach.c): services
started WITHOUT the shim, each holding a PostgreSQL connection, are attached to while 8 clients keep
them busy. New leaks are reported with their stacks by `leakshim dump` and at exit, the connection
opened before is listed as such, detach leaves the service serving, and attaching is refused with
one line (and no harm) where it cannot work. Stress: 20 attach/detach rounds on a busy service."""

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import PY, ROOT, SHIM, TOOL, line_of

pytestmark = pytest.mark.no_asan  # an ASan-built shim cannot be dlopen'ed into a plain process

SAMPLES = ROOT / "samples"
C_SERVICE = SAMPLES / "pq_attach_service"
PY_SERVICE = SAMPLES / "py_attach_service.py"


# ---------------------------------------------------------------- helpers


def bare_env():
    """The environment of a process started without the shim."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS")}
    return env


def tool(*args, timeout=120, env=None):
    e = dict(os.environ, LEAKSHIM_LIB=str(SHIM))
    e.update(env or {})
    return subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e)


class Service:
    """A service started without the shim; its stdout says which port it listens on."""

    def __init__(self, argv, tmp_path, env=None):
        self.stderr_path = tmp_path / f"service-{len(list(tmp_path.glob('service-*')))}.err"
        self.errf = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=self.errf,
                                     stdin=subprocess.DEVNULL, text=True, env=env or bare_env())
        line = self.proc.stdout.readline()  # "port N", or EOF if it failed
        m = re.match(r"port (\d+)", line)
        assert m, f"service did not start: {line!r} {self.stderr()}"
        self.port = int(m.group(1))
        self.pid = self.proc.pid

    def stderr(self):
        if not self.errf.closed:
            self.errf.flush()
        return self.stderr_path.read_text()

    def request(self, cmd, timeout=30):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(cmd.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(64)
                if not chunk:
                    break
                data += chunk
        return data.decode().strip()

    def quit(self):
        assert self.request("quit") == "bye"
        rc = self.proc.wait(timeout=30)
        self.errf.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.errf.close()

    def maps(self):
        with open(f"/proc/{self.pid}/maps") as f:
            return f.read()


class Load:
    """8 clients sending "ping" in a loop; every answer must be "ok"."""

    def __init__(self, service, clients=8):
        self.service, self.ok, self.failed, self.errors = service, 0, 0, []
        self.slowest = 0.0  # the longest request: how long the process was stopped, at most
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                answer = self.service.request("ping")
                good = answer == "ok"
                err = None if good else f"answer {answer!r}"
            except OSError as e:
                good, err = False, repr(e)
            with self.lock:
                self.slowest = max(self.slowest, time.monotonic() - t0)
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(err)

    def count(self):
        with self.lock:
            return self.ok

    def wait_for(self, more, deadline=60):
        """Polls until `more` further requests were answered (the service is serving)."""
        start, end = self.count(), time.monotonic() + deadline
        while self.count() < start + more:
            assert time.monotonic() < end, f"service stopped serving: {self.errors[:3]}"
            time.sleep(0.01)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads), "a client hung"
        assert self.failed == 0, f"{self.failed} requests failed: {self.errors[:5]}"
        return self.ok



def attach(service, pg, tmp_path, extra=""):
    opts = f"ports={pg.port}:report={tmp_path}/report-%p:format=both{extra}"
    r = tool("attach", "--options", opts, service.pid)
    assert r.returncode == 0, r.stderr
    assert f"attached to process {service.pid}" in r.stdout
    return r


def dump_json(pid):
    import json

    r = tool("dump", "--json", pid)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def exit_reports(tmp_path, pid):
    import json

    text = (tmp_path / f"report-{pid}").read_text()
    js = json.loads((tmp_path / f"report-{pid}.json").read_text())
    return text, js


def user_frames(doc, group):
    """(file, line, function) of the frames of a group's stacks."""
    out = []
    for sid in (group["stack"], group["pystack"]):
        if sid is None:
            continue
        st = doc["stacks"][str(sid)]
        for f in st.get("frames") or st.get("pyframes"):
            out.append((f.get("file") or "", f.get("line") or 0, f.get("symbol") or f.get("func") or ""))
    return out


def before_attach_sockets(doc):
    return [s for s in doc["sockets"] if s["before_attach"]]


@pytest.fixture
def c_service(pg, tmp_path):
    assert C_SERVICE.exists(), f"{C_SERVICE} is not built (run `make`)"
    s = Service([C_SERVICE, pg.dsn, "8"], tmp_path)
    yield s
    s.kill()


@pytest.fixture
def py_service(pg, tmp_path):
    s = Service([PY, PY_SERVICE, pg.dsn], tmp_path)
    yield s
    s.kill()


# ---------------------------------------------------------------- C on libpq


def test_c_service_attached_under_load_reports_new_leaks_and_the_earlier_connection(c_service, pg, tmp_path):
    svc = c_service
    assert "libleakshim" not in svc.maps()
    load = Load(svc)
    load.wait_for(50)
    attach(svc, pg, tmp_path)  # during load
    assert "libleakshim" in svc.maps()
    load.wait_for(200)  # and after
    assert svc.request("leak") == "ok" and svc.request("leak") == "ok"

    doc = dump_json(svc.pid)
    assert doc["attached"] is not None
    early = before_attach_sockets(doc)
    assert len(early) == 1 and early[0]["category"] == "opened-before-attach" and early[0]["stack"] is None
    assert early[0]["port"] == pg.port
    live = [g for g in doc["groups"] if g["category"] == "live"]
    assert len(live) == 1 and live[0]["count"] == 2, doc["groups"]
    want = ("samples/pq_attach_service.c", line_of(C_SERVICE.with_suffix(".c"), "PGconn *c = PQconnectdb(dsn);"))
    frames = user_frames(doc, live[0])
    assert any(f[0].endswith(want[0]) and f[1] == want[1] and f[2] == "open_report_connection" for f in frames), frames
    text = tool("dump", svc.pid).stdout
    assert "opened before attach (no stack)" in text and "open_report_connection (pq_attach_service.c:" in text

    assert load.finish() > 0
    assert svc.quit() == 0
    text, js = exit_reports(tmp_path, svc.pid)
    assert js["summary"]["leaks"] == 2, text
    leak = [g for g in js["groups"] if g["leak"]]
    assert len(leak) == 1 and leak[0]["category"] == "handle-leak"
    assert f"open_report_connection (pq_attach_service.c:{want[1]})" in text, text
    assert "Not counted as leaks:" in text and "opened before attach (no stack)" in text
    assert "driver handles and pools created before attach are not known" in text
    assert [s["category"] for s in before_attach_sockets(js)] == ["opened-before-attach"]


# ---------------------------------------------------------------- Python on psycopg2


def test_python_service_attached_under_load_gets_python_stacks_and_pool_patches(py_service, pg, tmp_path):
    svc = py_service
    load = Load(svc)
    load.wait_for(50)
    attach(svc, pg, tmp_path)
    load.wait_for(200)
    assert svc.request("leak") == "ok"
    assert svc.request("pool") == "ok"  # psycopg2.pool was imported before attach

    doc = dump_json(svc.pid)
    assert len(before_attach_sockets(doc)) == 1
    leak_line = line_of(PY_SERVICE, "conn = psycopg2.connect(DSN)  # the bug")
    getconn_line = line_of(PY_SERVICE, "conn = pool.getconn()")
    live = [g for g in doc["groups"] if g["category"] == "live"]
    assert any(("py_attach_service.py", leak_line, "open_report_connection") in
               [(os.path.basename(f), ln, fn) for f, ln, fn in user_frames(doc, g)] for g in live), live

    assert load.finish() > 0
    assert svc.quit() == 0
    text, js = exit_reports(tmp_path, svc.pid)
    assert f"py_attach_service.py:{leak_line} in open_report_connection" in text, text
    assert f"py_attach_service.py:{getconn_line} in checkout_and_forget" in text, text
    cats = {g["category"] for g in js["groups"] if g["leak"]}
    assert cats == {"handle-leak", "checkout-leak"}, text
    assert js["summary"]["leaks"] == 2
    assert "opened before attach (no stack)" in text


def test_python_service_detached_and_reattached_under_load(py_service, pg, tmp_path):
    """Three attach/detach rounds on the busy Python service, then a leak after the last attach:
    the Python side started once stays installed and its stacks still come."""
    svc = py_service
    load = Load(svc)
    for i in range(3):
        r = attach(svc, pg, tmp_path) if i == 0 else tool("attach", svc.pid)
        assert r.returncode == 0, r.stderr
        load.wait_for(20)
        assert tool("detach", svc.pid).returncode == 0
        load.wait_for(20)
    assert tool("attach", svc.pid).returncode == 0
    assert svc.request("leak") == "ok"
    assert load.finish() > 0
    assert svc.quit() == 0
    text, js = exit_reports(tmp_path, svc.pid)
    leak_line = line_of(PY_SERVICE, "conn = psycopg2.connect(DSN)  # the bug")
    assert js["summary"]["leaks"] == 1, text
    assert f"py_attach_service.py:{leak_line} in open_report_connection" in text, text


# ---------------------------------------------------------------- detach


def test_detach_leaves_it_serving_and_stops_tracking(c_service, pg, tmp_path):
    svc = c_service
    load = Load(svc)
    attach(svc, pg, tmp_path)
    assert svc.request("leak") == "ok"
    r = tool("detach", svc.pid)
    assert r.returncode == 0 and f"detached from process {svc.pid}" in r.stdout, r.stderr
    load.wait_for(200)
    assert svc.request("leak") == "ok"  # not recorded any more
    live = [s for s in dump_json(svc.pid)["sockets"] if not s["before_attach"]]
    assert len(live) == 1, live
    again = tool("detach", svc.pid)
    assert again.returncode == 1 and "not attached" in again.stderr
    assert load.finish() > 0
    assert svc.quit() == 0
    assert not (tmp_path / f"report-{svc.pid}").exists()  # detached: no exit report


def test_second_attach_is_refused_and_reattach_after_detach_resumes(c_service, pg, tmp_path):
    svc = c_service
    attach(svc, pg, tmp_path)
    r = tool("attach", svc.pid)
    assert r.returncode == 1 and "attached already" in r.stderr and len(r.stderr.splitlines()) == 1
    assert tool("detach", svc.pid).returncode == 0
    assert svc.request("leak") == "ok"  # while detached: found again at re-attach, without a stack
    r = tool("attach", svc.pid)
    assert r.returncode == 0 and "1 database connection already open" in r.stdout, r.stdout + r.stderr
    assert svc.request("leak") == "ok"
    doc = dump_json(svc.pid)
    assert len(before_attach_sockets(doc)) == 2
    assert [g["count"] for g in doc["groups"] if g["category"] == "live"] == [1]
    assert svc.quit() == 0
    text, js = exit_reports(tmp_path, svc.pid)
    assert js["summary"]["leaks"] == 1


# ---------------------------------------------------------------- refusals


def assert_refused(r, pid, words):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and words in r.stderr, r.stderr
    assert r.stderr.startswith(f"leakshim attach: cannot attach to process {pid}")
    with open(f"/proc/{pid}/maps") as f:
        assert "libleakshim" not in f.read()
    with open(f"/proc/{pid}/status") as f:
        state = re.search(r"State:\s+(\S)", f.read()).group(1)
    assert state in "SR", f"left in state {state}"  # not stopped, not traced


def test_refuses_a_static_binary(tmp_path):
    src = tmp_path / "static.c"
    src.write_text("#include <unistd.h>\nint main(void) { for (;;) pause(); }\n")
    exe = tmp_path / "static"
    subprocess.run(["cc", "-static", "-o", exe, src], check=True, capture_output=True)
    p = subprocess.Popen([exe], env=bare_env())
    try:
        r = tool("attach", p.pid)
        assert_refused(r, p.pid, "statically linked")
    finally:
        p.kill()
        p.wait()


def test_refuses_a_preloaded_process(pg, tmp_path):
    from helpers import shim_env

    svc = Service([C_SERVICE, pg.dsn, "2"], tmp_path, env=shim_env(f"ports={pg.port}"))
    try:
        r = tool("attach", svc.pid)
        assert r.returncode == 1 and "already runs under leakshim (preloaded)" in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1
        assert svc.request("ping") == "ok"
    finally:
        svc.kill()


YAMA = "/proc/sys/kernel/yama/ptrace_scope"


def test_refuses_when_ptrace_scope_forbids_it(c_service, tmp_path):
    """With Yama's ptrace_scope raised and no CAP_SYS_PTRACE: the real setting when the test may
    change it (and it is restored), else the same check fed from a file (LEAKSHIM_TEST_PTRACE_SCOPE).
    The tool runs with CAP_SYS_PTRACE dropped from its bounding set (setpriv), as a normal user would."""
    drop = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", "--"]
    env = dict(os.environ, LEAKSHIM_LIB=str(SHIM))
    saved = None
    if os.access(YAMA, os.W_OK):
        saved = open(YAMA).read().strip()
    else:
        fake = tmp_path / "ptrace_scope"
        fake.write_text("1\n")
        env["LEAKSHIM_TEST_PTRACE_SCOPE"] = str(fake)
    try:
        if saved is not None:
            with open(YAMA, "w") as f:
                f.write("1\n")
        r = subprocess.run([*drop, str(TOOL), "attach", str(c_service.pid)], capture_output=True, text=True,
                           timeout=60, env=env)
    finally:
        if saved is not None:
            with open(YAMA, "w") as f:
                f.write(saved + "\n")
    assert_refused(r, c_service.pid, "kernel.yama.ptrace_scope is 1 and this tool lacks CAP_SYS_PTRACE")
    assert c_service.request("ping") == "ok"
    if saved is not None:
        assert open(YAMA).read().strip() == saved


def test_refuses_under_a_seccomp_filter_that_forbids_ptrace(c_service):
    """tests/integration/progs/no_ptrace runs the tool under a filter making ptrace fail (EPERM)."""
    prog = ROOT / "tests" / "integration" / "progs" / "no_ptrace"
    assert prog.exists(), f"{prog} is not built (make {prog.relative_to(ROOT)})"
    r = subprocess.run([str(prog), str(TOOL), "attach", str(c_service.pid)], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, LEAKSHIM_LIB=str(SHIM)))
    assert_refused(r, c_service.pid, "a seccomp filter on this tool forbids ptrace")
    assert c_service.request("ping") == "ok"


NAMESPACES = {
    "pid": (["--pid", "--fork"], "exec sleep {t}", "another PID namespace"),
    "net": (["--net"], "exec sleep {t}", "another network namespace"),
    # a mount namespace where the library's directory is another file system: not the same file
    "mnt": (["--mount", "--propagation", "private"], f"mount -t tmpfs none {SHIM.parent} && exec sleep {{t}}",
            "another mount namespace where"),
}


@pytest.mark.parametrize("ns", sorted(NAMESPACES))
def test_refuses_a_process_in_another_namespace(ns, tmp_path):
    flags, cmd, words = NAMESPACES[ns]
    marker = tmp_path / "started"
    t = f"300.{os.getpid()}{sorted(NAMESPACES).index(ns)}"  # a sleep no other test runs, to find it by
    p = subprocess.Popen(["unshare", *flags, "sh", "-c", f"touch {marker} && {cmd.format(t=t)}"], env=bare_env(),
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and p.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        if p.poll() is not None:
            pytest.skip(f"unshare {' '.join(flags)} is not permitted here")
        target = None  # the sleep (unshare --fork puts a process in between)
        while target is None:
            assert time.monotonic() < deadline, "no sleep process"
            out = subprocess.run(["pgrep", "-n", "-f", f"^sleep {t}$"], capture_output=True, text=True).stdout
            target = int(out) if out.strip() else None
            time.sleep(0.01)
        r = tool("attach", target)
        assert_refused(r, target, words)
    finally:
        subprocess.run(["pkill", "-KILL", "-f", f"^sleep {t}$"], capture_output=True)
        p.kill()
        p.wait()


def test_refuses_without_a_process_or_with_bad_options(c_service):
    r = tool("attach", "999999999")
    assert r.returncode == 2 or "no such process" in r.stderr
    r = tool("attach", "--options", "frames=zero", c_service.pid)
    assert r.returncode == 2 and "frames" in r.stderr
    assert "libleakshim" not in c_service.maps()


# ---------------------------------------------------------------- stress


def test_attach_detach_20_times_on_a_busy_service(c_service, pg, tmp_path):
    svc = c_service
    load = Load(svc)
    load.wait_for(50)
    for i in range(20):
        a = tool("attach", "--options", f"ports={pg.port}", svc.pid) if i == 0 else tool("attach", svc.pid)
        assert a.returncode == 0, f"round {i}: {a.stderr}"
        d = tool("detach", svc.pid)
        assert d.returncode == 0, f"round {i}: {d.stderr}"
        load.wait_for(20)
    served = load.finish()
    assert served > 400
    print(f"20 attach/detach rounds: {served} requests served, none lost, slowest {load.slowest:.2f}s")
    assert load.slowest < 15, load.slowest  # the process is stopped for a bounded time
    assert svc.request("ping") == "ok"
    assert svc.proc.poll() is None
    assert svc.quit() == 0
    assert svc.stderr() == ""  # detached at exit: the shim says nothing


def test_dump_signal_while_attached_and_the_programs_own_after_detach(c_service, pg, tmp_path):
    """Attached, SIGUSR2 (left at SIG_DFL by the program) writes a snapshot; detached, it is the
    program's again: its default action terminates the process, as before the attach."""
    svc = c_service
    attach(svc, pg, tmp_path)
    assert svc.request("leak") == "ok"
    svc.proc.send_signal(signal.SIGUSR2)
    report = tmp_path / f"report-{svc.pid}"
    deadline = time.monotonic() + 30
    while "snapshot:" not in (report.read_text() if report.exists() else ""):
        assert time.monotonic() < deadline, "no snapshot after SIGUSR2"
        time.sleep(0.02)
    assert "open_report_connection" in report.read_text()
    assert svc.request("ping") == "ok"
    assert tool("detach", svc.pid).returncode == 0
    svc.proc.send_signal(signal.SIGUSR2)
    assert svc.proc.wait(timeout=30) == -signal.SIGUSR2


# ---------------------------------------------------------------- an ASGI service under uvicorn


def test_fastapi_service_under_uvicorn_attached_reports_asyncpg_leaks_with_their_route(pg, tmp_path):
    """A FastAPI app (samples/py_fastapi_sqlmodel.py) served by uvicorn, started without the shim,
    already serving and holding its modules (asyncpg, starlette) when attached: connections it
    leaks afterwards are named at the endpoint's `await asyncpg.connect(...)` line and route."""
    import json

    import services as sv

    sample = SAMPLES / "py_fastapi_sqlmodel.py"
    port = sv.free_port()
    env = dict(bare_env(), PG_DSN=pg.dsn, PG_URL=f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.dbname}")
    log = open(tmp_path / "uvicorn.log", "w+")
    argv = [PY, "-m", "uvicorn", "--app-dir", str(SAMPLES), "py_fastapi_sqlmodel:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(tmp_path))

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    try:
        sv.wait_for(lambda: get("/orders/5") == 200, 60, "uvicorn to serve")  # a clean request, bare
        opts = f"ports={pg.port}:report={tmp_path}/report-%p:format=json"
        r = tool("attach", "--options", opts, proc.pid)
        assert r.returncode == 0, r.stderr
        with ThreadPoolExecutor(8) as ex:  # 8 concurrent requests, 5 of them leaking a connection
            codes = list(ex.map(get, ["/orders/500", "/orders/5"] * 3 + ["/orders/501", "/orders/502"]))
        assert codes == [200] * 8, codes
        doc = json.loads(tool("dump", "--json", proc.pid).stdout)
        line = line_of(sample, "# left open by the early return")
        live = [g for g in doc["groups"] if g["driver"] == "asyncpg" and
                (str(sample), line) in [(f, n) for f, n, _ in user_frames(doc, g)]]
        assert live and sum(g["sockets"] for g in live) == 5, doc["groups"]
        assert {c["label"] for g in live for c in g["contexts"]} == {"GET /orders/{oid}"}
        assert tool("detach", proc.pid).returncode == 0
        assert get("/orders/5") == 200  # still serving after detach
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

"""Host equivalence: a program behaves the same with the shim preloaded as without it.

Small C programs (tests/integration/progs/host_*.c) and Python one-offs run twice, BARE and UNDER
THE SHIM, and the test compares what a user could observe: stdout, stderr, exit status or the
killing signal, the files they write and their fd tables. Every program that holds database
sockets prints which of its fds the kernel says are still-open connections to the database port
(`dbfds:`), and the shim's exit report (JSON, `report=PATH:format=json`) must list exactly those.

The database port is the session Redis server's spare port, marked as a database port with
`ports=+PORT`; the programs open raw TCP connections to it (no protocol), so the shim captures a
stack at each connect. Synchronisation is by the programs' own output lines (acks) and by kernel
state read from /proc (a signal no longer pending, a thread blocked in a system call), never by
sleeping; every wait has a deadline.

The contract, item by item (each test's docstring says which it checks and what it expects):
  1. the shim owns no fd in the host's range;  2. leaks do not disappear (vfork children, bad
  close_range flags);  3. no crash when the host flips the dump signal's disposition under fire;
  4. the host keeps its own signal (signalfd, SIG_IGN, SA_RESETHAND, SIG_IGN across exec, and
  `leakshim dump` still working without touching the host's stderr);  5. no thread until one is
  needed;  6. reports never raise SIGPIPE;  7. first-time initialisation on a small thread stack.
"""

import difflib
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import PY, ROOT, TOOL, shim_env  # noqa: E402

PROGS = ROOT / "tests" / "integration" / "progs"
HOST_FDS = PROGS / "host_fds"
HOST_SIGNALS = PROGS / "host_signals"
HOST_THREADS = PROGS / "host_threads"
USR2 = int(signal.SIGUSR2)
USR2_BIT = 1 << (USR2 - 1)

Run = namedtuple("Run", "pid returncode stdout stderr")


# ------------------------------------------------------------------ helpers


def bare_env():
    e = dict(os.environ)
    e.pop("LD_PRELOAD", None)
    e.pop("LEAKSHIM_OPTIONS", None)
    return e


def env_for(shim, options=""):
    return shim_env(options) if shim else bare_env()


def run(argv, shim, options="", input=None, timeout=60):
    """Runs argv bare or under the shim (stdin: `input` or /dev/null); returns Run with the pid."""
    p = subprocess.Popen([str(a) for a in argv], env=env_for(shim, options),
                         stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"{argv} ({'shim' if shim else 'bare'}) did not finish in {timeout}s; "
                             f"stdout {out!r} stderr {err!r}")
    return Run(p.pid, p.returncode, out, err)


def report_opts(port, tmp, extra=""):
    opts = f"ports=+{port}:report={tmp}/r.%p:format=json"
    return opts + (":" + extra if extra else "")


def exit_report(path):
    """The one exit report (kind "exit") among the JSON documents, one per line, in `path`."""
    path = Path(path)
    assert path.exists(), f"no report file {path}"
    docs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{path}:{n}: not a JSON report line: {line[:200]!r} ({exc})") from exc
    exits = [d for d in docs if d.get("kind") == "exit"]
    assert len(exits) == 1, f"{path}: expected one exit report, got kinds {[d.get('kind') for d in docs]}"
    return exits[0]


def kernel_dbfds(stdout):
    """The fds the program found still connected to the database port (its `dbfds:` line)."""
    lines = [l for l in stdout.splitlines() if l.startswith("dbfds:")]
    assert len(lines) == 1, f"expected one dbfds line in {stdout!r}"
    return sorted(int(x) for x in lines[0].split()[1:])


def assert_report_matches_kernel(js, fds):
    """The exit report lists exactly the sockets the kernel says are open, each one a leak."""
    reported = sorted(fd for s in js["sockets"] for fd in s["fds"])
    assert reported == fds, f"exit report lists fds {reported}, the kernel says {fds} are open"
    assert js["summary"]["leaks"] == len(fds), js["summary"]


def assert_same(shim_text, bare_text, what):
    """shim_text == bare_text, failing with a unified diff (bare -> shim) of the two."""
    if shim_text != bare_text:
        diff = "\n".join(difflib.unified_diff(bare_text.splitlines(), shim_text.splitlines(), "bare", "shim",
                                              lineterm=""))
        raise AssertionError(f"{what}:\n{diff}")


def masked(text):
    """Output with every number replaced: for comparing runs whose fd numbers may legitimately
    differ (item 1 checks the numbers themselves)."""
    return re.sub(r"\d+", "#", text)


def pending_anywhere(pid, sig):
    """True while `sig` is pending for the process (shared) or any of its threads."""
    bit = 1 << (sig - 1)
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for tid in tasks:
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                return True
    return False


def wait_until(cond, what, timeout=10.0):
    """Polls a kernel-visible condition with a deadline (a real event, not a guess at timing)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if cond():
            return
        pause.wait(0.002)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def blocked_in(pid, syscalls):
    """True when the main thread sleeps inside one of `syscalls` (x86-64 numbers)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return bool(fields) and fields[0] in syscalls and state == "S"


SYS_READ, SYS_POLL, SYS_PPOLL = "0", "7", "271"


class Live:
    """A running program driven line by line: stdin a pipe, stdout read with deadlines, stderr a
    file (so it can be inspected mid-run without blocking either side)."""

    def __init__(self, argv, env, stderr_path):
        self.stderr_path = Path(stderr_path)
        self._err = open(self.stderr_path, "wb")
        self.p = subprocess.Popen([str(a) for a in argv], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self._err)
        self.pid = self.p.pid
        self.buf = b""

    def line(self, timeout=10.0, what="a line"):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} from the program "
                                     f"(unread output {self.buf!r}, stderr {self.stderr()!r})")
            ready, _, _ = select.select([self.p.stdout], [], [], left)
            if ready:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    rc = self.p.wait(30)
                    raise AssertionError(f"program ended (status {rc}) before {what}; "
                                         f"unread output {self.buf!r}, stderr {self.stderr()!r}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def send(self, text):
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def finish(self, timeout=30):
        """Closes stdin, reads the rest of stdout, waits; returns (status, rest of stdout, stderr)."""
        rest, _ = self.p.communicate(timeout=timeout)  # closes stdin first
        self._err.close()
        return self.p.returncode, (self.buf + rest).decode(), self.stderr()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self._err.close()


def dump(pid):
    return subprocess.run([str(TOOL), "dump", str(pid)], capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------ 1. fds


def test_fd_numbers_and_listing_are_the_hosts(tmp_path, redis_server):
    """Item 1a. A program connects to the database port (the shim captures a stack), closes it, and
    opens /dev/null: it gets fd 3 under the shim as bare, and its /proc/self/fd listing (printed
    at every step) is identical to bare's. The exit report lists no socket (none is open)."""
    argv = [HOST_FDS, "reuse", redis_server.host, redis_server.port]
    bare = run(argv, shim=False)
    assert bare.returncode == 0, bare.stderr
    assert "db fd 3" in bare.stdout.splitlines() and "devnull fd 3" in bare.stdout.splitlines()
    shim = run(argv, shim=True, options=report_opts(redis_server.port, tmp_path))
    assert shim.returncode == 0, shim.stderr
    assert_same(shim.stdout, bare.stdout, "fd numbers or /proc/self/fd listing differ from bare")
    assert shim.stderr == bare.stderr == ""
    assert_report_matches_kernel(exit_report(tmp_path / f"r.{shim.pid}"), kernel_dbfds(shim.stdout))


@pytest.mark.parametrize("frame", ["plain", "jit"])
@pytest.mark.parametrize("how", ["closefrom", "close_range", "loop"])
def test_daemon_closing_every_fd_keeps_its_own_files(tmp_path, redis_server, how, frame):
    """Item 1b. A daemon-style program connects to the database port, closes every fd from 3 up
    (closefrom(3) / close_range(3, ~0U, 0) / close() up to the soft RLIMIT_NOFILE), opens its log
    file (fd 3) and a socketpair (4, 5), writes HELLO into one end, connects to the database port
    again (another stack capture), then reads the other end: exactly HELLO, and its write to the
    log succeeds. In the "jit" variant the second connect is called from a frame without unwind
    information (an anonymous executable page, as JIT-compiled code), where libunwind falls back
    to frame pointers and validates the addresses it reads (through a pipe, in libunwind 1.6).
    Under the shim: the same output line for line (fd numbers and listings included), the same
    log file content, and an exit report listing just the second connection."""
    mode = f"daemon-{how}" + ("-jit" if frame == "jit" else "")
    argv = [HOST_FDS, mode, redis_server.host, redis_server.port]
    (tmp_path / "bare").mkdir()
    (tmp_path / "shim").mkdir()
    bare = run(argv + [tmp_path / "bare" / "app.log"], shim=False)
    assert bare.returncode == 0, bare.stderr
    lines = bare.stdout.splitlines()
    assert "log fd 3" in lines and "pair fds 4 5" in lines and "pair read 5 'HELLO'" in lines
    assert (tmp_path / "bare" / "app.log").read_text() == "daemon read 'HELLO'\n"
    shim = run(argv + [tmp_path / "shim" / "app.log"], shim=True,
               options=report_opts(redis_server.port, tmp_path / "shim"))
    assert shim.returncode == 0, shim.stderr
    assert_same(shim.stdout, bare.stdout, "the daemon's fds, reads or writes differ from bare")
    assert_same((tmp_path / "shim" / "app.log").read_text(), (tmp_path / "bare" / "app.log").read_text(),
                "the daemon's log file differs from bare")
    assert shim.stderr == bare.stderr == ""
    assert_report_matches_kernel(exit_report(tmp_path / "shim" / f"r.{shim.pid}"), kernel_dbfds(shim.stdout))


# ------------------------------------------------------------------ 2. leaks do not disappear


@pytest.mark.parametrize("how", ["close", "close_range", "closefrom", "cloexec"])
@pytest.mark.parametrize("ending", ["exit", "exec"])
def test_vfork_child_closing_does_not_hide_the_parents_leak(tmp_path, redis_server, how, ending):
    """Item 2a. The parent connects to the database port (never closes it) and vfork()s; the child
    closes the socket (close(fd), close_range(3, ~0U, 0), closefrom(3), or marks it close-on-exec
    with CLOSE_RANGE_CLOEXEC) and _exit(0)s or execs /bin/true. The child's fd table is its own,
    so the parent still holds the socket (bare and shimmed alike), and the parent's exit report
    lists exactly that socket: 1 leak."""
    if how == "cloexec" and ending == "exit":
        pytest.skip("close-on-exec without an exec closes nothing")
    argv = [HOST_FDS, f"vfork-{how}-{ending}", redis_server.host, redis_server.port]
    bare = run(argv, shim=False)
    assert bare.returncode == 0, bare.stderr
    assert "child exited 1 status 0" in bare.stdout.splitlines()
    assert len(kernel_dbfds(bare.stdout)) == 1
    shim = run(argv, shim=True, options=report_opts(redis_server.port, tmp_path))
    assert shim.returncode == 0, shim.stderr
    assert_same(masked(shim.stdout), masked(bare.stdout), "output differs from bare (numbers masked)")
    assert shim.stderr == bare.stderr == ""
    js = exit_report(tmp_path / f"r.{shim.pid}")
    assert_report_matches_kernel(js, kernel_dbfds(shim.stdout))
    assert js["summary"]["leaks"] == 1


def test_python_subprocess_run_does_not_hide_a_leak(tmp_path, redis_server):
    """Item 2b. Python opens a raw socket to the database port, runs subprocess.run(["/bin/true"])
    (CPython vforks and the child close_range()s its fds), and exits without closing the socket:
    the exit report lists that socket, 1 leak. Output and status as bare."""
    code = ("import os, socket, subprocess\n"
            f"s = socket.create_connection(({redis_server.host!r}, {redis_server.port}))\n"
            "r = subprocess.run(['/bin/true'])\n"
            "print('true exited', r.returncode)\n"
            "print('dbfds:', s.fileno() if os.path.exists('/proc/self/fd/%d' % s.fileno()) else '')\n")
    bare = run([PY, "-c", code], shim=False)
    assert bare.returncode == 0, bare.stderr
    assert "true exited 0" in bare.stdout
    shim = run([PY, "-c", code], shim=True, options=report_opts(redis_server.port, tmp_path))
    assert shim.returncode == 0, shim.stderr
    assert_same(masked(shim.stdout), masked(bare.stdout), "output differs from bare (numbers masked)")
    assert shim.stderr == bare.stderr == ""
    js = exit_report(tmp_path / f"r.{shim.pid}")
    assert_report_matches_kernel(js, kernel_dbfds(shim.stdout))
    assert js["summary"]["leaks"] == 1


def test_close_range_with_a_bad_flag_closes_nothing(tmp_path, redis_server):
    """Item 2c. close_range(fd, fd, 0x80000000) fails with EINVAL and closes nothing, bare and under
    the shim; the socket stays open and the exit report still lists it as leaked."""
    argv = [HOST_FDS, "badflag", redis_server.host, redis_server.port]
    bare = run(argv, shim=False)
    assert bare.returncode == 0, bare.stderr
    assert "close_range -1 EINVAL" in bare.stdout.splitlines()
    assert len(kernel_dbfds(bare.stdout)) == 1
    shim = run(argv, shim=True, options=report_opts(redis_server.port, tmp_path))
    assert shim.returncode == 0, shim.stderr
    assert_same(masked(shim.stdout), masked(bare.stdout), "output differs from bare (numbers masked)")
    js = exit_report(tmp_path / f"r.{shim.pid}")
    assert_report_matches_kernel(js, kernel_dbfds(shim.stdout))
    assert js["summary"]["leaks"] == 1


# ------------------------------------------------------------------ 3. no crash


def test_disposition_flipping_under_a_signal_storm_never_crashes(tmp_path, redis_server):
    """Item 3. With a database connection open, two threads switch SIGUSR2 between an SA_SIGINFO
    handler and SIG_IGN as fast as they can while a third sends 200000 process-directed SIGUSR2.
    The disposition is never SIG_DFL, so bare the program always exits 0: under the shim too, in
    each of 4 runs, with an exit report matching the kernel's open sockets."""
    argv = [HOST_SIGNALS, "storm", redis_server.host, redis_server.port, 200000]
    for i in range(4):
        bare = run(argv, shim=False, timeout=120)
        assert bare.returncode == 0, (i, bare.returncode, bare.stderr)
        assert "sent 200000" in bare.stdout.splitlines()
    for i in range(4):
        d = tmp_path / f"run{i}"
        d.mkdir()
        shim = run(argv, shim=True, options=report_opts(redis_server.port, d), timeout=120)
        assert shim.returncode == 0, f"run {i}: status {shim.returncode} (bare: 0); stderr {shim.stderr[-2000:]!r}"
        assert "sent 200000" in shim.stdout.splitlines()
        assert_report_matches_kernel(exit_report(d / f"r.{shim.pid}"), kernel_dbfds(shim.stdout))


# ------------------------------------------------------------------ 4. the host keeps its signal


def signalfd_session(tmp_path, redis_server, shim, dump_after=None):
    """Runs host_signals signalfd; sends 20 SIGUSR2 one at a time, each acknowledged before the
    next. Under the shim, `leakshim dump` runs after signal `dump_after`. Returns (status, output
    after the acks, stderr, dump result, stderr right after the dump)."""
    opts = f"ports=+{redis_server.port}:format=json"
    live = Live([HOST_SIGNALS, "signalfd", redis_server.host, redis_server.port], env_for(shim, opts),
                tmp_path / f"stderr.{'shim' if shim else 'bare'}")
    d = err_after_dump = None
    try:
        assert live.line() == "ready"
        for i in range(1, 21):
            os.kill(live.pid, signal.SIGUSR2)
            got = live.line(what=f"the ack of SIGUSR2 {i} of 20")
            assert got == f"got {i} signo {USR2}", f"signal {i} of 20: {got!r}"
            if i == dump_after:
                d = dump(live.pid)
                err_after_dump = live.stderr()
        status, rest, err = live.finish()
    finally:
        live.kill()
    return status, rest, err, d, err_after_dump


def stderr_json_docs(err):
    docs = []
    for line in err.splitlines():
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"stderr has a line that is not the JSON exit report: {line[:300]!r}") from None
    return docs


def test_signalfd_host_receives_every_signal(tmp_path, redis_server):
    """Items 4a and 4e. The program opens a database connection, blocks SIGUSR2 in all its threads
    and reads it with signalfd. The test sends 20 SIGUSR2 (os.kill), each after the previous one's
    ack: bare and under the shim the program receives 20 of 20 (and no extra one), and exits 0.
    Under the shim, `leakshim dump PID` after the 10th exits 0 and prints a snapshot naming the
    connection's peer port; the program's stderr is still empty after the dump (report= left at
    stderr: the snapshot goes to the tool, not into the target's stderr), and at exit stderr holds
    only the JSON exit report, listing exactly the socket the kernel says is open."""
    status, rest, err, _, _ = signalfd_session(tmp_path, redis_server, shim=False)
    assert status == 0, err
    assert rest.splitlines()[0] == "total 20"
    assert err == ""
    status, rest, err, d, err_after_dump = signalfd_session(tmp_path, redis_server, shim=True, dump_after=10)
    assert d.returncode == 0, f"leakshim dump: status {d.returncode}, stderr {d.stderr!r}"
    assert "snapshot" in d.stdout and f":{redis_server.port}" in d.stdout, (d.stdout, d.stderr)
    assert err_after_dump == "", f"the dump wrote into the program's stderr: {err_after_dump[:500]!r}"
    assert status == 0, err
    assert rest.splitlines()[0] == "total 20", "the program saw a signal it was not sent"
    docs = stderr_json_docs(err)
    assert [x["kind"] for x in docs] == ["exit"], [x["kind"] for x in docs]
    assert_report_matches_kernel(docs[0], kernel_dbfds(rest))


def ignored_signal_session(tmp_path, redis_server, call, shim):
    """Runs host_signals ign-CALL; once it sleeps in the call, sends 5 SIGUSR2, each taken by the
    kernel (no longer pending) before the next; under the shim then runs `leakshim dump`; then
    writes "hello" to its stdin. Returns (status, output, stderr, stderr before the dump, dump)."""
    opts = f"ports=+{redis_server.port}:format=json"
    live = Live([HOST_SIGNALS, f"ign-{call}", redis_server.host, redis_server.port], env_for(shim, opts),
                tmp_path / f"stderr.{call}.{'shim' if shim else 'bare'}")
    nrs = {SYS_READ} if call == "read" else {SYS_POLL, SYS_PPOLL}
    d = None
    try:
        assert live.line() == "ready"
        wait_until(lambda: blocked_in(live.pid, nrs), f"the program to block in {call}()")
        for i in range(5):
            os.kill(live.pid, signal.SIGUSR2)
            wait_until(lambda: not pending_anywhere(live.pid, USR2), f"SIGUSR2 {i + 1} to be taken")
        err_before_dump = live.stderr()
        if shim:
            d = dump(live.pid)
        live.send("hello\n")
        status, out, err = live.finish()
    finally:
        live.kill()
    return status, out, err, err_before_dump, d


@pytest.mark.skipif(platform.machine() != "x86_64", reason="reads x86-64 system call numbers from /proc")
@pytest.mark.parametrize("call", ["read", "poll"])
def test_ignored_signal_does_not_interrupt_the_host(tmp_path, redis_server, call):
    """Items 4b and 4e. The program opens a database connection, sets SIGUSR2 to SIG_IGN and blocks
    in read() (or poll(), which SA_RESTART never restarts) on its stdin. The test sends SIGUSR2
    five times while it is blocked, then writes "hello": the call returns the data, never EINTR,
    like bare; the ignored signals write nothing to stderr. Under the shim, `leakshim dump` (before
    the data) exits 0 and names the connection's peer port, and stderr at exit holds only the JSON
    exit report, listing exactly the socket the kernel says is open."""
    status, out, err, _, _ = ignored_signal_session(tmp_path, redis_server, call, shim=False)
    assert status == 0, err
    assert "EINTR" not in out and "read 6 'hello'" in out.splitlines(), out
    assert err == ""
    bare_out = out
    status, out, err, err_before_dump, d = ignored_signal_session(tmp_path, redis_server, call, shim=True)
    assert_same(masked(out), masked(bare_out), "the blocking call's results differ from bare")
    assert err_before_dump == "", f"ignored SIGUSR2s wrote to the program's stderr: {err_before_dump[:500]!r}"
    assert d.returncode == 0, f"leakshim dump: status {d.returncode}, stderr {d.stderr!r}"
    assert "snapshot" in d.stdout and f":{redis_server.port}" in d.stdout, (d.stdout, d.stderr)
    assert status == 0, err
    docs = stderr_json_docs(err)
    assert [x["kind"] for x in docs] == ["exit"], [x["kind"] for x in docs]
    assert_report_matches_kernel(docs[0], kernel_dbfds(out))


def resethand_session(tmp_path, redis_server, shim):
    """First SIGUSR2: the handler's "handled" line, then the disposition sigaction() reports; second
    SIGUSR2: returns how the process ended (or the line it printed instead of dying)."""
    live = Live([HOST_SIGNALS, "resethand", redis_server.host, redis_server.port],
                env_for(shim, report_opts(redis_server.port, tmp_path)), tmp_path / f"stderr.{shim}")
    seen = []
    try:
        seen.append(live.line())
        os.kill(live.pid, signal.SIGUSR2)
        seen.append(live.line(what="the handler's line"))
        live.send("query\n")
        seen.append(live.line(what="the disposition"))
        os.kill(live.pid, signal.SIGUSR2)
        try:
            status = live.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            status = "still running 10s after the second SIGUSR2"
        return seen, status
    finally:
        live.kill()


def test_sa_resethand_handler_runs_once_then_the_signal_kills(tmp_path, redis_server):
    """Item 4c. An SA_RESETHAND handler for SIGUSR2 (with a database connection open): the first
    SIGUSR2 runs it once and resets the disposition (sigaction() then reports SIG_DFL), the
    second kills the process with SIGUSR2. Same lines and same death under the shim."""
    bare_seen, bare_status = resethand_session(tmp_path, redis_server, shim=False)
    assert bare_seen == ["ready handler", "handled", "disposition SIG_DFL"]
    assert bare_status == -USR2
    seen, status = resethand_session(tmp_path, redis_server, shim=True)
    assert seen == bare_seen
    assert status == bare_status, f"second SIGUSR2 under the shim: {status} (bare: killed by SIGUSR2)"


@pytest.mark.parametrize("lang", ["c", "python"])
def test_sig_ign_survives_exec(tmp_path, lang):
    """Item 4d. A program sets SIGUSR2 to SIG_IGN and execs a program that prints the SigIgn mask
    from /proc/self/status and the disposition sigaction() reports: SIGUSR2 is ignored after the
    exec, bare and under the shim (which the exec'd program inherits through LD_PRELOAD)."""
    if lang == "c":
        argv = [HOST_SIGNALS, "ignexec"]
    else:
        code = ("import os, signal, sys\n"
                "signal.signal(signal.SIGUSR2, signal.SIG_IGN)\n"
                "os.execv(sys.argv[1], [sys.argv[1], 'show'])\n")
        argv = [PY, "-c", code, HOST_SIGNALS]
    opts = f"report={tmp_path}/r.%p:format=json"
    bare = run(argv, shim=False)
    assert bare.returncode == 0, bare.stderr
    mask = int(re.search(r"SigIgn ([0-9a-f]+)", bare.stdout).group(1), 16)
    assert mask & USR2_BIT and "disposition SIG_IGN" in bare.stdout
    shim = run(argv, shim=True, options=opts)
    assert shim.returncode == 0, shim.stderr
    assert_same(shim.stdout, bare.stdout, "SIGUSR2's disposition after exec differs from bare")
    assert shim.stderr == bare.stderr == ""


# ------------------------------------------------------------------ 5. no thread until needed


@pytest.mark.parametrize("lang", ["c", "python"])
def test_no_thread_without_a_database_socket(tmp_path, lang):
    """Item 5. A program that opens no database socket (C: a loopback TCP connection and a
    socketpair; Python: nothing) has exactly one thread (/proc/self/task) under the shim, as bare."""
    if lang == "c":
        argv = [HOST_THREADS, "nodb"]
    else:
        argv = [PY, "-c", "import os, socket; a, b = socket.socketpair(); "
                          "print('threads', len(os.listdir('/proc/self/task')))"]
    bare = run(argv, shim=False)
    assert bare.returncode == 0, bare.stderr
    counts = [int(l.split()[-1]) for l in bare.stdout.splitlines() if l.startswith("threads")]
    assert counts and all(c == 1 for c in counts), bare.stdout
    shim = run(argv, shim=True, options=f"report={tmp_path}/r.%p")
    assert shim.returncode == 0, shim.stderr
    assert_same(shim.stdout, bare.stdout, "the shim added a thread to a process without database sockets")


def test_unshare_user_namespace_works_under_the_shim(tmp_path):
    """Item 5. `unshare -U /bin/true` (which needs a single-threaded process) succeeds under the
    shim as it does bare."""
    bare = run(["unshare", "-U", "/bin/true"], shim=False)
    if bare.returncode != 0:
        pytest.skip(f"unshare -U fails bare on this machine: {bare.stderr.strip()}")
    shim = run(["unshare", "-U", "/bin/true"], shim=True, options=f"report={tmp_path}/r.%p")
    assert shim.returncode == 0, f"status {shim.returncode}: {shim.stderr.strip()}"
    assert shim.stderr == ""


# ------------------------------------------------------------------ 6. no SIGPIPE


def run_with_stderr_reader_gone(argv, shim, options):
    """Runs argv with stderr a pipe whose read end the test closes after the program's "ready"
    line and before letting it exit (EOF on stdin). Returns (status, stdout)."""
    r, w = os.pipe()
    try:
        p = subprocess.Popen([str(a) for a in argv], env=env_for(shim, options), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=w, text=True)
    finally:
        os.close(w)
    try:
        first = p.stdout.readline()
        assert first.startswith("ready"), first
    finally:
        os.close(r)  # nobody will ever read the program's stderr now
    p.stdin.close()
    out = first + p.stdout.read()
    return p.wait(timeout=30), out


@pytest.mark.parametrize("exitcode", [None, 23])
def test_report_to_a_closed_stderr_does_not_raise_sigpipe(redis_server, exitcode):
    """Item 6. A program that leaks a database connection runs with stderr a pipe nobody reads any
    more when it exits: it exits 0, like bare, not killed by SIGPIPE (status 141) while the shim
    writes its report; with exitcode=23 it exits 23."""
    argv = [HOST_FDS, "hold", redis_server.host, redis_server.port]
    bare_status, bare_out = run_with_stderr_reader_gone(argv, False, "")
    assert bare_status == 0
    assert len(kernel_dbfds(bare_out)) == 1
    opts = f"ports=+{redis_server.port}" + (f":exitcode={exitcode}" if exitcode else "")
    status, out = run_with_stderr_reader_gone(argv, True, opts)
    assert_same(masked(out), masked(bare_out), "output differs from bare (numbers masked)")
    want = exitcode or 0
    assert status == want, f"status {status} under the shim, expected {want}" + (
        " (killed by SIGPIPE writing the report)" if status == -signal.SIGPIPE else "")


# ------------------------------------------------------------------ 7. small stacks


def test_first_connection_on_a_small_thread_stack(tmp_path, redis_server):
    """Item 7. A thread with a 16 KiB stack (pthread_attr_setstacksize) uses ~4 KiB of it, then
    makes the process's first database connection (first-time initialisation on that stack) and a
    second one: no crash under the shim, exit 0, and the exit report lists both connections."""
    argv = [HOST_THREADS, "smallstack", redis_server.host, redis_server.port]
    bare = run(argv, shim=False)
    assert bare.returncode == 0, bare.stderr
    assert len(kernel_dbfds(bare.stdout)) == 2
    shim = run(argv, shim=True, options=report_opts(redis_server.port, tmp_path))
    assert shim.returncode == 0, f"status {shim.returncode}; stderr {shim.stderr[-2000:]!r}"
    assert_same(masked(shim.stdout), masked(bare.stdout), "output differs from bare (numbers masked)")
    js = exit_report(tmp_path / f"r.{shim.pid}")
    assert_report_matches_kernel(js, kernel_dbfds(shim.stdout))
    assert js["summary"]["leaks"] == 2

"""Core shim under real programs and real servers (issue 2): samples' exact counts and named
functions, every fd-death path without false positives, signal dumps, exitcode, suppressions,
fork, bad options, the stress run and the host-safety checks."""

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import ROOT, SHIM, TOOL, run_shim, shim_env

SAMPLES = ROOT / "samples"
PROGS = ROOT / "tests" / "integration" / "progs"


def run_report(tmp_path, argv, options="", env=None, timeout=60):
    """Runs argv under the shim with text+JSON reports in tmp_path; returns (proc, {pid: (text, json)})."""
    opts = f"report={tmp_path}/r.%p:format=both"
    if options:
        opts += ":" + options
    proc = run_shim(argv, options=opts, env=env, timeout=timeout)
    reports = {}
    for p in tmp_path.glob("r.*"):
        if p.suffix == ".json":
            continue
        pid = int(p.name.split(".")[1])
        js = json.loads(Path(str(p) + ".json").read_text())
        reports[pid] = (p.read_text(), js)
    return proc, reports


def only_report(reports):
    assert len(reports) == 1, f"expected one report, got {sorted(reports)}"
    return next(iter(reports.values()))


def frames_of(js, stack_id):
    st = js["stacks"].get(str(stack_id))
    return [f.get("symbol") or "" for f in st.get("frames", [])] if st else []


def leak_groups(js):
    return [g for g in js["groups"] if g["leak"] and not g["suppressed"]]


# ---------------------------------------------------------------- samples


def test_raw_socket_sample_counts_and_names_the_leaking_function(tmp_path, redis_server):
    proc, reports = run_report(tmp_path, [SAMPLES / "raw_dbport", "127.0.0.1", redis_server.port, 9],
                               options=f"ports=+{redis_server.port}")
    assert proc.returncode == 0, proc.stderr
    text, js = only_report(reports)
    assert js["summary"]["leaks"] == 3 and js["summary"]["groups"] == 1
    (g,) = leak_groups(js)
    assert g["category"] == "leak" and g["count"] == 3
    assert "remember_connection" in frames_of(js, g["stack"])
    assert "short_query" not in frames_of(js, g["stack"])
    assert re.search(r"3 database connections to 127\.0\.0\.1:%d \(socket\) leaked" % redis_server.port, text)
    assert text.rstrip().splitlines()[-1] == "SUMMARY: leakshim: 3 leaked database connections in 1 group"
    # the churn table sees all 9, including the 6 closed ones
    assert sum(c["created"] for c in js["churn"]) == 9


def test_default_ports_are_not_enough_for_a_spare_port(tmp_path, redis_server):
    """Without ports=+N a socket to an unknown port is not a database socket: nothing reported."""
    proc, reports = run_report(tmp_path, [SAMPLES / "raw_dbport", "127.0.0.1", redis_server.port, 3])
    assert proc.returncode == 0
    _, js = only_report(reports)
    assert js["summary"]["leaks"] == 0 and js["sockets"] == []


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_libpq_service_leaks_only_on_the_early_return(tmp_path, pg, via):
    dsn = pg.dsn if via == "tcp" else pg.unix_dsn
    proc, reports = run_report(tmp_path, [SAMPLES / "pq_service", dsn, 10])
    assert proc.returncode == 0, proc.stderr
    assert "served 10 requests, 0 failed" in proc.stdout
    text, js = only_report(reports)
    # requests 0, 4 and 8 are reports: each leaks its connection
    assert js["summary"]["leaks"] == 3 and js["summary"]["groups"] == 1
    (g,) = leak_groups(js)
    assert g["count"] == 3
    assert "handle_report" in frames_of(js, g["stack"])
    assert "handle_lookup" not in frames_of(js, g["stack"])
    assert "PostgreSQL" in g["title"]
    if via == "unix":
        assert ".s.PGSQL.%d" % pg.port in text
    assert "leakshim: 3 leaked database connections in 1 group" in text.splitlines()[-1]


def test_libpq_service_fixed_reports_nothing(tmp_path, pg):
    proc, reports = run_report(tmp_path, [SAMPLES / "pq_service_fixed", pg.dsn, 10])
    assert proc.returncode == 0, proc.stderr
    text, js = only_report(reports)
    assert js["summary"]["leaks"] == 0
    assert text.splitlines()[-1] == "leakshim: 0 leaked database connections"
    # the churn table still shows where the 10 connections came from
    assert "created per stack" in text


def test_exitcode_gate(tmp_path, pg):
    leaky = run_shim([SAMPLES / "pq_service", pg.dsn, 4], options="exitcode=23")
    assert leaky.returncode == 23
    assert "served 4 requests" in leaky.stdout  # buffered output survives the early _exit
    fixed = run_shim([SAMPLES / "pq_service_fixed", pg.dsn, 4], options="exitcode=23")
    assert fixed.returncode == 0
    failing = run_shim([SAMPLES / "pq_service_fixed", "host=127.0.0.1 port=1 connect_timeout=2", 1],
                       options="exitcode=23")
    assert failing.returncode == 1  # the program's own status when nothing leaked


def test_suppressions(tmp_path, redis_server):
    supp = tmp_path / "supp.txt"
    supp.write_text("# our own known leak\nleak:remember_connection\n")
    proc, reports = run_report(tmp_path, [SAMPLES / "raw_dbport", "127.0.0.1", redis_server.port, 6],
                               options=f"ports=+{redis_server.port}:suppressions={supp}:exitcode=9")
    assert proc.returncode == 0  # suppressed leaks do not trip exitcode
    text, js = only_report(reports)
    assert js["summary"]["leaks"] == 0 and js["summary"]["suppressed"] == 2
    assert "(2 suppressed)" in text.splitlines()[-1]


# ---------------------------------------------------------------- fd-death paths


@pytest.mark.parametrize("mode", ["fclose_fdopen", "syscall_close", "dup2_over", "dup3_over", "close_range",
                                  "closefrom", "fcntl_dupfd", "dup_then_close_both", "connect_reuse"])
def test_fd_death_paths_give_no_false_positive(tmp_path, redis_server, mode):
    proc, reports = run_report(tmp_path, [PROGS / "fdpaths", mode, "127.0.0.1", redis_server.port],
                               options=f"ports=+{redis_server.port}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"done {mode}" in proc.stdout
    _, js = only_report(reports)
    assert js["summary"]["leaks"] == 0, js["groups"]
    assert js["sockets"] == []


def test_dup_then_close_original_keeps_the_socket_live(tmp_path, redis_server):
    proc, reports = run_report(tmp_path, [PROGS / "fdpaths", "dup_close_orig", "127.0.0.1", redis_server.port],
                               options=f"ports=+{redis_server.port}")
    assert proc.returncode == 0, proc.stderr
    kept = int(re.search(r"kept (\d+)", proc.stdout).group(1))
    _, js = only_report(reports)
    assert js["summary"]["leaks"] == 1
    (s,) = js["sockets"]
    assert s["fds"] == [kept]


# ---------------------------------------------------------------- signal dumps


def wait_for_text(path, text, timeout=10.0):
    """Waits for the shim's reporter thread to write `text` into the report at path (a real event,
    with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return True
        threading.Event().wait(0.01)
    return False


def start_service(dsn, options, sample="pq_service"):
    proc = subprocess.Popen([str(SAMPLES / sample), dsn, "--serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=shim_env(options))
    assert proc.stdout.readline().strip() == "ready"
    return proc


def request(proc, what):
    proc.stdin.write(what + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_signal_dump_while_the_service_keeps_working(tmp_path, pg):
    proc = start_service(pg.dsn, f"report={tmp_path}/r.%p")
    try:
        assert request(proc, "report") == "ok"
        assert request(proc, "report") == "ok"
        assert request(proc, "lookup") == "ok"
        dump = subprocess.run([str(TOOL), "dump", str(proc.pid)], capture_output=True, text=True, timeout=30)
        assert dump.returncode == 0, dump.stderr
        assert "snapshot: 2 live database sockets" in dump.stdout
        assert "handle_report" in dump.stdout
        js = json.loads(subprocess.run([str(TOOL), "dump", "--json", str(proc.pid)], capture_output=True, text=True,
                                       timeout=30).stdout)
        assert js["kind"] == "snapshot" and js["summary"]["live"] == 2
        assert all(s["state"] == "in-use" and s["driver"] == "libpq" for s in js["sockets"])
        # the host is unaffected: it keeps serving, and a second dump sees the new leak
        assert request(proc, "report") == "ok"
        dump2 = subprocess.run([str(TOOL), "dump", "--json", str(proc.pid)], capture_output=True, text=True,
                               timeout=30)
        assert json.loads(dump2.stdout)["summary"]["live"] == 3
        # `leakshim dump` wrote nothing to the report destination (the service's logs)
        report = tmp_path / f"r.{proc.pid}"
        assert not report.exists()
        # a plain kill -USR2 (process-directed, may land on any thread) writes the snapshot there
        os.kill(proc.pid, signal.SIGUSR2)
        assert wait_for_text(report, "snapshot: 3 live database sockets"), "no snapshot after kill -USR2"
        assert request(proc, "lookup") == "ok"
    finally:
        proc.stdin.close()
        out = proc.stdout.read()
        proc.wait(timeout=30)
    assert proc.returncode == 0, out
    text = (tmp_path / f"r.{proc.pid}").read_text()
    assert "leakshim: 3 leaked database connections in 1 group" in text


def test_dump_leaves_no_file_and_writes_nothing_into_the_target(tmp_path, pg):
    """`leakshim dump` goes over the private channel: no snapshot file anywhere (TMPDIR, /tmp, the
    target's cwd), nothing in the target's stderr (its logs) or its fd table, 20 times in a row."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before_tmp = set(os.listdir("/tmp"))
    env = shim_env("")
    env["TMPDIR"] = str(tmpdir)
    proc = subprocess.Popen([str(SAMPLES / "pq_service"), pg.dsn, "--serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert request(proc, "report") == "ok"
        fds_before = sorted(os.listdir(f"/proc/{proc.pid}/fd"), key=int)
        for i in range(20):
            as_json = i % 2 == 1
            args = [str(TOOL), "dump"] + (["--json"] if as_json else []) + [str(proc.pid)]
            d = subprocess.run(args, capture_output=True, text=True, timeout=30)
            assert d.returncode == 0, d.stderr
            if as_json:
                assert json.loads(d.stdout)["summary"]["live"] == 1
            else:
                assert "1 live database socket" in d.stdout
        assert sorted(os.listdir(f"/proc/{proc.pid}/fd"), key=int) == fds_before
        assert request(proc, "lookup") == "ok"
    finally:
        proc.stdin.close()
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=30)
    assert proc.returncode == 0, out
    assert os.listdir(tmpdir) == [] and os.listdir(cwd) == []
    assert not [n for n in set(os.listdir("/tmp")) - before_tmp if n.startswith("leakshim")]
    # the only thing on its stderr is its own exit report, never a snapshot
    assert "snapshot" not in err and err.count("SUMMARY: leakshim") == 1, err


def test_configured_signal_and_dump_of_a_process_without_the_shim(tmp_path, pg):
    proc = start_service(pg.dsn, f"signal=USR1:report={tmp_path}/r.%p")
    try:
        request(proc, "report")
        dump = subprocess.run([str(TOOL), "dump", str(proc.pid)], capture_output=True, text=True, timeout=30)
        assert dump.returncode == 0 and "1 live database socket" in dump.stdout
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    sleeper = subprocess.Popen(["/bin/cat"], stdin=subprocess.PIPE)
    try:
        bad = subprocess.run([str(TOOL), "dump", str(sleeper.pid)], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1
        assert "not running under leakshim" in bad.stderr
        assert sleeper.poll() is None  # and it was not signalled
    finally:
        sleeper.stdin.close()
        sleeper.wait()


# ---------------------------------------------------------------- fork


def test_fork_parent_and_child_report_their_own(tmp_path, redis_server):
    proc, reports = run_report(tmp_path, [PROGS / "forker", "127.0.0.1", redis_server.port],
                               options=f"ports=+{redis_server.port}")
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"parent (\d+) child (\d+) status 0", proc.stdout)
    parent, child = int(m.group(1)), int(m.group(2))
    assert set(reports) == {parent, child}
    _, pjs = reports[parent]
    _, cjs = reports[child]
    assert pjs["summary"]["leaks"] == 2
    assert "parent_work" in frames_of(pjs, leak_groups(pjs)[0]["stack"])
    assert cjs["summary"]["leaks"] == 1  # its own, not the 2 it inherited
    assert "child_work" in frames_of(cjs, leak_groups(cjs)[0]["stack"])
    assert sum(1 for s in cjs["sockets"] if s["inherited"]) == 2


# ---------------------------------------------------------------- bad input


def test_bad_options_one_line_each_and_the_program_runs(tmp_path, redis_server):
    opts = (f"ports=+{redis_server.port}:format=xml:bogus=1:signal=NOPE:exitcode=abc:justakey:"
            f"report=/nonexistent-dir/r.%p")
    proc = run_shim([SAMPLES / "raw_dbport", "127.0.0.1", redis_server.port, 3], options=opts)
    assert proc.returncode == 0
    assert "done: 3 connections" in proc.stdout
    lines = proc.stderr.splitlines()
    warn = [l for l in lines if l.startswith("leakshim: LEAKSHIM_OPTIONS")]
    assert len(warn) == 5, lines
    assert any("'xml'" in l and "text|json|both" in l for l in warn)
    assert any("unknown option 'bogus'" in l for l in warn)
    assert any("'NOPE'" in l and "signal" in l for l in warn)
    assert any("'abc'" in l and "exitcode" in l for l in warn)
    assert any("malformed option 'justakey'" in l for l in warn)
    # the unwritable report path: one line, and the report on stderr instead
    assert sum("cannot write report to '/nonexistent-dir/r." in l for l in lines) == 1
    assert "SUMMARY: leakshim: 1 leaked database connection in 1 group" in proc.stderr


def test_unreadable_suppressions_file_is_reported_and_ignored(tmp_path, redis_server):
    proc = run_shim([SAMPLES / "raw_dbport", "127.0.0.1", redis_server.port, 3],
                    options=f"ports=+{redis_server.port}:suppressions={tmp_path}/missing.supp")
    assert proc.returncode == 0
    assert "cannot read suppressions file" in proc.stderr
    assert "1 leaked database connection" in proc.stderr


# ---------------------------------------------------------------- host safety


def test_program_defining_the_shims_internal_names_is_unaffected():
    bare = subprocess.run([str(PROGS / "collide")], capture_output=True, text=True)
    shimmed = run_shim([PROGS / "collide"])
    assert bare.stdout == shimmed.stdout == "42 7 1 2 99 5\n"
    assert shimmed.returncode == 0
    exported = subprocess.run(["nm", "-D", "--defined-only", str(SHIM)], capture_output=True, text=True).stdout
    names = {l.split()[-1] for l in exported.splitlines() if l.strip()}
    assert not [n for n in names if n.startswith("ls_")], names
    assert {"socket", "connect", "close", "dup2", "fork"} <= names


def test_non_database_program_is_unaffected(tmp_path):
    script = "import socket,os; a,b=socket.socketpair(); a.send(b'x'); print(b.recv(1), os.dup(0)>0)"
    bare = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True)
    shimmed = run_shim(["/usr/bin/python3", "-c", script])
    assert bare.stdout == shimmed.stdout and bare.returncode == shimmed.returncode == 0
    # quiet by default (LeakSanitizer's rule): nothing leaked, nothing written
    assert shimmed.stderr == bare.stderr == ""


def test_stress_threads_dumps_and_forks(tmp_path, redis_server):
    """8 threads connect/PING/close while the dump signal arrives every 50 ms and thread 0 forks;
    afterwards the exit report lists exactly the sockets the kernel says are open."""
    env = shim_env(f"ports=+{redis_server.port}:report={tmp_path}/r.%p:format=json")
    proc = subprocess.Popen([str(PROGS / "stress"), "127.0.0.1", str(redis_server.port), "400"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().startswith("started")
    dumps = 0
    stop = threading.Event()
    while proc.poll() is None and dumps < 400:  # bounded: at most 20 s of signals
        try:
            os.kill(proc.pid, signal.SIGUSR2)
            dumps += 1
        except ProcessLookupError:
            break
        stop.wait(0.05)  # pacing of the load, not synchronisation
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    kernel = sorted(int(x) for x in re.search(r"open:(.*)", out).group(1).split())
    assert len(kernel) == 8 * (400 // 25)
    # each report is one JSON document per line: the snapshots, then the exit report
    docs = [json.loads(l) for l in (tmp_path / f"r.{proc.pid}").read_text().splitlines()]
    assert docs[-1]["kind"] == "exit" and all(d["kind"] == "snapshot" for d in docs[:-1])
    js = docs[-1]
    assert sorted(s["fd"] for s in js["sockets"]) == kernel
    assert js["summary"]["leaks"] == len(kernel)
    assert dumps > 0 and len(docs) > 1


def test_forked_child_has_its_own_dump_trigger(tmp_path, redis_server):
    """After fork the child gets its own reporter thread: `leakshim dump CHILD` shows the child's
    sockets (and the parent's, inherited), and dumping the parent still works."""
    code = (
        "import os, socket, sys\n"
        "def db():\n"
        "    s = socket.create_connection(('127.0.0.1', %d)); s.sendall(b'PING\\r\\n'); s.recv(16); return s\n"
        "keep = [db()]\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    keep += [db(), db()]\n"
        "    print('child', os.getpid(), flush=True)\n"
        "    sys.stdin.readline(); os._exit(0)\n"
        "print('parent', os.getpid(), flush=True)\n"
        "os.waitpid(pid, 0)\n" % redis_server.port)
    proc = subprocess.Popen(["/usr/bin/python3", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=shim_env(f"ports=+{redis_server.port}:report=/dev/null"))
    try:
        pids = dict(proc.stdout.readline().split() for _ in range(2))
        child, parent = int(pids["child"]), int(pids["parent"])
        c = subprocess.run([str(TOOL), "dump", "--json", str(child)], capture_output=True, text=True, timeout=30)
        assert c.returncode == 0, c.stderr
        cj = json.loads(c.stdout)
        assert cj["pid"] == child and cj["summary"]["live"] == 2  # its own two
        assert sum(1 for s in cj["sockets"] if s["inherited"]) == 1  # and the parent's one, inherited
        p = subprocess.run([str(TOOL), "dump", "--json", str(parent)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and json.loads(p.stdout)["summary"]["live"] == 1
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0

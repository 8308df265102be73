"""Lazy binding without the lazy resolver on a host's stack (shim/ls_bind.h).

The shim is linked with lazy binding, so a process that never opens a database socket pays the
loader only for the libc functions the shim really calls (issue 9's start-up target). The first
call through a lazily bound PLT slot runs the loader's resolver, a few KB of stack: it must never
happen on a host's thread inside a hook. The functions hooks call on the host's stack are bound
at load (noplt, ls_bind.h); heavier work runs on the shim's private stacks.

The check runs real programs under gdb with a breakpoint on every PLT stub of the shim
(lazybind.gdb.py): a stub reached on a host's stack inside a hook is a failure, naming the
function and the frames."""
import re
import subprocess
from pathlib import Path

import pytest

from helpers import PY, ROOT, SHIM, shim_env

pytestmark = pytest.mark.no_asan("the ASan runtime's own calls go through the shim's PLT")

GDB_SCRIPT = Path(__file__).with_name("lazybind.gdb.py")
TOUR = ROOT / "tests" / "integration" / "progs" / "hook_tour"
SAMPLES = ROOT / "samples"


def plt_stubs():
    out = subprocess.run(["objdump", "-d", "-j", ".plt", str(SHIM)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"^0*([0-9a-f]+) <(.+)@plt>:$", out, re.M)


def anchor():
    out = subprocess.run(["nm", str(SHIM)], capture_output=True, text=True, check=True).stdout
    return "0x" + re.search(r"^([0-9a-f]+) t main_wrapper$", out, re.M).group(1)


def host_calls(argv, options, follow="parent", timeout=180):
    """Runs argv under the shim inside gdb: (HOST lines, allowed stub hits, the program's output)."""
    stubs = plt_stubs()
    assert len(stubs) > 40, "the shim has few PLT stubs: is it linked lazily?"
    env = shim_env(options)
    env["LS_PLT"] = ",".join(f"0x{off}:{name}" for off, name in stubs)
    env["LS_ANCHOR"] = anchor()
    env["LS_FOLLOW"] = follow
    # gdb starts the program itself: the shim is preloaded into it, not into gdb. gdb maps the
    # shim's file to read it, which would make the program look like a child of a shimmed suite.
    preload = env.pop("LD_PRELOAD")
    env.pop("PYTEST_CURRENT_TEST", None)
    cmd = ["gdb", "-q", "-batch", "-nx", "-ex", f"set environment LD_PRELOAD {preload}",
           "-x", str(GDB_SCRIPT), "--args", *map(str, argv)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert f"STUBS {len(stubs)}" in out, out[-3000:]
    seen = re.search(r"^SEEN (\d+)$", out, re.M)
    assert seen, f"the program did not run to its end under gdb:\n{out[-3000:]}"
    return re.findall(r"^HOST .*$", out, re.M), int(seen.group(1)), out


def bound_at_load():
    """The names shim/ls_bind.h lists."""
    text = (ROOT / "shim" / "ls_bind.h").read_text()
    return re.findall(r"^LS_BIND_AT_LOAD\((\w+)\)$", text, re.M)


def test_the_shim_binds_lazily_but_the_host_stack_list_at_load():
    """No BIND_NOW; every function ls_bind.h lists is imported through a GOT entry the loader fills
    at load (GLOB_DAT) and has no lazily bound PLT slot; most libc imports are lazy."""
    dyn = subprocess.run(["readelf", "-d", str(SHIM)], capture_output=True, text=True, check=True).stdout
    assert "BIND_NOW" not in dyn and "Flags: NOW" not in dyn, dyn
    relocs = subprocess.run(["readelf", "-rW", str(SHIM)], capture_output=True, text=True, check=True).stdout
    glob_dat = set(re.findall(r"R_X86_64_GLOB_DAT\s+[0-9a-f]+\s+(\w+)", relocs))
    jump_slot = set(re.findall(r"R_X86_64_JUMP_SLOT\s+[0-9a-f]+\s+(\w+)", relocs))
    listed = bound_at_load()
    assert len(listed) >= 5
    for name in listed:
        assert name in glob_dat, f"{name} is not bound at load"
        assert name not in jump_slot, f"{name} also has a lazy PLT slot"
    assert len(jump_slot) > 40


@pytest.mark.parametrize("follow", ["parent", "child"])
def test_libc_hooks_call_nothing_lazy_on_the_host_stack(follow):
    """Every libc hook (socket, connect, send*, write*, dup*, fcntl, close, close_range, closefrom,
    fclose, fork, sigaction, signal, exit) on a tracked connection, on a thread of the host, then
    the exit report; following the forked child too (its use of the inherited connection, its
    reporter thread)."""
    calls, seen, out = host_calls([TOUR], "track=all", follow)
    assert calls == [], "\n".join(calls)
    assert seen > 50, out[-2000:]  # the exit report's calls, on its private stack
    # every CHECK in the tour held: the parent prints "ok" last (gdb's own lines may cut into it)
    assert "hook_tour:" not in out and re.search(r"(?<![a-z])ok\n", out), out[-3000:]
    if follow == "parent":
        assert "SUMMARY: leakshim: 1 leaked database connection" in out, out[-3000:]


@pytest.mark.parametrize("sample,server,args", [
    ("pq_errpath_leak", "pg", lambda s: [s.dsn, 3]),
    ("redis_leak", "redis_server", lambda s: [s.host, s.port, 3]),
    ("mysql_leak", "mariadb", lambda s: [s.host, s.port, s.user, s.password, 3]),
    ("mongoc_per_request_leak", "mongo", lambda s: [s.uri, 3]),
    ("mongoc_pool_leak", "mongo", lambda s: [s.uri, 3]),
], ids=["libpq", "hiredis", "mariadb", "mongoc-client", "mongoc-pool"])
def test_driver_hooks_call_nothing_lazy_on_the_host_stack(request, sample, server, args):
    """The C drivers' hooks (connect, checkout, close and free of clients and pools) on real
    servers: nothing through a lazy PLT slot on the host's stack."""
    srv = request.getfixturevalue(server)
    calls, seen, out = host_calls([SAMPLES / sample, *args(srv)], "")
    assert calls == [], "\n".join(calls)
    assert "leakshim: detected leaked database connections" in out, out[-3000:]


def test_python_drivers_call_nothing_lazy_on_the_host_stack(pg, redis_server):
    """psycopg2 and redis-py under CPython: the libc hooks under the interpreter are checked like
    any host's; only the Python bridge's own calls (hook_python.c) may bind lazily."""
    code = ("import sys, psycopg2, redis\n"
            "leaked = [psycopg2.connect(sys.argv[1]) for _ in range(2)]\n"
            "c = psycopg2.connect(sys.argv[1]); c.cursor().execute('select 1'); c.close()\n"
            "r = redis.Redis(host=sys.argv[2], port=int(sys.argv[3])); r.ping(); r.close()\n"
            "print('ok')\n")
    calls, seen, out = host_calls([PY, "-c", code, pg.dsn, redis_server.host, redis_server.port], "")
    assert calls == [], "\n".join(calls)
    assert "2 leaked database connections" in out, out[-3000:]

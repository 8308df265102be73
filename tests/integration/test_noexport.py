"""Driver hooks without driver exports: the shim reaches libpq, hiredis, libmongoc and MariaDB by
rewriting the import slots (GOT) of the objects that call them, at start-up and after each dlopen,
and exports none of their names. A program that probes for a driver (dlsym, weak references) sees
exactly what it sees without the shim; a driver brought in by a dlopen'ed object is still tracked;
dlopen keeps finding what its caller's RUNPATH finds.

Each run writes report=<tmp>/r.%p:format=both, so each test reads the reports of the processes it
started."""

import json
import re
import subprocess
from pathlib import Path

from helpers import PY, ROOT, SHIM, run_shim

PROGS = ROOT / "tests" / "integration" / "progs"
DRIVER_PREFIXES = ("PQ", "redis", "mongoc_", "mysql_")


def pq_flags():
    r = subprocess.run(["pkg-config", "--cflags", "--libs", "libpq"], capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else ["-I/usr/include/postgresql", "-lpq"]


def cc(*args):
    subprocess.run(["cc", "-g", "-O0", *map(str, args)], check=True)


def reports(directory):
    """[(text, json)] of every report in directory."""
    out = []
    for p in sorted(Path(directory).glob("r.*")):
        if p.suffix != ".json":
            out.append((p.read_text(), json.loads(Path(str(p) + ".json").read_text())))
    return out


def only_report(directory):
    reps = reports(directory)
    assert len(reps) == 1, [t for t, _ in reps]
    return reps[0]


def leak_groups(js):
    return [g for g in js["groups"] if g["leak"]]


def frames(js, stack_id):
    return js["stacks"][str(stack_id)]["frames"]


def run_with_report(tmp_path, argv, name="out", options="", env=None):
    out = tmp_path / name
    out.mkdir()
    opts = f"report={out}/r.%p:format=both" + (f":{options}" if options else "")
    return run_shim(argv, options=opts, env=env), out


PLUGIN_C = r"""
#include <libpq-fe.h>

/* Opens a connection and keeps it: the leak the report must show, at the marked line. */
int plugin_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo); /* CONNECT-LINE */
    return PQstatus(conn) == CONNECTION_OK ? 0 : -1;
}
"""


def build_plugin(directory, name="plugin.so"):
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / "plugin.c"
    src.write_text(PLUGIN_C)
    cc("-shared", "-fPIC", "-o", directory / name, src, *pq_flags())
    line = next(i for i, l in enumerate(PLUGIN_C.splitlines(), 1) if "CONNECT-LINE" in l)
    return directory / name, line


def addr2line(module, offset):
    """file:line of the call before a return address (module-relative hex offset)."""
    pc = int(offset, 16) - 1
    r = subprocess.run(["addr2line", "-e", str(module), hex(pc)], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def assert_libpq_leak_at_plugin_line(js, plugin, line, count=1):
    groups = leak_groups(js)
    assert sum(g["count"] for g in groups) == count, groups
    for g in groups:
        assert (g["category"], g["driver"]) == ("handle-leak", "libpq"), g
        fr = frames(js, g["stack"])
        mine = [f for f in fr if f.get("symbol") == "plugin_connect"]
        assert mine, [f.get("symbol") for f in fr]
        # the innermost frame of the program's code is the plugin's call, at its line
        assert fr.index(mine[0]) == min(i for i, f in enumerate(fr) if "libleakshim" not in (f["module"] or ""))
        where = addr2line(plugin, mine[0]["offset"])
        assert where.endswith(f"plugin.c:{line}"), where


# ---------------------------------------------------------------- what a probe sees


def test_shim_exports_no_driver_name():
    out = subprocess.run(["nm", "-D", "--defined-only", str(SHIM)], capture_output=True, text=True, check=True)
    names = {l.split()[-1] for l in out.stdout.splitlines() if l.strip()}
    assert not [n for n in names if n.startswith(DRIVER_PREFIXES)], sorted(names)
    assert {"dlopen", "socket", "connect", "close"} <= names


def test_shim_exports_only_libc_hooks_and_its_api():
    """The version script's list, nothing else: the libc functions hooked, __libc_start_main and
    exit (the program's own exit status, for exitcode=), the send/write family (first use of a
    socket shared across fork), and the public API (leakshim_*)."""
    out = subprocess.run(["nm", "-D", "--defined-only", str(SHIM)], capture_output=True, text=True, check=True)
    names = {l.split()[-1] for l in out.stdout.splitlines() if l.strip()}
    hooks = {"socket", "connect", "close", "dup", "dup2", "dup3", "fcntl", "fcntl64", "close_range", "closefrom",
             "fclose", "fork", "sigaction", "signal", "dlopen", "dlmopen", "__libc_start_main", "exit",
             "send", "sendto", "sendmsg", "write", "writev"}
    assert {n for n in names if not n.startswith("leakshim_")} <= hooks, sorted(names)
    assert {"leakshim_set_context", "leakshim_live_since", "leakshim_creations"} <= names


def test_probe_without_any_driver_sees_none_bare_or_shimmed(tmp_path):
    """The reported bug: under the shim, a program without libpq found PQconnectdb (the shim's)."""
    prog = PROGS / "noexport_probe"
    bare = subprocess.run([str(prog)], capture_output=True, text=True, check=True)
    shim, out = run_with_report(tmp_path, [prog])
    assert (shim.returncode, shim.stdout) == (0, bare.stdout), shim.stderr
    assert "present" not in bare.stdout and bare.stdout.count("absent") == 13, bare.stdout
    text, js = only_report(out)
    assert js["summary"]["leaks"] == 0, text


def test_probe_with_libpq_finds_libpq_and_its_weak_call_is_hooked(tmp_path, pg):
    """Linked with libpq: dlsym finds libpq's own definition, not the shim; the program's call
    through its weak reference still reaches the hook and the leak is reported at main."""
    exe = tmp_path / "probe_pq"
    cc("-o", exe, PROGS / "noexport_probe.c", "-Wl,--no-as-needed", *pq_flags())  # weak refs only
    bare = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    assert "dlsym PQconnectdb: libpq.so.5" in bare.stdout and "weak PQconnectdb: present" in bare.stdout
    assert "dlsym redisConnect: absent" in bare.stdout
    shim, _ = run_with_report(tmp_path, [exe], name="probe")
    assert shim.stdout == bare.stdout, shim.stderr
    shim, out = run_with_report(tmp_path, [exe, pg.dsn], name="connect")
    assert shim.returncode == 0 and "PQconnectdb: connected" in shim.stdout, shim.stdout + shim.stderr
    text, js = only_report(out)
    (g,) = leak_groups(js)
    assert (g["category"], g["driver"], g["count"]) == ("handle-leak", "libpq", 1), g
    assert "main" in [f.get("symbol") for f in frames(js, g["stack"])]


# ---------------------------------------------------------------- drivers loaded at run time


def test_plugin_dlopened_rtld_local_is_patched_and_attributed(tmp_path, pg):
    """libpq arrives with a dlopen'ed plugin (as with psycopg2's _psycopg.so): the plugin's GOT is
    patched after dlopen, and its connection is libpq's, created at the plugin's line."""
    plugin, line = build_plugin(tmp_path / "build")
    r, out = run_with_report(tmp_path, [PROGS / "noexport_dlhost", plugin, pg.dsn])
    assert (r.returncode, r.stdout) == (0, "round 0: connected\n"), r.stderr
    text, js = only_report(out)
    assert_libpq_leak_at_plugin_line(js, plugin, line)
    assert "1 libpq handle (PGconn) never freed" in text


def test_plugin_unloaded_and_reloaded_is_patched_again(tmp_path, pg):
    """dlclose + dlopen maps the plugin afresh (likely at the same address, with a fresh GOT): the
    patcher's memo must not take it for the object it already patched."""
    plugin, line = build_plugin(tmp_path / "build")
    r, out = run_with_report(tmp_path, [PROGS / "noexport_dlhost", plugin, pg.dsn, 3])
    expected = "round 0: connected\nround 0: unloaded after dlclose\n"
    expected += "round 1: connected\nround 1: unloaded after dlclose\nround 2: connected\n"
    assert (r.returncode, r.stdout) == (0, expected), r.stderr
    text, js = only_report(out)
    assert_libpq_leak_at_plugin_line(js, plugin, line, count=3)


def test_plugin_loaded_by_python_ctypes(tmp_path, pg):
    plugin, line = build_plugin(tmp_path / "build")
    script = f"import ctypes; p = ctypes.CDLL({str(plugin)!r}); print(p.plugin_connect({pg.dsn.encode()!r}))"
    r, out = run_with_report(tmp_path, [PY, "-c", script])
    assert (r.returncode, r.stdout) == (0, "0\n"), r.stderr
    text, js = only_report(out)
    groups = leak_groups(js)
    assert [(g["category"], g["driver"], g["count"]) for g in groups] == [("handle-leak", "libpq", 1)], text


def test_dlsym_pointers_are_the_real_functions(tmp_path, pg):
    """The documented limit: a pointer from dlsym() on the libpq handle is libpq's own function, with
    no import slot in between. PQconnectdb through it is still seen, one level down (libpq calls
    PQconnectStart through its own, patched, PLT: the top frame is libpq's PQconnectdb); PQfinish
    through it is not, so the handle outlives its socket. LD_PRELOAD never saw these either."""
    argv = [PROGS / "noexport_dlhost", "--dlsym", pg.dsn]
    r, out = run_with_report(tmp_path, argv, name="leak")
    assert (r.returncode, r.stdout) == (0, "PQconnectdb via dlsym: connected\n"), r.stderr
    text, js = only_report(out)
    (g,) = leak_groups(js)
    assert (g["category"], g["driver"]) == ("handle-leak", "libpq"), text
    top = frames(js, g["stack"])[0]
    assert top["symbol"] == "PQconnectdb" and "libpq.so" in top["module"], top
    r, out = run_with_report(tmp_path, [*argv, "finish"], name="finish")
    assert r.returncode == 0 and r.stdout.endswith("PQfinish via dlsym\n"), r.stderr
    text, js = only_report(out)
    assert [g["category"] for g in leak_groups(js)] == ["closed-under-handle"], text


# ---------------------------------------------------------------- dlopen keeps its caller's semantics


def test_bare_name_dlopen_still_searches_the_callers_runpath(tmp_path, pg):
    """glibc searches a bare name along the RUNPATH of dlopen's caller; the shim's dlopen must not
    make that the shim's (ASan's and heaptrack's dlopen hooks break such plugin hosts)."""
    plugin, line = build_plugin(tmp_path / "app" / "plugins", name="libnoexport_plugin.so")
    host = tmp_path / "app" / "host"
    cc("-o", host, PROGS / "noexport_dlhost.c", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/plugins")
    dyn = subprocess.run(["readelf", "-d", str(host)], capture_output=True, text=True).stdout
    assert re.search(r"\(RUNPATH\).*\$ORIGIN/plugins", dyn), dyn
    argv = [host, "libnoexport_plugin.so", pg.dsn, 2]  # found, unloaded (no stray reference), again
    bare = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    expected = "round 0: connected\nround 0: unloaded after dlclose\nround 1: connected\n"
    assert (bare.returncode, bare.stdout) == (0, expected), bare.stdout + bare.stderr
    r, out = run_with_report(tmp_path, argv)
    assert (r.returncode, r.stdout) == (0, bare.stdout), r.stderr
    text, js = only_report(out)
    assert_libpq_leak_at_plugin_line(js, plugin, line, count=2)
    # a name found nowhere fails with the loader's own message, as without the shim
    argv = [host, "libnoexport_missing.so", pg.dsn]
    bare = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    r, _ = run_with_report(tmp_path, argv, name="missing")
    assert bare.returncode == 3 and "libnoexport_missing.so: cannot open shared object file" in bare.stdout
    assert (r.returncode, r.stdout) == (bare.returncode, bare.stdout)

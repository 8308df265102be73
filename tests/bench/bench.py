"""`make bench`: side-by-side measurements in one run, printed as ratios. Not a test: nothing here
asserts a time. Starts its own Redis (and PostgreSQL/MongoDB for the driver benches) on spare
loopback ports through the integration harness's server classes."""

import importlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from conftest import RedisServer  # noqa: E402
from helpers import SHIM  # noqa: E402

BENCH = ROOT / "tests" / "bench"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
N = int(os.environ.get("BENCH_N", "20000"))


def clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS")}


def timed(argv, env, prefix=()):
    """Runs the benchmark client; it prints its own loop time (process start-up excluded)."""
    out = subprocess.run(list(prefix) + [str(a) for a in argv], env=env, capture_output=True, text=True,
                         check=True).stdout
    return float(out.strip().splitlines()[-1])


def connect_ping(results, redis):
    argv = [BENCH / "connect_ping", "127.0.0.1", redis.port, N]
    shim_env = dict(clean_env(), LD_PRELOAD=str(SHIM), LEAKSHIM_OPTIONS=f"ports=+{redis.port}:report=/dev/null")
    bare, shim = [], []
    for _ in range(ROUNDS):  # interleaved, so machine noise hits both alike
        bare.append(timed(argv, clean_env()))
        shim.append(timed(argv, shim_env))
    b, s = statistics.median(bare), statistics.median(shim)
    results.append((f"(a) {N} x connect+PING+close to Redis", b, s))
    # valgrind is ~two orders of magnitude slower: a tenth of the loop, compared per operation
    vn = max(N // 10, 100)
    v = timed([BENCH / "connect_ping", "127.0.0.1", redis.port, vn], clean_env(),
              prefix=["valgrind", "-q", "--track-fds=yes"]) * N / vn
    print(f"(a) per op: bare {b / N * 1e6:.1f} us, shim {s / N * 1e6:.1f} us, "
          f"valgrind --track-fds=yes {v / N * 1e6:.1f} us (from {vn} ops)")
    print(f"    ratios: shim/bare {s / b:.3f}   shim/valgrind {s / v:.4f}   valgrind/bare {v / b:.1f}")


def core_cost():
    out = subprocess.run([str(BENCH / "core_cost"), "100000"], capture_output=True, text=True, check=True)
    vals, rows = {}, []
    for line in out.stdout.splitlines():
        f = line.split()
        if f[0] == "dump":  # dump THREAD N name=value...
            rows.append((f[1], int(f[2]), dict(kv.split("=") for kv in f[3:])))
        elif len(f) == 2:
            vals[f[0]] = f[1]
    print(f"(b) shim's own cost per socket (socket+connect+close hooks, stack capture and one fstat "
          f"included): {float(vals['per_socket_us']):.2f} us")
    print(f"    32-frame native stack capture: {float(vals['capture32_us']):.3f} us "
          f"(unwind alone {float(vals['unwind32_us']):.3f} us)")
    print(f"    close() of an untracked fd: {float(vals['untracked_close_ns']):.1f} ns added")
    print("(c) snapshot of N live tracked TCP connections (kernel check, local address, idle time), "
          "us per socket,\n    medians of 5; lock wait = worst wait of a host thread for the registry lock, ms")
    print("    %-27s %6s %8s %8s %9s %8s %12s %12s" % ("thread", "N", "before", "now", "sock_diag", "report",
                                                     "wait before", "wait now"))
    where = {"host": "exit report (host thread)", "reporter": "leakshim dump (reporter)"}
    for thread, n, v in sorted(rows, key=lambda r: (r[1], r[0])):
        print("    %-27s %6d %8.2f %8.2f %9.2f %8.2f %12.1f %12.1f" % (
            where[thread], n, float(v["old"]), float(v["per_socket"]), float(v["diag"]), float(v["report"]),
            float(v["old_wait_ms"]), float(v["per_socket_wait_ms"])))
    print("    before: the old snapshot's system calls and lock holds, replayed; now: the snapshot as built "
          "(per socket on\n    the checked fd); sock_diag: the same with local address and idle time from "
          "sock_diag dumps; report: the\n    whole text+JSON report, snapshot included. "
          f"Largest N is the fd limit here ({max(r[1] for r in rows)}).")
    print(f"    formatting one address and one integer: snprintf+inet_ntop {float(vals['fmt_printf_ns']):.0f} ns, "
          f"ls_addr_format+ls_buf_u64 {float(vals['fmt_fast_ns']):.0f} ns")
    if out.stderr.strip():
        print("    " + out.stderr.strip())
    callgrind_counts()


def timeline_cost():
    """One timeline sample (interval=, default 1 s) with N tracked sockets, against a snapshot's
    copy of the registry. The sample holds the registry lock throughout: its time is also the
    longest a host thread connecting or closing meanwhile can wait."""
    out = subprocess.run([str(BENCH / "timeline_cost")], capture_output=True, text=True, check=True).stdout
    print("\ntimeline sample (always on, every interval= s):")
    print("  %8s %14s %18s %18s" % ("sockets", "sample us", "snapshot(0) us", "share of 1 s"))
    for line in out.splitlines():
        f = line.split()
        if f[0] == "timeline":
            n, sample, snap = int(f[1]), float(f[2]), float(f[3])
            print("  %8d %14.1f %18.1f %17.4f%%" % (n, sample, snap, sample / 1e6 * 100))
        elif f[0] == "ring_bytes":
            print(f"  ring: {int(f[1]) // 1024} KiB, fixed (.bss, touched as it fills)")


def callgrind_counts():
    """User-space instructions per socket (callgrind, host thread: valgrind has no pidfd_getfd)."""
    try:
        subprocess.run(["valgrind", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        print("    (valgrind missing: no instruction counts)")
        return
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.%p",
                        str(BENCH / "core_cost"), "100000", "--callgrind"],
                       capture_output=True, text=True, check=True)
        ir = {}
        for f in Path(d).iterdir():
            text = f.read_text(errors="replace")
            m = re.search(r"^desc: Trigger: Client Request: (\S+) (\d+)$", text, re.M)
            t = re.search(r"^totals: (\d+)", text, re.M)
            if m and t:
                ir[(m.group(1), int(m.group(2)))] = int(t.group(1))
    counts = sorted({n for (name, n) in ir if name in ("old", "per_socket", "diag", "report")})
    print("    user-space instructions per socket (callgrind, host thread; system calls not included):")
    for n in counts:
        print("      N=%-6d before %6.0f  now %6.0f  sock_diag %6.0f  report %7.0f" % (
            n, ir[("old", n)] / n, ir[("per_socket", n)] / n, ir[("diag", n)] / n, ir[("report", n)] / n))
    if ("fmt_printf", 20000) in ir:
        print("      one address + one integer: snprintf+inet_ntop %.0f, ls_addr_format+ls_buf_u64 %.0f" % (
            ir[("fmt_printf", 20000)] / 20000, ir[("fmt_fast", 20000)] / 20000))
    print("    system calls per socket: before 3 (exit report) / 7 (leakshim dump); now 3 / 4 (+1 close_range "
          "per 256);\n    with sock_diag 1 / 2 (+1 recvmsg per ~70 sockets)")


def hold_conns_bin():
    """tests/bench/hold_conns, built here when the Makefile has not."""
    exe = BENCH / "hold_conns"
    src = BENCH / "hold_conns.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        build = ROOT / "build" / "bench"
        build.mkdir(parents=True, exist_ok=True)
        exe = build / "hold_conns"
        subprocess.run([os.environ.get("CC", "cc"), "-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra",
                        "-Werror", "-o", str(exe), str(src)], check=True)
    return exe


def dump_end_to_end():
    """`leakshim dump PID` as a user runs it: tool start, the reporter thread's snapshot and render,
    the transfer; on a shimmed process holding 100 and then as many connections as the fd limit
    lets it."""
    tool = ROOT / "tools" / "leakshim"
    env = dict(clean_env(), LD_PRELOAD=str(SHIM), LEAKSHIM_OPTIONS="track=all:report=/dev/null")
    print("(d) `leakshim dump PID` end to end (tool start and transfer included), medians of %d" % ROUNDS)
    for want in (100, 1000000):
        p = subprocess.Popen([str(hold_conns_bin()), str(want)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)
        try:
            p.stdout.readline()
            p.stdin.write("go\n")
            p.stdin.flush()
            n = int(p.stdout.readline().split()[0])
            res = []
            for mode in ([], ["--json"]):
                ts = []
                for _ in range(ROUNDS):
                    t0 = time.perf_counter()
                    subprocess.run([str(tool), "dump", *mode, str(p.pid)], stdout=subprocess.DEVNULL, check=True)
                    ts.append(time.perf_counter() - t0)
                res.append(statistics.median(ts))
            print("    %6d sockets: text %7.1f ms (%5.2f us/socket), JSON %7.1f ms (%5.2f us/socket)" % (
                n, res[0] * 1e3, res[0] / n * 1e6, res[1] * 1e3, res[1] / n * 1e6))
        finally:
            p.stdin.write("x\n")
            p.stdin.flush()
            p.wait()


def main():
    results = []
    redis = RedisServer().start()
    try:
        print("leakshim benchmarks (medians of %d interleaved rounds)\n" % ROUNDS)
        connect_ping(results, redis)
        core_cost()
        timeline_cost()
        dump_end_to_end()
    finally:
        redis.stop()
        redis.cleanup()
    for mod in ("bench_drivers", "bench_python"):
        if (BENCH / f"{mod}.py").exists():
            importlib.import_module(mod).run(results)
    instr = {}
    if os.environ.get("BENCH_CALLGRIND", "1") != "0":
        importlib.import_module("callgrind").run(results, instr)
    print("\n%-58s %10s %10s %8s %8s" % ("benchmark (time: medians; instr: callgrind)", "bare s", "shim s",
                                         "time", "instr"))
    for name, b, s in results:
        ir = next((f"{r:8.3f}" for k, r in instr.items() if k in name), "       -")
        print("%-58s %10.3f %10.3f %8.3f %s" % (name, b, s, s / b, ir))


if __name__ == "__main__":
    main()

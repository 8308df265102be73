"""`make bench`: side-by-side measurements in one run, printed as ratios. Not a test: nothing here
asserts a time. Starts its own Redis (and PostgreSQL/MongoDB for the driver benches) on spare
loopback ports through the integration harness's server classes."""

import importlib
import os
import statistics
import subprocess
import sys
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
    vals = dict(l.split() for l in out.stdout.splitlines())
    print(f"(b) shim's own cost per socket (socket+connect+close hooks, stack capture and one fstat "
          f"included): {float(vals['per_socket_us']):.2f} us")
    print(f"    32-frame native stack capture: {float(vals['capture32_us']):.3f} us "
          f"(unwind alone {float(vals['unwind32_us']):.3f} us)")
    print(f"    close() of an untracked fd: {float(vals['untracked_close_ns']):.1f} ns added")
    n = int(vals["dump_sockets"])
    ms = float(vals["dump_ms"])
    print(f"(c) snapshot of {n} live tracked sockets (text + JSON): {ms:.0f} ms "
          f"({ms / n * 1000:.2f} us/socket; kernel check alone {float(vals['kernel_check_ms']):.0f} ms)"
          + ("" if n >= 100000 else f"; fd limit here, 100k extrapolated: {ms / n * 100000:.0f} ms"))
    if out.stderr.strip():
        print("    " + out.stderr.strip())


def main():
    results = []
    redis = RedisServer().start()
    try:
        print("leakshim benchmarks (medians of %d interleaved rounds)\n" % ROUNDS)
        connect_ping(results, redis)
        core_cost()
    finally:
        redis.stop()
        redis.cleanup()
    for mod in ("bench_drivers", "bench_python"):
        if (BENCH / f"{mod}.py").exists():
            importlib.import_module(mod).run(results)
    print("\n%-58s %10s %10s %8s" % ("benchmark", "bare s", "shim s", "ratio"))
    for name, b, s in results:
        print("%-58s %10.3f %10.3f %8.3f" % (name, b, s, s / b))


if __name__ == "__main__":
    main()

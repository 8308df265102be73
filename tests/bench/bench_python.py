"""Python benchmarks for `make bench` (issue 4): a psycopg2 connect/SELECT 1/close loop and a
redis-py connect loop, bare vs shim side by side, and the cost of one captured Python stack of
~30 frames. Not a test: nothing asserts a time. `run(results)` appends (name, bare_s, shim_s);
it starts its own PostgreSQL and Redis on spare loopback ports.

Targets (issue 4): psycopg2 loop shim/bare <= 1.05; <= 5 us per captured 30-frame stack.
"""

import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from conftest import PostgresServer, RedisServer  # noqa: E402
from helpers import PY, SHIM  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
PG_N = int(os.environ.get("BENCH_PG_N", "300"))
REDIS_N = int(os.environ.get("BENCH_REDIS_N", "3000"))

# Each client prints its own loop time (interpreter start-up excluded). DEPTH wraps the loop in
# that many Python frames, so connects are captured ~DEPTH frames deep.
CLIENT = r'''
import sys, time
kind, n, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if kind == "pg":
    import psycopg2
    dsn = sys.argv[4]
    def once():
        conn = psycopg2.connect(dsn)
        cur = conn.cursor(); cur.execute("SELECT 1"); cur.fetchone(); cur.close()
        conn.close()
else:
    import redis
    host, port = sys.argv[4], int(sys.argv[5])
    def once():
        r = redis.Redis(host=host, port=port)
        r.ping()
        r.connection_pool.disconnect()
def loop():
    once()  # warm-up: imports, first connect
    t0 = time.perf_counter()
    for _ in range(n):
        once()
    return time.perf_counter() - t0
def nest(k):
    return nest(k - 1) if k > 0 else loop()
print(nest(depth))
'''

# The hook's own cost: leakshim_pystack_bench() captures the caller's Python stack repeatedly.
# PyDLL keeps the GIL (the walk alone); CDLL releases it, so each capture also re-takes the GIL
# with PyGILState_Ensure (the path of a driver connecting in C, like psycopg2 over libpq).
CAPTURE = r'''
import ctypes, sys
depth, iters = int(sys.argv[1]), int(sys.argv[2])
def measure(lib):
    f = lib.leakshim_pystack_bench
    f.restype = ctypes.c_double
    f.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    frames = ctypes.c_int(0)
    f(1000, ctypes.byref(frames))  # warm the code cache
    return f(iters, ctypes.byref(frames)), frames.value
def nest(k):
    if k > 0:
        return nest(k - 1)
    held = measure(ctypes.PyDLL(None))
    released = measure(ctypes.CDLL(None))
    print(held[0], released[0], held[1])
nest(depth)
'''


def _env(shim, options=""):
    e = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS")}
    if shim:
        e["LD_PRELOAD"] = str(SHIM)
        e["LEAKSHIM_OPTIONS"] = options or "report=/dev/null"
    return e


def _timed(args, shim):
    out = subprocess.run([PY, "-c", CLIENT, *map(str, args)], env=_env(shim), capture_output=True,
                         text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _side_by_side(args):
    bare, shim = [], []
    for _ in range(ROUNDS):  # interleaved, so machine noise hits both alike
        bare.append(_timed(args, False))
        shim.append(_timed(args, True))
    return statistics.median(bare), statistics.median(shim)


def run(results):
    pg = PostgresServer().start()
    redis = RedisServer().start()
    try:
        print("\nPython (medians of %d interleaved rounds)" % ROUNDS)
        b, s = _side_by_side(["pg", PG_N, 1, pg.dsn])
        results.append((f"py: {PG_N} x psycopg2 connect+SELECT 1+close", b, s))
        print(f"  psycopg2 connect/query/close: bare {b / PG_N * 1e6:.0f} us, shim {s / PG_N * 1e6:.0f} us "
              f"per loop, ratio {s / b:.3f} (target <= 1.05)")

        b1, s1 = _side_by_side(["redis", REDIS_N, 1, redis.host, redis.port])
        results.append((f"py: {REDIS_N} x redis-py connect+PING+disconnect", b1, s1))
        b30, s30 = _side_by_side(["redis", REDIS_N, 30, redis.host, redis.port])
        results.append((f"py: same, 30 Python frames deeper", b30, s30))
        print(f"  redis-py connect/PING/disconnect: bare {b1 / REDIS_N * 1e6:.1f} us, shim "
              f"{s1 / REDIS_N * 1e6:.1f} us per loop (ratio {s1 / b1:.3f}); 30 frames deeper: "
              f"bare {b30 / REDIS_N * 1e6:.1f} us, shim {s30 / REDIS_N * 1e6:.1f} us (ratio {s30 / b30:.3f})")
        extra = ((s30 - b30) - (s1 - b1)) / REDIS_N * 1e6
        print(f"  added per connect by 30 more Python frames: {extra:.2f} us "
              f"(3 Python stacks per connect: connection handle, checkout, release)")

        out = subprocess.run([PY, "-c", CAPTURE, "26", "20000"], env=_env(True), capture_output=True,
                             text=True, check=True).stdout.split()
        held, released, frames = float(out[0]), float(out[1]), int(out[2])
        print(f"  one Python stack capture, {frames} frames: {held:.2f} us with the GIL held, "
              f"{released:.2f} us when the GIL must be taken (target <= 5 us)")
    finally:
        for srv in (redis, pg):
            srv.stop()
            srv.cleanup()


if __name__ == "__main__":
    res = []
    run(res)
    for name, b, s in res:
        print("%-58s %10.3f %10.3f %8.3f" % (name, b, s, s / b))

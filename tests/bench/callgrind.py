"""Instruction counts with valgrind's callgrind: deterministic where timings on a shared VM vary
by +-30%. A loop's cost is the difference between a run of n + n/10 iterations and a run of n/10
(start-up, teardown and one-time costs cancel), so `loop_ratio` compares shim and bare on the loop alone and `run_ratio`
on whole processes (start-up). Used by `make bench`; not a test."""

import os
import re
import subprocess
import tempfile
from pathlib import Path

_TOTAL = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)


def instructions(argv, env):
    env = dict(env, PYTHONHASHSEED="0")  # dict and set layouts the same in every run
    """Total instructions (Ir) the process and its threads executed, children not followed."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "cg.out"
        subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=no", f"--callgrind-out-file={out}",
                        *map(str, argv)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        total = 0
        for f in Path(d).glob("cg.out*"):
            m = _TOTAL.search(f.read_bytes())
            if m:
                total += int(m.group(1))
        return total


def loop_cost(argv_for, n, env):
    """Instructions of n iterations: a run of n + n/10 minus a run of n/10. The base run makes a
    connection too, so one-time costs that the first connection brings (loading libdw to name the
    frames of an exit report) cancel as well as start-up does."""
    base = max(1, n // 10)
    return instructions(argv_for(n + base), env) - instructions(argv_for(base), env)


def loop_ratio(argv_for, n, bare_env, shim_env):
    b = loop_cost(argv_for, n, bare_env)
    s = loop_cost(argv_for, n, shim_env)
    return b, s, s / b


def run_ratio(argv, bare_env, shim_env):
    b = instructions(argv, bare_env)
    s = instructions(argv, shim_env)
    return b, s, s / b


def shim_env(shim, options="report=/dev/null"):
    e = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS")}
    e["LD_PRELOAD"] = str(shim)
    e["LEAKSHIM_OPTIONS"] = options
    return e


def bare_env():
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS")}


def run(results, instr):
    """`make bench`'s instruction-count section: the same loops as the timed benchmarks and the
    start-up of processes that never open a socket, shim/bare in instructions. instr maps a
    substring of a timed result's name to its instruction ratio (the summary table's last column)."""
    import sys
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "tests" / "integration"))
    from conftest import PostgresServer, RedisServer
    from helpers import PY, SHIM
    import bench_python as bp

    n_c, n_py = 2000, 200
    bare = bare_env()
    pg, redis = PostgresServer().start(), RedisServer().start()
    rows = []
    try:
        c_args = lambda n: [root / "tests" / "bench" / "connect_ping", "127.0.0.1", redis.port, n]  # noqa: E731
        rows.append(("C: connect+PING+close to Redis, per op", n_c, "connect+PING+close to Redis",
                     loop_ratio(c_args, n_c, bare, shim_env(SHIM, f"ports=+{redis.port}:report=/dev/null"))))
        py_redis = lambda n: [PY, "-c", bp.CLIENT, "redis", n, 1, redis.host, redis.port]  # noqa: E731
        rows.append(("py: redis-py connect+PING+disconnect, per op", n_py, "redis-py connect",
                     loop_ratio(py_redis, n_py, bare, shim_env(SHIM))))
        py_pg = lambda n: [PY, "-c", bp.CLIENT, "pg", n, 1, pg.dsn]  # noqa: E731
        rows.append(("py: psycopg2 connect+SELECT 1+close, per op", n_py, "psycopg2 connect",
                     loop_ratio(py_pg, n_py, bare, shim_env(SHIM))))
        py_id = lambda n: [PY, "-c", "import sys\nfor i in range(int(sys.argv[1])): id(i)", n]  # noqa: E731
        rows.append(("py: id() (an audited event), per call", 100000, None,
                     loop_ratio(py_id, 100000, bare, shim_env(SHIM))))
        # Start-up as in every process a suite starts under the shim: default options (a report
        # asked for by path would be written, empty, at exit: a different cost).
        for argv in (["/bin/true"], [PY, "-c", "pass"]):
            rows.append(("start-up: " + " ".join(map(str, argv)), 1, None, run_ratio(argv, bare, shim_env(SHIM, ""))))
    finally:
        for srv in (redis, pg):
            srv.stop()
            srv.cleanup()
    print("\nInstructions (valgrind callgrind; deterministic where timings vary): shim/bare")
    print("  %-52s %12s %12s %8s" % ("", "bare", "shim", "ratio"))
    for name, n, key, (b, s, r) in rows:
        print("  %-52s %12d %12d %8.3f" % (name, b / n, s / n, r))
        if key:
            instr[key] = r

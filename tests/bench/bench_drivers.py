"""Driver benchmarks for `make bench` (issue 3): a libpq connect / SELECT 1 / PQfinish loop and a
libmongoc pool pop / ping / push loop, bare vs shim, interleaved rounds in one run. Not a test:
nothing asserts a time. `run(results)` appends (name, bare_s, shim_s); it starts its own
PostgreSQL and MongoDB-wire server on spare loopback ports and builds its two small C clients in a
temporary directory. Target (issue 3): shim/bare <= 1.03.

Each client prints its own loop time (process start-up, the warm-up round and the exit report
are outside it).
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from conftest import MongoServer, PostgresServer  # noqa: E402
from helpers import SHIM  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
PQ_N = int(os.environ.get("BENCH_PQ_N", "50"))
MONGO_N = int(os.environ.get("BENCH_MONGO_N", "10000"))

PQ_LOOP_C = r"""
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void once(const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK) { fprintf(stderr, "%s", PQerrorMessage(c)); exit(1); }
    PGresult *r = PQexec(c, "SELECT 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) { fprintf(stderr, "%s", PQerrorMessage(c)); exit(1); }
    PQclear(r);
    PQfinish(c);
}
int main(int argc, char **argv)
{
    int n = atoi(argv[2]);
    once(argv[1]);
    double t0 = now();
    for (int i = 0; i < n; i++)
        once(argv[1]);
    printf("%.6f\n", now() - t0);
    return 0;
}
"""

MONGO_LOOP_C = r"""
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void once(mongoc_client_pool_t *pool, const bson_t *cmd)
{
    bson_error_t err;
    mongoc_client_t *c = mongoc_client_pool_pop(pool);
    if (!mongoc_client_command_simple(c, "admin", cmd, NULL, NULL, &err)) { fprintf(stderr, "%s\n", err.message); exit(1); }
    mongoc_client_pool_push(pool, c);
}
int main(int argc, char **argv)
{
    int n = atoi(argv[2]);
    mongoc_init();
    mongoc_uri_t *uri = mongoc_uri_new(argv[1]);
    mongoc_client_pool_t *pool = mongoc_client_pool_new(uri);
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    once(pool, cmd);
    double t0 = now();
    for (int i = 0; i < n; i++)
        once(pool, cmd);
    printf("%.6f\n", now() - t0);
    bson_destroy(cmd);
    mongoc_client_pool_destroy(pool);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
    return 0;
}
"""


def pkg_flags(pkg, fallback):
    r = subprocess.run(["pkg-config", "--cflags", "--libs", pkg], capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else fallback


def build(tmp, name, source, flags):
    src = Path(tmp) / f"{name}.c"
    src.write_text(source)
    exe = Path(tmp) / name
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src), *flags], check=True)
    return exe


def clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS")}


def shim_env():
    return dict(clean_env(), LD_PRELOAD=str(SHIM), LEAKSHIM_OPTIONS="report=/dev/null")


def timed(argv, env):
    out = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def side_by_side(results, name, argv, n):
    bare, shim = [], []
    for _ in range(ROUNDS):  # interleaved, so machine noise hits both alike
        bare.append(timed(argv, clean_env()))
        shim.append(timed(argv, shim_env()))
    b, s = statistics.median(bare), statistics.median(shim)
    results.append((name, b, s))
    print(f"{name}: bare {b / n * 1e6:.0f} us/op, shim {s / n * 1e6:.0f} us/op, ratio {s / b:.3f} "
          f"(spread bare {min(bare):.3f}-{max(bare):.3f} s, shim {min(shim):.3f}-{max(shim):.3f} s)")


def run(results):
    tmp = tempfile.mkdtemp(prefix="leakshim-bench-drivers-")
    pg = mongo = None
    try:
        pq_loop = build(tmp, "pq_loop", PQ_LOOP_C, pkg_flags("libpq", ["-I/usr/include/postgresql", "-lpq"]))
        mongo_loop = build(tmp, "mongo_loop", MONGO_LOOP_C, pkg_flags("libmongoc-1.0", []))
        pg = PostgresServer().start()
        mongo = MongoServer().start()
        print()
        side_by_side(results, f"{PQ_N} x libpq connect+SELECT 1+PQfinish", [pq_loop, pg.dsn, PQ_N], PQ_N)
        side_by_side(results, f"{MONGO_N} x libmongoc pool pop+ping+push", [mongo_loop, mongo.uri, MONGO_N],
                     MONGO_N)
    finally:
        for srv in (pg, mongo):
            if srv:
                srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    res = []
    run(res)
    for name, b, s in res:
        print("%-58s %10.3f %10.3f %8.3f" % (name, b, s, s / b))

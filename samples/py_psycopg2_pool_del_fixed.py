#!/usr/bin/python3
"""Fixed py_psycopg2_pool_del.py: every request returns its connection in a `with` block (a
finally, not __del__), and the pool is closed at shutdown. Same load, no exhaustion; under
leakshim the exit report says no leak.

    usage: py_psycopg2_pool_del_fixed.py DSN [MAXCONN] [THREADS] [REQUESTS]
    (SimpleConnectionPool never waits: more threads than MAXCONN get "pool exhausted" by design)
    env:   PG_DSN (used when no DSN is given)
"""
import contextlib
import gc
import os
import sys
import threading

import psycopg2.pool

gc.disable()  # as in the leaky version: the fix must not depend on the collector

pool = None
pool_lock = threading.Lock()


@contextlib.contextmanager
def pooled_connection():
    with pool_lock:
        conn = pool.getconn()
    try:
        yield conn
    finally:
        with pool_lock:
            pool.putconn(conn)


def handle_request(i):
    with pooled_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT %s::int + 1", (i,))
        return cur.fetchone()[0]


def main(argv):
    global pool
    dsn = argv[0] if argv else os.environ.get("PG_DSN", "")
    maxconn = int(argv[1]) if len(argv) > 1 else 4
    nthreads = int(argv[2]) if len(argv) > 2 else 4
    requests = int(argv[3]) if len(argv) > 3 else 200
    # minconn = maxconn: putconn() closes a returned connection when minconn are already idle,
    # which would turn the pool into a connect-per-request churn.
    pool = psycopg2.pool.SimpleConnectionPool(maxconn, maxconn, dsn)
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            handle_request(i)

    threads = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.closeall()  # shutdown
    print(f"served {requests} requests", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

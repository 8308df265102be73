#!/usr/bin/python3
"""Seed: psycopg2 SimpleConnectionPool whose connections go back only from __del__.

Each request wraps its pooled connection in a RequestContext that returns it to the pool in
__del__. The context also points at itself (the kind of cycle a callback registry or a parent
pointer creates), so reference counting never frees it and __del__ only runs if the cyclic
garbage collector gets to it. Under concurrent load the pool runs dry: "connection pool
exhausted".

    usage: py_psycopg2_pool_del.py DSN [MAXCONN] [THREADS]
    env:   PG_DSN (used when no DSN is given)
    stdin: after the pool is exhausted the service prints "STUCK" and waits for a line (or EOF)
           on stdin before it exits, so a snapshot can be taken while it is stuck.

Under leakshim, `leakshim dump PID` while it is stuck lists MAXCONN connections checked out of
the pool, oldest first, each checked out at RequestContext.__init__ (the `pool.getconn()` line);
the exit report says the same: MAXCONN connections checked out and never returned.
"""
import gc
import os
import sys
import threading

import psycopg2.pool

# Automatic collection would reclaim some of these cycles at unpredictable moments; it is off so
# that every run gives the same report. In production the same bug shows as a pool that runs dry
# now and then (or always, in services that call gc.freeze() or tune the collector down).
gc.disable()

pool = None
pool_lock = threading.Lock()  # SimpleConnectionPool is not thread-safe: serialise getconn


class RequestContext:
    conn = None

    def __init__(self):
        with pool_lock:
            self.conn = pool.getconn()  # the connection is taken here ...
        self.cursor = self.conn.cursor()
        self.on_close = [self]  # ... and this cycle keeps the context alive

    def __del__(self):
        if self.conn is not None:
            pool.putconn(self.conn)  # ... and would only be given back here


def handle_request(i):
    ctx = RequestContext()
    ctx.cursor.execute("SELECT %s::int + 1", (i,))
    return ctx.cursor.fetchone()[0]


def worker(counter, errors):
    while True:
        try:
            handle_request(next(counter))
        except psycopg2.pool.PoolError as e:
            errors.append(str(e))
            return


def main(argv):
    global pool
    dsn = argv[0] if argv else os.environ.get("PG_DSN", "")
    maxconn = int(argv[1]) if len(argv) > 1 else 4
    nthreads = int(argv[2]) if len(argv) > 2 else 4
    pool = psycopg2.pool.SimpleConnectionPool(1, maxconn, dsn)
    counter = iter(range(1 << 30))
    errors = []
    threads = [threading.Thread(target=worker, args=(counter, errors)) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{errors[0]} ({len(errors)} workers got it)", flush=True)
    print("STUCK", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main(sys.argv[1:])

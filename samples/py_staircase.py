#!/usr/bin/python3
"""The staircase: every "request" opens a PostgreSQL connection and keeps it (appended to a list,
never closed), next to a healthy psycopg2 pool whose connections rise and fall (a saw-tooth).

    usage: py_staircase.py PG_DSN [--requests N] [--pause SECONDS] [--phases K]
           --phases K: serve N requests K times, printing "READY i" after each phase and waiting
           for a line on stdin before the next (for `leakshim dump` between phases)

Under leakshim the exit report names one leak group (open_for_request below), the timeline shows
its count climbing one step per request while the pool's goes up and down; the fixed version
(py_staircase_fixed.py) closes each connection.
"""
import sys
import time

import psycopg2
import psycopg2.pool


def option(argv, name, default, kind=int):
    if name in argv:
        i = argv.index(name)
        value = argv[i + 1]
        del argv[i:i + 2]
        return kind(value)
    return default


leaked = []


def open_for_request(dsn):
    conn = psycopg2.connect(dsn)  # the leak: kept, never closed
    leaked.append(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")


def pool_work(pool, k, hold):
    conns = [pool.getconn() for _ in range(k)]  # a burst: k connections checked out at once
    for c in conns:
        with c.cursor() as cur:
            cur.execute("SELECT 1")
    time.sleep(hold)  # the request's work, holding them: the burst lasts, the timeline sees it
    for c in conns:
        pool.putconn(c)  # back to the pool; above minconn they are closed


def main(argv):
    requests = option(argv, "--requests", 8)
    pause = option(argv, "--pause", 0.1, float)
    phases = option(argv, "--phases", 1)
    dsn = argv[1]
    pool = psycopg2.pool.ThreadedConnectionPool(1, 8, dsn)
    for phase in range(phases):
        for i in range(requests):
            open_for_request(dsn)
            pool_work(pool, 1 + i % 4, pause)
            time.sleep(pause)  # between requests: the pool back at minconn, the timeline sees it
        if phases > 1:
            print(f"READY {phase + 1}", flush=True)
            sys.stdin.readline()
    pool.closeall()
    print(f"served {requests * phases} requests", flush=True)


if __name__ == "__main__":
    main(sys.argv)

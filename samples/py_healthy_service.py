#!/usr/bin/python3
"""A healthy service: every pool used correctly and closed at shutdown.

Worker threads serve requests through a psycopg2 ThreadedConnectionPool (`with`-style
getconn/putconn), a SQLAlchemy engine (`with Session(...)`), a shared redis-py ConnectionPool
and, when a MongoDB URI is given, one shared MongoClient. At shutdown it closes them all.

    usage: py_healthy_service.py PG_DSN REDIS_HOST:PORT [MONGO_URI] [--requests N] [--threads N]
           [--wait]   (print "READY" once warmed up and wait for a line on stdin before shutdown)

Under leakshim the exit report says: leakshim: 0 leaked database connections.
"""
import contextlib
import sys
import threading

import psycopg2.pool
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session


def option(argv, name, default):
    if name in argv:
        i = argv.index(name)
        value = argv[i + 1]
        del argv[i:i + 2]
        return int(value)
    return default


class Service:
    def __init__(self, dsn, redis_addr, mongo_uri=None):
        self.pg = psycopg2.pool.ThreadedConnectionPool(2, 4, dsn)
        self.engine = create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn),
                                    pool_size=4, max_overflow=0)
        host, _, port = redis_addr.rpartition(":")
        self.redis_pool = redis.ConnectionPool(host=host or "127.0.0.1", port=int(port))
        self.redis = redis.Redis(connection_pool=self.redis_pool)
        self.mongo = None
        if mongo_uri:
            import pymongo

            self.mongo = pymongo.MongoClient(mongo_uri)

    @contextlib.contextmanager
    def pg_conn(self):
        conn = self.pg.getconn()
        try:
            yield conn
        finally:
            self.pg.putconn(conn)

    def handle(self, i):
        with self.pg_conn() as conn, conn.cursor() as cur:
            cur.execute("SELECT %s::int * 2", (i,))
            cur.fetchone()
        with Session(self.engine) as session:
            session.execute(text("SELECT 1")).scalar()
        self.redis.incr("healthy:requests")
        if self.mongo is not None:
            self.mongo.shop.visits.insert_one({"i": i})

    def close(self):
        if self.mongo is not None:
            self.mongo.close()
        self.redis_pool.disconnect()
        self.engine.dispose()
        self.pg.closeall()


def main(argv):
    argv = list(argv)
    wait = "--wait" in argv
    if wait:
        argv.remove("--wait")
    requests = option(argv, "--requests", 40)
    nthreads = option(argv, "--threads", 4)
    svc = Service(argv[0], argv[1], argv[2] if len(argv) > 2 else None)
    try:
        def worker(k):
            for i in range(k, requests, nthreads):
                svc.handle(i)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if wait:
            print("READY", flush=True)
            sys.stdin.readline()
    finally:
        svc.close()
    print(f"served {requests} requests", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/python3
"""Fixed py_redis_per_request.py: one connection pool for the process, shared by every request,
disconnected at shutdown. Under leakshim: no leak, and one connection created in total.

    usage: py_redis_per_request_fixed.py [HOST:PORT | /path/redis.sock] [REQUESTS]
    env:   REDIS_URL=redis://host:port/0 (used when no address is given)
"""
import os
import sys

import redis


def make_pool(addr):
    if addr.startswith("/"):
        return redis.ConnectionPool(connection_class=redis.UnixDomainSocketConnection, path=addr)
    if "://" in addr:
        return redis.ConnectionPool.from_url(addr)
    host, _, port = addr.rpartition(":")
    return redis.ConnectionPool(host=host or "127.0.0.1", port=int(port))


def handle_request(client, user):
    return client.incr(f"hits:{user}")


def main(argv):
    addr = argv[0] if argv else os.environ.get("REDIS_URL", "127.0.0.1:6379")
    n = int(argv[1]) if len(argv) > 1 else 5
    pool = make_pool(addr)
    client = redis.Redis(connection_pool=pool)
    try:
        for i in range(n):
            handle_request(client, f"user{i}")
    finally:
        pool.disconnect()  # shutdown: close every connection of the pool
    print(f"served {n} requests", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

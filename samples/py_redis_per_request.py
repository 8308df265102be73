#!/usr/bin/python3
"""Seed: a redis-py client created per request (leaky, and churning).

Each request builds its own redis.Redis(): a new connection pool and a new TCP connection for
every request (churn). In the leaky path the handler also keeps the client in a per-user session
cache that is never evicted, so every one of those connections stays open (leak).

    usage: py_redis_per_request.py [--churn] [HOST:PORT | /path/redis.sock] [REQUESTS]
    env:   REDIS_URL=redis://host:port/0 (used when no address is given)

Under leakshim the exit report counts the leaked clients (each Redis() with its own pool and
connection) at the line that made them (make_client, called from handle_request); with --churn
nothing leaks and the "created per stack" table shows one connection per request from the line
that issued the first command (`r.incr(...)` in handle_request).
"""
import os
import sys

import redis

sessions = {}  # user -> client: the leak (a cache that is never evicted)


def make_client(addr):
    if addr.startswith("/"):
        return redis.Redis(unix_socket_path=addr)
    if "://" in addr:
        return redis.Redis.from_url(addr)
    host, _, port = addr.rpartition(":")
    return redis.Redis(host=host or "127.0.0.1", port=int(port))


def handle_request(addr, user, keep):
    r = make_client(addr)  # a client (pool + connection) per request
    hits = r.incr(f"hits:{user}")  # first command: the connection is opened here
    if keep:
        sessions[user] = r  # "reuse it for this user's next request" -- never evicted
    return hits


def main(argv):
    churn = "--churn" in argv
    args = [a for a in argv if a != "--churn"]
    addr = args[0] if args else os.environ.get("REDIS_URL", "127.0.0.1:6379")
    n = int(args[1]) if len(args) > 1 else 5
    for i in range(n):
        handle_request(addr, f"user{i}", keep=not churn)
    print(f"served {n} requests, {len(sessions)} clients kept", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

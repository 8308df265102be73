#!/usr/bin/python3
"""Seed: pymongo MongoClient created per request, and a health checker with its own client.

Every request handler builds a MongoClient (a connection pool, monitor threads and their
sockets) and never closes it; so does every run of the health check. The handler also keeps
the database handle on the request, which the access log keeps: the clients stay alive.

    usage: py_pymongo_per_request.py MONGO_URI [REQUESTS] [HEALTH_CHECKS]
    env:   MONGO_URI (used when no URI is given)

Under leakshim the exit report has two groups of pymongo clients never closed (client leaks),
each client holding its pooled MongoDB connection and its monitor socket: REQUESTS created in
handle_request (the MongoClient(...) line) and HEALTH_CHECKS in health_check.
"""
import os
import sys

import pymongo

access_log = []  # every request object, kept for the access log


class Request:
    def __init__(self, item_id):
        self.item_id = item_id
        self.db = None


def handle_request(uri, req):
    client = pymongo.MongoClient(uri)  # a client per request, never closed
    req.db = client.shop
    doc = req.db.items.find_one({"_id": req.item_id})
    access_log.append(req)
    return doc


def health_check(uri):
    client = pymongo.MongoClient(uri)  # the health checker's own client, never closed
    ok = client.admin.command("ping").get("ok") == 1
    access_log.append(client)
    return ok


def main(argv):
    uri = argv[0] if argv else os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/")
    requests = int(argv[1]) if len(argv) > 1 else 4
    checks = int(argv[2]) if len(argv) > 2 else 2
    with pymongo.MongoClient(uri) as setup:  # closed: not a leak
        setup.shop.items.replace_one({"_id": 1}, {"_id": 1, "name": "tea"}, upsert=True)
    for i in range(requests):
        handle_request(uri, Request(1 + i % 2))
    for _ in range(checks):
        health_check(uri)
    print(f"served {requests} requests, {checks} health checks", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

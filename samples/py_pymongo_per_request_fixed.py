#!/usr/bin/python3
"""Fixed py_pymongo_per_request.py: one MongoClient for the whole process, shared by the request
handler and the health checker, closed at shutdown. Under leakshim: no leak.

    usage: py_pymongo_per_request_fixed.py MONGO_URI [REQUESTS] [HEALTH_CHECKS]
    env:   MONGO_URI (used when no URI is given)
"""
import os
import sys

import pymongo

access_log = []


class Request:
    def __init__(self, item_id):
        self.item_id = item_id
        self.db = None


def handle_request(client, req):
    req.db = client.shop
    doc = req.db.items.find_one({"_id": req.item_id})
    access_log.append(req)
    return doc


def health_check(client):
    return client.admin.command("ping").get("ok") == 1


def main(argv):
    uri = argv[0] if argv else os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/")
    requests = int(argv[1]) if len(argv) > 1 else 4
    checks = int(argv[2]) if len(argv) > 2 else 2
    client = pymongo.MongoClient(uri)  # one client, created at startup
    try:
        client.shop.items.replace_one({"_id": 1}, {"_id": 1, "name": "tea"}, upsert=True)
        for i in range(requests):
            handle_request(client, Request(1 + i % 2))
        for _ in range(checks):
            health_check(client)
    finally:
        client.close()  # shutdown
    print(f"served {requests} requests, {checks} health checks", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

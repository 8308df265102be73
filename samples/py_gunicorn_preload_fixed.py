#!/usr/bin/python3
"""Seed, fixed (issue 10): py_gunicorn_preload.py with the connection opened lazily in each worker
(after the fork), so no two processes share one.

    run:  PG_DSN="host=... port=..." gunicorn --preload -w 2 --chdir samples py_gunicorn_preload_fixed:app

Under leakshim: nothing shared across fork; each worker closes its own connection when it exits.
"""
import atexit
import json
import os

import psycopg2

_conn = {}


def connection():
    pid = os.getpid()
    if pid not in _conn:  # first use in this process: after the fork
        c = psycopg2.connect(os.environ.get("PG_DSN", ""))
        c.autocommit = True
        _conn[pid] = c
        atexit.register(c.close)  # the worker closes it when it exits
    return _conn[pid]


def app(environ, start_response):
    with connection().cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (backend,) = cur.fetchone()
    body = json.dumps({"worker": os.getpid(), "backend": backend}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

#!/usr/bin/python3
"""Seed (issue 10): a WSGI app served by `gunicorn --preload`, whose psycopg2 connection is opened
at import time: in the master, before it forks the workers, so every worker uses the same
connection (one protocol session, several processes: answers come back mixed up).

    run:  PG_DSN="host=... port=..." gunicorn --preload -w 2 --chdir samples py_gunicorn_preload:app

Under leakshim each worker warns when it first uses the connection ("shared across fork"), and
the reports name it as shared across fork, at the `psycopg2.connect(...)` line, in the workers
that used it and in the master.
"""
import json
import os

import psycopg2

conn = psycopg2.connect(os.environ.get("PG_DSN", ""))  # opened at import: before the fork
conn.autocommit = True


def app(environ, start_response):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (backend,) = cur.fetchone()
    body = json.dumps({"worker": os.getpid(), "backend": backend}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

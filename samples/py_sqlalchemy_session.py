#!/usr/bin/python3
"""Seed: SQLAlchemy Session(engine) not closed on an early return, nor when an exception escapes.

get_user() returns early when the user does not exist and never closes its session;
rename_user() raises before it closes its session. Each unclosed session keeps its pooled
connection checked out, so after pool_size of them the next request waits pool_timeout and
fails: "QueuePool limit of size 3 overflow 0 reached, connection timed out".

    usage: py_sqlalchemy_session.py DSN
    env:   PG_DSN (used when no DSN is given); DSN is a libpq string ("host=... port=...")

Under leakshim the exit report has two groups of connections checked out of the SQLAlchemy
pool and never returned: 2 checked out at get_user's `session.execute(...)` line (the early
return), 1 at rename_user's (the exception).
"""
import gc
import os
import sys

import psycopg2
from sqlalchemy import create_engine, exc, text
from sqlalchemy.orm import Session

# Sessions sit in reference cycles (session <-> transaction): the collector would give some of
# these connections back at unpredictable moments. Off, so that every run reports the same.
gc.disable()

USERS = "SELECT name FROM (VALUES (1, 'ada'), (2, 'grace')) AS users(id, name) WHERE id = :id"
errors = []  # the service keeps recent errors (and so their tracebacks) for its status page


def get_user(engine, uid):
    session = Session(engine)
    row = session.execute(text(USERS), {"id": uid}).first()  # checks a connection out
    if row is None:
        return None  # early return: the session is never closed
    session.close()
    return row.name


def rename_user(engine, uid, name):
    session = Session(engine)
    session.execute(text("SELECT upper(:name)"), {"name": name})  # checks a connection out
    if not name.strip():
        raise ValueError("empty name")  # the session is never closed
    session.commit()
    session.close()


def main(argv):
    dsn = argv[0] if argv else os.environ.get("PG_DSN", "")
    engine = create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn),
                           pool_size=3, max_overflow=0, pool_timeout=1)
    for uid in (1, 7, 8):  # 7 and 8 do not exist: two early returns, two leaks
        print(f"user {uid}:", get_user(engine, uid))
    try:
        rename_user(engine, 2, " ")  # leaks (exception)
    except ValueError as e:
        errors.append(e)
    try:
        get_user(engine, 2)
    except exc.TimeoutError as e:
        print("request failed:", str(e).splitlines()[0], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/python3
"""Fixed py_sqlalchemy_session.py: every Session is a context manager (closed on every path,
returns and exceptions alike) and the engine is disposed at shutdown. The same requests run,
no request times out, and under leakshim the exit report says no leak.

    usage: py_sqlalchemy_session_fixed.py DSN
    env:   PG_DSN (used when no DSN is given); DSN is a libpq string ("host=... port=...")
"""
import gc
import os
import sys

import psycopg2
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

gc.disable()  # as in the leaky version: the fix must not depend on the collector

USERS = "SELECT name FROM (VALUES (1, 'ada'), (2, 'grace')) AS users(id, name) WHERE id = :id"
errors = []


def get_user(engine, uid):
    with Session(engine) as session:
        row = session.execute(text(USERS), {"id": uid}).first()
        if row is None:
            return None  # the with block closes the session
        return row.name


def rename_user(engine, uid, name):
    with Session(engine) as session, session.begin():
        session.execute(text("SELECT upper(:name)"), {"name": name})
        if not name.strip():
            raise ValueError("empty name")  # rolled back and closed by the with blocks


def main(argv):
    dsn = argv[0] if argv else os.environ.get("PG_DSN", "")
    engine = create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn),
                           pool_size=3, max_overflow=0, pool_timeout=1)
    try:
        for uid in (1, 7, 8):
            print(f"user {uid}:", get_user(engine, uid))
        try:
            rename_user(engine, 2, " ")
        except ValueError as e:
            errors.append(e)
        print("user 2:", get_user(engine, 2), flush=True)
    finally:
        engine.dispose()  # shutdown: close the pool's connections


if __name__ == "__main__":
    main(sys.argv[1:])

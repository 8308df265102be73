#!/usr/bin/python3
"""Seed, fixed (issue 10): py_starlette_pool_del.py with the connection given back in a finally
block (a context manager), not by __del__.

    run:  PG_DSN="host=... port=..." uvicorn --app-dir samples py_starlette_pool_del_fixed:app --port PORT

Under leakshim: nothing checked out between requests, nothing to report at exit.
"""
import os
from contextlib import contextmanager

import psycopg2.pool
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

pool = psycopg2.pool.SimpleConnectionPool(1, 10, os.environ.get("PG_DSN", ""))


@contextmanager
def pooled():
    conn = pool.getconn()
    try:
        yield conn
    finally:
        pool.putconn(conn)


def get_user(request):
    with pooled() as conn, conn.cursor() as cur:
        cur.execute("SELECT %s::int", (int(request.path_params["uid"]),))
        (uid,) = cur.fetchone()
        conn.rollback()
    return JSONResponse({"id": uid})


async def shutdown():
    pool.closeall()


app = Starlette(routes=[Route("/users/{uid:int}", get_user)], on_shutdown=[shutdown])

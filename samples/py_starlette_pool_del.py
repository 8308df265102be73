#!/usr/bin/python3
"""Seed (issue 10): Starlette + psycopg2 SimpleConnectionPool(1, 10) whose connections go back
only from __del__, behind a reference cycle: the service gets stuck at "connection pool
exhausted".

    run:  PG_DSN="host=... port=..." uvicorn --app-dir samples py_starlette_pool_del:app --port PORT
    GET /users/{id}    (503 "connection pool exhausted" once 10 requests have run)

Each request wraps its pooled connection in a RequestContext that gives it back in __del__. The
context points at itself (as a callback registry or a parent pointer does), so reference counting
never frees it; __del__ would run only if the cyclic collector got to it, and a service that
allocates little rarely runs a collection (off here, so that every run gets stuck the same way).

Under leakshim, `leakshim dump PID` taken while it is stuck lists the 10 connections checked out
of the psycopg2 pool at RequestContext.__init__'s `pool.getconn()` line; so does the exit report.
"""
import gc
import os

import psycopg2.pool
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

gc.disable()
pool = psycopg2.pool.SimpleConnectionPool(1, 10, os.environ.get("PG_DSN", ""))


class RequestContext:
    def __init__(self):
        self.conn = pool.getconn()  # given back only by __del__
        self.me = self  # a reference cycle: refcounting never frees the context

    def __del__(self):
        if hasattr(self, "conn"):  # getconn() may have raised
            pool.putconn(self.conn)


def get_user(request):
    try:
        ctx = RequestContext()
    except psycopg2.pool.PoolError as e:
        return JSONResponse({"error": str(e)}, status_code=503)
    with ctx.conn.cursor() as cur:
        cur.execute("SELECT %s::int", (int(request.path_params["uid"]),))
        (uid,) = cur.fetchone()
    ctx.conn.rollback()
    return JSONResponse({"id": uid})


app = Starlette(routes=[Route("/users/{uid:int}", get_user)])

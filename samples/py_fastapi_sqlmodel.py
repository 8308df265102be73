#!/usr/bin/python3
"""Seed (issue 10): FastAPI + SQLModel sessions not closed on an early return nor when an exception
escapes, and an asyncpg endpoint that returns early before `await conn.close()`.

    run:  PG_DSN="host=... port=..." PG_URL=postgresql://... \\
          uvicorn --app-dir samples py_fastapi_sqlmodel:app --port PORT
    GET /users/{id} (ids 1-2 exist)    POST /users/{id}/rename    GET /orders/{id} (ids < 100 exist)

get_user() returns early when the user does not exist and never closes its session;
rename_user() raises (404) before it closes its session: each unclosed session keeps its pooled
connection checked out (sessions sit in reference cycles; the collector is off so that every run
reports the same). get_order() returns early when the order does not exist, before it closes its
asyncpg connection (and before it takes it off its list of active connections, which keeps it
alive).

Under leakshim the exit report has the sessions' connections checked out of the SQLAlchemy pool
at get_user's and rename_user's `session.exec(...)` lines, and the asyncpg connections left open
at get_order's `await asyncpg.connect(...)` line.
"""
import gc
import os

import asyncpg
import psycopg2
from fastapi import FastAPI, HTTPException
from sqlmodel import Session, create_engine, text

gc.disable()
engine = create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(os.environ.get("PG_DSN", "")),
                       pool_size=5, max_overflow=0, pool_timeout=2)
PG_URL = os.environ.get("PG_URL", "")
USERS = "SELECT name FROM (VALUES (1, 'ada'), (2, 'grace')) AS users(id, name) WHERE id = :id"
app = FastAPI()


@app.get("/users/{uid}")
def get_user(uid: int):
    session = Session(engine)
    row = session.exec(text(USERS).bindparams(id=uid)).first()  # early return leaves it checked out
    if row is None:
        return {"found": False}  # the session is never closed
    session.close()
    return {"found": True, "name": row[0]}


@app.post("/users/{uid}/rename")
def rename_user(uid: int):
    session = Session(engine)
    row = session.exec(text(USERS).bindparams(id=uid)).first()  # the exception leaves it checked out
    if row is None:
        raise HTTPException(404, "no such user")  # escapes before session.close()
    session.close()
    return {"renamed": row[0]}


active = {}  # open connections by request, for the service's "active queries" page


@app.get("/orders/{oid}")
async def get_order(oid: int):
    conn = await asyncpg.connect(PG_URL)  # left open by the early return
    active[id(conn)] = conn
    row = await conn.fetchrow("SELECT $1::int AS id WHERE $1::int < 100", oid)
    if row is None:
        return {"found": False}  # returns before the connection is closed (and unlisted)
    await conn.close()
    del active[id(conn)]
    return {"found": True}

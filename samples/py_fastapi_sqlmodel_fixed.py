#!/usr/bin/python3
"""Seed, fixed (issue 10): py_fastapi_sqlmodel.py with `with Session(engine)` and
`try/finally: await conn.close()`: every path gives its connection back.

    run:  PG_DSN="host=... port=..." PG_URL=postgresql://... \\
          uvicorn --app-dir samples py_fastapi_sqlmodel_fixed:app --port PORT

Under leakshim: nothing to report at exit.
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


@app.on_event("shutdown")
def shutdown():
    engine.dispose()


@app.get("/users/{uid}")
def get_user(uid: int):
    with Session(engine) as session:
        row = session.exec(text(USERS).bindparams(id=uid)).first()
        if row is None:
            return {"found": False}
        return {"found": True, "name": row[0]}


@app.post("/users/{uid}/rename")
def rename_user(uid: int):
    with Session(engine) as session:
        row = session.exec(text(USERS).bindparams(id=uid)).first()
        if row is None:
            raise HTTPException(404, "no such user")
        return {"renamed": row[0]}


@app.get("/orders/{oid}")
async def get_order(oid: int):
    conn = await asyncpg.connect(PG_URL)
    try:
        row = await conn.fetchrow("SELECT $1::int AS id WHERE $1::int < 100", oid)
        return {"found": row is not None}
    finally:
        await conn.close()

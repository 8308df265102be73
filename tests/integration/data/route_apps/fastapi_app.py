"""A FastAPI service that leaks a PostgreSQL connection per webhook call (a sync endpoint, run in
Starlette's thread pool) and per item lookup (an async endpoint); /health closes its own. Nothing
in it knows about leakshim: the routes are recorded by the shim's patch of Starlette's routing."""
import os

import psycopg2
from fastapi import FastAPI

DSN = os.environ["ROUTES_DSN"]
app = FastAPI()
KEPT = []


@app.post("/webhooks/{hook_id}")
def webhook(hook_id: str):
    KEPT.append(psycopg2.connect(DSN))
    return {"ok": hook_id}


@app.get("/items/{item_id}")
async def item(item_id: int):
    KEPT.append(psycopg2.connect(DSN))
    return {"item": item_id}


@app.get("/health")
async def health():
    c = psycopg2.connect(DSN)
    c.close()
    return {"ok": True}

#!/usr/bin/python3
"""Seed (issue 10): a healthy FastAPI service: one Motor client and four redis.asyncio pools, made
at start-up and closed at shutdown, shared by every request.

    run:  MONGO_URI=mongodb://... REDIS_ADDR=host:port \\
          uvicorn --app-dir samples py_fastapi_healthy:app --port PORT
    GET /items/{id}

Under leakshim: no leak at exit and no suspect in a live dump, under load or idle past the
threshold: pooled sockets are idle-in-pool between requests (never "in use"), monitors are
background, and the four pools were made once each.
"""
import os

import redis.asyncio as aredis
from fastapi import FastAPI
from motor.motor_asyncio import AsyncIOMotorClient

MONGO_URI = os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/")
REDIS_HOST, _, REDIS_PORT = os.environ.get("REDIS_ADDR", "127.0.0.1:6379").partition(":")
app = FastAPI()
state = {}


@app.on_event("startup")
async def startup():
    state["mongo"] = AsyncIOMotorClient(MONGO_URI, maxPoolSize=10)
    state["cache"] = aredis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), db=0)
    state["sessions"] = aredis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), db=1)
    state["ratelimit"] = aredis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), db=2)
    state["queue"] = aredis.Redis(connection_pool=aredis.ConnectionPool(
        host=REDIS_HOST, port=int(REDIS_PORT), db=3, max_connections=8))


@app.on_event("shutdown")
async def shutdown():
    state["mongo"].close()
    for name in ("cache", "sessions", "ratelimit"):
        await state[name].close()
    await state["queue"].connection_pool.disconnect()


@app.get("/items/{item_id}")
async def item(item_id: int):
    hits = await state["ratelimit"].incr(f"rl:{item_id}")
    cached = await state["cache"].get(f"item:{item_id}")
    if cached is None:
        doc = await state["mongo"].shop.items.find_one({"_id": item_id})
        await state["cache"].set(f"item:{item_id}", "1" if doc else "0", ex=60)
    await state["sessions"].set(f"seen:{item_id}", hits)
    await state["queue"].rpush("events", item_id)
    return {"id": item_id, "hits": hits}

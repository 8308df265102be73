#!/usr/bin/python3
"""Seed (issue 10): a FastAPI webhook that builds a VectorStoreManager, with its own MongoClient
(minPoolSize=10), for every request; a health checker that makes its own client lazily; a global
Motor client never closed.

    run:  MONGO_URI=mongodb://... uvicorn --app-dir samples py_fastapi_webhook:app --port PORT
    POST /webhooks/payload {"id": 1, "vector": [...]}    GET /health    GET /items/{id}

Every webhook call leaves a MongoClient behind (the managers are cached "for reuse" by payload
id and never reused): each one holds its pool (up to minPoolSize sockets, filled in the
background) and its monitor socket, for ever.

Under leakshim the exit report counts one client leak per webhook call, at the `MongoClient(...)`
line of VectorStoreManager.__init__, with the pooled and monitoring sockets they hold; the health
checker's client and the global Motor client are listed as not closed at shutdown (one each).
"""
import os

from fastapi import FastAPI
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import MongoClient

MONGO_URI = os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/")

app = FastAPI()
motor_client = AsyncIOMotorClient(MONGO_URI)  # the global Motor client, never closed


class VectorStoreManager:
    def __init__(self, uri):
        self.client = MongoClient(uri, minPoolSize=10)  # a client and its pool per request
        self.collection = self.client.vectors.embeddings

    def upsert(self, doc):
        self.collection.replace_one({"_id": doc["_id"]}, doc, upsert=True)


managers = {}  # "cached for reuse" by payload id: never looked up again


@app.post("/webhooks/payload")
def webhook(payload: dict):
    vs = VectorStoreManager(MONGO_URI)
    vs.upsert({"_id": payload.get("id", 0), "vector": payload.get("vector", [])})
    managers.setdefault(payload.get("id", 0), []).append(vs)
    return {"ok": True}


_health_client = None


def health_client():
    global _health_client
    if _health_client is None:
        _health_client = MongoClient(MONGO_URI)  # made lazily by the health checker, never closed
    return _health_client


@app.get("/health")
def health():
    return {"ok": health_client().admin.command("ping").get("ok") == 1}


@app.get("/items/{item_id}")
async def item(item_id: int):
    doc = await motor_client.shop.items.find_one({"_id": item_id})
    return {"found": doc is not None}

#!/usr/bin/python3
"""Seed, fixed (issue 10): the webhook of py_fastapi_webhook.py with one MongoClient and one Motor
client for the whole service, made at start-up and closed at shutdown; the
health checker uses the shared client.

    run:  MONGO_URI=mongodb://... uvicorn --app-dir samples py_fastapi_webhook_fixed:app --port PORT

Under leakshim: nothing to report, after any number of requests.
"""
import os

from fastapi import FastAPI
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import MongoClient

MONGO_URI = os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/")
clients = {}


app = FastAPI()


@app.on_event("startup")
async def startup():
    clients["mongo"] = MongoClient(MONGO_URI, minPoolSize=10)
    clients["motor"] = AsyncIOMotorClient(MONGO_URI)


@app.on_event("shutdown")
async def shutdown():
    clients["mongo"].close()
    clients["motor"].close()


class VectorStoreManager:
    def __init__(self, client):
        self.collection = client.vectors.embeddings  # the service's client, shared

    def upsert(self, doc):
        self.collection.replace_one({"_id": doc["_id"]}, doc, upsert=True)


@app.post("/webhooks/payload")
def webhook(payload: dict):
    vs = VectorStoreManager(clients["mongo"])
    vs.upsert({"_id": payload.get("id", 0), "vector": payload.get("vector", [])})
    return {"ok": True}


@app.get("/health")
def health():
    return {"ok": clients["mongo"].admin.command("ping").get("ok") == 1}


@app.get("/items/{item_id}")
async def item(item_id: int):
    doc = await clients["motor"].shop.items.find_one({"_id": item_id})
    return {"found": doc is not None}

"""A Flask service (werkzeug's WSGI server) that leaks a PostgreSQL connection per order and keeps
a pool checkout per report; /health closes its own. Nothing in it knows about leakshim.
Usage: flask_app.py PORT"""
import os
import sys

import psycopg2
import psycopg2.pool
from flask import Flask

DSN = os.environ["ROUTES_DSN"]
app = Flask(__name__)
KEPT = []
POOL = psycopg2.pool.ThreadedConnectionPool(1, 5, DSN)  # at import: no request


@app.route("/orders/<int:order_id>", methods=["POST"])
def order(order_id):
    KEPT.append(psycopg2.connect(DSN))
    return {"order": order_id}


@app.route("/reports/<name>")
def report(name):
    KEPT.append(POOL.getconn())  # never put back
    return {"report": name}


@app.route("/health")
def health():
    c = psycopg2.connect(DSN)
    c.close()
    return {"ok": True}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)

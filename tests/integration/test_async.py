"""asyncio drivers under the shim (issue 10): asyncpg, redis.asyncio, psycopg 3 and psycopg_pool
tracked whatever their address (the harness's servers are on spare, non-database ports, so every
socket here was found through the drivers' patches), and awaiter-chain stacks: a socket opened in
a task another task awaits has a stack that continues into the awaiting task, up to the line that
awaited the driver."""

import json
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import PY, line_of, pyframes as frames, run_shim  # noqa: E402

LEAK_CATEGORIES = {"leak", "handle-leak", "orphaned-socket", "closed-under-handle", "checkout-leak",
                   "client-leak"}


def run_prog(tmp_path, code, *args, options=None):
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(code))
    opts = {"report": str(tmp_path / "report.%p.json"), "format": "json"}
    opts.update(options or {})
    r = run_shim([PY, prog, *args], options=opts, timeout=120)
    assert r.returncode == 0, r.stderr
    reps = [json.loads(line) for p in sorted(tmp_path.glob("report.*.json"))
            for line in p.read_text().splitlines() if line.strip()]
    reps = [x for x in reps if x["kind"] == "exit"]
    assert len(reps) == 1, r.stderr
    return prog, r, reps[0]


def at(rep, path, line, category):
    """Items in groups of `category` whose Python stack has path:line."""
    return sum(g["count"] for g in rep["groups"] if g["category"] == category
               and any(f["file"] == str(path) and f["line"] == line for f in frames(rep, g.get("pystack"))))


def pg_url(pg):
    return f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.dbname}"


# ------------------------------------------------------------------ asyncpg

ASYNCPG = """
    import asyncio, sys, asyncpg
    keep = []

    async def endpoint(url):
        conn = await asyncpg.connect(url)  # endpoint connect
        keep.append(conn)
        return await conn.fetchval("SELECT 1")

    async def fixed(url):
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    async def main(url):
        await asyncio.gather(*[endpoint(url) for _ in range(8)])  # 8 concurrent requests
        for _ in range(3):
            await fixed(url)
        pool = await asyncpg.create_pool(url, min_size=2, max_size=4)  # the pool
        async with pool.acquire() as c:
            await c.fetchval("SELECT 1")
        held = await pool.acquire()  # never released
        keep.append((pool, held))
        closed = await asyncpg.create_pool(url, min_size=1, max_size=2)
        async with closed.acquire() as c:
            await c.fetchval("SELECT 1")
        await closed.close()
        print("ok", flush=True)

    asyncio.run(main(sys.argv[1]))
"""


def test_asyncpg_connections_pools_and_checkouts_on_a_spare_port(tmp_path, pg):
    prog, r, rep = run_prog(tmp_path, ASYNCPG, pg_url(pg))
    assert "ok" in r.stdout
    # Each leaked connection is one asyncpg handle, at the endpoint's `await asyncpg.connect` line
    # (asyncpg connected inside a task of its own), the caller's line below it.
    assert at(rep, prog, line_of(prog, "# endpoint connect"), "handle-leak") == 8
    g = next(g for g in rep["groups"] if g["category"] == "handle-leak")
    assert g["driver"] == "asyncpg" and g["service"] == "PostgreSQL"
    assert [s for s in rep["sockets"] if s["driver"] == "asyncpg" and s["port"] == pg.port]
    # The acquire never released is a checkout leak at its line; the pool itself is one pool
    # not closed at shutdown; the closed pool and the closed connections are not reported.
    assert at(rep, prog, line_of(prog, "# never released"), "checkout-leak") == 1
    assert at(rep, prog, line_of(prog, "# the pool"), "pool-unclosed") == 1
    assert rep["summary"]["leaks"] == 9
    assert sum(g["count"] for g in rep["groups"] if g["category"] in LEAK_CATEGORIES) == 9


AWAITERS = """
    import asyncio, sys

    async def open_in_own_task(host, port):
        # like asyncpg: the connection is made in a task of its own, through wait_for
        return await asyncio.wait_for(asyncio.open_connection(host, port), 10)

    async def handler(host, port):
        r, w = await open_in_own_task(host, port)  # the awaiting line
        keep.append(w)

    async def main(host, port):
        await handler(host, port)
        # each in a task of its own running only asyncio's code
        pairs = await asyncio.gather(asyncio.open_connection(host, port), asyncio.open_connection(host, port))  # the gather line
        keep.extend(w for r, w in pairs)

    keep = []
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_awaiter_chain_continues_into_the_awaiting_task(tmp_path, pg):
    # A plain socket to the test server's port (made a database port with ports=): the connect
    # happens inside wait_for's task and inside gather's children.
    prog, r, rep = run_prog(tmp_path, AWAITERS, pg.host, str(pg.port), options={"ports": pg.port})
    own = [s for s in rep["sockets"] if s["category"] == "leak"]
    assert len(own) == 3
    chains = [[(f["file"], f["line"]) for f in frames(rep, s["pystack"])] for s in own]
    awaiting = (str(prog), line_of(prog, "# the awaiting line"))
    gather = (str(prog), line_of(prog, "# the gather line"))
    assert sum(awaiting in c for c in chains) == 1
    assert sum(gather in c for c in chains) == 2
    for c in chains:  # the awaiting frames come before the event loop's
        loop = next(i for i, (f, _) in enumerate(c) if f.endswith("asyncio/events.py"))
        assert any(f == str(prog) for f, _ in c[:loop])


# ------------------------------------------------------------------ redis.asyncio

REDIS_ASYNC = """
    import asyncio, sys, redis.asyncio as aredis
    keep = []
    host, port = sys.argv[1].split(":")

    async def endpoint():
        r = aredis.Redis(host=host, port=int(port))  # a client per request
        keep.append(r)
        return await r.incr("hits")

    async def main():
        shared = aredis.Redis(host=host, port=int(port))
        await asyncio.gather(*[endpoint() for _ in range(8)])
        await shared.ping()
        await shared.close()
        pool = aredis.ConnectionPool(host=host, port=int(port))  # one shared pool
        r = aredis.Redis(connection_pool=pool)
        await r.set("k", "v")
        held = await pool.get_connection("GET")  # checked out, never released
        keep.append((pool, held))
        print("ok", flush=True)

    asyncio.run(main())
"""


def test_redis_asyncio_clients_on_a_spare_port(tmp_path, redis_server):
    prog, r, rep = run_prog(tmp_path, REDIS_ASYNC, f"{redis_server.host}:{redis_server.port}")
    # 8 Redis() never closed, each with its own pool: 8 clients at the Redis(...) line.
    per_request = line_of(prog, "# a client per request")
    assert at(rep, prog, per_request, "client-leak") == 8
    g = next(g for g in rep["groups"] if g["category"] == "client-leak")
    assert g["driver"] == "redis.asyncio" and g["service"] == "Redis" and g["sockets"] == 8
    assert at(rep, prog, line_of(prog, "# checked out, never released"), "checkout-leak") == 1
    assert at(rep, prog, line_of(prog, "# one shared pool"), "pool-unclosed") == 1
    assert rep["summary"]["leaks"] == 9


# ------------------------------------------------------------------ psycopg 3, psycopg_pool

PSYCOPG3 = """
    import asyncio, sys, psycopg, psycopg_pool
    dsn = sys.argv[1]
    keep = []
    keep.append(psycopg.connect(dsn))  # sync, never closed
    with psycopg.connect(dsn) as c:
        c.execute("SELECT 1")
    pool = psycopg_pool.ConnectionPool(dsn, min_size=2, max_size=4)  # sync pool
    pool.wait()
    keep.append(pool.getconn())  # checkout never returned
    with pool.connection() as c:
        c.execute("SELECT 1")

    async def amain():
        keep.append(await psycopg.AsyncConnection.connect(dsn))  # async, never closed
        ap = psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=2)
        await ap.wait()
        async with ap.connection() as c:
            await c.execute("SELECT 1")
        await ap.close()

    asyncio.run(amain())
    print("ok", flush=True)
"""


def test_psycopg3_and_psycopg_pool_on_a_spare_port(tmp_path, pg):
    prog, r, rep = run_prog(tmp_path, PSYCOPG3, pg.dsn)
    assert at(rep, prog, line_of(prog, "# sync, never closed"), "handle-leak") == 1
    assert at(rep, prog, line_of(prog, "# async, never closed"), "handle-leak") == 1
    assert at(rep, prog, line_of(prog, "# checkout never returned"), "checkout-leak") == 1
    assert at(rep, prog, line_of(prog, "# sync pool"), "pool-unclosed") == 1
    assert {g["driver"] for g in rep["groups"] if g["leak"]} == {"psycopg"}
    assert rep["summary"]["leaks"] == 3


HELD = """
    import asyncio, sys, redis.asyncio as aredis, asyncpg, pymongo
    host, port = sys.argv[1].split(":")

    async def main():
        pool = await asyncpg.create_pool(sys.argv[2], min_size=3, max_size=3)
        held = await pool.acquire()  # held past the threshold
        rpool = aredis.ConnectionPool(host=host, port=int(port))
        r = aredis.Redis(connection_pool=rpool)
        await asyncio.gather(*[r.incr("n") for _ in range(4)])
        mongo = pymongo.MongoClient(sys.argv[3])
        mongo.admin.command("ping")
        print("HELD", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await pool.release(held)
        await pool.close()
        await rpool.disconnect()
        mongo.close()

    asyncio.run(main())
"""


def test_checkout_past_threshold_is_a_suspect_idle_pooled_sockets_are_not(tmp_path, pg, redis_server, mongo):
    import subprocess
    import time

    from helpers import TOOL, shim_env

    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(HELD))
    p = subprocess.Popen([PY, str(prog), f"{redis_server.host}:{redis_server.port}", pg_url(pg), mongo.uri],
                         env=shim_env({"threshold": 1, "report": str(tmp_path / "r.%p.json"), "format": "json"}),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "HELD"
        deadline = time.monotonic() + 30
        while True:  # polled: until the checkout has been held past the threshold
            d = subprocess.run([str(TOOL), "dump", "--json", str(p.pid)], capture_output=True, text=True, timeout=60)
            snap = json.loads(d.stdout)
            if [x for x in snap["suspects"] if x["reason"] == "checked-out"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        sus = snap["suspects"]
        assert [(x["reason"], x["count"]) for x in sus] == [("checked-out", 1)]
        g = snap["groups"][sus[0]["group"]]
        assert g["driver"] == "asyncpg" and g["category"] == "checked-out"
        assert any(f["file"] == str(prog) and f["line"] == line_of(prog, "# held past the threshold")
                   for f in frames(snap, g["pystack"]))
        pooled = [x for x in snap["sockets"] if x["category"] != "background" and x["category"] != "checked-out"]
        assert {x["driver"] for x in pooled} == {"asyncpg", "redis.asyncio", "pymongo"}
        assert {x["state"] for x in pooled} == {"idle-in-pool"}  # never "in-use", never suspects
    finally:
        out, err = p.communicate("\n", timeout=60)
    assert p.returncode == 0, err


PER_REQUEST = """
    import asyncio, sys, asyncpg, psycopg2
    from sqlalchemy import create_engine, text
    keep = []

    def report(dsn):
        engine = create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn))  # an engine per request
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        keep.append(engine)

    async def lookup(url):
        pool = await asyncpg.create_pool(url, min_size=2, max_size=2)  # a pool per request
        async with pool.acquire() as c:
            await c.fetchval("SELECT 1")
        keep.append(pool)

    async def main(dsn, url):
        for _ in range(3):
            report(dsn)
        await asyncio.gather(*[lookup(url) for _ in range(4)])

    asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_engines_and_asyncpg_pools_per_request_are_client_leaks(tmp_path, pg):
    prog, r, rep = run_prog(tmp_path, PER_REQUEST, pg.dsn, pg_url(pg))
    engines = line_of(prog, "# an engine per request")
    pools = line_of(prog, "# a pool per request")
    assert at(rep, prog, engines, "client-leak") == 3
    assert at(rep, prog, pools, "client-leak") == 4
    by_driver = {g["driver"]: g for g in rep["groups"] if g["category"] == "client-leak"}
    assert by_driver["sqlalchemy"]["sockets"] == 3  # each engine's one pooled connection
    assert by_driver["asyncpg"]["sockets"] == 8  # min_size=2 each
    assert "4 asyncpg clients (Pool) never closed, holding 8 open PostgreSQL connections" in by_driver["asyncpg"]["title"]
    assert rep["summary"]["leaks"] == 7

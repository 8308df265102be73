"""The asyncio side (issue 10) without the shim or a server: aio.py's awaiter chains on real asyncio
tasks, and the asyncpg, redis.asyncio and psycopg 3 patches on stand-in classes shaped like the
real drivers' (what each wrapper tells the core; the program sees what the original returned)."""

import asyncio
import sys
import types


# ------------------------------------------------------------------ aio.py: awaiter chains

def names(frames):
    return [f.f_code.co_name for f in frames]


def test_tail_reaches_the_task_awaiting_through_wait_for_and_gather(boot, bridge):
    import asyncio.tasks

    ns = boot["_load"]("aio")
    ns["patch"](asyncio.tasks)
    assert bridge.of("set_async_tail") == [(ns["tail"],)]
    tail = ns["tail"]
    seen = {}

    async def inner(key):
        seen[key] = names(tail())

    async def endpoint():
        await asyncio.wait_for(inner("wait_for"), 5)  # a task of its own
        await asyncio.gather(inner("gather"), inner("gather2"))
        await inner("same task")

    async def main():
        await endpoint()

    asyncio.run(main())
    # innermost first: the awaiting coroutine, then its caller
    assert seen["wait_for"][:2] == ["wait_for", "endpoint"] and "main" in seen["wait_for"]
    assert seen["gather"][:2] == ["endpoint", "main"]
    assert seen["gather2"][:2] == ["endpoint", "main"]
    assert seen["same task"] == []  # no other task: the thread's own stack says it all
    assert tail() == []  # outside any loop


# ------------------------------------------------------------------ redis.asyncio

def fake_redis_asyncio():
    m = types.ModuleType("redis.asyncio.connection")

    class Sock:
        def fileno(self):
            return 77

    class Transport:
        def get_extra_info(self, name):
            return Sock() if name == "socket" else None

    class Writer:
        transport = Transport()

    class Connection:
        def __init__(self):
            self._writer = None

        async def _connect(self):
            self._writer = Writer()

        async def connect(self):
            if self._writer is None:
                await self._connect()

        async def disconnect(self):
            self._writer = None

    class ConnectionPool:
        def __init__(self):
            self.free = []

        async def get_connection(self, command_name, *keys):
            c = self.free.pop() if self.free else Connection()
            await c.connect()
            return c

        async def release(self, c):
            self.free.append(c)

        async def disconnect(self):
            for c in self.free:
                await c.disconnect()

    for cls in (Connection, ConnectionPool):
        cls.__module__ = m.__name__
        setattr(m, cls.__name__, cls)
    return m


def test_redis_asyncio_pool_connections_and_checkouts(boot, bridge):
    m = fake_redis_asyncio()
    boot["_load"]("redis_asyncio")["patch_connection"](m)

    async def main():
        pool = m.ConnectionPool()
        c = await pool.get_connection("GET")
        assert isinstance(c, m.Connection)
        await pool.release(c)
        sub = await pool.get_connection("pubsub")
        await pool.release(sub)
        await pool.disconnect()
        return pool, c

    pool, c = asyncio.run(main())
    assert (12, 1, id(pool), 0) in bridge.of("open")  # the pool: a pool handle
    assert (12, 0, id(c), 0) in bridge.of("open") and (id(c), 77) in bridge.of("adopt_fd")
    assert bridge.of("checkout") == [(id(pool), id(c))]  # pubsub is not a checkout
    assert (id(pool), id(c)) in bridge.of("checkin")
    assert ("close", id(c)) in bridge.calls and ("close", id(pool)) in bridge.calls


# ------------------------------------------------------------------ asyncpg

def fake_asyncpg(monkeypatch):
    cu = types.ModuleType("asyncpg.connect_utils")
    cm = types.ModuleType("asyncpg.connection")
    pm = types.ModuleType("asyncpg.pool")

    class Sock:
        def fileno(self):
            return 55

    class Transport:
        def get_extra_info(self, name):
            return Sock()

    class Connection:
        def __init__(self):
            self._transport = Transport()

        def _cleanup(self):
            self._transport = None

    async def _connect_addr(**kw):
        return Connection()

    class PoolConnectionHolder:
        __slots__ = ("_pool", "_con")

        def __init__(self, pool):
            self._pool, self._con = pool, None

        async def acquire(self):
            if self._con is None:
                self._con = await self._pool._get_new_connection()
            return ("proxy", self._con)

        def _release(self):
            pass

    class Pool:
        def __init__(self):
            self.holder = PoolConnectionHolder(self)

        async def _get_new_connection(self):
            return await cu._connect_addr()

        async def close(self):
            pass

        def terminate(self):
            pass

    cu._connect_addr, cm.Connection = _connect_addr, Connection
    pm.Pool, pm.PoolConnectionHolder = Pool, PoolConnectionHolder
    monkeypatch.setitem(sys.modules, "asyncpg.connect_utils", cu)
    monkeypatch.setitem(sys.modules, "asyncpg.connection", cm)
    return cu, cm, pm


def test_asyncpg_connections_pools_and_checkouts(boot, bridge, monkeypatch):
    cu, cm, pm = fake_asyncpg(monkeypatch)
    boot["_load"]("asyncpg")["patch"](pm)

    async def main():
        direct = await cu._connect_addr(addr=None)
        pool = pm.Pool()
        proxy = await pool.holder.acquire()
        pool.holder._release()
        await pool.close()
        direct._cleanup()
        return direct, pool, proxy[1]

    direct, pool, member = asyncio.run(main())
    assert (10, 0, id(direct), 0) in bridge.of("open") and (id(direct), 55) in bridge.of("adopt_fd")
    assert (10, 1, id(pool), 0) in bridge.of("open")
    assert (10, 0, id(member), 0) in bridge.of("open")
    assert bridge.of("checkin")[0] == (id(pool), id(member))  # a member, idle until acquired
    assert bridge.of("checkout") == [(id(pool), id(member))]
    assert bridge.of("checkin")[-1] == (id(pool), id(member))
    assert ("close", id(pool)) in bridge.calls and ("close", id(direct)) in bridge.calls


# ------------------------------------------------------------------ psycopg 3, psycopg_pool

def fake_psycopg():
    m = types.ModuleType("psycopg.connection")
    pm = types.ModuleType("psycopg_pool.pool")

    class PGconn:
        def __init__(self, ptr):
            self.pgconn_ptr, self.socket = ptr, 90 + ptr

    class Connection:
        n = 0

        def __init__(self):
            Connection.n += 1
            self.pgconn, self.closed, self._pool = PGconn(Connection.n), False, None

        @classmethod
        def connect(cls, conninfo=""):
            return cls()

        def close(self):
            self.closed = True

    class ConnectionPool:
        def __init__(self, conninfo=""):
            self.free = [self._connect()]

        def _connect(self, timeout=None):
            c = Connection.connect()
            c._pool = self
            return c

        def getconn(self, timeout=None):
            return self.free.pop()

        def putconn(self, conn):
            self.free.append(conn)

        def close(self, timeout=5.0):
            pass

    Connection.__module__, ConnectionPool.__module__ = m.__name__, pm.__name__
    m.Connection, pm.ConnectionPool = Connection, ConnectionPool
    return m, pm


def test_psycopg3_connections_and_pool(boot, bridge):
    m, pm = fake_psycopg()
    ns = boot["_load"]("psycopg")
    ns["patch_connection"](m)
    ns["patch_pool"](pm)
    c = m.Connection.connect("dsn")
    assert isinstance(c, m.Connection)
    k = c.pgconn.pgconn_ptr
    assert (11, 0, k, 0) in bridge.of("open") and (k, 90 + k) in bridge.of("adopt_fd")
    c.close()
    assert ("close", k) in bridge.calls
    pool = pm.ConnectionPool("dsn")
    member = pool.free[0]
    mk = member.pgconn.pgconn_ptr
    assert (11, 1, id(pool), 0) in bridge.of("open")
    # made by the pool (a worker thread in psycopg_pool): registered once, with the pool's stack
    assert [o for o in bridge.of("open") if o[2] == mk] == [(11, 0, mk, id(pool))]
    assert ("scope", 4242) in bridge.calls and bridge.depth == 0
    got = pool.getconn()
    assert got is member and bridge.of("checkout") == [(id(pool), mk)]
    pool.putconn(got)
    assert bridge.of("checkin")[-1] == (id(pool), mk)
    pool.close()
    assert ("close", id(pool)) in bridge.calls

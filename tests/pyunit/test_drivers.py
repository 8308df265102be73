"""The driver patches on stand-in classes shaped like the real drivers' (no server, no driver):
what each wrapper tells the core, and that the program sees exactly what the original returned."""

import types

import pytest


def fake_psycopg2_pool():
    m = types.ModuleType("psycopg2.pool")

    class Conn:
        closed = 0

        def __init__(self, ptr):
            self.pgconn_ptr = ptr

        def fileno(self):
            return 100 + self.pgconn_ptr

    class AbstractConnectionPool:
        def __init__(self, n):
            self._pool, self._used, self._next = [], {}, 1
            for _ in range(n):
                self._pool.append(self._connect())

        def _connect(self):
            c = Conn(self._next)
            self._next += 1
            return c

        def _getconn(self):
            c = self._pool.pop() if self._pool else self._connect()
            self._used[id(c)] = c
            return c

        def _putconn(self, conn):
            self._used.pop(id(conn), None)
            self._pool.append(conn)

        def _closeall(self):
            for c in self._pool + list(self._used.values()):
                c.closed = 1

    class SimpleConnectionPool(AbstractConnectionPool):
        getconn = AbstractConnectionPool._getconn  # bound at class creation, as in psycopg2
        putconn = AbstractConnectionPool._putconn
        closeall = AbstractConnectionPool._closeall

    m.AbstractConnectionPool, m.SimpleConnectionPool = AbstractConnectionPool, SimpleConnectionPool
    return m


def test_psycopg2_pool_checkouts_and_closeall(boot, bridge):
    m = fake_psycopg2_pool()
    boot["_load"]("psycopg2")["patch_pool"](m)
    pool = m.SimpleConnectionPool(2)
    assert ("open", 7, 1, id(pool), 0) in bridge.calls  # the pool handle
    members = [c for c in bridge.of("open") if c[1] == 0]
    assert [c[2] for c in members] == [1, 2] and all(c[3] == id(pool) for c in members)
    assert bridge.of("adopt_fd") == [(1, 101), (2, 102)]
    c = pool.getconn()  # the class attribute bound before patching was swapped too
    assert bridge.of("checkout")[-1] == (id(pool), c.pgconn_ptr)
    pool.putconn(c)
    assert bridge.of("checkin")[-1] == (id(pool), c.pgconn_ptr)
    pool.closeall()
    assert ("close", 1) in bridge.calls and ("close", 2) in bridge.calls and ("close", id(pool)) in bridge.calls


def fake_redis_connection():
    m = types.ModuleType("redis.connection")

    class Connection:
        def __init__(self):
            self._sock = None

        def _connect(self):
            return object()

        def connect(self):
            if self._sock is None:
                self._sock = self._connect()

        def disconnect(self):
            self._sock = None

    class ConnectionPool:
        def __init__(self):
            self._free = []

        def get_connection(self, command_name, *keys):
            c = self._free.pop() if self._free else Connection()
            c.connect()
            return c

        def release(self, connection):
            self._free.append(connection)

        def disconnect(self):
            for c in self._free:
                c.disconnect()

    m.Connection, m.ConnectionPool = Connection, ConnectionPool
    return m


def test_redis_shared_pool_connections_and_checkouts(boot, bridge):
    m = fake_redis_connection()
    boot["_load"]("redis")["patch_connection"](m)
    pool = m.ConnectionPool()  # made by the program: a shared pool handle
    assert ("open", 6, 1, id(pool), 0) in bridge.calls
    c = pool.get_connection("PING")
    opens = [o for o in bridge.of("open") if o[1] == 0]
    assert opens == [(6, 0, id(c), id(pool))]
    assert bridge.depth == 0 and ("push", 6, id(c), 0, 0) in bridge.calls  # scoped connect, balanced
    assert bridge.of("checkout") == [(id(pool), id(c))]
    pool.release(c)
    assert bridge.of("checkin") == [(id(pool), id(c))]
    sub = pool.get_connection("pubsub")
    assert sub is c and len(bridge.of("checkout")) == 1  # a subscriber's connection is not a checkout
    pool.release(sub)
    pool.disconnect()
    assert ("close", id(c)) in bridge.calls and ("close", id(pool)) in bridge.calls


def test_redis_failed_connect_closes_its_handle_and_reraises(boot, bridge):
    m = fake_redis_connection()

    def refuse(self):
        raise ConnectionError("refused")

    m.Connection._connect = refuse
    boot["_load"]("redis")["patch_connection"](m)
    c = m.Connection()
    with pytest.raises(ConnectionError):
        c.connect()
    assert ("close", id(c)) in bridge.calls and bridge.depth == 0


def test_redis_client_own_pool_is_the_client(boot, bridge):
    client_mod, conn_mod = types.ModuleType("redis.client"), fake_redis_connection()

    class Redis:
        def __init__(self):
            self.connection_pool = conn_mod.ConnectionPool()

    client_mod.Redis = client_mod.StrictRedis = Redis
    ns = boot["_load"]("redis")
    ns["patch_connection"](conn_mod)
    ns["patch_client"](client_mod)
    r = Redis()
    # issue 10: the pool Redis() makes is a pool handle too: a client per request is then counted
    # as clients, each holding the connections of its pool
    p = id(r.connection_pool)
    assert bridge.of("open") == [(6, 1, p, 0)]
    c = r.connection_pool.get_connection("GET")
    assert bridge.of("open")[1:] == [(6, 0, id(c), p)] and bridge.of("checkout") == [(p, id(c))]


def test_redis_client_itself_is_not_wrapped(boot, bridge):
    client_mod = types.ModuleType("redis.client")

    class Redis:
        def __init__(self):
            pass

    init = Redis.__init__
    client_mod.Redis = client_mod.StrictRedis = Redis  # as in redis-py: StrictRedis is Redis
    boot["_load"]("redis")["patch_client"](client_mod)
    assert Redis.__init__ is init  # every Redis() pays nothing: its pool registers itself


def test_redis_pool_with_reset_is_registered_by_reset_once(boot, bridge):
    m = fake_redis_connection()
    resets = []

    class ResettingPool(m.ConnectionPool):  # redis-py's pools end __init__ with reset()
        def __init__(self, **kw):
            self.kw = kw
            self.reset()

        def reset(self):
            resets.append(self)

        def get_connection(self, command_name, *keys):
            return m.ConnectionPool.get_connection(self, command_name, *keys)

    m.ConnectionPool = ResettingPool
    boot["_load"]("redis")["patch_connection"](m)
    pool = m.ConnectionPool(host="h", port=1)
    assert pool.kw == {"host": "h", "port": 1} and resets == [pool]
    pool.reset()  # after a fork: the same pool, not a second handle
    assert [o for o in bridge.of("open") if o[1] == 1] == [(6, 1, id(pool), 0)]


def test_pymongo_pool_sockets_are_clients_and_monitors_background(boot, bridge):
    topo_mod, pool_mod = types.ModuleType("pymongo.topology"), types.ModuleType("pymongo.pool")

    class Sock:
        def fileno(self):
            return 55

    class Connection:
        def __init__(self):
            self.sock, self.closed = Sock(), False

        def close_socket(self, reason=None):
            self.closed = True

    class Pool:
        def __init__(self, handshake=True):
            self.handshake = handshake

        def connect(self):
            return Connection()

        def _get_conn(self):
            return self.connect()

        def checkin(self, conn):
            pass

    class Topology:
        def __init__(self):
            pass

        def _create_pool_for_server(self, addr):
            return Pool()

        def _create_pool_for_monitor(self, addr):
            return Pool(handshake=False)

    topo_mod.Topology, pool_mod.Pool, pool_mod.Connection = Topology, Pool, Connection
    ns = boot["_load"]("pymongo")
    ns["patch_topology"](topo_mod)
    ns["patch_pool"](pool_mod)
    t = Topology()
    app, mon = t._create_pool_for_server("a"), t._create_pool_for_monitor("a")
    s = app._get_conn()
    assert ("push", 5, 0, 0, 0) in bridge.calls and ("scope", 4242) in bridge.calls  # client's stack
    # the client is a pool handle; its sockets are clients in it, idle until checked out
    assert (5, 1, id(t), 0) in bridge.of("open")
    assert (5, 0, id(s), id(t)) in bridge.of("open") and (id(s), 55) in bridge.of("adopt_fd")
    assert bridge.of("checkout")[-1] == (id(t), id(s)) and id(s) in boot["_msocks"]
    app.checkin(s)
    assert bridge.of("checkin")[-1] == (id(t), id(s))
    m = mon.connect()
    assert ("push", 5, 0, 0, 1) in bridge.calls and not [o for o in bridge.of("open") if o[2] == id(m)]
    s.close_socket()
    assert ("close", id(s)) in bridge.calls and id(s) not in boot["_msocks"]
    assert bridge.depth == 0


def test_sqlalchemy_pool_events_with_a_real_sqlalchemy_pool(boot, bridge):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.pool import QueuePool

    class DBAPIConn:  # looks like psycopg2's connection to the patch
        _n = 0

        def __init__(self):
            DBAPIConn._n += 1
            self.pgconn_ptr = 9000 + DBAPIConn._n

        def fileno(self):
            return 7

        def rollback(self):
            pass

        def close(self):
            pass

    # listens on sqlalchemy.pool.Pool for the rest of this test process (nothing else here uses it)
    boot["_load"]("sqlalchemy")["patch"](sqlalchemy)
    pool = QueuePool(DBAPIConn, pool_size=2)
    c = pool.connect()
    key = c.dbapi_connection.pgconn_ptr
    assert (8, 1, id(pool), 0) in bridge.of("open") and (8, 0, key, id(pool)) in bridge.of("open")
    assert bridge.of("checkout")[-1] == (id(pool), key)
    c.close()
    assert bridge.of("checkin")[-1] == (id(pool), key)
    pool.dispose()
    assert ("close", key) in bridge.calls and ("close", id(pool)) in bridge.calls

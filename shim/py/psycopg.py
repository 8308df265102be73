# leakshim: psycopg 3 (Connection, AsyncConnection) and psycopg_pool (ConnectionPool,
# AsyncConnectionPool). Loaded by boot.py when psycopg.connection(_async) or psycopg_pool.pool(_async)
# is imported; sees the bridge (_ls_*) and boot's shared helpers.
#
# A connection is a client handle keyed by its PGconn* (the key the libpq hook uses, so the two
# agree) from connect() to close() or its garbage collection, its socket adopted whatever its
# address. A pool is a pool handle from its creation to close(); its connections are made by its
# worker threads, so they are given the pool's creation stack (the line to fix when a pool is
# never closed); getconn/putconn are the checkouts.
import inspect

_pg3 = {}  # id(connection) -> PGconn* key


def _key(conn):
    try:
        return conn.pgconn.pgconn_ptr or id(conn)
    except Exception:
        return id(conn)


def _opened(conn, pool=0, stack=0):
    k = _key(conn)
    _pg3[id(conn)] = k
    if stack:
        _ls_scope(stack)
    try:
        _ls_open(DRV_PSYCOPG, HK_CLIENT, k, pool)
    finally:
        if stack:
            _ls_pop()
    _on_death(conn, k)
    try:
        _ls_adopt_fd(k, conn.pgconn.socket)
    except Exception:
        pass
    if pool:
        _ls_checkin(pool, k)


def _closed(conn):
    k = _pg3.pop(id(conn), None)
    if k is not None and getattr(conn, 'closed', True):
        _ls_close(k)


def _both(orig, before, after):
    '''A wrapper for orig, sync or async alike: before(*args) -> state, after(state, result).'''
    if inspect.iscoroutinefunction(orig):
        async def w(*a, **kw):
            st = before(*a)
            r = await orig(*a, **kw)
            after(st, r)
            return r
    else:
        def w(*a, **kw):
            st = before(*a)
            r = orig(*a, **kw)
            after(st, r)
            return r
    return w


def _none(*a):
    return None


def patch_connection(m):
    def mk_connect(orig):
        def after(st, conn):
            if getattr(_tls, 'pg3_pool', 0):
                return  # the pool's _connect registers it, with the pool's stack
            _safe(_opened, conn)
        return _both(orig, _none, after)

    def mk_close(orig):
        return _both(orig, lambda self, *a: self, lambda self, r: _safe(_closed, self))
    for name in ('Connection', 'AsyncConnection'):
        C = getattr(m, name, None)
        if isinstance(C, type) and 'connect' in vars(C):
            _wrap(C, 'connect', mk_connect)
            _wrap(C, 'close', mk_close)


def patch_pool(m):
    def mk_init(orig):
        def __init__(self, *a, **kw):
            _safe(_ls_open, DRV_PSYCOPG, HK_POOL, id(self), 0)
            _safe(_on_death, self, id(self))
            try:
                self._leakshim_stack = _ls_capture()
            except Exception:
                pass
            return orig(self, *a, **kw)
        return __init__

    def mk_connect(orig):
        def after(st, conn):
            _safe(_opened, conn, id(st), getattr(st, '_leakshim_stack', 0))
        w = _both(orig, lambda self, *a: self, after)
        if inspect.iscoroutinefunction(orig):
            # an async pool connects in a task: AsyncConnection.connect registers the connection
            # first, and after() re-registers it with the pool's stack (a thread-local would be
            # seen by every task the loop runs meanwhile)
            return w

        def _connect(self, *a, **kw):
            prev = getattr(_tls, 'pg3_pool', 0)
            _tls.pg3_pool = id(self)  # a worker thread: Connection.connect leaves it to after()
            try:
                return w(self, *a, **kw)
            finally:
                _tls.pg3_pool = prev
        return _connect

    def mk_getconn(orig):
        return _both(orig, _none, lambda st, conn: _safe(_ls_checkout, id(conn._pool) if getattr(conn, '_pool', None)
                                                          else 0, _key(conn)))

    def mk_putconn(orig):
        def before(self, conn, *a):
            return self, conn
        return _both(orig, before, lambda st, r: _safe(_ls_checkin, id(st[0]), _key(st[1])))

    def mk_close(orig):
        return _both(orig, lambda self, *a: self, lambda self, r: _safe(_ls_close, id(self)))
    for cls in list(vars(m).values()):
        if not isinstance(cls, type) or cls.__module__ != m.__name__ or 'getconn' not in vars(cls):
            continue
        _wrap(cls, '__init__', mk_init)
        _wrap(cls, '_connect', mk_connect)
        _wrap(cls, 'getconn', mk_getconn)
        _wrap(cls, 'putconn', mk_putconn)
        _wrap(cls, 'close', mk_close)

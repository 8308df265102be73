# leakshim: asyncpg (connections, pools, checkouts). Loaded by boot.py when asyncpg.pool is
# imported (asyncpg's __init__ imports it); sees the bridge (_ls_*) and boot's shared helpers.
#
# Each Connection is a client handle from the moment connect_utils._connect_addr returns it (the
# one place both asyncpg.connect and a pool make connections) until Connection._cleanup (close,
# terminate, or the server going away) or its garbage collection; its socket is adopted whatever
# its address. asyncpg connects inside a task of its own (wait_for), but the handle is opened back
# in the awaiting task, and aio.py continues the stack into the tasks awaiting that one (a pool
# fills itself through gather), so the handle's stack names the program's `await` line. A Pool is
# a pool handle from Pool() (create_pool) to close/terminate; holder acquire/_release are the
# checkouts.


def _socket_fd(con):
    tr = getattr(con, '_transport', None)
    sock = tr.get_extra_info('socket') if tr is not None else None
    return sock.fileno() if sock is not None else -1


def _adopt(con):
    k = id(con)
    _ls_open(DRV_ASYNCPG, HK_CLIENT, k, 0)
    _on_death(con, k)
    _ls_adopt_fd(k, _socket_fd(con))


def patch(m):
    import sys
    cu = sys.modules.get('asyncpg.connect_utils')
    cm = sys.modules.get('asyncpg.connection')

    def mk_connect_addr(orig):
        async def _connect_addr(*a, **kw):
            con = await orig(*a, **kw)
            _safe(_adopt, con)
            return con
        return _connect_addr
    if cu is not None and callable(getattr(cu, '_connect_addr', None)):
        orig = cu._connect_addr
        w = mk_connect_addr(orig)
        w.__wrapped__ = orig
        cu._connect_addr = w

    def mk_cleanup(orig):
        def _cleanup(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                _safe(_ls_close, id(self))
        return _cleanup
    if cm is not None and isinstance(getattr(cm, 'Connection', None), type):
        _wrap(cm.Connection, '_cleanup', mk_cleanup)

    P = getattr(m, 'Pool', None)
    H = getattr(m, 'PoolConnectionHolder', None)
    if not isinstance(P, type):
        return

    def mk_pool_init(orig):
        def __init__(self, *a, **kw):
            _safe(_ls_open, DRV_ASYNCPG, HK_POOL, id(self), 0)
            _safe(_on_death, self, id(self))
            return orig(self, *a, **kw)
        return __init__

    def mk_new_conn(orig):
        async def _get_new_connection(self, *a, **kw):
            con = await orig(self, *a, **kw)
            _safe(_ls_checkin, id(self), id(con))  # a member of this pool, idle until acquired
            return con
        return _get_new_connection

    def mk_pool_close(orig):
        async def close(self, *a, **kw):
            try:
                return await orig(self, *a, **kw)
            finally:
                _safe(_ls_close, id(self))
        return close

    def mk_pool_terminate(orig):
        def terminate(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                _safe(_ls_close, id(self))
        return terminate
    _wrap(P, '__init__', mk_pool_init)
    _wrap(P, '_get_new_connection', mk_new_conn)
    _wrap(P, 'close', mk_pool_close)
    _wrap(P, 'terminate', mk_pool_terminate)
    if not isinstance(H, type):
        return

    def mk_acquire(orig):
        async def acquire(self, *a, **kw):
            proxy = await orig(self, *a, **kw)
            con = getattr(self, '_con', None)
            if con is not None:
                _safe(_ls_checkout, id(self._pool), id(con))
            return proxy
        return acquire

    def mk_release(orig):
        def _release(self, *a, **kw):
            con = getattr(self, '_con', None)
            try:
                return orig(self, *a, **kw)
            finally:
                if con is not None:
                    _safe(_ls_checkin, id(self._pool), id(con))
        return _release
    _wrap(H, 'acquire', mk_acquire)
    _wrap(H, '_release', mk_release)

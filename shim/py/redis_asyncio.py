# leakshim: redis.asyncio (pools, connections, checkouts). Loaded by boot.py when
# redis.asyncio.connection or redis.asyncio.client is imported; sees the bridge (_ls_*) and boot's
# shared helpers.
#
# Every ConnectionPool is a pool handle from its creation to disconnect() (or its garbage
# collection), the one redis.asyncio.Redis() makes for itself included: a client per request is
# then a pool per request, reported at the Redis(...) line. Each connected Connection is a client
# handle from connect to disconnect, its socket adopted whatever its address; get_connection and
# release are the checkouts.


def _writer_fd(conn):
    w = getattr(conn, '_writer', None)
    tr = getattr(w, 'transport', None)
    sock = tr.get_extra_info('socket') if tr is not None else None
    return sock.fileno() if sock is not None else -1


def _opened(conn):
    k = id(conn)
    _ls_open(DRV_REDIS_ASYNCIO, HK_CLIENT, k, 0)
    _on_death(conn, k)
    _ls_adopt_fd(k, _writer_fd(conn))


def patch_client(m):
    pass  # the pool Redis() makes is tracked by ConnectionPool.__init__ (patch_connection)


def patch_connection(m):
    def mk_pool_init(orig):
        def __init__(self, *a, **kw):
            _safe(_ls_open, DRV_REDIS_ASYNCIO, HK_POOL, id(self), 0)
            _safe(_on_death, self, id(self))
            return orig(self, *a, **kw)
        return __init__

    def mk_get(orig):
        async def get_connection(self, command_name, *a, **kw):
            conn = await orig(self, command_name, *a, **kw)
            # a pubsub connection is held for the subscriber's life by design: not a checkout
            if command_name != 'pubsub':
                _safe(_ls_checkout, id(self), id(conn))
            else:
                _safe(_ls_checkin, id(self), id(conn))
            return conn
        return get_connection

    def mk_release(orig):
        async def release(self, connection, *a, **kw):
            try:
                return await orig(self, connection, *a, **kw)
            finally:
                _safe(_ls_checkin, id(self), id(connection))
        return release

    def mk_pool_disconnect(orig):
        async def disconnect(self, *a, **kw):
            try:
                return await orig(self, *a, **kw)
            finally:
                _safe(_ls_close, id(self))
        return disconnect

    def mk_connect(orig):
        async def connect(self):
            was = getattr(self, '_writer', None) is not None
            r = await orig(self)
            if not was and getattr(self, '_writer', None) is not None:
                _safe(_opened, self)
            return r
        return connect

    def mk_disconnect(orig):
        async def disconnect(self, *a, **kw):
            try:
                return await orig(self, *a, **kw)
            finally:
                if getattr(self, '_writer', None) is None:
                    _safe(_ls_close, id(self))
        return disconnect
    for cls in list(vars(m).values()):
        if not isinstance(cls, type) or cls.__module__ != m.__name__:
            continue
        if 'get_connection' in vars(cls):
            if '__init__' in vars(cls):
                _wrap(cls, '__init__', mk_pool_init)
            _wrap(cls, 'get_connection', mk_get)
            _wrap(cls, 'release', mk_release)
            _wrap(cls, 'disconnect', mk_pool_disconnect)
        elif 'connect' in vars(cls) and 'disconnect' in vars(cls):
            _wrap(cls, 'connect', mk_connect)
            _wrap(cls, 'disconnect', mk_disconnect)

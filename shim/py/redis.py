# leakshim: redis-py (pools, connections, checkouts). Loaded by boot.py when redis.client or
# redis.connection is imported; sees the bridge (_ls_*) and boot's shared helpers.
#
# Every pool is a pool handle, the one Redis() makes for itself included (issue 10: a client made per
# request and never closed is counted as a client, with the connections its pool holds). Each connected Connection is a client handle
# (in its shared pool, if any) from connect to disconnect; get_connection/release are checkouts.
_rpools = {}
_rconns = {}


def _redis_pool_handle(pool):
    if pool is None or not _rpools.get(id(pool)):
        return 0
    if not _ls_known(id(pool)):
        _ls_open(DRV_REDISPY, HK_POOL, id(pool), 0)
    return id(pool)


def patch_client(m):
    def private(orig):
        def wrapper(*a, **kw):
            _tls.redis_private = getattr(_tls, 'redis_private', 0) + 1
            try:
                return orig(*a, **kw)
            finally:
                _tls.redis_private -= 1
        return wrapper
    for cls in (getattr(m, 'Redis', None), getattr(m, 'StrictRedis', None)):
        if isinstance(cls, type):
            _wrap(cls, '__init__', private)
            _wrap(cls, 'from_url', private)


def patch_connection(m):
    def mk_pool_init(orig):
        def __init__(self, *a, **kw):
            shared = True  # a client's own pool too: a client is counted as its pool (issue 10)
            _rpools[id(self)] = shared
            if shared:
                _safe(_ls_open, DRV_REDISPY, HK_POOL, id(self), 0)
            try:
                r = _weakref.ref(self, lambda r, key=id(self), shared=shared: (
                    _refs.pop(id(r), None), _rpools.pop(key, None), shared and _ls_close(key)))
                _refs[id(r)] = r
            except TypeError:
                pass
            orig(self, *a, **kw)
        return __init__
    def mk_get(orig):
        def get_connection(self, command_name, *a, **kw):
            prev = getattr(_tls, 'redis_pool', None)
            _tls.redis_pool = self
            try:
                conn = orig(self, command_name, *a, **kw)
            finally:
                _tls.redis_pool = prev
            # a pubsub connection is held for the subscriber's life by design: not a checkout
            if command_name != 'pubsub' and id(conn) in _rconns:
                _safe(_ls_checkout, _redis_pool_handle(self), id(conn))
            return conn
        return get_connection
    def mk_release(orig):
        def release(self, connection, *a, **kw):
            orig(self, connection, *a, **kw)
            if id(connection) in _rconns:
                _safe(_ls_checkin, _redis_pool_handle(self), id(connection))
        return release
    def mk_pool_disconnect(orig):
        def disconnect(self, *a, **kw):
            orig(self, *a, **kw)
            if _rpools.get(id(self)):
                _safe(_ls_close, id(self))
        return disconnect
    def mk_connect(orig):
        def connect(self):
            if getattr(self, '_sock', None) is not None:
                return orig(self)
            pool = getattr(_tls, 'redis_pool', None)
            h = id(self)
            _ls_push(DRV_REDISPY, h, 0, 0)  # one stack walk, reused by the open below
            try:
                _safe(_ls_open, DRV_REDISPY, HK_CLIENT, h, _redis_pool_handle(pool))
                orig(self)
            except BaseException:
                if getattr(self, '_sock', None) is None:
                    _safe(_ls_close, h)
                raise
            finally:
                _ls_pop()
            _rconns[h] = True
        return connect
    def mk_disconnect(orig):
        def disconnect(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                if _rconns.pop(id(self), None) and getattr(self, '_sock', None) is None:
                    _safe(_ls_close, id(self))
        return disconnect
    for cls in list(vars(m).values()):
        if not isinstance(cls, type):
            continue
        if 'get_connection' in vars(cls):
            if cls.__name__ == 'ConnectionPool':
                _wrap(cls, '__init__', mk_pool_init)
            _wrap(cls, 'get_connection', mk_get)
            _wrap(cls, 'release', mk_release)
            _wrap(cls, 'disconnect', mk_pool_disconnect)
        elif 'connect' in vars(cls) and 'disconnect' in vars(cls) and hasattr(cls, '_connect'):
            _wrap(cls, 'connect', mk_connect)
            _wrap(cls, 'disconnect', mk_disconnect)

# leakshim: redis-py (pools, connections, checkouts). Loaded by boot.py when redis.client or
# redis.connection is imported; sees the bridge (_ls_*) and boot's shared helpers.
#
# Every pool is a pool handle, the one Redis() makes for itself included (issue 10: a client made
# per request and never closed is counted as a client, with the connections its pool holds). Each
# connected Connection is a client handle in its pool from connect to disconnect;
# get_connection/release are checkouts.
#
# These wrappers run on every command (get_connection/release) and every connect, so they are
# kept short: the bridge functions are C and never raise (no _safe around them), pools are
# registered from reset() (no copy of Redis()'s ~20 keyword arguments), and Redis itself is not
# wrapped at all.
_rpools = set()  # ids of live pools (each with a weak reference that removes it)
_rconns = set()  # ids of connected Connections we track


def patch_client(m):
    # Nothing to do since every pool is a handle: the client needs no wrapper (it used to mark
    # its own pool private). Kept so that an import of redis.client finds its entry.
    return None


def patch_connection(m):
    def register(self):
        # a pool handle, at the line that made the pool (the Redis() line for a client's own)
        key = id(self)
        if key in _rpools:
            return
        _rpools.add(key)
        _ls_open(DRV_REDISPY, HK_POOL, key, 0)
        try:
            r = _weakref.ref(self, lambda r, key=key: (
                _refs.pop(id(r), None), _rpools.discard(key), _ls_close(key)))
            _refs[id(r)] = r
        except TypeError:
            pass
    # redis-py's pools end __init__ with reset() (again after a fork): hooking reset() spares
    # every Redis() the copy of the ~20 keyword arguments an __init__ wrapper would make.
    def mk_pool_reset(orig):
        def reset(self):
            orig(self)
            register(self)
        return reset
    def mk_pool_init(orig):
        def __init__(self, *a, **kw):
            register(self)
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
                key = id(self)
                _ls_checkout(key if key in _rpools else 0, id(conn))
            return conn
        return get_connection
    def mk_release(orig):
        def release(self, connection, *a, **kw):
            orig(self, connection, *a, **kw)
            if id(connection) in _rconns:
                key = id(self)
                _ls_checkin(key if key in _rpools else 0, id(connection))
        return release
    def mk_pool_disconnect(orig):
        def disconnect(self, *a, **kw):
            orig(self, *a, **kw)
            if id(self) in _rpools:
                _ls_close(id(self))
        return disconnect
    def mk_connect(orig):
        def connect(self):
            if getattr(self, '_sock', None) is not None:
                return orig(self)
            pool = getattr(_tls, 'redis_pool', None)
            pkey = id(pool) if pool is not None else 0
            if pkey and pkey in _rpools and not _ls_known(pkey):
                _ls_open(DRV_REDISPY, HK_POOL, pkey, 0)  # closed by disconnect(), used again
            h = id(self)
            _ls_push(DRV_REDISPY, h, 0, 0)  # one stack walk, reused by the open below
            try:
                _ls_open(DRV_REDISPY, HK_CLIENT, h, pkey if pkey in _rpools else 0)
                orig(self)
            except BaseException:
                if getattr(self, '_sock', None) is None:
                    _ls_close(h)
                raise
            finally:
                _ls_pop()
            _rconns.add(h)
        return connect
    def mk_disconnect(orig):
        def disconnect(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                h = id(self)
                if h in _rconns and getattr(self, '_sock', None) is None:
                    _rconns.discard(h)
                    _ls_close(h)
        return disconnect
    for cls in list(vars(m).values()):
        if not isinstance(cls, type):
            continue
        if 'get_connection' in vars(cls):
            if 'reset' in vars(cls):
                _wrap(cls, 'reset', mk_pool_reset)
            elif cls.__name__ == 'ConnectionPool':
                _wrap(cls, '__init__', mk_pool_init)
            _wrap(cls, 'get_connection', mk_get)
            _wrap(cls, 'release', mk_release)
            _wrap(cls, 'disconnect', mk_pool_disconnect)
        elif 'connect' in vars(cls) and 'disconnect' in vars(cls) and hasattr(cls, '_connect'):
            _wrap(cls, 'connect', mk_connect)
            _wrap(cls, 'disconnect', mk_disconnect)

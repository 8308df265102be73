# leakshim: pymongo (pool sockets as client handles, monitors as background, checkouts). Loaded
# by boot.py when pymongo.topology or pymongo.pool is imported.
#
# Each application socket of a client's pools is a client handle (its SocketInfo)
# from connect to close, created where the MongoClient was made (the call to fix when a client
# is never closed); monitor sockets are background; each operation's checkout is a checkout.
# The MongoClient itself is not a handle: a client never used holds no connection.


def patch_topology(m):
    T = m.Topology
    def mk_init(orig):
        def __init__(self, *a, **kw):
            orig(self, *a, **kw)
            try:
                self._leakshim_stack = _ls_capture()
            except Exception:
                pass
        return __init__
    def mk_pool(bg):
        def mk(orig):
            def create(self, *a, **kw):
                pool = orig(self, *a, **kw)
                try:
                    pool._leakshim = (getattr(self, '_leakshim_stack', 0), bg)
                except Exception:
                    pass
                return pool
            return create
        return mk
    _wrap(T, '__init__', mk_init)
    _wrap(T, '_create_pool_for_server', mk_pool(0))
    _wrap(T, '_create_pool_for_monitor', mk_pool(1))


def _mongo_adopt(s, stack):
    _ls_scope(stack)
    try:
        _ls_open(DRV_PYMONGO, HK_CLIENT, id(s), 0)
    finally:
        _ls_pop()
    _msocks.add(id(s))
    _on_death(s, id(s))
    _ls_adopt_fd(id(s), s.sock.fileno())


def patch_pool(m):
    P = m.Pool
    def info(pool):
        i = getattr(pool, '_leakshim', None)
        if i is None:
            return 0, 0 if getattr(pool, 'handshake', True) else 1
        return i
    def mk_connect(orig):
        def connect(self, *a, **kw):
            stack, bg = info(self)
            _ls_push(DRV_PYMONGO, 0, 0, bg)
            try:
                s = orig(self, *a, **kw)
            finally:
                _ls_pop()
            if not bg:
                _safe(_mongo_adopt, s, stack)
            return s
        return connect
    def mk_checkout(orig):
        def checkout(self, *a, **kw):
            s = orig(self, *a, **kw)
            if id(s) in _msocks:
                _safe(_ls_checkout, 0, id(s))
            return s
        return checkout
    def mk_checkin(orig):
        def checkin(self, s, *a, **kw):
            try:
                return orig(self, s, *a, **kw)
            finally:
                if id(s) in _msocks:
                    _safe(_ls_checkin, 0, id(s))
        return checkin
    def mk_close(orig):
        def close_socket(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                if id(self) in _msocks and getattr(self, 'closed', True):
                    _msocks.discard(id(self))
                    _safe(_ls_close, id(self))
        return close_socket
    _wrap(P, 'connect', mk_connect)
    for name in ('_get_socket', '_get_conn'):
        if _wrap(P, name, mk_checkout):
            break
    for name in ('return_socket', 'checkin'):
        if _wrap(P, name, mk_checkin):
            break
    for cname in ('SocketInfo', 'Connection'):
        C = getattr(m, cname, None)
        if isinstance(C, type) and 'close_socket' in vars(C):
            _wrap(C, 'close_socket', mk_close)
            break

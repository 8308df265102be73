# leakshim: pymongo and Motor (clients, pool sockets, monitors, checkouts). Loaded by boot.py when
# pymongo.topology, pymongo.pool or motor.core is imported.
#
# A MongoClient (its Topology) is a pool handle from its creation to close(), created where the
# program made the client (Motor's client makes one inside: driver "motor"). Each application
# socket of its pools is a client handle (its SocketInfo) in that pool from connect to close,
# idle-in-pool between operations and checked-out during one (pymongo's checkout/checkin); the
# monitor sockets belong to the client handle itself, as background. So a client never closed is
# one client holding its pooled and monitoring sockets, at the line that made it.


def patch_topology(m):
    T = m.Topology
    def mk_init(orig):
        def __init__(self, *a, **kw):
            orig(self, *a, **kw)
            try:
                drv = DRV_MOTOR if getattr(_tls, 'motor', 0) else DRV_PYMONGO
                self._leakshim_stack = _ls_capture()
                self._leakshim_drv = drv
                _ls_scope(self._leakshim_stack)
                try:
                    _ls_open(drv, HK_POOL, id(self), 0)
                finally:
                    _ls_pop()
                _on_death(self, id(self))
            except Exception:
                pass
        return __init__
    def mk_close(orig):
        def close(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                self._leakshim_closed = True
                _safe(_ls_close, id(self))
        return close
    def reopened(self):
        # a closed client used again reopens (pymongo: "Topology reopens on demand")
        self._leakshim_closed = False
        _ls_scope(getattr(self, '_leakshim_stack', 0))
        try:
            _ls_open(getattr(self, '_leakshim_drv', DRV_PYMONGO), HK_POOL, id(self), 0)
        finally:
            _ls_pop()
    def mk_open(orig):
        def open(self, *a, **kw):
            if getattr(self, '_leakshim_closed', False):
                _safe(reopened, self)
            return orig(self, *a, **kw)
        return open
    def mk_pool(bg):
        def mk(orig):
            def create(self, *a, **kw):
                pool = orig(self, *a, **kw)
                try:
                    pool._leakshim = (getattr(self, '_leakshim_stack', 0), bg, id(self),
                                      getattr(self, '_leakshim_drv', DRV_PYMONGO))
                except Exception:
                    pass
                return pool
            return create
        return mk
    _wrap(T, '__init__', mk_init)
    _wrap(T, 'close', mk_close)
    _wrap(T, 'open', mk_open)
    _wrap(T, '_create_pool_for_server', mk_pool(0))
    _wrap(T, '_create_pool_for_monitor', mk_pool(1))


def _mongo_adopt(s, stack, topo, drv):
    _ls_scope(stack)
    try:
        _ls_open(drv, HK_CLIENT, id(s), topo)
    finally:
        _ls_pop()
    _msocks[id(s)] = topo
    _on_death(s, id(s))
    _ls_adopt_fd(id(s), s.sock.fileno())
    _ls_checkin(topo, id(s))  # in the pool, idle until an operation checks it out


def _monitor_adopt(s, topo):
    if topo and _ls_known(topo):
        _ls_adopt_fd(topo, s.sock.fileno())  # the client's own socket (background)


def patch_motor(m):
    '''Motor's client builds its pymongo MongoClient inside: that client is Motor's.'''
    C = getattr(m, 'AgnosticClient', None)
    def mk(orig):
        def __init__(self, *a, **kw):
            _tls.motor = getattr(_tls, 'motor', 0) + 1
            try:
                return orig(self, *a, **kw)
            finally:
                _tls.motor -= 1
        return __init__
    if isinstance(C, type):
        _wrap(C, '__init__', mk)


def patch_pool(m):
    P = m.Pool
    def info(pool):
        i = getattr(pool, '_leakshim', None)
        if i is None:
            return 0, 0 if getattr(pool, 'handshake', True) else 1, 0, DRV_PYMONGO
        return i
    def mk_connect(orig):
        def connect(self, *a, **kw):
            stack, bg, topo, drv = info(self)
            _ls_push(drv, 0, 0, bg)
            try:
                s = orig(self, *a, **kw)
            finally:
                _ls_pop()
            _safe(_monitor_adopt if bg else _mongo_adopt, s, *((topo,) if bg else (stack, topo, drv)))
            return s
        return connect
    def mk_checkout(orig):
        def checkout(self, *a, **kw):
            s = orig(self, *a, **kw)
            if id(s) in _msocks:
                _safe(_ls_checkout, _msocks[id(s)], id(s))
            return s
        return checkout
    def mk_checkin(orig):
        def checkin(self, s, *a, **kw):
            try:
                return orig(self, s, *a, **kw)
            finally:
                if id(s) in _msocks:
                    _safe(_ls_checkin, _msocks[id(s)], id(s))
        return checkin
    def mk_close(orig):
        def close_socket(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                if id(self) in _msocks and getattr(self, 'closed', True):
                    _msocks.pop(id(self), None)
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

# leakshim: psycopg2.pool (getconn/putconn checkouts). Loaded by boot.py when psycopg2.pool is
# imported; sees the bridge (_ls_*) and boot's shared helpers. Connections are keyed by PGconn*.


def patch_pool(m):
    A = m.AbstractConnectionPool
    swaps = {}
    def mk_init(orig):
        def __init__(self, *a, **kw):
            _safe(_ls_open, DRV_PSYCOPG2, HK_POOL, id(self), 0)
            _safe(_on_death, self, id(self))
            orig(self, *a, **kw)
        return __init__
    def mk_connect(orig):
        def _connect(self, *a, **kw):
            conn = orig(self, *a, **kw)
            _safe(_pg_member, DRV_PSYCOPG2, self, conn)
            return conn
        return _connect
    def mk_getconn(orig):
        def _getconn(self, *a, **kw):
            conn = orig(self, *a, **kw)
            _safe(_ls_checkout, id(self), _pgkey(conn))
            return conn
        return _getconn
    def mk_putconn(orig):
        def _putconn(self, conn, *a, **kw):
            k = _pgkey(conn)
            orig(self, conn, *a, **kw)
            if getattr(conn, 'closed', 0):
                _safe(_ls_close, k)
            else:
                _safe(_ls_checkin, id(self), k)
        return _putconn
    def mk_closeall(orig):
        def _closeall(self, *a, **kw):
            try:
                keys = [_pgkey(c) for c in list(self._pool) + list(self._used.values())]
            except Exception:
                keys = []
            orig(self, *a, **kw)
            for k in keys:
                _safe(_ls_close, k)
            _safe(_ls_close, id(self))
        return _closeall
    for attr, mk in (('__init__', mk_init), ('_connect', mk_connect), ('_getconn', mk_getconn),
                     ('_putconn', mk_putconn), ('_closeall', mk_closeall)):
        r = _wrap(A, attr, mk)
        if r:
            swaps[r[0]] = r[1]
    # SimpleConnectionPool binds getconn = AbstractConnectionPool._getconn at class creation
    for cls in list(vars(m).values()):
        if isinstance(cls, type) and issubclass(cls, A):
            for attr, v in list(vars(cls).items()):
                if v in swaps:
                    setattr(cls, attr, swaps[v])

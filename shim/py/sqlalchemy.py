# leakshim: SQLAlchemy pools through its own pool events. Loaded by boot.py when sqlalchemy is
# imported; the DB-API connection is keyed like psycopg2's (_pgkey).
_sa_pools = set()
_sa_owned = set()


def patch(sa):
    from sqlalchemy import event
    from sqlalchemy.pool import Pool
    def pool_of(rec):
        return getattr(rec, '_ConnectionRecord__pool', None)
    def on_connect(dbapi_conn, rec):
        pool = pool_of(rec)
        if pool is None or type(dbapi_conn).__module__.startswith(('sqlite3', 'pysqlite')):
            return
        if id(pool) not in _sa_pools:
            _sa_pools.add(id(pool))
            stack = getattr(pool, '_leakshim_stack', 0)  # where the engine (its pool) was made
            if stack:
                _ls_scope(stack)
            try:
                _ls_open(DRV_SQLALCHEMY, HK_POOL, id(pool), 0)
            finally:
                if stack:
                    _ls_pop()
            def gone(key):
                _sa_pools.discard(key)
                _ls_close(key)
            r = _weakref.ref(pool, lambda r, key=id(pool): (_refs.pop(id(r), None), gone(key)))
            _refs[id(r)] = r
        k = _pgkey(dbapi_conn)
        if not _ls_known(k):
            _sa_owned.add(k)
        _pg_member(DRV_SQLALCHEMY, pool, dbapi_conn)
    def on_checkout(dbapi_conn, rec, proxy):
        pool = pool_of(rec)
        if pool is not None and id(pool) in _sa_pools:
            _ls_checkout(id(pool), _pgkey(dbapi_conn))
    def on_checkin(dbapi_conn, rec):
        pool = pool_of(rec)
        if dbapi_conn is not None and pool is not None and id(pool) in _sa_pools:
            _ls_checkin(id(pool), _pgkey(dbapi_conn))
    def on_close(dbapi_conn, rec=None):
        k = _pgkey(dbapi_conn)
        if k in _sa_owned:
            _sa_owned.discard(k)
            _ls_close(k)
    def guard(f):
        def handler(*a):
            _safe(f, *a)
        return handler
    event.listen(Pool, 'connect', guard(on_connect))
    event.listen(Pool, 'checkout', guard(on_checkout))
    event.listen(Pool, 'checkin', guard(on_checkin))
    event.listen(Pool, 'close', guard(on_close))
    event.listen(Pool, 'close_detached', guard(on_close))
    def mk_dispose(orig):
        def dispose(self, *a, **kw):
            try:
                return orig(self, *a, **kw)
            finally:
                if id(self) in _sa_pools:
                    _sa_pools.discard(id(self))
                    _safe(_ls_close, id(self))
        return dispose
    def mk_pool_init(orig):
        def __init__(self, *a, **kw):
            orig(self, *a, **kw)
            try:
                self._leakshim_stack = _ls_capture()
            except Exception:
                pass
        return __init__
    import sqlalchemy.pool as sp
    seen = set()
    for cls in list(vars(sp).values()):
        if isinstance(cls, type) and issubclass(cls, Pool) and cls not in seen:
            seen.add(cls)
            _wrap(cls, 'dispose', mk_dispose)
    _wrap(Pool, '__init__', mk_pool_init)

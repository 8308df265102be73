# leakshim's Python side: the bootstrap. Embedded in libleakshim.so at build time and run once by
# shim/hook_python.c, with the GIL held, just before the program's own code, in a private
# namespace: nothing is added to sys.modules or __main__. Its globals come from the C side:
#   _ls_open/_ls_close/_ls_known/_ls_adopt_fd/_ls_checkout/_ls_checkin/_ls_push/_ls_pop/
#   _ls_capture/_ls_scope/_ls_report_exit/_ls_warn/_ls_verbosity (the bridge into the core),
#   _ls_source(name) / _ls_code(name) (the text / code object of another embedded file), DRV_* and
#   HK_* constants, and
#   _LS_INSTALL (False in unit tests: load without touching the interpreter).
#
# The driver patches live in one file per driver family (psycopg2.py, redis.py, pymongo.py,
# sqlalchemy.py) and are compiled only when that driver is imported. Every wrapper calls the
# original exactly as before and never lets an error of ours escape into the program. Frames of
# these files ("<leakshim>/...") are left out of captured stacks.
import sys

_had = set(sys.modules)
import atexit, _thread, _weakref  # noqa: E401,E402

for _n in ('atexit', '_thread', '_weakref'):
    if _n not in _had:
        sys.modules.pop(_n, None)  # leave sys.modules as the program would find it
del _had

_tls = _thread._local()
_refs = {}
_msocks = {}  # pymongo sockets we track (pymongo.py) -> their client's handle; dropped by _on_death too


def _on_death(obj, key):
    # close the handle when the object is garbage collected (before its id can be reused)
    def cb(r, key=key):
        _refs.pop(id(r), None)
        _msocks.pop(key, None)
        _ls_close(key)
    try:
        r = _weakref.ref(obj, cb)
    except TypeError:
        return
    _refs[id(r)] = r


def _wrap(cls, attr, make):
    orig = cls.__dict__.get(attr)
    if orig is None:
        return None
    kind = type(orig)
    fn = orig.__func__ if kind in (classmethod, staticmethod) else orig
    w = make(fn)
    for a in ('__module__', '__name__', '__qualname__', '__doc__'):
        try:
            setattr(w, a, getattr(fn, a))
        except Exception:
            pass
    w.__wrapped__ = fn
    setattr(cls, attr, kind(w) if kind in (classmethod, staticmethod) else w)
    return fn, w


def _safe(f, *a):
    try:
        f(*a)
    except Exception as e:
        if _ls_verbosity() > 0:
            _ls_warn('python hook %s failed: %r' % (getattr(f, '__name__', f), e))


# A DB-API connection over libpq (psycopg2, SQLAlchemy on psycopg2) is keyed by its PGconn*, so
# it is the same handle the libpq hook tracks (or ours, if libpq is not hooked).
def _pgkey(conn):
    try:
        return conn.pgconn_ptr or id(conn)
    except Exception:
        return id(conn)


def _pg_member(drv, pool, conn):
    k = _pgkey(conn)
    if not _ls_known(k):
        _ls_open(drv, HK_CLIENT, k, id(pool))
        try:
            _ls_adopt_fd(k, conn.fileno())
        except Exception:
            pass
    _ls_checkin(id(pool), k)


# ---- driver files, compiled when first needed
class _Source:
    '''Gives tracebacks and linecache the text of the embedded files (they have no path).'''
    @staticmethod
    def get_source(fullname):
        return _ls_source(fullname.rpartition('.')[2] + '.py')


__loader__ = _Source  # tracebacks through boot.py show its lines too
_SHARED = ('_tls', '_refs', '_msocks', '_weakref', '_on_death', '_wrap', '_safe', '_pgkey', '_pg_member')
_files = {}


def _load(name):
    '''Runs <leakshim>/NAME.py once, in a namespace of its own that sees the bridge and helpers.'''
    ns = _files.get(name)
    if ns is None:
        g = globals()
        ns = {k: v for k, v in g.items() if k.startswith(('_ls_', 'DRV_', 'HK_')) or k in _SHARED}
        ns.update(__builtins__=g['__builtins__'], __name__='leakshim.' + name, __loader__=_Source,
                  __file__='<leakshim>/%s.py' % name)
        exec(_ls_code(name + '.py'), ns)  # built bytecode, or compiled from the embedded source
        _files[name] = ns
    return ns


# module imported -> (driver file, its patch function)
_PATCH = {
    'psycopg2.pool': ('psycopg2', 'patch_pool'),
    'redis.client': ('redis', 'patch_client'),
    'redis.connection': ('redis', 'patch_connection'),
    'pymongo.topology': ('pymongo', 'patch_topology'),
    'pymongo.pool': ('pymongo', 'patch_pool'),
    'sqlalchemy': ('sqlalchemy', 'patch'),
    # attribution contexts (attribution.py): tests and request routes
    '_pytest.config': ('attribution', 'patch_pytest'),
    'unittest.case': ('attribution', 'patch_unittest'),
    'starlette.routing': ('attribution', 'patch_starlette'),
    'flask.app': ('attribution', 'patch_flask'),
    'motor.core': ('pymongo', 'patch_motor'),
    'asyncio.tasks': ('aio', 'patch'),
    'asyncpg.pool': ('asyncpg', 'patch'),
    'redis.asyncio.connection': ('redis_asyncio', 'patch_connection'),
    'redis.asyncio.client': ('redis_asyncio', 'patch_client'),
    'psycopg.connection': ('psycopg', 'patch_connection'),
    'psycopg.connection_async': ('psycopg', 'patch_connection'),
    'psycopg_pool.pool': ('psycopg', 'patch_pool'),
    'psycopg_pool.pool_async': ('psycopg', 'patch_pool'),
}
_done = set()


def _run_patch(name, mod):
    if name in _done:
        return
    _done.add(name)
    try:
        f, fn = _PATCH[name]
        _load(f)[fn](mod)
    except Exception as e:
        _ls_warn('cannot follow %s connections: %r' % (name, e))


class _PluginLoader:
    '''Makes `leakshim` importable under the shim: the pytest plugin (pytest_plugin.py; `-p leakshim`,
    `-W error::leakshim.LeakWarning`), with the bridge and the attribution namespace.'''
    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        d = module.__dict__
        d.update({k: v for k, v in globals().items() if k.startswith('_ls_')})
        d.update(_attribution=_load('attribution'), __file__='<leakshim>/pytest_plugin.py')
        exec(_ls_code('pytest_plugin.py'), d)


class _LeakshimImportHook:
    '''leakshim: patches a few database driver modules right after they are imported.'''
    _busy = set()

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == 'leakshim' and path is None:
            from importlib.machinery import ModuleSpec
            return ModuleSpec('leakshim', _PluginLoader, origin='<leakshim>/pytest_plugin.py')
        if name not in _PATCH or name in _done or name in cls._busy:
            return None
        cls._busy.add(name)
        try:
            spec = None
            for f in sys.meta_path:
                fs = getattr(f, 'find_spec', None)
                if f is cls or fs is None:
                    continue
                spec = fs(name, path, target)
                if spec is not None:
                    break
        finally:
            cls._busy.discard(name)
        loader = getattr(spec, 'loader', None)
        if loader is None or isinstance(loader, type) or not hasattr(loader, 'exec_module'):
            return spec
        orig = loader.exec_module

        def exec_module(module):
            try:
                del loader.exec_module  # one use: the loader is left as it was
            except Exception:
                pass
            orig(module)
            _run_patch(name, module)
        try:
            loader.exec_module = exec_module
        except Exception:
            pass
        return spec


def _install():
    atexit.register(_ls_report_exit)  # first registered: runs after the program's own handlers
    for n in list(_PATCH):
        if n in sys.modules:
            _run_patch(n, sys.modules[n])
    sys.meta_path.insert(0, _LeakshimImportHook)


if _LS_INSTALL:
    _install()

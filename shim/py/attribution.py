# leakshim's Python side: attribution contexts (issue 11, issue 10 "which request"). Loaded by
# boot.py when pytest, unittest, Starlette/FastAPI or Flask is imported. The current context (a
# test id and phase, or a request route) lives in one contextvars.ContextVar whose value is the
# core's attribution value (interned id | instance << 32); the C side reads it while it captures a
# Python stack, so every socket, driver handle and pool checkout records it, and it follows
# asyncio tasks and the thread pools that copy contexts (Starlette's run_in_threadpool).
# Nothing here changes what the patched functions do: each wrapper calls the original as before.
import contextvars
import itertools

_var = contextvars.ContextVar('leakshim_context', default=0)
_ls_attr_var(_var)
_requests = itertools.count(1)  # instance numbers: reports count requests per route
_state = {'pytest': False}      # the pytest plugin names the tests (unittest then stays quiet)


def value(label, phase, instance=0):
    '''The attribution value for label and phase (0 if label is empty).'''
    a = _ls_attr(str(label), str(phase)) if label else 0
    return a | (instance << 32) if a else 0


def enter(label, phase, instance=0, process=False):
    '''Makes (label, phase) the current context; returns the token for leave().'''
    v = value(label, phase, instance)
    if process:  # threads the code starts have no context of their own: they get this one
        _ls_attr_process(v)
    return _var.set(v)


def leave(token, process=False):
    try:
        _var.reset(token)
    except (ValueError, RuntimeError):  # another context: leave it as it is
        pass
    if process:
        _ls_attr_process(0)


def current():
    return _var.get()


# ---- unittest: a test id per test method (python3 -m unittest, and any runner using TestCase)
_UNITTEST_PHASES = (('_callSetUp', 'setup'), ('_callTestMethod', 'call'), ('_callTearDown', 'teardown'),
                    ('doCleanups', 'teardown'))


def patch_unittest(mod):
    for attr, phase in _UNITTEST_PHASES:
        def make(orig, phase=phase):
            def wrapper(self, *a, **k):
                if _state['pytest']:
                    return orig(self, *a, **k)
                tok = None
                try:
                    tok = enter(self.id(), phase, process=True)
                except Exception:
                    pass
                try:
                    return orig(self, *a, **k)
                finally:
                    if tok is not None:
                        leave(tok, process=True)
            return wrapper
        _wrap(mod.TestCase, attr, make)


# ---- ASGI: Starlette's Route.handle runs once the route matched (FastAPI's APIRoute is one)
def _route_label(method, template):
    return '%s %s' % (method or '?', template or '?')


def _enter_route(describe):
    """Enters the request context of the route describe() names as (method, template); None if
    that fails (the request itself goes on untouched)."""
    try:
        method, template = describe()
        return enter(_route_label(method, template), 'request', next(_requests))
    except Exception:
        return None


def patch_starlette(mod):
    def make(orig):
        async def handle(self, scope, receive, send):
            # a route inside a Mount: root_path holds the mount's path (as matched)
            tok = _enter_route(lambda: (scope.get('method'),
                                        (scope.get('root_path') or '') + (getattr(self, 'path', None) or '?')))
            try:
                return await orig(self, scope, receive, send)
            finally:
                if tok is not None:
                    leave(tok)
        return handle
    _wrap(mod.Route, 'handle', make)


# ---- WSGI: Flask matched the URL rule before full_dispatch_request (before_request handlers,
# the view and after_request all run inside it)
def patch_flask(mod):
    import sys

    def make(orig):
        def full_dispatch_request(self, *a, **k):
            def describe():
                req = sys.modules['flask.globals'].request
                return req.method, req.url_rule.rule if req.url_rule is not None else '<no route>'
            tok = _enter_route(describe)
            try:
                return orig(self, *a, **k)
            finally:
                if tok is not None:
                    leave(tok)
        return full_dispatch_request
    _wrap(mod.Flask, 'full_dispatch_request', make)


# ---- pytest: the plugin (module `leakshim`, pytest_plugin.py) registers itself with every pytest
def patch_pytest(mod):
    orig = mod.get_config

    def get_config(*a, **k):
        config = orig(*a, **k)
        try:
            pm = config.pluginmanager
            if not pm.is_blocked('leakshim') and pm.get_plugin('leakshim') is None:
                import leakshim
                pm.register(leakshim, 'leakshim')
        except Exception as e:
            _ls_warn('the pytest plugin is off: %r' % (e,))
        return config
    for a in ('__module__', '__name__', '__qualname__', '__doc__'):
        setattr(get_config, a, getattr(orig, a, None))
    get_config.__wrapped__ = orig
    mod.get_config = get_config

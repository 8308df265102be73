"""Unit tests of the shim's Python side (shim/py/*.py) without the shim, a server or a driver:
the files are run the way shim/hook_python.c runs them, with a recording stand-in for the C
bridge (_ls_*), and the driver patches are applied to stand-in classes shaped like the real ones."""

import builtins
import pathlib

import pytest

PY = pathlib.Path(__file__).resolve().parents[2] / "shim" / "py"

DRV = {"DRV_PSYCOPG2": 7, "DRV_REDISPY": 6, "DRV_PYMONGO": 5, "DRV_SQLALCHEMY": 8, "DRV_PYTHON": 9,
       "DRV_ASYNCPG": 10, "DRV_PSYCOPG": 11, "DRV_REDIS_ASYNCIO": 12, "DRV_MOTOR": 13}
HK = {"HK_CLIENT": 0, "HK_POOL": 1}


class Bridge:
    """Records every call the Python side makes into the core, and answers like the core."""

    def __init__(self):
        self.calls = []
        self.known = set()
        self.warnings = []
        self.depth = 0

    seq = 0          # the creation counter (_ls_seq)
    live_answer = (0, "{}", "")

    def attr(self, label, phase):
        self.labels = getattr(self, "labels", [])
        if (label, phase) not in self.labels:
            self.labels.append((label, phase))
        return self.labels.index((label, phase)) + 1

    def live(self, want_text, *ranges):
        self.calls.append(("live", want_text, *ranges))
        return self.live_answer

    def suppress(self, pattern):
        self.calls.append(("suppress", pattern))
        return True

    def names(self):
        return [c[0] for c in self.calls]

    def of(self, name):
        return [c[1:] for c in self.calls if c[0] == name]

    def namespace(self, install=False):
        def rec(name):
            def f(*a):
                self.calls.append((name, *a))
            return f

        def ls_open(drv, kind, h, pool):
            self.calls.append(("open", drv, kind, h, pool))
            self.known.add(h)

        def ls_close(h):
            self.calls.append(("close", h))
            self.known.discard(h)

        def ls_push(*a):
            self.calls.append(("push", *a))
            self.depth += 1

        def ls_pop():
            self.calls.append(("pop",))
            self.depth -= 1

        def ls_scope(stack):
            self.calls.append(("scope", stack))
            self.depth += 1

        def source(name):
            p = PY / name
            return p.read_text() if p.exists() and p.parent == PY else None

        ns = {
            "__builtins__": builtins, "__name__": "leakshim.boot", "_LS_INSTALL": install,
            "_ls_open": ls_open, "_ls_close": ls_close, "_ls_known": lambda h: h in self.known,
            "_ls_adopt_fd": rec("adopt_fd"), "_ls_checkout": rec("checkout"), "_ls_checkin": rec("checkin"),
            "_ls_push": ls_push, "_ls_pop": ls_pop, "_ls_capture": lambda: 4242, "_ls_scope": ls_scope,
            "_ls_report_exit": rec("report_exit"), "_ls_warn": self.warnings.append,
            "_ls_verbosity": lambda: 1, "_ls_source": source,
            "_ls_code": lambda name: compile(source(name), "<leakshim>/" + name, "exec"),
            # attribution contexts: labels interned in order, a creation counter the test drives
            "_ls_attr": self.attr, "_ls_attr_var": rec("attr_var"), "_ls_attr_process": rec("attr_process"),
            "_ls_seq": lambda: self.seq, "_ls_live": self.live, "_ls_suppress": self.suppress,
            "_ls_set_async_tail": rec("set_async_tail"),
        }
        ns.update(DRV)
        ns.update(HK)
        return ns


@pytest.fixture
def bridge():
    return Bridge()


@pytest.fixture
def boot(bridge):
    """boot.py loaded without installing anything into the interpreter."""
    ns = bridge.namespace()
    exec(compile((PY / "boot.py").read_text(), "<leakshim>/boot.py", "exec"), ns)
    return ns

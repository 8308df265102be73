"""attribution.py and pytest_plugin.py without the shim: the context a wrapper sets while the
original runs (and only then), the route label of Starlette and Flask, unittest phases, and the
plugin's bookkeeping (who got which creation numbers, ignore lines, the terminal section)."""

import asyncio
import types

import pytest

from conftest import PY


@pytest.fixture
def attr(boot):
    return boot["_load"]("attribution")


@pytest.fixture
def plugin(boot, bridge):
    ns = {k: v for k, v in bridge.namespace().items() if k.startswith("_ls_")}
    ns.update(__name__="leakshim", _attribution=boot["_load"]("attribution"))
    exec(compile((PY / "pytest_plugin.py").read_text(), "<leakshim>/pytest_plugin.py", "exec"), ns)
    return ns


def label_of(bridge, attr):
    v = attr["current"]()
    if not v:
        return None
    label, phase = bridge.labels[(v & 0xffffffff) - 1]
    return label, phase, v >> 32


def test_the_contextvar_is_handed_to_the_core_once(attr, bridge):
    assert bridge.of("attr_var") == [(attr["_var"],)]


def test_starlette_route_is_current_only_while_the_endpoint_runs(attr, bridge):
    seen = []

    class Route:
        path = "/webhooks/{id}"

        async def handle(self, scope, receive, send):
            seen.append(label_of(bridge, attr))
            return "handled"

    mod = types.SimpleNamespace(Route=Route)
    attr["patch_starlette"](mod)
    r = Route()
    assert asyncio.run(r.handle({"method": "POST"}, None, None)) == "handled"
    assert asyncio.run(r.handle({"method": "POST"}, None, None)) == "handled"
    assert [s[:2] for s in seen] == [("POST /webhooks/{id}", "request")] * 2
    assert seen[0][2] != seen[1][2] and seen[0][2] > 0  # a number per request
    assert attr["current"]() == 0
    assert Route.handle.__wrapped__ is not None
    asyncio.run(r.handle({"method": "GET", "root_path": "/api"}, None, None))  # mounted under /api
    assert seen[-1][:2] == ("GET /api/webhooks/{id}", "request")


def test_starlette_endpoint_errors_propagate_and_the_context_is_left(attr, bridge):
    class Route:
        path = "/x"

        async def handle(self, scope, receive, send):
            raise KeyError("boom")

    attr["patch_starlette"](types.SimpleNamespace(Route=Route))
    with pytest.raises(KeyError):
        asyncio.run(Route().handle({"method": "GET"}, None, None))
    assert attr["current"]() == 0


def test_flask_rule_names_the_request(attr, bridge, monkeypatch):
    import sys
    seen = []
    req = types.SimpleNamespace(method="POST", url_rule=types.SimpleNamespace(rule="/orders/<int:id>"))
    monkeypatch.setitem(sys.modules, "flask.globals", types.SimpleNamespace(request=req))

    class Flask:
        def full_dispatch_request(self):
            seen.append(label_of(bridge, attr))
            return "resp"

    attr["patch_flask"](types.SimpleNamespace(Flask=Flask))
    assert Flask().full_dispatch_request() == "resp"
    assert seen[0][:2] == ("POST /orders/<int:id>", "request")
    assert attr["current"]() == 0


def test_unittest_phases_and_process_value(attr, bridge):
    seen = []

    class TestCase:
        def id(self):
            return "pkg.test_mod.T.test_a"

        def _callSetUp(self):
            seen.append(label_of(bridge, attr))

        def _callTestMethod(self, method):
            seen.append(label_of(bridge, attr))
            return method()

        def _callTearDown(self):
            seen.append(label_of(bridge, attr))

        def doCleanups(self):
            seen.append(label_of(bridge, attr))

    attr["patch_unittest"](types.SimpleNamespace(TestCase=TestCase))
    t = TestCase()
    t._callSetUp()
    assert t._callTestMethod(lambda: 5) == 5
    t._callTearDown()
    t.doCleanups()
    assert [s[:2] for s in seen] == [("pkg.test_mod.T.test_a", p) for p in ("setup", "call", "teardown", "teardown")]
    procs = [a[0] for a in bridge.of("attr_process")]
    assert procs[0] != 0 and procs[1] == 0  # threads started by the test get its context, then none
    attr["_state"]["pytest"] = True  # under pytest the plugin names the tests
    seen.clear()
    t._callSetUp()
    assert seen == [None]


def test_owners_give_each_owner_its_creation_numbers(plugin, bridge):
    o = plugin["Owners"](lambda: bridge.seq)
    o.switch(("test", "a"))
    bridge.seq = 3                   # the test created 3
    prev = o.switch(("fixture", 1))
    bridge.seq = 5                   # the fixture 2
    o.switch(prev)
    bridge.seq = 6                   # the test 1 more
    assert o.take(("fixture", 1)) == [(3, 5)]
    assert o.take(("test", "a")) == [(0, 3), (5, 6)]
    assert o.take(("test", "a")) == []
    assert plugin["flat"]([(0, 3), (5, 6)]) == [0, 3, 5, 6]
    many = [(i, i + 1) for i in range(0, 200, 2)]
    f = plugin["flat"](many)
    assert len(f) == 128 and f[-2:] == [126, 199]


def test_ignore_lines_use_the_suppressions_syntax(plugin):
    pats, bad = plugin["parse_ignore"](["# comment", "", "leak:test_leaky", " leak: ^conftest.py$ ", "oops"])
    assert pats == ["test_leaky", "^conftest.py$"] and bad == ["oops"]


def test_summary_lines_per_worker(plugin):
    p = {"leaks": 2, "allowed": False, "fixtures": []}
    f = {"leaks": 0, "allowed": False,
         "fixtures": [{"name": "db", "scope": "module", "leaks": 1, "requested_by": ["t::a", "t::b"]}]}
    a = {"leaks": 1, "allowed": True, "fixtures": []}
    lines = plugin["summary_lines"]([("t::x", "gw1", p), ("t::z", "gw0", f), ("t::y", "gw1", a)])
    assert lines == [None, "[gw0]",
                     "fixture 'db' (module scope): 1 connection left open after its teardown, requested by t::a, t::b",
                     "[gw1]", "t::x: 2 connections left open",
                     "t::y: 1 connection left open (allowed by @pytest.mark.leakshim_allow)",
                     "leakshim: 3 database connections left open by 2 tests"]
    assert plugin["summary_lines"]([]) == []


def test_leak_warning_is_a_user_warning(plugin):
    assert issubclass(plugin["LeakWarning"], UserWarning)

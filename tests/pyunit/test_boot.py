"""boot.py: helpers, lazy loading of driver files, the post-import hook, errors kept inside."""

import sys
import traceback
import types

from conftest import PY


def test_loading_boot_changes_nothing_in_the_interpreter(bridge):
    before_modules, before_path = set(sys.modules), list(sys.meta_path)
    ns = bridge.namespace(install=False)
    exec(compile((PY / "boot.py").read_text(), "<leakshim>/boot.py", "exec"), ns)
    assert set(sys.modules) - before_modules == set()
    assert sys.meta_path == before_path
    assert bridge.calls == []  # no atexit registration, no patch without _LS_INSTALL


def test_wrap_keeps_the_methods_identity_and_kind(boot):
    class C:
        def m(self, x):
            "doc of m"
            return x + 1

        @classmethod
        def k(cls, x):
            return x * 2

    seen = []

    def make(orig):
        def w(*a, **kw):
            seen.append(a[1:])
            return orig(*a, **kw)
        return w

    orig, w = boot["_wrap"](C, "m", make)
    boot["_wrap"](C, "k", make)
    assert C().m(1) == 2 and C.k(3) == 6 and seen == [(1,), (3,)]
    assert C.m.__name__ == "m" and C.m.__doc__ == "doc of m" and C.m.__wrapped__ is orig
    assert isinstance(C.__dict__["k"], classmethod)
    assert boot["_wrap"](C, "missing", make) is None


def test_safe_never_lets_our_errors_reach_the_program(boot, bridge):
    def broken(*a):
        raise ValueError("ours")

    boot["_safe"](broken, 1)
    assert len(bridge.warnings) == 1 and "broken" in bridge.warnings[0] and "ValueError" in bridge.warnings[0]


def test_on_death_closes_the_handle_when_the_object_is_collected(boot, bridge):
    class Obj:
        pass

    o = Obj()
    boot["_on_death"](o, 77)
    boot["_msocks"][77] = 0
    del o
    assert ("close", 77) in bridge.calls and 77 not in boot["_msocks"]
    boot["_on_death"](42, 78)  # not weak-referenceable: ignored, no error
    assert ("close", 78) not in bridge.calls


def test_driver_files_load_lazily_once_with_their_own_names(boot):
    assert boot["_files"] == {}
    ns = boot["_load"]("redis")
    assert boot["_load"]("redis") is ns and list(boot["_files"]) == ["redis"]
    assert ns["__file__"] == "<leakshim>/redis.py" and callable(ns["patch_connection"])
    assert ns["_tls"] is boot["_tls"] and ns["_msocks"] is boot["_msocks"]  # shared state, not copies


def test_every_patch_target_names_a_function_of_its_file(boot):
    for module, (f, fn) in boot["_PATCH"].items():
        assert callable(boot["_load"](f)[fn]), (module, f, fn)


def test_a_traceback_through_an_embedded_file_shows_its_source_line(boot):
    ns = boot["_load"]("psycopg2")
    bad = types.ModuleType("psycopg2.pool")  # no AbstractConnectionPool: patch_pool raises
    try:
        ns["patch_pool"](bad)
    except AttributeError:
        text = traceback.format_exc()
    assert '"<leakshim>/psycopg2.py", line' in text
    assert "A = m.AbstractConnectionPool" in text  # linecache found the embedded source


def test_a_failing_patch_is_one_warning_and_never_retried(boot, bridge):
    boot["_run_patch"]("psycopg2.pool", types.ModuleType("psycopg2.pool"))
    boot["_run_patch"]("psycopg2.pool", types.ModuleType("psycopg2.pool"))
    assert len(bridge.warnings) == 1 and "cannot follow psycopg2.pool connections" in bridge.warnings[0]


def test_import_hook_patches_a_module_right_after_it_runs(boot, tmp_path, monkeypatch):
    pkg = tmp_path / "lsfake"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "drv.py").write_text("class Pool:\n    def get(self):\n        return 'conn'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    patched = []
    boot["_files"]["fake"] = {"patch": lambda m: patched.append(m.Pool().get())}
    boot["_PATCH"]["lsfake.drv"] = ("fake", "patch")
    monkeypatch.setattr(sys, "meta_path", [boot["_LeakshimImportHook"]] + sys.meta_path)
    try:
        import lsfake.drv  # noqa: F401
        assert patched == ["conn"]  # ran after the module body, once
        import importlib
        importlib.reload(sys.modules["lsfake.drv"])
        assert patched == ["conn"]
    finally:
        for m in ("lsfake.drv", "lsfake"):
            sys.modules.pop(m, None)

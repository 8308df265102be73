"""The pytest plugin (issue 11): a suite run under the shim, with nothing installed and no flag,
names exactly the tests (and fixtures) that left database connections open, with their counts.

The suite is tests/integration/data/leaky_suite against the real PostgreSQL: connections leaked in
a test body, through a function fixture without teardown, through a module fixture that is not
closed, and clean tests (a function and a module fixture closed properly, a connection only the
garbage collector closes). Each run is copied to tmp_path so no cache or report lands in the
repository."""

import re
import shutil

from helpers import PY, ROOT, load_reports, run_shim

SUITE = ROOT / "tests" / "integration" / "data" / "leaky_suite"
LEAKING = {
    "test_a.py::test_leaks_two_in_body": 2,
    "test_a.py::test_leaky_fixture": 1,
}
CLEAN = ["test_clean", "test_garbage_is_not_a_leak", "test_clean_fixture", "test_module_closed_1",
         "test_module_closed_2", "test_last_clean"]


def run_suite(tmp_path, pg, *args, options="", env=None, files=None):
    work = tmp_path / "suite"
    if not work.exists():
        shutil.copytree(SUITE, work)
    e = {"LEAKY_DSN": pg.dsn, "PYTHONDONTWRITEBYTECODE": "1"}
    e.update(env or {})
    argv = [PY, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args, *(files or [])]
    return run_shim(argv, options=options, env=e, cwd=work, timeout=180)


def summary(out):
    """The lines of the `leakshim` terminal section."""
    m = re.search(r"=+ leakshim =+\n(.*?)(?:\n=+ |\Z)", out, re.S)
    assert m, out
    return m.group(1).strip().splitlines()


def test_names_exactly_the_leaking_tests_and_fixtures(tmp_path, pg):
    r = run_suite(tmp_path, pg)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr  # warn mode: outcomes unchanged
    lines = summary(out)
    for nodeid, n in LEAKING.items():
        want = f"{nodeid}: {n} connection{'s' if n > 1 else ''} left open"
        assert want in lines, lines
    mod = [l for l in lines if l.startswith("fixture 'module_conn_leaky' (module scope): 1 connection")]
    assert mod and "test_b.py::test_module_leaky_1" in mod[0] and "test_b.py::test_module_leaky_2" in mod[0], lines
    assert "test_b.py::test_allowed_leak: 1 connection left open (allowed by @pytest.mark.leakshim_allow)" in lines
    for name in CLEAN:
        assert not [l for l in lines if f"::{name}:" in l or f"::{name} " in l], (name, lines)
    assert not [l for l in lines if "module_conn_closed" in l or "conn_closed" in l.split("'")[1:2]], lines
    # 2 + 1 + 1 (module fixture); the allowed one is not counted
    assert lines[-1] == "leakshim: 4 database connections left open by 3 tests", lines
    # a warning per leaking test, each naming the test's file and line, in pytest's warnings summary
    assert out.count("LeakWarning: leakshim:") == 3, out
    assert "leakshim: 2 database connections left open (by the test: 2)" in out
    # the per-test section shows the engine's grouped stack with the test's own line first
    sect = out[out.index("leakshim teardown") if "leakshim teardown" in out else 0:]
    assert "test_a.py:" in out and "test_leaks_two_in_body" in sect, out


def test_W_error_turns_leaks_into_errors_and_the_marker_allows_one(tmp_path, pg):
    r = run_suite(tmp_path, pg, "-W", "error::leakshim.LeakWarning")
    assert r.returncode == 1, r.stdout + r.stderr
    errors = set(re.findall(r"^ERROR (\S+) - ", r.stdout, re.M))
    # the module fixture is checked when its scope ends: in the teardown of the module's last test
    assert errors == {"test_a.py::test_leaks_two_in_body", "test_a.py::test_leaky_fixture",
                      "test_b.py::test_last_clean"}, r.stdout
    assert "fixture 'module_conn_leaky' (module scope): 1" in r.stdout
    passed = set(re.findall(r"^PASSED (\S+)", r.stdout, re.M))
    assert "test_b.py::test_allowed_leak" in passed and "test_a.py::test_clean" in passed, r.stdout


def test_fail_mode_from_ini(tmp_path, pg):
    work = tmp_path / "suite"
    shutil.copytree(SUITE, work)
    (work / "pytest.ini").write_text("[pytest]\nleakshim_mode = fail\n")
    r = run_suite(tmp_path, pg)
    assert r.returncode == 1
    errors = set(re.findall(r"^ERROR (\S+)$", r.stdout, re.M))
    assert errors == {"test_a.py::test_leaks_two_in_body", "test_a.py::test_leaky_fixture",
                      "test_b.py::test_last_clean"}, r.stdout
    assert re.search(r"ERROR at teardown of test_leaks_two_in_body _+\n"
                     r"leakshim: 2 database connections left open \(by the test: 2\)\n", r.stdout), r.stdout


def test_ignore_patterns_reuse_the_suppressions_syntax(tmp_path, pg):
    work = tmp_path / "suite"
    shutil.copytree(SUITE, work)
    (work / "pytest.ini").write_text("[pytest]\nleakshim_ignore =\n    # the body leak only\n"
                                     "    leak:test_leaks_two_in_body\n")
    r = run_suite(tmp_path, pg)
    lines = summary(r.stdout)
    assert not [l for l in lines if "test_leaks_two_in_body" in l], lines
    assert "test_a.py::test_leaky_fixture: 1 connection left open" in lines, lines


def test_no_leakshim_turns_it_off_and_p_leakshim_is_accepted(tmp_path, pg):
    off = run_suite(tmp_path, pg, "-p", "no:leakshim")
    assert off.returncode == 0 and "LeakWarning" not in off.stdout and "= leakshim =" not in off.stdout
    on = run_suite(tmp_path, pg, "-p", "leakshim")
    assert on.returncode == 0 and "leakshim: 4 database connections left open by 3 tests" in on.stdout, on.stdout


def test_xdist_one_result_set_per_worker(tmp_path, pg):
    r = run_suite(tmp_path, pg, "-p", "xdist", "-n", "2", "--dist", "loadfile")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = summary(r.stdout)
    workers = [l for l in lines if re.fullmatch(r"\[gw\d\]", l)]
    assert 1 <= len(workers) <= 2, lines
    for nodeid, n in LEAKING.items():
        assert [l for l in lines if l.startswith(f"{nodeid}: {n} connection")], lines
    assert lines[-1] == "leakshim: 4 database connections left open by 3 tests", lines


def test_a_failing_test_with_a_leak_keeps_exit_status_1(tmp_path, pg):
    work = tmp_path / "suite"
    shutil.copytree(SUITE, work)
    (work / "test_c.py").write_text("def test_fails():\n    assert 1 == 2\n")
    r = run_suite(tmp_path, pg, options="exitcode=23")
    assert r.returncode == 1, r.stdout + r.stderr  # the suite's own failure, not 23
    (work / "test_c.py").unlink()
    r = run_suite(tmp_path, pg, options="exitcode=23")
    assert r.returncode == 23, r.stdout + r.stderr  # would exit 0: leaks fail it


def test_exit_report_groups_by_test_without_the_plugin(tmp_path, pg):
    """-p no:leakshim: the exit report still says which test created each leak (PYTEST_CURRENT_TEST)."""
    r = run_suite(tmp_path, pg, "-p", "no:leakshim", options=f"report={tmp_path}/r.%p:format=both")
    assert r.returncode == 0, r.stdout + r.stderr
    (js,) = load_reports(tmp_path / "r.*.json")
    by = {(c["label"], c["phase"]): c["count"] for c in js["contexts"]}
    assert by[("test_a.py::test_leaks_two_in_body", "call")] == 2, by
    assert by[("test_a.py::test_leaky_fixture", "setup")] == 1, by
    assert by[("test_b.py::test_module_leaky_1", "setup")] == 1, by
    assert not [k for k in by if "clean" in k[0]], by
    text = next(p for p in tmp_path.glob("r.*") if p.suffix != ".json").read_text()
    # each group says where its members were created; the summary counts per test
    assert text.count("    1 created in test test_a.py::test_leaks_two_in_body (call)\n") == 2, text
    by_where = text[text.index("Leaks by where they were created:"):]
    assert "     2 in test test_a.py::test_leaks_two_in_body (call)\n" in by_where, text


def test_the_plugin_run_also_groups_its_exit_report_by_test(tmp_path, pg):
    r = run_suite(tmp_path, pg, options=f"report={tmp_path}/r.%p:format=json")
    assert r.returncode == 0, r.stdout + r.stderr
    (js,) = load_reports(tmp_path / "r.*")
    by = {(c["label"], c["phase"]): c["count"] for c in js["contexts"]}
    assert by.get(("test_a.py::test_leaks_two_in_body", "call")) == 2, by
    socks = [s for s in js["sockets"] if s["context"]]
    assert socks and all(s["context"]["seq"] > 0 for s in socks)

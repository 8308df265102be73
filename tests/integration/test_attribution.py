"""Attribution contexts beyond the pytest plugin (issue 11): a unittest suite gets a test id per
test method in its exit report; a cmocka harness uses the public C API (include/leakshim.h) to
name its tests and ask what each left open; a child process a shimmed suite's test starts
reports only to a file and keeps its exit status (children=)."""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from helpers import PY, ROOT, SHIM, load_reports, run_shim

DATA = ROOT / "tests" / "integration" / "data"


def test_unittest_exit_report_names_each_test_method(tmp_path, pg):
    shutil.copytree(DATA / "unittest_suite", tmp_path / "suite")
    r = run_shim([PY, "-m", "unittest", "-q", "test_u"], options=f"report={tmp_path}/r.%p:format=both",
                 env={"LEAKY_DSN": pg.dsn, "PYTHONDONTWRITEBYTECODE": "1"}, cwd=tmp_path / "suite")
    assert r.returncode == 0, r.stderr
    (js,) = load_reports(tmp_path / "r.*.json")
    by = {(c["label"], c["phase"]): c["count"] for c in js["contexts"]}
    assert by == {("test_u.Clean.test_leak", "call"): 1, ("test_u.LeakInSetUp.test_x", "setup"): 1}, by
    text = next(p for p in tmp_path.glob("r.*") if p.suffix != ".json").read_text()
    assert "1 created in test test_u.Clean.test_leak (call)" in text, text


def build_harness(tmp_path):
    exe = tmp_path / "api_harness"
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-I", ROOT / "shim" / "include",
                    "-o", exe, DATA / "c_harness" / "api_harness.c", "-lcmocka"], check=True)
    return exe


def test_cmocka_harness_through_the_c_api(tmp_path, pg):
    exe = build_harness(tmp_path)
    # without the shim: the weak API is absent, every test passes
    bare = subprocess.run([exe, str(pg.port)], capture_output=True, text=True)
    assert bare.returncode == 0 and "HARNESS shim=0" in bare.stdout, bare.stdout + bare.stderr
    r = run_shim([exe, pg.port], options=f"ports=+{pg.port}:report={tmp_path}/r.%p:format=json")
    assert "HARNESS shim=1" in r.stdout, r.stdout + r.stderr
    counts = dict(re.findall(r"^HARNESS (test_\w+) leaks=(\d+)$", r.stdout, re.M))
    assert counts == {"test_clean": "0", "test_leaky": "2", "test_clean_after": "0"}, r.stdout
    assert r.returncode == 1, r.stdout + r.stderr  # cmocka: one test failed (its teardown)
    (line,) = re.findall(r"^HARNESS-JSON (.*)$", r.stdout, re.M)
    js = json.loads(line)
    assert js["summary"]["leaks"] == 2 and len(js["sockets"]) == 2, js["summary"]
    assert {s["context"]["label"] for s in js["sockets"]} == {"test_leaky"}
    assert [(c["label"], c["phase"], c["count"]) for c in js["contexts"]] == [("test_leaky", "call", 2)]
    # the exit report groups the same two by test
    (ex,) = load_reports(tmp_path / "r.*")
    assert [(c["label"], c["count"]) for c in ex["contexts"]] == [("test_leaky", 2)], ex["contexts"]


def test_header_is_installed_and_exports_are_the_api():
    out = subprocess.run(["nm", "-D", "--defined-only", str(SHIM)], capture_output=True, text=True, check=True)
    names = {l.split()[-1] for l in out.stdout.splitlines() if l.strip()}
    api = {"leakshim_api_version", "leakshim_set_context", "leakshim_clear_context", "leakshim_creations",
           "leakshim_live_since", "leakshim_free"}
    assert api <= names, sorted(names)
    with tempfile.TemporaryDirectory() as d:  # not tmp_path: the binaries staged there are no reports
        dest = Path(d)
        subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr/local"], cwd=ROOT, check=True,
                       capture_output=True)
        header = (dest / "usr/local/include/leakshim.h").read_text()
    assert header == (ROOT / "shim/include/leakshim.h").read_text()
    assert re.search(r"#define LEAKSHIM_API_VERSION \d+", header)


CHILD_SUITE = '''
import os, subprocess, sys

def test_child_leaks():
    code = "import os, psycopg2; k = psycopg2.connect(os.environ['LEAKY_DSN'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    print("CHILD", r.returncode, repr(r.stderr))
    assert r.returncode == 0 and "leakshim" not in r.stderr, r.stderr
'''


def test_children_report_only_to_a_file_and_keep_their_status(tmp_path, pg):
    (tmp_path / "test_child.py").write_text(CHILD_SUITE)
    env = {"LEAKY_DSN": pg.dsn, "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [PY, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_child.py"]
    r = run_shim(argv, options="exitcode=23", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr  # the child: status 0, nothing on its stderr
    assert "CHILD 0 ''" in r.stdout
    # report= a path: the child writes its own file (the parent's run wrote none: nothing leaked)
    r = run_shim(argv, options=f"exitcode=23:report={tmp_path}/r.%p:format=json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    reps = [j for j in load_reports(tmp_path / "r.*") if j["summary"]["leaks"]]
    assert len(reps) == 1 and reps[0]["argv"][1] == "-c", reps
    # children=gate: the child is gated and reports to stderr as before
    r = run_shim(argv, options="exitcode=23:children=gate", env=env, cwd=tmp_path)
    assert r.returncode == 1 and "CHILD 23 " in r.stdout, r.stdout + r.stderr


EXIT_PROG = r'''
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0); /* leaked on purpose */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return 99;
    if (!strcmp(argv[2], "exit"))
        exit(atoi(argv[3]));
    return atoi(argv[3]);
}
'''


def test_exitcode_only_replaces_a_zero_status(tmp_path, pg):
    src = tmp_path / "exitprog.c"
    src.write_text(EXIT_PROG)
    exe = tmp_path / "exitprog"
    subprocess.run(["cc", "-o", exe, src], check=True)
    opts = f"ports=+{pg.port}:exitcode=23"
    got = {(how, st): run_shim([exe, pg.port, how, st], options=opts).returncode
           for how in ("return", "exit") for st in ("0", "3")}
    assert got == {("return", "0"): 23, ("return", "3"): 3, ("exit", "0"): 23, ("exit", "3"): 3}, got
    # the leak is still reported when the status is kept
    r = run_shim([exe, pg.port, "return", "3"], options=opts)
    assert "1 leaked database connection" in r.stderr, r.stderr

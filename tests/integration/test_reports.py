"""Reports as people read them (issue 8): grouped snapshots stay short, every group's header names
the user's own line (psycopg2, SQLAlchemy, pymongo, a pytest test body), and a process with
nothing to report says nothing."""

import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import PY, ROOT, TOOL, run_shim, shim_env  # noqa: E402

SAMPLES = ROOT / "samples"
HEADER = re.compile(r"(?:created|checked out) at (\S+):(\d+) in (\S+):$")


def headers(text):
    """(file, line, function) named by each group header of a text report."""
    return [HEADER.search(line).groups() for line in text.splitlines() if HEADER.search(line)]


def user_line(path, marker):
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if marker in line:
            return str(i)
    raise AssertionError(f"{marker!r} not in {path}")


HOLD = r"""
import sys
import psycopg2
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

engine = create_engine("postgresql+psycopg2://", creator=lambda: psycopg2.connect(sys.argv[1]), pool_size=20)
kept = []
for i in range(12):
    s = Session(engine)
    s.execute(text("SELECT 1"))  # CHECKOUT: one line, twelve checkouts
    kept.append(s)
print("HELD", flush=True)
sys.stdin.readline()
"""


def test_snapshot_of_many_checkouts_from_one_line_is_one_group(tmp_path, pg):
    """Twelve sessions checked out at one line: one block in the snapshot (a few lines, whatever
    the count), naming that line; per-socket lines only with --sockets."""
    prog = tmp_path / "hold.py"
    prog.write_text(HOLD)
    proc = subprocess.Popen([PY, str(prog), pg.dsn], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=shim_env(""))
    try:
        assert proc.stdout.readline().strip() == "HELD", proc.stderr.read()
        text = subprocess.run([str(TOOL), "dump", str(proc.pid)], capture_output=True, text=True,
                              timeout=60).stdout
        full = subprocess.run([str(TOOL), "dump", "--sockets", str(proc.pid)], capture_output=True, text=True,
                              timeout=60).stdout
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    line = user_line(prog, "# CHECKOUT")
    assert re.search(r"^12 PostgreSQL connections .* checked out of sqlalchemy pool", text, re.M), text
    assert (str(prog), line, "<module>") in headers(text), text
    assert len(text.splitlines()) <= 25, text  # it was 174 lines for ten, before grouping
    assert len(full.splitlines()) >= len(text.splitlines()) + 12  # one line per socket on request


def test_psycopg2_pool_leak_names_the_checkout_line(tmp_path, pg):
    sample = SAMPLES / "py_psycopg2_pool_del.py"
    r = run_shim([PY, sample, pg.dsn, "4", "8"], input="\n", timeout=120)
    assert (f"samples/{sample.name}", user_line(sample, "self.conn = pool.getconn()"),
            "RequestContext.__init__") in headers(r.stderr), r.stderr


def test_sqlalchemy_session_leaks_name_both_lines(tmp_path, pg):
    sample = SAMPLES / "py_sqlalchemy_session.py"
    r = run_shim([PY, sample, pg.dsn], timeout=120)
    named = headers(r.stderr)
    assert (f"samples/{sample.name}", user_line(sample, "checks a connection out"), "get_user") in named, r.stderr
    assert all(f == f"samples/{sample.name}" for f, _, _ in named), named  # no library frame on top


def test_pymongo_client_per_request_names_the_client_line(tmp_path, mongo):
    sample = SAMPLES / "py_pymongo_per_request.py"
    r = run_shim([PY, sample, mongo.uri, "4", "2"], timeout=120)
    named = headers(r.stderr)
    assert named and all(f == f"samples/{sample.name}" for f, _, _ in named), r.stderr


def test_leak_in_a_pytest_test_names_the_test_line(tmp_path, redis_server):
    """Under pytest, the 30-odd pytest/pluggy frames fold away: the header is the test's line."""
    t = tmp_path / "test_leaky.py"
    t.write_text("import socket\n"
                 "KEEP = []\n"
                 "def test_leaks():\n"
                 f"    KEEP.append(socket.create_connection(('127.0.0.1', {redis_server.port})))  # LEAK\n")
    r = run_shim([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(t)],
                 options=f"ports=+{redis_server.port}", timeout=120, cwd=tmp_path)
    assert "1 passed" in r.stdout, r.stdout + r.stderr
    assert ("test_leaky.py", user_line(t, "# LEAK"), "test_leaks") in headers(r.stderr), r.stderr
    block = r.stderr.split("test_leaks:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"#2 \.\.\. \d+ pytest\b", block), block  # folded right under the test's line


def test_nothing_to_report_means_nothing_written(tmp_path, pg):
    """/bin/true, python3 -c pass and a program whose connections were all closed: not one byte
    more than without the shim."""
    for argv in (["/bin/true"], [PY, "-c", "pass"], [str(SAMPLES / "pq_errpath_fixed"), pg.dsn]):
        bare = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
        r = run_shim(argv, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (bare.returncode, bare.stdout, bare.stderr), argv

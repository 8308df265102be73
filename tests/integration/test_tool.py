"""tools/leakshim on its own (also run with an ASan+UBSan build of the tool: LEAKSHIM_TOOL)."""

import os
import re
import subprocess

from helpers import ROOT, TOOL

SAMPLES = ROOT / "samples"


def tool(*args, **kw):
    return subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=60, **kw)


def test_readme_options_table_is_the_codes_table():
    """The README's option list is generated from the one options table the shim parses with."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- options:begin -->\n(.*?)<!-- options:end -->", readme, re.S)
    assert m, "README has no options block"
    assert m.group(1) == tool("options", "--markdown").stdout


def test_check_options_and_usage_errors():
    assert tool("check-options", "exitcode=3:format=json:ports=+7000").returncode == 0
    bad = tool("check-options", "exitcode=3:colour=blue")
    assert bad.returncode == 2 and "unknown option 'colour'" in bad.stderr
    assert tool("frobnicate").returncode == 2
    assert tool("run").returncode == 2
    assert "no command given" in tool("run", "--options", "exitcode=1").stderr
    assert tool("dump").returncode == 2
    assert tool("dump", "notapid").returncode == 2
    gone = tool("dump", "999999999")
    assert gone.returncode == 1 and "no process" in gone.stderr
    text = tool("options").stdout
    assert "exitcode" in text and "suppressions" in text


def test_run_of_a_missing_program():
    r = tool("run", "--", "/nonexistent/program")
    assert r.returncode == 127 and "cannot run '/nonexistent/program'" in r.stderr


def test_run_validates_options_and_preloads(tmp_path, redis_server):
    bad = subprocess.run([str(TOOL), "run", "--options", "format=xml", "--", "/bin/true"], capture_output=True,
                         text=True)
    assert bad.returncode == 2
    assert "'xml'" in bad.stderr and "nothing was started" in bad.stderr
    good = subprocess.run([str(TOOL), "run", "--options", f"ports=+{redis_server.port}:report={tmp_path}/r.txt",
                           "--", str(SAMPLES / "raw_dbport"), "127.0.0.1", str(redis_server.port), "3"],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS")})
    assert good.returncode == 0, good.stderr
    assert "1 leaked database connection in 1 group" in (tmp_path / "r.txt").read_text()




def test_run_passes_long_option_strings_whole():
    """Options are never cut: a 12 KB option string (past the old 8191-byte buffer) reaches the
    program whole, and a bad key at its very end is still caught."""
    padding = ":".join(["verbosity=1"] * 1100)  # ~13 KB of valid options
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS")}
    r = subprocess.run([str(TOOL), "run", "--options", padding + ":exitcode=7", "--", "/bin/sh", "-c",
                        'printf %s "$LEAKSHIM_OPTIONS"'], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == padding + ":exitcode=7"
    bad = tool("run", "--options", padding + ":exitcod=7", "--", "/bin/true")
    assert bad.returncode == 2 and "exitcod" in bad.stderr


def test_dump_rejects_a_timeout_it_cannot_honour():
    """`--timeout nan` (or inf, 0, -1, abc) used to wait forever or be ignored: it is refused before
    anything is sent."""
    sleeper = subprocess.Popen(["/bin/cat"], stdin=subprocess.PIPE)
    try:
        for bad in ("nan", "inf", "0", "-1", "abc", "1e999", ""):
            r = tool("dump", "--timeout", bad, sleeper.pid)
            assert r.returncode == 2, (bad, r.stderr)
            assert "--timeout" in r.stderr
        assert sleeper.poll() is None
    finally:
        sleeper.stdin.close()
        sleeper.wait()

"""tools/leakshim as a command-line tool: --version, --help, "did you mean", exit statuses, report
paths checked before anything runs, the man page, and `make install`/`uninstall` in split
directories (Debian's layout) into a staging DESTDIR."""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, TOOL, run_shim

SAMPLES = ROOT / "samples"
COMMANDS = ["run", "dump", "options", "check-options", "version", "help"]
COMMANDS += ["attach", "detach"]
# The C function that reads each command's arguments (the flags it accepts are its string literals).
HANDLERS = {"run": "cmd_run", "dump": "cmd_dump", "options": "cmd_options", "check-options": "cmd_check_options",
            "version": "cmd_version", "help": "cmd_help"}
# Commands whose arguments are read in another file: (file under tools/, function).
HANDLERS.update({"attach": ("attach.c", "ls_tool_attach"), "detach": ("attach.c", "ls_tool_detach")})
KEEP_SHIM = ["-o", "shim/libleakshim.so"]  # make: use the shim as it is, never rebuild it
SPLIT_DIRS = {"PREFIX": "/usr", "LIBDIR": "/usr/lib/x86_64-linux-gnu", "BINDIR": "/usr/bin",
              "MANDIR": "/usr/share/man"}


def tool(*args, **kw):
    return subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=60, **kw)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEAKSHIM_OPTIONS", "LEAKSHIM_LIB")}
    env.update(extra)
    return env


def make(*args, cwd=ROOT):
    r = subprocess.run(["make", "--no-print-directory", "-s", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"make {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def flags_read_by(command):
    """The flags the code of `command` compares its arguments with, from tools/leakshim.c: a flag
    added to the code but not to its --help fails here."""
    where, fn = HANDLERS[command] if isinstance(HANDLERS[command], tuple) else ("leakshim.c", HANDLERS[command])
    src = (ROOT / "tools" / where).read_text()
    m = re.search(r"^(?:static )?int %s\([^;{]*\)\n\{.*?^\}$" % fn, src, re.S | re.M)
    assert m, f"no {fn} in tools/{where}"
    return set(re.findall(r'"(--?[a-z][a-z-]*)=?"', m.group(0)))


# ---------------------------------------------------------------- version and help


def test_version_is_the_one_version():
    version = make("version").strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version), version
    assert f'#define LEAKSHIM_VERSION "{version}"' in (ROOT / "shim" / "ls_version.h").read_text()
    for args in (["--version"], ["version"]):
        r = tool(*args)
        assert (r.returncode, r.stdout, r.stderr) == (0, f"leakshim {version}\n", ""), args


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_names_every_flag(command):
    expected = flags_read_by(command) | {"-h", "--help"}
    if command == "dump":
        assert {"--json", "--timeout"} <= expected
    if command == "run":
        assert "--options" in expected
    outputs = [tool(command, "--help"), tool(command, "-h"), tool("help", command)]
    for r in outputs:
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert r.stdout == outputs[0].stdout
    text = outputs[0].stdout
    assert text.startswith(f"usage: leakshim {command}")
    for flag in expected:
        assert re.search(r"(^|[\s,\[])%s\b" % re.escape(flag), text, re.M), (command, flag, text)
    assert "Exit status:" in text
    assert re.search(r"^  %s +\S" % ("N" if command == "run" else "0"), text, re.M), text


def test_run_help_is_not_taken_from_the_command():
    """`leakshim run -- CMD --help` is CMD's --help, not leakshim's."""
    r = subprocess.run([str(TOOL), "run", "--", "/bin/sh", "-c", 'echo "$0 $1"', "--help"], capture_output=True,
                       text=True, env=clean_env(), timeout=60)
    assert (r.returncode, r.stdout) == (0, "--help \n"), r.stderr


def test_top_level_help_explains_each_command_and_the_exit_statuses():
    for args in (["--help"], ["-h"], ["help"]):
        r = tool(*args)
        assert r.returncode == 0 and r.stderr == ""
        text = r.stdout
        for command in COMMANDS:
            assert re.search(r"^  %s +\S" % re.escape(command), text, re.M), command  # one line each
        for code in ("0", "1", "2", "126", "127"):
            assert re.search(r"^  %s +\S" % code, text, re.M), code
        assert "--version" in text
    # no arguments: a usage error, on stderr
    r = tool()
    assert r.returncode == 2 and r.stdout == "" and "usage: leakshim run" in r.stderr


# ---------------------------------------------------------------- did you mean


def test_unknown_command_suggests_the_closest():
    r = tool("dumb", "1234")
    assert r.returncode == 2
    assert "unknown command 'dumb'; did you mean 'dump'?" in r.stderr
    r = tool("check-option", "exitcode=1")
    assert r.returncode == 2 and "did you mean 'check-options'?" in r.stderr
    r = tool("frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr and "did you mean" not in r.stderr
    r = tool("--versoin")
    assert r.returncode == 2 and "did you mean '--version'?" in r.stderr


def test_unknown_flag_suggests_the_closest():
    r = tool("run", "--option", "exitcode=1", "--", "/bin/true")
    assert r.returncode == 2 and "unknown flag '--option'; did you mean '--options'?" in r.stderr
    r = tool("options", "--markdwon")
    assert r.returncode == 2 and "did you mean '--markdown'?" in r.stderr
    r = tool("run", "--options")
    assert r.returncode == 2 and "--options needs a value" in r.stderr


def test_misspelt_exitcode_is_refused_with_the_key_meant():
    r = tool("check-options", "exitcod=23")
    assert r.returncode == 2
    line, summary = r.stderr.splitlines()
    assert "unknown option 'exitcod', did you mean 'exitcode'?" in line
    assert "exitcode is not set: leaks will NOT fail this run" in line
    assert summary == "leakshim check-options: 1 problem"
    # exitcode set elsewhere in the string (before or after): the gate is on, the typo still refused
    for opts in ("exitcod=23:exitcode=5", "exitcode=5:exitcod=23"):
        r = tool("check-options", opts)
        assert r.returncode == 2 and "did you mean 'exitcode'?" in r.stderr
        assert "NOT fail" not in r.stderr, opts
    # leakshim run refuses it, and says nothing was started (not "using the default")
    r = subprocess.run([str(TOOL), "run", "--options", "exitcod=23:signal=33", "--", "/bin/true"],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 2
    assert "did you mean 'exitcode'?" in r.stderr
    assert "using the default" not in r.stderr and "NOT fail this run" not in r.stderr
    assert r.stderr.splitlines()[-1] == "leakshim run: 2 problems in the options; nothing was started"
    ok = tool("check-options", "exitcode=23")
    assert ok.returncode == 0 and "status 23" in ok.stdout


def test_preloaded_shim_says_once_that_the_gate_is_off(redis_server):
    """The same typo under the preloaded shim: one line saying the leak gate is off, and the
    program's exit status is its own (exitcode=23 spelt right makes the same run exit 23)."""
    argv = [SAMPLES / "raw_dbport", "127.0.0.1", redis_server.port, 3]
    ports = f"ports=+{redis_server.port}"
    gated = run_shim(argv, options=f"{ports}:exitcode=23")
    assert gated.returncode == 23, gated.stderr  # the run does leak
    bare = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert bare.returncode == 0
    typo = run_shim(argv, options=f"{ports}:exitcod=23")
    assert typo.returncode == bare.returncode == 0
    lines = [l for l in typo.stderr.splitlines() if "LEAKSHIM_OPTIONS" in l or "exitcod" in l]
    assert len(lines) == 1, typo.stderr
    assert lines[0].startswith("leakshim: LEAKSHIM_OPTIONS: unknown option 'exitcod', did you mean 'exitcode'?")
    assert lines[0].endswith("; exitcode is not set: leaks will NOT fail this run")
    assert "1 leaked database connection" in typo.stderr


# ---------------------------------------------------------------- report paths, up front


def check(opts):
    return tool("check-options", opts)


def test_report_path_problems_are_caught_before_anything_runs(tmp_path):
    r = check("report=/nonexistent/dir/x")
    assert r.returncode == 2
    assert "cannot write report to '/nonexistent/dir/x'" in r.stderr
    assert "directory '/nonexistent/dir': No such file or directory" in r.stderr

    shared = tmp_path / "shared"  # writable by anyone, not sticky: anyone could swap the file
    shared.mkdir()
    shared.chmod(0o777)
    r = check(f"report={shared}/r.%p.txt")
    assert r.returncode == 2 and "writable by others and not sticky (mode 0777)" in r.stderr
    shared.chmod(0o1777)  # sticky, as /tmp: accepted
    assert check(f"report={shared}/r.%p.txt").returncode == 0

    target = tmp_path / "target.txt"
    target.write_text("")
    target.chmod(0o600)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    r = check(f"report={link}")
    assert r.returncode == 2 and "symbolic link" in r.stderr
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "symbolic link" in check(f"report={dangling}").stderr

    open_to_all = tmp_path / "open.txt"
    open_to_all.write_text("")
    open_to_all.chmod(0o666)
    r = check(f"report={open_to_all}")
    assert r.returncode == 2 and "writable by group or others" in r.stderr
    r = check(f"report={tmp_path}")
    assert r.returncode == 2 and "directory" in r.stderr

    # format=both also writes PATH.json: that one is checked too
    (tmp_path / "both").mkdir()
    (tmp_path / "both" / "r.txt.json").symlink_to(target)
    r = check(f"report={tmp_path}/both/r.txt:format=both")
    assert r.returncode == 2 and "r.txt.json" in r.stderr and "symbolic link" in r.stderr


def test_good_report_path_passes_and_creates_nothing(tmp_path):
    out = tmp_path / "reports"
    out.mkdir(mode=0o700)
    for opts in (f"report={out}/r.%p.txt", f"report={out}/r.txt:format=both", "report=/dev/stderr",
                 "report=stderr", f"report={target_file(tmp_path)}"):
        r = check(opts)
        assert r.returncode == 0, (opts, r.stderr)
        assert r.stderr == "" and r.stdout.startswith("leakshim check-options: ok")
    assert list(out.iterdir()) == []


def target_file(tmp_path):
    p = tmp_path / "existing.txt"
    p.write_text("")
    p.chmod(0o600)
    return p


def test_run_refuses_an_unwritable_report_and_starts_nothing(tmp_path):
    marker = tmp_path / "started"
    r = subprocess.run([str(TOOL), "run", "--options", "report=/nonexistent/dir/r.%p", "--", "/bin/sh", "-c",
                        f"touch {marker}"], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 2
    assert "leakshim run: LEAKSHIM_OPTIONS: cannot write report to '/nonexistent/dir/r." in r.stderr
    assert "stderr instead" not in r.stderr  # nothing will run: no word of what the shim would do
    assert r.stderr.splitlines()[-1] == "leakshim run: 1 problem in the options; nothing was started"
    assert not marker.exists()


def test_run_exit_statuses(tmp_path):
    env = clean_env()
    assert tool("run", "--", "/nonexistent/program").returncode == 127
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    r = subprocess.run([str(TOOL), "run", "--", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 126 and "cannot run" in r.stderr
    r = subprocess.run([str(TOOL), "run", "--", "/bin/sh", "-c", "exit 7"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 7
    r = subprocess.run([str(TOOL), "run", "--", "/bin/true"], capture_output=True, text=True, timeout=60,
                       env=clean_env(LEAKSHIM_LIB=str(tmp_path / "no-such-lib.so")))
    assert r.returncode == 1 and "LEAKSHIM_LIB" in r.stderr and "nothing was started" in r.stderr


# ---------------------------------------------------------------- man page and install


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of the sources `make install` needs, and of the shim built in the work tree: the tool
    and the man page are built there for each layout, and the work tree is left alone. make is told
    the shim is up to date (-o): installing is tested here, building the shim everywhere else."""
    if not (ROOT / "shim" / "libleakshim.so").exists():
        pytest.fail("the shim is not built (run `make`)")
    dst = tmp_path_factory.mktemp("tree")
    shutil.copy2(ROOT / "Makefile", dst / "Makefile")
    shutil.copytree(ROOT / "shim", dst / "shim", ignore=shutil.ignore_patterns("__pycache__"))
    (dst / "tools").mkdir()
    for src in [*(ROOT / "tools").glob("*.[ch]"), ROOT / "tools" / "leakshim.1.scd"]:  # the tool's sources
        shutil.copy2(src, dst / "tools" / src.name)
    return dst


def render(manpage):
    """The man page as plain text, no hyphenation (so names are whole words), wide lines."""
    r = subprocess.run(["groff", "-man", "-Tutf8", "-rHY=0", "-rLL=200n", "-P-cbou", str(manpage)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "warning" not in r.stderr and "error" not in r.stderr, r.stderr
    return r.stdout


def test_man_page_has_every_command_flag_and_option(tree):
    make("tools/leakshim.1", cwd=tree)
    page = tree / "tools" / "leakshim.1"
    text = render(page)
    version = make("version").strip()
    assert f"leakshim {version}" in text
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "EXIT STATUS", "ENVIRONMENT"):
        assert re.search(r"^%s$" % section, text, re.M), section
    for command in COMMANDS:
        assert re.search(r"^ +leakshim %s\b" % re.escape(command), text, re.M), command
        for flag in flags_read_by(command) | {"-h", "--help"}:
            assert re.search(r"(^|[\s,\[])%s\b" % re.escape(flag), text, re.M), (command, flag)
    assert "--version" in text
    keys = re.findall(r"^\| `(\w+)` \|", tool("options", "--markdown").stdout, re.M)
    assert len(keys) >= 14
    for key in keys:
        assert re.search(r"^ +%s=\S" % key, text, re.M), key
    for code in ("0", "1", "2", "126", "127"):
        assert re.search(r"^ +%s$" % code, text, re.M), code
    # and man(1) itself shows it
    r = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MANWIDTH="120", MANPAGER="cat", PAGER="cat"))
    assert r.returncode == 0 and "check-options" in r.stdout


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if not p.is_dir())


def test_staged_install_in_split_dirs_finds_its_own_library(tree, tmp_path, redis_server):
    stage = tmp_path / "stage"
    dirs = [f"{k}={v}" for k, v in SPLIT_DIRS.items()]
    make("install", f"DESTDIR={stage}", *dirs, *KEEP_SHIM, cwd=tree)
    lib = stage / "usr/lib/x86_64-linux-gnu/libleakshim.so"
    exe = stage / "usr/bin/leakshim"
    man = stage / "usr/share/man/man1/leakshim.1"
    header = stage / "usr/include/leakshim.h"  # the public C API (include/leakshim.h)
    assert files_under(stage) == sorted(str(p.relative_to(stage)) for p in (lib, exe, man, header))
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in (lib, exe, man, header)} == {
        lib: 0o755, exe: 0o755, man: 0o644, header: 0o644}
    assert "check-options" in render(man)

    # the staged tool, run from the staging tree, preloads the staged library
    env = clean_env()
    r = subprocess.run([str(exe), "run", "--", "/bin/sh", "-c", 'echo "$LD_PRELOAD"; cat /proc/self/maps'],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    preload, maps = r.stdout.split("\n", 1)
    assert preload == str(lib.resolve())
    assert str(lib.resolve()) in maps and str(ROOT / "shim") not in maps
    report = tmp_path / "r.txt"
    r = subprocess.run([str(exe), "run", "--options", f"ports=+{redis_server.port}:report={report}", "--",
                        SAMPLES / "raw_dbport", "127.0.0.1", str(redis_server.port), "3"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "1 leaked database connection in 1 group" in report.read_text()

    make("uninstall", f"DESTDIR={stage}", *dirs, cwd=tree)
    assert files_under(stage) == []


def test_installed_tool_falls_back_to_the_absolute_libdir(tree, tmp_path):
    """Without DESTDIR and with the tool copied away from its tree, LIBDIR itself is found."""
    prefix = tmp_path / "prefix"
    dirs = [f"PREFIX={prefix}", f"LIBDIR={prefix}/lib64/leakshim", f"BINDIR={prefix}/bin"]
    make("install", *dirs, *KEEP_SHIM, cwd=tree)
    moved = tmp_path / "elsewhere" / "leakshim"
    moved.parent.mkdir()
    shutil.copy2(prefix / "bin" / "leakshim", moved)
    r = subprocess.run([str(moved), "run", "--", "/bin/sh", "-c", 'echo "$LD_PRELOAD"'], capture_output=True,
                       text=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{prefix}/lib64/leakshim/libleakshim.so"
    assert (prefix / "share/man/man1/leakshim.1").exists()  # MANDIR defaults to PREFIX/share/man
    make("uninstall", *dirs, cwd=tree)
    assert files_under(prefix) == []

"""File:line and inlined functions in native stacks (shim/symbolize.c: elfutils' libdw, dlopen'ed
at report time).

progs/sym_leak.c is compiled here with `cc -O2 -g` (no -rdynamic): a static function, open_db(),
connects to the test Redis through an always-inlined helper, dial(), and leaks the socket. The ELF
symbol table knows open_db only; the DWARF knows dial and the lines. The expected lines are the
`MARK:` comments in the source.

The text assertions depend on the renderer (report_text.c) printing the frames
ls_symbolize_frames returns as `func (file:line)`, the file as a path or a bare name.
"""

import json
import re
import socket
import subprocess

import pytest

from helpers import ROOT, SHIM, run_shim

SRC = ROOT / "tests" / "integration" / "progs" / "sym_leak.c"


def marker_line(name):
    hits = [i for i, line in enumerate(SRC.read_text().splitlines(), 1) if f"MARK:{name}" in line]
    assert len(hits) == 1, f"MARK:{name} in {SRC}"
    return hits[0]


def build(tmp_path):
    src = tmp_path / "sym_leak.c"
    src.write_text(SRC.read_text())
    exe = tmp_path / "sym_leak"
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O2", "-g",
                    "-o", str(exe), src.name], cwd=tmp_path, check=True)
    return exe


def run_leak(tmp_path, redis_server, exe, env=None):
    """Runs exe under the shim (2 leaked connections); returns (proc, text report, JSON report)."""
    out = tmp_path / "out"
    out.mkdir()
    opts = f"ports=+{redis_server.port}:report={out}/r.%p:format=both"
    proc = run_shim([exe, "127.0.0.1", redis_server.port, 2], options=opts, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    texts = [p for p in out.glob("r.*") if p.suffix != ".json"]
    assert len(texts) == 1, sorted(out.iterdir())
    return proc, texts[0].read_text(), json.loads((out / (texts[0].name + ".json")).read_text())


def leak_stack(js):
    (g,) = [g for g in js["groups"] if g["leak"] and not g["suppressed"]]
    assert g["category"] == "leak" and g["count"] == 2
    return js["stacks"][str(g["stack"])]["frames"]


def src_re(func, line):
    """`func (file:line)`, the file as a path or a bare name."""
    return re.compile(r"\b%s \((?:[^\s()]*/)?sym_leak\.c:%d\)" % (re.escape(func), line))


def assert_source_frames(text):
    """dial at the connect line, inlined into open_db at the dial line, called from main: in order."""
    where = []
    for func, mark in (("dial", "connect"), ("open_db", "dial"), ("main", "main")):
        m = src_re(func, marker_line(mark)).search(text)
        assert m, f"no `{func} (sym_leak.c:{marker_line(mark)})` in:\n{text}"
        where.append(m.start())
    assert where == sorted(where), text


def addr2line(module, offset):
    """binutils' addr2line -i -f on a JSON frame: [(function, file:line), ...] innermost first."""
    out = subprocess.run(["addr2line", "-i", "-f", "-e", module, "%#x" % (int(offset, 16) - 1)],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [(out[i], re.sub(r" \(discriminator \d+\)$", "", out[i + 1])) for i in range(0, len(out) - 1, 2)]


def test_json_frames_still_symbolize_offline_to_the_source_lines(tmp_path, redis_server):
    exe = build(tmp_path)
    proc, text, js = run_leak(tmp_path, redis_server, exe)
    # libdw is loaded by the report, not before: the program looked just before exit
    assert "leaked 2\nlibdw mapped: no\n" in proc.stdout
    frames = leak_stack(js)
    top, caller = frames[0], frames[1]
    assert top["module"] == str(exe) and top["symbol"] == "open_db"  # static, named from .symtab
    assert caller["module"] == str(exe) and caller["symbol"] == "main"
    build_id = re.search(r"Build ID: ([0-9a-f]+)", subprocess.run(
        ["readelf", "-n", str(exe)], capture_output=True, text=True, check=True).stdout).group(1)
    assert top["build_id"] == build_id
    # module + offset are all another machine needs: binutils agrees on the inlined frame and lines
    src = str(tmp_path / "sym_leak.c")
    assert addr2line(top["module"], top["offset"]) == [
        ("dial", f"{src}:{marker_line('connect')}"), ("open_db", f"{src}:{marker_line('dial')}")]
    assert addr2line(caller["module"], caller["offset"]) == [("main", f"{src}:{marker_line('main')}")]


def test_the_shim_does_not_link_libdw():
    dyn = subprocess.run(["readelf", "-d", str(SHIM)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    assert needed and not [n for n in needed if n.startswith(("libdw", "libelf", "libdebuginfod"))], needed


def test_text_report_shows_file_line_and_the_inlined_function(tmp_path, redis_server):
    exe = build(tmp_path)
    _, text, _ = run_leak(tmp_path, redis_server, exe)
    assert_source_frames(text)


def test_separate_debug_file_found_by_its_debuglink(tmp_path, redis_server):
    exe = build(tmp_path)
    debug = tmp_path / ".debug"
    debug.mkdir()
    subprocess.run(["objcopy", "--only-keep-debug", str(exe), str(debug / "sym_leak.debug")], check=True)
    subprocess.run(["objcopy", "--strip-debug", f"--add-gnu-debuglink={debug / 'sym_leak.debug'}", str(exe)],
                   check=True)
    sections = subprocess.run(["readelf", "-S", str(exe)], capture_output=True, text=True, check=True).stdout
    assert ".debug_info" not in sections and ".gnu_debuglink" in sections
    _, text, _ = run_leak(tmp_path, redis_server, exe)
    assert_source_frames(text)


def test_no_debuginfod_query_for_a_binary_without_debug_info(tmp_path, redis_server):
    """A build-id and no debug file anywhere: where libdw's standard lookup would ask the servers in
    DEBUGINFOD_URLS (DEBUGINFOD_TIMEOUT makes a regression fail in seconds rather than hang)."""
    exe = build(tmp_path)
    subprocess.run(["objcopy", "--strip-debug", str(exe)], check=True)
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        lsock.setblocking(False)
        url = "http://127.0.0.1:%d" % lsock.getsockname()[1]
        _, text, js = run_leak(tmp_path, redis_server, exe, env={"DEBUGINFOD_URLS": url, "DEBUGINFOD_TIMEOUT": "2"})
        with pytest.raises(BlockingIOError):
            lsock.accept()
    assert leak_stack(js)[0]["symbol"] == "open_db"
    assert re.search(r"\bopen_db\b", text) and "sym_leak.c:" not in text

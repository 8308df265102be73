"""Small shared helpers for the integration tests: where things are, and how to run a program
under the shim. Kept deliberately small; tests build on these."""

import functools
import glob
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# LEAKSHIM_TEST_SHIM (make integration-asan: build/asan/libleakshim.so) runs every program under
# that shim instead; relative paths are from the repository root.
SHIM = ROOT / (os.environ.get("LEAKSHIM_TEST_SHIM") or Path("shim") / "libleakshim.so")
TOOL = Path(os.environ.get("LEAKSHIM_TOOL") or ROOT / "tools" / "leakshim")
PY = "/usr/bin/python3"  # Debian's python: the one with psycopg2, redis, pymongo, sqlalchemy


def options_string(options):
    """LEAKSHIM_OPTIONS from a str (as is) or a dict ({"report": "x", "exitcode": 23})."""
    if options is None:
        return ""
    if isinstance(options, dict):
        return ":".join(f"{k}={v}" for k, v in options.items())
    return str(options)


@functools.lru_cache(maxsize=None)
def sanitizer_runtimes():
    """The sanitizer runtimes SHIM was linked with (libasan first), e.g. ("libasan.so.8",
    "libubsan.so.1"); () for the normal shim. A sanitizer-built shim can only be preloaded after
    them: ASan must be the first library of the process."""
    if not SHIM.exists():
        return ()
    out = subprocess.run(["readelf", "-d", str(SHIM)], capture_output=True, text=True).stdout
    libs = re.findall(r"\(NEEDED\)\s+Shared library: \[(lib(?:asan|ubsan)\.so[^\]]*)\]", out)
    return tuple(sorted(libs, key=lambda n: not n.startswith("libasan")))


def sanitizer_preload():
    """What goes before a sanitizer-built SHIM in LD_PRELOAD: its runtimes, then the stub built
    beside it by `make shim-asan` (tests/integration/asan_stub.c says why: without it every program
    linking libpq or MariaDB's client deadlocks at exit under a preloaded ASan)."""
    runtimes = sanitizer_runtimes()
    if not runtimes:
        return []
    stub = SHIM.parent / "libleakshim-asan-stub.so"
    if not stub.exists():
        raise FileNotFoundError(f"{stub} is not built (run `make shim-asan`)")
    return [*runtimes, str(stub)]


@functools.lru_cache(maxsize=None)
def sanitizer_log_dir():
    """Where the sanitizers of a sanitizer-built shim write their reports (conftest.py fails a test
    that leaves one); None for the normal shim."""
    if not sanitizer_runtimes():
        return None
    return Path(tempfile.mkdtemp(prefix="leakshim-sanitizers-"))


def sanitizer_env():
    """ASAN_OPTIONS/UBSAN_OPTIONS for a sanitizer-built shim ({} for the normal one). detect_leaks=0:
    LeakSanitizer would report the host's own allocations (and the drivers'), not the shim's bugs.
    Reports go to files, not to the program's stderr, so that tests comparing stderr still see the
    program's own output, and a report fails the test even when its exit status is not checked."""
    logs = sanitizer_log_dir()
    if logs is None:
        return {}
    return {
        "ASAN_OPTIONS": f"detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path={logs}/asan",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:log_path={logs}/ubsan",
    }


def shim_env(options="", env=None):
    """os.environ plus `env`, with LD_PRELOAD=SHIM (after its sanitizer runtimes, if it has any)
    and LEAKSHIM_OPTIONS=options."""
    if not SHIM.exists():
        raise FileNotFoundError(f"{SHIM} is not built (run `make`)")
    e = dict(os.environ)
    e.update(sanitizer_env())
    if env:
        e.update({k: str(v) for k, v in env.items()})
    e["LD_PRELOAD"] = ":".join([*sanitizer_preload(), str(SHIM)])
    e["LEAKSHIM_OPTIONS"] = options_string(options)
    return e


def run_shim(argv, options="", env=None, timeout=60, input=None, cwd=None):
    """Run argv with the shim preloaded; return the CompletedProcess (text, output captured).

    Does not check the exit status: the caller asserts on returncode/stdout/stderr."""
    return subprocess.run(
        [str(a) for a in argv],
        env=shim_env(options, env),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def load_reports(pattern):
    """json.load every file matching the glob `pattern` (sorted by name)."""
    out = []
    for path in sorted(glob.glob(str(pattern))):
        with open(path, encoding="utf-8") as f:
            try:
                out.append(json.load(f))
            except json.JSONDecodeError as exc:
                raise AssertionError(f"{path}: not valid JSON: {exc}") from exc
    return out


# ---------------------------------------------------------------- report schema
# Every JSON report the tests read or leave behind is validated against shim/report.schema.json
# (conftest.py does it centrally: json.loads/json.load of a report, and report files left in a
# test's tmp_path). Needs python3-jsonschema (Debian 12: 4.10, draft 2020-12).

SCHEMA = ROOT / "shim" / "report.schema.json"
GOLDEN = ROOT / "tests" / "unit" / "golden"


@functools.lru_cache(maxsize=None)
def report_validator():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def is_report(doc):
    return isinstance(doc, dict) and "leakshim" in doc and "kind" in doc


def validate_report(doc, where="a JSON report"):
    """Raises AssertionError naming every place where doc breaks the schema."""
    errors = sorted(report_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"  at /{'/'.join(str(p) for p in e.absolute_path)}: {e.message[:300]}" for e in errors[:20]]
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise AssertionError(f"{where} does not match {SCHEMA.relative_to(ROOT)}:\n" + "\n".join(lines) + more)


REPORT_PREFIX = b'{"leakshim":'


def validate_report_file(path):
    """Validates every report in the file at path (one JSON document per line; text lines of a
    format=both report on one fd are skipped). Returns how many reports it holds."""
    n = 0
    for i, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.startswith(REPORT_PREFIX):
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"{path}:{i}: a report that is not valid JSON: {exc}") from exc
        validate_report(doc, f"{path}:{i}")
        n += 1
    return n


def undescribed_schema_fields():
    """Properties of the schema without a description (directly or on the definition they refer to)."""
    schema = json.loads(SCHEMA.read_text())

    def target(ref):
        node = schema
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node

    missing = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub and not ("$ref" in sub and "description" in target(sub["$ref"])):
                    missing.append(f"{path}/{key}")
            for key, sub in node.items():
                walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}[{i}]")

    walk(schema, "")
    return missing


def line_of(path, marker):
    """1-based number of the only line of `path` containing `marker` (no line number is hard-coded
    in a test, and an ambiguous marker fails loudly)."""
    hits = [i for i, text in enumerate(Path(path).read_text().splitlines(), 1) if marker in text]
    assert len(hits) == 1, f"{marker!r} found {len(hits)} times in {path}"
    return hits[0]


def pyframes(rep, sid):
    """The Python frames of a JSON report's stack `sid` (none for no stack)."""
    return rep["stacks"][str(sid)].get("pyframes", []) if sid is not None else []

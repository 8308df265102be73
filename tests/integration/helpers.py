"""Small shared helpers for the integration tests: where things are, and how to run a program
under the shim. Kept deliberately small; tests build on these."""

import glob
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "shim" / "libleakshim.so"
TOOL = Path(os.environ.get("LEAKSHIM_TOOL") or ROOT / "tools" / "leakshim")
PY = "/usr/bin/python3"  # Debian's python: the one with psycopg2, redis, pymongo, sqlalchemy


def options_string(options):
    """LEAKSHIM_OPTIONS from a str (as is) or a dict ({"report": "x", "exitcode": 23})."""
    if options is None:
        return ""
    if isinstance(options, dict):
        return ":".join(f"{k}={v}" for k, v in options.items())
    return str(options)


def shim_env(options="", env=None):
    """os.environ plus `env`, with LD_PRELOAD=SHIM and LEAKSHIM_OPTIONS=options."""
    if not SHIM.exists():
        raise FileNotFoundError(f"{SHIM} is not built (run `make`)")
    e = dict(os.environ)
    if env:
        e.update({k: str(v) for k, v in env.items()})
    e["LD_PRELOAD"] = str(SHIM)
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

"""`make demo`: start a throwaway PostgreSQL on a spare loopback port, run the leaky libpq service
sample under the shim (via `leakshim run`), then the fixed one, and show what leakshim reports."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from conftest import PostgresServer  # noqa: E402

TOOL = ROOT / "tools" / "leakshim"


def show(title, argv):
    print(f"\n$ {' '.join(str(a) for a in argv)}    # {title}", flush=True)
    rc = subprocess.run([str(a) for a in argv]).returncode
    print(f"(exit status {rc})", flush=True)


def main():
    pg = PostgresServer().start()
    try:
        dsn = pg.dsn
        show("leaky: every 4th request returns early without PQfinish",
             [TOOL, "run", "--", ROOT / "samples" / "pq_service", dsn, 8])
        show("the same as a CI gate: exit 23 when connections leak",
             [TOOL, "run", "--options", "exitcode=23:report=/dev/null", "--", ROOT / "samples" / "pq_service", dsn, 8])
        show("fixed: PQfinish on every path",
             [TOOL, "run", "--", ROOT / "samples" / "pq_service_fixed", dsn, 8])
    finally:
        pg.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()

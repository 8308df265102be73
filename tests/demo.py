"""`make demo`: start a throwaway PostgreSQL on a spare loopback port, run the leaky libpq service
sample under the shim (via `leakshim run`), then the fixed one, and show what leakshim reports.

Needs only what `make deps-demo` installs: PostgreSQL 15 and Debian's python3 (no pytest, no Python
driver), so it carries its own small server runner instead of the test suite's fixtures. Exits 1
if leakshim did not report what the demo shows (the leak, the CI gate's status, the clean run), so
`sh tools/setup demo` fails loudly in CI."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "leakshim"
SAMPLES = ROOT / "samples"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"


class DemoError(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Postgres:
    """PostgreSQL 15 in a temp dir: trust auth, loopback only, no fsync. As root it runs as the
    `postgres` user (PostgreSQL refuses to run as root); under `setpriv --pdeathsig` it goes away
    with us even if we are killed."""

    def __init__(self):
        for prog in ("initdb", "postgres", "pg_isready"):
            if not os.access(PG_BIN / prog, os.X_OK):
                raise DemoError(f"{PG_BIN / prog} not found: run `make deps-demo` (as root) first")
        self.dir = Path(tempfile.mkdtemp(prefix="leakshim-demo-pg-"))
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.log = self.dir / "postgres.log"
        self.proc = None
        self.port = None
        self.as_user = []
        self.sock.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")  # created by the postgresql package
            for d in (self.dir, self.sock):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)
            self.as_user = ["--reuid", "postgres", "--regid", "postgres", "--init-groups"]

    def wrap(self, argv):
        return ["setpriv", "--pdeathsig=INT", *self.as_user, "--", *map(str, argv)]

    def env(self):
        env = dict(os.environ, LC_ALL="C")
        env.pop("LD_PRELOAD", None)
        return env

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self, attempts=3, timeout=60.0):
        r = subprocess.run(
            self.wrap([PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                       "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]),
            cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise DemoError(f"initdb failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        for _ in range(attempts):
            self.port = free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    self.wrap([PG_BIN / "postgres", "-D", self.data, "-p", self.port,
                               "-k", self.sock, "-c", f"listen_addresses={HOST}",
                               "-c", "fsync=off", "-c", "synchronous_commit=off",
                               "-c", "shared_buffers=32MB", "-c", "logging_collector=off"]),
                    cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                ready = subprocess.run(
                    [PG_BIN / "pg_isready", "-q", "-h", HOST, "-p", str(self.port), "-U", "postgres",
                     "-d", "postgres", "-t", "2"], env=self.env(), stdin=subprocess.DEVNULL)
                if ready.returncode == 0:
                    return self
                time.sleep(0.1)
            self.kill()
            if "in use" not in self.log_tail().lower():
                break  # not a lost race for the spare port: give up
        raise DemoError(f"PostgreSQL did not start; {self.log}:\n{self.log_tail()}")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def dsn(self):
        return f"host={HOST} port={self.port} user=postgres dbname=postgres"


def show(title, argv):
    """Run argv, print its output (stdout and stderr as they interleave) and its exit status."""
    argv = [str(a) for a in argv]
    print(f"\n$ {' '.join(argv)}    # {title}", flush=True)
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace")
    sys.stdout.write(r.stdout)
    print(f"(exit status {r.returncode})", flush=True)
    return r


def main():
    for prog in (TOOL, SAMPLES / "pq_service", SAMPLES / "pq_service_fixed"):
        if not os.access(prog, os.X_OK):
            raise DemoError(f"{prog} is not built: run `make demo`")
    pg = Postgres()
    try:
        pg.start()
        print(f"(a throwaway PostgreSQL 15 on {HOST}:{pg.port}, data in {pg.dir})", flush=True)
        leaky = show("leaky: every 4th request returns early without PQfinish",
                     [TOOL, "run", "--", SAMPLES / "pq_service", pg.dsn, 8])
        gate = show("the same as a CI gate: exit 23 when connections leak",
                    [TOOL, "run", "--options", "exitcode=23:report=/dev/null", "--",
                     SAMPLES / "pq_service", pg.dsn, 8])
        fixed = show("fixed: PQfinish on every path, and the same gate passes",
                     [TOOL, "run", "--options", "exitcode=23", "--", SAMPLES / "pq_service_fixed",
                      pg.dsn, 8])
    finally:
        pg.stop()

    # What the demo is about, checked without depending on the report's wording: the leak is
    # reported with the stack that made it (handle_report), the gate fails the leaky service and
    # passes the fixed one.
    problems = []
    if leaky.returncode != 0 or "handle_report" not in leaky.stdout:
        problems.append("the leaky service: expected exit status 0 and a report naming handle_report")
    if gate.returncode != 23:
        problems.append(f"the CI gate on the leaky service: exit status {gate.returncode}, expected 23")
    if fixed.returncode != 0:
        problems.append(f"the gate on the fixed service: exit status {fixed.returncode}, expected 0")
    if problems:
        raise DemoError("the demo did not show what it should:\n  " + "\n  ".join(problems))
    print("\ndemo: ok (the leak was reported with the stack that made it; the gate failed the "
          "leaky service and passed the fixed one)")


if __name__ == "__main__":
    try:
        main()
    except DemoError as exc:
        sys.exit(f"make demo: {exc}")

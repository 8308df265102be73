"""Web services under the shim for the integration tests (issue 10): start a sample ASGI/WSGI app
with uvicorn or gunicorn on a spare port, drive it over HTTP, take live dumps, stop it and read its
exit report. No sleeps as synchronisation: readiness, idleness and exits are polled for."""

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from helpers import PY, ROOT, TOOL, shim_env

SAMPLES = ROOT / "samples"


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=30.0, what="a condition", interval=0.05):
    """Polls cond() until it returns something true; returns it. Fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Service:
    """A sample app served by uvicorn (default) or gunicorn under the shim, JSON reports in tmp."""

    def __init__(self, tmp_path, app, env=None, options=None, server="uvicorn", extra=(), timeout=60):
        self.port = free_port()
        self.tmp = tmp_path
        opts = {"report": str(tmp_path / "report.%p.json"), "format": "json"}
        opts.update(options or {})
        if server == "uvicorn":
            argv = [PY, "-m", "uvicorn", "--app-dir", str(SAMPLES), app, "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "warning", *extra]
        else:
            argv = [PY, "-m", "gunicorn", "--chdir", str(SAMPLES), "--bind",
                    f"127.0.0.1:{self.port}", "--log-level", "warning", *extra, app]
        self.log = open(tmp_path / "service.log", "w+")
        self.proc = subprocess.Popen([str(a) for a in argv], env=shim_env(opts, env),
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=str(tmp_path))
        self.timeout = timeout
        wait_for(self._accepting, timeout, f"{app} to listen on port {self.port}")

    def _accepting(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"service exited ({self.proc.returncode}):\n{self.output()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def request(self, method, path, body=None):
        """(status, decoded JSON or text) of one HTTP request."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def concurrently(self, calls, workers=8):
        """Runs [(method, path, body)] on `workers` threads at once; returns the results in order."""
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(lambda c: self.request(*c), calls))

    def dump(self, *extra, pid=None):
        r = subprocess.run([str(TOOL), "dump", *extra, str(pid or self.proc.pid)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def dump_json(self, pid=None):
        return json.loads(self.dump("--json", pid=pid))

    def stop(self, sig=signal.SIGINT):
        """Graceful shutdown (the app's shutdown handlers run); returns the exit reports written."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"service did not stop:\n{self.output()}")
        return self.reports()

    def reports(self):
        out = []
        for path in sorted(self.tmp.glob("report.*.json")):
            for line in path.read_text().splitlines():
                if line.strip():
                    out.append(json.loads(line))
        return out

    def exit_report(self, pid=None):
        reps = [r for r in self.reports() if r["kind"] == "exit" and (pid is None or r["pid"] == pid)]
        assert len(reps) == 1, f"expected one exit report, got {len(reps)}:\n{self.output()}"
        return reps[0]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

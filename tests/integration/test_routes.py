"""Which request (issue 10): a FastAPI app under uvicorn and a Flask app under werkzeug's server,
both unchanged and driven over HTTP, leak connections; the exit report says during which route
(method and path template) each was created, and in how many requests."""

import concurrent.futures
import json
import signal
import socket
import subprocess
import time
import urllib.request

from conftest import free_port
from helpers import PY, ROOT, TOOL, load_reports, shim_env

APPS = ROOT / "tests" / "integration" / "data" / "route_apps"


def wait_port(port, proc, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {deadline}s")


def call(port, method, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return json.loads(r.read())


def serve(tmp_path, pg, argv, stop_signal):
    port = free_port()
    env = shim_env(f"report={tmp_path}/r.%p:format=both", {"ROUTES_DSN": pg.dsn})
    proc = subprocess.Popen([str(a).replace("PORT", str(port)) for a in argv], cwd=APPS, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc)
        yield port, proc.pid
    finally:
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 or proc.returncode == -stop_signal, err


def exit_report(tmp_path):
    (js,) = load_reports(tmp_path / "r.*.json")
    text = next(p for p in tmp_path.glob("r.*") if p.suffix != ".json").read_text()
    return js, text


def by_route(js):
    return {c["label"]: (c["count"], c["requests"]) for c in js["contexts"] if c["phase"] == "request"}


def test_fastapi_routes_under_uvicorn(tmp_path, pg):
    argv = [PY, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", "PORT"]
    gen = serve(tmp_path, pg, argv, signal.SIGINT)
    port, pid = next(gen)
    for h in ("a", "b", "c"):
        assert call(port, "POST", f"/webhooks/{h}") == {"ok": h}
    for i in (1, 2):
        assert call(port, "GET", f"/items/{i}") == {"item": i}
    for _ in range(3):
        call(port, "GET", "/health")
    # 8 at once, mixed: each connection keeps its own request's route (tasks and the thread pool)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        jobs = [ex.submit(call, port, "POST", f"/webhooks/c{i}") for i in range(4)]
        jobs += [ex.submit(call, port, "GET", f"/items/{10 + i}") for i in range(4)]
        assert sorted(str(j.result()) for j in jobs)[0]
    # a live dump says the same per group
    dump = subprocess.run([str(TOOL), "dump", str(pid)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "7 created during POST /webhooks/{hook_id}, 7 requests" in dump.stdout, dump.stdout
    next(gen, None)
    js, text = exit_report(tmp_path)
    assert js["summary"]["leaks"] == 13, text
    assert by_route(js) == {"POST /webhooks/{hook_id}": (7, 7), "GET /items/{item_id}": (6, 6)}, js["contexts"]
    assert "created during POST /webhooks/{hook_id}, 7 requests" in text, text
    assert "created during GET /items/{item_id}, 6 requests" in text, text
    assert "/health" not in text
    # every leaked socket carries its request
    socks = [s for s in js["sockets"] if s["category"] != "inherited"]
    assert all(s["context"] and s["context"]["phase"] == "request" for s in socks), socks


def test_flask_routes_under_werkzeug(tmp_path, pg):
    gen = serve(tmp_path, pg, [PY, "flask_app.py", "PORT"], signal.SIGINT)
    port, _ = next(gen)
    for i in (7, 8):
        assert call(port, "POST", f"/orders/{i}") == {"order": i}
    for name in ("daily", "weekly", "monthly"):
        assert call(port, "GET", f"/reports/{name}") == {"report": name}
    call(port, "GET", "/health")
    next(gen, None)
    js, text = exit_report(tmp_path)
    assert js["summary"]["leaks"] == 5, text
    assert by_route(js) == {"POST /orders/<int:order_id>": (2, 2), "GET /reports/<name>": (3, 3)}, js["contexts"]
    assert "created during POST /orders/<int:order_id>, 2 requests" in text, text
    # pool checkouts carry the route of the checkout (the pool itself was made at import)
    (co,) = [g for g in js["groups"] if g["category"] == "checkout-leak"]
    assert [(c["label"], c["count"]) for c in co["contexts"]] == [("GET /reports/<name>", 3)], co
    assert "3 checked out during GET /reports/<name>, 3 requests" in text, text
    outs = [h for h in js["handles"] if h["checked_out"]]
    assert len(outs) == 3 and all(h["checkout_context"]["label"] == "GET /reports/<name>" for h in outs), outs

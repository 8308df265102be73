"""Driver and pool awareness (issue 3) under real programs and real servers: each driver sample's
exact counts, kinds and named functions; redisFreeKeepFd as "handle freed, socket still open";
MariaDB auto-reconnect kept on one handle; libmongoc lazy and background sockets attributed; the
pool checkout warning, once, with its checkout stack; nothing for the fixed samples; a driver not
loaded (or loaded RTLD_LOCAL by a plugin) costs nothing and breaks nothing.

Every sample runs with report=<tmp>/r.%p:format=both, so each test reads the text and the JSON of
exactly the one process it started."""

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from helpers import ROOT, run_shim

SAMPLES = ROOT / "samples"


def run_sample(tmp_path, name, *args, options="", env=None, timeout=60):
    """Runs samples/NAME under the shim; returns (proc, text report, JSON report)."""
    opts = f"report={tmp_path}/r.%p:format=both"
    if options:
        opts += ":" + options
    proc = run_shim([SAMPLES / name, *args], options=opts, env=env, timeout=timeout)
    texts = [p for p in tmp_path.glob("r.*") if p.suffix != ".json"]
    assert len(texts) == 1, f"expected one report, got {texts}\nstderr:\n{proc.stderr}"
    text = texts[0].read_text()
    js = json.loads(Path(str(texts[0]) + ".json").read_text())
    assert js["leakshim"] == 2 and js["kind"] == "exit"
    return proc, text, js


def frames(js, stack_id):
    st = js["stacks"].get(str(stack_id)) if stack_id else None
    return [f.get("symbol") or "" for f in st["frames"]] if st else []


def leak_groups(js):
    return [g for g in js["groups"] if g["leak"]]


def quiet_groups(js, category):
    return [g for g in js["groups"] if not g["leak"] and g["category"] == category]


def assert_clean(proc, text, js):
    """A fixed sample: nothing counted, and the text says so."""
    assert js["summary"]["leaks"] == 0, text
    assert leak_groups(js) == [], text
    assert "ERROR: leakshim" not in text
    assert "leakshim: 0 leaked database connections" in text
    assert "WARNING" not in text + proc.stderr


def assert_one_group(text, js, category, count, driver, function, title_part):
    """Exactly one leak group, of this kind and size, whose stack names `function`."""
    groups = leak_groups(js)
    assert len(groups) == 1, text
    g = groups[0]
    assert (g["category"], g["count"], g["driver"]) == (category, count, driver), g
    assert function in frames(js, g["stack"]), (function, frames(js, g["stack"]))
    assert title_part in g["title"], g["title"]
    assert js["summary"]["leaks"] == count and js["summary"]["groups"] == 1
    noun = "connection" if count == 1 else "connections"
    assert text.rstrip().endswith(f"leakshim: {count} leaked database {noun} in 1 group"), text[-300:]
    return g


def client_handles(js, driver):
    return [h for h in js["handles"] if h["driver"] == driver and h["kind"] == "client"]


# ---------------------------------------------------------------- libpq


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_pq_errpath_leak(tmp_path, pg, via):
    dsn = pg.dsn if via == "tcp" else pg.unix_dsn
    proc, text, js = run_sample(tmp_path, "pq_errpath_leak", dsn, 6)
    assert proc.returncode == 0, proc.stderr
    assert "served 6 requests, 3 failed" in proc.stdout
    g = assert_one_group(text, js, "handle-leak", 3, "libpq", "handle_request",
                         "3 libpq handles (PGconn) never freed, holding 3 open PostgreSQL connections")
    assert g["sockets"] == 3
    leaked = [h for h in client_handles(js, "libpq") if not h["freed"]]
    assert len(leaked) == 3 and all(h["open_sockets"] == 1 and h["type"] == "PGconn" for h in leaked)
    socks = [s for s in js["sockets"] if s["driver"] == "libpq"]
    assert len(socks) == 3
    assert {s["handle"] for s in socks} == {h["handle"] for h in leaked}
    assert all(s["family"] == ("inet" if via == "tcp" else "unix") for s in socks)
    if via == "unix":
        assert all(s["peer"].endswith(f".s.PGSQL.{pg.port}") for s in socks)


def test_pq_errpath_fixed(tmp_path, pg):
    proc, text, js = run_sample(tmp_path, "pq_errpath_fixed", pg.dsn, 6)
    assert proc.returncode == 0 and "served 6 requests, 3 failed" in proc.stdout
    assert_clean(proc, text, js)


def test_pq_async_leak(tmp_path, pg):
    proc, text, js = run_sample(tmp_path, "pq_async_leak", pg.dsn, 4)
    assert proc.returncode == 0, proc.stderr
    assert "served 4 requests, 0 failed" in proc.stdout
    g = assert_one_group(text, js, "handle-leak", 4, "libpq", "handle_request", "4 libpq handles (PGconn)")
    assert "connect_async" in frames(js, g["stack"])
    # Made by PQconnectStart: the handle's stack starts in connect_async, below our hook.
    assert frames(js, g["stack"])[0] == "connect_async"
    assert g["sockets"] == 4


def test_pq_async_fixed(tmp_path, pg):
    proc, text, js = run_sample(tmp_path, "pq_async_fixed", pg.dsn, 4)
    assert proc.returncode == 0
    assert_clean(proc, text, js)


def test_pq_connect_poll_failover_socket_belongs_to_the_handle(tmp_path, pg):
    """Multi-host conninfo whose first host refuses: the socket to the second host is created in
    a later PQconnectPoll, where the handle is known. It must still be that PGconn's socket."""
    dead = dead_port()
    dsn = f"host=127.0.0.1,127.0.0.1 port={dead},{pg.port} user={pg.user} dbname={pg.dbname}"
    proc, text, js = run_sample(tmp_path, "pq_async_leak", dsn, 2, options=f"ports=+{dead}")
    assert proc.returncode == 0, proc.stderr
    assert "served 2 requests, 0 failed" in proc.stdout
    g = assert_one_group(text, js, "handle-leak", 2, "libpq", "handle_request", "2 libpq handles (PGconn)")
    assert g["sockets"] == 2
    socks = [s for s in js["sockets"] if s["driver"] == "libpq"]
    assert len(socks) == 2 and all(s["port"] == pg.port and s["handle"] for s in socks)
    assert not [s for s in js["sockets"] if s["category"] == "leak"]


# ---------------------------------------------------------------- hiredis


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_redis_leak(tmp_path, redis_server, via):
    host = redis_server.host if via == "tcp" else redis_server.unix_path
    proc, text, js = run_sample(tmp_path, "redis_leak", host, redis_server.port, 6)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": miss") == 3
    g = assert_one_group(text, js, "handle-leak", 3, "hiredis", "handle_request",
                         "3 hiredis handles (redisContext) never freed, holding 3 open Redis connections")
    assert "open_connection" in frames(js, g["stack"])
    socks = [s for s in js["sockets"] if s["driver"] == "hiredis"]
    assert len(socks) == 3 and all(s["handle"] and s["state"] == "in-use" for s in socks)


def test_redis_fixed(tmp_path, redis_server):
    proc, text, js = run_sample(tmp_path, "redis_fixed", redis_server.host, redis_server.port, 6)
    assert proc.returncode == 0
    assert_clean(proc, text, js)


def test_redis_free_keep_fd_is_handle_freed_socket_still_open(tmp_path, redis_server):
    proc, text, js = run_sample(tmp_path, "redis_keepfd_leak", redis_server.host, redis_server.port, 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("PONG") == 2
    g = assert_one_group(text, js, "orphaned-socket", 2, "hiredis", "handle_request",
                         "still open after its hiredis handle was freed")
    assert "open_connection" in frames(js, g["stack"])
    assert "(handle freed, socket still open)" in text
    socks = [s for s in js["sockets"] if s["driver"] == "hiredis"]
    assert len(socks) == 2
    assert all(s["state"] == "orphaned" and s["category"] == "orphaned-socket" for s in socks)
    # Each socket still names the context it came from, and that context is freed.
    freed = {h["handle"] for h in client_handles(js, "hiredis") if h["freed"]}
    assert {s["handle"] for s in socks} <= freed and len(freed) == 2


def test_redis_keepfd_fixed(tmp_path, redis_server):
    proc, text, js = run_sample(tmp_path, "redis_keepfd_fixed", redis_server.host, redis_server.port, 2)
    assert proc.returncode == 0
    assert_clean(proc, text, js)


def test_redis_async_leak(tmp_path, redis_server):
    proc, text, js = run_sample(tmp_path, "redis_async_leak", redis_server.host, redis_server.port, 4)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("PONG") == 4 and proc.stdout.count("context kept") == 2
    g = assert_one_group(text, js, "handle-leak", 2, "hiredis", "handle_request",
                         "2 hiredis handles (redisContext) never freed, holding 2 open Redis connections")
    assert g["sockets"] == 2
    # The two disconnected contexts were freed inside redisAsyncDisconnect.
    assert len([h for h in client_handles(js, "hiredis") if not h["freed"]]) == 2


def test_redis_async_fixed_deferred_free(tmp_path, redis_server):
    """redisAsyncDisconnect with a reply pending: hiredis frees the context later, from inside
    redisAsyncHandleRead; that free must be seen."""
    proc, text, js = run_sample(tmp_path, "redis_async_fixed", redis_server.host, redis_server.port, 4)
    assert proc.returncode == 0 and proc.stdout.count("PONG") == 4, proc.stdout + proc.stderr
    assert_clean(proc, text, js)
    assert js["sockets"] == [] and [h for h in js["handles"] if not h["freed"]] == []


# ---------------------------------------------------------------- libmongoc


def test_mongoc_pool_handler_that_never_pushes(tmp_path, mongo):
    proc, text, js = run_sample(tmp_path, "mongoc_pool_leak", mongo.uri, 5)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": ok") == 3 and proc.stdout.count("pool exhausted") == 2  # ran dry
    g = assert_one_group(text, js, "checkout-leak", 3, "libmongoc", "handle_request",
                         "3 MongoDB connections to")
    assert "checked out of a pool and never returned, checked out at handle_request" in g["title"]
    pools = [h for h in js["handles"] if h["kind"] == "pool"]
    assert len(pools) == 1 and not pools[0]["freed"]
    pool = pools[0]["handle"]
    out = [h for h in client_handles(js, "libmongoc") if h["checked_out"]]
    assert len(out) == 3 and all(h["pool"] == pool and h["open_sockets"] == 1 for h in out)
    assert all(frames(js, h["checkout_stack"])[0] == "handle_request" for h in out)
    # The pool and its monitoring are reported quietly, never as leaks.
    assert [x["count"] for x in quiet_groups(js, "pool-unclosed")] == [1]
    assert "1 libmongoc pool not closed at shutdown (3 clients)" in text
    bg = [s for s in js["sockets"] if s["state"] == "background"]
    assert bg, "the pool's monitor sockets were not seen"
    assert all(s["driver"] == "libmongoc" and s["category"] == "background" and s["handle"] == pool
               for s in bg)
    assert sum(x["count"] for x in quiet_groups(js, "background")) == len(bg)
    # Every other MongoDB socket is a checked-out client's connection.
    app = [s for s in js["sockets"] if s["state"] != "background"]
    assert len(app) == 3 and all(s["state"] == "checked-out" and s["pool"] == pool for s in app)


def test_mongoc_pool_fixed(tmp_path, mongo):
    proc, text, js = run_sample(tmp_path, "mongoc_pool_fixed", mongo.uri, 5)
    assert proc.returncode == 0 and proc.stdout.count(": ok") == 5
    assert_clean(proc, text, js)
    assert js["sockets"] == [] and [h for h in js["handles"] if not h["freed"]] == []


def test_mongoc_checkout_past_threshold_warns_once_with_its_stack(tmp_path, mongo):
    proc, text, js = run_sample(tmp_path, "mongoc_pool_leak", mongo.uri, 1, 3.5, options="threshold=1")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in text.splitlines() if line.startswith("leakshim: WARNING:")]
    assert len(warnings) == 1, text  # checked three times past the threshold, warned once
    assert re.match(r"leakshim: WARNING: libmongoc mongoc_client_t 0x[0-9a-f]+ checked out of pool "
                    r"0x[0-9a-f]+ for [0-9.]+s \(threshold 1s\), possible leak; checked out at:$",
                    warnings[0]), warnings[0]
    block = text.split(warnings[0], 1)[1].split("\n=")[0]
    # handle_request (file:line) with debug info, handle_request+0xOFF (module+0xOFF) without
    assert re.search(r"#0 0x[0-9a-f]+ in handle_request[+ ]", block), block
    client = warnings[0].split()[4]
    (h,) = [h for h in js["handles"] if h["handle"] == client]
    assert h["checked_out"] and h["checkout_age"] >= 3
    assert_one_group(text, js, "checkout-leak", 1, "libmongoc", "handle_request", "1 MongoDB connection")


def test_mongoc_fixed_pool_never_warns(tmp_path, mongo):
    proc, text, js = run_sample(tmp_path, "mongoc_pool_fixed", mongo.uri, 2, 2.5, options="threshold=1")
    assert proc.returncode == 0
    assert_clean(proc, text, js)


def test_mongoc_signal_dump_lists_checked_out_clients_oldest_first(tmp_path, mongo):
    import signal
    import time

    from helpers import shim_env

    opts = f"report={tmp_path}/r.%p:format=both"
    proc = subprocess.Popen([str(SAMPLES / "mongoc_pool_leak"), mongo.uri, "3", "6"],
                            env=shim_env(opts), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.startswith("served") for line in lines):
            line = proc.stdout.readline()
            assert line, "sample ended early"
            lines.append(line)
        time.sleep(0.3)
        proc.send_signal(signal.SIGUSR2)  # the snapshot goes to the report destination
        dump = tmp_path / f"r.{proc.pid}"
        deadline = time.monotonic() + 10
        while not (dump.exists() and "snapshot:" in dump.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "snapshot:" in dump.read_text(), "no snapshot written"
        assert proc.poll() is None  # the host keeps running
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # JSON Lines: the snapshot first, the exit report after it
    snap = json.loads((tmp_path / f"r.{proc.pid}.json").read_text().splitlines()[0])
    assert snap["kind"] == "snapshot"
    out_handles = [h for h in snap["handles"] if h["checked_out"]]
    assert len(out_handles) == 3 and all(frames(snap, h["checkout_stack"])[0] == "handle_request"
                                         for h in out_handles)
    # The three checkouts share one checkout stack: one group, its clients oldest first.
    (g,) = [g for g in snap["groups"] if g["category"] == "checked-out"]
    age = {h["handle"]: h["checkout_age"] for h in out_handles}
    ages = [age[h] for h in g["handles"]]
    assert len(ages) == 3 and ages == sorted(ages, reverse=True), g
    assert (g["oldest"], g["newest"]) == (ages[0], ages[-1]), g
    text = dump.read_text()
    section = text.split("Checked out of pools (oldest first):\n", 1)[1].split("\n\n", 1)[0]
    m = re.match(r"3 MongoDB connections to \S+ \(libmongoc\) checked out of libmongoc pool 0x[0-9a-f]+ "
                 r"for ([0-9.]+)s \(oldest\) to ([0-9.]+)s \(newest\), checked out at handle_request", section)
    assert m and float(m.group(1)) >= float(m.group(2)), section


POOL_THREADS_C = r"""
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
static mongoc_client_pool_t *pool;
static void *worker(void *arg)
{
    (void)arg;
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    for (int i = 0; i < 150; i++) {
        mongoc_client_t *c = mongoc_client_pool_pop(pool);
        bson_error_t err;
        if (!mongoc_client_command_simple(c, "admin", cmd, NULL, NULL, &err))
            fprintf(stderr, "%s\n", err.message);
        mongoc_client_pool_push(pool, c);
    }
    bson_destroy(cmd);
    return NULL;
}
int main(int argc, char **argv)
{
    (void)argc;
    mongoc_init();
    mongoc_uri_t *uri = mongoc_uri_new(argv[1]);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_MAXPOOLSIZE, 3); /* contended: 8 threads, 3 clients */
    pool = mongoc_client_pool_new(uri);
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    mongoc_client_pool_destroy(pool);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
    puts("done");
    return 0;
}
"""


def test_mongoc_pool_shared_by_threads_has_no_false_checkouts(tmp_path, mongo):
    """8 threads pop/ping/push through a 3-client pool: a client pushed by one thread is popped
    at once by another, so a checkin recorded after the real push would undo that checkout."""
    src = tmp_path / "pool_threads.c"
    src.write_text(POOL_THREADS_C)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmongoc-1.0"], capture_output=True,
                           text=True, check=True).stdout.split()
    exe = tmp_path / "pool_threads"
    subprocess.run(["cc", "-g", "-o", exe, src, *flags, "-lpthread"], check=True)
    out = tmp_path / "out"
    out.mkdir()
    r = run_shim([exe, mongo.uri], options=f"report={out}/r.%p:format=both:threshold=5", timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "done\n", "")
    (text_path,) = [p for p in out.glob("r.*") if p.suffix != ".json"]
    text = text_path.read_text()
    js = json.loads(Path(str(text_path) + ".json").read_text())
    assert_clean(r, text, js)
    clients = client_handles(js, "libmongoc")
    assert all(h["freed"] and not h["checked_out"] for h in clients)


def test_mongoc_client_per_request(tmp_path, mongo):
    """Single-threaded clients connect lazily, from the topology scanner, inside the first
    command: each socket must still belong to its client."""
    proc, text, js = run_sample(tmp_path, "mongoc_per_request_leak", mongo.uri, 4)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": ok") == 4
    g = assert_one_group(text, js, "handle-leak", 4, "libmongoc", "handle_request",
                         "4 libmongoc handles (mongoc_client_t) never freed, holding 4 open MongoDB connections")
    assert g["sockets"] == 4
    clients = client_handles(js, "libmongoc")
    assert len(clients) == 4 and all(h["open_sockets"] == 1 and h["pool"] is None for h in clients)
    socks = js["sockets"]
    assert len(socks) == 4 and {s["handle"] for s in socks} == {h["handle"] for h in clients}
    assert not [s for s in socks if s["category"] in ("leak", "background")]
    # The churn table names the one stack that made all four clients.
    (row,) = [c for c in js["churn"] if frames(js, c["stack"])[:1] == ["handle_request"]]
    assert row["created"] == 4


def test_mongoc_per_request_fixed(tmp_path, mongo):
    proc, text, js = run_sample(tmp_path, "mongoc_per_request_fixed", mongo.uri, 4)
    assert proc.returncode == 0 and proc.stdout.count(": ok") == 4
    assert_clean(proc, text, js)


# ---------------------------------------------------------------- MariaDB / MySQL


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_mysql_leak(tmp_path, mariadb, via):
    host = mariadb.host if via == "tcp" else mariadb.socket
    proc, text, js = run_sample(tmp_path, "mysql_leak", host, mariadb.port, mariadb.user, mariadb.password, 6)
    assert proc.returncode == 0, proc.stderr
    assert "served 6 requests, 3 failed" in proc.stdout
    g = assert_one_group(text, js, "handle-leak", 3, "mariadb", "handle_request",
                         "3 mariadb handles (MYSQL) never freed, holding 3 open MySQL connections")
    assert "db_connect" in frames(js, g["stack"])
    socks = js["sockets"]
    assert len(socks) == 3 and all(s["driver"] == "mariadb" and s["handle"] for s in socks)


def test_mysql_fixed(tmp_path, mariadb):
    proc, text, js = run_sample(tmp_path, "mysql_fixed", mariadb.host, mariadb.port, mariadb.user,
                                mariadb.password, 6)
    assert proc.returncode == 0
    assert_clean(proc, text, js)


def test_mysql_auto_reconnect_stays_on_the_users_handle(tmp_path, mariadb):
    proc, text, js = run_sample(tmp_path, "mysql_reconnect_leak", mariadb.host, mariadb.port, mariadb.user,
                                mariadb.password)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 0 = the driver really reconnected
    assert "reconnected" in proc.stdout
    assert_one_group(text, js, "handle-leak", 1, "mariadb", "open_session",
                     "1 mariadb handle (MYSQL) never freed, holding 1 open MySQL connection")
    live = [h for h in client_handles(js, "mariadb") if not h["freed"]]
    assert len(live) == 1  # no second handle for the driver's private MYSQL
    assert live[0]["open_sockets"] == 1 and live[0]["sockets_ever"] == 2
    (sock,) = js["sockets"]
    # a socket carries the category of the group it is reported in: its handle's
    assert sock["handle"] == live[0]["handle"] and sock["category"] == "handle-leak"
    assert sock["group"] == live[0]["group"] == leak_groups(js)[0]["id"]


def test_mysql_auto_reconnect_fixed(tmp_path, mariadb):
    proc, text, js = run_sample(tmp_path, "mysql_reconnect_fixed", mariadb.host, mariadb.port, mariadb.user,
                                mariadb.password)
    assert proc.returncode == 0 and "reconnected" in proc.stdout
    assert_clean(proc, text, js)
    assert js["sockets"] == [] and [h for h in js["handles"] if not h["freed"]] == []


# ---------------------------------------------------------------- drivers absent, or hidden


def test_program_without_any_driver_runs_unchanged(tmp_path):
    env_report = f"report={tmp_path}/r.%p"
    r = run_shim(["/bin/sh", "-c", "echo hello; exit 7"], options=env_report)
    assert (r.returncode, r.stdout) == (7, "hello\n")
    assert r.stderr == ""
    r = run_shim(["/usr/bin/python3", "-c", "import socket; print(socket.gethostname() != '')"],
                 options=env_report)
    assert (r.returncode, r.stdout) == (0, "True\n"), r.stderr


def test_hiredis_program_without_libpq(tmp_path, redis_server):
    """The PQ* hooks exist in every process; a program that never loads libpq is unaffected."""
    ldd = subprocess.run(["ldd", str(SAMPLES / "redis_fixed")], capture_output=True, text=True).stdout
    assert "libpq" not in ldd
    proc, text, js = run_sample(tmp_path, "redis_fixed", redis_server.host, redis_server.port, 2)
    assert proc.returncode == 0 and "served 2 requests, 0 errors" in proc.stdout
    assert_clean(proc, text, js)


def dead_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sample,args", [
    ("pq_errpath_fixed", lambda p: [f"host=127.0.0.1 port={p} user=x dbname=x connect_timeout=2", 2]),
    ("redis_fixed", lambda p: ["127.0.0.1", p, 2]),
    ("mysql_fixed", lambda p: ["127.0.0.1", p, "root", "", 2]),
])
def test_failed_connects_behave_as_without_the_shim(tmp_path, sample, args):
    """Return values and errors pass through untouched: the same output, line for line."""
    argv = [SAMPLES / sample, *args(dead_port())]
    bare = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
    shim = run_shim(argv, options=f"report={tmp_path}/r.%p", timeout=60)
    assert (shim.returncode, shim.stdout, shim.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    assert "refused" in bare.stderr.lower() or "can't connect" in bare.stderr.lower(), bare.stderr
    (report,) = tmp_path.glob("r.*")
    assert "leakshim: 0 leaked database connections" in report.read_text()


PLUGIN_C = r"""
#include <libpq-fe.h>
#include <stdio.h>
/* A plugin that opens a connection and keeps it: the leak. */
int plugin_query(const char *conninfo, char *out, size_t n)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        return -1;
    PGresult *r = PQexec(conn, "SELECT 6 * 7");
    snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}
"""

HOST_C = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL); /* libpq comes in local to the plugin */
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 2; }
    int (*q)(const char *, char *, size_t) = (int (*)(const char *, char *, size_t))dlsym(h, "plugin_query");
    char out[32] = "";
    int rc = q(argv[2], out, sizeof out);
    printf("rc=%d answer=%s\n", rc, out);
    return rc;
}
"""


def test_driver_loaded_rtld_local_by_a_plugin(tmp_path, pg):
    """As Python loads psycopg2's _psycopg.so: libpq is not in the global scope, so RTLD_NEXT
    cannot find the real PQconnectdb, yet the plugin's calls reach our hook."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "plugin.c").write_text(PLUGIN_C)
    (build / "host.c").write_text(HOST_C)
    pq = subprocess.run(["pkg-config", "--cflags", "--libs", "libpq"], capture_output=True, text=True)
    pq_flags = pq.stdout.split() if pq.returncode == 0 else ["-I/usr/include/postgresql", "-lpq"]
    subprocess.run(["cc", "-shared", "-fPIC", "-g", "-o", build / "plugin.so", build / "plugin.c", *pq_flags],
                   check=True)
    subprocess.run(["cc", "-g", "-o", build / "host", build / "host.c", "-ldl"], check=True)
    out = tmp_path / "out"
    out.mkdir()
    r = run_shim([build / "host", build / "plugin.so", pg.dsn], options=f"report={out}/r.%p:format=both")
    assert (r.returncode, r.stdout) == (0, "rc=0 answer=42\n"), r.stderr
    (text_path,) = [p for p in out.glob("r.*") if p.suffix != ".json"]
    text = text_path.read_text()
    js = json.loads(Path(str(text_path) + ".json").read_text())
    assert_one_group(text, js, "handle-leak", 1, "libpq", "plugin_query", "1 libpq handle (PGconn) never freed")

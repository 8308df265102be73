"""Sanity checks that each server fixture is a real server a real client can use."""

import os
import subprocess

from helpers import PY


def test_pg_tcp(pg):
    import psycopg2

    with psycopg2.connect(pg.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1, inet_server_port(), current_user, current_database()")
        assert cur.fetchone() == (1, pg.port, pg.user, pg.dbname)
        cur.execute("SHOW max_connections")
        assert int(cur.fetchone()[0]) >= 100
    conn.close()


def test_pg_unix_socket(pg):
    import psycopg2

    assert os.path.exists(os.path.join(pg.sockdir, f".s.PGSQL.{pg.port}"))
    conn = psycopg2.connect(pg.unix_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1, inet_server_port()")
            assert cur.fetchone() == (1, None)  # NULL: not a TCP connection
    finally:
        conn.close()


def test_redis_tcp_and_unix(redis_server):
    import redis

    c = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert c.ping()
    c.set("leakshim:k", "v")
    u = redis.Redis(unix_socket_path=redis_server.unix_path)
    assert u.get("leakshim:k") == b"v"
    c.close()
    u.close()


def test_mariadb_cli(mariadb):
    for tcp in (True, False):
        r = subprocess.run(mariadb.client_argv("SELECT 1+1", tcp=tcp), capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "2"
    r = subprocess.run(mariadb.client_argv(
        "CREATE DATABASE IF NOT EXISTS leakshim",
        "CREATE TABLE IF NOT EXISTS leakshim.t (x INT)",
        "INSERT INTO leakshim.t VALUES (7)",
        "SELECT SUM(x) FROM leakshim.t"), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] in ("7", "14")  # 14 if the test ran twice against one server


def test_mongo_pymongo(mongo):
    import pymongo

    c = pymongo.MongoClient(mongo.uri)
    try:
        assert c.admin.command("ping")["ok"] == 1
        coll = c.leakshim_test.things
        oid = coll.insert_one({"name": "socket", "n": 1}).inserted_id
        doc = coll.find_one({"_id": oid})
        assert doc["name"] == "socket" and doc["n"] == 1
    finally:
        c.close()


def test_mongo_from_subprocess(mongo):
    """A separate interpreter (as the shimmed Python tests will use) can talk to it too."""
    code = (
        "import pymongo,sys; c=pymongo.MongoClient(sys.argv[1]); "
        "print(c.admin.command('ping')['ok']); c.close()"
    )
    r = subprocess.run([PY, "-c", code, mongo.uri], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == 1


MONGOC_PROGRAM = r"""
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <string.h>
#define FAIL(what) do { fprintf(stderr, "%s: %s\n", what, err.message); return 1; } while (0)
int main(int argc, char **argv) {
    bson_error_t err;
    bson_t reply;
    const bson_t *d;
    int n = 0;
    (void)argc;
    mongoc_init();
    mongoc_client_t *c = mongoc_client_new(argv[1]);
    bson_t *ping = BCON_NEW("ping", BCON_INT32(1));
    if (!mongoc_client_command_simple(c, "admin", ping, NULL, &reply, &err)) FAIL("ping");
    bson_destroy(&reply);
    mongoc_collection_t *col = mongoc_client_get_collection(c, "leakshim_test", "c_things");
    bson_t *doc = BCON_NEW("tag", BCON_UTF8(argv[2]), "x", BCON_INT32(42));
    if (!mongoc_collection_insert_one(col, doc, NULL, NULL, &err)) FAIL("insert");
    bson_t *q = BCON_NEW("tag", BCON_UTF8(argv[2]));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, q, NULL, NULL);
    while (mongoc_cursor_next(cur, &d)) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, d, "x") && bson_iter_int32(&it) == 42) n++;
    }
    if (mongoc_cursor_error(cur, &err)) FAIL("find");
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(col);
    mongoc_client_destroy(c);
    /* A pool: its background monitor uses the streaming ("awaitable") hello. */
    mongoc_uri_t *uri = mongoc_uri_new(argv[1]);
    mongoc_client_pool_t *pool = mongoc_client_pool_new(uri);
    mongoc_client_t *pc = mongoc_client_pool_pop(pool);
    if (!mongoc_client_command_simple(pc, "admin", ping, NULL, &reply, &err)) FAIL("pool ping");
    bson_destroy(&reply);
    mongoc_client_pool_push(pool, pc);
    mongoc_client_pool_destroy(pool);
    mongoc_uri_destroy(uri);
    bson_destroy(q); bson_destroy(doc); bson_destroy(ping);
    mongoc_cleanup();
    printf("found %d\n", n);
    return n == 1 ? 0 : 2;
}
"""


def test_mongo_libmongoc(mongo, tmp_path):
    src = tmp_path / "mongoc_ping.c"
    exe = tmp_path / "mongoc_ping"
    src.write_text(MONGOC_PROGRAM)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmongoc-1.0"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-o", exe, src, *flags], check=True, timeout=120)
    r = subprocess.run([exe, mongo.uri, f"t{os.getpid()}"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "found 1"


def test_report_startup_times(pg, redis_server, mariadb, mongo):
    """Not a check: prints how long each server took (visible with -s or on failure)."""
    for s in (pg, redis_server, mariadb, mongo):
        print(f"{s.name}: prepare {s.prepare_seconds:.2f}s, start-up {s.startup_seconds:.2f}s")
        assert s.startup_seconds is not None and s.proc.poll() is None

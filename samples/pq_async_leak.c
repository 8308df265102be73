/* libpq async connect (PQconnectStart / PQconnectPoll, as psycopg 3 and event loops do): a
 * request object owns its connection, and request_done() frees the request but forgets
 * PQfinish. Every request leaks its PGconn and socket; the report names connect_async and
 * handle_request. pq_async_fixed.c (FIXED) finishes the connection in request_done().
 *
 * Usage: pq_async_leak [CONNINFO [REQUESTS]]    CONNINFO defaults to $PGDSN, REQUESTS to 4 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

struct request {
    int id;
    PGconn *conn;
};

/* Drives the non-blocking connect to completion with poll(2), as an event loop would. */
static PGconn *connect_async(const char *conninfo)
{
    PGconn *conn = PQconnectStart(conninfo);
    if (!conn)
        return NULL;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd p = {.fd = PQsocket(conn), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (p.fd < 0 || poll(&p, 1, 5000) <= 0)
            break;
        st = PQconnectPoll(conn);
    }
    return conn;
}

static void request_done(struct request *r)
{
#ifdef FIXED
    PQfinish(r->conn);
#endif
    free(r);
}

static int handle_request(const char *conninfo, int id)
{
    struct request *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->id = id;
    r->conn = connect_async(conninfo);
    if (!r->conn || PQstatus(r->conn) != CONNECTION_OK) {
        fprintf(stderr, "request %d: connect: %s", id, r->conn ? PQerrorMessage(r->conn) : "out of memory\n");
        PQfinish(r->conn);
        free(r);
        return -1;
    }
    PGresult *res = PQexec(r->conn, "SELECT pg_backend_pid()");
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (ok)
        printf("request %d: backend %s\n", id, PQgetvalue(res, 0, 0));
    PQclear(res);
    request_done(r);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("PGDSN");
    int n = argc > 2 ? atoi(argv[2]) : 4, failed = 0;
    if (!conninfo)
        conninfo = "";
    for (int i = 0; i < n; i++)
        failed += handle_request(conninfo, i) != 0;
    printf("served %d requests, %d failed\n", n, failed);
    return failed ? 1 : 0;
}

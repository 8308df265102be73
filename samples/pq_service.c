/* A small request-serving C program on libpq. `lookup` requests connect, query and finish;
 * `report` requests return early when the report is empty and forget PQfinish on that path:
 * the leak. Build with -DFIXED for the fixed version (samples/pq_service_fixed.c).
 *
 * Usage: pq_service CONNINFO N            serve N requests (every 4th is a report), then exit
 *        pq_service CONNINFO --serve      print "ready", then serve one request per stdin line
 *                                          ("lookup" or "report"), answering "ok"; exit at EOF */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int handle_lookup(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    PGresult *r = PQexec(conn, "SELECT 1");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    PQfinish(conn);
    return ok ? 0 : -1;
}

static int handle_report(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    PGresult *r = PQexec(conn, "SELECT 1 WHERE false");
    if (PQntuples(r) == 0) {
        PQclear(r);
#ifdef FIXED
        PQfinish(conn);
#endif
        return 0; /* nothing to report: early return */
    }
    PQclear(r);
    PQfinish(conn);
    return 0;
}

static int serve(const char *conninfo, const char *req)
{
    return strcmp(req, "report") == 0 ? handle_report(conninfo) : handle_lookup(conninfo);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONNINFO N|--serve\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[2], "--serve") == 0) {
        char line[64];
        printf("ready\n");
        fflush(stdout);
        while (fgets(line, sizeof line, stdin)) {
            line[strcspn(line, "\n")] = 0;
            printf(serve(argv[1], line) == 0 ? "ok\n" : "error\n");
            fflush(stdout);
        }
        return 0;
    }
    int n = atoi(argv[2]), failed = 0;
    for (int i = 0; i < n; i++)
        failed += serve(argv[1], i % 4 == 0 ? "report" : "lookup") != 0;
    printf("served %d requests, %d failed\n", n, failed);
    return failed ? 1 : 0;
}

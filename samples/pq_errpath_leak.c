/* libpq: a request handler that leaks its connection on an error path.
 *
 * handle_request() connects, asks the database to divide by the request's divisor and returns
 * early when the query fails (division by zero for every odd request): that path forgets
 * PQfinish. The report shows one group of libpq handles never freed, created in handle_request.
 * pq_errpath_fixed.c (FIXED) finishes the connection on every path: nothing is reported.
 *
 * Usage: pq_errpath_leak [CONNINFO [REQUESTS]]    CONNINFO defaults to $PGDSN, REQUESTS to 6 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

static int handle_request(const char *conninfo, int id)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "request %d: connect: %s", id, PQerrorMessage(conn));
        PQfinish(conn);
        return -1;
    }
    char divisor[16];
    snprintf(divisor, sizeof divisor, "%d", id % 2 ? 0 : id + 1);
    const char *params[1] = {divisor};
    PGresult *res = PQexecParams(conn, "SELECT 100 / $1::int", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "request %d: %s", id, PQerrorMessage(conn));
        PQclear(res);
#ifdef FIXED
        PQfinish(conn);
#endif
        return -1; /* the error path */
    }
    printf("request %d: %s\n", id, PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(conn);
    return 0;
}

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("PGDSN");
    int n = argc > 2 ? atoi(argv[2]) : 6, failed = 0;
    if (!conninfo)
        conninfo = "";
    for (int i = 0; i < n; i++)
        failed += handle_request(conninfo, i) != 0;
    printf("served %d requests, %d failed\n", n, failed);
    return 0;
}

/* A small multi-threaded libpq service, meant to be started WITHOUT the shim and diagnosed with
 * `leakshim attach PID` (README "Attaching to a running process"; tests/integration/test_attach.py).
 *
 *   pq_attach_service DSN [THREADS]
 *
 * Opens one PostgreSQL connection at start (held for the whole run, shared under a mutex), listens
 * on 127.0.0.1 (an ephemeral port, printed as "port N" on stdout) and serves one line per client
 * connection with THREADS worker threads (default 8):
 *   ping   SELECT 1 on the shared connection, answers "ok"
 *   leak   opens a report connection and forgets to PQfinish it (the bug), answers "ok"
 *   quit   answers "bye" and exits with status 0 (so the exit report runs)
 */
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *dsn;
static PGconn *shared; /* opened before any attach: "opened before attach" */
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static int listener;

static int query_ok(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT 1");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

/* The bug: a connection per report, never finished. */
static int open_report_connection(void)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        return 0;
    return query_ok(c); /* missing PQfinish(c) */
}

static int ping(void)
{
    pthread_mutex_lock(&shared_mu);
    int ok = query_ok(shared);
    pthread_mutex_unlock(&shared_mu);
    return ok;
}

static void serve(int c)
{
    char line[64];
    ssize_t n = recv(c, line, sizeof line - 1, 0);
    line[n > 0 ? n : 0] = 0;
    line[strcspn(line, "\r\n")] = 0;
    const char *answer = "error\n";
    if (!strcmp(line, "ping"))
        answer = ping() ? "ok\n" : "error\n";
    else if (!strcmp(line, "leak"))
        answer = open_report_connection() ? "ok\n" : "error\n";
    else if (!strcmp(line, "quit")) {
        send(c, "bye\n", 4, MSG_NOSIGNAL);
        close(c);
        exit(0);
    }
    send(c, answer, strlen(answer), MSG_NOSIGNAL);
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(listener, NULL, NULL);
        if (c < 0)
            continue;
        serve(c);
        close(c);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DSN [THREADS]\n", argv[0]);
        return 2;
    }
    dsn = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    shared = PQconnectdb(dsn);
    if (PQstatus(shared) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(shared));
        return 1;
    }
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(listener, 128) != 0 ||
        getsockname(listener, (struct sockaddr *)&a, &len) != 0) {
        perror("listen");
        return 1;
    }
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
    }
    for (;;)
        pause();
}

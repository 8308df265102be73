/* libmongoc client-per-request: handle_request() creates a mongoc_client_t for every request
 * and never destroys it. Each client keeps its connection (and its topology) open: the report
 * shows one group of libmongoc clients never freed, created in handle_request, with the count,
 * and the churn table shows the one stack that made them all. mongoc_per_request_fixed.c (FIXED)
 * creates one client at start-up, shares it across requests and destroys it at exit.
 *
 * Usage: mongoc_per_request_leak [URI [REQUESTS]]    URI defaults to $MONGODB_URI; 4 requests */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>

static int ping(mongoc_client_t *client, int id)
{
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bson_error_t error;
    bool ok = mongoc_client_command_simple(client, "admin", cmd, NULL, NULL, &error);
    bson_destroy(cmd);
    if (!ok)
        fprintf(stderr, "request %d: %s\n", id, error.message);
    else
        printf("request %d: ok\n", id);
    return ok ? 0 : -1;
}

#ifdef FIXED
static mongoc_client_t *shared_client;

static int handle_request(const char *uri_string, int id)
{
    (void)uri_string;
    return ping(shared_client, id);
}
#else
static int handle_request(const char *uri_string, int id)
{
    mongoc_client_t *client = mongoc_client_new(uri_string); /* one client per request... */
    if (!client)
        return -1;
    return ping(client, id); /* ...never destroyed */
}
#endif

int main(int argc, char **argv)
{
    const char *uri_string = argc > 1 ? argv[1] : getenv("MONGODB_URI");
    int n = argc > 2 ? atoi(argv[2]) : 4, failed = 0;
    if (!uri_string)
        uri_string = "mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=2000";
    mongoc_init();
#ifdef FIXED
    shared_client = mongoc_client_new(uri_string);
    if (!shared_client) {
        fprintf(stderr, "bad URI\n");
        return 2;
    }
#endif
    for (int i = 0; i < n; i++)
        failed += handle_request(uri_string, i) != 0;
    printf("served %d requests, %d failed\n", n, failed);
#ifdef FIXED
    mongoc_client_destroy(shared_client);
#endif
    mongoc_cleanup();
    return failed ? 1 : 0;
}

/* libmongoc pool: a request handler that pops a client and, on its success path, never pushes
 * it back. Every successful request keeps a client checked out; after maxPoolSize requests the
 * pool runs dry and further requests fail ("pool exhausted"). The report shows the clients
 * checked out and never returned, with the checkout stack naming handle_request; with
 * threshold=N and a hold longer than N seconds, one live warning per client while the program
 * runs. mongoc_pool_fixed.c (FIXED) pushes the client back on every path.
 *
 * The leaky version exits without destroying its pool, as a service that ran dry would be
 * killed: mongoc_client_pool_destroy() itself pops a client (to end server sessions) and would
 * block forever on the dry pool. The pool then shows in the report's quiet section ("pool not
 * closed at shutdown"), with its monitoring sockets as background, neither counted as a leak.
 *
 * Usage: mongoc_pool_leak [URI [REQUESTS [HOLD_SECONDS]]]
 *        URI defaults to $MONGODB_URI; maxPoolSize=3 unless the URI sets it; 5 requests; the
 *        program waits HOLD_SECONDS (default 0) after the requests, as a long-running service
 *        would, then exits (FIXED: destroys the pool first). */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int handle_request(mongoc_client_pool_t *pool, int id)
{
    mongoc_client_t *client = mongoc_client_pool_try_pop(pool);
    if (!client) {
        printf("request %d: pool exhausted\n", id);
        return -1;
    }
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bson_error_t error;
    bool ok = mongoc_client_command_simple(client, "admin", cmd, NULL, NULL, &error);
    bson_destroy(cmd);
    if (!ok) {
        fprintf(stderr, "request %d: %s\n", id, error.message);
        mongoc_client_pool_push(pool, client);
        return -1;
    }
    printf("request %d: ok\n", id);
#ifdef FIXED
    mongoc_client_pool_push(pool, client);
#endif
    return 0; /* the success path forgets to push the client back */
}

int main(int argc, char **argv)
{
    const char *uri_string = argc > 1 ? argv[1] : getenv("MONGODB_URI");
    int n = argc > 2 ? atoi(argv[2]) : 5;
    double hold = argc > 3 ? atof(argv[3]) : 0;
    if (!uri_string)
        uri_string = "mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=2000";
    mongoc_init();
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_string, &error);
    if (!uri) {
        fprintf(stderr, "bad URI: %s\n", error.message);
        return 2;
    }
    if (mongoc_uri_get_option_as_int32(uri, MONGOC_URI_MAXPOOLSIZE, 0) == 0)
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_MAXPOOLSIZE, 3);
    mongoc_client_pool_t *pool = mongoc_client_pool_new(uri);
    int failed = 0;
    for (int i = 0; i < n; i++)
        failed += handle_request(pool, i) != 0;
    printf("served %d requests, %d failed\n", n, failed);
    fflush(stdout);
    /* The service keeps running; a signal (e.g. leakshim's dump signal) does not cut it short. */
    struct timespec left = {(time_t)hold, (long)((hold - (time_t)hold) * 1e9)};
    while (hold > 0 && nanosleep(&left, &left) != 0)
        ;
#ifdef FIXED
    mongoc_client_pool_destroy(pool);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
#endif
    return 0;
}

/* hiredis: a cache lookup handler that leaks its connection on the cache-miss path.
 *
 * handle_request() connects, fills the cache for even requests, then GETs its key; a miss (every
 * odd request) returns early without redisFree. The report shows one group of hiredis contexts
 * never freed, created in handle_request. redis_fixed.c (FIXED) frees on every path.
 *
 * Usage: redis_leak [HOST [PORT [REQUESTS]]]    HOST may be a Unix socket path (starts with '/');
 *        defaults: $REDIS_HOST or 127.0.0.1, $REDIS_PORT or 6379, 6 requests */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static redisContext *open_connection(const char *host, int port)
{
    return host[0] == '/' ? redisConnectUnix(host) : redisConnect(host, port);
}

static int handle_request(const char *host, int port, int id)
{
    redisContext *c = open_connection(host, port);
    if (!c || c->err) {
        fprintf(stderr, "request %d: connect: %s\n", id, c ? c->errstr : "out of memory");
        redisFree(c);
        return -1;
    }
    char key[64];
    snprintf(key, sizeof key, "leakshim:sample:%d:%d", (int)getpid(), id);
    if (id % 2 == 0)
        freeReplyObject(redisCommand(c, "SET %s cached EX 60", key));
    redisReply *reply = redisCommand(c, "GET %s", key);
    if (!reply || reply->type != REDIS_REPLY_STRING) {
        printf("request %d: miss\n", id);
        freeReplyObject(reply);
#ifdef FIXED
        redisFree(c);
#endif
        return 1; /* cache miss: the early return */
    }
    printf("request %d: hit %s\n", id, reply->str);
    freeReplyObject(reply);
    redisFree(c);
    return 0;
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : getenv("REDIS_HOST");
    const char *port = argc > 2 ? argv[2] : getenv("REDIS_PORT");
    int n = argc > 3 ? atoi(argv[3]) : 6, errors = 0;
    if (!host)
        host = "127.0.0.1";
    for (int i = 0; i < n; i++)
        errors += handle_request(host, port ? atoi(port) : 6379, i) < 0;
    printf("served %d requests, %d errors\n", n, errors);
    return errors ? 1 : 0;
}

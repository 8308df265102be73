/* hiredis: redisFreeKeepFd frees the context but leaves its socket open for the caller, who
 * must close it. hand_off() detaches the connection (as a program passing the socket to a child
 * or another event loop would) and nobody ever closes the fd: the context was freed, the socket
 * is still open. The report says "handle freed, socket still open" and shows where the socket
 * was created (open_connection < handle_request). redis_keepfd_fixed.c (FIXED) closes the fd.
 *
 * Usage: redis_keepfd_leak [HOST [PORT [REQUESTS]]]   (as redis_leak; 2 requests by default) */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static redisContext *open_connection(const char *host, int port)
{
    return host[0] == '/' ? redisConnectUnix(host) : redisConnect(host, port);
}

/* Detaches the connection from its context; returns the still-open socket. */
static int hand_off(redisContext *c)
{
    return redisFreeKeepFd(c);
}

static int handle_request(const char *host, int port, int id)
{
    redisContext *c = open_connection(host, port);
    if (!c || c->err) {
        fprintf(stderr, "request %d: connect: %s\n", id, c ? c->errstr : "out of memory");
        redisFree(c);
        return -1;
    }
    redisReply *reply = redisCommand(c, "PING");
    printf("request %d: %s\n", id, reply && reply->type == REDIS_REPLY_STATUS ? reply->str : "?");
    freeReplyObject(reply);
    int fd = hand_off(c);
#ifdef FIXED
    close(fd);
#else
    (void)fd; /* nobody takes it over: the socket stays open */
#endif
    return 0;
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : getenv("REDIS_HOST");
    const char *port = argc > 2 ? argv[2] : getenv("REDIS_PORT");
    int n = argc > 3 ? atoi(argv[3]) : 2, errors = 0;
    if (!host)
        host = "127.0.0.1";
    for (int i = 0; i < n; i++)
        errors += handle_request(host, port ? atoi(port) : 6379, i) < 0;
    printf("served %d requests, %d errors\n", n, errors);
    return errors ? 1 : 0;
}

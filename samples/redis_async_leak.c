/* hiredis async API, driven by a minimal poll(2) loop (no event library): each request opens a
 * redisAsyncContext, sends PING and, when the reply arrives, disconnects -- except on the
 * "slow reply" path (every odd request), which forgets the context. The report shows one group
 * of hiredis async contexts never freed, created in handle_request. redis_async_fixed.c (FIXED)
 * disconnects on every path; it calls redisAsyncDisconnect while the reply is still pending, so
 * hiredis frees the context later, from inside redisAsyncHandleRead.
 *
 * Usage: redis_async_leak [HOST [PORT [REQUESTS]]]   (as redis_leak; 4 requests by default) */
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

struct request {
    int id, replied, disconnected;
};

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct request *req = privdata;
    redisReply *reply = r;
    printf("request %d: %s\n", req->id, reply && reply->type == REDIS_REPLY_STATUS ? reply->str : "no reply");
    req->replied = 1;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    ((struct request *)ac->data)->disconnected = 1;
    (void)status;
}

/* Runs the context's I/O until done() says so (or 5 s pass). */
static void run_loop(redisAsyncContext *ac, struct request *req, int (*done)(const struct request *))
{
    for (int i = 0; i < 500 && !done(req); i++) {
        struct pollfd p = {.fd = ac->c.fd, .events = POLLIN | ((ac->c.flags & REDIS_CONNECTED) ? 0 : POLLOUT)};
        if (ac->c.obuf && ac->c.obuf[0])
            p.events |= POLLOUT;
        if (poll(&p, 1, 10) < 0)
            break;
        if (p.revents & POLLOUT)
            redisAsyncHandleWrite(ac);
        if (!done(req) && (p.revents & (POLLIN | POLLHUP)))
            redisAsyncHandleRead(ac);
    }
}

static int replied(const struct request *r)
{
    return r->replied;
}
static int disconnected(const struct request *r)
{
    return r->disconnected;
}

static int handle_request(const char *host, int port, int id)
{
    redisAsyncContext *ac = host[0] == '/' ? redisAsyncConnectUnix(host) : redisAsyncConnect(host, port);
    if (!ac || ac->err) {
        fprintf(stderr, "request %d: connect: %s\n", id, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        return -1;
    }
    struct request *req = calloc(1, sizeof *req);
    req->id = id;
    ac->data = req;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncCommand(ac, on_reply, req, "PING");
#ifdef FIXED
    redisAsyncDisconnect(ac); /* the reply is pending: hiredis frees ac once it has arrived */
    run_loop(ac, req, disconnected);
    int ok = replied(req);
    free(req);
    return ok ? 0 : -1;
#else
    run_loop(ac, req, replied);
    if (id % 2) {
        printf("request %d: slow path, context kept\n", id);
        return 1; /* forgets the context */
    }
    redisAsyncDisconnect(ac); /* nothing pending: freed right away */
    int ok = disconnected(req);
    free(req);
    return ok ? 0 : -1;
#endif
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : getenv("REDIS_HOST");
    const char *port = argc > 2 ? argv[2] : getenv("REDIS_PORT");
    int n = argc > 3 ? atoi(argv[3]) : 4, errors = 0;
    if (!host)
        host = "127.0.0.1";
    for (int i = 0; i < n; i++)
        errors += handle_request(host, port ? atoi(port) : 6379, i) < 0;
    printf("served %d requests, %d errors\n", n, errors);
    return errors ? 1 : 0;
}

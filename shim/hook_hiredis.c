/*
 * hiredis hooks: tie each redisContext / redisAsyncContext to the socket hiredis connects for it.
 *
 *   redisConnect, ...WithTimeout, ...NonBlock, ...BindNonBlock, ...BindNonBlockWithReuse,
 *   redisConnectUnix, ...UnixWithTimeout, ...UnixNonBlock      socket made inside: adopted when
 *                                                            the context is returned
 *   redisConnectWithOptions (hiredis >= 1.0)                  same
 *   redisConnectFd                                            wraps the caller's fd: adopted
 *   redisReconnect                                            old socket closed, new one made for
 *                                                            the known context
 *   redisFree                                                 context forgotten, then freed
 *   redisFreeKeepFd                                           context freed but its socket kept
 *                                                            open: reported as "handle freed,
 *                                                            socket still open" if never closed
 *   redisAsyncConnect, ...Bind, ...BindWithReuse, ...Unix,
 *   redisAsyncConnectWithOptions (>= 1.0)                     the async context is the handle
 *   redisAsyncFree                                            forgotten, then freed
 *
 * redisAsyncDisconnect is not hooked: it frees the context either at once or later, from the
 * event loop, and both paths end in hiredis calling redisFree(&ac->c) through the PLT; &ac->c is
 * ac (the first member), so that hook forgets the async context at the moment it is really freed.
 *
 * hiredis calls its own entry points through the PLT (redisAsyncConnect -> redisConnectNonBlock,
 * hiredis 1.x: every redisConnect* -> redisConnectWithOptions): only the outermost hooked call on
 * a thread registers the handle (the async context is a realloc of the inner context, so the
 * inner address would be stale).
 *
 * Debian 12 ships hiredis 0.14, whose header declares no redisConnectWithOptions: the 1.x-only
 * hooks are compiled when the installed header is 1.x. Without any hiredis header the shim still
 * builds, with the 0.14 entry points and opaque types.
 */
#include "hook_driver.h"

#include <sys/time.h>

#if defined(__has_include)
#if __has_include(<hiredis/hiredis.h>)
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#define LS_HAVE_HIREDIS_H 1
#endif
#endif

#ifndef LS_HAVE_HIREDIS_H
typedef struct redisContext redisContext;
typedef struct redisAsyncContext redisAsyncContext;
#define HIREDIS_MAJOR 0
#endif

#if HIREDIS_MAJOR >= 1
#define LS_HIREDIS_1 1
typedef redisFD ls_redis_fd;
#else
typedef int ls_redis_fd;
#endif

#define REDIS_ERR_VAL (-1) /* REDIS_ERR */

static redisContext *(*real_redisConnect)(const char *, int);
static redisContext *(*real_redisConnectWithTimeout)(const char *, int, const struct timeval);
static redisContext *(*real_redisConnectNonBlock)(const char *, int);
static redisContext *(*real_redisConnectBindNonBlock)(const char *, int, const char *);
static redisContext *(*real_redisConnectBindNonBlockWithReuse)(const char *, int, const char *);
static redisContext *(*real_redisConnectUnix)(const char *);
static redisContext *(*real_redisConnectUnixWithTimeout)(const char *, const struct timeval);
static redisContext *(*real_redisConnectUnixNonBlock)(const char *);
static redisContext *(*real_redisConnectFd)(ls_redis_fd);
static int (*real_redisReconnect)(redisContext *);
static void (*real_redisFree)(redisContext *);
static ls_redis_fd (*real_redisFreeKeepFd)(redisContext *);
static redisAsyncContext *(*real_redisAsyncConnect)(const char *, int);
static redisAsyncContext *(*real_redisAsyncConnectBind)(const char *, int, const char *);
static redisAsyncContext *(*real_redisAsyncConnectBindWithReuse)(const char *, int, const char *);
static redisAsyncContext *(*real_redisAsyncConnectUnix)(const char *);
static void (*real_redisAsyncFree)(redisAsyncContext *);
#ifdef LS_HIREDIS_1
static redisContext *(*real_redisConnectWithOptions)(const redisOptions *);
static redisAsyncContext *(*real_redisAsyncConnectWithOptions)(const redisOptions *);
#endif

static LS_TLS int redis_depth;

/* The body of every hook whose real call returns a new context (sync or async). */
#define REDIS_CONNECT_HOOK(type, fn, ...)                                                                              \
    do {                                                                                                               \
        DRV_RESOLVE(fn);                                                                                               \
        if (LS_UNLIKELY(!real_##fn))                                                                                   \
            return NULL; /* hiredis is not loaded: its out-of-memory answer */                                         \
        if (ls_in_shim || redis_depth)                                                                                 \
            return real_##fn(__VA_ARGS__);                                                                             \
        redis_depth++;                                                                                                 \
        ls_ctx prev = drv_enter(LS_DRV_HIREDIS, 0, 0, 0);                                                              \
        type *ctx = real_##fn(__VA_ARGS__);                                                                            \
        drv_leave(prev);                                                                                               \
        redis_depth--;                                                                                                 \
        drv_opened(LS_DRV_HIREDIS, LS_HK_CLIENT, (uintptr_t)ctx, 0);                                                   \
        return ctx;                                                                                                    \
    } while (0)

static redisContext *ls_hook_redisConnect(const char *ip, int port)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnect, ip, port);
}

static redisContext *ls_hook_redisConnectWithTimeout(const char *ip, int port, const struct timeval tv)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnectWithTimeout, ip, port, tv);
}

static redisContext *ls_hook_redisConnectNonBlock(const char *ip, int port)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnectNonBlock, ip, port);
}

static redisContext *ls_hook_redisConnectBindNonBlock(const char *ip, int port, const char *source_addr)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnectBindNonBlock, ip, port, source_addr);
}

static redisContext *ls_hook_redisConnectBindNonBlockWithReuse(const char *ip, int port, const char *source_addr)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnectBindNonBlockWithReuse, ip, port, source_addr);
}

static redisContext *ls_hook_redisConnectUnix(const char *path)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnectUnix, path);
}

static redisContext *ls_hook_redisConnectUnixWithTimeout(const char *path, const struct timeval tv)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnectUnixWithTimeout, path, tv);
}

static redisContext *ls_hook_redisConnectUnixNonBlock(const char *path)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnectUnixNonBlock, path);
}

#ifdef LS_HIREDIS_1
static redisContext *ls_hook_redisConnectWithOptions(const redisOptions *options)
{
    REDIS_CONNECT_HOOK(redisContext, redisConnectWithOptions, options);
}

static redisAsyncContext *ls_hook_redisAsyncConnectWithOptions(const redisOptions *options)
{
    REDIS_CONNECT_HOOK(redisAsyncContext, redisAsyncConnectWithOptions, options);
}
#endif

static redisAsyncContext *ls_hook_redisAsyncConnect(const char *ip, int port)
{
    REDIS_CONNECT_HOOK(redisAsyncContext, redisAsyncConnect, ip, port);
}

static redisAsyncContext *ls_hook_redisAsyncConnectBind(const char *ip, int port, const char *source_addr)
{
    REDIS_CONNECT_HOOK(redisAsyncContext, redisAsyncConnectBind, ip, port, source_addr);
}

static redisAsyncContext *ls_hook_redisAsyncConnectBindWithReuse(const char *ip, int port, const char *source_addr)
{
    REDIS_CONNECT_HOOK(redisAsyncContext, redisAsyncConnectBindWithReuse, ip, port, source_addr);
}

static redisAsyncContext *ls_hook_redisAsyncConnectUnix(const char *path)
{
    REDIS_CONNECT_HOOK(redisAsyncContext, redisAsyncConnectUnix, path);
}

/* The caller connected fd itself (perhaps to an address we do not classify): the context owns
 * it from now on, so the core tracks it as a Redis socket. */
static redisContext *ls_hook_redisConnectFd(ls_redis_fd fd)
{
    DRV_RESOLVE(redisConnectFd);
    if (LS_UNLIKELY(!real_redisConnectFd))
        return NULL;
    if (ls_in_shim || redis_depth)
        return real_redisConnectFd(fd);
    redis_depth++;
    ls_ctx prev = drv_enter(LS_DRV_HIREDIS, 0, 0, 0);
    redisContext *c = real_redisConnectFd(fd);
    drv_leave(prev);
    redis_depth--;
    drv_opened(LS_DRV_HIREDIS, LS_HK_CLIENT, (uintptr_t)c, 0);
    if (c) {
        LS_RECORD(ls_handle_adopt_fd((uintptr_t)c, (int)fd));
    }
    return c;
}

/* Closes the context's socket and connects a new one for the same, known, context. */
static int ls_hook_redisReconnect(redisContext *c)
{
    DRV_RESOLVE(redisReconnect);
    if (LS_UNLIKELY(!real_redisReconnect))
        return REDIS_ERR_VAL;
    if (ls_in_shim || redis_depth || !c)
        return real_redisReconnect(c);
    redis_depth++;
    ls_ctx prev = drv_enter(LS_DRV_HIREDIS, (uintptr_t)c, 0, 0);
    int ret = real_redisReconnect(c);
    drv_leave(prev);
    redis_depth--;
    return ret;
}

/* Always a real free, nested or not (see redisAsyncDisconnect above). */
static void ls_hook_redisFree(redisContext *c)
{
    DRV_RESOLVE(redisFree);
    if (LS_UNLIKELY(!real_redisFree))
        return;
    if (!ls_in_shim)
        drv_closing((uintptr_t)c);
    real_redisFree(c);
}

static void ls_hook_redisAsyncFree(redisAsyncContext *ac)
{
    DRV_RESOLVE(redisAsyncFree);
    if (LS_UNLIKELY(!real_redisAsyncFree))
        return;
    if (!ls_in_shim)
        drv_closing((uintptr_t)ac);
    real_redisAsyncFree(ac);
}

/* The context is freed but its fd stays open for the caller: the socket must survive the handle
 * and be reported as orphaned if nobody closes it. */
static ls_redis_fd ls_hook_redisFreeKeepFd(redisContext *c)
{
    DRV_RESOLVE(redisFreeKeepFd);
    if (LS_UNLIKELY(!real_redisFreeKeepFd))
        return REDIS_ERR_VAL;
    if (ls_in_shim || !c)
        return real_redisFreeKeepFd(c);
#ifdef LS_HAVE_HIREDIS_H
    /* The layout is the installed header's: release and forget before the real free. */
    LS_RECORD(ls_handle_release_fd((uintptr_t)c, (int)c->fd); ls_handle_close((uintptr_t)c));
    return real_redisFreeKeepFd(c);
#else
    /* No header, so no layout: the real call tells us the fd. A narrow window remains in which
     * another thread could be handed the same address before we forget it. */
    ls_redis_fd fd = real_redisFreeKeepFd(c);
    LS_RECORD({
        ls_handle_release_fd((uintptr_t)c, (int)fd);
        ls_handle_close((uintptr_t)c);
    });
    return fd;
#endif
}

/* Patched into every loaded object's import slots by hook_dl.c. */
const ls_got_hook ls_hiredis_hooks[] = {
    DRV_HOOK(redisConnect),
    DRV_HOOK(redisConnectWithTimeout),
    DRV_HOOK(redisConnectNonBlock),
    DRV_HOOK(redisConnectBindNonBlock),
    DRV_HOOK(redisConnectBindNonBlockWithReuse),
    DRV_HOOK(redisConnectUnix),
    DRV_HOOK(redisConnectUnixWithTimeout),
    DRV_HOOK(redisConnectUnixNonBlock),
#ifdef LS_HIREDIS_1
    DRV_HOOK(redisConnectWithOptions),
    DRV_HOOK(redisAsyncConnectWithOptions),
#endif
    DRV_HOOK(redisAsyncConnect),
    DRV_HOOK(redisAsyncConnectBind),
    DRV_HOOK(redisAsyncConnectBindWithReuse),
    DRV_HOOK(redisAsyncConnectUnix),
    DRV_HOOK(redisConnectFd),
    DRV_HOOK(redisReconnect),
    DRV_HOOK(redisFree),
    DRV_HOOK(redisAsyncFree),
    DRV_HOOK(redisFreeKeepFd),
};
const size_t ls_hiredis_nhooks = sizeof ls_hiredis_hooks / sizeof ls_hiredis_hooks[0];

/*
 * libmongoc hooks: tie clients, pools and checkouts to the sockets libmongoc opens for them.
 *
 * libmongoc connects lazily (in whatever later call first needs a server) and, when pooled, from
 * background threads of its own. No public entry point sees those sockets being made, so the
 * attribution rests on four facts about how libmongoc 1.x makes its connections:
 *
 * 1. Application connections of a pooled client are made by the client's stream initiator,
 *    mongoc_client_default_stream_initiator(uri, host, user_data = the client, error). libmongoc
 *    stores that function's address in every client; the address is read from libmongoc's GOT
 *    (a GLOB_DAT slot, patched like the PLT slots), so it is our hook's: the hook knows the exact
 *    client and pushes its context. Clients created before the patch (in a constructor of the
 *    object that loaded libmongoc) keep the real initiator and go unattributed.
 * 2. A single-threaded client (mongoc_client_new*) connects from its topology scanner, in the
 *    application thread, inside mongoc_topology_scanner_start() and _work(). The scanner is
 *    created (mongoc_topology_scanner_new) inside the client's constructor: the hook remembers
 *    scanner -> client, and the start/work hooks push that client's context.
 * 3. Everything else that connects goes through mongoc_client_connect() with no client context
 *    on the thread: the server-monitor and RTT-monitor threads a pool starts (1.23's
 *    _server_monitor_setup_connection). Those sockets are marked background and attached to the
 *    pool, found by the monitor's URI (a copy of the pool's: same string).
 * 4. A pool is its own handle; pop/try_pop is a checkout (stack captured), push a checkin (before
 *    the real push, so another thread's pop of the same client cannot be undone by it).
 *
 * The internal entry points (mongoc_topology_scanner_*, mongoc_client_connect) are exported by
 * libmongoc 1.x and called through its PLT, which is what lets us see them. Their signatures are
 * internal and have grown between releases, so those hooks take and forward every integer
 * argument register plus two stack words (x86-64 and AArch64 pass six and eight integer
 * arguments in registers): a hook never drops an argument whatever the release, and it only
 * reads the leading arguments that have not moved (the scanner, the URI). They act only when
 * mongoc_get_major_version() is 1; otherwise they forward and do nothing else.
 *
 * libmongoc calls its own public constructors through the PLT (mongoc_client_new ->
 * mongoc_client_new_from_uri_with_error, mongoc_client_pool_new -> ..._with_error): only the
 * outermost hooked call on a thread registers the handle.
 */
#include "hook_driver.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct _mongoc_client_t mongoc_client_t; /* opaque: the shim needs no libmongoc header */
typedef struct _mongoc_client_pool_t mongoc_client_pool_t;
typedef struct _mongoc_uri_t mongoc_uri_t;
typedef struct _mongoc_host_list_t mongoc_host_list_t;
typedef struct _mongoc_stream_t mongoc_stream_t;
typedef struct _bson_error_t bson_error_t;

static mongoc_client_t *(*real_mongoc_client_new)(const char *);
static mongoc_client_t *(*real_mongoc_client_new_from_uri)(const mongoc_uri_t *);
static mongoc_client_t *(*real_mongoc_client_new_from_uri_with_error)(const mongoc_uri_t *, bson_error_t *);
static void (*real_mongoc_client_destroy)(mongoc_client_t *);
static mongoc_client_pool_t *(*real_mongoc_client_pool_new)(const mongoc_uri_t *);
static mongoc_client_pool_t *(*real_mongoc_client_pool_new_with_error)(const mongoc_uri_t *, bson_error_t *);
static void (*real_mongoc_client_pool_destroy)(mongoc_client_pool_t *);
static mongoc_client_t *(*real_mongoc_client_pool_pop)(mongoc_client_pool_t *);
static mongoc_client_t *(*real_mongoc_client_pool_try_pop)(mongoc_client_pool_t *);
static void (*real_mongoc_client_pool_push)(mongoc_client_pool_t *, mongoc_client_t *);
static mongoc_stream_t *(*real_mongoc_client_default_stream_initiator)(const mongoc_uri_t *, const mongoc_host_list_t *,
                                                                       void *, bson_error_t *);
static const char *(*real_mongoc_uri_get_string)(const mongoc_uri_t *);
static int (*real_mongoc_get_major_version)(void);

/* Internal entry points: every integer argument forwarded (see the top of the file). */
#define FWD_PARAMS                                                                                                     \
    uintptr_t a1, uintptr_t a2, uintptr_t a3, uintptr_t a4, uintptr_t a5, uintptr_t a6, uintptr_t a7, uintptr_t a8
#define FWD_ARGS a1, a2, a3, a4, a5, a6, a7, a8
typedef uintptr_t (*fwd_fn)(FWD_PARAMS);
static fwd_fn real_mongoc_topology_scanner_new;
static fwd_fn real_mongoc_topology_scanner_destroy;
static fwd_fn real_mongoc_topology_scanner_start;
static fwd_fn real_mongoc_topology_scanner_work;
static fwd_fn real_mongoc_client_connect;

static LS_TLS int mg_depth;        /* inside a hooked constructor on this thread */
static LS_TLS int mg_new_client;   /* ... and it is a single-threaded client's */
static LS_TLS uintptr_t mg_new_ts; /* the scanner that constructor created */

/* Do the internal hooks understand this libmongoc? 1 yes, -1 no, 0 not asked yet. */
static int mg_internals_known(void)
{
    static int known;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (LS_LIKELY(k))
        return k > 0;
    DRV_RESOLVE(mongoc_get_major_version);
    k = real_mongoc_get_major_version && real_mongoc_get_major_version() == 1 ? 1 : -1;
    __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    return k > 0;
}

/* ------------------------------------------------------------------ small maps
 * scanner -> single-threaded client, and pool -> URI string. A spinlock: critical sections are a
 * few loads and stores; a fork child resets it (the holder, if any, does not exist there). */
static int mg_lock_word;

/* atfork child (init.c's handler calls it): only a store. */
void ls_mongoc_atfork_child(void)
{
    __atomic_store_n(&mg_lock_word, 0, __ATOMIC_RELAXED);
}

/* Raw sched_yield: these run on the host's stack inside its driver calls, where only functions
 * bound at load may be called (ls_bind.h). */
static void mg_lock(void)
{
    while (__atomic_exchange_n(&mg_lock_word, 1, __ATOMIC_ACQUIRE))
        syscall(SYS_sched_yield);
}

static void mg_unlock(void)
{
    __atomic_store_n(&mg_lock_word, 0, __ATOMIC_RELEASE);
}

#define TS_SLOTS 4096 /* open addressing; when full, later clients simply go unattributed */
#define TS_TOMB ((uintptr_t)1)
static struct {
    uintptr_t ts, client;
} ts_map[TS_SLOTS];

static size_t ts_slot(uintptr_t k)
{
    k ^= k >> 17;
    k *= 0x9E3779B97F4A7C15ull;
    return (size_t)(k >> 40) & (TS_SLOTS - 1);
}

static void ts_put(uintptr_t ts, uintptr_t client)
{
    mg_lock();
    size_t i = ts_slot(ts), free_slot = TS_SLOTS;
    for (size_t n = 0; n < TS_SLOTS; n++, i = (i + 1) & (TS_SLOTS - 1)) {
        if (ts_map[i].ts == ts) {
            free_slot = i;
            break;
        }
        if (ts_map[i].ts == TS_TOMB && free_slot == TS_SLOTS)
            free_slot = i;
        if (ts_map[i].ts == 0) {
            if (free_slot == TS_SLOTS)
                free_slot = i;
            break;
        }
    }
    if (free_slot < TS_SLOTS) {
        ts_map[free_slot].ts = ts;
        ts_map[free_slot].client = client;
    }
    mg_unlock();
}

static size_t ts_find_locked(uintptr_t ts)
{
    size_t i = ts_slot(ts);
    for (size_t n = 0; n < TS_SLOTS; n++, i = (i + 1) & (TS_SLOTS - 1)) {
        if (ts_map[i].ts == ts)
            return i;
        if (ts_map[i].ts == 0)
            break;
    }
    return TS_SLOTS;
}

static uintptr_t ts_get(uintptr_t ts)
{
    mg_lock();
    size_t i = ts_find_locked(ts);
    uintptr_t c = i < TS_SLOTS ? ts_map[i].client : 0;
    mg_unlock();
    return c;
}

static void ts_del(uintptr_t ts)
{
    mg_lock();
    size_t i = ts_find_locked(ts);
    if (i < TS_SLOTS) {
        ts_map[i].ts = TS_TOMB;
        ts_map[i].client = 0;
    }
    mg_unlock();
}

#define MAX_POOLS 64
static struct {
    uintptr_t pool;
    char *uri; /* malloc'ed copy of mongoc_uri_get_string */
} pools[MAX_POOLS];

struct pool_add_args {
    uintptr_t pool;
    const char *uri;
};

/* strdup and free: on a private stack (see mg_lock). */
static void pool_add_on_private_stack(void *arg)
{
    const struct pool_add_args *a = arg;
    uintptr_t pool = a->pool;
    char *copy = a->uri ? strdup(a->uri) : NULL;
    mg_lock();
    int i;
    for (i = 0; i < MAX_POOLS && pools[i].pool; i++)
        ;
    if (i < MAX_POOLS) {
        pools[i].pool = pool;
        pools[i].uri = copy;
        copy = NULL;
    }
    mg_unlock();
    free(copy);
}

static void pool_add(uintptr_t pool, const mongoc_uri_t *uri)
{
    DRV_RESOLVE(mongoc_uri_get_string);
    struct pool_add_args a = {pool, uri && real_mongoc_uri_get_string ? real_mongoc_uri_get_string(uri) : NULL};
    ls_on_private_stack(pool_add_on_private_stack, &a);
}

static void pool_del_on_private_stack(void *arg)
{
    uintptr_t pool = *(const uintptr_t *)arg;
    char *uri = NULL;
    mg_lock();
    for (int i = 0; i < MAX_POOLS; i++)
        if (pools[i].pool == pool) {
            uri = pools[i].uri;
            pools[i].pool = 0;
            pools[i].uri = NULL;
        }
    mg_unlock();
    free(uri);
}

static void pool_del(uintptr_t pool)
{
    ls_on_private_stack(pool_del_on_private_stack, &pool);
}

/* The pool whose monitor connects with this URI: the one whose URI string is the same (monitors
 * copy the pool's); with no match, the only live pool if there is exactly one. */
static uintptr_t pool_for_uri(const mongoc_uri_t *uri)
{
    DRV_RESOLVE(mongoc_uri_get_string);
    const char *s = uri && real_mongoc_uri_get_string ? real_mongoc_uri_get_string(uri) : NULL;
    uintptr_t match = 0, only = 0;
    int live = 0;
    mg_lock();
    for (int i = 0; i < MAX_POOLS; i++) {
        if (!pools[i].pool)
            continue;
        live++;
        only = pools[i].pool;
        if (!match && s && pools[i].uri && ls_same_str(s, pools[i].uri))
            match = pools[i].pool;
    }
    mg_unlock();
    return match ? match : live == 1 ? only : 0;
}

/* ------------------------------------------------------------------ clients */

#define MG_NEW_CLIENT_HOOK(fn, ...)                                                                                    \
    do {                                                                                                               \
        DRV_RESOLVE(fn);                                                                                               \
        if (LS_UNLIKELY(!real_##fn))                                                                                   \
            return NULL;                                                                                               \
        if (ls_in_shim || mg_depth)                                                                                    \
            return real_##fn(__VA_ARGS__);                                                                             \
        mg_depth++;                                                                                                    \
        mg_new_client = 1;                                                                                             \
        mg_new_ts = 0;                                                                                                 \
        ls_ctx prev = drv_enter(LS_DRV_MONGOC, 0, 0, 0);                                                               \
        mongoc_client_t *client = real_##fn(__VA_ARGS__);                                                              \
        drv_leave(prev);                                                                                               \
        uintptr_t ts = mg_new_ts;                                                                                      \
        mg_new_ts = 0;                                                                                                 \
        mg_new_client = 0;                                                                                             \
        mg_depth--;                                                                                                    \
        drv_opened(LS_DRV_MONGOC, LS_HK_CLIENT, (uintptr_t)client, 0);                                                 \
        if (client && ts) {                                                                                            \
            int e = errno;                                                                                             \
            ts_put(ts, (uintptr_t)client);                                                                             \
            errno = e;                                                                                                 \
        }                                                                                                              \
        return client;                                                                                                 \
    } while (0)

static mongoc_client_t *ls_hook_mongoc_client_new(const char *uri_string)
{
    MG_NEW_CLIENT_HOOK(mongoc_client_new, uri_string);
}

static mongoc_client_t *ls_hook_mongoc_client_new_from_uri(const mongoc_uri_t *uri)
{
    MG_NEW_CLIENT_HOOK(mongoc_client_new_from_uri, uri);
}

static mongoc_client_t *ls_hook_mongoc_client_new_from_uri_with_error(const mongoc_uri_t *uri, bson_error_t *error)
{
    MG_NEW_CLIENT_HOOK(mongoc_client_new_from_uri_with_error, uri, error);
}

/* Always a real free: libmongoc's own pool_destroy and pool_push destroy pooled clients this
 * way too. The scanner mapping goes when libmongoc destroys the scanner. */
static void ls_hook_mongoc_client_destroy(mongoc_client_t *client)
{
    DRV_RESOLVE(mongoc_client_destroy);
    if (LS_UNLIKELY(!real_mongoc_client_destroy))
        return;
    if (!ls_in_shim)
        drv_closing((uintptr_t)client);
    real_mongoc_client_destroy(client);
}

/* Fact 1: the exact client of an application connection. */
static mongoc_stream_t *ls_hook_mongoc_client_default_stream_initiator(const mongoc_uri_t *uri,
                                                                       const mongoc_host_list_t *host, void *user_data,
                                                                       bson_error_t *error)
{
    DRV_RESOLVE(mongoc_client_default_stream_initiator);
    if (LS_UNLIKELY(!real_mongoc_client_default_stream_initiator))
        return NULL;
    if (ls_in_shim)
        return real_mongoc_client_default_stream_initiator(uri, host, user_data, error);
    /* user_data is documented to be the client; a custom initiator could pass something else */
    uintptr_t client = 0;
    LS_RECORD(client = ls_handle_known((uintptr_t)user_data) ? (uintptr_t)user_data : 0);
    ls_ctx prev = drv_enter(LS_DRV_MONGOC, client, 0, 0);
    mongoc_stream_t *s = real_mongoc_client_default_stream_initiator(uri, host, user_data, error);
    drv_leave(prev);
    return s;
}

/* ------------------------------------------------------------------ pools */

#define MG_NEW_POOL_HOOK(fn, uri, ...)                                                                                 \
    do {                                                                                                               \
        DRV_RESOLVE(fn);                                                                                               \
        if (LS_UNLIKELY(!real_##fn))                                                                                   \
            return NULL;                                                                                               \
        if (ls_in_shim || mg_depth)                                                                                    \
            return real_##fn(__VA_ARGS__);                                                                             \
        mg_depth++;                                                                                                    \
        ls_ctx prev = drv_enter(LS_DRV_MONGOC, 0, 0, 0);                                                               \
        mongoc_client_pool_t *pool = real_##fn(__VA_ARGS__);                                                           \
        drv_leave(prev);                                                                                               \
        mg_depth--;                                                                                                    \
        if (pool) {                                                                                                    \
            int e = errno;                                                                                             \
            drv_opened(LS_DRV_MONGOC, LS_HK_POOL, (uintptr_t)pool, 0);                                                 \
            pool_add((uintptr_t)pool, uri);                                                                            \
            errno = e;                                                                                                 \
        }                                                                                                              \
        return pool;                                                                                                   \
    } while (0)

static mongoc_client_pool_t *ls_hook_mongoc_client_pool_new(const mongoc_uri_t *uri)
{
    MG_NEW_POOL_HOOK(mongoc_client_pool_new, uri, uri);
}

static mongoc_client_pool_t *ls_hook_mongoc_client_pool_new_with_error(const mongoc_uri_t *uri, bson_error_t *error)
{
    MG_NEW_POOL_HOOK(mongoc_client_pool_new_with_error, uri, uri, error);
}

/* The pool frees its idle clients (through mongoc_client_destroy) and stops its monitors. Inside,
 * libmongoc pops and pushes a client of its own to end the server sessions: not a checkout. */
static void ls_hook_mongoc_client_pool_destroy(mongoc_client_pool_t *pool)
{
    DRV_RESOLVE(mongoc_client_pool_destroy);
    if (LS_UNLIKELY(!real_mongoc_client_pool_destroy))
        return;
    if (ls_in_shim || !pool) {
        real_mongoc_client_pool_destroy(pool);
        return;
    }
    drv_closing((uintptr_t)pool);
    pool_del((uintptr_t)pool);
    mg_depth++;
    real_mongoc_client_pool_destroy(pool);
    mg_depth--;
}

static void mg_checkout(mongoc_client_pool_t *pool, mongoc_client_t *client)
{
    if (!client || ls_in_shim || mg_depth)
        return;
    LS_RECORD({
        if (!ls_handle_known((uintptr_t)client))
            ls_handle_open(LS_DRV_MONGOC, LS_HK_CLIENT, (uintptr_t)client, (uintptr_t)pool);
        ls_pool_checkout((uintptr_t)pool, (uintptr_t)client);
    });
}

static mongoc_client_t *ls_hook_mongoc_client_pool_pop(mongoc_client_pool_t *pool)
{
    DRV_RESOLVE(mongoc_client_pool_pop);
    if (LS_UNLIKELY(!real_mongoc_client_pool_pop))
        return NULL;
    ls_init();
    mongoc_client_t *client = real_mongoc_client_pool_pop(pool);
    mg_checkout(pool, client);
    return client;
}

static mongoc_client_t *ls_hook_mongoc_client_pool_try_pop(mongoc_client_pool_t *pool)
{
    DRV_RESOLVE(mongoc_client_pool_try_pop);
    if (LS_UNLIKELY(!real_mongoc_client_pool_try_pop))
        return NULL;
    ls_init();
    mongoc_client_t *client = real_mongoc_client_pool_try_pop(pool);
    mg_checkout(pool, client);
    return client;
}

static void ls_hook_mongoc_client_pool_push(mongoc_client_pool_t *pool, mongoc_client_t *client)
{
    DRV_RESOLVE(mongoc_client_pool_push);
    if (LS_UNLIKELY(!real_mongoc_client_pool_push))
        return;
    if (!ls_in_shim && !mg_depth && client) {
        LS_RECORD(ls_pool_checkin((uintptr_t)pool, (uintptr_t)client));
    }
    real_mongoc_client_pool_push(pool, client);
}

/* ------------------------------------------------------------------ internal entry points */

/* Fact 2: mongoc_topology_scanner_new(uri, ...) -> scanner, inside a client's constructor. */
static uintptr_t ls_hook_mongoc_topology_scanner_new(FWD_PARAMS)
{
    DRV_RESOLVE(mongoc_topology_scanner_new);
    if (LS_UNLIKELY(!real_mongoc_topology_scanner_new))
        return 0;
    uintptr_t ts = real_mongoc_topology_scanner_new(FWD_ARGS);
    if (mg_depth && mg_new_client && !mg_new_ts && !ls_in_shim && mg_internals_known())
        mg_new_ts = ts;
    return ts;
}

/* mongoc_topology_scanner_destroy(scanner) */
static uintptr_t ls_hook_mongoc_topology_scanner_destroy(FWD_PARAMS)
{
    DRV_RESOLVE(mongoc_topology_scanner_destroy);
    if (LS_UNLIKELY(!real_mongoc_topology_scanner_destroy))
        return 0;
    if (a1 && !ls_in_shim && mg_internals_known())
        ts_del(a1);
    return real_mongoc_topology_scanner_destroy(FWD_ARGS);
}

/* mongoc_topology_scanner_start(scanner, obey_cooldown) and _work(scanner): where a
 * single-threaded client connects (initiates, and happy-eyeballs fallbacks while working). */
static uintptr_t scanner_call(fwd_fn real, FWD_PARAMS)
{
    uintptr_t client = 0;
    if (!ls_in_shim && !ls_ctx_current().driver && mg_internals_known())
        client = ts_get(a1);
    if (!client)
        return real(FWD_ARGS);
    ls_ctx prev = drv_enter(LS_DRV_MONGOC, client, 0, 0);
    uintptr_t r = real(FWD_ARGS);
    drv_leave(prev);
    return r;
}

static uintptr_t ls_hook_mongoc_topology_scanner_start(FWD_PARAMS)
{
    DRV_RESOLVE(mongoc_topology_scanner_start);
    if (LS_UNLIKELY(!real_mongoc_topology_scanner_start))
        return 0;
    return scanner_call(real_mongoc_topology_scanner_start, FWD_ARGS);
}

static uintptr_t ls_hook_mongoc_topology_scanner_work(FWD_PARAMS)
{
    DRV_RESOLVE(mongoc_topology_scanner_work);
    if (LS_UNLIKELY(!real_mongoc_topology_scanner_work))
        return 0;
    return scanner_call(real_mongoc_topology_scanner_work, FWD_ARGS);
}

/* Fact 3: mongoc_client_connect(buffered, use_ssl, ssl_opts, uri, host, ...) with no client
 * context on this thread is a pool's monitor connecting. */
static uintptr_t ls_hook_mongoc_client_connect(FWD_PARAMS)
{
    DRV_RESOLVE(mongoc_client_connect);
    if (LS_UNLIKELY(!real_mongoc_client_connect))
        return 0;
    if (ls_in_shim || ls_ctx_current().driver || !mg_internals_known())
        return real_mongoc_client_connect(FWD_ARGS);
    int e = errno;
    uintptr_t pool = pool_for_uri((const mongoc_uri_t *)a4);
    errno = e;
    ls_ctx prev = drv_enter(LS_DRV_MONGOC, pool, pool, 1);
    uintptr_t r = real_mongoc_client_connect(FWD_ARGS);
    drv_leave(prev);
    return r;
}

/* Patched into every loaded object's import slots by hook_dl.c. */
const ls_got_hook ls_mongoc_hooks[] = {
    DRV_HOOK(mongoc_client_new),
    DRV_HOOK(mongoc_client_new_from_uri),
    DRV_HOOK(mongoc_client_new_from_uri_with_error),
    DRV_HOOK(mongoc_client_destroy),
    DRV_HOOK(mongoc_client_default_stream_initiator),
    DRV_HOOK(mongoc_client_pool_new),
    DRV_HOOK(mongoc_client_pool_new_with_error),
    DRV_HOOK(mongoc_client_pool_destroy),
    DRV_HOOK(mongoc_client_pool_pop),
    DRV_HOOK(mongoc_client_pool_try_pop),
    DRV_HOOK(mongoc_client_pool_push),
    DRV_HOOK(mongoc_topology_scanner_new),
    DRV_HOOK(mongoc_topology_scanner_destroy),
    DRV_HOOK(mongoc_topology_scanner_start),
    DRV_HOOK(mongoc_topology_scanner_work),
    DRV_HOOK(mongoc_client_connect),
};
const size_t ls_mongoc_nhooks = sizeof ls_mongoc_hooks / sizeof ls_mongoc_hooks[0];

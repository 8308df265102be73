/*
 * libpq hooks: tie each PGconn to the sockets libpq connects for it.
 *
 *   PQconnectdb, PQconnectdbParams, PQsetdbLogin   blocking connect: the PGconn is returned at
 *                                                  the end, so its sockets are adopted then
 *   PQconnectStart, PQconnectStartParams           start of an async connect (same)
 *   PQconnectPoll, PQresetPoll, PQresetStart,      later steps: the handle is known, so a socket
 *   PQreset                                        created inside (next host, reconnect) is
 *                                                  attributed as it is connected
 *   PQfinish                                       the handle is forgotten before libpq frees it
 *
 * libpq calls its own exported entry points through the PLT (PQconnectdb -> PQconnectStart ->
 * PQconnectPoll, PQreset -> PQconnectPoll), and libpq's own GOT is patched like every other
 * object's (hook_dl.c), so the nested calls reach these hooks too: only the outermost hooked call
 * on a thread does the bookkeeping, the nested ones go straight through.
 */
#include "hook_driver.h"

typedef struct pg_conn PGconn; /* opaque: the shim needs no libpq header */

/* PostgresPollingStatusType is an enum (int in the ABI); only these two values matter here. */
enum { PQ_POLLING_FAILED = 0, PQ_POLLING_OK = 3 };

static PGconn *(*real_PQconnectdb)(const char *);
static PGconn *(*real_PQconnectdbParams)(const char *const *, const char *const *, int);
static PGconn *(*real_PQsetdbLogin)(const char *, const char *, const char *, const char *, const char *, const char *,
                                    const char *);
static PGconn *(*real_PQconnectStart)(const char *);
static PGconn *(*real_PQconnectStartParams)(const char *const *, const char *const *, int);
static int (*real_PQconnectPoll)(PGconn *);
static void (*real_PQreset)(PGconn *);
static int (*real_PQresetStart)(PGconn *);
static int (*real_PQresetPoll)(PGconn *);
static void (*real_PQfinish)(PGconn *);
static int (*real_PQsocket)(const PGconn *);

static LS_TLS int pq_depth;

/* Belt and braces once a connection is up: PQsocket's fd is this handle's, even if it was
 * connected where we had no context (the core tracks it now if it did not yet). */
static void pq_adopt_socket(PGconn *conn)
{
    DRV_RESOLVE(PQsocket);
    if (!conn || !real_PQsocket)
        return;
    LS_RECORD({
        int fd = real_PQsocket(conn);
        if (fd >= 0)
            ls_handle_adopt_fd((uintptr_t)conn, fd);
    });
}

/* The body of every hook whose real call returns a new PGconn. */
#define PQ_CONNECT_HOOK(fn, ...)                                                                                       \
    do {                                                                                                               \
        DRV_RESOLVE(fn);                                                                                               \
        if (LS_UNLIKELY(!real_##fn))                                                                                   \
            return NULL; /* libpq is not loaded: what libpq returns when out of memory */                              \
        if (ls_in_shim || pq_depth)                                                                                    \
            return real_##fn(__VA_ARGS__);                                                                             \
        pq_depth++;                                                                                                    \
        ls_ctx prev = drv_enter(LS_DRV_LIBPQ, 0, 0, 0);                                                                \
        PGconn *conn = real_##fn(__VA_ARGS__);                                                                         \
        drv_leave(prev);                                                                                               \
        pq_depth--;                                                                                                    \
        drv_opened(LS_DRV_LIBPQ, LS_HK_CLIENT, (uintptr_t)conn, 0);                                                    \
        pq_adopt_socket(conn);                                                                                         \
        return conn;                                                                                                   \
    } while (0)

static PGconn *ls_hook_PQconnectdb(const char *conninfo)
{
    PQ_CONNECT_HOOK(PQconnectdb, conninfo);
}

static PGconn *ls_hook_PQconnectdbParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
    PQ_CONNECT_HOOK(PQconnectdbParams, keywords, values, expand_dbname);
}

static PGconn *ls_hook_PQsetdbLogin(const char *pghost, const char *pgport, const char *pgoptions, const char *pgtty,
                                    const char *dbName, const char *login, const char *pwd)
{
    PQ_CONNECT_HOOK(PQsetdbLogin, pghost, pgport, pgoptions, pgtty, dbName, login, pwd);
}

static PGconn *ls_hook_PQconnectStart(const char *conninfo)
{
    PQ_CONNECT_HOOK(PQconnectStart, conninfo);
}

static PGconn *ls_hook_PQconnectStartParams(const char *const *keywords, const char *const *values, int expand_dbname)
{
    PQ_CONNECT_HOOK(PQconnectStartParams, keywords, values, expand_dbname);
}

/* A step of an async connect or reset on a known handle: the socket it may create (the next
 * address or host after a failure, the new socket of a reset) is attributed to conn directly. */
#define PQ_STEP_HOOK(fn, failval, conn)                                                                                \
    do {                                                                                                               \
        DRV_RESOLVE(fn);                                                                                               \
        if (LS_UNLIKELY(!real_##fn))                                                                                   \
            return failval;                                                                                            \
        if (ls_in_shim || pq_depth || !(conn))                                                                         \
            return real_##fn(conn);                                                                                    \
        pq_depth++;                                                                                                    \
        ls_ctx prev = drv_enter(LS_DRV_LIBPQ, (uintptr_t)(conn), 0, 0);                                                \
        int st = real_##fn(conn);                                                                                      \
        drv_leave(prev);                                                                                               \
        pq_depth--;                                                                                                    \
        if (st == PQ_POLLING_OK)                                                                                       \
            pq_adopt_socket(conn);                                                                                     \
        return st;                                                                                                     \
    } while (0)

static int ls_hook_PQconnectPoll(PGconn *conn)
{
    PQ_STEP_HOOK(PQconnectPoll, PQ_POLLING_FAILED, conn);
}

static int ls_hook_PQresetPoll(PGconn *conn)
{
    PQ_STEP_HOOK(PQresetPoll, PQ_POLLING_FAILED, conn);
}

/* PQresetStart returns 1 on success, 0 on failure (not a polling status). */
static int ls_hook_PQresetStart(PGconn *conn)
{
    DRV_RESOLVE(PQresetStart);
    if (LS_UNLIKELY(!real_PQresetStart))
        return 0;
    if (ls_in_shim || pq_depth || !conn)
        return real_PQresetStart(conn);
    pq_depth++;
    ls_ctx prev = drv_enter(LS_DRV_LIBPQ, (uintptr_t)conn, 0, 0);
    int ok = real_PQresetStart(conn);
    drv_leave(prev);
    pq_depth--;
    return ok;
}

static void ls_hook_PQreset(PGconn *conn)
{
    DRV_RESOLVE(PQreset);
    if (LS_UNLIKELY(!real_PQreset))
        return;
    if (ls_in_shim || pq_depth || !conn) {
        real_PQreset(conn);
        return;
    }
    pq_depth++;
    ls_ctx prev = drv_enter(LS_DRV_LIBPQ, (uintptr_t)conn, 0, 0);
    real_PQreset(conn);
    drv_leave(prev);
    pq_depth--;
    pq_adopt_socket(conn);
}

/* Always a real free, whoever calls it (libpq's own PQping frees its private PGconn this way:
 * unknown to us, so forgetting it is a no-op). */
static void ls_hook_PQfinish(PGconn *conn)
{
    DRV_RESOLVE(PQfinish);
    if (LS_UNLIKELY(!real_PQfinish))
        return;
    if (!ls_in_shim)
        drv_closing((uintptr_t)conn);
    real_PQfinish(conn);
}

/* Patched into every loaded object's import slots by hook_dl.c. */
const ls_got_hook ls_libpq_hooks[] = {
    DRV_HOOK(PQconnectdb),    DRV_HOOK(PQconnectdbParams),    DRV_HOOK(PQsetdbLogin),
    DRV_HOOK(PQconnectStart), DRV_HOOK(PQconnectStartParams), DRV_HOOK(PQconnectPoll),
    DRV_HOOK(PQresetPoll),    DRV_HOOK(PQresetStart),         DRV_HOOK(PQreset),
    DRV_HOOK(PQfinish),
};
const size_t ls_libpq_nhooks = sizeof ls_libpq_hooks / sizeof ls_libpq_hooks[0];

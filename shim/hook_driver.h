/*
 * Shared by the driver hook files only (hook_libpq.c, hook_hiredis.c, hook_mongoc.c,
 * hook_mysql.c) and hook_dl.c: resolving a driver's real entry point, the bracket every driver
 * hook puts around the real call, and each file's hook table. Not part of the core API
 * (ls_internal.h).
 *
 * The shim never links a driver and never exports a driver's name (an export would make
 * `dlsym(RTLD_DEFAULT, "PQconnectdb")` and weak references find libpq in a process that has none):
 * each hook file defines static hooks with the entry points' signatures, lists them in a table of
 * {driver symbol, hook}, and hook_dl.c rewrites the import slots (GOT) of every loaded object that
 * calls those symbols, at start-up and after each dlopen. The real function is always the one
 * dlsym finds (ls_real_symbol), never read back from a GOT.
 */
#ifndef LS_HOOK_DRIVER_H
#define LS_HOOK_DRIVER_H

#include "ls_hook.h"
#include "ls_got.h"

#include <dlfcn.h>
#include <errno.h>
#include <string.h>

#define DRV_RESOLVE(fn) LS_RESOLVE(fn)

/* The context bracket around a real driver call: sockets connected by this thread inside it are
 * the driver's (whatever their address) and belong to handle h (0 = not known yet: adopted with
 * ls_handle_adopt_pending once the call returns it). errno is left as the real call set it. */
static inline ls_ctx drv_enter(int driver, uintptr_t h, uintptr_t pool, int background)
{
    int e = errno;
    ls_init();
    ls_ctx prev = ls_ctx_push(driver, h, pool, background);
    errno = e;
    return prev;
}

static inline void drv_leave(ls_ctx prev)
{
    ls_ctx_pop(prev);
}

/* A connect-style call returned handle h (or NULL): register it and give it what it connected. */
static inline void drv_opened(int driver, int kind, uintptr_t h, uintptr_t pool)
{
    LS_RECORD({
        ls_handle_open_after(driver, kind, h, pool); /* with the stacks the call captured */
        if (h)
            ls_handle_adopt_pending(h);
    });
}

/* The driver is about to free handle h: forget it first, so the address (and the fd numbers it
 * closes) can be reused by another thread without being confused with it. */
static inline void drv_closing(uintptr_t h)
{
    if (!h)
        return;
    LS_RECORD(ls_handle_close(h));
}

/* One row of a hook file's table: the driver's symbol and its static hook ls_hook_<fn>. */
#define DRV_HOOK(fn)                                                                                                   \
    {                                                                                                                  \
#fn, (void *)ls_hook_##fn                                                                                      \
    }

/* The tables hook_dl.c patches (one per hook file, each with its length). */
extern const ls_got_hook ls_libpq_hooks[];
extern const size_t ls_libpq_nhooks;
extern const ls_got_hook ls_hiredis_hooks[];
extern const size_t ls_hiredis_nhooks;
extern const ls_got_hook ls_mongoc_hooks[];
extern const size_t ls_mongoc_nhooks;
extern const ls_got_hook ls_mysql_hooks[];
extern const size_t ls_mysql_nhooks;

#endif

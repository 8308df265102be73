/*
 * Shared by the driver hook files only (hook_libpq.c, hook_hiredis.c, hook_mongoc.c,
 * hook_mysql.c): resolving a driver's real entry point, and the bracket every driver hook puts
 * around the real call. Not part of the core API (leakshim.h).
 *
 * The shim never links a driver: each hook file defines the driver's entry points with the same
 * signatures and forwards to the definition that the dynamic linker would have used without us.
 */
#ifndef LS_HOOK_DRIVER_H
#define LS_HOOK_DRIVER_H

#include "leakshim.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <string.h>

/* Real symbol of a driver entry point. RTLD_NEXT finds drivers in the global scope (linked by the
 * program, or dlopen'ed RTLD_GLOBAL). A driver pulled in by an object dlopen'ed RTLD_LOCAL (a
 * Python extension module such as psycopg2's _psycopg.so, a plugin) is invisible to RTLD_NEXT
 * although that object's calls do reach our hooks: then look the name up in each loaded object's
 * own scope, skipping the shim itself. Slow path, taken once per name (callers cache). */
struct ls_drv_objs {
    int n;
    const char *names[256]; /* the loader's own strings: valid while the object stays loaded */
};

static int ls_drv_collect(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct ls_drv_objs *o = arg;
    if (info->dlpi_name && info->dlpi_name[0] && o->n < 256)
        o->names[o->n++] = info->dlpi_name;
    return 0;
}

static inline void *ls_drv_symbol(const char *name)
{
    int e = errno; /* resolution runs before the real call: it must not leave a trace */
    ls_init();     /* ls_frame_is_self needs the shim's own address range */
    void *p = ls_real_symbol(name);
    if (p) {
        errno = e;
        return p;
    }
    /* Collected first, dlopen'ed after: no loader call from inside dl_iterate_phdr's callback. */
    struct ls_drv_objs objs;
    objs.n = 0;
    dl_iterate_phdr(ls_drv_collect, &objs);
    for (int i = 0; i < objs.n && !p; i++) {
        void *h = dlopen(objs.names[i], RTLD_LAZY | RTLD_NOLOAD);
        if (!h)
            continue;
        void *s = dlsym(h, name);
        if (s && !ls_frame_is_self(s))
            p = s;
        dlclose(h);
    }
    errno = e;
    return p;
}

/* static <ret> (*real_<fn>)(...) resolved once, lazily; NULL while the driver is not loaded. */
#define DRV_RESOLVE(fn) (LS_LIKELY(real_##fn) ? (void)0 : (void)(real_##fn = (__typeof__(real_##fn))ls_drv_symbol(#fn)))

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
    if (!h)
        return;
    int e = errno;
    ls_in_shim++;
    ls_handle_open(driver, kind, h, pool);
    ls_handle_adopt_pending(h);
    ls_in_shim--;
    errno = e;
}

/* The driver is about to free handle h: forget it first, so the address (and the fd numbers it
 * closes) can be reused by another thread without being confused with it. */
static inline void drv_closing(uintptr_t h)
{
    if (!h)
        return;
    int e = errno;
    ls_in_shim++;
    ls_handle_close(h);
    ls_in_shim--;
    errno = e;
}

#endif

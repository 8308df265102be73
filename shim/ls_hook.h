/*
 * What every hook file does around the core, in one place, so that no hook can forget it
 * (heaptrack's RecursionGuard inside the core calls): resolving the real function, failing a
 * call the way libc would when a required symbol is missing, and handing facts to the core with
 * the recursion guard held and errno kept as the real call left it.
 */
#ifndef LS_HOOK_H
#define LS_HOOK_H

#include "ls_internal.h"

#include <errno.h>

/* static <ret> (*real_<fn>)(...) resolved once, lazily (ls_real_symbol: RTLD_NEXT, then objects
 * loaded RTLD_LOCAL); stays NULL while the symbol is absent (a driver not loaded). */
#define LS_RESOLVE(fn) (LS_LIKELY(real_##fn) ? (void)0 : (void)(real_##fn = (__typeof__(real_##fn))ls_real_symbol(#fn)))

/* A missing required libc symbol: say so once and fail the call the way libc would. */
#define LS_REQUIRE(fn, failval)                                                                                        \
    do {                                                                                                               \
        LS_RESOLVE(fn);                                                                                                \
        if (LS_UNLIKELY(!real_##fn)) {                                                                                 \
            ls_missing_symbol(#fn);                                                                                    \
            errno = ENOSYS;                                                                                            \
            return failval;                                                                                            \
        }                                                                                                              \
    } while (0)

/* Runs the statements (calls into the core) inside the recursion guard, with errno saved and
 * restored: the host sees errno as the real call left it, and sockets the core opens or closes
 * meanwhile (report files, the kernel check) never reach the registry. */
#define LS_RECORD(...)                                                                                                 \
    do {                                                                                                               \
        int ls_errno_saved_ = errno;                                                                                   \
        ls_in_shim++;                                                                                                  \
        __VA_ARGS__;                                                                                                   \
        ls_in_shim--;                                                                                                  \
        errno = ls_errno_saved_;                                                                                       \
    } while (0)

#endif

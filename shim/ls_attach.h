/*
 * `leakshim attach`: between hook_attach.c (the entry points a debugger calls in a running
 * process) and the files it relies on. Not part of the core API (ls_internal.h).
 *
 * A shim loaded late (dlopen'ed RTLD_LOCAL by `leakshim attach`, not preloaded) exports names
 * nobody looks up first: symbol interposition does not apply. Its constructors then do nothing but
 * resolve symbols, and leakshim_attach() does the start-up work: options from the command line,
 * the runtime, the libc hooks patched into every loaded object's import slots alongside the
 * driver hooks, the sockets already open, the Python side.
 */
#ifndef LS_ATTACH_H
#define LS_ATTACH_H

#include "ls_got.h"

/* 1 if this shim was loaded late (not in the global scope at its constructors: dlopen'ed LOCAL). */
int ls_loaded_late(void);
/* The options string leakshim_attach() was given (NULL until then, or when preloaded). */
const char *ls_attach_options(void);

/* hook_dl.c: patch every loaded object (drivers' entry points, and when loaded late the libc
 * hooks below too); the same pass the dlopen hook makes. */
void ls_dl_patch_all(void);

/* The libc hooks by their own addresses (hidden aliases of the exported hooks). */
extern const ls_got_hook ls_socket_hooks[]; /* hook_socket.c */
extern const size_t ls_socket_nhooks;
extern const ls_got_hook ls_signal_hooks[]; /* hook_signal.c */
extern const size_t ls_signal_nhooks;
extern const ls_got_hook ls_dl_hooks[]; /* hook_dl.c */
extern const size_t ls_dl_nhooks;

/* hook_signal.c: take the dump signal if the host leaves it at SIG_DFL (start-up, re-attach);
 * give it back (detach). */
void ls_signal_install(void);
void ls_signal_release(void);

/* hook_python.c: in a running CPython, run the Python side's bootstrap from a thread of its own
 * that takes the GIL (PyGILState_Ensure); returns 1 if started, 0 if not CPython or done already. */
int ls_python_attach(void);

#endif

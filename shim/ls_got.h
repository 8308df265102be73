/*
 * GOT/PLT patching: make the calls that loaded objects make through their import slots reach our
 * hooks, without the shim exporting the hooked names (an export would tell every dlsym and weak
 * reference in the process that the library is present when it is not).
 *
 * Generic on purpose: the driver hooks (hook_dl.c) patch every object, the stack code redirects
 * libunwind's own imports, and `leakshim attach` will patch libc imports into a running process.
 */
#ifndef LS_GOT_H
#define LS_GOT_H

#include <stddef.h>

typedef struct ls_got_hook {
    const char *name; /* the imported symbol, matched by name (any version) */
    void *hook;       /* what its slots are rewritten to */
} ls_got_hook;

/*
 * Rewrites the import slots (x86-64: R_X86_64_JUMP_SLOT and R_X86_64_GLOB_DAT; AArch64:
 * R_AARCH64_JUMP_SLOT and R_AARCH64_GLOB_DAT) that import one of `hooks` by name, in every object
 * of the base link-map namespace for which want(objname, arg) returns nonzero. objname is the
 * loader's name for the object: "" for the main program. want == NULL means every object except
 * the shim itself, the dynamic loader and the vDSO (the vDSO is never patched). Objects dlmopen'ed
 * into other namespaces are never visited (dl_iterate_phdr shows only its caller's namespace), which
 * is right: the hooks forward to the base namespace's functions. Data relocations (R_X86_64_64 in
 * .data, e.g. a table of function pointers) are not rewritten.
 *
 * A slot is written only if the loader resolved it (nonzero: a weak reference the loader left at
 * 0 stays 0, so `if (&fn)` probes keep saying "absent"), and not again if it already holds the
 * hook. RELRO pages are made writable for the write and put back as the segment flags say.
 * Objects still being loaded by another thread (mapped, not yet relocated) are left for the next
 * call. Idempotent and cheap to repeat: objects already scanned for the same (want, arg, hooks, n)
 * are skipped, and nothing is scanned at all if no object was loaded or unloaded since. A slot the
 * program or the loader rewrites later (a lazy PLT slot being bound by another thread during the
 * write) is not watched.
 *
 * Serialised by a mutex (fork-safe); takes no loader lock but dl_iterate_phdr's, so it may be
 * called from a constructor, from a dlopen'ed object's constructor or after dlopen returns; never
 * allocates, never aborts, leaves errno alone. Returns the number of slots written, or -1 if
 * `hooks` is unusable.
 * `hooks` must stay valid (it is remembered by address).
 */
int ls_got_patch(int (*want)(const char *objname, void *arg), void *arg, const ls_got_hook *hooks, size_t n);

#endif

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
 * the shim itself, libc.so.6 (it imports none of the
 * hooked names), the dynamic loader and the vDSO (the vDSO is never patched). Objects dlmopen'ed
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

/*
 * Symbol lookups without the loader, for start-up (the loader's lookup costs 700-900 instructions
 * a name in every process the shim is preloaded into). They read the GNU hash tables of the
 * loaded objects and answer only when sure; a caller asks dlsym for the rest. No malloc, no lock
 * but dl_iterate_phdr's, errno untouched.
 *
 * ls_got_next_symbols: for each addrs[i] still NULL, dlsym(RTLD_NEXT, names[i]) as the shim would
 * get it, while every loaded object is in the global scope in link-map order (start-up, before
 * main: the link-map list is then the search order): the first definition (default version) in
 * an object after the shim. Left NULL when that definition is not a plain function (an IFUNC), or
 * when an object on the way has no GNU hash table. Returns how many are NULL. The tables are
 * kept until an object is loaded or unloaded.
 */
size_t ls_got_next_symbols(const char *const *names, void **addrs, size_t n);
/* 1 if a loaded object other than glibc's (libc.so.6, ld.so, the vDSO) and the shim defines name,
 * 0 if none does, -1 if one without a GNU hash table might. */
int ls_got_defined(const char *name);
/* 1 if the shim is the newest object in the list: dlopen'ed (a preloaded shim is always followed
 * by at least libc, which the loader maps after every LD_PRELOAD object). */
int ls_got_self_is_last(void);

#endif

/*
 * Start-up patching and the dlopen family: how the driver hooks reach the drivers' callers.
 *
 * The shim exports no driver name (see hook_driver.h). Instead every loaded object's import slots
 * for the drivers' entry points are rewritten to our static hooks (got.c): once from this file's
 * constructor, for everything loaded with the program, and again after every successful dlopen,
 * for what it brought in (psycopg2's _psycopg.so loaded RTLD_LOCAL by Python pulls libpq in with
 * it; so does a plugin). The drivers' own objects are patched too: libpq, hiredis and libmongoc
 * call their own exported entry points through their PLT, and the hooks rely on seeing those
 * nested calls exactly as LD_PRELOAD interposition showed them.
 *
 *   dlopen    the one new export (a libc name): the real dlopen, then a patch pass (a no-op when
 *             nothing new was loaded, e.g. RTLD_NOLOAD)
 *   dlmopen   the same; objects in other link-map namespaces are never patched (their calls would
 *             reach hooks forwarding to the base namespace's driver), so this matters only for
 *             LM_ID_BASE
 *
 * Not hooked this way: a pointer obtained with dlsym() on a driver handle (it is the real function,
 * no slot in between); calls made by a dlopen'ed object's constructors while dlopen is still
 * running, and by constructors that run before ours at start-up; objects loaded by glibc itself
 * (__libc_dlopen: NSS, iconv), until the next dlopen patches them.
 *
 * glibc's dlopen looks a bare file name up along the DT_RPATH/DT_RUNPATH of its caller, found from
 * its return address: called from this hook, that caller would be the shim, and a plugin host with
 * RUNPATH=$ORIGIN/plugins would stop finding its plugins under the shim (the known problem of every
 * dlopen interposer: ASan, heaptrack, renderdoc). So when the caller's search path differs from the
 * shim's, the caller's own directories are searched first, with glibc's own list (dlinfo
 * RTLD_DI_SERINFO on the caller), and the match is opened by full path.
 */
#include "hook_driver.h"
#include "ls_attach.h"

#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ the hook table */

#define DL_MAX_HOOKS 128 /* the drivers' hooks, and the libc ones when loaded late (attach) */
static ls_got_hook all_hooks[DL_MAX_HOOKS];
static size_t n_all_hooks;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void add_table(const ls_got_hook *t, size_t n)
{
    for (size_t i = 0; i < n && n_all_hooks < DL_MAX_HOOKS; i++)
        all_hooks[n_all_hooks++] = t[i];
}

static void build_table(void)
{
    add_table(ls_libpq_hooks, ls_libpq_nhooks);
    add_table(ls_hiredis_hooks, ls_hiredis_nhooks);
    add_table(ls_mongoc_hooks, ls_mongoc_nhooks);
    add_table(ls_mysql_hooks, ls_mysql_nhooks);
    if (ls_loaded_late()) { /* `leakshim attach`: no interposition, the libc hooks go through slots too */
        add_table(ls_socket_hooks, ls_socket_nhooks);
        add_table(ls_signal_hooks, ls_signal_nhooks);
        add_table(ls_dl_hooks, ls_dl_nhooks);
    }
}

/* Every loaded object but the shim, ld.so and the vDSO; cheap when nothing was loaded since the
 * last pass. Runs from constructors and after dlopen (maybe inside a dlopen'ed object's
 * constructor): no locks but got.c's own. errno untouched. */
static void patch_all(void)
{
    LS_RECORD(pthread_once(&table_once, build_table); ls_got_patch(NULL, NULL, all_hooks, n_all_hooks));
}

void ls_dl_patch_all(void)
{
    patch_all();
}

/* Before main, after every object loaded with the program is relocated. Loaded late (attach):
 * nothing until leakshim_attach() asks. */
__attribute__((constructor)) static void ls_dl_ctor(void)
{
    if (!ls_loaded_late())
        patch_all();
}

/* ------------------------------------------------------------------ dlopen as its caller would */

static void *(*real_dlopen)(const char *, int);
static void *(*real_dlmopen)(Lmid_t, const char *, int);

/* Not ls_real_symbol: its fallback path calls dlopen, which would come back here unresolved. */
static void resolve_dl(void)
{
    if (LS_UNLIKELY(!real_dlopen))
        real_dlopen = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
    if (LS_UNLIKELY(!real_dlmopen))
        real_dlmopen = (void *(*)(Lmid_t, const char *, int))dlsym(RTLD_NEXT, "dlmopen");
}

/* How the program called us: dlopen (ns == NULL) or dlmopen(*ns, ...). */
static void *open_real(const Lmid_t *ns, const char *file, int mode)
{
    if (!ns)
        return real_dlopen ? real_dlopen(file, mode) : NULL;
    return real_dlmopen ? real_dlmopen(*ns, file, mode) : NULL;
}

/* The directories the loader searches for `map`'s bare-name loads, in order (malloc'ed). */
static Dl_serinfo *search_path(void *map)
{
    Dl_serinfo size;
    if (dlinfo(map, RTLD_DI_SERINFOSIZE, &size) || size.dls_size < sizeof size)
        return NULL;
    Dl_serinfo *si = malloc(size.dls_size);
    if (!si)
        return NULL;
    *si = size;
    if (dlinfo(map, RTLD_DI_SERINFO, si)) {
        free(si);
        return NULL;
    }
    return si;
}

/* How many directories the caller searches before the tail it shares with the shim (LD_LIBRARY_PATH
 * and the system directories, usually): those are the ones a call from the shim would miss. The
 * shared tail is left to the real call, which also consults ld.so.cache before the system
 * directories, as the loader does. */
static unsigned own_prefix(const Dl_serinfo *caller, const Dl_serinfo *self)
{
    unsigned c = caller->dls_cnt, s = self->dls_cnt;
    while (c && s && !strcmp(caller->dls_serpath[c - 1].dls_name, self->dls_serpath[s - 1].dls_name))
        c--, s--;
    return (c == 0 && s == 0) ? 0 : c;
}

/* A bare name opened as the caller would have: NULL if a call from here finds the same thing (the
 * caller is the shim, or searches what the shim searches) or if none of the caller's own
 * directories has it; then the real call, made from here, decides. */
static void *open_along_caller_path(const Lmid_t *ns, const char *file, int mode, const void *caller)
{
    struct link_map *lm_caller = NULL, *lm_self = NULL;
    Dl_info info;
    if (!dladdr1(caller, &info, (void **)&lm_caller, RTLD_DL_LINKMAP) || !lm_caller ||
        !dladdr1((void *)open_along_caller_path, &info, (void **)&lm_self, RTLD_DL_LINKMAP) || !lm_self ||
        lm_caller == lm_self)
        return NULL;
    /* An object already loaded under this name is found by name before any directory is searched:
     * the real call gets exactly that one (and applies `mode` to it). A new namespace has none. */
    void *loaded = ns && *ns == LM_ID_NEWLM ? NULL : open_real(ns, file, mode | RTLD_NOLOAD);
    if (loaded) {
        if (mode & RTLD_NOLOAD)
            return loaded;
        void *h = open_real(ns, file, mode);
        dlclose(loaded); /* the reference our probe took; h holds the caller's */
        return h;
    }
    void *h = NULL;
    Dl_serinfo *sc = search_path(lm_caller), *ss = search_path(lm_self);
    if (sc && ss) {
        unsigned n = own_prefix(sc, ss);
        char path[PATH_MAX];
        for (unsigned i = 0; i < n && !h; i++) {
            int len = snprintf(path, sizeof path, "%s/%s", sc->dls_serpath[i].dls_name, file);
            if (len > 0 && (size_t)len < sizeof path && access(path, F_OK) == 0)
                h = open_real(ns, path, mode);
        }
    }
    free(sc);
    free(ss);
    return h;
}

/* The bracket of both hooks: open as the caller would have, then patch what came in. */
static void *dl_open(const Lmid_t *ns, const char *file, int mode, const void *caller)
{
    int e = errno;
    resolve_dl();
    void *h = NULL;
    if (file && !strchr(file, '/') && !ls_in_shim)
        LS_RECORD(h = open_along_caller_path(ns, file, mode, caller));
    if (!h) {
        errno = e;
        h = open_real(ns, file, mode);
    }
    if (h && !(mode & RTLD_NOLOAD))
        patch_all();
    return h;
}

LEAKSHIM_EXPORT void *dlopen(const char *file, int mode)
{
    return dl_open(NULL, file, mode, __builtin_return_address(0));
}

LEAKSHIM_EXPORT void *dlmopen(Lmid_t lmid, const char *file, int mode)
{
    return dl_open(&lmid, file, mode, __builtin_return_address(0));
}

/* `leakshim attach` (hook_attach.c): these hooks by their own addresses (see hook_socket.c). */
extern __typeof__(dlopen) ls_self_dlopen __attribute__((alias("dlopen"), copy(dlopen), visibility("hidden")));
extern __typeof__(dlmopen) ls_self_dlmopen __attribute__((alias("dlmopen"), copy(dlmopen), visibility("hidden")));
const ls_got_hook ls_dl_hooks[] = {{"dlopen", (void *)ls_self_dlopen}, {"dlmopen", (void *)ls_self_dlmopen}};
const size_t ls_dl_nhooks = sizeof ls_dl_hooks / sizeof ls_dl_hooks[0];

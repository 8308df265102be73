/*
 * `leakshim attach PID` / `leakshim detach PID`: the entry points a debugger calls inside a process
 * that is already running (tools/attach.c drives gdb: it stops the process at a safe point, calls
 * dlopen on this library with RTLD_LOCAL, then leakshim_attach(options), then detaches).
 *
 * Why a separate start-up path: a library loaded late is not interposed (every object already
 * bound its imports to libc), and its constructors run inside dlopen, where the environment no
 * longer says anything about us. So when loaded late the constructors only resolve symbols
 * (ls_loaded_late() tells them), and leakshim_attach():
 *   1. takes the options from its argument (the process's environment cannot be changed),
 *   2. starts the runtime (ls_init: options, atexit, atfork, the dump signal if unclaimed),
 *   3. rewrites the import slots of every loaded object but the shim, ld.so and the vDSO to the
 *      libc hooks (socket, connect, close, dup*, fcntl, close_range, closefrom, fclose, fork,
 *      sigaction, signal, dlopen, dlmopen) and the driver hooks (hook_dl.c); the dlopen hook
 *      patches objects loaded later the same way. Real functions still come from dlsym,
 *   4. registers the database sockets already open (from /proc/self/fd, classified as at connect)
 *      as "opened before attach", with no stack,
 *   5. in CPython, runs the Python side's bootstrap from a thread of its own holding the GIL
 *      (modules already imported are patched at once, later ones on import).
 * leakshim_detach() pauses recording: the hooks stay in the slots (another thread may be inside
 * one; the library is never unloaded) and pass every call through, and the dump signal goes back
 * to SIG_DFL if the shim had taken it; a later attach resumes.
 *
 * Runs on whichever host thread the debugger stopped at a safe point (not inside malloc or the
 * loader): malloc and the loader are usable; nothing here waits for another host thread.
 */
#include "ls_attach.h"
#include "ls_hook.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ATTACH_OPTS_MAX 4096

static int late = -1;              /* ls_loaded_late(): -1 not asked yet */
static int attached;               /* leakshim_attach() has run its first-time set-up */
static char opts[ATTACH_OPTS_MAX]; /* the options of the first attach */
static int have_opts;

LEAKSHIM_EXPORT int leakshim_attach(const char *options);
extern __typeof__(leakshim_attach) ls_self_attach __attribute__((alias("leakshim_attach"), visibility("hidden")));

/* Constructor context (inside dlopen when loaded late): loader calls only. A preloaded shim (or
 * one a program dlopen'ed RTLD_GLOBAL) is in the global scope, which a lookup through the main
 * program's handle searches; one `leakshim attach` loaded RTLD_LOCAL is not. (RTLD_DEFAULT would
 * not tell: from inside the shim it also searches the shim's own local scope.) */
int ls_loaded_late(void)
{
    if (late < 0 && !ls_got_self_is_last())
        late = 0; /* preloaded: libc at least was mapped after us; no loader lookup needed */
    if (late < 0) {
        void *main_map = dlopen(NULL, RTLD_NOW | RTLD_NOLOAD);
        void *p = main_map ? dlsym(main_map, "leakshim_attach") : NULL;
        late = p != (void *)ls_self_attach;
        if (main_map)
            dlclose(main_map);
    }
    return late;
}

const char *ls_attach_options(void)
{
    return have_opts ? opts : NULL;
}

/* The sockets open now that the registry would track had it seen them connect. No malloc: reads
 * /proc/self/fd with getdents64 into a stack buffer. Returns how many were added. */
static int register_open_sockets(void)
{
    if (ls_fds_private)
        return 0; /* the reporter thread: its fd table is not the host's (the tool never calls here) */
    int dfd = open("/proc/thread-self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return 0;
    int added = 0;
    char buf[4096];
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            struct dirent64 *e = (struct dirent64 *)(buf + off);
            off += e->d_reclen;
            char *end;
            long fd = strtol(e->d_name, &end, 10);
            if (e->d_name[0] < '0' || e->d_name[0] > '9' || *end || fd == dfd || fd > 0x7fffffff)
                continue;
            struct stat st;
            if (fstat((int)fd, &st) != 0 || !S_ISSOCK(st.st_mode))
                continue;
            struct sockaddr_storage ss;
            socklen_t len = sizeof ss;
            if (getpeername((int)fd, (struct sockaddr *)&ss, &len) != 0)
                continue; /* listening, unconnected, or not a stream we could classify */
            int db = ls_classify((struct sockaddr *)&ss, len);
            if (!db && ls_opt.track == LS_TRACK_ALL &&
                (ss.ss_family == AF_INET || ss.ss_family == AF_INET6 || ss.ss_family == AF_UNIX)) {
                int type = 0;
                socklen_t tl = sizeof type;
                db = getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM;
            }
            if (db)
                added += ls_on_existing_socket((int)fd, (struct sockaddr *)&ss, len);
        }
    }
    ls_sys_close(dfd);
    return added;
}

/*
 * Called by `leakshim attach` through the debugger. Returns:
 *   >= 0  attached: the number of open database sockets found (registered as opened before attach)
 *   -1    already attached and not detached
 *   -2    this process runs the shim from its start (preloaded): nothing to do
 *   -3    options longer than 4095 bytes
 * A re-attach after leakshim_detach() resumes recording; its options are ignored (the first
 * attach's stay: the reporter thread reads them).
 */
LEAKSHIM_EXPORT int leakshim_attach(const char *options)
{
    int e = errno;
    if (!ls_loaded_late())
        return -2;
    if (attached && !__atomic_load_n(&ls_paused, __ATOMIC_ACQUIRE))
        return -1;
    int found = 0;
    ls_in_shim++; /* everything done here is the shim's own */
    if (!attached) {
        size_t n = options ? strlen(options) : 0;
        if (n >= sizeof opts) {
            ls_in_shim--;
            return -3;
        }
        memcpy(opts, options ? options : "", n + 1);
        have_opts = 1;
        ls_attached_at = ls_now(); /* read by reports, on the reporter thread later */
        ls_init();                 /* do_init reads ls_attach_options() */
        ls_dl_patch_all();
        /* After the patch: a socket connected meanwhile is either seen by the hook (and skipped
         * here) or found here. */
        found = register_open_sockets();
        attached = 1;
    } else {
        /* Resume: sockets opened while detached were not seen; they are registered like the
         * first ones (those still tracked from before are kept with their stacks). */
        ls_attached_at = ls_now(); /* read by reports, on the reporter thread later */
        __atomic_store_n(&ls_paused, 0, __ATOMIC_RELEASE);
        ls_signal_install();
        ls_dl_patch_all();
        found = register_open_sockets();
    }
    ls_in_shim--;
    ls_python_attach();
    errno = e;
    return found;
}

/* Called by `leakshim detach`. 0 paused; -1 not attached (or detached already); -2 preloaded. */
LEAKSHIM_EXPORT int leakshim_detach(void)
{
    if (!ls_loaded_late())
        return -2;
    if (!attached || __atomic_load_n(&ls_paused, __ATOMIC_ACQUIRE))
        return -1;
    __atomic_store_n(&ls_paused, 1, __ATOMIC_RELEASE);
    ls_in_shim++;
    ls_signal_release(); /* the dump signal is the host's again */
    ls_in_shim--;
    return 0;
}

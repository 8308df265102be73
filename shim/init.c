/* Bootstrap and runtime: options, the reporter thread, the dump trigger, fork and exit. */
#include "ls_attach.h"
#include "ls_got.h"
#include "ls_internal.h"

#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void ls_signal_install(void);      /* hook_signal.c */
void ls_signal_atfork(int phase);  /* hook_signal.c: 0 prepare, 1 parent, 2 child */
void ls_mongoc_atfork_child(void); /* hook_mongoc.c */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* Collected by dl_iterate_phdr first and dlopen'ed after: no loader call from inside its callback. */
struct loaded_objs {
    int n;
    const char *names[256]; /* the loader's own strings: valid while the object stays loaded */
};

static int collect_obj(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct loaded_objs *o = arg;
    if (info->dlpi_name && info->dlpi_name[0] && o->n < 256)
        o->names[o->n++] = info->dlpi_name;
    return 0;
}

struct real_symbol_args {
    const char *name;
    void *p;
};
static void real_symbol_on_private_stack(void *arg);

/* The one place real functions are resolved. RTLD_NEXT finds libc and any driver in the global
 * scope. A driver pulled in by an object dlopen'ed RTLD_LOCAL (psycopg2's _psycopg.so, a plugin)
 * is invisible to RTLD_NEXT although that object's calls do reach our hooks: then look the name up
 * in each loaded object's own scope, skipping the shim itself (told apart by its load base, so
 * this works before ls_init). Slow path, taken once per name: callers cache. errno untouched.
 * On a private stack: dlsym needs a few KB, and a hook's first call may be on a host's small one. */
void *ls_real_symbol(const char *name)
{
    struct real_symbol_args a = {name, NULL};
    ls_on_private_stack(real_symbol_on_private_stack, &a);
    return a.p;
}

static void real_symbol_on_private_stack(void *arg)
{
    struct real_symbol_args *a = arg;
    const char *name = a->name;
    int e = errno;
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        Dl_info self, found;
        struct loaded_objs objs = {0};
        int have_self = dladdr((void *)ls_real_symbol, &self) != 0;
        dl_iterate_phdr(collect_obj, &objs);
        for (int i = 0; i < objs.n && !p; i++) {
            void *h = dlopen(objs.names[i], RTLD_LAZY | RTLD_NOLOAD);
            if (!h)
                continue;
            void *s = dlsym(h, name);
            if (s && !(have_self && dladdr(s, &found) && found.dli_fbase == self.dli_fbase))
                p = s;
            dlclose(h);
        }
    }
    errno = e;
    a->p = p;
}

/* Constructors: each *reals[i] (a real_<fn> pointer) still NULL gets the real names[i], from the
 * hash tables where they can answer (ls_got_next_symbols: no loader lookup), else from
 * ls_real_symbol. */
void ls_real_symbols(const char *const *names, void **const *reals, size_t n)
{
    for (size_t at = 0; at < n; at += 32) {
        void *found[32];
        size_t k = n - at < 32 ? n - at : 32;
        for (size_t i = 0; i < k; i++)
            found[i] = *reals[at + i];
        ls_got_next_symbols(names + at, found, k);
        for (size_t i = 0; i < k; i++)
            *reals[at + i] = found[i] ? found[i] : ls_real_symbol(names[at + i]);
    }
}

void ls_missing_symbol(const char *name)
{
    char msg[160];
    int n = snprintf(msg, sizeof msg, "leakshim: cannot resolve the real '%s'; the call fails with ENOSYS\n", name);
    if (n > 0)
        ls_write_all(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

/* atfork prepare/parent/child: no malloc, no stdio; only locks and re-initialisation. */
static void atfork_prepare(void)
{
    ls_signal_atfork(0);
    ls_altstack_atfork(0);
    ls_suppressions_atfork(0);
    ls_attr_atfork(0);
    ls_registry_lock_all();
    ls_stack_lock_all();
}
static void atfork_parent(void)
{
    ls_stack_unlock_all(0);
    ls_registry_unlock_all(0);
    ls_attr_atfork(1);
    ls_suppressions_atfork(1);
    ls_altstack_atfork(1);
    ls_signal_atfork(1);
}
static void atfork_child(void)
{
    ls_stack_unlock_all(1);
    ls_registry_unlock_all(1);
    ls_attr_atfork(2);
    ls_signal_atfork(2);
    ls_mongoc_atfork_child();
    ls_altstack_atfork(2);
    ls_suppressions_atfork(2);
    ls_on_fork_child();
    ls_report_reset_after_fork();
    ls_reporter_after_fork();
}

/* Called by our fork() hook in the child, in normal context (not inside an atfork handler). */
static void restart_on_private_stack(void *arg)
{
    (void)arg;
    ls_reporter_restart_in_child();
}

/* Starting a thread binds pthread_create and friends on first use: on a private stack. */
void ls_after_fork_child(void)
{
    ls_on_private_stack(restart_on_private_stack, NULL);
}

/* On a private stack: the report needs tens of KB and binds libc functions on first use, and
 * the thread that calls exit() may have a small stack. */
static void exit_on_private_stack(void *arg)
{
    int *exit_with = arg;
    ls_in_shim++;
    if (ls_take_dump_request()) /* asked for just before exit */
        ls_report_snapshot();
    int leaks = ls_report_exit();
    /* Only a run that would exit 0 fails for leaks (a failing suite keeps its own status); a
     * child a test started gates only with children=gate. Unknown status (attached late): gate. */
    int status = ls_exit_status();
    int gate = ls_opt.children == LS_CHILD_GATE || !ls_suite_child();
    if (leaks > 0 && ls_opt.exitcode && status <= 0 && gate) {
        fflush(NULL); /* the exit below skips stdio: keep the host's buffered output */
        *exit_with = ls_opt.exitcode;
    }
    ls_in_shim--;
}

static void at_exit(void)
{
    if (__atomic_load_n(&ls_paused, __ATOMIC_ACQUIRE))
        return; /* `leakshim detach`: stopped tracking, nothing to say */
    if (ls_report_exit_says_nothing() && !ls_dump_requested())
        return; /* no private stack to map for a process that never opened a database socket */
    int exit_with = 0;
    ls_on_private_stack(exit_on_private_stack, &exit_with);
    if (exit_with) /* _exit, back on the host's stack: the raw call needs no binding */
        syscall(SYS_exit_group, exit_with);
}

static void opt_err(const char *msg, void *arg)
{
    (void)arg;
    ls_warn("%s", msg);
}

static void do_init(void)
{
    ls_in_shim++;
    ls_exitpolicy_init();
    /* Loaded late by `leakshim attach`: the options came with it, the environment is the host's. */
    const char *given = ls_attach_options();
    ls_options_parse(&ls_opt, given ? given : getenv("LEAKSHIM_OPTIONS"), opt_err, NULL);
    if (ls_opt.help) {
        ls_buf b = {0};
        ls_options_help(&b, 0);
        if (b.data)
            ls_write_all(2, b.data, b.len);
        ls_buf_free(&b);
    }
    if (ls_opt.suppressions[0])
        ls_suppressions_load(ls_opt.suppressions);
    ls_registry_init();
    ls_on_track = ls_reporter_on_track; /* no thread until something is tracked */
    ls_stack_init_self();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    atexit(at_exit);
    ls_signal_install();
    ls_in_shim--;
}

void ls_init(void)
{
    pthread_once(&init_once, do_init);
}

/* Loaded late (`leakshim attach`): leakshim_attach() initialises, with the options it is given. */
__attribute__((constructor)) static void leakshim_ctor(void)
{
    if (!ls_loaded_late())
        ls_init();
}

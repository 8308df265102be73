/* Bootstrap and runtime: options, the reporter thread, the dump trigger, fork and exit. */
#include "leakshim.h"

#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void ls_signal_install(void); /* hook_signal.c */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int ls_ready;
static sem_t wake_sem;     /* posted by the signal handler: no fd the host could close */
static int dump_requested; /* set in the signal handler, taken with an atomic exchange */
static int reporter_running;
pid_t ls_reporter_tid; /* `leakshim dump` signals this thread directly */

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

/* The one place real functions are resolved. RTLD_NEXT finds libc and any driver in the global
 * scope. A driver pulled in by an object dlopen'ed RTLD_LOCAL (psycopg2's _psycopg.so, a plugin)
 * is invisible to RTLD_NEXT although that object's calls do reach our hooks: then look the name up
 * in each loaded object's own scope, skipping the shim itself (told apart by its load base, so
 * this works before ls_init). Slow path, taken once per name: callers cache. errno untouched. */
void *ls_real_symbol(const char *name)
{
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
    return p;
}

void ls_missing_symbol(const char *name)
{
    char msg[160];
    int n = snprintf(msg, sizeof msg, "leakshim: cannot resolve the real '%s'; the call fails with ENOSYS\n", name);
    if (n > 0)
        ls_write_all(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

/* Async-signal-safe: sem_post is on POSIX's list. */
void ls_trigger_dump(void)
{
    int saved = errno;
    __atomic_store_n(&dump_requested, 1, __ATOMIC_RELEASE);
    sem_post(&wake_sem);
    errno = saved;
}

static void *reporter_main(void *arg)
{
    (void)arg;
    ls_in_shim = 1; /* nothing this thread does is the host's */
    ls_reporter_tid = gettid();
    sigset_t all;
    sigfillset(&all);
    if (ls_opt.signal > 0)
        sigdelset(&all, ls_opt.signal); /* a dump signal sent to this thread costs the host nothing */
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    double next_sample = ls_mono();
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1; /* threshold checks once a second */
        if (ls_opt.interval > 0 && ls_opt.interval < 1) {
            ts.tv_nsec += (long)(ls_opt.interval * 1e9);
            ts.tv_sec -= 1;
            if (ts.tv_nsec >= 1000000000L)
                ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        }
        int r = sem_clockwait(&wake_sem, CLOCK_MONOTONIC, &ts);
        (void)r;
        if (__atomic_exchange_n(&dump_requested, 0, __ATOMIC_ACQ_REL))
            ls_report_snapshot();
        ls_report_check_thresholds();
        if (ls_opt.interval > 0 && ls_mono() >= next_sample) {
            ls_timeline_sample();
            next_sample = ls_mono() + ls_opt.interval;
        }
    }
    return NULL;
}

static void start_reporter(void)
{
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    /* The new thread must not inherit a blocked dump signal from the thread that starts it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&t, &a, reporter_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
    if (err) {
        ls_warn("cannot start the reporter thread (%s): signal dumps and live warnings are off", strerror(err));
        return;
    }
    pthread_setname_np(t, "leakshim");
    reporter_running = 1;
}

/* atfork prepare/parent/child: no malloc, no stdio; only locks and re-initialisation. */
static void atfork_prepare(void)
{
    ls_registry_lock_all();
    ls_stack_lock_all();
}
static void atfork_parent(void)
{
    ls_stack_unlock_all(0);
    ls_registry_unlock_all(0);
}
static void atfork_child(void)
{
    ls_stack_unlock_all(1);
    ls_registry_unlock_all(1);
    ls_on_fork_child();
    ls_report_reset_after_fork();
    sem_init(&wake_sem, 0, 0);
    dump_requested = 0;
    reporter_running = 0; /* the parent's thread does not exist here; fork() starts ours */
    ls_reporter_tid = 0;
}

/* Called by our fork() hook in the child, in normal context (not inside an atfork handler). */
void ls_after_fork_child(void)
{
    if (ls_ready && !reporter_running)
        start_reporter();
}

static void at_exit(void)
{
    ls_in_shim++;
    if (__atomic_exchange_n(&dump_requested, 0, __ATOMIC_ACQ_REL)) /* asked for just before exit */
        ls_report_snapshot();
    int leaks = ls_report_exit();
    if (leaks > 0 && ls_opt.exitcode) {
        fflush(NULL); /* _exit skips stdio: keep the host's buffered output */
        _exit(ls_opt.exitcode);
    }
    ls_in_shim--;
}

static void opt_err(const char *msg, void *arg)
{
    (void)arg;
    ls_warn("%s", msg);
}

static void do_init(void)
{
    ls_in_shim++;
    ls_options_defaults(&ls_opt);
    ls_options_parse(&ls_opt, getenv("LEAKSHIM_OPTIONS"), opt_err, NULL);
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
    ls_stack_init_self();
    sem_init(&wake_sem, 0, 0);
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    atexit(at_exit);
    ls_signal_install();
    start_reporter();
    ls_ready = 1;
    ls_in_shim--;
}

void ls_init(void)
{
    pthread_once(&init_once, do_init);
}

__attribute__((constructor)) static void leakshim_ctor(void)
{
    ls_init();
}

/* The dump signal (`signal=`, default USR2): taken only while the host leaves it alone.
 *
 * The host's choice always wins at the kernel level. When the host installs a handler or SIG_IGN
 * for that signal, it is installed for real, not wrapped: the host's handler runs exactly as
 * before, SA_RESETHAND resets, an ignored signal interrupts nothing and stays ignored across exec,
 * a signalfd reader gets every signal. Only while the host's disposition is SIG_DFL (at start, or
 * when the host sets SIG_DFL again) is the shim's handler installed, and `kill -USR2 PID` then
 * writes a snapshot to the report destination instead of killing the process: the one changed
 * disposition the design allows. An inherited SIG_IGN (nohup-style) is left alone.
 *
 * `leakshim dump` does not use the signal at all (it talks to the reporter thread over a private
 * socket, see init.c), so it works whatever the host does with the signal.
 *
 * The handler reads no shared state (it only sets a flag), so a host switching dispositions from
 * several threads while the signal arrives cannot make it jump through a half-written pointer. */
#include "ls_hook.h"
#include "ls_got.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);
static __sighandler_t (*real_signal)(int, __sighandler_t);
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static int owned;                  /* our handler is what the kernel has */
static struct sigaction host_view; /* while owned: the SIG_DFL disposition the host set, with its flags */

/* Signal handler: async-signal-safe (ls_trigger_dump sets a flag, keeps errno). */
static void dump_handler(int sig)
{
    (void)sig;
    ls_trigger_dump();
}

static int resolve(void)
{
    if (!real_sigaction) { /* first called from the constructor: both at once, no dlsym later */
        static const char *const names[] = {"sigaction", "signal"};
        void **const reals[] = {(void **)&real_sigaction, (void **)&real_signal};
        ls_real_symbols(names, reals, 2);
    }
    return real_sigaction != NULL;
}

/* SA_RESTART: a dump must not make the host's restartable calls fail with EINTR. */
static int install_ours(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = dump_handler;
    sa.sa_flags = SA_RESTART; /* sa_mask: empty (zeroed) */
    return real_sigaction(ls_opt.signal, &sa, NULL);
}

static int is_ours(const struct sigaction *k)
{
    return !(k->sa_flags & SA_SIGINFO) && k->sa_handler == dump_handler;
}

/* Constructor context. Takes the signal only if its disposition is SIG_DFL. */
void ls_signal_install(void)
{
    if (!resolve() || ls_opt.signal <= 0) /* resolved even with signal=none: signal() needs it */
        return;
    struct sigaction cur;
    if (real_sigaction(ls_opt.signal, NULL, &cur) != 0 || cur.sa_handler != SIG_DFL)
        return;
    memset(&host_view, 0, sizeof host_view);
    host_view.sa_handler = SIG_DFL;
    if (install_ours() == 0)
        owned = 1;
    else
        ls_warn("cannot install the handler for SIG%s: %s; `kill -%s` dumps are off (leakshim dump still works)",
                ls_signal_name(ls_opt.signal), strerror(errno), ls_signal_name(ls_opt.signal));
}

/* `leakshim detach` (hook_attach.c), after pausing: the dump signal goes back to the disposition
 * the host last set (SIG_DFL, with its flags) if ours is still what the kernel has. */
void ls_signal_release(void)
{
    if (ls_opt.signal <= 0 || !resolve())
        return;
    sigset_t all, prevmask;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &prevmask);
    pthread_mutex_lock(&sig_lock);
    struct sigaction kernel;
    if (owned && real_sigaction(ls_opt.signal, NULL, &kernel) == 0 && is_ours(&kernel))
        real_sigaction(ls_opt.signal, &host_view, NULL);
    owned = 0;
    pthread_mutex_unlock(&sig_lock);
    pthread_sigmask(SIG_SETMASK, &prevmask, NULL);
}

/* atfork prepare/parent/child: the lock must not be inherited held. */
void ls_signal_atfork(int phase)
{
    ls_mutex_atfork(&sig_lock, phase);
}

/* May be called from the host's signal handlers (sigaction is async-signal-safe): every signal is
 * blocked while sig_lock is held, so a handler on this thread cannot find it taken. */
LEAKSHIM_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (!resolve()) {
        errno = ENOSYS;
        return -1;
    }
    /* A vfork child shares our memory: it must not change what the parent believes. Detached
     * (`leakshim detach`): the signal is the host's again. */
    if (ls_in_shim || sig != ls_opt.signal || ls_opt.signal <= 0 || !ls_registry_owner() ||
        __atomic_load_n(&ls_paused, __ATOMIC_ACQUIRE))
        return real_sigaction(sig, act, old);
    sigset_t all, prevmask;
    memset(&all, 0xff, sizeof all); /* sigfillset, without a call: glibc's pthread_sigmask never
                                       blocks its own internal signals whatever the set says */
    pthread_sigmask(SIG_BLOCK, &all, &prevmask);
    pthread_mutex_lock(&sig_lock);
    struct sigaction kernel, prev;
    int ret = real_sigaction(sig, NULL, &kernel);
    if (ret == 0) {
        if (owned && !is_ours(&kernel))
            owned = 0; /* changed behind our back (sigset, a raw syscall): the kernel is the truth */
        prev = owned ? host_view : kernel;
        if (act && act->sa_handler == SIG_DFL) {
            ret = install_ours();
            if (ret == 0) {
                owned = 1;
                host_view = *act;
            }
        } else if (act) {
            ret = real_sigaction(sig, act, NULL);
            if (ret == 0)
                owned = 0;
        }
    }
    int e = errno;
    pthread_mutex_unlock(&sig_lock);
    pthread_sigmask(SIG_SETMASK, &prevmask, NULL);
    errno = e;
    if (ret == 0 && old)
        *old = prev;
    return ret;
}

extern __typeof__(sigaction) ls_self_sigaction
    __attribute__((alias("sigaction"), copy(sigaction), visibility("hidden")));

/* glibc's signal() calls its internal sigaction, which no hook sees: route it through ours. */
LEAKSHIM_EXPORT __sighandler_t signal(int sig, __sighandler_t handler)
{
    if (ls_in_shim || sig != ls_opt.signal || ls_opt.signal <= 0 || __atomic_load_n(&ls_paused, __ATOMIC_ACQUIRE)) {
        if (!real_signal)
            real_signal = (__typeof__(real_signal))ls_real_symbol("signal");
        if (!real_signal) {
            errno = ENOSYS;
            return SIG_ERR;
        }
        return real_signal(sig, handler);
    }
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;                   /* glibc's signal() has BSD semantics; sa_mask empty (zeroed) */
    if (ls_self_sigaction(sig, &sa, &old) != 0) /* ours, also when loaded late (hook_attach.c) */
        return SIG_ERR;
    return (old.sa_flags & SA_SIGINFO) ? (__sighandler_t)(void *)old.sa_sigaction : old.sa_handler;
}

/* `leakshim attach` (hook_attach.c): this file's hooks by their own addresses (see hook_socket.c). */
extern __typeof__(signal) ls_self_signal __attribute__((alias("signal"), copy(signal), visibility("hidden")));
const ls_got_hook ls_signal_hooks[] = {{"sigaction", (void *)ls_self_sigaction}, {"signal", (void *)ls_self_signal}};
const size_t ls_signal_nhooks = sizeof ls_signal_hooks / sizeof ls_signal_hooks[0];

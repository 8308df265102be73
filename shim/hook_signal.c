/* The dump signal. Our handler only posts a semaphore (see ls_trigger_dump). If the host installs
 * its own handler for that signal (Python's signal.signal does, for instance), we keep ours
 * installed, remember the host's, and call it after waking the reporter: the host's handler runs
 * exactly as before and `leakshim dump` keeps working. sigaction() queries answer with the host's
 * handler, so the host sees the disposition it set. Other signals pass straight through. */
#include "leakshim.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);
static struct sigaction host_sa; /* what the host believes is installed for the dump signal */
static volatile sig_atomic_t host_sa_set;

/* Signal handler: async-signal-safe only (gettid is a plain syscall). */
static void dump_handler(int sig, siginfo_t *info, void *uctx)
{
    ls_trigger_dump();
    /* `leakshim dump` aims tgkill at our reporter thread: that request is ours alone and must not
     * run the host's handler (gunicorn's USR2 means "upgrade the binary"). A process-directed
     * kill -USR2 is the user's, and the host's handler runs as it always did. */
    if (info && info->si_code == SI_TKILL && ls_reporter_tid && gettid() == ls_reporter_tid)
        return;
    if (!host_sa_set)
        return;
    if (host_sa.sa_flags & SA_SIGINFO) {
        if (host_sa.sa_sigaction)
            host_sa.sa_sigaction(sig, info, uctx);
    } else if (host_sa.sa_handler != SIG_DFL && host_sa.sa_handler != SIG_IGN && host_sa.sa_handler) {
        host_sa.sa_handler(sig);
    }
}

static int resolve(void)
{
    if (!real_sigaction)
        real_sigaction = (__typeof__(real_sigaction))ls_real_symbol("sigaction");
    return real_sigaction != NULL;
}

static int install(int flags, const sigset_t *mask)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = dump_handler;
    sa.sa_flags = (flags & ~(SA_RESETHAND | SA_SIGINFO)) | SA_SIGINFO;
    if (mask)
        sa.sa_mask = *mask;
    else
        sigemptyset(&sa.sa_mask);
    return real_sigaction(ls_opt.signal, &sa, NULL);
}

/* Constructor context. Takes the signal only if nobody handles it yet; otherwise chains. */
void ls_signal_install(void)
{
    if (ls_opt.signal <= 0 || !resolve())
        return;
    struct sigaction old;
    if (real_sigaction(ls_opt.signal, NULL, &old) != 0)
        return;
    if (old.sa_handler == SIG_IGN && !(old.sa_flags & SA_SIGINFO)) {
        /* An inherited SIG_IGN (nohup-style) stays the host's choice; we still dump. */
    }
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) {
        host_sa = old;
        host_sa_set = 1;
    }
    /* SA_RESTART: a dump must not make the host's blocking calls fail with EINTR. */
    if (install(SA_RESTART, NULL) != 0)
        ls_warn("cannot install the handler for SIG%s: %s; signal dumps are off", ls_signal_name(ls_opt.signal),
                strerror(errno));
}

LEAKSHIM_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (!resolve()) {
        errno = ENOSYS;
        return -1;
    }
    if (ls_in_shim || sig != ls_opt.signal || ls_opt.signal <= 0)
        return real_sigaction(sig, act, old);
    /* The host is touching our dump signal: answer from, and record into, host_sa. */
    struct sigaction prev;
    if (host_sa_set)
        prev = host_sa;
    else {
        memset(&prev, 0, sizeof prev);
        prev.sa_handler = SIG_DFL;
    }
    if (act) {
        int ret = install(act->sa_flags, &act->sa_mask); /* validates like the real call would */
        if (ret != 0)
            return ret;
        host_sa_set = 0;
        host_sa = *act;
        host_sa_set = 1;
    }
    if (old)
        *old = prev;
    return 0;
}

LEAKSHIM_EXPORT __sighandler_t signal(int sig, __sighandler_t handler)
{
    if (ls_in_shim || sig != ls_opt.signal || ls_opt.signal <= 0) {
        static __sighandler_t (*real_signal)(int, __sighandler_t);
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
    sa.sa_flags = SA_RESTART; /* glibc's signal() has BSD semantics */
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, &old) != 0)
        return SIG_ERR;
    return (old.sa_flags & SA_SIGINFO) ? (__sighandler_t)(void *)old.sa_sigaction : old.sa_handler;
}

/* The reporter thread and `leakshim dump`'s private channel.
 *
 * No thread until one is needed: the thread starts when the first database socket or driver handle
 * is tracked (a process that never opens one stays single-threaded, so `unshare -U` and friends
 * behave as without the shim). It blocks every signal, so it never takes a signal meant for the
 * host (a signalfd reader, a handler, an ignored signal).
 *
 * The thread has an fd table of its own (unshare(CLONE_FILES), then it closes the copies of the
 * host's fds it got). Nothing it opens (the channel, a report file, an ELF file to symbolize, a
 * `leakshim dump` client) can take a number the host is about to be given, shows in the host's
 * /proc/self/fd, or is closed by a daemon's close-every-fd loop. It reaches the host's fds with
 * pidfd_getfd (ls_host_fd). Where the kernel refuses pidfd_getfd (old kernel, seccomp), the thread
 * shares the host's table and keeps no fd open: `kill -USR2` still dumps, `leakshim dump` cannot.
 *
 * `leakshim dump PID` connects to an abstract Unix socket, "@leakshim.PID" (".1".."8" appended if
 * another process squats the name), sends one request line and reads the report back: nothing is
 * written to files or to the target's stderr, nothing is left behind. The tool checks that the
 * listening socket belongs to PID (SO_PEERCRED); the shim answers only its own user or root. */
#include "ls_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int dump_requested; /* set by the dump signal's handler */
static int started;        /* the thread was started in this process */
static int restart_child;  /* forked from a process whose thread ran: the child gets its own */
static int chan_fd = -1;
static dev_t chan_dev;
static ino_t chan_ino;

/* Async-signal-safe: one atomic store, errno untouched. */
void ls_trigger_dump(void)
{
    __atomic_store_n(&dump_requested, 1, __ATOMIC_RELEASE);
}

int ls_dump_requested(void)
{
    return __atomic_load_n(&dump_requested, __ATOMIC_ACQUIRE);
}

int ls_take_dump_request(void)
{
    return __atomic_exchange_n(&dump_requested, 0, __ATOMIC_ACQ_REL);
}

static int channel_alive(void)
{
    struct stat st;
    return chan_fd >= 0 && fstat(chan_fd, &st) == 0 && st.st_ino == chan_ino && st.st_dev == chan_dev;
}

/* Reporter thread, in its own fd table. */
static void channel_open(void)
{
    if (channel_alive())
        return;
    if (chan_fd >= 0)
        ls_sys_close(chan_fd);
    chan_fd = -1;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return;
    for (int k = 0; k <= 8; k++) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        int n = k ? snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "leakshim.%d.%d", (int)getpid(), k)
                  : snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "leakshim.%d", (int)getpid());
        socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
        if (bind(s, (struct sockaddr *)&a, len) == 0 && listen(s, 8) == 0) {
            struct stat st;
            if (fstat(s, &st) == 0) {
                chan_dev = st.st_dev;
                chan_ino = st.st_ino;
                chan_fd = s;
                return;
            }
            break;
        }
        if (errno != EADDRINUSE)
            break;
    }
    ls_sys_close(s);
    if (ls_opt.verbosity >= 2)
        ls_warn("cannot open the private channel for `leakshim dump`: %s", strerror(errno));
}

/* Serves one `leakshim dump` client. The request is one line: "dump", then words: "json" (the
 * JSON document; default text) and "sockets" (text: one line per socket under its group; the
 * JSON always has every socket). Unknown words are ignored (a newer tool, an older shim). */
static void channel_serve(void)
{
    int c = accept4(chan_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0)
        return;
    struct ucred cr;
    socklen_t crlen = sizeof cr;
    char req[64];
    size_t n = 0;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) != 0 || (cr.uid != geteuid() && cr.uid != 0))
        goto out;
    while (n < sizeof req - 1) { /* one short line; a silent client is dropped after 2 s */
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0)
            goto out;
        ssize_t r = recv(c, req + n, sizeof req - 1 - n, MSG_DONTWAIT);
        if (r <= 0) {
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            break;
        }
        n += (size_t)r;
        if (memchr(req, '\n', n))
            break;
    }
    req[n] = 0;
    req[strcspn(req, "\n")] = 0;
    int json = 0, sockets = 0;
    for (char *save = NULL, *w = strtok_r(req, " \t\r", &save); w; w = strtok_r(NULL, " \t\r", &save)) {
        json |= !strcmp(w, "json");
        sockets |= !strcmp(w, "sockets");
    }
    ls_buf b = {0};
    ls_report_snapshot_to(&b, json, sockets);
    for (size_t off = 0; b.data && off < b.len;) {
        ssize_t w = send(c, b.data + off, b.len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = c, .events = POLLOUT};
            if (poll(&p, 1, 5000) <= 0)
                break;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    ls_buf_free(&b);
out:
    ls_sys_close(c);
}

/* Can this process reach its own fds through a pidfd? Probed on a host thread, inside the hook
 * that starts the reporter (the probe's fd is gone before the host's call returns). EBADF for fd
 * -1 means the call exists and is allowed. */
static int pidfd_works(void)
{
    int p = (int)syscall(SYS_pidfd_open, getpid(), 0U);
    if (p < 0)
        return 0;
    int ok = syscall(SYS_pidfd_getfd, p, -1, 0U) < 0 && errno == EBADF;
    ls_sys_close(p);
    return ok;
}
static int private_table; /* decided by ls_reporter_start */

/* The thread's own fd table: a copy of the host's, emptied at once (its copies would keep the
 * host's sockets and pipes open after the host closed them). */
static int enter_private_table(void)
{
    if (!private_table || unshare(CLONE_FILES) != 0)
        return 0;
    syscall(SYS_close_range, 0U, ~0U, 0U);
    ls_self_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0U);
    ls_fds_private = 1;
    return 1;
}

static void *reporter_main(void *arg)
{
    (void)arg;
    ls_in_shim = 1; /* nothing this thread does is the host's */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL); /* never take a signal meant for the host */
    int own_fds = enter_private_table();
    double next_sample = ls_mono(), next_check = ls_mono();
    for (;;) {
        if (own_fds)
            channel_open();
        /* A quarter-second tick: how late a `kill -USR2` dump may be (the handler only sets a flag). */
        struct pollfd p = {.fd = chan_fd, .events = POLLIN};
        int alive = channel_alive();
        int wait = 250; /* or less, when the next timeline sample is due sooner (interval < 0.25) */
        if (ls_opt.interval > 0) {
            double due = (next_sample - ls_mono()) * 1000;
            wait = due < 0 ? 0 : due < wait ? (int)due + 1 : wait;
        }
        int r = poll(&p, alive ? 1 : 0, wait);
        if (alive && r > 0 && (p.revents & POLLIN) && channel_alive())
            channel_serve();
        if (ls_take_dump_request())
            ls_report_snapshot();
        double now = ls_mono();
        if (now >= next_check) {
            ls_report_check_thresholds();
            next_check = now + 1;
        }
        if (ls_opt.interval > 0 && now >= next_sample) {
            ls_timeline_sample();
            next_sample = now + ls_opt.interval;
        }
    }
    return NULL;
}

/* Called by the registry each time it tracks a socket or handle (a hook on the host's thread, on
 * a private stack): the thread is started the first time. */
void ls_reporter_on_track(void)
{
    if (!__atomic_load_n(&started, __ATOMIC_ACQUIRE))
        ls_reporter_start();
}

/* Starts the thread once per process (also in a forked child that inherited tracked sockets). */
void ls_reporter_start(void)
{
    if (__atomic_exchange_n(&started, 1, __ATOMIC_ACQ_REL))
        return;
    int saved = errno;
    private_table = pidfd_works();
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* no signal may reach it before it masks them */
    int err = pthread_create(&t, &a, reporter_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
    if (err)
        ls_warn("cannot start the reporter thread (%s): `leakshim dump` and live warnings are off", strerror(err));
    else
        pthread_setname_np(t, "leakshim");
    errno = saved;
}

int ls_reporter_started(void)
{
    return __atomic_load_n(&started, __ATOMIC_ACQUIRE);
}

/* atfork child (no malloc, no locks): the parent's thread and its fd table (with the channel) do
 * not exist here; the child starts its own. */
void ls_reporter_after_fork(void)
{
    chan_fd = -1;
    restart_child = started;
    started = 0;
    dump_requested = 0;
}

/* fork() hook, child side, normal context (not inside an atfork handler). */
void ls_reporter_restart_in_child(void)
{
    if (restart_child) {
        restart_child = 0;
        ls_reporter_start();
    }
}

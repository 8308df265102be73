/* Host-equivalence program for signal dispositions (test_host.py): the host's own use of the
 * shim's dump signal (SIGUSR2) must behave exactly as it does without the shim. Every mode that
 * takes HOST PORT opens a database connection first, so the shim is active, and prints which of its
 * fds are still-open database sockets (kernel view) before it exits.
 * Usage: host_signals MODE [HOST PORT [N]]
 *   storm HOST PORT N  two threads flip SIGUSR2 between an SA_SIGINFO handler and SIG_IGN while a
 *                      third sends N process-directed SIGUSR2; exit 0 if nothing crashed
 *   signalfd HOST PORT SIGUSR2 blocked in every thread and read with signalfd: "got K" per signal;
 *                      on EOF on stdin, "total K"
 *   ign-read HOST PORT, ign-poll HOST PORT
 *                      SIGUSR2 set to SIG_IGN, then one blocking read()/poll() on stdin: prints
 *                      what that call returned (an EINTR would show here), then the data
 *   resethand HOST PORT an SA_RESETHAND handler that writes "handled"; each "query" line on stdin
 *                      prints the disposition sigaction() reports
 *   ignexec            SIGUSR2 set to SIG_IGN, then exec of this program in mode "show"
 *   show               the SigIgn mask from /proc/self/status and SIGUSR2's disposition */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "host_common.h"

/* Reads one line from fd 0 with raw read() (stdio gives up on EINTR); 0 on EOF. */
static int read_line(char *buf, size_t size)
{
    size_t n = 0;
    while (n + 1 < size) {
        char c;
        ssize_t r = read(0, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (c == '\n') {
            buf[n] = 0;
            return 1;
        }
        buf[n++] = c;
    }
    buf[n] = 0;
    return n > 0;
}

static const char *disposition(int sig)
{
    struct sigaction cur;
    if (sigaction(sig, NULL, &cur) != 0)
        return "error";
    if (cur.sa_flags & SA_SIGINFO)
        return "handler";
    return cur.sa_handler == SIG_DFL ? "SIG_DFL" : cur.sa_handler == SIG_IGN ? "SIG_IGN" : "handler";
}

/* ---------------------------------------------------------------- storm */

static volatile sig_atomic_t handled;
static int storm_done;

/* Signal handler: async-signal-safe only. */
static void storm_handler(int sig, siginfo_t *info, void *uc)
{
    (void)info;
    (void)uc;
    if (sig == SIGUSR2)
        handled = 1;
}

static void *flipper(void *arg)
{
    (void)arg;
    struct sigaction h, ign;
    memset(&h, 0, sizeof h);
    memset(&ign, 0, sizeof ign);
    h.sa_sigaction = storm_handler;
    h.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&h.sa_mask);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    for (long i = 0; i < 100000000L && !__atomic_load_n(&storm_done, __ATOMIC_ACQUIRE); i++) {
        if (sigaction(SIGUSR2, &h, NULL) != 0 || sigaction(SIGUSR2, &ign, NULL) != 0)
            die("sigaction");
    }
    return NULL;
}

static void *sender(void *arg)
{
    long n = *(long *)arg, sent = 0;
    for (long i = 0; i < n; i++)
        if (kill(getpid(), SIGUSR2) == 0)
            sent++;
    __atomic_store_n(&storm_done, 1, __ATOMIC_RELEASE);
    *(long *)arg = sent;
    return NULL;
}

static void mode_storm(long n)
{
    open_db();
    struct sigaction h;
    memset(&h, 0, sizeof h);
    h.sa_sigaction = storm_handler;
    h.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&h.sa_mask);
    if (sigaction(SIGUSR2, &h, NULL) != 0) /* never SIG_DFL from here on */
        die("sigaction");
    pthread_t t[3];
    long count = n;
    if (pthread_create(&t[0], NULL, flipper, NULL) || pthread_create(&t[1], NULL, flipper, NULL) ||
        pthread_create(&t[2], NULL, sender, &count))
        die("pthread_create");
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    say("sent %ld", count);
    print_db_fds();
}

/* ---------------------------------------------------------------- signalfd */

static int worker_pipe[2];

static void *idle_worker(void *arg)
{
    (void)arg;
    char c;
    while (read(worker_pipe[0], &c, 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

static void mode_signalfd(void)
{
    open_db();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) /* before any thread: all inherit it */
        die("pthread_sigmask");
    pthread_t w;
    if (pipe(worker_pipe) != 0 || pthread_create(&w, NULL, idle_worker, NULL) != 0)
        die("worker");
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd");
    say("ready");
    int got = 0, eof = 0;
    for (int iter = 0; iter < 100000 && !eof; iter++) {
        struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        int r = poll(p, 2, -1);
        if (r < 0) {
            say("poll -1 %s", errname(errno));
            continue;
        }
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                got++;
                say("got %d signo %u", got, si.ssi_signo);
            }
        }
        if (p[1].revents) {
            char buf[64];
            ssize_t n = read(0, buf, sizeof buf);
            eof = n == 0 || (n < 0 && errno != EINTR);
        }
    }
    say("total %d", got);
    close(worker_pipe[1]);
    pthread_join(w, NULL);
    print_db_fds();
}

/* ---------------------------------------------------------------- SIG_IGN and a blocking call */

static void mode_ign(const char *call)
{
    open_db();
    if (signal(SIGUSR2, SIG_IGN) == SIG_ERR)
        die("signal");
    say("ready");
    if (!strcmp(call, "poll")) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int r = poll(&p, 1, -1);
        say("poll %d %s", r, r < 0 ? errname(errno) : "");
    }
    char buf[256];
    ssize_t n = read(0, buf, sizeof buf - 1);
    int e = errno;
    if (n < 0) {
        say("read %zd %s", n, errname(e));
        while ((n = read(0, buf, sizeof buf - 1)) < 0 && errno == EINTR) /* then take the data anyway */
            ;
    }
    buf[n > 0 ? n : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    say("read %zd '%s'", n, buf);
    print_db_fds();
}

/* ---------------------------------------------------------------- SA_RESETHAND */

/* Signal handler: write(2) only. */
static void reset_handler(int sig)
{
    static const char m[] = "handled\n";
    (void)sig;
    ssize_t r = write(1, m, sizeof m - 1);
    (void)r;
}

static void mode_resethand(void)
{
    open_db();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = reset_handler;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, NULL) != 0)
        die("sigaction");
    say("ready %s", disposition(SIGUSR2));
    char line[64];
    for (int i = 0; i < 1000 && read_line(line, sizeof line); i++)
        if (!strcmp(line, "query"))
            say("disposition %s", disposition(SIGUSR2));
    print_db_fds();
}

/* ---------------------------------------------------------------- SIG_IGN across exec */

static void mode_show(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        die("/proc/self/status");
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "SigIgn:", 7))
            say("SigIgn %s", strtok(line + 7, " \t\n"));
    fclose(f);
    say("disposition %s", disposition(SIGUSR2));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: host_signals MODE [HOST PORT [N]]\n");
        return 2;
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "show")) {
        mode_show();
        return 0;
    }
    if (!strcmp(mode, "ignexec")) {
        if (signal(SIGUSR2, SIG_IGN) == SIG_ERR)
            die("signal");
        fflush(stdout);
        execl("/proc/self/exe", "host_signals", "show", (char *)NULL);
        die("execl");
    }
    if (argc < 4) {
        fprintf(stderr, "mode '%s' needs HOST PORT\n", mode);
        return 2;
    }
    host = argv[2];
    port = atoi(argv[3]);
    if (!strcmp(mode, "storm") && argc > 4)
        mode_storm(atol(argv[4]));
    else if (!strcmp(mode, "signalfd"))
        mode_signalfd();
    else if (!strcmp(mode, "ign-read"))
        mode_ign("read");
    else if (!strcmp(mode, "ign-poll"))
        mode_ign("poll");
    else if (!strcmp(mode, "resethand"))
        mode_resethand();
    else {
        fprintf(stderr, "unknown mode '%s'\n", mode);
        return 2;
    }
    return 0;
}

/* Micro-benchmarks of the core, linked directly (no preload):
 *   per-socket: what the shim adds to socket+connect+close (ls_on_socket_new + ls_on_connect +
 *               ls_on_close, stack capture included), measured around the core calls only;
 *   capture:    one 32-frame native stack capture (libunwind + interning);
 *   dump:       snapshots of 100 and of N live tracked TCP connections (the peers are held by a
 *               child process, so N can approach the fd limit), per socket, three ways: with the
 *               sock_diag dump, per socket (netlink refused), and as before sock_diag (emulated:
 *               the kernel check, TCP_INFO and the renderer's getsockname, one fd at a time);
 *               and the whole text+JSON report. On this thread (shared fd table: the exit
 *               report) and on a thread with a private fd table (the reporter thread: `leakshim
 *               dump`), with the worst wait a host thread saw for the registry lock meanwhile;
 *   fmt:        formatting one address and one integer, with snprintf/inet_ntop and without.
 * Prints "name value" lines and "dump ..." rows. Usage: core_cost [N_DUMP [--callgrind]]; with
 * --callgrind only fmt and dump run, once per variant, each between CALLGRIND_ZERO_STATS and
 * CALLGRIND_DUMP_STATS_AT("variant N") (no-ops outside valgrind). */
#include "ls_internal.h"

#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

static void *acceptor(void *arg)
{
    int lfd = (int)(intptr_t)arg, c;
    while ((c = accept(lfd, NULL, NULL)) >= 0)
        close(c);
    return NULL;
}

/* Recurse to the requested depth, then measure captures there. */
static double __attribute__((noipa)) capture_at_depth(int depth, int rounds, int unwind_only)
{
    if (depth > 1) {
        double r = capture_at_depth(depth - 1, rounds, unwind_only);
        __asm__ volatile("" ::: "memory");
        return r;
    }
    void *buf[64];
    double t0 = ls_mono();
    for (int i = 0; i < rounds; i++) {
        if (unwind_only)
            unw_backtrace(buf, 32);
        else
            ls_stack_capture();
    }
    return (ls_mono() - t0) / rounds;
}

/* ------------------------------------------------------------------ dump */

/* A child process accepts and holds the server ends, so this process spends its fds on clients. */
static pid_t holder_start(struct sockaddr_in *sa)
{
    socklen_t len = sizeof *sa;
    inet_pton(AF_INET, "127.0.0.1", &sa->sin_addr);
    sa->sin_port = 0;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)sa, sizeof *sa) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)sa, &len) != 0)
        return -1;
    pid_t p = fork();
    if (p == 0) {
        /* Linger 0: when this child is killed its sockets reset instead of leaving tens of thousands
         * of TIME_WAIT sockets, which every later sock_diag dump in this netns would walk. */
        struct linger lg = {1, 0};
        for (;;) {
            int c = accept(lfd, NULL, NULL);
            if (c < 0)
                pause(); /* fd limit reached: keep what we hold */
            setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
    }
    close(lfd);
    return p;
}

/* Tracked connections up to n in all; returns how many there are. */
static int conns_grow(const struct sockaddr_in *sa, int have, int n)
{
    for (; have < n; have++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            break;
        if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) {
            close(fd);
            break;
        }
        ls_on_connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    }
    return have;
}

static void __attribute__((noinline)) snap_diag(void)
{
    ls_snapshot s;
    ls_snapshot_sockdiag = 1;
    ls_registry_snapshot(&s, 2);
    ls_snapshot_sockdiag = 0;
    ls_registry_snapshot_free(&s);
}

static void __attribute__((noinline)) snap_per_socket(void)
{
    ls_snapshot s;
    ls_registry_snapshot(&s, 2);
    ls_registry_snapshot_free(&s);
}

/* What a snapshot cost before this change, system call for system call and lock hold for lock
 * hold: under the registry lock, the kernel check (fstat; on the reporter thread a stat of
 * /proc/self/fd/N) and TCP_INFO through ls_host_fd, one fd at a time; then, unlocked, the
 * getsockname the renderer made for the local address. */
static void __attribute__((noinline)) snap_old(void)
{
    ls_snapshot s;
    ls_registry_snapshot(&s, 0);
    ls_registry_lock_all();
    for (size_t i = 0; i < s.nconns; i++) {
        struct stat st;
        int fd = s.conns[i].fd;
        if (ls_host_fstat(fd, &st) != 0)
            continue;
        struct tcp_info ti;
        socklen_t tl = sizeof ti;
        int h = ls_host_fd(fd);
        if (h >= 0)
            getsockopt(h, IPPROTO_TCP, TCP_INFO, &ti, &tl);
        ls_host_fd_done(fd, h);
    }
    ls_registry_unlock_all(0);
    for (size_t i = 0; i < s.nconns; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = s.conns[i].fd, h = ls_host_fd(fd);
        if (h >= 0)
            getsockname(h, (struct sockaddr *)&ss, &sl);
        ls_host_fd_done(fd, h);
    }
    ls_registry_snapshot_free(&s);
}

static void __attribute__((noinline)) report_build(void)
{
    ls_buf text = {0}, json = {0};
    ls_report_build(&text, &json, 1, NULL);
    ls_buf_free(&text);
    ls_buf_free(&json);
}

static const struct {
    const char *name;
    void (*fn)(void);
} variants[] = {{"diag", snap_diag}, {"per_socket", snap_per_socket}, {"old", snap_old}, {"report", report_build}};
enum { NVARIANTS = sizeof variants / sizeof variants[0], ROUNDS = 5 };

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The longest a host thread waits for the registry lock while a snapshot runs: a prober takes
 * the lock (ls_handle_known) every 50 us. */
static int probing;
static double worst_wait;

static void *prober(void *arg)
{
    (void)arg;
    struct timespec pause_50us = {0, 50000};
    while (__atomic_load_n(&probing, __ATOMIC_RELAXED)) {
        double t0 = ls_mono();
        ls_handle_known(1);
        double w = ls_mono() - t0;
        if (w > worst_wait)
            worst_wait = w;
        nanosleep(&pause_50us, NULL);
    }
    return NULL;
}

/* Medians of ROUNDS interleaved rounds, in microseconds per socket; then, with the prober, the
 * median over STALL_RUNS runs of the worst lock wait, in milliseconds (one run's worst is often a
 * scheduling hiccup of this VM, not the lock). */
enum { STALL_RUNS = 3 };
static void measure(int n, double us[NVARIANTS], double wait_ms[NVARIANTS])
{
    double t[NVARIANTS][ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        for (int v = 0; v < NVARIANTS; v++) {
            double t0 = ls_mono();
            variants[v].fn();
            t[v][r] = (ls_mono() - t0) / n * 1e6;
        }
    for (int v = 0; v < NVARIANTS; v++) {
        qsort(t[v], ROUNDS, sizeof t[v][0], cmp_double);
        us[v] = t[v][ROUNDS / 2];
        double w[STALL_RUNS];
        for (int k = 0; k < STALL_RUNS; k++) {
            pthread_t p;
            worst_wait = 0;
            __atomic_store_n(&probing, 1, __ATOMIC_RELAXED);
            pthread_create(&p, NULL, prober, NULL);
            variants[v].fn();
            __atomic_store_n(&probing, 0, __ATOMIC_RELAXED);
            pthread_join(p, NULL);
            w[k] = worst_wait * 1e3;
        }
        qsort(w, STALL_RUNS, sizeof w[0], cmp_double);
        wait_ms[v] = w[STALL_RUNS / 2];
    }
}

struct private_run {
    int n;
    double us[NVARIANTS], wait_ms[NVARIANTS];
};

/* As the reporter thread: an fd table of its own, the host's fds reached through a pidfd. */
static void *private_thread(void *arg)
{
    struct private_run *r = arg;
    if (unshare(CLONE_FILES) != 0)
        return NULL;
    syscall(SYS_close_range, 0U, ~0U, 0U);
    ls_self_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0U);
    ls_fds_private = 1;
    measure(r->n, r->us, r->wait_ms);
    return NULL;
}

static void print_row(const char *thread, int n, const double us[NVARIANTS], const double wait_ms[NVARIANTS])
{
    printf("dump %s %d", thread, n);
    for (int v = 0; v < NVARIANTS; v++)
        printf(" %s=%.3f", variants[v].name, us[v]);
    for (int v = 0; v < NVARIANTS; v++)
        printf(" %s_wait_ms=%.2f", variants[v].name, wait_ms[v]);
    printf("\n");
}

static void dump_bench(int ndump, int callgrind)
{
    struct rlimit rl = {(rlim_t)ndump + 64, (rlim_t)ndump + 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        ndump = (int)rl.rlim_cur - 64;
        fprintf(stderr, "core_cost: fd limit %d: measuring %d sockets\n", (int)rl.rlim_cur, ndump);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET};
    pid_t holder = holder_start(&sa);
    if (holder < 0)
        return;
    char opt[64];
    snprintf(opt, sizeof opt, "ports=+%d", ntohs(sa.sin_port));
    ls_options_parse(&ls_opt, opt, NULL, NULL);
    int counts[8] = {100, ndump}, ncounts = 2, have = 0;
    const char *extra = getenv("CORE_COST_COUNTS"); /* e.g. "100,1000,4000": more rows */
    if (extra) {
        ncounts = 0;
        for (char *e; *extra && ncounts < 7; extra = *e ? e + 1 : e)
            counts[ncounts++] = (int)strtol(extra, &e, 10);
        counts[ncounts++] = ndump;
    }
    for (int k = 0; k < ncounts; k++) {
        have = conns_grow(&sa, have, counts[k]);
        if (callgrind) {
            if (k == 0)
                report_build(); /* first-time set-up (symbol tables) is not per socket */
            for (int v = 0; v < NVARIANTS; v++) {
                char label[64];
                snprintf(label, sizeof label, "%s %d", variants[v].name, have);
                CALLGRIND_ZERO_STATS;
                variants[v].fn();
                CALLGRIND_DUMP_STATS_AT(label);
            }
            continue;
        }
        double us[NVARIANTS], wait_ms[NVARIANTS];
        measure(have, us, wait_ms);
        print_row("host", have, us, wait_ms);
        struct private_run r = {.n = have};
        pthread_t t;
        if (pthread_create(&t, NULL, private_thread, &r) == 0) {
            pthread_join(t, NULL);
            print_row("reporter", have, r.us, r.wait_ms);
        }
    }
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
}

/* ------------------------------------------------------------------ formatting */

/* What the renderers did per address before ls_addr_format: snprintf around inet_ntop. */
static void fmt_addr_printf(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, cap, "%s:%d", host, ntohs(in->sin_port));
    } else {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
        snprintf(out, cap, "[%s]:%d", host, ntohs(in->sin6_port));
    }
}

static struct sockaddr_storage fmt_addrs[2];
enum { FMT_REPS = 20000 };

static void __attribute__((noinline)) fmt_printf(void)
{
    char out[160];
    ls_buf b = {0};
    for (int i = 0; i < FMT_REPS; i++) {
        fmt_addr_printf(&fmt_addrs[i & 1], out, sizeof out);
        ls_buf_fixed(&b, 1000000 + i, 0);
        b.len = 0;
    }
    ls_buf_free(&b);
}

static void __attribute__((noinline)) fmt_fast(void)
{
    char out[160];
    ls_buf b = {0};
    for (int i = 0; i < FMT_REPS; i++) {
        ls_addr_format(out, sizeof out, &fmt_addrs[i & 1], sizeof fmt_addrs[0]);
        ls_buf_u64(&b, 1000000 + (uint64_t)i);
        b.len = 0;
    }
    ls_buf_free(&b);
}

/* One address (alternately 10.20.30.40:54321 and [2001:db8::8a2e:370:7334]:5432) and one
 * integer, per repetition: the per-socket formatting of a JSON dump, the old way and the new. */
static void fmt_bench(int callgrind)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&fmt_addrs[0];
    in->sin_family = AF_INET;
    in->sin_port = htons(54321);
    inet_pton(AF_INET, "10.20.30.40", &in->sin_addr);
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&fmt_addrs[1];
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(5432);
    inet_pton(AF_INET6, "2001:db8::8a2e:370:7334", &in6->sin6_addr);
    if (callgrind) {
        CALLGRIND_ZERO_STATS;
        fmt_printf();
        CALLGRIND_DUMP_STATS_AT("fmt_printf 20000");
        CALLGRIND_ZERO_STATS;
        fmt_fast();
        CALLGRIND_DUMP_STATS_AT("fmt_fast 20000");
        return;
    }
    double best[2] = {1e9, 1e9};
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = ls_mono();
        fmt_printf();
        double t1 = ls_mono();
        fmt_fast();
        double t2 = ls_mono();
        best[0] = t1 - t0 < best[0] ? t1 - t0 : best[0];
        best[1] = t2 - t1 < best[1] ? t2 - t1 : best[1];
    }
    printf("fmt_printf_ns %.1f\nfmt_fast_ns %.1f\n", best[0] / FMT_REPS * 1e9, best[1] / FMT_REPS * 1e9);
}

int main(int argc, char **argv)
{
    int ndump = argc > 1 ? atoi(argv[1]) : 100000;
    ls_options_defaults(&ls_opt);
    ls_registry_init();
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD); /* as the shim does */
    if (argc > 2 && !strcmp(argv[2], "--callgrind")) {
        fmt_bench(1);
        dump_bench(ndump, 1);
        return 0;
    }

    /* per-socket cost against a loopback listener on a classified port */
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    bind(lfd, (struct sockaddr *)&sa, sizeof sa);
    listen(lfd, 4096);
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    char opt[64];
    snprintf(opt, sizeof opt, "ports=+%d", ntohs(sa.sin_port));
    ls_options_parse(&ls_opt, opt, NULL, NULL);
    pthread_t t;
    pthread_create(&t, NULL, acceptor, (void *)(intptr_t)lfd);
    /* Time the core calls in bulk over sockets connected once (clock reads are syscalls on
     * some VMs: one pair per pass, not per call). */
    enum { NSOCK = 1000, PASSES = 20 };
    static int fds[NSOCK];
    for (int i = 0; i < NSOCK; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        connect(fds[i], (struct sockaddr *)&sa, sizeof sa);
    }
    double t0 = ls_mono();
    for (int p = 0; p < PASSES; p++)
        for (int i = 0; i < NSOCK; i++) {
            ls_on_socket_new(fds[i]);
            ls_on_connect(fds[i], (struct sockaddr *)&sa, sizeof sa);
            ls_on_close(fds[i]);
        }
    printf("per_socket_us %.3f\n", (ls_mono() - t0) / (NSOCK * PASSES) * 1e6);
    for (int i = 0; i < NSOCK; i++)
        close(fds[i]);
    printf("capture32_us %.3f\n", capture_at_depth(32, 20000, 0) * 1e6);
    printf("unwind32_us %.3f\n", capture_at_depth(32, 20000, 1) * 1e6);
    /* untracked close: the common case for every file the host closes */
    double u0 = ls_mono();
    for (int i = 0; i < 1000000; i++)
        ls_on_close(3);
    printf("untracked_close_ns %.2f\n", (ls_mono() - u0) / 1e6 * 1e9);

    fmt_bench(0);
    dump_bench(ndump, 0);
    return 0;
}

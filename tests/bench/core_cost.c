/* Micro-benchmarks of the core, linked directly (no preload):
 *   per-socket: what the shim adds to socket+connect+close (ls_on_socket_new + ls_on_connect +
 *               ls_on_close, stack capture included), measured around the core calls only;
 *   capture:    one 32-frame native stack capture (libunwind + interning);
 *   dump:       building the text+JSON snapshot of N live tracked sockets.
 * Prints "name value" lines (microseconds or milliseconds). Usage: core_cost [N_DUMP] */
#include "leakshim.h"

#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

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
    double t0 = now();
    for (int i = 0; i < rounds; i++) {
        if (unwind_only)
            unw_backtrace(buf, 32);
        else
            ls_stack_capture();
    }
    return (now() - t0) / rounds;
}

int main(int argc, char **argv)
{
    int ndump = argc > 1 ? atoi(argv[1]) : 100000;
    ls_options_defaults(&ls_opt);
    ls_registry_init();
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD); /* as the shim does */

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
    double t0 = now();
    for (int p = 0; p < PASSES; p++)
        for (int i = 0; i < NSOCK; i++) {
            ls_on_socket_new(fds[i]);
            ls_on_connect(fds[i], (struct sockaddr *)&sa, sizeof sa);
            ls_on_close(fds[i]);
        }
    printf("per_socket_us %.3f\n", (now() - t0) / (NSOCK * PASSES) * 1e6);
    for (int i = 0; i < NSOCK; i++)
        close(fds[i]);
    printf("capture32_us %.3f\n", capture_at_depth(32, 20000, 0) * 1e6);
    printf("unwind32_us %.3f\n", capture_at_depth(32, 20000, 1) * 1e6);
    /* untracked close: the common case for every file the host closes */
    double u0 = now();
    for (int i = 0; i < 1000000; i++)
        ls_on_close(3);
    printf("untracked_close_ns %.2f\n", (now() - u0) / 1e6 * 1e9);

    /* dump of ndump live tracked sockets (socketpairs: no server needed) */
    struct rlimit rl = {(rlim_t)ndump + 1024, (rlim_t)ndump + 1024};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        ndump = (int)rl.rlim_cur - 1024;
        fprintf(stderr, "core_cost: fd limit: measuring %d sockets\n", ndump);
    }
    ls_ctx prev = ls_ctx_push(LS_DRV_NONE + 1, 0, 0, 0);
    struct sockaddr_in peer = sa;
    for (int i = 0; i + 1 < ndump; i += 2) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
            ndump = i;
            break;
        }
        ls_on_connect(sv[0], (struct sockaddr *)&peer, sizeof peer);
        ls_on_connect(sv[1], (struct sockaddr *)&peer, sizeof peer);
    }
    ls_ctx_pop(prev);
    ls_snapshot snap;
    double k0 = now();
    ls_registry_snapshot(&snap, 2);
    double k1 = now();
    ls_registry_snapshot_free(&snap);
    printf("kernel_check_ms %.1f\n", (k1 - k0) * 1e3);
    ls_buf text = {0}, json = {0};
    double d0 = now();
    ls_report_build(&text, &json, 1, NULL);
    double d1 = now();
    printf("dump_sockets %d\n", ndump);
    printf("dump_ms %.1f\n", (d1 - d0) * 1e3);
    printf("dump_text_kb %zu\ndump_json_kb %zu\n", text.len / 1024, json.len / 1024);
    return 0;
}

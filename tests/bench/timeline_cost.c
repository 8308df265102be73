/* The timeline's cost (`make bench`): one sample (ls_counts_take: a pass over the registry under
 * its lock, counting) with N tracked sockets, against the copy a snapshot without kernel check
 * makes (ls_registry_snapshot(s, 0)), and the longest a host thread waited for the registry lock
 * while samples ran back to back. The sockets are unconnected TCP sockets recorded as connected to
 * 127.0.0.1:5432 (the registry only needs a socket inode), so N is bounded only by the fd limit.
 * Prints "timeline N us_per_sample us_per_snapshot0 worst_wait_us" rows and the ring's size. */
#include "ls_report.h"

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
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile int stop;
static double worst_wait;
static int probe_fd;

/* A host thread that keeps tracking and forgetting one socket: how long does it wait? */
static void *host(void *arg)
{
    (void)arg;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(5432)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    while (!stop) {
        double t = now();
        ls_on_connect(probe_fd, (struct sockaddr *)&sa, sizeof sa);
        ls_on_close(probe_fd);
        double d = now() - t;
        if (d > worst_wait)
            worst_wait = d;
    }
    return NULL;
}

int main(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    ls_options_defaults(&ls_opt);
    ls_registry_init();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(5432)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    probe_fd = socket(AF_INET, SOCK_STREAM, 0);
    static const int sizes[] = {100, 1000, 10000, 50000};
    int have = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int n = sizes[k];
        if ((rlim_t)n + 64 > rl.rlim_cur)
            break;
        for (; have < n; have++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0) {
                perror("socket");
                return 1;
            }
            ls_on_socket_new(fd);
            ls_on_connect(fd, (struct sockaddr *)&sa, sizeof sa);
        }
        int reps = n >= 10000 ? 50 : 500;
        ls_counts *c = malloc(sizeof *c);
        double t0 = now();
        for (int i = 0; i < reps; i++)
            ls_counts_take(c, ls_now(), 30);
        double sample = (now() - t0) / reps;
        /* then again with a host thread tracking and forgetting a socket all the while */
        stop = 0;
        worst_wait = 0;
        pthread_t t;
        pthread_create(&t, NULL, host, NULL);
        for (int i = 0; i < reps; i++)
            ls_counts_take(c, ls_now(), 30);
        stop = 1;
        pthread_join(t, NULL);
        double wait = worst_wait;
        if (c->s.live != n && c->s.live != n + 1) { /* + the host thread's socket */
            fprintf(stderr, "counted %d live, expected %d\n", c->s.live, n);
            return 1;
        }
        t0 = now();
        for (int i = 0; i < reps; i++) {
            ls_snapshot s;
            ls_registry_snapshot(&s, 0);
            ls_registry_snapshot_free(&s);
        }
        double snap = (now() - t0) / reps;
        printf("timeline %d %.1f %.1f %.1f\n", n, sample * 1e6, snap * 1e6, wait * 1e6);
        free(c);
    }
    printf("ring_bytes %zu\n", sizeof(ls_tl_sample) * LS_TL_CAP);
    return 0;
}

/* The timeline's cost (`make bench`): one sample (ls_counts_take: a pass over the registry under
 * its lock, counting) with N tracked sockets, against the copy a snapshot without kernel check
 * makes (ls_registry_snapshot(s, 0)). The registry lock is held for the whole sample: that is
 * also the longest a host thread connecting or closing meanwhile can wait for it. The sockets are unconnected TCP
 * sockets recorded as connected to 127.0.0.1:5432 (the registry only needs a socket inode), so N is bounded only by the
 * fd limit. Prints "timeline N us_per_sample us_per_snapshot0" rows and the ring's size. */
#include "ls_report.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

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
        double t0 = ls_mono();
        for (int i = 0; i < reps; i++)
            ls_counts_take(c, ls_now(), 30, 0);
        double sample = (ls_mono() - t0) / reps;
        if (c->s.live != n) {
            fprintf(stderr, "counted %d live, expected %d\n", c->s.live, n);
            return 1;
        }
        t0 = ls_mono();
        for (int i = 0; i < reps; i++) {
            ls_snapshot s;
            ls_registry_snapshot(&s, 0);
            ls_registry_snapshot_free(&s);
        }
        double snap = (ls_mono() - t0) / reps;
        printf("timeline %d %.1f %.1f\n", n, sample * 1e6, snap * 1e6);
        free(c);
    }
    printf("ring_bytes %zu\n", sizeof(ls_tl_sample) * LS_TL_CAP);
    return 0;
}

/* Host-equivalence program for threads (test_host.py): what the shim may add to a process's threads
 * and stacks.
 * Usage: host_threads MODE [HOST PORT]
 *   nodb                 loopback TCP and a socketpair, no database socket: prints the thread count
 *   smallstack HOST PORT a thread with a 16 KiB stack uses ~4 KiB of it, then makes the process's
 *                        first and second database connections; prints the kernel's dbfds */
#include <arpa/inet.h>
#include <dirent.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "host_common.h"

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        die(path);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void mode_nodb(void)
{
    say("threads at start %d", count_entries("/proc/self/task"));
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &sl) != 0)
        die("listen");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect");
    int a = accept(l, NULL, NULL);
    int sv[2];
    if (a < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("accept/socketpair");
    say("threads after sockets %d", count_entries("/proc/self/task"));
    close(a);
    close(c);
    close(l);
    close(sv[0]);
    close(sv[1]);
}

/* ---------------------------------------------------------------- smallstack */

static int small_fds[2];

/* Not inlined, so its frame sits below the thread's 4 KiB array and the shim runs deeper still. */
static int __attribute__((noinline)) sum(volatile char *buf, size_t n)
{
    int s = 0;
    for (size_t i = 0; i < n; i += 64)
        s += buf[i];
    return s;
}

static void *small_thread(void *arg)
{
    (void)arg;
    volatile char buf[4096];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)i;
    int s = sum(buf, sizeof buf);
    small_fds[0] = open_db(); /* the process's first database connection */
    small_fds[1] = open_db();
    buf[0] = (char)s; /* keeps the array live across the connects */
    return NULL;
}

static void mode_smallstack(void)
{
    size_t size = 16384;
    if ((size_t)PTHREAD_STACK_MIN > size)
        size = (size_t)PTHREAD_STACK_MIN;
    pthread_attr_t a;
    pthread_t t;
    pthread_attr_init(&a);
    int err = pthread_attr_setstacksize(&a, size);
    if (err)
        die("pthread_attr_setstacksize");
    err = pthread_create(&t, &a, small_thread, NULL);
    if (err)
        die("pthread_create");
    pthread_join(t, NULL);
    pthread_attr_destroy(&a);
    say("stack %zu fds %d %d", size, small_fds[0], small_fds[1]);
    print_db_fds();
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: host_threads MODE [HOST PORT]\n");
        return 2;
    }
    if (!strcmp(argv[1], "nodb")) {
        mode_nodb();
        return 0;
    }
    if (!strcmp(argv[1], "smallstack") && argc > 3) {
        host = argv[2];
        port = atoi(argv[3]);
        mode_smallstack();
        return 0;
    }
    fprintf(stderr, "unknown mode or missing arguments\n");
    return 2;
}

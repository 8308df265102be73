/* Every libc hook the shim has, called from a thread of the host on a tracked connection
 * (run it with track=all) and on untracked fds, and the public C API, for
 * tests/integration/test_binding.py: under gdb, no lazy binding may happen on this thread's stack
 * inside a hook.
 * Usage: hook_tour            one tour; the forked child writes to the inherited connection
 * Prints "ok" and exits through exit() with one connection left open (an exit report). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../shim/include/leakshim.h"

#define CHECK(x)                                                                                                       \
    do {                                                                                                               \
        if (!(x)) {                                                                                                    \
            fprintf(stderr, "hook_tour: %s failed at line %d\n", #x, __LINE__);                                        \
            exit(2);                                                                                                   \
        }                                                                                                              \
    } while (0)

static struct sockaddr_in peer;

static void on_usr1(int sig)
{
    (void)sig;
}

static int connected(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    CHECK(connect(s, (struct sockaddr *)&peer, sizeof peer) == 0);
    return s;
}

static void *tour(void *arg)
{
    int lst = *(int *)arg;
    int s = connected();
    int a = accept(lst, NULL, NULL);
    CHECK(a >= 0);
    char buf[4] = "abc";
    struct iovec iov = {buf, 3};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    CHECK(send(s, buf, 3, 0) == 3);
    CHECK(sendto(s, buf, 3, 0, NULL, 0) == 3);
    CHECK(sendmsg(s, &msg, 0) == 3);
    CHECK(write(s, buf, 3) == 3);
    CHECK(writev(s, &iov, 1) == 3);
    int d = dup(s), d2 = dup2(s, 100), d3 = dup3(s, 101, O_CLOEXEC);
    int f = fcntl(s, F_DUPFD, 200), f2 = fcntl(s, F_DUPFD_CLOEXEC, 300);
    CHECK(d >= 0 && d2 == 100 && d3 == 101 && f >= 200 && f2 >= 300);
    CHECK(close(d) == 0 && close(d2) == 0);
    CHECK(close_range(101, 101, 0) == 0);
    closefrom(300);
    FILE *fp = fdopen(f, "r+");
    CHECK(fp && fclose(fp) == 0);
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], buf, 1) == 1);
    CHECK(close(p[0]) == 0 && close(p[1]) == 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    CHECK(signal(SIGUSR2, SIG_IGN) != SIG_ERR && signal(SIGUSR2, SIG_DFL) != SIG_ERR);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) { /* the inherited connection, used by the child: shared across fork */
        CHECK(write(s, buf, 3) == 3);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(close(s) == 0 && close(a) == 0);
    int api = leakshim_api_version && leakshim_api_version() >= 1; /* under the shim */
    unsigned long long before = api ? leakshim_creations() : 0;
    if (api)
        CHECK(leakshim_set_context("hook_tour", "leak") == 0);
    (void)connected(); /* left open: the exit report has something to say */
    if (api) {
        int leaks = -1;
        char *live = leakshim_live_since(before, &leaks);
        CHECK(live && leaks == 1);
        leakshim_free(live);
        leakshim_clear_context();
    }
    return NULL;
}

int main(void)
{
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t len = sizeof peer;
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(lst >= 0 && bind(lst, (struct sockaddr *)&peer, sizeof peer) == 0 && listen(lst, 8) == 0);
    CHECK(getsockname(lst, (struct sockaddr *)&peer, &len) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, tour, &lst) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    puts("ok");
    fflush(stdout);
    exit(0);
}

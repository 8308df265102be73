/* hold_conns N: a process for `leakshim dump` to snapshot. Prints the port of its own loopback
 * listener, waits for a line on stdin, opens N TCP connections to it (at most the fd limit less
 * 64; a forked child accepts and holds the server ends, so this process spends its fds on clients
 * only), prints "N ready", and at the next line _exits (the exit report of N leaked connections
 * is not what is measured). Run it under the shim with track=all (bench.py). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)n + 64 > rl.rlim_cur)
        n = (int)rl.rlim_cur - 64;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) != 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        /* Linger 0: killed, its sockets reset instead of leaving TIME_WAIT sockets behind. */
        struct linger lg = {1, 0};
        for (;;) {
            int c = accept(lfd, NULL, NULL);
            if (c < 0)
                pause(); /* fd limit: keep what we hold */
            setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
    }
    close(lfd);
    printf("%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    int k = 0;
    for (; k < n; k++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
            break;
    }
    printf("%d ready\n", k);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        line[0] = 0;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    _exit(0);
}

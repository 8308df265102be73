/* Stress: 8 threads connect + PING + close to Redis in a loop, each keeping every 25th connection
 * open; thread 0 forks now and then (the child connects, closes and exits). The test sends the
 * dump signal every 50 ms meanwhile. At the end the program prints the database sockets the kernel
 * says it has open, so the test can compare them with the exit report.
 * Usage: stress HOST PORT ITERATIONS */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *host;
static int port, iterations;

static int ping(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        exit(3);
    }
    char buf[16];
    if (write(fd, "PING\r\n", 6) != 6 || read(fd, buf, sizeof buf) <= 0) {
        perror("ping");
        exit(3);
    }
    return fd;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < iterations; i++) {
        int fd = ping();
        if (i % 25 != 24)
            close(fd);
        if (id == 0 && i % 100 == 50) {
            pid_t pid = fork();
            if (pid == 0) {
                close(ping());
                exit(0);
            }
            int st;
            waitpid(pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "child failed: %d\n", st);
                exit(4);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    host = argv[1];
    port = atoi(argv[2]);
    iterations = atoi(argv[3]);
    printf("started %d\n", (int)getpid());
    fflush(stdout);
    pthread_t t[8];
    for (long i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    /* The kernel's view: sockets of ours whose peer is the database port. */
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    printf("open:");
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0 && sa.sin_family == AF_INET &&
            ntohs(sa.sin_port) == port)
            printf(" %d", fd);
    }
    closedir(d);
    printf("\n");
    return 0;
}

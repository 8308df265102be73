/* Parent and child each leak their own database sockets; each must report only its own.
 * Usage: forker HOST PORT  (parent leaks 2, child leaks 1 and exits with exit(), not _exit) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *host;
static int port;

static int __attribute__((noinline)) open_db(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        exit(3);
    return fd;
}

static void __attribute__((noinline)) child_work(void)
{
    open_db();
}

static void __attribute__((noinline)) parent_work(void)
{
    open_db();
    open_db();
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    host = argv[1];
    port = atoi(argv[2]);
    parent_work();
    pid_t pid = fork();
    if (pid == 0) {
        child_work();
        printf("child %d done\n", (int)getpid());
        fflush(stdout);
        exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("parent %d child %d status %d\n", (int)getpid(), (int)pid, WEXITSTATUS(st));
    return 0;
}

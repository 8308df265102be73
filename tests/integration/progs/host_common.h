/* Shared by the host-equivalence programs (host_*.c, one translation unit each): the database
 * address from argv, one-line output the test reads, and the kernel's list of database fds. */
#ifndef HOST_COMMON_H
#define HOST_COMMON_H
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HOST_UNUSED __attribute__((unused))

static const char *host;
static int port;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

HOST_UNUSED static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

HOST_UNUSED static const char *errname(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "?";
}

HOST_UNUSED static void die(const char *what)
{
    perror(what);
    exit(5);
}

HOST_UNUSED static int __attribute__((noinline)) open_db(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad host '%s'\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect");
    return fd;
}

/* The fds open right now, ascending (procfs lists them in order), without the listing's own. */
HOST_UNUSED static int open_fds(int *out, int max)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        perror("opendir /proc/self/fd");
        exit(5);
    }
    int self = dirfd(d), n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != self)
            out[n++] = fd;
    }
    closedir(d);
    return n;
}

/* The kernel's answer to "which of my fds are connected TCP sockets to the database port". */
HOST_UNUSED static void print_db_fds(void)
{
    int fds[4096];
    int n = open_fds(fds, 4096);
    char line[16384];
    size_t len = (size_t)snprintf(line, sizeof line, "dbfds:");
    for (int i = 0; i < n && len < sizeof line - 16; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getpeername(fds[i], (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET &&
            ntohs(((struct sockaddr_in *)&ss)->sin_port) == port)
            len += (size_t)snprintf(line + len, sizeof line - len, " %d", fds[i]);
    }
    say("%s", line);
}

#endif

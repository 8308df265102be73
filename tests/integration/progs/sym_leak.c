/* A leak whose creation stack needs DWARF to read well (tests/integration/test_symbolize.py builds
 * it with -O2 -g): the socket is connected by an always-inlined helper, dial(), inside a static
 * function, open_db(). The ELF symbol table knows only open_db; DWARF knows dial and both lines.
 * The test finds the lines by the markers in the comments.
 *
 *   sym_leak HOST PORT [N]   leaks N connections (default 2); prints "libdw mapped: yes|no" as seen
 *                            before exit, i.e. before any report ran */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static inline __attribute__((always_inline)) int dial(const char *host, int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { /* MARK:connect */
        close(fd);
        return -1;
    }
    return fd;
}

static __attribute__((noinline)) int open_db(const char *host, int port)
{
    int fd = dial(host, port); /* MARK:dial */
    if (fd < 0)
        perror("connect");
    return fd; /* never closed: the leak */
}

static int libdw_mapped(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        found |= strstr(line, "/libdw") != NULL;
    if (f)
        fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 2, ok = 0;
    for (int i = 0; i < n; i++)
        ok += open_db(argv[1], atoi(argv[2])) >= 0; /* MARK:main */
    printf("leaked %d\nlibdw mapped: %s\n", ok, libdw_mapped() ? "yes" : "no");
    return ok == n ? 0 : 1;
}

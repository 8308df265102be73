/* Every way a database socket's fd can die, move or be duplicated, each followed by reuse of the
 * fd number. Usage: fdpaths MODE HOST PORT. The exit report must show exactly the sockets this
 * program really left open (0 for every mode but dup_close_orig, which keeps the dup open). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *host;
static int port;

static int db(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        exit(3);
    }
    return fd;
}

/* Reuse the number with something that is not a database socket. */
static void reuse(int fd)
{
    int n = open("/dev/null", O_RDONLY);
    if (n != fd) {
        fprintf(stderr, "expected fd %d to be reused, got %d\n", fd, n);
        exit(4);
    }
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    const char *mode = argv[1];
    host = argv[2];
    port = atoi(argv[3]);
    int fd = db();
    if (!strcmp(mode, "fclose_fdopen")) {
        FILE *f = fdopen(fd, "r+");
        fclose(f);
        reuse(fd);
    } else if (!strcmp(mode, "syscall_close")) {
        syscall(SYS_close, fd);
        reuse(fd);
    } else if (!strcmp(mode, "dup2_over")) {
        int other = open("/dev/null", O_RDONLY);
        dup2(other, fd); /* fd is now /dev/null */
        close(other);
    } else if (!strcmp(mode, "dup3_over")) {
        int other = open("/dev/null", O_RDONLY);
        dup3(other, fd, O_CLOEXEC);
        close(other);
    } else if (!strcmp(mode, "close_range")) {
        int fd2 = db();
        close_range((unsigned)fd, (unsigned)fd2, 0);
        reuse(fd);
    } else if (!strcmp(mode, "closefrom")) {
        closefrom(fd);
        reuse(fd);
    } else if (!strcmp(mode, "fcntl_dupfd")) {
        int d = fcntl(fd, F_DUPFD_CLOEXEC, 100);
        close(fd);
        close(d);
        reuse(fd);
    } else if (!strcmp(mode, "dup_then_close_both")) {
        int d = dup(fd);
        close(fd);
        close(d);
        reuse(fd);
    } else if (!strcmp(mode, "dup_close_orig")) {
        int d = dup(fd);
        close(fd);
        reuse(fd);
        printf("kept %d\n", d); /* still open: a real leak */
    } else if (!strcmp(mode, "connect_reuse")) {
        syscall(SYS_close, fd);
        int fd2 = db(); /* same number, new database socket */
        if (fd2 != fd)
            return 5;
        close(fd2);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("done %s\n", mode);
    return 0;
}

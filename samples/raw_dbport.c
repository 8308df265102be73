/* A C program on raw sockets to a database port: sends a Redis PING per connection. The
 * `remember_connection` path keeps every third socket open and forgets it (the leak); the others
 * are closed. Usage: raw_dbport HOST PORT COUNT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int open_db(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        exit(1);
    }
    char buf[64];
    if (write(fd, "PING\r\n", 6) != 6 || read(fd, buf, sizeof buf) <= 0) {
        perror("ping");
        exit(1);
    }
    return fd;
}

static void remember_connection(const char *host, int port)
{
    int fd = open_db(host, port);
    (void)fd; /* the bug: nobody closes it */
}

static void short_query(const char *host, int port)
{
    close(open_db(host, port));
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT COUNT\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[3]);
    for (int i = 0; i < n; i++) {
        if (i % 3 == 0)
            remember_connection(argv[1], atoi(argv[2]));
        else
            short_query(argv[1], atoi(argv[2]));
    }
    printf("done: %d connections\n", n);
    return 0;
}

#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

/* Accepts and closes forever, so connect() never waits on a full backlog. */
static void *acceptor(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            return NULL; /* listener closed */
        close(c);
    }
}

int unit_listen(int *lfd)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    *lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*lfd >= 0);
    assert_int_equal(bind(*lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(*lfd, 128), 0);
    assert_int_equal(getsockname(*lfd, (struct sockaddr *)&sa, &len), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acceptor, (void *)(intptr_t)*lfd), 0);
    pthread_detach(t);
    return ntohs(sa.sin_port);
}

int unit_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    ls_on_socket_new(fd);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ls_on_connect(fd, (struct sockaddr *)&sa, sizeof sa);
    return fd;
}

void unit_close(int fd)
{
    ls_on_close(fd);
    close(fd);
}

#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Listeners are drained synchronously after each connect (no acceptor thread: it would race the
 * tests for the lowest free fd numbers, which some tests rely on). */
static int listeners[32];
static int nlisteners;

static void drain(void)
{
    for (int i = 0; i < nlisteners; i++) {
        int c;
        while ((c = accept4(listeners[i], NULL, NULL, SOCK_CLOEXEC)) >= 0)
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
    fcntl(*lfd, F_SETFL, O_NONBLOCK);
    if (nlisteners < 32)
        listeners[nlisteners++] = *lfd;
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
    drain();
    return fd;
}

void unit_close(int fd)
{
    ls_on_close(fd);
    close(fd);
}

int unit_setup(int *lfd)
{
    ls_options_defaults(&ls_opt);
    ls_registry_init();
    int port = unit_listen(lfd);
    char opt[64];
    snprintf(opt, sizeof opt, "ports=+%d", port);
    ls_options_parse(&ls_opt, opt, NULL, NULL);
    return port;
}

int unit_port, unit_lfd;

int unit_group_setup(void **state)
{
    (void)state;
    unit_port = unit_setup(&unit_lfd);
    return 0;
}

int unit_group_teardown(void **state)
{
    (void)state;
    close(unit_lfd);
    return 0;
}

void unit_build_report(ls_buf *text, ls_buf *json, int kind, int *leaks)
{
    memset(text, 0, sizeof *text);
    memset(json, 0, sizeof *json);
    ls_report_build(text, json, kind, leaks);
    assert_non_null(text->data);
    assert_non_null(json->data);
}

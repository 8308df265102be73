/* The core's side of `leakshim attach` (registry.c, report_*.c): sockets found open at attach time
 * are tracked without a stack, reported under their own label in text and JSON and never counted
 * as leaks; a detached (paused) registry records nothing new but still forgets closed sockets. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int port, lfd;

/* A socket connected behind the registry's back, as one opened before the shim was loaded. */
static int connect_unseen(struct sockaddr_storage *ss, socklen_t *len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    *len = sizeof *ss;
    assert_int_equal(getpeername(fd, (struct sockaddr *)ss, len), 0);
    return fd;
}

static void existing_sockets_are_tracked_once_without_a_stack(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = connect_unseen(&ss, &len);
    assert_false(ls_fd_tracked(fd));
    ls_attached_at = ls_now();
    assert_int_equal(ls_on_existing_socket(fd, (struct sockaddr *)&ss, len), 1);
    assert_true(ls_fd_tracked(fd));
    assert_int_equal(ls_on_existing_socket(fd, (struct sockaddr *)&ss, len), 0); /* known already */
    int other = dup(fd);
    assert_int_equal(ls_on_existing_socket(other, (struct sockaddr *)&ss, len), 0); /* same socket */
    assert_true(ls_fd_tracked(other));
    int plain = socket(AF_INET, SOCK_STREAM, 0); /* any socket fd the caller chose; not a file */
    assert_int_equal(ls_on_existing_socket(plain, NULL, 0), 1);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    assert_int_equal(ls_on_existing_socket(pfd[0], NULL, 0), 0); /* not a socket */
    close(pfd[0]);
    close(pfd[1]);
    unit_close(plain);

    ls_buf text, json;
    int leaks = -1;
    unit_build_report(&text, &json, 1, &leaks);
    assert_non_null(strstr(text.data, "Opened before attach"));
    assert_non_null(strstr(text.data, "opened before attach (no stack)"));
    assert_non_null(strstr(text.data, "driver handles and pools created before attach are not known"));
    assert_non_null(strstr(json.data, "\"category\":\"opened-before-attach\""));
    assert_non_null(strstr(json.data, "\"before_attach\":true"));
    assert_null(strstr(json.data, "\"attached\":null"));
    ls_buf_free(&text);
    ls_buf_free(&json);

    unit_build_report(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 0); /* not a leak: nobody knows who opened it, or why */
    assert_non_null(strstr(text.data, "Not counted as leaks:"));
    assert_non_null(strstr(text.data, "opened before attach (no stack)"));
    ls_buf_free(&text);
    ls_buf_free(&json);
    unit_close(other);
    unit_close(fd);
    assert_false(ls_fd_tracked(fd));
}

static void detached_records_nothing_new_but_forgets_closes(void **state)
{
    (void)state;
    int before = unit_connect(port);
    assert_true(ls_fd_tracked(before));
    ls_paused = 1;
    int during = unit_connect(port);
    assert_false(ls_fd_tracked(during));
    ls_handle_open(LS_DRV_LIBPQ, LS_HK_CLIENT, 0x1234, 0);
    assert_false(ls_handle_known(0x1234));
    unit_close(before);
    assert_false(ls_fd_tracked(before));
    ls_paused = 0;
    int after = unit_connect(port);
    assert_true(ls_fd_tracked(after));
    unit_close(during);
    unit_close(after);
}

static int setup(void **state)
{
    (void)state;
    port = unit_setup(&lfd);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(existing_sockets_are_tracked_once_without_a_stack, setup),
        cmocka_unit_test_setup(detached_records_nothing_new_but_forgets_closes, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The registry: classification, dup/close accounting, the kernel check, handles and pools,
 * and many threads at once. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static int lfd, port;

static int setup(void **state)
{
    (void)state;
    port = unit_setup(&lfd);
    return 0;
}

static size_t live(void)
{
    ls_snapshot s;
    assert_int_equal(ls_registry_snapshot(&s, 1), 0);
    size_t n = s.nconns;
    ls_registry_snapshot_free(&s);
    return n;
}

static void classification(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(5432)};
    assert_true(ls_classify((struct sockaddr *)&in, sizeof in));
    in.sin_port = htons(80);
    assert_false(ls_classify((struct sockaddr *)&in, sizeof in));
    in.sin_port = htons(27018);
    assert_true(ls_classify((struct sockaddr *)&in, sizeof in));
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(6379)};
    assert_true(ls_classify((struct sockaddr *)&in6, sizeof in6));
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    strcpy(un.sun_path, "/var/run/postgresql/.s.PGSQL.5432");
    assert_true(ls_classify((struct sockaddr *)&un, sizeof un));
    strcpy(un.sun_path, "/run/mysqld/mysqld.sock");
    assert_true(ls_classify((struct sockaddr *)&un, sizeof un));
    strcpy(un.sun_path, "/tmp/redis-6380.sock");
    assert_true(ls_classify((struct sockaddr *)&un, sizeof un));
    strcpy(un.sun_path, "/run/systemd/journal/socket");
    assert_false(ls_classify((struct sockaddr *)&un, sizeof un));
    assert_false(ls_classify(NULL, 0));
    assert_string_equal(ls_service_name(LS_DRV_NONE, (struct sockaddr *)&in6, sizeof in6), "Redis");
    assert_string_equal(ls_service_name(LS_DRV_LIBPQ, NULL, 0), "PostgreSQL");
}

static void tracks_only_database_sockets(void **state)
{
    (void)state;
    size_t before = live();
    int a = unit_connect(port);
    assert_true(ls_fd_tracked(a));
    assert_int_equal(live(), before + 1);
    /* the same listener under a port we do not classify: use a second listener */
    int l2, p2 = unit_listen(&l2);
    int b = unit_connect(p2);
    assert_false(ls_fd_tracked(b));
    assert_int_equal(live(), before + 1);
    ls_opt.track = LS_TRACK_ALL;
    int c = unit_connect(p2);
    assert_true(ls_fd_tracked(c));
    ls_opt.track = LS_TRACK_DB;
    unit_close(a);
    unit_close(b);
    unit_close(c);
    close(l2);
    assert_false(ls_fd_tracked(a));
    assert_int_equal(live(), before);
}

static void dup_keeps_the_socket_live(void **state)
{
    (void)state;
    size_t before = live();
    int a = unit_connect(port);
    int b = dup(a);
    ls_on_dup(a, b);
    unit_close(a);
    assert_int_equal(live(), before + 1); /* b still holds it */
    ls_snapshot s;
    ls_registry_snapshot(&s, 1);
    int found = 0;
    for (size_t i = 0; i < s.nconns; i++)
        found |= s.conns[i].fd == b;
    ls_registry_snapshot_free(&s);
    assert_true(found);
    unit_close(b);
    assert_int_equal(live(), before);
}

static void dup2_over_a_tracked_fd(void **state)
{
    (void)state;
    size_t before = live();
    int a = unit_connect(port);
    int l2, p2 = unit_listen(&l2);
    int other = socket(AF_INET, SOCK_STREAM, 0);
    (void)p2;
    assert_int_equal(dup2(other, a), a); /* a is now the other (untracked) socket */
    ls_on_dup(other, a);
    assert_int_equal(live(), before);
    close(a);
    close(other);
    close(l2);
}

/* Puts a fresh socket at exactly fd (the acceptor threads take the lowest free numbers too). */
static int socket_at(int fd)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s != fd) {
        assert_int_equal(dup2(s, fd), fd);
        close(s);
    }
    return fd;
}

static void died_behind_our_back(void **state)
{
    (void)state;
    size_t before = live();
    int a = unit_connect(port);
    syscall(SYS_close, a); /* no hook sees this */
    socket_at(a);          /* the number is reused by a socket we do not track */
    ls_snapshot s;
    ls_registry_snapshot(&s, 1);
    assert_int_equal(s.nconns, before);
    assert_true(s.closed_behind >= 1);
    ls_registry_snapshot_free(&s);
    close(a);
    /* and reuse by a new database socket replaces the stale entry */
    int b = unit_connect(port);
    syscall(SYS_close, b);
    socket_at(b);
    ls_on_socket_new(b);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(b, (struct sockaddr *)&sa, sizeof sa), 0);
    ls_on_connect(b, (struct sockaddr *)&sa, sizeof sa);
    assert_int_equal(live(), before + 1);
    unit_close(b);
    assert_int_equal(live(), before);
}

static void close_range_forgets(void **state)
{
    (void)state;
    size_t before = live();
    int fds[4];
    for (int i = 0; i < 4; i++)
        fds[i] = unit_connect(port);
    int lo = fds[0], hi = fds[0];
    for (int i = 0; i < 4; i++) {
        lo = fds[i] < lo ? fds[i] : lo;
        hi = fds[i] > hi ? fds[i] : hi;
    }
    ls_on_close_range((unsigned)lo, (unsigned)hi);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    assert_int_equal(live(), before);
}

static void handles_adopt_and_orphan(void **state)
{
    (void)state;
    uintptr_t h = 0x1234500;
    int l2, p2 = unit_listen(&l2);
    ls_ctx prev = ls_ctx_push(LS_DRV_LIBPQ, 0, 0, 0);
    int a = unit_connect(p2); /* port not classified, but connected inside a driver call */
    ls_ctx_pop(prev);
    assert_true(ls_fd_tracked(a));
    ls_handle_open(LS_DRV_LIBPQ, LS_HK_CLIENT, h, 0);
    ls_handle_adopt_pending(h);
    ls_snapshot s;
    ls_registry_snapshot(&s, 1);
    int ok = 0;
    for (size_t i = 0; i < s.nconns; i++)
        if (s.conns[i].fd == a)
            ok = s.conns[i].handle == h && s.conns[i].driver == LS_DRV_LIBPQ && s.conns[i].state == LS_ST_IN_USE;
    ls_registry_snapshot_free(&s);
    assert_true(ok);
    ls_handle_close(h); /* the driver freed the handle but the socket stays open */
    ls_registry_snapshot(&s, 1);
    ok = 0;
    for (size_t i = 0; i < s.nconns; i++)
        if (s.conns[i].fd == a)
            ok = s.conns[i].state == LS_ST_ORPHANED;
    ls_registry_snapshot_free(&s);
    assert_true(ok);
    unit_close(a);
    close(l2);
    assert_false(ls_handle_known(h)); /* freed and no sockets left: gone */
}

static void pool_checkout_and_checkin(void **state)
{
    (void)state;
    uintptr_t pool = 0x9000, client = 0x9100;
    ls_handle_open(LS_DRV_MONGOC, LS_HK_POOL, pool, 0);
    ls_pool_checkout(pool, client); /* unknown client: created on checkout */
    assert_true(ls_handle_known(client));
    assert_int_equal(ls_registry_checked_out(), 1);
    ls_ctx prev = ls_ctx_push(LS_DRV_MONGOC, client, pool, 0);
    int a = unit_connect(port);
    ls_ctx_pop(prev);
    ls_snapshot s;
    ls_registry_snapshot(&s, 1);
    int st = -1;
    for (size_t i = 0; i < s.nconns; i++)
        if (s.conns[i].fd == a)
            st = s.conns[i].state;
    ls_registry_snapshot_free(&s);
    assert_int_equal(st, LS_ST_CHECKED_OUT);
    double t = 0;
    ls_registry_snapshot(&s, 0);
    for (size_t i = 0; i < s.nhandles; i++)
        if (s.handles[i].handle == client)
            t = s.handles[i].checkout_time;
    ls_registry_snapshot_free(&s);
    assert_int_equal(ls_checkout_mark_warned(client, t), 1);
    assert_int_equal(ls_checkout_mark_warned(client, t), 0); /* warned once per checkout */
    ls_pool_checkin(pool, client);
    assert_int_equal(ls_registry_checked_out(), 0);
    ls_handle_close(pool); /* frees its idle client */
    unit_close(a);
    assert_false(ls_handle_known(client));
    assert_false(ls_handle_known(pool));
}

static void *churn_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 60; i++) {
        int a = unit_connect(port);
        int b = dup(a);
        ls_on_dup(a, b);
        unit_close(a);
        unit_close(b);
    }
    return NULL;
}

static void many_threads(void **state)
{
    (void)state;
    size_t before = live();
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, churn_thread, NULL);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(live(), before);
}

static int teardown(void **state)
{
    (void)state;
    close(lfd);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classification),
        cmocka_unit_test(tracks_only_database_sockets),
        cmocka_unit_test(dup_keeps_the_socket_live),
        cmocka_unit_test(dup2_over_a_tracked_fd),
        cmocka_unit_test(died_behind_our_back),
        cmocka_unit_test(close_range_forgets),
        cmocka_unit_test(handles_adopt_and_orphan),
        cmocka_unit_test(pool_checkout_and_checkin),
        cmocka_unit_test(many_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

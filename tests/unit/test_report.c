/* Report grouping: largest group first, summary line last, the leak categories, suppressions,
 * and the JSON carrying the same numbers. */
#include "unit.h"

#include <string.h>
#include <unistd.h>

static int lfd, port;

static int setup(void **state)
{
    (void)state;
    port = unit_setup(&lfd);
    return 0;
}

/* noipa + a barrier after the call: no inlining, no merging, no tail call. */
static int __attribute__((noipa)) leak_site_a(void)
{
    int fd = unit_connect(port);
    __asm__ volatile("" ::: "memory");
    return fd;
}

static int __attribute__((noipa)) leak_site_b(void)
{
    int fd = unit_connect(port);
    __asm__ volatile("" ::: "memory");
    return fd;
}

/* One call site for all rounds (-O0: not unrolled). */
static void __attribute__((noipa, optimize("O0"))) leak_a_rounds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        fds[i] = leak_site_a();
}

static void build(ls_buf *text, ls_buf *json, int kind, int *leaks)
{
    memset(text, 0, sizeof *text);
    memset(json, 0, sizeof *json);
    ls_report_build(text, json, kind, leaks);
    assert_non_null(text->data);
    assert_non_null(json->data);
}

static const char *last_line(const ls_buf *b)
{
    const char *end = b->data + b->len - 1; /* the final newline */
    const char *p = end;
    while (p > b->data && p[-1] != '\n')
        p--;
    return p;
}

static void groups_largest_first_summary_last(void **state)
{
    (void)state;
    int fds[4];
    leak_a_rounds(fds, 3);
    fds[3] = leak_site_b();
    ls_buf text, json;
    int leaks = -1;
    build(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 4);
    const char *g3 = strstr(text.data, "3 database connections to 127.0.0.1:");
    const char *g1 = strstr(text.data, "1 database connection to 127.0.0.1:");
    assert_non_null(g3);
    assert_non_null(g1);
    assert_true(g3 < g1);
    assert_non_null(strstr(g3, "leak_site_a"));
    assert_true(strstr(g3, "leak_site_a") < g1);
    assert_non_null(strstr(g1, "leak_site_b"));
    assert_non_null(strstr(last_line(&text), "leakshim: 4 leaked database connections in 2 groups"));
    assert_non_null(strstr(json.data, "\"leakshim\":1"));
    assert_non_null(strstr(json.data, "\"leaks\":4,\"groups\":2"));
    assert_non_null(strstr(json.data, "\"symbol\":\"leak_site_a\""));
    assert_non_null(strstr(json.data, "\"build_id\":\""));
    ls_buf_free(&text);
    ls_buf_free(&json);

    /* suppress one group by function name: it leaves the count and is listed as suppressed */
    ls_suppressions_add("leak_site_a");
    build(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 1);
    assert_non_null(strstr(last_line(&text), "1 leaked database connection in 1 group (3 suppressed)"));
    assert_non_null(strstr(json.data, "\"suppressed\":3"));
    ls_suppressions_clear();
    ls_buf_free(&text);
    ls_buf_free(&json);

    for (int i = 0; i < 4; i++)
        unit_close(fds[i]);
    build(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 0);
    assert_non_null(strstr(last_line(&text), "leakshim: 0 leaked database connections"));
    /* churn: the stacks that created sockets are listed even when nothing leaked */
    assert_non_null(strstr(text.data, "created per stack"));
    assert_non_null(strstr(text.data, "created,    0 live: "));
    assert_non_null(strstr(json.data, "\"created\":3,\"live\":0}"));
    ls_buf_free(&text);
    ls_buf_free(&json);
}

static void driver_categories(void **state)
{
    (void)state;
    int leaks;
    ls_buf text, json;
    /* 1: handle never freed, its socket open */
    ls_handle_open(LS_DRV_LIBPQ, LS_HK_CLIENT, 0x100, 0);
    ls_ctx prev = ls_ctx_push(LS_DRV_LIBPQ, 0x100, 0, 0);
    int a = unit_connect(port);
    ls_ctx_pop(prev);
    /* 2: handle freed, socket still open (redisFreeKeepFd) */
    ls_handle_open(LS_DRV_HIREDIS, LS_HK_CLIENT, 0x200, 0);
    prev = ls_ctx_push(LS_DRV_HIREDIS, 0x200, 0, 0);
    int b = unit_connect(port);
    ls_ctx_pop(prev);
    ls_handle_release_fd(0x200, b);
    ls_handle_close(0x200);
    /* 3: socket closed under a live handle */
    ls_handle_open(LS_DRV_MYSQL, LS_HK_CLIENT, 0x300, 0);
    prev = ls_ctx_push(LS_DRV_MYSQL, 0x300, 0, 0);
    int c = unit_connect(port);
    ls_ctx_pop(prev);
    unit_close(c);
    /* 4: checked out of a pool and never returned; 5: the pool itself never destroyed */
    ls_handle_open(LS_DRV_MONGOC, LS_HK_POOL, 0x400, 0);
    ls_pool_checkout(0x400, 0x410);
    ls_pool_checkout(0x400, 0x420);
    ls_pool_checkin(0x400, 0x420);
    /* 6: background monitoring socket */
    prev = ls_ctx_push(LS_DRV_MONGOC, 0, 0x400, 1);
    int d = unit_connect(port);
    ls_ctx_pop(prev);

    build(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 4); /* handle leak + orphaned + closed-under + checkout */
    assert_non_null(strstr(text.data, "1 libpq handle (PGconn) never freed, holding 1 open PostgreSQL connection"));
    assert_non_null(strstr(text.data, "1 Redis connection to 127.0.0.1:"));
    assert_non_null(strstr(text.data, "handle freed, socket still open"));
    assert_non_null(strstr(text.data, "1 mariadb handle (MYSQL) still live after its socket was closed under it"));
    assert_non_null(strstr(text.data, "checked out of a pool and never returned"));
    const char *quiet = strstr(text.data, "Not counted as leaks:");
    assert_non_null(quiet);
    assert_non_null(strstr(quiet, "1 libmongoc pool not closed at shutdown (2 clients)"));
    assert_non_null(strstr(quiet, "background socket"));
    assert_non_null(strstr(json.data, "\"category\":\"checkout-leak\""));
    assert_non_null(strstr(json.data, "\"category\":\"orphaned-socket\""));
    assert_non_null(strstr(json.data, "\"category\":\"closed-under-handle\""));
    assert_non_null(strstr(json.data, "\"category\":\"pool-unclosed\""));
    ls_buf_free(&text);
    ls_buf_free(&json);

    /* snapshot: checked-out connections are listed with their checkout stack */
    build(&text, &json, 1, NULL);
    assert_non_null(strstr(text.data, "Checked out of pools (oldest first):"));
    assert_non_null(strstr(text.data, "Pool 0x400 (libmongoc): 2 clients, 1 checked out, 1 idle"));
    assert_non_null(strstr(json.data, "\"kind\":\"snapshot\""));
    ls_buf_free(&text);
    ls_buf_free(&json);

    ls_handle_close(0x100);
    unit_close(a);
    unit_close(b);
    ls_handle_close(0x300);
    ls_pool_checkin(0x400, 0x410);
    ls_handle_close(0x400);
    unit_close(d);
    build(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 0);
    assert_null(strstr(text.data, "Not counted as leaks:"));
    ls_buf_free(&text);
    ls_buf_free(&json);
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
        cmocka_unit_test(groups_largest_first_summary_last),
        cmocka_unit_test(driver_categories),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

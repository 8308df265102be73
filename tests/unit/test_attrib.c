/* Attribution contexts (attrib.c) and the report model's use of them (report_context.c): labels
 * interned once, where the current value comes from, the creation counter, and groups counting
 * their members by test and by request. */
#include "unit.h"

#include "ls_report.h"

#include "include/leakshim.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void intern_gives_one_id_per_label_and_phase(void **state)
{
    (void)state;
    uint32_t a = ls_attr_intern("tests/x.py::test_a", "call");
    uint32_t b = ls_attr_intern("tests/x.py::test_a", "setup");
    uint32_t c = ls_attr_intern("tests/x.py::test_a", "call");
    assert_true(a != 0 && b != 0);
    assert_int_equal(a, c);
    assert_true(a != b);
    assert_string_equal(ls_attr_label(a), "tests/x.py::test_a");
    assert_string_equal(ls_attr_phase(b), "setup");
    /* an instance number in the high half does not change the label */
    assert_string_equal(ls_attr_label((uint64_t)a | (7ull << 32)), "tests/x.py::test_a");
    assert_int_equal(ls_attr_intern("", "call"), 0);
    assert_int_equal(ls_attr_intern(NULL, "call"), 0);
    assert_null(ls_attr_label(0));
    assert_null(ls_attr_label(0xfffffff));
    assert_string_equal(ls_attr_phase(ls_attr_intern("label only", NULL)), "");
}

static void many_labels_survive_growth(void **state)
{
    (void)state;
    char l[32];
    uint32_t ids[5000];
    for (int i = 0; i < 5000; i++) {
        snprintf(l, sizeof l, "t%d", i);
        ids[i] = ls_attr_intern(l, "call");
        assert_true(ids[i] != 0);
    }
    for (int i = 0; i < 5000; i += 97) {
        snprintf(l, sizeof l, "t%d", i);
        assert_string_equal(ls_attr_label(ids[i]), l);
        assert_int_equal(ls_attr_intern(l, "call"), ids[i]);
    }
}

static uint64_t py_value;
static uint64_t fake_py_hook(void)
{
    return py_value;
}

static void *other_thread(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)ls_attr_current();
}

static void current_value_python_then_thread_then_process(void **state)
{
    (void)state;
    uint64_t t = ls_attr_intern("thread", ""), p = ls_attr_intern("process", ""), y = ls_attr_intern("task", "");
    ls_attr_set_process(p);
    assert_int_equal(ls_attr_current(), p);
    ls_attr_set_thread(t);
    assert_int_equal(ls_attr_current(), t);
    ls_attr_py_hook = fake_py_hook;
    py_value = 0;
    assert_int_equal(ls_attr_current(), t);
    py_value = y;
    assert_int_equal(ls_attr_current(), y);
    ls_attr_py_hook = NULL;
    /* another thread has no value of its own: the process's */
    pthread_t th;
    void *got;
    assert_int_equal(pthread_create(&th, NULL, other_thread, NULL), 0);
    pthread_join(th, &got);
    assert_int_equal((uint64_t)(uintptr_t)got, p);
    ls_attr_set_thread(0);
    ls_attr_set_process(0);
    assert_int_equal(ls_attr_current(), 0);
}

static void the_counter_numbers_creations(void **state)
{
    (void)state;
    uint64_t before = ls_seq_now();
    assert_int_equal(ls_seq_next(), before + 1);
    assert_int_equal(ls_seq_next(), before + 2);
    assert_int_equal(ls_seq_now(), before + 2);
}

static int no_symbols(void *pc, ls_sym *out, int max)
{
    (void)pc;
    (void)max;
    memset(out, 0, sizeof *out);
    snprintf(out->module, sizeof out->module, "?");
    return 1;
}

static void groups_count_members_by_context(void **state)
{
    (void)state;
    ls_pyframe f = {"/srv/app/hooks.py", "webhook", 42};
    ls_stack_id st = ls_pystack_intern(&f, 1);
    uint32_t route = ls_attr_intern("POST /webhooks/{id}", "request"), test = ls_attr_intern("t::test_b", "call");
    ls_conn_view c[5];
    memset(c, 0, sizeof c);
    for (int i = 0; i < 5; i++) {
        struct sockaddr_in *in = (struct sockaddr_in *)&c[i].peer;
        in->sin_family = AF_INET;
        in->sin_port = htons(5432);
        in->sin_addr.s_addr = htonl(0x7f000001);
        c[i].peerlen = sizeof *in;
        c[i].fd = c[i].fds[0] = 10 + i;
        c[i].nfds = 1;
        c[i].ino = 100 + (uint64_t)i;
        c[i].created = 1000 + i;
        c[i].idle = -1;
        c[i].pystack = st;
        c[i].seq = (uint64_t)i + 1;
    }
    /* three during the route in requests 1, 2, 2; one in a test; one with no context */
    c[0].attr = route | (1ull << 32);
    c[1].attr = route | (2ull << 32);
    c[2].attr = route | (2ull << 32);
    c[3].attr = test;
    ls_snapshot snap = {c, 5, NULL, 0, 0};
    ls_report_input in = {.kind = LS_REPORT_EXIT, .now = 2000, .snap = &snap, .symbolize = no_symbols};
    ls_model m;
    assert_int_equal(ls_model_build(&m, &in), 0);
    assert_int_equal(m.ngroups, 1);
    const ls_mgroup *g = &m.groups[0];
    assert_int_equal(g->cn, 2);
    const ls_mctx *x = &m.ctxs[g->cfirst];
    assert_string_equal(x[0].label, "POST /webhooks/{id}");
    assert_int_equal(x[0].count, 3);
    assert_int_equal(x[0].instances, 2);
    assert_string_equal(x[1].label, "t::test_b");
    assert_int_equal(x[1].count, 1);
    assert_int_equal(m.nbyctx, 2);
    assert_int_equal(m.byctx[0].count, 3);
    assert_int_equal(m.byctx[0].groups, 1);
    ls_buf t = {0};
    ls_text_context(&t, &x[0]);
    assert_string_equal(t.data, "during POST /webhooks/{id}, 2 requests");
    ls_buf_free(&t);
    ls_text_context(&t, &x[1]);
    assert_string_equal(t.data, "in test t::test_b (call)");
    ls_buf_free(&t);
    ls_render_opts o = {.fold = 1};
    ls_render_text(&t, &m, &o);
    assert_non_null(strstr(t.data, "    3 created during POST /webhooks/{id}, 2 requests\n"));
    assert_non_null(
        strstr(t.data, "Leaks by where they were created:\n     3 during POST /webhooks/{id}, 2 requests\n"));
    ls_buf_free(&t);
    ls_render_json(&t, &m);
    assert_non_null(strstr(t.data, "\"contexts\":[{\"label\":\"POST /webhooks/{id}\",\"phase\":\"request\",\"count\":3,"
                                   "\"requests\":2"));
    assert_non_null(
        strstr(t.data, "\"context\":{\"label\":\"t::test_b\",\"phase\":\"call\",\"instance\":0,\"seq\":4}"));
    ls_buf_free(&t);
    ls_model_free(&m);
}

static void checkout_warning_names_the_request(void **state)
{
    (void)state;
    ls_handle_view h;
    memset(&h, 0, sizeof h);
    h.handle = 0x10;
    h.pool = 0x20;
    h.checked_out = 1;
    h.co_attr = ls_attr_intern("GET /reports/{name}", "request") | (9ull << 32);
    ls_where w = {0};
    ls_render_opts o = {.fold = 1};
    ls_buf b = {0};
    ls_text_checkout_warning(&b, &h, 40, 30, &w, &o);
    assert_non_null(strstr(b.data, "\n    checked out during GET /reports/{name}\n"));
    ls_buf_free(&b);
    h.co_attr = 0;
    ls_text_checkout_warning(&b, &h, 40, 30, &w, &o);
    assert_null(strstr(b.data, "checked out during"));
    ls_buf_free(&b);
}

/* ------------------------------------------------------------------ through the live registry */

static int lfd, port;

static void live_in_keeps_what_was_created_in_the_ranges(void **state)
{
    (void)state;
    port = unit_setup(&lfd);
    int before = unit_connect(port); /* before the test: not its */
    uintptr_t pool = 0x5000, old_client = 0x5100;
    ls_handle_open(LS_DRV_PYTHON, LS_HK_POOL, pool, 0);
    ls_handle_open(LS_DRV_PYTHON, LS_HK_CLIENT, old_client, pool);
    ls_pool_checkout(pool, old_client); /* checked out before the test and still out: not its */
    uint64_t since = ls_seq_now();
    ls_attr_set_thread(ls_attr_intern("suite::test_x", "call"));
    int leaked = unit_connect(port), closed = unit_connect(port);
    uintptr_t new_client = 0x5200;
    ls_pool_checkout(pool, new_client); /* a new client checked out and kept: the test's */
    uintptr_t idle_client = 0x5300;
    ls_pool_checkout(pool, idle_client);
    ls_pool_checkin(pool, idle_client); /* back in the pool: quiet */
    ls_attr_set_thread(0);
    unit_close(closed);
    uint64_t r[2] = {since, 0};
    ls_buf json = {0}, text = {0};
    int leaks = -1;
    assert_int_equal(ls_report_live_in(r, 1, &json, &text, &leaks), 0);
    assert_int_equal(leaks, 2); /* the socket, the new checkout */
    assert_non_null(strstr(text.data, "1 created in test suite::test_x (call)"));
    assert_null(strstr(json.data, "\"0x5100\""));                /* the old checkout is not the test's */
    assert_non_null(strstr(json.data, "\"handle\":\"0x5000\"")); /* its pool: kept as context */
    assert_non_null(strstr(json.data, "\"handle\":\"0x5300\"")); /* idle in it: quiet */
    /* a range that ends before the leaks: nothing */
    uint64_t none[2] = {since, since};
    ls_buf_free(&json);
    ls_buf_free(&text);
    assert_int_equal(ls_report_live_in(none, 1, &json, NULL, &leaks), 0);
    assert_int_equal(leaks, 0);
    ls_buf_free(&json);
    /* the public API says the same */
    char *js = leakshim_live_since(since, &leaks);
    assert_non_null(js);
    assert_int_equal(leaks, 2);
    assert_non_null(strstr(js, "\"label\":\"suite::test_x\""));
    leakshim_free(js);
    assert_int_equal(leakshim_creations(), ls_seq_now());
    unit_close(before);
    unit_close(leaked);
    ls_handle_close(pool);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(intern_gives_one_id_per_label_and_phase),
        cmocka_unit_test(many_labels_survive_growth),
        cmocka_unit_test(current_value_python_then_thread_then_process),
        cmocka_unit_test(the_counter_numbers_creations),
        cmocka_unit_test(groups_count_members_by_context),
        cmocka_unit_test(checkout_warning_names_the_request),
        cmocka_unit_test(live_in_keeps_what_was_created_in_the_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The timeline ring (timeline.c) and the metrics file's contents (metrics.c): bounded memory over
 * a long run with the oldest samples thinned, not dropped; groups past the limit counted as
 * "other"; counts taken from the registry equal what was opened and closed. */
#include "unit.h"

#include "ls_report.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ls_tl_sample at(double t, int live)
{
    ls_tl_sample s;
    memset(&s, 0, sizeof s);
    s.t = t;
    s.live = live;
    return s;
}

/* A million samples (a month at interval=3): never more than LS_TL_CAP kept; the first is still
 * there, times strictly increase, the newest half is every sample, and the step grows with age. */
static void ring_stays_bounded_over_a_long_run(void **state)
{
    (void)state;
    ls_timeline_reset();
    const long total = 1000000;
    size_t most = 0;
    for (long i = 0; i < total; i++) {
        ls_tl_sample s = at((double)i, (int)(i % 1000));
        ls_tl_push(&s);
        if (i % 4099 == 0) {
            size_t n, ng;
            ls_tl_group *g;
            ls_tl_sample *c = ls_timeline_copy(&n, &g, &ng);
            assert_true(n <= LS_TL_CAP);
            most = n > most ? n : most;
            free(c);
            free(g);
        }
    }
    assert_int_equal(most, LS_TL_CAP); /* it filled, and never grew past the cap */
    size_t n, ng;
    ls_tl_group *g;
    ls_tl_sample *c = ls_timeline_copy(&n, &g, &ng);
    assert_non_null(c);
    assert_true(n <= LS_TL_CAP && n >= LS_TL_CAP / 2);
    assert_true(c[0].t == 0.0);                     /* the start of the run is kept */
    assert_true(c[n - 1].t == (double)(total - 1)); /* and the latest sample */
    for (size_t i = 1; i < n; i++)
        assert_true(c[i].t > c[i - 1].t);
    for (size_t i = n - LS_TL_CAP / 2 + 1; i < n; i++) /* the newest half: every sample */
        assert_true(c[i].t - c[i - 1].t == 1.0);
    assert_true(c[1].t - c[0].t > c[n - 1].t - c[n - 2].t); /* old samples: a coarser step */
    free(c);
    free(g);
    ls_timeline_reset();
    c = ls_timeline_copy(&n, &g, &ng);
    assert_null(c);
    assert_int_equal(n, 0);
}

static void groups_past_the_limit_are_other(void **state)
{
    (void)state;
    ls_timeline_reset();
    for (int i = 0; i < 3 * LS_TL_GROUPS; i++) {
        ls_tl_group k = {.stack = (ls_stack_id)(100 + i), .driver = LS_DRV_NONE};
        int slot = ls_tl_group_slot(&k);
        assert_int_equal(slot, i < LS_TL_GROUPS ? i : LS_TL_GROUPS);
        assert_int_equal(ls_tl_group_slot(&k), slot); /* the same key, the same slot */
    }
    ls_tl_group pool = {.stack = 100, .pool = 0x1000, .driver = LS_DRV_NONE};
    assert_int_equal(ls_tl_group_slot(&pool), LS_TL_GROUPS); /* no room left: other */
    size_t n, ng;
    ls_tl_group *g;
    ls_tl_sample *c = ls_timeline_copy(&n, &g, &ng);
    assert_null(c);
    assert_int_equal(ng, LS_TL_GROUPS + 1);
    assert_true(g[LS_TL_GROUPS].other);
    assert_int_equal(g[3].stack, 103);
    free(g);
    ls_timeline_reset();
}

static int line_value(const char *text, const char *prefix, double *v)
{
    const char *p = strstr(text, prefix);
    if (!p)
        return 0;
    *v = strtod(p + strlen(prefix), NULL);
    return 1;
}

/* Counts taken from the registry: what was opened and closed, in total, per group, per driver;
 * the metrics text carries the same numbers. */
static void counts_follow_the_registry(void **state)
{
    (void)state;
    ls_timeline_reset();
    ls_counts k0;
    ls_counts_take(&k0, ls_now(), 30, 1);
    int fds[5];
    for (int i = 0; i < 5; i++)
        fds[i] = unit_connect(unit_port);
    unit_close(fds[4]);
    unit_close(fds[3]);
    ls_counts k;
    ls_counts_take(&k, ls_now(), 30, 1);
    assert_int_equal(k.s.live, k0.s.live + 3);
    assert_int_equal(k.s.created, k0.s.created + 5);
    assert_int_equal(k.closed_by_driver[LS_DRV_NONE], k0.closed_by_driver[LS_DRV_NONE] + 2);
    int in_groups = 0;
    for (int i = 0; i < k.s.ngroups; i++)
        in_groups += k.s.g[i].live;
    assert_int_equal(in_groups + k.s.g[LS_TL_GROUPS].live, k.s.live);
    ls_buf b = {0};
    ls_metrics_render(&b, &k, "unit", 42, 0, 3);
    assert_non_null(b.data);
    double v = -1;
    char want[160];
    snprintf(want, sizeof want,
             "leakshim_open_connections{program=\"unit\",slot=\"0\",database=\"%s\",state=\"in-use\"} ", k.svc[0]);
    assert_true(line_value(b.data, want, &v));
    assert_int_equal((int)v, k.open[0][LS_ST_IN_USE]);
    assert_true(line_value(b.data, "leakshim_leaked_at_exit{program=\"unit\",slot=\"0\"} ", &v));
    assert_int_equal((int)v, 3);
    assert_non_null(strstr(b.data, "leakshim_process_info{program=\"unit\",slot=\"0\",pid=\"42\""));
    ls_buf_free(&b);
    unit_close(fds[0]);
    unit_close(fds[1]);
    unit_close(fds[2]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ring_stays_bounded_over_a_long_run),
        cmocka_unit_test(groups_past_the_limit_are_other),
        cmocka_unit_test(counts_follow_the_registry),
    };
    return cmocka_run_group_tests(tests, unit_group_setup, unit_group_teardown);
}

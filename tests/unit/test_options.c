/* The options parser: good values, bad values (one message each, default kept), the syntax. */
#include "unit.h"

#include <signal.h>
#include <string.h>

static char last_msg[1024];
static int nmsg;
static void collect(const char *msg, void *arg)
{
    (void)arg;
    nmsg++;
    snprintf(last_msg, sizeof last_msg, "%s", msg);
}

static int parse(ls_options *o, const char *s)
{
    nmsg = 0;
    last_msg[0] = 0;
    ls_options_defaults(o);
    return ls_options_parse(o, s, collect, NULL);
}

static int has_port(const ls_options *o, int port)
{
    for (int i = 0; i < o->nports; i++)
        if (port >= o->ports[i].lo && port <= o->ports[i].hi)
            return 1;
    return 0;
}

static void defaults(void **state)
{
    (void)state;
    ls_options o;
    assert_int_equal(parse(&o, NULL), 0);
    assert_string_equal(o.report, "stderr");
    assert_int_equal(o.format, LS_FMT_TEXT);
    assert_int_equal(o.signal, SIGUSR2);
    assert_int_equal(o.exitcode, 0);
    assert_true(o.threshold == 30.0);
    assert_int_equal(o.frames, 32);
    assert_int_equal(o.track, LS_TRACK_DB);
    for (int p = 27017; p <= 27019; p++)
        assert_true(has_port(&o, p));
    assert_true(has_port(&o, 5432) && has_port(&o, 6432) && has_port(&o, 3306) && has_port(&o, 6379) &&
                has_port(&o, 26379));
    assert_false(has_port(&o, 80));
    assert_true(o.npaths >= 3);
}

static void good_values(void **state)
{
    (void)state;
    ls_options o;
    assert_int_equal(parse(&o, "report=/tmp/r.%p:format=both:signal=SIGUSR1:exitcode=23:threshold=2.5:"
                               "frames=8:track=all:verbosity=2:top=3:interval=0.5"),
                     0);
    assert_int_equal(nmsg, 0);
    assert_string_equal(o.report, "/tmp/r.%p");
    assert_int_equal(o.format, LS_FMT_BOTH);
    assert_int_equal(o.signal, SIGUSR1);
    assert_int_equal(o.exitcode, 23);
    assert_true(o.threshold == 2.5);
    assert_int_equal(o.frames, 8);
    assert_int_equal(o.track, LS_TRACK_ALL);
    assert_int_equal(o.verbosity, 2);
    assert_int_equal(o.top, 3);
    assert_true(o.interval == 0.5);
    /* empty items are tolerated, as in ASAN_OPTIONS */
    assert_int_equal(parse(&o, "::exitcode=1::"), 0);
    assert_int_equal(o.exitcode, 1);
}

static void ports_add_and_replace(void **state)
{
    (void)state;
    ls_options o;
    assert_int_equal(parse(&o, "ports=+6000,7000-7002"), 0);
    assert_true(has_port(&o, 6000) && has_port(&o, 7001) && has_port(&o, 5432));
    assert_false(has_port(&o, 7003));
    assert_int_equal(parse(&o, "ports=6000"), 0);
    assert_true(has_port(&o, 6000));
    assert_false(has_port(&o, 5432));
    assert_int_equal(parse(&o, "ports=70000"), 1);
    assert_true(has_port(&o, 5432)); /* default kept */
    assert_non_null(strstr(last_msg, "ports"));
    assert_int_equal(parse(&o, "ports=10-5"), 1);
    assert_int_equal(parse(&o, "ports=abc"), 1);
    assert_int_equal(parse(&o, "paths=+*.mysock"), 0);
    assert_string_equal(o.paths[o.npaths - 1], "*.mysock");
    assert_int_equal(parse(&o, "paths=only.sock"), 0);
    assert_int_equal(o.npaths, 1);
}

static void bad_input_one_line_each(void **state)
{
    (void)state;
    ls_options o;
    assert_int_equal(parse(&o, "format=xml"), 1);
    assert_int_equal(o.format, LS_FMT_TEXT);
    assert_non_null(strstr(last_msg, "'xml'"));
    assert_non_null(strstr(last_msg, "text|json|both"));

    assert_int_equal(parse(&o, "signal=SIGBOGUS"), 1);
    assert_int_equal(o.signal, SIGUSR2);
    assert_non_null(strstr(last_msg, "SIGBOGUS"));
    assert_int_equal(parse(&o, "signal=KILL"), 1); /* cannot be caught */

    assert_int_equal(parse(&o, "nosuchkey=1"), 1);
    assert_non_null(strstr(last_msg, "unknown option 'nosuchkey'"));
    assert_non_null(strstr(last_msg, "exitcode")); /* lists the valid keys */

    assert_int_equal(parse(&o, "exitcode"), 1);
    assert_non_null(strstr(last_msg, "malformed"));

    assert_int_equal(parse(&o, "exitcode=300:threshold=-1:frames=0:verbosity=x"), 4);
    assert_int_equal(nmsg, 4);
    assert_int_equal(o.exitcode, 0);
    assert_true(o.threshold == 30.0);
    assert_int_equal(o.frames, 32);

    /* a bad value after a good one for the same key: back to the default, not the earlier value */
    assert_int_equal(parse(&o, "exitcode=5:exitcode=oops"), 1);
    assert_int_equal(o.exitcode, 0);
    /* good keys around a bad one still apply */
    assert_int_equal(parse(&o, "exitcode=7:bogus:track=all"), 1);
    assert_int_equal(o.exitcode, 7);
    assert_int_equal(o.track, LS_TRACK_ALL);
}

static void signal_names(void **state)
{
    (void)state;
    assert_int_equal(ls_signal_from_name("USR1"), SIGUSR1);
    assert_int_equal(ls_signal_from_name("sigusr2"), SIGUSR2);
    assert_int_equal(ls_signal_from_name("12"), 12);
    assert_int_equal(ls_signal_from_name("none"), 0);
    assert_int_equal(ls_signal_from_name("RTMIN+1"), SIGRTMIN + 1);
    assert_int_equal(ls_signal_from_name("SEGV"), -1);
    assert_int_equal(ls_signal_from_name(""), -1);
    assert_string_equal(ls_signal_name(SIGUSR2), "USR2");
}

static void help_lists_every_key(void **state)
{
    (void)state;
    ls_buf b = {0};
    ls_options_help(&b, 1);
    const char *keys[] = {"report", "format",       "signal",   "exitcode",  "threshold", "frames",   "ports", "paths",
                          "track",  "suppressions", "interval", "verbosity", "top",       "dump_dir", "help"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "| `%s` |", keys[i]);
        assert_non_null(strstr(b.data, want));
    }
    ls_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(good_values),
        cmocka_unit_test(ports_add_and_replace),
        cmocka_unit_test(bad_input_one_line_each),
        cmocka_unit_test(signal_names),
        cmocka_unit_test(help_lists_every_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

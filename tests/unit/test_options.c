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

/* ls_opt as this process started, before any test changed it: the shim's defaults as data. */
static ls_options at_start;
__attribute__((constructor)) static void snapshot_at_start(void)
{
    memcpy(&at_start, &ls_opt, sizeof at_start);
}

/* The defaults written as data in options.c are exactly what parsing the option table's default
 * strings gives, byte for byte (padding included: both start zeroed). */
static void static_defaults_match_table(void **state)
{
    (void)state;
    ls_options parsed;
    ls_options_defaults(&parsed);
    assert_int_equal(at_start.nports, parsed.nports);
    assert_int_equal(at_start.npaths, parsed.npaths);
    assert_true(parsed.nports > 10 && parsed.npaths > 5);
    assert_memory_equal(&at_start, &parsed, sizeof parsed);
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

/* Every message is one printable line: the test of "one message each" for hostile input. */
static void assert_one_printable_line(const char *m)
{
    assert_true(strlen(m) > 0);
    for (const char *p = m; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
}

static void bad_signal(const char *v)
{
    ls_options o;
    char s[512];
    snprintf(s, sizeof s, "signal=%s", v);
    if (parse(&o, s) != 1 || nmsg != 1 || o.signal != SIGUSR2)
        fail_msg("signal=%s accepted (signal %d, %d messages)", v, o.signal, nmsg);
    assert_non_null(strstr(last_msg, "for option 'signal'"));
    assert_one_printable_line(last_msg);
    assert_int_equal(ls_signal_from_name(v), -1);
}

static void signal_strict(void **state)
{
    (void)state;
    /* overflowed (UBSan) and became 33 */
    bad_signal("RTMIN+9223372036854775807");
    bad_signal("RTMIN+18446744073709551650");
    /* reserved by glibc between 31 and SIGRTMIN: accepted, then never installed */
    bad_signal("32");
    bad_signal("33");
    assert_non_null(strstr(last_msg, "reserved"));
    /* wrapped to USR2 through the int cast */
    bad_signal("4294967308");
    bad_signal("99999999999999999999");
    /* strtol skips spaces and accepts signs */
    bad_signal("RTMIN+ 3");
    bad_signal("RTMIN+-1");
    bad_signal("RTMIN++3");
    bad_signal("RTMIN+");
    bad_signal("RTMIN+3 ");
    bad_signal("RTMIN-1");
    bad_signal("RTMAX+1");
    bad_signal("RTMAX-");
    bad_signal("+12");
    bad_signal(" 12");
    bad_signal("12 ");
    bad_signal("0x0c");
    bad_signal("-1");
    bad_signal("USR2 ");
    bad_signal("SIG");
    bad_signal("none ");
    /* out of range, uncatchable, crash signals */
    char v[32];
    snprintf(v, sizeof v, "RTMIN+%d", SIGRTMAX - SIGRTMIN + 1);
    bad_signal(v);
    snprintf(v, sizeof v, "RTMAX-%d", SIGRTMAX - SIGRTMIN + 1);
    bad_signal(v);
    snprintf(v, sizeof v, "%d", SIGRTMAX + 1);
    bad_signal(v);
    bad_signal("9");
    bad_signal("STOP");
    bad_signal("SIGSEGV");
    bad_signal("11");

    /* what is accepted */
    assert_int_equal(ls_signal_from_name("RTMIN+0"), SIGRTMIN);
    assert_int_equal(ls_signal_from_name("rtmin"), SIGRTMIN);
    assert_int_equal(ls_signal_from_name("SIGRTMIN+2"), SIGRTMIN + 2);
    assert_int_equal(ls_signal_from_name("RTMAX"), SIGRTMAX);
    assert_int_equal(ls_signal_from_name("sigrtmax-3"), SIGRTMAX - 3);
    snprintf(v, sizeof v, "RTMIN+%d", SIGRTMAX - SIGRTMIN);
    assert_int_equal(ls_signal_from_name(v), SIGRTMAX);
    snprintf(v, sizeof v, "%d", SIGRTMIN);
    assert_int_equal(ls_signal_from_name(v), SIGRTMIN);
    snprintf(v, sizeof v, "%d", SIGRTMAX);
    assert_int_equal(ls_signal_from_name(v), SIGRTMAX);
    assert_int_equal(ls_signal_from_name("31"), 31);
    assert_int_equal(ls_signal_from_name("0"), 0);
    assert_int_equal(ls_signal_from_name("NONE"), 0);
    assert_int_equal(ls_signal_from_name("SigUsr1"), SIGUSR1);
    assert_int_equal(ls_signal_from_name("PIPE"), SIGPIPE);
    ls_options o;
    assert_int_equal(parse(&o, "signal=RTMIN+3"), 0);
    assert_int_equal(o.signal, SIGRTMIN + 3);
    /* every accepted number has a name that parses back to it (warnings name the signal) */
    for (int s = 1; s <= SIGRTMAX; s++) {
        snprintf(v, sizeof v, "%d", s);
        if (ls_signal_from_name(v) != s) /* refused numbers: 9, 11, 32, 33, ... */
            continue;
        assert_int_equal(ls_signal_from_name(ls_signal_name(s)), s);
    }
    assert_string_equal(ls_signal_name(SIGRTMIN + 3), "RTMIN+3");
}

/* key=value must give exactly one message and leave the key at its default (checked by field). */
static void bad_value(const char *item)
{
    ls_options o, d;
    ls_options_defaults(&d);
    if (parse(&o, item) != 1 || nmsg != 1)
        fail_msg("'%s' gave %d messages", item, nmsg);
    if (memcmp(&o, &d, sizeof o) != 0)
        fail_msg("'%s' changed the options", item);
    assert_non_null(strstr(last_msg, "bad value"));
    assert_one_printable_line(last_msg);
}

static void ints_strict(void **state)
{
    (void)state;
    const char *bad[] = {"exitcode=+5",
                         "exitcode= 5",
                         "exitcode=5 ",
                         "exitcode=-0",
                         "exitcode=0x10",
                         "exitcode=1e2",
                         "exitcode=99999999999999999999",
                         "exitcode=4294967297",
                         "exitcode=18446744073709551617",
                         "exitcode=",
                         "exitcode=256",
                         "frames=65",
                         "frames=+1",
                         "frames=\t1",
                         "verbosity=3",
                         "top=101",
                         "top=-1",
                         "help=2",
                         "help=yes",
                         "exitcode=1.0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        bad_value(bad[i]);
    ls_options o;
    assert_int_equal(parse(&o, "exitcode=007:frames=64:top=0:help=1:verbosity=0"), 0);
    assert_int_equal(o.exitcode, 7);
    assert_int_equal(o.frames, 64);
    assert_int_equal(o.top, 0);
    assert_int_equal(o.help, 1);
    assert_int_equal(o.verbosity, 0);
}

static void doubles_strict(void **state)
{
    (void)state;
    const char *bad[] = {"threshold=nan",
                         "threshold=NAN",
                         "threshold=inf",
                         "threshold=infinity",
                         "threshold=0x1p3",
                         "threshold=0x10",
                         "threshold= 1",
                         "threshold=1 ",
                         "threshold=-0",
                         "threshold=-0.0",
                         "threshold=+1",
                         "threshold=1e3",
                         "threshold=1E-3",
                         "threshold=1,5",
                         "threshold=",
                         "threshold=.",
                         "threshold=1..2",
                         "threshold=1.2.3",
                         "threshold=1000000000.5",
                         "threshold=99999999999999999999",
                         "interval=0.001",
                         "interval=-1",
                         "interval=nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        bad_value(bad[i]);
    ls_options o;
    assert_int_equal(parse(&o, "threshold=0:interval=0"), 0);
    assert_true(o.threshold == 0 && o.interval == 0);
    assert_int_equal(parse(&o, "threshold=.5:interval=0.01"), 0);
    assert_true(o.threshold == 0.5 && o.interval == 0.01);
    assert_int_equal(parse(&o, "threshold=1.:interval=1000000000"), 0);
    assert_true(o.threshold == 1.0 && o.interval == 1e9);
    assert_int_equal(parse(&o, "threshold=0.1:interval=2.25"), 0);
    assert_true(o.threshold == 0.1 && o.interval == 2.25);
    assert_int_equal(parse(&o, "threshold=0030.000"), 0);
    assert_true(o.threshold == 30.0);
    /* digits below a nanosecond are dropped, not refused; a stray character after them is */
    assert_int_equal(parse(&o, "threshold=2.0000000009:interval=0.1234567891"), 0);
    assert_true(o.threshold == 2.0 && o.interval == 0.123456789);
    bad_value("threshold=0.50000000001x");
}

static void ports_and_paths_strict(void **state)
{
    (void)state;
    const char *bad[] = {"ports=+ 6000",
                         "ports=+6000,+7000",
                         "ports=6000, 7000",
                         "ports=6000,-7000",
                         "ports=99999999999999999999",
                         "ports=18446744073709557616",
                         "ports=4294973296",
                         "ports=6000,,7000",
                         "ports=6000,",
                         "ports=,6000",
                         "ports=6000-",
                         "ports=-6000",
                         "ports=0",
                         "ports=0-10",
                         "ports=6000--7000",
                         "ports=6000-7000-8000",
                         "ports=6000 ",
                         "ports=++6000",
                         "ports=0x10",
                         "ports=65536",
                         "ports=1-65536",
                         "paths=a/b.sock",
                         "paths=a,,b",
                         "paths=a,",
                         "paths=,a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        bad_value(bad[i]);

    /* 64 ranges fit, the 65th is refused with a message (not dropped silently) */
    char s[1024] = "ports=";
    for (int i = 0; i < LS_MAX_PORTS; i++)
        snprintf(s + strlen(s), sizeof s - strlen(s), "%s%d", i ? "," : "", 1000 + i);
    ls_options o;
    assert_int_equal(parse(&o, s), 0);
    assert_int_equal(o.nports, LS_MAX_PORTS);
    strcat(s, ",2000");
    bad_value(s);
    assert_non_null(strstr(last_msg, "64"));
    /* + adds to the defaults: too many in total is refused too */
    assert_int_equal(parse(&o, "ports=1-65535"), 0);
    assert_true(has_port(&o, 1) && has_port(&o, 65535));
    assert_int_equal(parse(&o, "ports=+"), 0);
    assert_true(has_port(&o, 5432));
}

static void messages_one_line(void **state)
{
    (void)state;
    ls_options o;
    /* a newline or control character in a value, a key or a malformed item: one escaped line */
    assert_int_equal(parse(&o, "signal=\nUSR1"), 1);
    assert_one_printable_line(last_msg);
    assert_non_null(strstr(last_msg, "'\\nUSR1'"));
    assert_int_equal(parse(&o, "format=te\x01xt\x7f\xc3\xa9"), 1);
    assert_one_printable_line(last_msg);
    assert_non_null(strstr(last_msg, "'te\\x01xt\\x7f\\xc3\\xa9'"));
    assert_int_equal(parse(&o, "bo\r\ngus=1"), 1);
    assert_one_printable_line(last_msg);
    assert_non_null(strstr(last_msg, "unknown option 'bo\\r\\ngus'"));
    assert_int_equal(parse(&o, "just\ta\x1b[2Jkey"), 1);
    assert_one_printable_line(last_msg);
    assert_non_null(strstr(last_msg, "malformed option 'just\\ta\\x1b[2Jkey'"));
    assert_int_equal(parse(&o, "format=a\\b"), 1);
    assert_non_null(strstr(last_msg, "'a\\\\b'")); /* a backslash is escaped too: unambiguous */

    /* long values are cut, with "...", and the message stays short */
    char big[12000];
    memset(big, 0, sizeof big);
    strcpy(big, "format=");
    memset(big + 7, 'x', 5000);
    assert_int_equal(parse(&o, big), 1);
    assert_one_printable_line(last_msg);
    assert_non_null(strstr(last_msg, "xxx...'"));
    assert_true(strlen(last_msg) < 400);
    memset(big + 7, '\n', 5000);
    assert_int_equal(parse(&o, big), 1);
    assert_one_printable_line(last_msg);
    assert_true(strlen(last_msg) < 400);
    /* a value longer than any option can hold: "too long", and the key goes back to its default */
    memset(big, 0, sizeof big);
    strcpy(big, "exitcode=3:paths=");
    memset(big + strlen(big), 'p', 9000);
    strcat(big, ":exitcode=4");
    assert_int_equal(parse(&o, big), 1);
    assert_one_printable_line(last_msg);
    assert_non_null(strstr(last_msg, "too long"));
    assert_non_null(strstr(last_msg, "'paths'"));
    assert_int_equal(o.exitcode, 4);
    assert_true(o.npaths > 3); /* the defaults */
    /* a long unknown key is cut too */
    memset(big, 0, sizeof big);
    memset(big, 'k', 3000);
    strcat(big, "=1");
    assert_int_equal(parse(&o, big), 1);
    assert_one_printable_line(last_msg);
    assert_true(strlen(last_msg) < 400);
}

static void escape_helper(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(ls_escape(out, sizeof out, "a\nb", 3), 4);
    assert_string_equal(out, "a\\nb");
    ls_escape(out, sizeof out, "\x01\\\t\r", 4);
    assert_string_equal(out, "\\x01\\\\\\t\\r");
    /* cut at a whole escape, never inside one, and marked with "..." */
    ls_escape(out, 12, "abcdef\x01\x02\x03\x04", 10);
    assert_string_equal(out, "abcdef...");
    ls_escape(out, 12, "abcdefgh", 8);
    assert_string_equal(out, "abcdefgh");
    ls_escape(out, 12, "abcdefghijklmnop", 16);
    assert_string_equal(out, "abcdefgh...");
}

static void help_lists_every_key(void **state)
{
    (void)state;
    ls_buf b = {0};
    ls_options_help(&b, 1);
    const char *keys[] = {"report", "format", "signal",       "exitcode", "threshold", "frames", "ports",
                          "paths",  "track",  "suppressions", "interval", "verbosity", "top",    "help"};
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
        cmocka_unit_test(signal_strict),
        cmocka_unit_test(ints_strict),
        cmocka_unit_test(static_defaults_match_table),
        cmocka_unit_test(doubles_strict),
        cmocka_unit_test(ports_and_paths_strict),
        cmocka_unit_test(messages_one_line),
        cmocka_unit_test(escape_helper),
        cmocka_unit_test(help_lists_every_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

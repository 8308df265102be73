/* libFuzzer target: LEAKSHIM_OPTIONS parsing on arbitrary bytes. Beyond "no crash, no UB" (ASan,
 * UBSan), every field must end up inside its documented range whatever the input, every problem
 * must be exactly one printable line, and parsing must be deterministic. `make fuzz`. */
#include "ls_internal.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reported on the real stderr: fd 2 may be borrowed or closed (-close_fd_mask=2) by then. */
static int report_fd = 2;
#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            dprintf(report_fd, "fuzz_%s: invariant failed: %s (line %d)\n", "options", #cond, __LINE__);               \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

static int nmsg;

/* The harness's own checks are not coverage: keeps libFuzzer's feedback (and time) on the parser. */
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))

NO_COVERAGE static void check_line(const char *msg, size_t max)
{
    size_t n = strlen(msg);
    CHECK(n > 0 && n < max);
    for (size_t i = 0; i < n; i++)
        CHECK(msg[i] >= 0x20 && msg[i] < 0x7f);
}

NO_COVERAGE static void on_problem(const char *msg, void *arg)
{
    CHECK(arg == &nmsg);
    nmsg++;
    /* ls_warn adds "leakshim: " and cuts at 510: a message must fit whole */
    check_line(msg, 500);
    CHECK(!strncmp(msg, "LEAKSHIM_OPTIONS: ", 18));
}

NO_COVERAGE static void check_str(const char *s, int nonempty)
{
    const char *nul = memchr(s, 0, LS_PATH_LEN);
    CHECK(nul != NULL);
    CHECK(!nonempty || nul > s);
    CHECK(!memchr(s, ':', (size_t)(nul - s))); /* ':' separates options: never inside a value */
}

NO_COVERAGE static void check_signal(int s)
{
    if (s == 0)
        return;
    CHECK(s > 0 && s <= SIGRTMAX);
    CHECK(s < 32 || s >= SIGRTMIN); /* glibc's reserved 32, 33 */
    CHECK(s != SIGKILL && s != SIGSTOP && s != SIGSEGV && s != SIGBUS && s != SIGFPE && s != SIGILL && s != SIGABRT &&
          s != SIGTRAP);
}

NO_COVERAGE static void check_ranges(const ls_options *o)
{
    check_str(o->report, 1);
    CHECK(o->format >= LS_FMT_TEXT && o->format <= LS_FMT_BOTH);
    check_signal(o->signal);
    CHECK(o->exitcode >= 0 && o->exitcode <= 255);
    CHECK(isfinite(o->threshold) && o->threshold >= 0 && o->threshold <= 1e9 && !signbit(o->threshold));
    CHECK(o->frames >= 1 && o->frames <= LS_MAX_FRAMES);
    CHECK(o->nports >= 0 && o->nports <= LS_MAX_PORTS);
    for (int i = 0; i < o->nports; i++)
        CHECK(o->ports[i].lo >= 1 && o->ports[i].lo <= o->ports[i].hi);
    for (int i = o->nports; i < LS_MAX_PORTS; i++) /* unused slots are zero: nothing stale */
        CHECK(o->ports[i].lo == 0 && o->ports[i].hi == 0);
    CHECK(o->npaths >= 0 && o->npaths <= LS_MAX_PATHS);
    for (int i = 0; i < o->npaths; i++) {
        check_str(o->paths[i], 1);
        CHECK(!strchr(o->paths[i], '/') && !strchr(o->paths[i], ','));
    }
    CHECK(o->track == LS_TRACK_DB || o->track == LS_TRACK_ALL);
    check_str(o->suppressions, 0);
    CHECK(isfinite(o->interval) && !signbit(o->interval));
    CHECK(o->interval == 0 || (o->interval >= 0.01 && o->interval <= 1e9));
    CHECK(o->verbosity >= 0 && o->verbosity <= 2);
    CHECK(o->top >= 0 && o->top <= 100);
    CHECK(o->help == 0 || o->help == 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* runs before libFuzzer applies -close_fd_mask=2: keep the real stderr for CHECK */
    int real = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (real >= 0)
        report_fd = real;
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0; /* an environment variable ends at its first NUL: so does the input */

    ls_options o, again;
    ls_options_defaults(&o);
    nmsg = 0;
    int problems = ls_options_parse(&o, s, on_problem, &nmsg);
    CHECK(problems == nmsg); /* one message per problem, no more, no fewer */
    check_ranges(&o);

    /* deterministic, and the count does not depend on the callback */
    ls_options_defaults(&again);
    CHECK(ls_options_parse(&again, s, NULL, NULL) == problems);
    CHECK(!memcmp(&o, &again, sizeof o));

    /* the input as a whole value of each kind of parser */
    int sig = ls_signal_from_name(s);
    CHECK(sig == -1 || sig >= 0);
    if (sig > 0)
        check_signal(sig);

    /* the escaper: one printable line that fits, whatever the bytes (including NULs) */
    char out[64];
    size_t n = ls_escape(out, sizeof out, (const char *)data, size);
    CHECK(n == strlen(out) && n < sizeof out);
    if (n)
        check_line(out, sizeof out);
    CHECK(size == 0 || n > 0);
    free(s);
    return 0;
}

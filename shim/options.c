/* LEAKSHIM_OPTIONS: one table (LSan's LSAN_FLAG model) drives parsing, validation, help=1 and the
 * README's option list (`leakshim options --markdown`). Used by the shim and by tools/leakshim. */
#include "leakshim.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ls_options ls_opt;

#define LS_DEFAULT_PORTS "5432,6432,3306,33060,6379,26379,27017-27019,1433,1521,9042,11211,26257,7687,5984,8529,28015"
#define LS_DEFAULT_PATHS ".s.PGSQL.*,mysqld.sock,mysql.sock,mariadb.sock,redis*.sock,mongodb-*.sock,memcached*.sock"

/* OPT(type, name, default, valid-values, description) */
#define LS_OPTION_TABLE(OPT)                                                                                           \
    OPT(STR, report, "stderr", "stderr|PATH",                                                                          \
        "where reports go; `%p` in PATH expands to the pid; unwritable -> stderr with a warning")                      \
    OPT(FORMAT, format, "text", "text|json|both",                                                                      \
        "report format; `both` writes text to `report` and JSON to `report`.json")                                     \
    OPT(SIGNAL, signal, "USR2", "NAME|NUMBER|none", "signal that dumps a live snapshot")                               \
    OPT(INT, exitcode, "0", "0-255", "exit with this status if database sockets leaked (0 = off)")                     \
    OPT(DOUBLE, threshold, "30", "SECONDS",                                                                            \
        "checked out or idle longer than this is a suspect; live warning once per checkout")                           \
    OPT(INT, frames, "32", "1-64", "native frames captured per stack")                                                 \
    OPT(PORTS, ports, LS_DEFAULT_PORTS, "[+]PORT[-PORT],...",                                                          \
        "TCP peer ports that mark a database socket; a leading `+` adds to the defaults")                              \
    OPT(PATHS, paths, LS_DEFAULT_PATHS, "[+]GLOB,...",                                                                 \
        "Unix socket basenames that mark a database socket; a leading `+` adds to the defaults")                       \
    OPT(TRACK, track, "db", "db|all", "`all` tracks every connected stream socket")                                    \
    OPT(STR, suppressions, "", "PATH", "file of LSan-style patterns (`leak:PATTERN`) matched against frames")          \
    OPT(DOUBLE, interval, "0", "SECONDS", "timeline sample period for live counts (0 = off)")                          \
    OPT(INT, verbosity, "1", "0-2", "0 = reports only, 1 = warnings, 2 = debug lines")                                 \
    OPT(INT, top, "5", "0-100", "rows in the creations-per-stack (churn) table")                                       \
    OPT(STR, dump_dir, "", "DIR",                                                                                      \
        "where signal snapshots are also written for `leakshim dump` (default $TMPDIR or /tmp)")                       \
    OPT(BOOL, help, "0", "0|1", "print this table to stderr at start-up")

struct opt_desc {
    const char *name, *def, *valid, *desc;
};
static const struct opt_desc opt_table[] = {
#define OPT_DESC(type, name, def, valid, desc) {#name, def, valid, desc},
    LS_OPTION_TABLE(OPT_DESC)
#undef OPT_DESC
};
#define NOPTS (sizeof opt_table / sizeof opt_table[0])

static const struct {
    const char *name;
    int sig;
} sig_names[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
    {"ALRM", SIGALRM}, {"TERM", SIGTERM},   {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU}, {"URG", SIGURG},     {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM},
    {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},     {"PWR", SIGPWR},   {"SYS", SIGSYS},
};

/* Signals that cannot be caught or that mean a crash are refused as dump triggers. */
static int sig_allowed(int s)
{
    return s > 0 && s < NSIG && s != SIGKILL && s != SIGSTOP && s != SIGSEGV && s != SIGBUS && s != SIGFPE &&
           s != SIGILL && s != SIGABRT && s != SIGTRAP;
}

int ls_signal_from_name(const char *name)
{
    if (!name || !*name)
        return -1;
    if (!strcasecmp(name, "none") || !strcmp(name, "0"))
        return 0;
    if (isdigit((unsigned char)name[0])) {
        char *end;
        long v = strtol(name, &end, 10);
        return (*end == 0 && sig_allowed((int)v)) ? (int)v : -1;
    }
    const char *n = name;
    if (!strncasecmp(n, "SIG", 3))
        n += 3;
    for (size_t i = 0; i < sizeof sig_names / sizeof sig_names[0]; i++)
        if (!strcasecmp(n, sig_names[i].name))
            return sig_names[i].sig;
    if (!strncasecmp(n, "RTMIN+", 6)) {
        char *end;
        long v = strtol(n + 6, &end, 10);
        if (*end == 0 && v >= 0 && SIGRTMIN + v <= SIGRTMAX)
            return SIGRTMIN + (int)v;
    }
    return -1;
}

const char *ls_signal_name(int sig)
{
    for (size_t i = 0; i < sizeof sig_names / sizeof sig_names[0]; i++)
        if (sig_names[i].sig == sig)
            return sig_names[i].name;
    return sig == 0 ? "none" : "?";
}

/* ---- value parsers: each returns 0 on success, -1 on a bad value (o unchanged for that key) */

static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

static int parse_double(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= 0) || x > 1e9)
        return -1;
    *out = x;
    return 0;
}

static int parse_ports(ls_options *o, const char *v)
{
    ls_port_range tmp[LS_MAX_PORTS];
    int n = 0;
    if (*v == '+') {
        memcpy(tmp, o->ports, sizeof tmp);
        n = o->nports;
        v++;
    }
    while (*v) {
        char *end;
        long lo = strtol(v, &end, 10), hi = lo;
        if (end == v)
            return -1;
        if (*end == '-') {
            const char *h = end + 1;
            hi = strtol(h, &end, 10);
            if (end == h)
                return -1;
        }
        if (lo < 1 || hi > 65535 || lo > hi || n >= LS_MAX_PORTS)
            return -1;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        tmp[n].lo = (uint16_t)lo;
        tmp[n].hi = (uint16_t)hi;
        n++;
        v = end;
    }
    memcpy(o->ports, tmp, sizeof tmp);
    o->nports = n;
    return 0;
}

static int parse_paths(ls_options *o, const char *v)
{
    char tmp[LS_MAX_PATHS][LS_PATH_LEN];
    int n = 0;
    if (*v == '+') {
        memcpy(tmp, o->paths, sizeof tmp);
        n = o->npaths;
        v++;
    }
    while (*v) {
        const char *comma = strchr(v, ',');
        size_t len = comma ? (size_t)(comma - v) : strlen(v);
        if (len == 0 || len >= LS_PATH_LEN || n >= LS_MAX_PATHS)
            return -1;
        memcpy(tmp[n], v, len);
        tmp[n][len] = 0;
        n++;
        v += len + (comma ? 1 : 0);
    }
    memcpy(o->paths, tmp, sizeof tmp);
    o->npaths = n;
    return 0;
}

static int parse_str(char *dst, const char *v)
{
    if (strlen(v) >= LS_PATH_LEN)
        return -1;
    strcpy(dst, v);
    return 0;
}

static int set_STR(ls_options *o, const char *name, const char *v)
{
    if (!strcmp(name, "report"))
        return *v ? parse_str(o->report, v) : -1;
    if (!strcmp(name, "suppressions"))
        return parse_str(o->suppressions, v);
    return parse_str(o->dump_dir, v);
}

#define SETTER(type, name, def, valid, desc) static int set_##name(ls_options *o, const char *v);
LS_OPTION_TABLE(SETTER)
#undef SETTER

static int set_report(ls_options *o, const char *v)
{
    return set_STR(o, "report", v);
}
static int set_suppressions(ls_options *o, const char *v)
{
    return set_STR(o, "suppressions", v);
}
static int set_dump_dir(ls_options *o, const char *v)
{
    return set_STR(o, "dump_dir", v);
}
static int set_format(ls_options *o, const char *v)
{
    static const char *names[] = {"text", "json", "both"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, names[i]))
            return o->format = i, 0;
    return -1;
}
static int set_signal(ls_options *o, const char *v)
{
    int s = ls_signal_from_name(v);
    return s < 0 ? -1 : (o->signal = s, 0);
}
static int set_exitcode(ls_options *o, const char *v)
{
    long x;
    return parse_long(v, 0, 255, &x) ? -1 : (o->exitcode = (int)x, 0);
}
static int set_threshold(ls_options *o, const char *v)
{
    return parse_double(v, &o->threshold);
}
static int set_frames(ls_options *o, const char *v)
{
    long x;
    return parse_long(v, 1, LS_MAX_FRAMES, &x) ? -1 : (o->frames = (int)x, 0);
}
static int set_ports(ls_options *o, const char *v)
{
    return parse_ports(o, v);
}
static int set_paths(ls_options *o, const char *v)
{
    return parse_paths(o, v);
}
static int set_track(ls_options *o, const char *v)
{
    if (!strcmp(v, "db"))
        return o->track = LS_TRACK_DB, 0;
    if (!strcmp(v, "all"))
        return o->track = LS_TRACK_ALL, 0;
    return -1;
}
static int set_interval(ls_options *o, const char *v)
{
    return parse_double(v, &o->interval);
}
static int set_verbosity(ls_options *o, const char *v)
{
    long x;
    return parse_long(v, 0, 2, &x) ? -1 : (o->verbosity = (int)x, 0);
}
static int set_top(ls_options *o, const char *v)
{
    long x;
    return parse_long(v, 0, 100, &x) ? -1 : (o->top = (int)x, 0);
}
static int set_help(ls_options *o, const char *v)
{
    long x;
    return parse_long(v, 0, 1, &x) ? -1 : (o->help = (int)x, 0);
}

typedef int (*setter_fn)(ls_options *, const char *);
static const setter_fn opt_setters[] = {
#define SETTER_PTR(type, name, def, valid, desc) set_##name,
    LS_OPTION_TABLE(SETTER_PTR)
#undef SETTER_PTR
};

void ls_options_defaults(ls_options *o)
{
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < NOPTS; i++)
        opt_setters[i](o, opt_table[i].def);
}

static void valid_keys(char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    for (size_t i = 0; i < NOPTS && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? ", " : "", opt_table[i].name);
}

static void report_err(void (*err)(const char *, void *), const char *msg, void *arg)
{
    if (err)
        err(msg, arg);
}

int ls_options_parse(ls_options *o, const char *s, void (*err)(const char *msg, void *arg), void *arg)
{
    int problems = 0;
    char msg[768], keys[256];
    if (!s)
        return 0;
    while (*s) {
        const char *colon = strchr(s, ':');
        size_t len = colon ? (size_t)(colon - s) : strlen(s);
        char item[LS_PATH_LEN + 64];
        if (len >= sizeof item) {
            snprintf(msg, sizeof msg, "LEAKSHIM_OPTIONS: option '%.40s...' is too long; ignored", s);
            report_err(err, msg, arg);
            problems++;
        } else if (len > 0) {
            memcpy(item, s, len);
            item[len] = 0;
            char *eq = strchr(item, '=');
            if (!eq) {
                snprintf(msg, sizeof msg,
                         "LEAKSHIM_OPTIONS: malformed option '%s' (expected key=value, separated by ':')", item);
                report_err(err, msg, arg);
                problems++;
            } else {
                *eq = 0;
                const char *key = item, *val = eq + 1;
                size_t i;
                for (i = 0; i < NOPTS; i++)
                    if (!strcmp(key, opt_table[i].name))
                        break;
                if (i == NOPTS) {
                    valid_keys(keys, sizeof keys);
                    snprintf(msg, sizeof msg, "LEAKSHIM_OPTIONS: unknown option '%s' (valid: %s)", key, keys);
                    report_err(err, msg, arg);
                    problems++;
                } else if (opt_setters[i](o, val) < 0) {
                    snprintf(msg, sizeof msg,
                             "LEAKSHIM_OPTIONS: bad value '%s' for option '%s' (valid: %s); using the default '%s'",
                             val, key, opt_table[i].valid, opt_table[i].def);
                    report_err(err, msg, arg);
                    problems++;
                    /* the key keeps its default, even if an earlier item had set it */
                    opt_setters[i](o, opt_table[i].def);
                }
            }
        }
        s += len + (colon ? 1 : 0);
    }
    return problems;
}

void ls_options_help(ls_buf *b, int markdown)
{
    if (markdown) {
        ls_buf_puts(b, "| option | default | values | meaning |\n| --- | --- | --- | --- |\n");
        for (size_t i = 0; i < NOPTS; i++) {
            ls_buf_printf(b, "| `%s` | `%s` | `%s` | ", opt_table[i].name, opt_table[i].def, opt_table[i].valid);
            for (const char *p = opt_table[i].desc; *p; p++) /* escape table pipes */
                ls_buf_puts(b, *p == '|' ? "\\|" : (char[2]){*p, 0});
            ls_buf_puts(b, " |\n");
        }
        return;
    }
    ls_buf_puts(b, "LEAKSHIM_OPTIONS=key=value:key=value...\n");
    for (size_t i = 0; i < NOPTS; i++)
        ls_buf_printf(b, "  %-13s %s (default: %s; values: %s)\n", opt_table[i].name, opt_table[i].desc,
                      opt_table[i].def, opt_table[i].valid);
}

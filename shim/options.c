/* LEAKSHIM_OPTIONS: one table (LSan's LSAN_FLAG model) drives parsing, validation, help=1 and the
 * README's option list (`leakshim options --markdown`). Used by the shim and by tools/leakshim. */
#include "ls_internal.h"
#include "ls_suggest.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The defaults of ports= and paths= come from drivers.def: each row adds ",TEXT" and the
 * option table skips the first comma. */
static const char default_ports[] = ""
#define DATABASE_PORT(text, lo, hi, service) "," text
#include "drivers.def"
#undef DATABASE_PORT
    ;
static const char default_paths[] = ""
#define DATABASE_PATH(glob, service) "," glob
#include "drivers.def"
#undef DATABASE_PATH
    ;
#define LS_DEFAULT_PORTS (default_ports + 1)
#define LS_DEFAULT_PATHS (default_paths + 1)

/* OPT(type, name, default, valid-values, description) */
#define LS_OPTION_TABLE(OPT)                                                                                           \
    OPT(STR, report, "stderr", "stderr|PATH",                                                                          \
        "where reports go; `%p` in PATH expands to the pid; unwritable -> stderr with a warning")                      \
    OPT(FORMAT, format, "text", "text|json|both",                                                                      \
        "report format; `both` writes text to `report` and JSON to `report`.json")                                     \
    OPT(SIGNAL, signal, "USR2", "NAME|NUMBER|none", "signal that dumps a live snapshot")                               \
    OPT(INT, exitcode, "0", "0-255",                                                                                   \
        "exit with this status if database sockets leaked and the program would have exited 0 (0 = off)")              \
    OPT(DOUBLE, threshold, "30", "SECONDS",                                                                            \
        "checked out or idle longer than this is a suspect; live warning once per checkout")                           \
    OPT(INT, frames, "32", "1-64", "native frames captured per stack")                                                 \
    OPT(PORTS, ports, LS_DEFAULT_PORTS, "[+]PORT[-PORT],...",                                                          \
        "TCP peer ports that mark a database socket; a leading `+` adds to the defaults")                              \
    OPT(PATHS, paths, LS_DEFAULT_PATHS, "[+]GLOB,...",                                                                 \
        "Unix socket basenames that mark a database socket; a leading `+` adds to the defaults")                       \
    OPT(TRACK, track, "db", "db|all", "`all` tracks every connected stream socket")                                    \
    OPT(STR, suppressions, "", "PATH", "file of LSan-style patterns (`leak:PATTERN`) matched against frames")          \
    OPT(DOUBLE, interval, "1", "SECONDS",                                                                              \
        "timeline sample period for live counts, and metrics file refresh (0 = off)")                                  \
    OPT(INT, verbosity, "1", "0-2", "0 = reports only, 1 = warnings, 2 = debug lines")                                 \
    OPT(INT, top, "5", "0-100", "rows in the creations-per-stack (churn) table")                                       \
    OPT(BOOL, fold, "1", "0|1",                                                                                        \
        "text reports fold library and interpreter frames into one line each (JSON keeps all)")                        \
    OPT(BOOL, help, "0", "0|1", "print this table to stderr at start-up")                                              \
    OPT(STR, metrics, "", "DIR",                                                                                       \
        "Prometheus textfile directory: gauges written every `interval` (node_exporter's textfile collector)")         \
    OPT(CHILDREN, children, "file", "file|report|gate",                                                                \
        "processes a test under the shim starts: `file` = a report only if `report` is a path, status untouched; "     \
        "`report` = report as the parent does, status untouched; `gate` = also `exitcode`")

/* The same defaults as data. The shim's ls_opt starts out holding them, so a process the shim is
 * preloaded into pays nothing to set them: parsing the table's strings called a dozen libc
 * functions, each bound by the loader on first use, about 12,000 instructions in every process.
 * tests/unit/test_options.c checks that parsing the table gives exactly these bytes (ls_opt as
 * a process starts). */
#define DATABASE_PORT(text, lo, hi, service) +1
enum {
    DEFAULT_NPORTS = 0
#include "drivers.def"
};
#undef DATABASE_PORT
#define DATABASE_PATH(glob, service) +1
enum {
    DEFAULT_NPATHS = 0
#include "drivers.def"
};
#undef DATABASE_PATH
ls_options ls_opt = {
    .report = "stderr",
    .format = LS_FMT_TEXT,
    .signal = SIGUSR2,
    .exitcode = 0,
    .threshold = 30,
    .frames = 32,
    .ports =
        {
#define DATABASE_PORT(text, lo, hi, service) {lo, hi},
#include "drivers.def"
#undef DATABASE_PORT
        },
    .nports = DEFAULT_NPORTS,
    .paths =
        {
#define DATABASE_PATH(glob, service) glob,
#include "drivers.def"
#undef DATABASE_PATH
        },
    .npaths = DEFAULT_NPATHS,
    .track = LS_TRACK_DB,
    .suppressions = "",
    .interval = 1,
    .verbosity = 1,
    .top = 5,
    .fold = 1,
    .help = 0,
    .metrics = "",
    .children = LS_CHILD_FILE,
};

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
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},     {"USR1", SIGUSR1},     {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM},     {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD},
    {"CONT", SIGCONT}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},     {"TTOU", SIGTTOU},     {"URG", SIGURG},
    {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},     {"WINCH", SIGWINCH},
    {"IO", SIGIO},     {"PWR", SIGPWR},   {"SYS", SIGSYS},       {"KILL", SIGKILL},     {"STOP", SIGSTOP},
    {"SEGV", SIGSEGV}, {"BUS", SIGBUS},   {"FPE", SIGFPE},       {"ILL", SIGILL},       {"ABRT", SIGABRT},
    {"TRAP", SIGTRAP}, {"POLL", SIGIO},   {"CLD", SIGCHLD},      {"IOT", SIGABRT},
};

/* Why a value was refused: filled by the value parsers, shown after the valid values. */
#define WHY_LEN 128
typedef char why_buf[WHY_LEN];
LS_PRINTF(2, 3) static void WHY(char *why, const char *fmt, ...)
{
    if (!why) /* applying a default: nobody asks why */
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, WHY_LEN, fmt, ap);
    va_end(ap);
}

/* Plain decimal digits only: no sign, no spaces, no base prefix, at least one digit. max is at
 * most 10^9, so the accumulator can never overflow (no strtol: it skips spaces, takes signs and
 * clamps or wraps where we then cast). */
static int parse_digits(const char *v, size_t len, unsigned long max, unsigned long *out)
{
    unsigned long x = 0;
    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (unsigned long)(v[i] - '0');
        if (x > max)
            return -2;
    }
    *out = x;
    return 0;
}

/* A signal the shim can actually install and receive as a dump trigger. glibc keeps 32 and 33
 * for itself (SIGRTMIN is 34 at run time): sigaction on them fails or the handler never runs.
 * Crash signals would turn a crash into a dump, uncatchable ones cannot be installed. */
static int signal_check(unsigned long n, char *why)
{
    int s = (int)n;
    if (n > (unsigned long)SIGRTMAX) {
        WHY(why, "signal numbers end at %d (RTMAX)", SIGRTMAX);
        return -1;
    }
    if (s > 31 && s < SIGRTMIN) {
        WHY(why, "%d is reserved by the C library; real-time signals are %d-%d", s, SIGRTMIN, SIGRTMAX);
        return -1;
    }
    if (s == SIGKILL || s == SIGSTOP) {
        WHY(why, "SIG%s cannot be caught", s == SIGKILL ? "KILL" : "STOP");
        return -1;
    }
    if (s == SIGSEGV || s == SIGBUS || s == SIGFPE || s == SIGILL || s == SIGABRT || s == SIGTRAP) {
        WHY(why, "a crash signal cannot trigger dumps");
        return -1;
    }
    return s;
}

/* none | 0 | decimal number | NAME, SIGNAME (any case) | RTMIN[+N] | RTMAX[-N], N decimal digits. */
static int signal_parse(const char *v, char *why)
{
    unsigned long n;
    if (!v || !*v) {
        WHY(why, "empty");
        return -1;
    }
    if (!strcasecmp(v, "none"))
        return 0;
    if (v[0] >= '0' && v[0] <= '9') {
        int r = parse_digits(v, strlen(v), 1000, &n);
        if (r == -1) {
            WHY(why, "a number must be plain decimal digits");
            return -1;
        }
        if (r) /* more than 1000: refused as out of range, whatever its size */
            n = 1001;
        return n ? signal_check(n, why) : 0;
    }
    const char *name = strncasecmp(v, "SIG", 3) ? v : v + 3;
    for (size_t i = 0; i < sizeof sig_names / sizeof sig_names[0]; i++)
        if (!strcasecmp(name, sig_names[i].name))
            return signal_check((unsigned long)sig_names[i].sig, why);
    int rtmax = !strncasecmp(name, "RTMAX", 5);
    if (rtmax || !strncasecmp(name, "RTMIN", 5)) {
        const char *t = name + 5;
        unsigned long off = 0, span = (unsigned long)(SIGRTMAX - SIGRTMIN);
        int r = *t == (rtmax ? '-' : '+') ? parse_digits(t + 1, strlen(t + 1), 1000, &off) : *t ? -1 : 0;
        if (r == -1) {
            WHY(why, "use RTMIN+N or RTMAX-N, N decimal digits");
            return -1;
        }
        if (r || off > span) {
            WHY(why, "N must be 0-%lu; RTMIN is %d, RTMAX is %d", span, SIGRTMIN, SIGRTMAX);
            return -1;
        }
        return signal_check(rtmax ? (unsigned long)SIGRTMAX - off : (unsigned long)SIGRTMIN + off, why);
    }
    WHY(why, "unknown signal name");
    return -1;
}

int ls_signal_from_name(const char *name)
{
    return signal_parse(name, NULL);
}

/* Real-time signals by offset, so warnings name them (glibc has 31: SIGRTMIN 34 .. SIGRTMAX 64). */
static const char *const rt_names[] = {
    "RTMIN",    "RTMIN+1",  "RTMIN+2",  "RTMIN+3",  "RTMIN+4",  "RTMIN+5",  "RTMIN+6",  "RTMIN+7",
    "RTMIN+8",  "RTMIN+9",  "RTMIN+10", "RTMIN+11", "RTMIN+12", "RTMIN+13", "RTMIN+14", "RTMIN+15",
    "RTMIN+16", "RTMIN+17", "RTMIN+18", "RTMIN+19", "RTMIN+20", "RTMIN+21", "RTMIN+22", "RTMIN+23",
    "RTMIN+24", "RTMIN+25", "RTMIN+26", "RTMIN+27", "RTMIN+28", "RTMIN+29", "RTMIN+30"};

const char *ls_signal_name(int sig)
{
    for (size_t i = 0; i < sizeof sig_names / sizeof sig_names[0]; i++)
        if (sig_names[i].sig == sig)
            return sig_names[i].name;
    if (sig >= SIGRTMIN && sig <= SIGRTMAX && (size_t)(sig - SIGRTMIN) < sizeof rt_names / sizeof rt_names[0])
        return rt_names[sig - SIGRTMIN];
    return sig == 0 ? "none" : "?";
}

size_t ls_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[5] = {'\\', 0, 0, 0, 0};
        size_t n = 2;
        if (c == '\n' || c == '\r' || c == '\t' || c == '\\')
            e[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : '\\';
        else if (c < 0x20 || c >= 0x7f)
            e[1] = 'x', e[2] = hex[c >> 4], e[3] = hex[c & 15], n = 4;
        else
            e[0] = (char)c, n = 1;
        /* room for this escape, and for "..." unless it is the last byte */
        size_t need = n + (i + 1 < len ? 3 : 0);
        if (o + need >= cap) {
            if (o + 3 >= cap) /* cap < 4: no room for the marker */
                break;
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(out + o, e, n);
        o += n;
    }
    out[o] = 0;
    return o;
}

/* ---- value parsers: each returns 0 on success, -1 on a bad value (o unchanged for that key) */

static int parse_long(const char *v, long lo, long hi, long *out, char *why)
{
    unsigned long x;
    int r = parse_digits(v, strlen(v), (unsigned long)hi, &x);
    if (r == -1) {
        WHY(why, "not a plain decimal number");
        return -1;
    }
    if (r || (long)x < lo) {
        WHY(why, "out of range");
        return -1;
    }
    *out = (long)x;
    return 0;
}

/* Seconds: plain decimal (DIGITS[.DIGITS] or .DIGITS) from 0 to 10^9, parsed by hand so that no
 * nan, inf, hex float, exponent, sign or space gets through, and so the host's locale (a decimal
 * comma) cannot change the meaning. Digits past the ninth decimal (below a nanosecond) are
 * dropped. min: the smallest nonzero value accepted (0 = any). */
static int parse_double(const char *v, double min, double *out, char *why)
{
    const char *dot = strchr(v, '.');
    const char *frac = dot ? dot + 1 : v + strlen(v);
    size_t ilen = (size_t)((dot ? dot : frac) - v), flen = strlen(frac), fdigits = flen > 9 ? 9 : flen;
    unsigned long ip = 0, fp = 0, scale = 1;
    for (size_t i = 0; i < flen; i++)
        if (frac[i] < '0' || frac[i] > '9')
            ilen = flen = 0; /* reported below, like an empty value */
    int ri = ilen ? parse_digits(v, ilen, 1000000000UL, &ip) : 0;
    if (ri == -1 || ilen + flen == 0) {
        WHY(why, "not a plain decimal number of seconds");
        return -1;
    }
    if (fdigits)
        parse_digits(frac, fdigits, 999999999UL, &fp); /* all digits: cannot fail */
    for (size_t i = 0; i < fdigits; i++)
        scale *= 10;
    double x = (double)ip + (double)fp / (double)scale;
    if (ri || x > 1e9) {
        WHY(why, "at most 1000000000 seconds");
        return -1;
    }
    if (x > 0 && x < min) {
        WHY(why, "must be 0 (off) or at least %g seconds", min);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_ports(ls_options *o, const char *v, char *why)
{
    ls_port_range tmp[LS_MAX_PORTS];
    int n = 0;
    memset(tmp, 0, sizeof tmp);
    if (*v == '+') {
        memcpy(tmp, o->ports, sizeof tmp);
        n = o->nports;
        v++;
    }
    while (*v) {
        const char *comma = strchr(v, ',');
        size_t len = comma ? (size_t)(comma - v) : strlen(v);
        const char *dash = memchr(v, '-', len);
        size_t llen = dash ? (size_t)(dash - v) : len;
        unsigned long lo, hi;
        int r = parse_digits(v, llen, 65535, &lo);
        if (!r)
            r = dash ? parse_digits(dash + 1, len - llen - 1, 65535, &hi) : (hi = lo, 0);
        if (r || lo < 1 || lo > hi) {
            WHY(why, "each item is PORT or LOW-HIGH, decimal 1-65535, LOW <= HIGH");
            return -1;
        }
        if (n >= LS_MAX_PORTS) {
            WHY(why, "at most %d port ranges in all", LS_MAX_PORTS);
            return -1;
        }
        tmp[n].lo = (uint16_t)lo;
        tmp[n].hi = (uint16_t)hi;
        n++;
        v += len;
        if (comma && !*++v) { /* a trailing comma: an empty last item */
            WHY(why, "empty item");
            return -1;
        }
    }
    memcpy(o->ports, tmp, sizeof tmp);
    o->nports = n;
    return 0;
}

static int parse_paths(ls_options *o, const char *v, char *why)
{
    char tmp[LS_MAX_PATHS][LS_PATH_LEN];
    int n = 0;
    memset(tmp, 0, sizeof tmp);
    if (*v == '+') {
        memcpy(tmp, o->paths, sizeof tmp);
        n = o->npaths;
        v++;
    }
    while (*v) {
        const char *comma = strchr(v, ',');
        size_t len = comma ? (size_t)(comma - v) : strlen(v);
        if (len == 0 || len >= LS_PATH_LEN) {
            WHY(why, len ? "a pattern is longer than %d bytes" : "empty item", LS_PATH_LEN - 1);
            return -1;
        }
        /* matched against the socket path's basename: a '/' could never match */
        if (memchr(v, '/', len)) {
            WHY(why, "patterns match the socket's basename and cannot contain '/'");
            return -1;
        }
        if (n >= LS_MAX_PATHS) {
            WHY(why, "at most %d patterns in all", LS_MAX_PATHS);
            return -1;
        }
        memcpy(tmp[n], v, len);
        tmp[n][len] = 0;
        n++;
        v += len;
        if (comma && !*++v) {
            WHY(why, "empty item");
            return -1;
        }
    }
    memcpy(o->paths, tmp, sizeof tmp);
    o->npaths = n;
    return 0;
}

static int parse_str(char *dst, const char *v, char *why)
{
    size_t n = strlen(v);
    if (n >= LS_PATH_LEN) {
        WHY(why, "longer than %d bytes", LS_PATH_LEN - 1);
        return -1;
    }
    memset(dst, 0, LS_PATH_LEN);
    memcpy(dst, v, n);
    return 0;
}

#define SETTER(type, name, def, valid, desc) static int set_##name(ls_options *o, const char *v, char *why);
LS_OPTION_TABLE(SETTER)
#undef SETTER

static int set_report(ls_options *o, const char *v, char *why)
{
    if (!*v) {
        WHY(why, "empty");
        return -1;
    }
    return parse_str(o->report, v, why);
}
static int set_suppressions(ls_options *o, const char *v, char *why)
{
    return parse_str(o->suppressions, v, why);
}
static int set_metrics(ls_options *o, const char *v, char *why)
{
    return parse_str(o->metrics, v, why);
}
static int set_format(ls_options *o, const char *v, char *why)
{
    static const char *names[] = {"text", "json", "both"};
    (void)why;
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, names[i]))
            return o->format = i, 0;
    return -1;
}
static int set_signal(ls_options *o, const char *v, char *why)
{
    int s = signal_parse(v, why);
    return s < 0 ? -1 : (o->signal = s, 0);
}
static int set_exitcode(ls_options *o, const char *v, char *why)
{
    long x;
    return parse_long(v, 0, 255, &x, why) ? -1 : (o->exitcode = (int)x, 0);
}
static int set_threshold(ls_options *o, const char *v, char *why)
{
    return parse_double(v, 0, &o->threshold, why);
}
static int set_frames(ls_options *o, const char *v, char *why)
{
    long x;
    return parse_long(v, 1, LS_MAX_FRAMES, &x, why) ? -1 : (o->frames = (int)x, 0);
}
static int set_ports(ls_options *o, const char *v, char *why)
{
    return parse_ports(o, v, why);
}
static int set_paths(ls_options *o, const char *v, char *why)
{
    return parse_paths(o, v, why);
}
static int set_track(ls_options *o, const char *v, char *why)
{
    (void)why;
    if (!strcmp(v, "db"))
        return o->track = LS_TRACK_DB, 0;
    if (!strcmp(v, "all"))
        return o->track = LS_TRACK_ALL, 0;
    return -1;
}
static int set_interval(ls_options *o, const char *v, char *why)
{
    /* the reporter thread wakes every `interval`: below 10 ms it would spin, not sample */
    return parse_double(v, 0.01, &o->interval, why);
}
static int set_verbosity(ls_options *o, const char *v, char *why)
{
    long x;
    return parse_long(v, 0, 2, &x, why) ? -1 : (o->verbosity = (int)x, 0);
}
static int set_top(ls_options *o, const char *v, char *why)
{
    long x;
    return parse_long(v, 0, 100, &x, why) ? -1 : (o->top = (int)x, 0);
}
static int set_fold(ls_options *o, const char *v, char *why)
{
    long x;
    return parse_long(v, 0, 1, &x, why) ? -1 : (o->fold = (int)x, 0);
}
static int set_help(ls_options *o, const char *v, char *why)
{
    long x;
    return parse_long(v, 0, 1, &x, why) ? -1 : (o->help = (int)x, 0);
}

static int set_children(ls_options *o, const char *v, char *why)
{
    (void)why;
    static const char *const names[] = {"file", "report", "gate"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, names[i]))
            return o->children = i, 0;
    return -1;
}

typedef int (*setter_fn)(ls_options *, const char *, char *);
static const setter_fn opt_setters[] = {
#define SETTER_PTR(type, name, def, valid, desc) set_##name,
    LS_OPTION_TABLE(SETTER_PTR)
#undef SETTER_PTR
};

void ls_options_defaults(ls_options *o)
{
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < NOPTS; i++)
        opt_setters[i](o, opt_table[i].def, NULL);
}

/* "report, format, ...": the valid keys, for "unknown option" messages (built at compile time). */
#define OPT_KEY(type, name, def, valid, desc) ", " #name
static const char valid_keys[] = LS_OPTION_TABLE(OPT_KEY);
#undef OPT_KEY
#define OPT_NAME(type, name, def, valid, desc) #name,
static const char *const opt_names[] = {LS_OPTION_TABLE(OPT_NAME)};
#undef OPT_NAME

/* Optimal string alignment distance (a swap of two neighbours counts 1), case-insensitive, of
 * words of at most SUGGEST_MAX bytes; three rows of bytes, so the constructor's stack barely
 * notices it. */
#define SUGGEST_MAX 64
static unsigned edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    unsigned char rows[3][SUGGEST_MAX + 1], *pp = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = (unsigned char)j;
    for (size_t i = 1; i <= la; i++) {
        int ca = tolower((unsigned char)a[i - 1]);
        cur[0] = (unsigned char)i;
        for (size_t j = 1; j <= lb; j++) {
            int cb = tolower((unsigned char)b[j - 1]);
            unsigned best = prev[j - 1] + (unsigned)(ca != cb);
            if (prev[j] + 1u < best)
                best = prev[j] + 1u;
            if (cur[j - 1] + 1u < best)
                best = cur[j - 1] + 1u;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) && tolower((unsigned char)a[i - 2]) == cb &&
                pp[j - 2] + 1u < best)
                best = pp[j - 2] + 1u;
            cur[j] = (unsigned char)best;
        }
        unsigned char *t = pp;
        pp = prev, prev = cur, cur = t;
    }
    return prev[lb];
}

const char *ls_suggest(const char *word, size_t len, const char *const *names, size_t n)
{
    const char *best = NULL, *prefix_of = NULL;
    unsigned best_d = ~0u;
    int prefixes = 0;
    if (!word || len == 0 || len > SUGGEST_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t ln = strlen(names[i]);
        if (ln > SUGGEST_MAX)
            continue;
        if (len >= 3 && len < ln && !strncasecmp(word, names[i], len) && !prefixes++)
            prefix_of = names[i];
        unsigned d = edit_distance(word, len, names[i], ln), limit = ln <= 5 ? 1 : ln <= 8 ? 2 : 3;
        if (d <= limit && d < len && d < best_d)
            best = names[i], best_d = d;
    }
    return best ? best : prefixes == 1 ? prefix_of : NULL;
}

/* What exitcode will be once the items after this one (rest) are read: is the leak gate on? */
static long exitcode_after(const ls_options *o, const char *rest)
{
    long code = o->exitcode;
    while (*rest) {
        const char *colon = strchr(rest, ':');
        size_t len = colon ? (size_t)(colon - rest) : strlen(rest);
        if (len >= 9 && !memcmp(rest, "exitcode=", 9)) {
            char v[16] = "";
            if (len - 9 < sizeof v)
                memcpy(v, rest + 9, len - 9);
            if (len - 9 >= sizeof v || parse_long(v, 0, 255, &code, NULL))
                code = 0; /* a bad value puts the default back, as parse_item does */
        }
        rest += len + (colon ? 1 : 0);
    }
    return code;
}

/* The longest value any option can hold: LS_MAX_PATHS patterns of LS_PATH_LEN - 1 bytes, commas
 * and a leading '+'. A longer one is refused before it is copied. */
#define VALUE_MAX (LS_MAX_PATHS * LS_PATH_LEN + 1)
/* Echoed user text is escaped (one line, printable) and cut to this many bytes. */
#define ECHO_MAX 100

/* One key=value item (not NUL-terminated, len > 0); rest: the items after it. Returns 1 if it was
 * a problem (reported). */
static int parse_item(ls_options *o, const char *s, size_t len, const char *rest, void (*err)(const char *, void *),
                      void *arg)
{
    char msg[768], shown[ECHO_MAX];
    const char *eq = memchr(s, '=', len);
    if (!eq) {
        if (!err) /* only counted: no message to format */
            return 1;
        ls_escape(shown, sizeof shown, s, len);
        snprintf(msg, sizeof msg, "LEAKSHIM_OPTIONS: malformed option '%s' (expected key=value, separated by ':')",
                 shown);
        err(msg, arg);
        return 1;
    }
    size_t klen = (size_t)(eq - s), vlen = len - klen - 1, i;
    for (i = 0; i < NOPTS; i++)
        if (strlen(opt_table[i].name) == klen && !memcmp(s, opt_table[i].name, klen))
            break;
    if (i == NOPTS) {
        if (!err)
            return 1;
        /* A misspelt key is most likely the one meant: name it; and a misspelt exitcode switches
         * the CI gate off, which must not pass as one more warning. */
        const char *meant = ls_suggest(s, klen, opt_names, NOPTS);
        char hint[64] = "";
        if (meant)
            snprintf(hint, sizeof hint, ", did you mean '%s'?", meant);
        int gate_off = meant && !strcmp(meant, "exitcode") && exitcode_after(o, rest) == 0;
        ls_escape(shown, sizeof shown, s, klen);
        snprintf(msg, sizeof msg, "LEAKSHIM_OPTIONS: unknown option '%s'%s (valid: %s)%s", shown, hint, valid_keys + 2,
                 gate_off ? "; exitcode is not set: leaks will NOT fail this run" : "");
        err(msg, arg);
        return 1;
    }
    why_buf why = "";
    int bad = 1;
    if (vlen > VALUE_MAX) {
        WHY(why, "too long (%zu bytes)", vlen);
    } else {
        char *val = malloc(vlen + 1);
        if (!val) {
            WHY(why, "out of memory");
        } else {
            memcpy(val, eq + 1, vlen);
            val[vlen] = 0;
            bad = opt_setters[i](o, val, err ? why : NULL) < 0;
            free(val);
        }
    }
    if (!bad)
        return 0;
    /* the key keeps its default, even if an earlier item had set it */
    opt_setters[i](o, opt_table[i].def, NULL);
    if (!err)
        return 1;
    ls_escape(shown, sizeof shown, eq + 1, vlen);
    snprintf(msg, sizeof msg,
             "LEAKSHIM_OPTIONS: bad value '%s' for option '%s'%s%s (valid: %s); using the default '%s'", shown,
             opt_table[i].name, why[0] ? ": " : "", why, opt_table[i].valid, opt_table[i].def);
    err(msg, arg);
    return 1;
}

int ls_options_parse(ls_options *o, const char *s, void (*err)(const char *msg, void *arg), void *arg)
{
    int problems = 0;
    if (!s)
        return 0;
    while (*s) {
        const char *colon = strchr(s, ':');
        size_t len = colon ? (size_t)(colon - s) : strlen(s);
        if (len > 0) /* empty items are tolerated, as in ASAN_OPTIONS */
            problems += parse_item(o, s, len, s + len, err, arg);
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

/* Suppressions: LSan's `leak:PATTERN` file, parsed from a buffer (so the fuzzer needs no files)
 * into a growable list of fnmatch globs, matched against the frames of a leak group's stack at
 * report time. A suppression hides a leak, so the parser refuses what it cannot honour exactly
 * (an empty pattern would hide every leak; a line cut at a buffer size would become a pattern of
 * its own) and says so in one warning line per file, however wrong the file is. Runs in the
 * constructor, the reporter thread or atexit: never in a signal handler. */
#include "ls_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct supp {
    char *glob; /* fnmatch form: "*PATTERN*" without the anchors */
    char *text; /* as written (after "leak:"), same allocation */
} supp;

#define STR_(x) #x
#define STR(x) STR_(x)

static supp *supps;
static int nsupp, capsupp;
static pthread_mutex_t supp_lock = PTHREAD_MUTEX_INITIALIZER;

/* Why p[0..n) cannot be a pattern, or NULL. */
static const char *pattern_problem(const char *p, size_t n)
{
    const char *c = p;
    size_t core = n;
    if (core && c[0] == '^')
        c++, core--;
    if (core && c[core - 1] == '$')
        core--;
    if (!core)
        return "empty pattern: it would suppress every leak";
    if (n > LS_SUPP_MAX_PATTERN)
        return "pattern longer than " STR(LS_SUPP_MAX_PATTERN) " bytes";
    size_t bs = 0;
    while (bs < core && c[core - 1 - bs] == '\\')
        bs++;
    if (bs % 2) /* it would escape the '*' we append, or end the glob in the middle of an escape */
        return "pattern ends with a lone backslash";
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f)
            return "control character in pattern";
    return NULL;
}

/* p[0..n) passed pattern_problem(). LSan semantics: matches anywhere unless anchored. */
static int add_checked(const char *p, size_t n)
{
    char *mem = malloc(2 * n + 4);
    if (!mem)
        return -1;
    const char *c = p;
    size_t core = n, o = 0;
    int start = core && c[0] == '^';
    if (start)
        c++, core--;
    int end = core && c[core - 1] == '$';
    core -= (size_t)end;
    if (!start)
        mem[o++] = '*';
    memcpy(mem + o, c, core);
    o += core;
    if (!end)
        mem[o++] = '*';
    mem[o++] = 0;
    char *text = mem + o;
    memcpy(text, p, n);
    text[n] = 0;

    pthread_mutex_lock(&supp_lock);
    if (nsupp == capsupp) {
        int cap = capsupp ? capsupp * 2 : 32;
        supp *g = realloc(supps, (size_t)cap * sizeof *g);
        if (!g) {
            pthread_mutex_unlock(&supp_lock);
            free(mem);
            return -1;
        }
        supps = g;
        capsupp = cap;
    }
    supps[nsupp].glob = mem;
    supps[nsupp].text = text;
    nsupp++;
    pthread_mutex_unlock(&supp_lock);
    return 0;
}

int ls_suppressions_add(const char *pattern)
{
    size_t n = strlen(pattern);
    return pattern_problem(pattern, n) ? -1 : add_checked(pattern, n);
}

void ls_suppressions_clear(void)
{
    pthread_mutex_lock(&supp_lock);
    for (int i = 0; i < nsupp; i++)
        free(supps[i].glob);
    free(supps);
    supps = NULL;
    nsupp = capsupp = 0;
    pthread_mutex_unlock(&supp_lock);
}

int ls_suppressions_count(void)
{
    pthread_mutex_lock(&supp_lock);
    int n = nsupp;
    pthread_mutex_unlock(&supp_lock);
    return n;
}

const char *ls_suppressions_pattern(int i)
{
    pthread_mutex_lock(&supp_lock);
    const char *t = i >= 0 && i < nsupp ? supps[i].text : NULL;
    pthread_mutex_unlock(&supp_lock);
    return t;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int ls_suppressions_parse(const char *data, size_t len, const char *name)
{
    char shown_name[128], shown[104];
    const char *nul = memchr(data, 0, len);
    ls_escape(shown_name, sizeof shown_name, name ? name : "", name ? strlen(name) : 0);
    if (nul) {
        ls_warn("suppressions file '%s' is not a text file (NUL byte at offset %zu); no suppressions from it",
                shown_name, (size_t)(nul - data));
        return -1;
    }
    int added = 0, bad = 0, lineno = 0, first_lineno = 0;
    const char *first = NULL, *first_why = NULL;
    size_t first_len = 0;
    const char *p = data, *end = data + len;
    while (p < end) {
        /* lines of any length: a line is never cut, so its tail never becomes a pattern */
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *s = p, *e = nl ? nl : end;
        p = nl ? nl + 1 : end;
        lineno++;
        while (s < e && is_blank(*s))
            s++;
        while (e > s && is_blank(e[-1]))
            e--;
        if (s == e || *s == '#')
            continue;
        const char *why;
        if (e - s < 5 || memcmp(s, "leak:", 5)) {
            why = "not leak:PATTERN";
        } else {
            const char *q = s + 5;
            while (q < e && is_blank(*q))
                q++;
            why = pattern_problem(q, (size_t)(e - q));
            if (!why && add_checked(q, (size_t)(e - q)) < 0)
                why = "out of memory";
        }
        if (!why) {
            added++;
        } else if (!bad++) {
            first = s, first_len = (size_t)(e - s), first_lineno = lineno, first_why = why;
        }
    }
    if (bad) {
        ls_escape(shown, sizeof shown, first, first_len);
        ls_warn("suppressions file '%s': %d bad line%s ignored (each line is leak:PATTERN or a # comment); "
                "first at line %d (%s): '%s'",
                shown_name, bad, bad == 1 ? "" : "s", first_lineno, first_why, shown);
    }
    return added;
}

int ls_suppressions_load(const char *path)
{
    char shown[128];
    ls_escape(shown, sizeof shown, path, strlen(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ls_warn("cannot read suppressions file '%s': %s; no suppressions", shown, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        ls_sys_close(fd);
        ls_warn("cannot read suppressions file '%s': it is a directory; no suppressions", shown);
        return -1;
    }
    /* Read to the end (a FIFO or /proc file has no size), but never more than the cap: a
     * character device such as /dev/zero would otherwise never end. */
    size_t cap =
        S_ISREG(st.st_mode) && st.st_size > 0 && st.st_size <= LS_SUPP_MAX_FILE ? (size_t)st.st_size + 1 : 4096;
    size_t len = 0;
    char *buf = malloc(cap);
    int err = buf ? 0 : ENOMEM;
    while (!err && len <= LS_SUPP_MAX_FILE) {
        if (len == cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                err = ENOMEM;
                break;
            }
            buf = b, cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            err = errno;
        else if (n == 0)
            break;
        else
            len += (size_t)n;
    }
    ls_sys_close(fd);
    int r = -1;
    if (err)
        ls_warn("cannot read suppressions file '%s': %s; no suppressions", shown, strerror(err));
    else if (len > LS_SUPP_MAX_FILE)
        ls_warn("cannot read suppressions file '%s': larger than %d bytes; no suppressions", shown, LS_SUPP_MAX_FILE);
    else
        r = ls_suppressions_parse(buf, len, path);
    free(buf);
    return r;
}

/* Caller holds supp_lock. */
static int match_locked(const char *s)
{
    if (!s || !*s)
        return 0;
    for (int i = 0; i < nsupp; i++)
        if (!fnmatch(supps[i].glob, s, 0))
            return 1;
    return 0;
}

int ls_suppressions_match(const char *name)
{
    pthread_mutex_lock(&supp_lock);
    int r = match_locked(name);
    pthread_mutex_unlock(&supp_lock);
    return r;
}

/* Symbolizes outside the lock, so the lock is only ever held for a few fnmatch calls. */
int ls_stack_suppressed(ls_stack_id id)
{
    const ls_stack *st = ls_stack_get(id);
    if (!st || !ls_suppressions_count())
        return 0;
    for (int i = 0; i < st->n; i++) {
        int hit;
        if (st->is_py) {
            pthread_mutex_lock(&supp_lock);
            hit = match_locked(st->pyframes[i].file) || match_locked(st->pyframes[i].func);
            pthread_mutex_unlock(&supp_lock);
        } else {
            ls_sym sym;
            ls_symbolize(st->frames[i], &sym);
            pthread_mutex_lock(&supp_lock);
            hit = match_locked(sym.symbol) || match_locked(sym.module);
            pthread_mutex_unlock(&supp_lock);
        }
        if (hit)
            return 1;
    }
    return 0;
}

/* atfork prepare/parent/child: a fork while another thread matches patterns must not leave the
 * child with the lock held. */
void ls_suppressions_atfork(int phase)
{
    ls_mutex_atfork(&supp_lock, phase);
}

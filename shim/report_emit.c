/* Report destinations and orchestration: the only part of the report engine that reads the
 * process (registry snapshot, creation counts, timeline, /proc/self) and writes anything. It
 * builds the model (report_model.c), renders only the formats it will write (report_text.c,
 * report_json.c) and sends them: the exit report, the `kill -USR2` snapshot, `leakshim dump`'s
 * private channel and the live checkout warnings. Runs in the reporter thread (which has an fd
 * table of its own: host fds are reached through ls_write_host / ls_host_fd), in atexit or in
 * Python's atexit; never in a signal handler. */
#include "ls_report.h"
#include "ls_outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ inputs */

#define CMDLINE_MAX 32768 /* bytes of the command line kept (the header shows the first few hundred) */
#define ARGV_MAX 256

typedef struct inputs {
    ls_snapshot snap;
    ls_report_input in;
    ls_created *created;
    ls_tl_sample *timeline;
    ls_tl_group *tl_groups;
    char exe[LS_PATH_LEN], cwd[LS_PATH_LEN];
    char *cmdline;
    const char *argv[ARGV_MAX];
} inputs;

/* When the process started (realtime): /proc/self/stat's start time after boot, plus boot time. */
static double start_time(void)
{
    char st[1024], ps[4096];
    ssize_t n = ls_read_file("/proc/self/stat", st, sizeof st - 1), m = ls_read_file("/proc/stat", ps, sizeof ps - 1);
    if (n <= 0 || m <= 0)
        return 0;
    st[n] = ps[m] = 0;
    const char *p = strrchr(st, ')'); /* the command name may hold spaces and parentheses */
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    const char *bt = strstr(ps, "\nbtime ");
    long tck = sysconf(_SC_CLK_TCK);
    if (!p || !bt || tck <= 0)
        return 0;
    return strtod(bt + 7, NULL) + strtod(p + 1, NULL) / (double)tck;
}

static void process_facts(inputs *x)
{
    ls_proc *p = &x->in.proc;
    p->pid = (int)getpid();
    p->ppid = (int)getppid();
    p->started = start_time();
    p->attached = ls_attached_at;
    ssize_t n = readlink("/proc/self/exe", x->exe, sizeof x->exe - 1);
    x->exe[n > 0 ? n : 0] = 0;
    p->exe = x->exe;
    p->cwd = getcwd(x->cwd, sizeof x->cwd) ? x->cwd : NULL;
    x->cmdline = malloc(CMDLINE_MAX + 1);
    n = x->cmdline ? ls_read_file("/proc/self/cmdline", x->cmdline, CMDLINE_MAX) : -1;
    for (ssize_t i = 0; n > 0 && i < n && p->argc < ARGV_MAX; i += (ssize_t)strlen(x->cmdline + i) + 1) {
        x->cmdline[n] = 0;
        x->argv[p->argc++] = x->cmdline + i;
    }
    p->argv = x->argv;
}

/* Creations counted per stack over the whole run (the churn table). */
static ls_created *creations(size_t *n)
{
    size_t total = ls_stack_total(), k = 0;
    ls_created *c = malloc((total ? total : 1) * sizeof *c);
    for (ls_stack_id id = 1; c && id <= total; id++) {
        const ls_stack *st = ls_stack_get(id);
        if (st && st->created)
            c[k++] = (ls_created){id, st->created};
    }
    *n = k;
    return c;
}

/* The local address, for the reports that show it (JSON, `dump --sockets`). */
static void fill_local(ls_snapshot *s)
{
    for (size_t i = 0; i < s->nconns; i++) {
        ls_conn_view *c = &s->conns[i];
        if (c->locallen)
            continue; /* the registry filled it */
        socklen_t len = sizeof c->local;
        int h = ls_host_fd(c->fd);
        if (h >= 0 && getsockname(h, (struct sockaddr *)&c->local, &len) == 0)
            c->locallen = len;
        ls_host_fd_done(c->fd, h);
    }
}

static int gather(inputs *x, int kind, int all_stacks, int locals)
{
    memset(x, 0, sizeof *x);
    if (ls_registry_snapshot(&x->snap, kind == LS_REPORT_SNAPSHOT ? 2 : 1) < 0)
        return -1;
    if (locals)
        fill_local(&x->snap);
    ls_report_input *in = &x->in;
    in->kind = kind;
    in->now = ls_now();
    in->threshold = ls_opt.threshold;
    in->snap = &x->snap;
    in->created = x->created = creations(&in->ncreated);
    in->timeline = x->timeline = ls_timeline_copy(&in->ntimeline, &x->tl_groups, &in->ntl_groups);
    in->tl_groups = x->tl_groups;
    in->all_stacks = all_stacks;
    in->symbolize = ls_symbolize_frames;
    process_facts(x);
    return 0;
}

static void inputs_free(inputs *x)
{
    ls_registry_snapshot_free(&x->snap);
    free(x->created);
    free(x->timeline);
    free(x->tl_groups);
    free(x->cmdline);
}

static ls_render_opts render_opts(int kind)
{
    ls_render_opts o = {.fold = ls_opt.fold, .top = ls_opt.top, .verbose = ls_opt.verbosity >= 2};
    /* An exit report asked for by path is read in full: the churn table even with nothing to fix. */
    if (kind == LS_REPORT_EXIT && strcmp(ls_opt.report, "stderr"))
        o.verbose = 1;
    return o;
}

/* Builds a report into text and/or json (either may be NULL: only what is asked is rendered). */
static int build(ls_buf *text, ls_buf *json, int kind, int sockets, int *leaks_out, int exit_rule)
{
    inputs x;
    ls_model m;
    int leaks = 0;
    if (gather(&x, kind, json != NULL, json != NULL || sockets) < 0 || ls_model_build(&m, &x.in) < 0) {
        if (text)
            ls_buf_puts(text, "leakshim: out of memory while building the report\n");
        inputs_free(&x);
        if (leaks_out)
            *leaks_out = 0;
        return -1;
    }
    leaks = m.sum.leaks;
    /* Quiet by default (LeakSanitizer's rule): nothing leaked, nothing written at exit, unless
     * the report was asked for by path or with verbosity=2. */
    int write = !exit_rule || leaks > 0 || strcmp(ls_opt.report, "stderr") || ls_opt.verbosity >= 2;
    if (write && text) {
        ls_render_opts o = render_opts(kind);
        o.sockets = sockets;
        ls_render_text(text, &m, &o);
    }
    if (write && json)
        ls_render_json(json, &m);
    ls_model_free(&m);
    inputs_free(&x);
    if (leaks_out)
        *leaks_out = leaks;
    return 0;
}

void ls_report_build(ls_buf *text, ls_buf *json, int kind, int *leaks_out)
{
    build(text, json, kind, 0, leaks_out, 0);
}

/* ------------------------------------------------------------------ destinations */

static void expand_path(const char *pat, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = pat; *p && o + 1 < cap; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            o += (size_t)snprintf(out + o, cap - o, "%d", (int)getpid());
            p++;
        } else
            out[o++] = *p;
    }
    out[o < cap ? o : cap - 1] = 0;
}

/* Writes b to the report destination (suffix appended to the path). The file is opened by
 * ls_out_open's rules (private, never through a symlink, never someone else's file); on any
 * failure, one line naming the path and the reason, and the report goes to stderr: a report is
 * never silently lost. */
static void emit(const ls_buf *b, const char *suffix)
{
    if (!b->data || !b->len)
        return;
    if (!strcmp(ls_opt.report, "stderr")) {
        ls_write_host(2, b->data, b->len);
        return;
    }
    char path[LS_PATH_LEN + 32], base[LS_PATH_LEN + 16], why[256];
    expand_path(ls_opt.report, base, sizeof base);
    snprintf(path, sizeof path, "%s%s", base, suffix);
    int owned = 0;
    int fd = ls_out_open(path, &owned, why, sizeof why);
    /* not owned: one of the host's own fds (/dev/stderr, /proc/self/fd/N) */
    if (fd >= 0 && (owned ? ls_write_all(fd, b->data, b->len) : ls_write_host(fd, b->data, b->len)) < 0)
        snprintf(why, sizeof why, "write: %s", strerror(errno));
    else if (fd >= 0)
        why[0] = 0;
    if (why[0]) {
        ls_warn("cannot write report to '%s': %s; writing it to stderr instead", path, why);
        if (fd != 2)
            ls_write_host(2, b->data, b->len);
    }
    if (fd >= 0 && owned)
        ls_sys_close(fd);
}

/* format=both: text to the destination, JSON to destination.json; a destination that is one of
 * the process's fds (stderr, /dev/stdout, /dev/fd/N) takes both. */
static void emit_report(ls_buf *text, ls_buf *json)
{
    if (ls_opt.format == LS_FMT_TEXT)
        emit(text, "");
    else if (ls_opt.format == LS_FMT_JSON)
        emit(json, "");
    else {
        int one_fd = !strcmp(ls_opt.report, "stderr") || ls_out_fd_of(ls_opt.report) >= 0;
        emit(text, "");
        emit(json, one_fd ? "" : ".json");
    }
}

/* ------------------------------------------------------------------ the reports */

static int exit_done;
static int exit_leaks = -1;

int ls_exit_leaks(void)
{
    return __atomic_load_n(&exit_leaks, __ATOMIC_ACQUIRE);
}

/* Nothing was ever recorded and the exit report would be the quiet one (stderr, verbosity < 2):
 * it would say nothing, so nothing needs building (most processes a suite starts under the shim).
 * No libc call: the exit path of every such process runs it. */
int ls_report_exit_says_nothing(void)
{
    return ls_same_str(ls_opt.report, "stderr") && !ls_registry_ever_tracked() && ls_opt.verbosity < 2;
}

/* Only the formats that will be written are built: format=text builds no JSON. */
int ls_report_exit(void)
{
    if (__atomic_exchange_n(&exit_done, 1, __ATOMIC_ACQ_REL))
        return ls_exit_leaks() > 0 ? ls_exit_leaks() : 0;
    if (ls_report_exit_says_nothing()) {
        __atomic_store_n(&exit_leaks, 0, __ATOMIC_RELEASE);
        return 0;
    }
    ls_buf text = {0}, json = {0};
    int leaks = 0;
    /* A child a test started (children=file): never into a stderr the test may be reading. */
    int quiet = ls_opt.children == LS_CHILD_FILE && !strcmp(ls_opt.report, "stderr") && ls_suite_child();
    build(!quiet && ls_opt.format != LS_FMT_JSON ? &text : NULL, !quiet && ls_opt.format != LS_FMT_TEXT ? &json : NULL,
          LS_REPORT_EXIT, 0, &leaks, 1);
    emit_report(&text, &json);
    ls_buf_free(&text);
    ls_buf_free(&json);
    __atomic_store_n(&exit_leaks, leaks, __ATOMIC_RELEASE);
    ls_metrics_remove(); /* metrics=DIR: a process that has exited has no gauges */
    return leaks;
}

void ls_report_reset_after_fork(void)
{
    exit_done = 0;
    exit_leaks = -1;
    ls_timeline_reset();
    ls_metrics_after_fork();
}

/* `kill -USR2`: the snapshot goes to the report destination, in the report's format(s). */
void ls_report_snapshot(void)
{
    ls_buf text = {0}, json = {0};
    build(ls_opt.format != LS_FMT_JSON ? &text : NULL, ls_opt.format != LS_FMT_TEXT ? &json : NULL, LS_REPORT_SNAPSHOT,
          0, NULL, 0);
    emit_report(&text, &json);
    ls_buf_free(&text);
    ls_buf_free(&json);
}

/* `leakshim dump`: one format, into b (sent over the private channel, never to a file). */
void ls_report_snapshot_to(ls_buf *b, int json, int sockets)
{
    build(json ? NULL : b, json ? b : NULL, LS_REPORT_SNAPSHOT, sockets, NULL, 0);
}

/* Live warnings (HikariCP's leak detection): one line per checkout that outlives threshold. */
void ls_report_check_thresholds(void)
{
    if (!ls_registry_checked_out())
        return;
    ls_snapshot s;
    if (ls_registry_snapshot(&s, 0) < 0)
        return;
    double now = ls_now();
    ls_render_opts o = render_opts(LS_REPORT_SNAPSHOT);
    for (size_t i = 0; i < s.nhandles; i++) {
        const ls_handle_view *h = &s.handles[i];
        if (!ls_checkout_overdue(h, now, ls_opt.threshold) || !ls_checkout_mark_warned(h->handle, h->checkout_time))
            continue;
        ls_mstack py, nat;
        ls_mstack_resolve(&py, h->co_pystack, ls_symbolize_frames);
        ls_mstack_resolve(&nat, h->co_stack, ls_symbolize_frames);
        ls_where w = ls_where_of(&py, &nat);
        ls_buf b = {0};
        ls_text_checkout_warning(&b, h, now - h->checkout_time, ls_opt.threshold, &w, &o);
        __atomic_fetch_add(&ls_leak_warnings, 1, __ATOMIC_RELAXED);
        if (ls_opt.format == LS_FMT_JSON) /* a text line would corrupt a JSON-only report file */
            ls_write_host(2, b.data, b.len);
        else
            emit(&b, "");
        ls_buf_free(&b);
        ls_mstack_free(&py);
        ls_mstack_free(&nat);
    }
    ls_registry_snapshot_free(&s);
}

/* ------------------------------------------------------------------ what a test left behind
 * (public C API, pytest plugin). The snapshot keeps the sockets and handles created (or checked
 * out) in the ranges, plus as context the handles and pools they belong to: a pool made before
 * the test keeps its idle clients quiet (pool-unclosed), a client made before it is not the
 * test's (reported as inherited, i.e. not at all). Then it is an exit report of that part. */

static int in_ranges(uint64_t s, const uint64_t *r, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        if (s > r[2 * i] && (!r[2 * i + 1] || s <= r[2 * i + 1]))
            return 1;
    return 0;
}

static void keep_only(ls_snapshot *s, const uint64_t *r, size_t nr)
{
    unsigned char *keep = calloc(s->nhandles ? s->nhandles : 1, 1); /* 1 primary, 2 context */
    if (!keep) {
        s->nconns = s->nhandles = 0;
        return;
    }
    for (size_t j = 0; j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        if (in_ranges(h->seq, r, nr) || (h->checked_out && in_ranges(h->co_seq, r, nr)))
            keep[j] = 1;
    }
    size_t nc = 0;
    for (size_t i = 0; i < s->nconns; i++) {
        size_t j = ls_snap_find_handle(s, s->conns[i].handle);
        if (!in_ranges(s->conns[i].seq, r, nr) && !(j != (size_t)-1 && keep[j] == 1))
            continue;
        if (j != (size_t)-1 && !keep[j])
            keep[j] = 2;
        s->conns[nc++] = s->conns[i];
    }
    s->nconns = nc;
    for (size_t j = 0; j < s->nhandles; j++) /* the pools of what is kept */
        if (keep[j]) {
            size_t p = ls_snap_find_handle(s, s->handles[j].pool);
            if (p != (size_t)-1 && !keep[p])
                keep[p] = 2;
        }
    size_t nh = 0;
    for (size_t j = 0; j < s->nhandles; j++) {
        if (!keep[j])
            continue;
        s->handles[nh] = s->handles[j];
        if (keep[j] == 2 && s->handles[nh].kind != LS_HK_POOL)
            s->handles[nh].inherited = 1;
        nh++;
    }
    s->nhandles = nh; /* still sorted by address */
    free(keep);
}

int ls_report_live_in(const uint64_t *ranges, size_t nranges, ls_buf *json, ls_buf *text, int *leaks)
{
    inputs x;
    ls_model m;
    if (leaks)
        *leaks = 0;
    if (gather(&x, LS_REPORT_EXIT, json != NULL, json != NULL) < 0) {
        inputs_free(&x);
        return -1;
    }
    keep_only(&x.snap, ranges, nranges);
    if (ls_model_build(&m, &x.in) < 0) {
        inputs_free(&x);
        return -1;
    }
    if (text) {
        ls_render_opts o = render_opts(LS_REPORT_EXIT);
        o.verbose = 0;
        m.churn_notable = 0; /* whole-run creation counts say nothing about one test */
        ls_render_text(text, &m, &o);
    }
    if (json)
        ls_render_json(json, &m);
    if (leaks)
        *leaks = m.sum.leaks;
    ls_model_free(&m);
    inputs_free(&x);
    return 0;
}

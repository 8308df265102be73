/* The text renderer: LeakSanitizer's shape (groups by stack, largest first, summary line last),
 * the user's line named in every group's header and library and interpreter frames folded. It
 * only reads the model (ls_report.h): every number, category and order comes from there. */
#include "ls_report.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#define NONE ((size_t)-1)
#define RULE "=================================================================\n"
#define THIN "-----------------------------------------------------------------\n"

/* ------------------------------------------------------------------ small formatting */

static const char *plural(long n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* A Python file as a person names it: relative to the working directory when it is under it. */
static const char *short_file(const ls_model *m, const char *file)
{
    const char *cwd = m->in.proc.cwd;
    size_t n = cwd ? strlen(cwd) : 0;
    if (!file)
        return "?";
    if (n > 1 && !strncmp(file, cwd, n) && file[n] == '/')
        return file + n + 1;
    return file;
}

/* func (file:line) with debug info, func+0xOFF (module+0xOFF) without, module+0xOFF unnamed. */
static void native_name(ls_buf *b, const ls_sym *s, int full_module)
{
    const char *mod = full_module ? s->module : base_name(s->module);
    if (s->symbol[0] && s->src_file[0])
        ls_buf_printf(b, "%s (%s:%d)", s->symbol, full_module ? s->src_file : base_name(s->src_file), s->src_line);
    else if (s->symbol[0])
        ls_buf_printf(b, "%s+0x%lx (%s+0x%lx)", s->symbol, (unsigned long)s->sym_off, mod, (unsigned long)s->offset);
    else
        ls_buf_printf(b, "(%s+0x%lx)", mod, (unsigned long)s->offset);
}

static void where_text(ls_buf *b, const ls_model *m, const ls_where *w)
{
    const ls_mframe *f = w->user;
    if (!f)
        ls_buf_puts(b, "(no stack)");
    else if (f->py)
        ls_buf_printf(b, "%s:%d in %s", short_file(m, f->file), f->line, f->func ? f->func : "?");
    else if (!f->sym->symbol[0]) /* an unnamed address: module+offset, as addr2line takes it */
        ls_buf_printf(b, "%s+0x%lx", base_name(f->sym->module), (unsigned long)f->sym->offset);
    else
        native_name(b, f->sym, 0);
}

/* ------------------------------------------------------------------ stacks */

static void frame_line(ls_buf *b, const char *indent, int num, const ls_mframe *f)
{
    if (f->py) {
        ls_buf_printf(b, "%s#%d %s:%d in %s\n", indent, num, f->file ? f->file : "?", f->line, f->func ? f->func : "?");
        return;
    }
    ls_buf_printf(b, "%s#%d %p ", indent, num, f->pc);
    if (f->sym->symbol[0])
        ls_buf_puts(b, "in ");
    native_name(b, f->sym, 1);
    ls_buf_puts(b, f->sym->inlined ? " [inlined]\n" : "\n");
}

/* "... 7 sqlalchemy frames", "... 33 pytest, pluggy frames": the libraries of a run, most frames
 * first, at most three named. */
static void fold_line(ls_buf *b, const char *indent, int num, const ls_mframe *f, int n)
{
    ls_buf_printf(b, "%s#%d ... %d ", indent, num, n);
    if (f[0].fclass == LS_FC_INTERPRETER) {
        ls_buf_printf(b, "interpreter %s\n", plural(n, "frame", "frames"));
        return;
    }
    int shown[3], nshown = 0;
    for (int k = 0; k < 3; k++) {
        int best = -1, best_n = 0;
        for (int i = 0; i < n; i++) {
            int dup = 0, cnt = 0;
            for (int s = 0; s < nshown; s++)
                dup |= !strcmp(f[shown[s]].lib, f[i].lib);
            for (int j = 0; !dup && j < i; j++)
                dup |= !strcmp(f[j].lib, f[i].lib); /* counted at its first appearance */
            for (int j = i; !dup && j < n; j++)
                cnt += !strcmp(f[j].lib, f[i].lib);
            if (!dup && cnt > best_n)
                best = i, best_n = cnt;
        }
        if (best < 0)
            break;
        shown[nshown++] = best;
    }
    for (int s = 0; s < nshown; s++)
        ls_buf_printf(b, "%s%s", s ? ", " : "", f[shown[s]].lib);
    int more = 0;
    for (int i = 0; i < n && !more; i++) {
        int named = 0;
        for (int s = 0; s < nshown; s++)
            named |= !strcmp(f[shown[s]].lib, f[i].lib);
        more = !named;
    }
    ls_buf_printf(b, "%s %s\n", more ? ", ..." : "", plural(n, "frame", "frames"));
}

/* Python frames, then native ones. Folded: a run of two or more library (or interpreter, or
 * shim) frames is one line; below the first interpreter frame under Python frames everything is
 * the eval loop the Python frames already describe. */
static void text_stack(ls_buf *b, const ls_where *w, int fold, const char *indent)
{
    int num = 0;
    const ls_mstack *parts[2] = {w->py, w->nat};
    for (int p = 0; p < 2; p++) {
        const ls_mstack *s = parts[p];
        for (int i = 0; s && i < s->n;) {
            const ls_mframe *f = &s->f[i];
            if (!fold || f->fclass == LS_FC_USER) {
                frame_line(b, indent, num++, f);
                i++;
                continue;
            }
            if (p == 1 && w->py && f->fclass == LS_FC_INTERPRETER) {
                ls_buf_printf(b, "%s#%d ... %d interpreter %s\n", indent, num, s->n - i,
                              plural(s->n - i, "frame", "frames"));
                num += s->n - i;
                break;
            }
            int j = i;
            while (j < s->n && s->f[j].fclass == f->fclass)
                j++;
            if (j - i == 1)
                frame_line(b, indent, num, f);
            else
                fold_line(b, indent, num, f, j - i);
            num += j - i;
            i = j;
        }
    }
    if (!num)
        ls_buf_printf(b, "%s<no stack>\n", indent);
}

/* ------------------------------------------------------------------ groups */

static void ages(ls_buf *b, const ls_mgroup *g, const char *one, const char *range)
{
    if (g->count == 1)
        ls_buf_printf(b, one, g->oldest);
    else
        ls_buf_printf(b, range, g->oldest, g->newest);
}

void ls_text_group_title(ls_buf *b, const ls_model *m, const ls_mgroup *g)
{
    char peer[160] = "";
    if (g->peer != NONE) {
        const ls_conn_view *c = &m->snap->conns[g->peer];
        ls_addr_format(peer, sizeof peer, &c->peer, c->peerlen);
    }
    const char *drv = ls_driver_name(g->driver), *svc = g->service ? g->service : "database";
    const char *to = peer[0] ? " to " : "", *conns = plural(g->count, "connection", "connections");
    int n = g->count, k = g->nsocks;
    switch (g->cat) {
    case LS_CAT_LEAK: ls_buf_printf(b, "%d %s %s%s%s (%s) leaked, created at ", n, svc, conns, to, peer, drv); break;
    case LS_CAT_HANDLE_LEAK:
        ls_buf_printf(b, "%d %s %s (%s) never freed, holding %d open %s %s%s%s; created at ", n, drv,
                      plural(n, "handle", "handles"), ls_handle_type(g->driver, LS_HK_CLIENT), k, svc,
                      plural(k, "connection", "connections"), to, peer);
        break;
    case LS_CAT_ORPHANED:
        ls_buf_printf(b,
                      "%d %s %s%s%s still open after its %s handle was freed (handle freed, socket still open), "
                      "created at ",
                      n, svc, conns, to, peer, drv);
        break;
    case LS_CAT_CLOSED_UNDER:
        ls_buf_printf(b, "%d %s %s (%s) still live after %s socket was closed under %s, created at ", n, drv,
                      plural(n, "handle", "handles"), ls_handle_type(g->driver, LS_HK_CLIENT),
                      plural(n, "its", "their"), plural(n, "it", "them"));
        break;
    case LS_CAT_CHECKOUT_LEAK:
        ls_buf_printf(b, "%d %s %s%s%s (%s) checked out of a pool and never returned, checked out at ", n, svc, conns,
                      to, peer, drv);
        break;
    case LS_CAT_UNCONNECTED:
        ls_buf_printf(b,
                      "%d %s %s (%s) never freed, holding no connection (never connected, or it failed), created at ",
                      n, drv, plural(n, "handle", "handles"), ls_handle_type(g->driver, LS_HK_CLIENT));
        break;
    case LS_CAT_POOL_UNCLOSED:
        ls_buf_printf(b, "%d %s %s not closed at shutdown (%d %s), created at ", n, drv, plural(n, "pool", "pools"),
                      g->clients, plural(g->clients, "client", "clients"));
        break;
    case LS_CAT_SHARED_FORK:
        ls_buf_printf(b,
                      "%d %s %s%s%s (%s) shared across fork: opened before fork() and used by more than one process, "
                      "created at ",
                      n, svc, conns, to, peer, drv);
        break;
    case LS_CAT_CLIENT_LEAK: {
        int mon = g->states[LS_ST_BACKGROUND];
        ls_buf_printf(b, "%d %s %s (%s) never closed, holding %d open %s %s%s%s", n, drv,
                      plural(n, "client", "clients"), ls_handle_type(g->driver, LS_HK_POOL), k, svc,
                      plural(k, "connection", "connections"), to, peer);
        if (mon)
            ls_buf_printf(b, " (%d pooled, %d monitoring)", k - mon, mon);
        ls_buf_puts(b, ", created at ");
        break;
    }
    case LS_CAT_BACKGROUND:
        ls_buf_printf(b, "%d %s background %s%s%s (driver monitoring, not a leak), created at ", n, drv,
                      plural(n, "socket", "sockets"), to, peer);
        break;
    case LS_CAT_PRE_ATTACH: /* nobody saw them created: no stack to show */
        ls_buf_printf(b, "%d %s %s%s%s opened before attach (no stack)", n, svc, conns, to, peer);
        return;
    case LS_CAT_CHECKED_OUT: {
        ls_buf_printf(b, "%d %s %s%s%s (%s) checked out of ", n, svc, conns, to, peer, drv);
        if (g->pool_index >= 0) {
            const ls_handle_view *p = &m->snap->handles[m->pools[g->pool_index].handle];
            ls_buf_printf(b, "%s pool %#lx", ls_driver_name(p->driver), (unsigned long)p->handle);
        } else
            ls_buf_printf(b, "pool %#lx", (unsigned long)g->pool);
        ages(b, g, " for %.1fs", " for %.1fs (oldest) to %.1fs (newest)");
        ls_buf_puts(b, ", checked out at ");
        break;
    }
    default: { /* live */
        ls_buf_printf(b, "%d live %s %s%s%s (%s), ", n, svc, conns, to, peer, drv);
        for (int st = 0, first = 1; st < LS_ST_COUNT; st++)
            if (g->states[st]) {
                ls_buf_printf(b, "%s%d %s", first ? "" : ", ", g->states[st], ls_state_name(st));
                first = 0;
            }
        ages(b, g, ", age %.1fs", ", ages %.1fs to %.1fs");
        ls_buf_puts(b, ", created at ");
    }
    }
    where_text(b, m, &g->where);
}

/* Per-socket lines (`leakshim dump --sockets`), in the group's order: oldest first. */
static void socket_lines(ls_buf *b, const ls_model *m, const ls_mgroup *g)
{
    size_t next = g->sfirst;
    for (size_t k = g->first; k < g->first + g->n; k++) {
        const ls_mitem *it = &m->items[m->order[k]];
        const char *ind = "      ";
        if (it->handle != NONE) {
            const ls_handle_view *h = &m->snap->handles[it->handle];
            ls_buf_printf(b, "      %s %s %#lx", ls_driver_name(h->driver), ls_handle_type(h->driver, h->kind),
                          (unsigned long)h->handle);
            if (h->pool)
                ls_buf_printf(b, " from pool %#lx", (unsigned long)h->pool);
            ls_buf_printf(b, ", %s %.1fs ago, %d %s\n", h->checked_out ? "checked out" : "created", it->age, it->nsocks,
                          plural(it->nsocks, "socket", "sockets"));
            ind = "        ";
        }
        for (int s = 0; s < it->nsocks && next < g->sfirst + g->sn; s++, next++) {
            const ls_conn_view *c = &m->snap->conns[m->gsocks[next]];
            char peer[160], local[160];
            ls_addr_format(peer, sizeof peer, &c->peer, c->peerlen);
            ls_addr_format(local, sizeof local, &c->local, c->locallen);
            ls_buf_printf(b, "%sfd %-4d %-12s age %7.1fs idle %s%.1fs  %s -> %s", ind, c->fd, ls_state_name(c->state),
                          m->in.now > c->created ? m->in.now - c->created : 0, c->idle < 0 ? "?" : "",
                          c->idle < 0 ? 0.0 : c->idle, local, peer);
            if (c->handle)
                ls_buf_printf(b, "  handle %#lx", (unsigned long)c->handle);
            ls_buf_puts(b, "\n");
        }
    }
}

/* Where the group's members were created: test ids, request routes (report_context.c). */
#define CONTEXTS_SHOWN 3
static void context_lines(ls_buf *b, const ls_model *m, const ls_mgroup *g)
{
    const char *verb = g->cat == LS_CAT_CHECKOUT_LEAK || g->cat == LS_CAT_CHECKED_OUT ? "checked out" : "created";
    for (size_t c = g->cfirst; c < g->cfirst + g->cn && c < g->cfirst + CONTEXTS_SHOWN; c++) {
        ls_buf_printf(b, "    %d %s ", m->ctxs[c].count, verb);
        ls_text_context(b, &m->ctxs[c]);
        ls_buf_puts(b, "\n");
    }
    if (g->cn > CONTEXTS_SHOWN)
        ls_buf_printf(b, "    ... and %zu more contexts (the JSON lists them all)\n", g->cn - CONTEXTS_SHOWN);
}

static void group_block(ls_buf *b, const ls_model *m, const ls_mgroup *g, const ls_render_opts *o)
{
    ls_text_group_title(b, m, g);
    if (g->cat == LS_CAT_PRE_ATTACH) /* nobody saw them created: no stack, the title says so */
        ls_buf_puts(b, o->sockets ? ":\n" : "\n");
    else {
        ls_buf_puts(b, ":\n");
        text_stack(b, &g->where, o->fold, "    ");
        context_lines(b, m, g);
    }
    if (o->sockets)
        socket_lines(b, m, g);
    ls_buf_puts(b, "\n");
}

/* ------------------------------------------------------------------ header, sections */

static void quoted_arg(ls_buf *b, const char *a)
{
    if (*a && strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./=:,+-@%") == strlen(a)) {
        ls_buf_puts(b, a);
        return;
    }
    ls_buf_puts(b, "'");
    for (const char *p = a; *p; p++)
        ls_buf_puts(b, *p == '\'' ? "'\\''" : (char[]){*p, 0});
    ls_buf_puts(b, "'");
}

#define ARGV_SHOWN 400 /* bytes of the command line in the header; the JSON has all of it */

static void process_line(ls_buf *b, const ls_model *m)
{
    const ls_proc *p = &m->in.proc;
    ls_buf_printf(b, "==%d==process %d (parent %d), ", p->pid, p->pid, p->ppid);
    if (p->started > 0) {
        time_t t = (time_t)p->started;
        struct tm tm;
        char when[32];
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        ls_buf_printf(b, "started %s, %s %.1fs", when, m->in.kind == LS_REPORT_EXIT ? "ran" : "up",
                      m->in.now > p->started ? m->in.now - p->started : 0);
    } else
        ls_buf_puts(b, "start time unknown");
    ls_buf_puts(b, ":");
    size_t start = b->len;
    if (!p->argc)
        ls_buf_printf(b, " %s", p->exe ? p->exe : "?");
    for (int i = 0; i < p->argc && b->len - start < ARGV_SHOWN; i++) {
        ls_buf_puts(b, " ");
        quoted_arg(b, p->argv[i]);
    }
    if (b->data && b->len - start > ARGV_SHOWN) {
        b->len = start + ARGV_SHOWN;
        b->data[b->len] = 0;
        ls_buf_puts(b, "...");
    }
    ls_buf_puts(b, "\n");
    if (p->attached > 0) { /* `leakshim attach`: what the report cannot know */
        time_t t = (time_t)p->attached;
        struct tm tm;
        char when[32];
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        ls_buf_printf(b,
                      "==%d==attached %s (leakshim attach): sockets opened before are listed without a stack; "
                      "driver handles and pools created before attach are not known\n",
                      p->pid, when);
    }
}

static void churn_table(ls_buf *b, const ls_model *m, const ls_render_opts *o, int rule)
{
    for (size_t r = 0; r < m->nrows && r < (size_t)o->top; r++) {
        const ls_mrow *row = &m->rows[r];
        if (!r)
            ls_buf_printf(b, "%sDatabase connections and clients created per stack (whole run):\n", rule ? THIN : "");
        ls_buf_printf(b, "  %6llu created, %4d live", (unsigned long long)row->created, row->live);
        if (row->pools)
            ls_buf_printf(b, ", %d %s", row->pools, plural(row->pools, "pool", "pools"));
        ls_buf_puts(b, ": ");
        const ls_mframe *f = row->where.user;
        const ls_mstack *s = f ? (f->py ? row->where.py : row->where.nat) : NULL;
        for (int i = s ? (int)(f - s->f) : 0, k = 0; s && i < s->n && k < 3; i++, k++) {
            const ls_mframe *x = &s->f[i];
            ls_buf_puts(b, k ? " < " : "");
            if (x->py)
                ls_buf_printf(b, "%s:%d %s", short_file(m, x->file), x->line, x->func ? x->func : "?");
            else if (x->sym->symbol[0])
                ls_buf_printf(b, "%s (%s)", x->sym->symbol, base_name(x->sym->module));
            else
                ls_buf_printf(b, "%s+0x%lx", base_name(x->sym->module), (unsigned long)x->sym->offset);
        }
        if (!s)
            ls_buf_puts(b, "<no stack>");
        ls_buf_puts(b, row->many ? "  <- many created, few live: a client or pool per request?\n" : "\n");
    }
}

static void suspects(ls_buf *b, const ls_model *m)
{
    for (size_t k = 0; k < m->nsuspects; k++) {
        const ls_msuspect *s = &m->suspects[k];
        if (!k)
            ls_buf_puts(b, "Suspects:\n");
        if (s->why == LS_SUS_STAIRCASE) {
            const ls_mrow *r = &m->rows[s->row];
            ls_buf_printf(b,
                          "  %d database clients or connections created from one place over %.1fs, all still open "
                          "(a staircase): a client per request never closed? At ",
                          s->count, s->seconds);
            where_text(b, m, &r->where);
        } else if (s->why == LS_SUS_CHURN) {
            const ls_mrow *r = &m->rows[s->row];
            ls_buf_printf(b,
                          "  %llu database connections or clients created from one place (%d live): a client or "
                          "pool per request? At ",
                          (unsigned long long)r->created, r->live);
            where_text(b, m, &r->where);
        } else {
            const ls_mgroup *g = &m->groups[s->group];
            int co = s->why == LS_SUS_CHECKOUT;
            ls_buf_printf(b, "  %d %s %s (%s) %s for longer than %gs (the longest %.1fs), %s at ", s->count,
                          g->service ? g->service : "database", plural(s->count, "connection", "connections"),
                          ls_driver_name(g->driver), co ? "checked out" : "open and idle", m->in.threshold, s->seconds,
                          co ? "checked out" : "created");
            where_text(b, m, &g->where);
        }
        ls_buf_puts(b, "\n");
    }
    if (m->nsuspects)
        ls_buf_puts(b, "\n");
}

static void pools_section(ls_buf *b, const ls_model *m)
{
    for (size_t k = 0; k < m->npools; k++) {
        const ls_mpool *p = &m->pools[k];
        const ls_handle_view *h = &m->snap->handles[p->handle];
        if (!k)
            ls_buf_puts(b, "Pools:\n");
        ls_buf_printf(b, "  %s pool %#lx created at ", ls_driver_name(h->driver), (unsigned long)h->handle);
        where_text(b, m, &p->where);
        ls_buf_printf(b, ": size %d, %d in use, %d idle", p->clients, p->checked_out, p->idle);
        if (p->background)
            ls_buf_printf(b, ", %d monitor %s", p->background, plural(p->background, "socket", "sockets"));
        ls_buf_puts(b, "\n");
    }
    if (m->npools)
        ls_buf_puts(b, "\n");
}

static void render_snapshot(ls_buf *b, const ls_model *m, const ls_render_opts *o)
{
    const ls_msummary *s = &m->sum;
    ls_buf_printf(b, RULE "==%d==leakshim: snapshot: %d live database %s, %d checked out of pools\n", m->in.proc.pid,
                  s->live, plural(s->live, "socket", "sockets"), s->checked_out);
    process_line(b, m);
    ls_buf_puts(b, "\n");
    suspects(b, m);
    static const char *const headings[] = {"Checked out of pools (oldest first):\n", "Open connections:\n",
                                           "Drivers' background sockets (not leaks):\n",
                                           "Shared across fork (one connection, several processes):\n",
                                           "Opened before attach (found open by `leakshim attach`; no stack):\n"};
    for (size_t g = 0; g < m->ngroups; g++) {
        int sec = m->groups[g].section;
        if (sec >= 0 && sec <= 4 && (!g || m->groups[g - 1].section != sec))
            ls_buf_puts(b, headings[sec]);
        group_block(b, m, &m->groups[g], o);
    }
    pools_section(b, m);
    if (m->churn_notable || o->verbose)
        churn_table(b, m, o, 0);
    ls_buf_printf(b, "leakshim: snapshot: %d live database %s in %zu %s\n", s->live,
                  plural(s->live, "socket", "sockets"), m->ngroups, plural((long)m->ngroups, "group", "groups"));
}

static void render_exit(ls_buf *b, const ls_model *m, const ls_render_opts *o)
{
    const ls_msummary *s = &m->sum;
    if (s->leaks)
        ls_buf_printf(b, RULE "==%d==ERROR: leakshim: detected leaked database connections\n", m->in.proc.pid);
    else
        ls_buf_printf(b, RULE "==%d==leakshim: no leaked database connections\n", m->in.proc.pid);
    process_line(b, m);
    ls_buf_puts(b, "\n");
    int above = 0, quiet = 0;
    for (size_t g = 0; g < m->ngroups; g++)
        if (m->groups[g].section == 0) {
            group_block(b, m, &m->groups[g], o);
            above = 1;
        }
    /* The quiet section: not leaks, but what a user asks next. */
    for (size_t g = 0; g < m->ngroups; g++) {
        const ls_mgroup *gr = &m->groups[g];
        if (gr->section != 1)
            continue;
        if (!quiet++)
            ls_buf_puts(b, THIN "Not counted as leaks:\n");
        ls_buf_puts(b, "  ");
        if (gr->suppressed) {
            ls_buf_printf(b, "suppressed: %d %s (%s), created at ", gr->count, ls_cat_name(gr->cat),
                          ls_driver_name(gr->driver));
            where_text(b, m, &gr->where);
        } else
            ls_text_group_title(b, m, gr);
        ls_buf_puts(b, "\n");
    }
    if (m->churn_notable || o->verbose) {
        if (quiet)
            ls_buf_puts(b, "\n");
        churn_table(b, m, o, above && !quiet);
    }
    if (m->nbyctx) { /* the suite's view: which test (or request) leaked how much */
        ls_buf_puts(b, THIN "Leaks by where they were created:\n");
        for (size_t c = 0; c < m->nbyctx; c++) {
            ls_buf_printf(b, "  %4d ", m->byctx[c].count);
            ls_text_context(b, &m->byctx[c]);
            ls_buf_puts(b, "\n");
        }
    }
    if (s->leaks)
        ls_buf_printf(b, "\nSUMMARY: leakshim: %d leaked database %s in %d %s", s->leaks,
                      plural(s->leaks, "connection", "connections"), s->groups, plural(s->groups, "group", "groups"));
    else
        ls_buf_puts(b, "leakshim: 0 leaked database connections");
    if (s->suppressed)
        ls_buf_printf(b, " (%d suppressed)", s->suppressed);
    ls_buf_puts(b, "\n");
}

void ls_render_text(ls_buf *b, const ls_model *m, const ls_render_opts *o)
{
    if (m->in.kind == LS_REPORT_SNAPSHOT)
        render_snapshot(b, m, o);
    else
        render_exit(b, m, o);
}

void ls_text_checkout_warning(ls_buf *b, const ls_handle_view *h, double held, double threshold, const ls_where *w,
                              const ls_render_opts *o)
{
    ls_buf_printf(b,
                  "leakshim: WARNING: %s %s %#lx checked out of pool %#lx for %.1fs (threshold %gs), possible leak; "
                  "checked out at:\n",
                  ls_driver_name(h->driver), ls_handle_type(h->driver, h->kind), (unsigned long)h->handle,
                  (unsigned long)h->pool, held, threshold);
    text_stack(b, w, o->fold, "    ");
    const char *label = ls_attr_label(h->co_attr); /* which test or request checked it out */
    if (label) {
        ls_mctx c = {label, ls_attr_phase(h->co_attr), 1, 0, 0};
        ls_buf_puts(b, "    checked out ");
        ls_text_context(b, &c);
        ls_buf_puts(b, "\n");
    }
}

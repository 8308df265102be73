/* The JSON renderer: one document per report, on one line, as described field by field in
 * shim/report.schema.json ("leakshim": 2). It carries everything the text shows and more: every
 * socket, handle and pool, every frame with its class, raw frames as module + offset + build-id
 * (symbolize offline with `addr2line -e MODULE OFFSET`). It only reads the model. */
#include "ls_report.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE ((size_t)-1)

/* A staging writer: rows are assembled here and appended to the report in large pieces (the
 * socket rows run once per live socket, 100k in a big dump; no printf on that path). */
typedef struct jw {
    ls_buf *b;
    size_t n;
    char buf[4096];
} jw;

static void flush(jw *w)
{
    if (!w->n)
        return;
    w->buf[w->n] = 0;
    ls_buf_puts(w->b, w->buf);
    w->n = 0;
}

static void put_slow(jw *w, const char *s, size_t n)
{
    while (n) {
        if (w->n == sizeof w->buf - 1)
            flush(w);
        size_t k = sizeof w->buf - 1 - w->n;
        if (k > n)
            k = n;
        memcpy(w->buf + w->n, s, k);
        w->n += k;
        s += k;
        n -= k;
    }
}

static inline void put(jw *w, const char *s, size_t n)
{
    if (LS_LIKELY(n < sizeof w->buf - 1 - w->n)) {
        memcpy(w->buf + w->n, s, n); /* a constant n (LIT) is inlined */
        w->n += n;
    } else
        put_slow(w, s, n);
}

#define LIT(w, s) put(w, s, sizeof(s) - 1)

static void jstr(jw *w, const char *s) /* quoted, escaped; NULL -> null */
{
    if (!s) {
        LIT(w, "null");
        return;
    }
    LIT(w, "\"");
    for (;;) {
        size_t n = 0;
        while (s[n] && s[n] != '"' && s[n] != '\\' && (unsigned char)s[n] >= 0x20)
            n++;
        put(w, s, n);
        s += n;
        if (!*s)
            break;
        char esc[8] = {'\\', *s, 0};
        if (*s == '\n')
            esc[1] = 'n';
        else if (*s == '\t')
            esc[1] = 't';
        else if (*s == '\r')
            esc[1] = 'r';
        else if ((unsigned char)*s < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned char)*s);
        put(w, esc, strlen(esc));
        s++;
    }
    LIT(w, "\"");
}

static void jint(jw *w, long long v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do
        *--p = (char)('0' + u % 10);
    while ((u /= 10) > 0);
    if (v < 0)
        *--p = '-';
    put(w, p, (size_t)(tmp + sizeof tmp - p));
}

/* Like %.Nf (N <= 6) without printf; a value JSON cannot hold is null. */
static void jfixed(jw *w, double v, int decimals)
{
    static const long long pow10[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
    if (!(v == v) || v > 9e12 || v < -9e12) {
        LIT(w, "null");
        return;
    }
    char tmp[48], *p = tmp + sizeof tmp;
    int neg = v < 0;
    long long scaled = (long long)((neg ? -v : v) * (double)pow10[decimals] + 0.5);
    long long ip = scaled / pow10[decimals], fp = scaled % pow10[decimals];
    for (int i = 0; i < decimals; i++, fp /= 10)
        *--p = (char)('0' + fp % 10);
    if (decimals)
        *--p = '.';
    do
        *--p = (char)('0' + ip % 10);
    while ((ip /= 10) > 0);
    if (neg && scaled)
        *--p = '-';
    put(w, p, (size_t)(tmp + sizeof tmp - p));
}

static void jaddr(jw *w, uintptr_t v) /* "0x55d0c0ffee00" */
{
    char tmp[24], *p = tmp + sizeof tmp;
    *--p = '"';
    do
        *--p = "0123456789abcdef"[v & 15];
    while ((v >>= 4) > 0);
    *--p = 'x';
    *--p = '0';
    *--p = '"';
    put(w, p, (size_t)(tmp + sizeof tmp - p));
}

/* ,"key": */
static void key(jw *w, const char *k)
{
    LIT(w, ",\"");
    put(w, k, strlen(k));
    LIT(w, "\":");
}

static void num(jw *w, const char *k, long long v)
{
    key(w, k);
    jint(w, v);
}

static void fixed(jw *w, const char *k, double v, int decimals)
{
    key(w, k);
    jfixed(w, v, decimals);
}

static void str(jw *w, const char *k, const char *v)
{
    key(w, k);
    jstr(w, v);
}

static void boolean(jw *w, const char *k, int v)
{
    key(w, k);
    if (v)
        LIT(w, "true");
    else
        LIT(w, "false");
}

static void addr(jw *w, const char *k, uintptr_t v)
{
    key(w, k);
    jaddr(w, v);
}

static void opt_addr(jw *w, const char *k, uintptr_t v)
{
    key(w, k);
    if (v)
        jaddr(w, v);
    else
        LIT(w, "null");
}

static void index_or_null(jw *w, const char *k, long i) /* a stack id or an index; <= 0 / < 0 null */
{
    key(w, k);
    if (i >= 0)
        jint(w, i);
    else
        LIT(w, "null");
}

static void stack_ref(jw *w, const char *k, ls_stack_id id)
{
    index_or_null(w, k, id ? (long)id : -1);
}

static void where(jw *w, const char *k, const ls_where *wh)
{
    key(w, k);
    const ls_mframe *f = wh->user;
    const ls_mstack *s = f ? (f->py ? wh->py : wh->nat) : NULL;
    if (!s) {
        LIT(w, "null");
        return;
    }
    LIT(w, "{\"stack\":");
    jint(w, s->id);
    num(w, "frame", f->raw);
    LIT(w, "}");
}

/* ------------------------------------------------------------------ sections */

static void header(jw *w, const ls_model *m)
{
    const ls_proc *p = &m->in.proc;
    LIT(w, "{\"leakshim\":");
    jint(w, LS_REPORT_VERSION);
    str(w, "kind", m->in.kind == LS_REPORT_EXIT ? "exit" : "snapshot");
    num(w, "pid", p->pid);
    num(w, "ppid", p->ppid);
    str(w, "program", p->exe);
    key(w, "argv");
    LIT(w, "[");
    for (int i = 0; i < p->argc; i++) {
        if (i)
            LIT(w, ",");
        jstr(w, p->argv[i]);
    }
    LIT(w, "]");
    str(w, "cwd", p->cwd);
    key(w, "started");
    if (p->started > 0)
        jfixed(w, p->started, 6);
    else
        LIT(w, "null");
    key(w, "attached");
    if (p->attached > 0)
        jfixed(w, p->attached, 6);
    else
        LIT(w, "null");
    fixed(w, "time", m->in.now, 6);
    key(w, "uptime");
    if (p->started > 0)
        jfixed(w, m->in.now > p->started ? m->in.now - p->started : 0, 3);
    else
        LIT(w, "null");
    fixed(w, "threshold", m->in.threshold, 3);
    const ls_msummary *s = &m->sum;
    LIT(w, ",\"summary\":{\"leaks\":");
    jint(w, s->leaks);
    num(w, "groups", s->groups);
    num(w, "suppressed", s->suppressed);
    num(w, "quiet", s->quiet);
    num(w, "live", s->live);
    num(w, "checked_out", s->checked_out);
    num(w, "clients", s->clients);
    num(w, "pools", s->pools);
    num(w, "background", s->background);
    num(w, "closed_behind_our_back", (long long)s->closed_behind);
    LIT(w, "}");
}

/* Attribution contexts (report_context.c): [{"label","phase","count","requests","groups","text"}]. */
static void contexts(jw *w, const char *k, const ls_mctx *c, size_t n)
{
    key(w, k);
    LIT(w, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            LIT(w, ",");
        LIT(w, "{\"label\":");
        jstr(w, c[i].label);
        str(w, "phase", c[i].phase);
        num(w, "count", c[i].count);
        num(w, "requests", c[i].instances);
        num(w, "groups", c[i].groups);
        ls_buf t = {0};
        ls_text_context(&t, &c[i]);
        str(w, "text", t.data ? t.data : "");
        ls_buf_free(&t);
        LIT(w, "}");
    }
    LIT(w, "]");
}

/* One creation's attribution: {"label","phase","instance","seq"} or null. */
static void context_of(jw *w, const char *k, uint64_t a, uint64_t seq)
{
    key(w, k);
    const char *label = ls_attr_label(a);
    if (!label) {
        LIT(w, "null");
        return;
    }
    LIT(w, "{\"label\":");
    jstr(w, label);
    str(w, "phase", ls_attr_phase(a));
    num(w, "instance", (long long)(a >> 32));
    num(w, "seq", (long long)seq);
    LIT(w, "}");
}

static void groups(jw *w, const ls_model *m)
{
    LIT(w, ",\"groups\":[");
    for (size_t i = 0; i < m->ngroups; i++) {
        const ls_mgroup *g = &m->groups[i];
        if (i)
            LIT(w, ",");
        LIT(w, "{\"id\":");
        jint(w, (long long)i);
        str(w, "category", ls_cat_name(g->cat));
        boolean(w, "leak", g->leak);
        boolean(w, "suppressed", g->suppressed);
        num(w, "count", g->count);
        num(w, "sockets", g->nsocks);
        str(w, "driver", ls_driver_name(g->driver));
        str(w, "service", g->service);
        key(w, "peer");
        if (g->peer != NONE) {
            char peer[160];
            ls_addr_format(peer, sizeof peer, &m->snap->conns[g->peer].peer, m->snap->conns[g->peer].peerlen);
            jstr(w, peer);
        } else
            LIT(w, "null");
        ls_buf title = {0};
        ls_text_group_title(&title, m, g);
        str(w, "title", title.data ? title.data : "");
        ls_buf_free(&title);
        stack_ref(w, "stack", g->stack);
        stack_ref(w, "pystack", g->pystack);
        where(w, "where", &g->where);
        LIT(w, ",\"states\":{");
        for (int st = 0, first = 1; st < LS_ST_COUNT; st++)
            if (g->states[st]) {
                if (!first)
                    LIT(w, ",");
                jstr(w, ls_state_name(st));
                LIT(w, ":");
                jint(w, g->states[st]);
                first = 0;
            }
        LIT(w, "}");
        fixed(w, "oldest", g->oldest, 3);
        fixed(w, "newest", g->newest, 3);
        num(w, "over_threshold", g->over);
        opt_addr(w, "pool", g->pool);
        index_or_null(w, "pool_index", g->pool_index);
        num(w, "clients", g->clients);
        LIT(w, ",\"fds\":[");
        for (size_t k = 0; k < g->sn; k++) {
            if (k)
                LIT(w, ",");
            jint(w, m->snap->conns[m->gsocks[g->sfirst + k]].fd);
        }
        LIT(w, "],\"handles\":[");
        for (size_t k = 0; k < g->hn; k++) {
            if (k)
                LIT(w, ",");
            jaddr(w, m->snap->handles[m->ghands[g->hfirst + k]].handle);
        }
        LIT(w, "]");
        contexts(w, "contexts", m->ctxs + g->cfirst, g->cn);
        LIT(w, "}");
    }
    LIT(w, "]");
}

static void suspects_pools_churn(jw *w, const ls_model *m)
{
    static const char *const why[] = {"checked-out", "idle", "churn", "staircase"};
    LIT(w, ",\"suspects\":[");
    for (size_t i = 0; i < m->nsuspects; i++) {
        const ls_msuspect *s = &m->suspects[i];
        if (i)
            LIT(w, ",");
        LIT(w, "{\"reason\":");
        jstr(w, why[s->why]);
        index_or_null(w, "group", s->group);
        index_or_null(w, "row", s->row);
        num(w, "count", s->count);
        key(w, "seconds");
        if (s->why == LS_SUS_CHURN)
            LIT(w, "null");
        else
            jfixed(w, s->seconds, 3);
        LIT(w, "}");
    }
    LIT(w, "],\"pools\":[");
    for (size_t i = 0; i < m->npools; i++) {
        const ls_mpool *p = &m->pools[i];
        const ls_handle_view *h = &m->snap->handles[p->handle];
        if (i)
            LIT(w, ",");
        LIT(w, "{\"handle\":");
        jaddr(w, h->handle);
        str(w, "driver", ls_driver_name(h->driver));
        str(w, "type", ls_handle_type(h->driver, h->kind));
        index_or_null(w, "group", p->group);
        stack_ref(w, "stack", h->stack);
        stack_ref(w, "pystack", h->pystack);
        where(w, "where", &p->where);
        num(w, "size", p->clients);
        num(w, "in_use", p->checked_out);
        num(w, "idle", p->idle);
        num(w, "sockets", p->sockets);
        num(w, "background", p->background);
        fixed(w, "age", m->in.now > h->created ? m->in.now - h->created : 0, 3);
        LIT(w, "}");
    }
    LIT(w, "],\"churn\":[");
    for (size_t i = 0; i < m->nchurn; i++) {
        const ls_mchurn *c = &m->churn[i];
        if (i)
            LIT(w, ",");
        LIT(w, "{\"stack\":");
        jint(w, c->stack);
        boolean(w, "python", c->py);
        num(w, "created", (long long)c->created);
        num(w, "live", c->live);
        num(w, "pools", c->pools);
        index_or_null(w, "row", c->row);
        LIT(w, "}");
    }
    LIT(w, "],\"churn_rows\":[");
    for (size_t i = 0; i < m->nrows; i++) {
        const ls_mrow *r = &m->rows[i];
        if (i)
            LIT(w, ",");
        LIT(w, "{\"created\":");
        jint(w, (long long)r->created);
        num(w, "live", r->live);
        num(w, "pools", r->pools);
        boolean(w, "many", r->many);
        where(w, "where", &r->where);
        LIT(w, "}");
    }
    LIT(w, "]");
}

static int port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static const char *family_name(int f)
{
    return f == AF_INET ? "inet" : f == AF_INET6 ? "inet6" : f == AF_UNIX ? "unix" : "other";
}

static void sockets(jw *w, const ls_model *m)
{
    LIT(w, ",\"sockets\":[");
    for (size_t i = 0; i < m->snap->nconns; i++) {
        const ls_conn_view *c = &m->snap->conns[i];
        char peer[160], local[160];
        ls_addr_format(peer, sizeof peer, &c->peer, c->peerlen);
        ls_addr_format(local, sizeof local, &c->local, c->locallen);
        if (i)
            LIT(w, ",");
        LIT(w, "{\"fd\":");
        jint(w, c->fd);
        LIT(w, ",\"fds\":[");
        for (int k = 0; k < c->nfds; k++) {
            if (k)
                LIT(w, ",");
            jint(w, c->fds[k]);
        }
        LIT(w, "]");
        num(w, "inode", (long long)c->ino);
        str(w, "family", family_name(c->peer.ss_family));
        str(w, "peer", peer);
        str(w, "local", local);
        num(w, "port", port_of(&c->peer));
        str(w, "service", ls_service_name(c->driver, (const struct sockaddr *)&c->peer, c->peerlen));
        str(w, "driver", ls_driver_name(c->driver));
        opt_addr(w, "handle", c->handle);
        opt_addr(w, "pool", c->pool);
        str(w, "state", ls_state_name(c->state));
        str(w, "category", ls_cat_name(m->sock_cat[i]));
        index_or_null(w, "group", m->sock_group[i]);
        fixed(w, "created", c->created, 6);
        fixed(w, "age", m->in.now > c->created ? m->in.now - c->created : 0, 3);
        key(w, "idle");
        if (c->idle >= 0)
            jfixed(w, c->idle, 3);
        else
            LIT(w, "null");
        num(w, "tid", c->tid);
        boolean(w, "inherited", c->inherited);
        boolean(w, "before_attach", c->before_attach);
        stack_ref(w, "stack", c->stack);
        stack_ref(w, "pystack", c->pystack);
        num(w, "seq", (long long)c->seq);
        context_of(w, "context", c->attr, c->seq);
        LIT(w, "}");
    }
    LIT(w, "]");
}

static void handles(jw *w, const ls_model *m)
{
    LIT(w, ",\"handles\":[");
    for (size_t i = 0; i < m->snap->nhandles; i++) {
        const ls_handle_view *h = &m->snap->handles[i];
        if (i)
            LIT(w, ",");
        LIT(w, "{\"handle\":");
        jaddr(w, h->handle);
        str(w, "driver", ls_driver_name(h->driver));
        str(w, "kind", h->kind == LS_HK_POOL ? "pool" : "client");
        str(w, "type", ls_handle_type(h->driver, h->kind));
        opt_addr(w, "pool", h->pool);
        boolean(w, "freed", h->freed);
        boolean(w, "inherited", h->inherited);
        num(w, "open_sockets", h->open_socks);
        num(w, "sockets_ever", h->socks_ever);
        num(w, "closed_sockets", h->closed_socks);
        num(w, "moved_sockets", h->moved_socks);
        str(w, "category", ls_cat_name(m->hand_cat[i]));
        index_or_null(w, "group", m->hand_group[i]);
        fixed(w, "created", h->created, 6);
        fixed(w, "age", m->in.now > h->created ? m->in.now - h->created : 0, 3);
        boolean(w, "checked_out", h->checked_out);
        key(w, "checkout_age");
        if (h->checked_out)
            jfixed(w, m->in.now > h->checkout_time ? m->in.now - h->checkout_time : 0, 3);
        else
            LIT(w, "null");
        num(w, "tid", h->tid);
        stack_ref(w, "stack", h->stack);
        stack_ref(w, "pystack", h->pystack);
        stack_ref(w, "checkout_stack", h->co_stack);
        stack_ref(w, "checkout_pystack", h->co_pystack);
        num(w, "seq", (long long)h->seq);
        context_of(w, "context", h->attr, h->seq);
        context_of(w, "checkout_context", h->checked_out ? h->co_attr : 0, h->co_seq);
        LIT(w, "}");
    }
    LIT(w, "]");
}

static void frame_class(jw *w, const ls_mframe *f)
{
    str(w, "class", ls_fclass_name(f->fclass));
    str(w, "library", f->fclass == LS_FC_USER ? NULL : f->lib);
}

static void src_line(jw *w, int line)
{
    key(w, "line");
    if (line > 0)
        jint(w, line);
    else
        LIT(w, "null");
}

/* Native: one entry per captured address (what offline symbolizers take), the functions inlined
 * there listed inside it. */
static void native_frames(jw *w, const ls_mstack *s)
{
    LIT(w, "\"frames\":[");
    for (int i = 0, raw = 0; i < s->n; raw++) {
        int j = i;
        while (j < s->n - 1 && s->f[j].raw == s->f[j + 1].raw)
            j++; /* s->f[j]: the containing function; i..j-1 inlined into it */
        const ls_mframe *f = &s->f[j];
        const ls_sym *y = f->sym;
        if (raw)
            LIT(w, ",");
        LIT(w, "{\"pc\":");
        jaddr(w, (uintptr_t)f->pc);
        str(w, "module", y->module);
        addr(w, "offset", y->offset);
        str(w, "build_id", y->build_id[0] ? y->build_id : NULL);
        str(w, "symbol", y->symbol[0] ? y->symbol : NULL);
        num(w, "sym_off", (long long)y->sym_off);
        str(w, "file", y->src_file[0] ? y->src_file : NULL);
        src_line(w, y->src_line);
        frame_class(w, f);
        LIT(w, ",\"inlined\":[");
        for (int k = i; k < j; k++) {
            const ls_sym *z = s->f[k].sym;
            if (k > i)
                LIT(w, ",");
            LIT(w, "{\"symbol\":");
            jstr(w, z->symbol[0] ? z->symbol : NULL);
            str(w, "file", z->src_file[0] ? z->src_file : NULL);
            src_line(w, z->src_line);
            LIT(w, "}");
        }
        LIT(w, "]}");
        i = j + 1;
    }
    LIT(w, "]");
}

static void stacks(jw *w, const ls_model *m)
{
    LIT(w, ",\"stacks\":{");
    for (size_t i = 0; i < m->nstacks; i++) {
        const ls_mstack *s = &m->stacks[i];
        if (i)
            LIT(w, ",");
        LIT(w, "\"");
        jint(w, s->id);
        LIT(w, "\":{\"created\":");
        jint(w, (long long)s->created);
        boolean(w, "python", s->py);
        index_or_null(w, "user_frame", s->user >= 0 ? s->f[s->user].raw : -1);
        LIT(w, ",");
        if (!s->py) {
            native_frames(w, s);
        } else {
            LIT(w, "\"pyframes\":[");
            for (int k = 0; k < s->n; k++) {
                const ls_mframe *f = &s->f[k];
                if (k)
                    LIT(w, ",");
                LIT(w, "{\"file\":");
                jstr(w, f->file);
                str(w, "func", f->func);
                num(w, "line", f->line);
                frame_class(w, f);
                LIT(w, "}");
            }
            LIT(w, "]");
        }
        LIT(w, "}");
    }
    LIT(w, "}");
}

void ls_render_json(ls_buf *b, const ls_model *m)
{
    jw *w = malloc(sizeof *w);
    if (!w) {
        b->oom = 1;
        return;
    }
    w->b = b;
    w->n = 0;
    header(w, m);
    contexts(w, "contexts", m->byctx, m->nbyctx);
    groups(w, m);
    suspects_pools_churn(w, m);
    sockets(w, m);
    handles(w, m);
    stacks(w, m);
    LIT(w, ",\"timeline\":[");
    for (size_t i = 0; i < m->in.ntimeline; i++) {
        const ls_tl_sample *t = &m->in.timeline[i];
        if (i)
            LIT(w, ",");
        LIT(w, "{\"t\":");
        jfixed(w, t->t, 3);
        num(w, "live", t->live);
        num(w, "checked_out", t->checked_out);
        num(w, "created", (long long)t->created);
        LIT(w, ",\"groups\":[");
        for (size_t k = 0; k < m->in.ntl_groups; k++) {
            int slot = m->in.tl_groups[k].other ? LS_TL_GROUPS : (int)k;
            const ls_tl_gcount *g = &t->g[slot];
            int known = slot == LS_TL_GROUPS || slot < t->ngroups;
            if (k)
                LIT(w, ",");
            LIT(w, "[");
            jint(w, known ? g->live : 0);
            LIT(w, ",");
            jint(w, known ? g->checked_out : 0);
            LIT(w, ",");
            jint(w, known ? g->created : 0);
            LIT(w, "]");
        }
        LIT(w, "]}");
    }
    LIT(w, "],\"timeline_groups\":[");
    for (size_t k = 0; k < m->in.ntl_groups; k++) {
        const ls_tl_group *g = &m->in.tl_groups[k];
        if (k)
            LIT(w, ",");
        if (g->other)
            LIT(w, "{\"other\":true");
        else
            LIT(w, "{\"other\":false");
        stack_ref(w, "stack", g->other ? 0 : g->stack);
        opt_addr(w, "pool", g->other ? 0 : g->pool);
        str(w, "driver", g->other ? NULL : ls_driver_name(g->driver));
        index_or_null(w, "group", m->tl_group ? m->tl_group[k] : -1);
        LIT(w, "}");
    }
    LIT(w, "]}\n");
    flush(w);
    free(w);
}

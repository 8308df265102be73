/* Reports: one builder produces the text (LeakSanitizer's shape: groups by stack, largest first,
 * summary line last) and the JSON (schema "leakshim": 1) from the same grouped data. Runs in the
 * reporter thread, in atexit or in Python's atexit: never in a signal handler. */
#include "leakshim.h"
#include "ls_outfile.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum cat {
    C_LEAK,         /* plain socket, no driver handle */
    C_HANDLE_LEAK,  /* driver handle never freed */
    C_ORPHANED,     /* handle freed, socket still open */
    C_CLOSED_UNDER, /* socket closed under a still-live handle */
    C_CHECKOUT,     /* checked out of a pool, never returned */
    C_POOL,         /* quiet: pool not closed at shutdown */
    C_BACKGROUND,   /* quiet: driver monitoring */
    C_LIVE,         /* snapshot: live socket */
    C_NCAT
};
static const char *const cat_names[C_NCAT] = {
    "leak",          "handle-leak",   "orphaned-socket", "closed-under-handle",
    "checkout-leak", "pool-unclosed", "background",      "live",
};
static int cat_counts_as_leak(int c)
{
    return c <= C_CHECKOUT;
}

typedef struct item {
    int cat;
    ls_stack_id stack, pystack;
    int driver;
    const ls_conn_view *conn;     /* may be NULL */
    const ls_handle_view *handle; /* may be NULL */
    int nsocks;                   /* sockets this item holds open */
    double age;
} item;

typedef struct group {
    int cat;
    ls_stack_id stack, pystack;
    int driver;
    int count, nsocks;
    int suppressed;
    size_t first, n; /* range in the sorted items */
} group;

/* ------------------------------------------------------------------ formatting helpers */

static void fmt_addr(const struct sockaddr_storage *ss, socklen_t len, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    if (len == 0) {
        snprintf(out, cap, "?");
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, cap, "%s:%d", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
        snprintf(out, cap, "[%s]:%d", host, ntohs(in->sin6_port));
    } else if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
        size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n > sizeof un->sun_path)
            n = sizeof un->sun_path;
        if (n && !un->sun_path[0])
            snprintf(out, cap, "@%.*s", (int)(n - 1), un->sun_path + 1);
        else
            snprintf(out, cap, "%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
    } else {
        snprintf(out, cap, "family %d", ss->ss_family);
    }
}

static void fmt_local(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int h = ls_host_fd(fd);
    int r = h < 0 ? -1 : getsockname(h, (struct sockaddr *)&ss, &len);
    ls_host_fd_done(fd, h);
    if (r != 0)
        snprintf(out, cap, "?");
    else
        fmt_addr(&ss, len, out, cap);
}

static const char *family_name(int f)
{
    return f == AF_INET ? "inet" : f == AF_INET6 ? "inet6" : f == AF_UNIX ? "unix" : "other";
}

static const char *handle_type(int driver, int kind)
{
    switch (driver) {
    case LS_DRV_LIBPQ: return "PGconn";
    case LS_DRV_HIREDIS: return "redisContext";
    case LS_DRV_MONGOC: return kind == LS_HK_POOL ? "mongoc_client_pool_t" : "mongoc_client_t";
    case LS_DRV_MYSQL: return "MYSQL";
    default: return kind == LS_HK_POOL ? "pool" : "connection";
    }
}

static const char *plural(int n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

static int is_interpreter(const char *module)
{
    const char *base = strrchr(module, '/');
    base = base ? base + 1 : module;
    return !strncmp(base, "python", 6) || !strncmp(base, "libpython", 9);
}

static void text_stack(ls_buf *b, ls_stack_id py, ls_stack_id nat, const char *indent)
{
    int k = 0;
    const ls_stack *s = ls_stack_get(py);
    if (s)
        for (int i = 0; i < s->n; i++)
            ls_buf_printf(b, "%s#%d %s:%d in %s\n", indent, k++, s->pyframes[i].file ? s->pyframes[i].file : "?",
                          s->pyframes[i].line, s->pyframes[i].func ? s->pyframes[i].func : "?");
    int have_py = k > 0;
    s = ls_stack_get(nat);
    if (s)
        for (int i = 0; i < s->n; i++) {
            ls_sym sym;
            ls_symbolize(s->frames[i], &sym);
            if (have_py && is_interpreter(sym.module)) {
                /* below here it is the interpreter's eval loop: the Python frames above say it */
                ls_buf_printf(b, "%s#%d ... %d interpreter frames (full list in the JSON report)\n", indent, k++,
                              s->n - i);
                break;
            }
            if (sym.symbol[0])
                ls_buf_printf(b, "%s#%d %p in %s+0x%lx (%s+0x%lx)\n", indent, k++, s->frames[i], sym.symbol,
                              (unsigned long)sym.sym_off, sym.module, (unsigned long)sym.offset);
            else
                ls_buf_printf(b, "%s#%d %p (%s+0x%lx)\n", indent, k++, s->frames[i], sym.module,
                              (unsigned long)sym.offset);
        }
    if (k == 0)
        ls_buf_printf(b, "%s<no stack>\n", indent);
}

/* The first few meaningful frames on one line, for the churn table. */
/* Library code (the driver's own frames) is not where the user looks first. */
static int is_library_file(const char *f)
{
    return f && (strstr(f, "/dist-packages/") || strstr(f, "/site-packages/") || !strncmp(f, "/usr/lib/python", 15) ||
                 f[0] == '<');
}

static void short_stack(ls_buf *b, ls_stack_id py, ls_stack_id nat)
{
    const ls_stack *s = ls_stack_get(py);
    int shown = 0, first = 0;
    while (s && first < s->n && is_library_file(s->pyframes[first].file))
        first++;
    if (s && first == s->n)
        first = 0;
    if (s)
        for (int i = first; i < s->n && shown < 3; i++, shown++)
            ls_buf_printf(b, "%s%s:%d %s", shown ? " < " : "", s->pyframes[i].file, s->pyframes[i].line,
                          s->pyframes[i].func);
    s = ls_stack_get(nat);
    if (s && !shown)
        for (int i = 0; i < s->n && shown < 3; i++) {
            ls_sym sym;
            ls_symbolize(s->frames[i], &sym);
            const char *base = strrchr(sym.module, '/');
            base = base ? base + 1 : sym.module;
            if (sym.symbol[0])
                ls_buf_printf(b, "%s%s (%s)", shown ? " < " : "", sym.symbol, base);
            else
                ls_buf_printf(b, "%s%s+0x%lx", shown ? " < " : "", base, (unsigned long)sym.offset);
            shown++;
        }
    if (!shown)
        ls_buf_puts(b, "<no stack>");
}

/* ------------------------------------------------------------------ items and groups */

static int cmp_item(const void *a, const void *b)
{
    const item *x = a, *y = b;
    if (x->cat != y->cat)
        return x->cat - y->cat;
    /* With a Python stack, it alone says where: CPython 3.11 specialises call sites, so the same
     * Python line shows different native return addresses. */
    if (x->pystack != y->pystack)
        return x->pystack < y->pystack ? -1 : 1;
    if (!x->pystack && x->stack != y->stack)
        return x->stack < y->stack ? -1 : 1;
    if (x->driver != y->driver)
        return x->driver - y->driver;
    return x->age > y->age ? -1 : x->age < y->age; /* oldest first inside a group */
}

static int cmp_group(const void *a, const void *b)
{
    const group *x = a, *y = b;
    int qx = !cat_counts_as_leak(x->cat), qy = !cat_counts_as_leak(y->cat);
    if (qx != qy)
        return qx - qy;
    if (x->count != y->count)
        return y->count - x->count; /* largest group first */
    return x->cat - y->cat;
}

/* s->handles is sorted by address (ls_registry_snapshot). */
static const ls_handle_view *find_handle(const ls_snapshot *s, uintptr_t h)
{
    size_t lo = 0, hi = s->nhandles;
    while (h && lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->handles[mid].handle == h)
            return &s->handles[mid];
        if (s->handles[mid].handle < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int is_live_pool(const ls_snapshot *s, uintptr_t pool)
{
    const ls_handle_view *p = find_handle(s, pool);
    return p && p->kind == LS_HK_POOL && !p->freed;
}

/* What a live handle means at exit; -1 = nothing to report for it. */
static int handle_category(const ls_snapshot *s, const ls_handle_view *h)
{
    if (h->freed || h->inherited)
        return -1;
    if (h->kind == LS_HK_POOL)
        return C_POOL;
    if (h->checked_out)
        return C_CHECKOUT;
    if (h->pool && is_live_pool(s, h->pool))
        return -1; /* idle in a pool: shown with its pool */
    if (h->open_socks > 0)
        return C_HANDLE_LEAK;
    if (h->closed_socks > 0)
        return C_CLOSED_UNDER;
    if (h->moved_socks > 0)
        return -1;        /* its socket is reported under the handle that took it over */
    return C_HANDLE_LEAK; /* never connected, still never freed */
}

/* Classifies everything in the snapshot into items. kind 0 = exit, 1 = snapshot. */
static size_t make_items(const ls_snapshot *s, int kind, double now, item *it)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nconns; i++) {
        const ls_conn_view *c = &s->conns[i];
        if (c->inherited && kind == 0)
            continue; /* the parent owns it and reports it */
        item x = {.stack = c->stack,
                  .pystack = c->pystack,
                  .driver = c->driver,
                  .conn = c,
                  .nsocks = 1,
                  .age = now - c->created};
        const ls_handle_view *h = find_handle(s, c->handle);
        if (kind == 1) {
            x.cat = c->background ? C_BACKGROUND : C_LIVE;
            if (h && !h->freed && h->stack) { /* the application's stack, not the driver's insides */
                x.stack = h->stack;
                x.pystack = h->pystack;
            }
        } else if (c->background)
            x.cat = C_BACKGROUND;
        else if (!c->handle)
            x.cat = C_LEAK;
        else if (!h || h->freed)
            x.cat = C_ORPHANED;
        else
            continue; /* reported through its handle */
        it[n++] = x;
    }
    if (kind == 1)
        return n;
    for (size_t i = 0; i < s->nhandles; i++) {
        const ls_handle_view *h = &s->handles[i];
        int cat = handle_category(s, h);
        if (cat < 0)
            continue;
        item x = {.cat = cat,
                  .stack = h->stack,
                  .pystack = h->pystack,
                  .driver = h->driver,
                  .handle = h,
                  .nsocks = h->open_socks,
                  .age = now - h->created};
        if (cat == C_CHECKOUT) {
            x.stack = h->co_stack;
            x.pystack = h->co_pystack;
            x.age = now - h->checkout_time;
        }
        it[n++] = x;
    }
    return n;
}

static size_t make_groups(item *it, size_t n, group *g)
{
    qsort(it, n, sizeof *it, cmp_item);
    size_t ng = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ng || g[ng - 1].cat != it[i].cat || g[ng - 1].pystack != it[i].pystack ||
            (!it[i].pystack && g[ng - 1].stack != it[i].stack) || g[ng - 1].driver != it[i].driver) {
            g[ng] = (group){
                .cat = it[i].cat, .stack = it[i].stack, .pystack = it[i].pystack, .driver = it[i].driver, .first = i};
            ng++;
        }
        group *cur = &g[ng - 1];
        cur->n++;
        cur->count++;
        cur->nsocks += it[i].nsocks;
    }
    for (size_t i = 0; i < ng; i++)
        if (cat_counts_as_leak(g[i].cat))
            g[i].suppressed = ls_stack_suppressed(g[i].stack) || ls_stack_suppressed(g[i].pystack);
    qsort(g, ng, sizeof *g, cmp_group);
    return ng;
}

/* The peer of a group's first socket (or of the first socket of its first handle). */
static const ls_conn_view *group_conn(const ls_snapshot *s, const item *it, const group *g)
{
    for (size_t i = g->first; i < g->first + g->n; i++) {
        if (it[i].conn)
            return it[i].conn;
        for (size_t j = 0; it[i].handle && j < s->nconns; j++)
            if (s->conns[j].handle == it[i].handle->handle)
                return &s->conns[j];
    }
    return NULL;
}

static void group_title(ls_buf *b, const ls_snapshot *s, const item *it, const group *g)
{
    const ls_conn_view *c = group_conn(s, it, g);
    char peer[160] = "";
    if (c)
        fmt_addr(&c->peer, c->peerlen, peer, sizeof peer);
    const char *svc = ls_service_name(g->driver, c ? (const struct sockaddr *)&c->peer : NULL, c ? c->peerlen : 0);
    const char *drv = ls_driver_name(g->driver);
    const char *to = peer[0] ? " to " : "";
    int n = g->count;
    switch (g->cat) {
    case C_LEAK:
        ls_buf_printf(b, "%d %s %s%s%s (%s) leaked, created at:\n", n, svc, plural(n, "connection", "connections"), to,
                      peer, drv);
        break;
    case C_HANDLE_LEAK:
        ls_buf_printf(b, "%d %s %s (%s) never freed, holding %d open %s %s%s%s; created at:\n", n, drv,
                      plural(n, "handle", "handles"), handle_type(g->driver, 0), g->nsocks, svc,
                      plural(g->nsocks, "connection", "connections"), to, peer);
        break;
    case C_ORPHANED:
        ls_buf_printf(b, "%d %s %s%s%s still open after its %s handle was freed (%s), created at:\n", n, svc,
                      plural(n, "connection", "connections"), to, peer, drv, "handle freed, socket still open");
        break;
    case C_CLOSED_UNDER:
        ls_buf_printf(b, "%d %s %s (%s) still live after %s socket was closed under %s, created at:\n", n, drv,
                      plural(n, "handle", "handles"), handle_type(g->driver, 0), plural(n, "its", "their"),
                      plural(n, "it", "them"));
        break;
    case C_CHECKOUT:
        ls_buf_printf(b, "%d %s %s%s%s (%s) checked out of a pool and never returned, checked out at:\n", n, svc,
                      plural(n, "connection", "connections"), to, peer, drv);
        break;
    case C_POOL: {
        int idle = 0;
        for (size_t i = g->first; i < g->first + g->n; i++)
            for (size_t j = 0; j < s->nhandles; j++)
                if (s->handles[j].pool == it[i].handle->handle && s->handles[j].kind == LS_HK_CLIENT &&
                    !s->handles[j].freed)
                    idle++;
        ls_buf_printf(b, "%d %s %s not closed at shutdown (%d %s), created at:\n", n, drv, plural(n, "pool", "pools"),
                      idle, plural(idle, "client", "clients"));
        break;
    }
    case C_BACKGROUND:
        ls_buf_printf(b, "%d %s background %s%s%s (driver monitoring, not a leak), created at:\n", n, drv,
                      plural(n, "socket", "sockets"), to, peer);
        break;
    default:
        ls_buf_printf(b, "%d live %s %s%s%s (%s), created at:\n", n, svc, plural(n, "connection", "connections"), to,
                      peer, drv);
    }
}

/* ------------------------------------------------------------------ churn (creations per stack) */

typedef struct churn {
    ls_stack_id id;
    uint64_t created;
    int live;
} churn;

static int cmp_churn(const void *a, const void *b)
{
    const churn *x = a, *y = b;
    return x->created < y->created ? 1 : x->created > y->created ? -1 : (int)x->id - (int)y->id;
}

/* Stacks that created sockets or handles, most first. A Python stack counts on its own. */
static size_t make_churn(const ls_snapshot *s, churn **out)
{
    size_t total = ls_stack_total(), n = 0;
    churn *c = calloc(total + 1, sizeof *c);
    int *live = calloc(total + 1, sizeof *live); /* by stack id: one pass over the snapshot */
    *out = c;
    if (!c || !live) {
        free(live);
        return 0;
    }
#define LIVE_AT(id)                                                                                                    \
    do {                                                                                                               \
        if ((id) && (id) <= total)                                                                                     \
            live[(id)]++;                                                                                              \
    } while (0)
    for (size_t i = 0; i < s->nconns; i++) {
        const ls_conn_view *v = &s->conns[i];
        const ls_handle_view *h = find_handle(s, v->handle);
        if (h && !h->freed)
            continue; /* a socket with a live handle counts as its handle */
        LIVE_AT(v->stack);
        if (v->pystack != v->stack)
            LIVE_AT(v->pystack);
    }
    for (size_t i = 0; i < s->nhandles; i++) {
        if (s->handles[i].freed)
            continue;
        LIVE_AT(s->handles[i].stack);
        if (s->handles[i].pystack != s->handles[i].stack)
            LIVE_AT(s->handles[i].pystack);
    }
#undef LIVE_AT
    for (ls_stack_id id = 1; id <= total; id++) {
        const ls_stack *st = ls_stack_get(id);
        if (!st || !st->created)
            continue;
        c[n].id = id;
        c[n].created = st->created;
        c[n].live = live[id];
        n++;
    }
    free(live);
    qsort(c, n, sizeof *c, cmp_churn);
    return n;
}

/* ------------------------------------------------------------------ JSON */

typedef struct idset {
    ls_stack_id *ids;
    size_t n, cap;
} idset;

static void idset_add(idset *s, ls_stack_id id)
{
    if (!id)
        return;
    for (size_t i = 0; i < s->n; i++)
        if (s->ids[i] == id)
            return;
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        ls_stack_id *n = realloc(s->ids, nc * sizeof *n);
        if (!n)
            return;
        s->ids = n;
        s->cap = nc;
    }
    s->ids[s->n++] = id;
}

static void json_stack_ref(ls_buf *b, const char *key, ls_stack_id id)
{
    ls_buf_puts(b, ",\"");
    ls_buf_puts(b, key);
    ls_buf_puts(b, "\":");
    if (id)
        ls_buf_fixed(b, id, 0);
    else
        ls_buf_puts(b, "null");
}

static void json_stacks(ls_buf *b, idset *ids)
{
    ls_buf_puts(b, ",\"stacks\":{");
    for (size_t i = 0; i < ids->n; i++) {
        const ls_stack *s = ls_stack_get(ids->ids[i]);
        if (!s)
            continue;
        ls_buf_printf(b, "%s\"%u\":{\"created\":%llu,\"python\":%s,", i ? "," : "", s->id,
                      (unsigned long long)s->created, s->is_py ? "true" : "false");
        ls_buf_puts(b, s->is_py ? "\"pyframes\":[" : "\"frames\":[");
        for (int k = 0; k < s->n; k++) {
            if (k)
                ls_buf_puts(b, ",");
            if (s->is_py) {
                ls_buf_puts(b, "{\"file\":");
                ls_buf_json_str(b, s->pyframes[k].file);
                ls_buf_puts(b, ",\"func\":");
                ls_buf_json_str(b, s->pyframes[k].func);
                ls_buf_printf(b, ",\"line\":%d}", s->pyframes[k].line);
            } else {
                ls_sym sym;
                ls_symbolize(s->frames[k], &sym);
                ls_buf_printf(b, "{\"pc\":\"%p\",\"module\":", s->frames[k]);
                ls_buf_json_str(b, sym.module);
                ls_buf_printf(b, ",\"offset\":\"0x%lx\",\"build_id\":", (unsigned long)sym.offset);
                ls_buf_json_str(b, sym.build_id[0] ? sym.build_id : NULL);
                ls_buf_puts(b, ",\"symbol\":");
                ls_buf_json_str(b, sym.symbol[0] ? sym.symbol : NULL);
                ls_buf_printf(b, ",\"sym_off\":%lu}", (unsigned long)sym.sym_off);
            }
        }
        ls_buf_puts(b, "]}");
    }
    ls_buf_puts(b, "}");
}

/* ------------------------------------------------------------------ timeline */

#define TL_MAX 4096
static struct {
    double t;
    int live, checked_out;
} timeline[TL_MAX];
static size_t tl_next, tl_count;
static pthread_mutex_t tl_lock = PTHREAD_MUTEX_INITIALIZER;

void ls_timeline_sample(void)
{
    ls_snapshot s;
    if (ls_registry_snapshot(&s, 0) < 0)
        return;
    int co = 0;
    for (size_t i = 0; i < s.nhandles; i++)
        co += s.handles[i].checked_out;
    pthread_mutex_lock(&tl_lock);
    timeline[tl_next].t = ls_now();
    timeline[tl_next].live = (int)s.nconns;
    timeline[tl_next].checked_out = co;
    tl_next = (tl_next + 1) % TL_MAX;
    if (tl_count < TL_MAX)
        tl_count++;
    pthread_mutex_unlock(&tl_lock);
    ls_registry_snapshot_free(&s);
}

static void json_timeline(ls_buf *b)
{
    ls_buf_puts(b, ",\"timeline\":[");
    pthread_mutex_lock(&tl_lock);
    size_t start = (tl_next + TL_MAX - tl_count) % TL_MAX;
    for (size_t i = 0; i < tl_count; i++) {
        size_t k = (start + i) % TL_MAX;
        ls_buf_printf(b, "%s{\"t\":%.3f,\"live\":%d,\"checked_out\":%d}", i ? "," : "", timeline[k].t, timeline[k].live,
                      timeline[k].checked_out);
    }
    pthread_mutex_unlock(&tl_lock);
    ls_buf_puts(b, "]");
}

/* ------------------------------------------------------------------ the builder */

#define TEXT_SOCKETS_PER_GROUP 20

void ls_report_build(ls_buf *text, ls_buf *json, int kind, int *leaks_out)
{
    ls_snapshot s;
    double now = ls_now();
    int pid = (int)getpid();
    if (ls_registry_snapshot(&s, kind == 1 ? 2 : 1) < 0) {
        if (text)
            ls_buf_puts(text, "leakshim: out of memory while building the report\n");
        if (leaks_out)
            *leaks_out = 0;
        return;
    }
    size_t cap = s.nconns + s.nhandles + 1;
    item *it = calloc(cap, sizeof *it);
    group *g = calloc(cap, sizeof *g);
    churn *ch = NULL;
    size_t n = it && g ? make_items(&s, kind, now, it) : 0;
    size_t ng = it && g ? make_groups(it, n, g) : 0;
    size_t nch = make_churn(&s, &ch);

    int leaks = 0, leak_groups = 0, suppressed = 0, live = 0, checked_out = 0;
    for (size_t i = 0; i < ng; i++) {
        if (!cat_counts_as_leak(g[i].cat))
            continue;
        if (g[i].suppressed)
            suppressed += g[i].count;
        else
            leaks += g[i].count, leak_groups++;
    }
    for (size_t i = 0; i < s.nconns; i++)
        live += !s.conns[i].inherited;
    for (size_t i = 0; i < s.nhandles; i++)
        checked_out += s.handles[i].checked_out && !s.handles[i].freed;

    /* ---- text */
    if (text) {
        if (kind == 0 && leaks) {
            ls_buf_puts(text, "=================================================================\n");
            ls_buf_printf(text, "==%d==ERROR: leakshim: detected leaked database connections\n\n", pid);
        } else if (kind == 1) {
            ls_buf_puts(text, "=================================================================\n");
            ls_buf_printf(text, "==%d==leakshim: snapshot: %d live database %s, %d checked out of pools\n\n", pid, live,
                          plural(live, "socket", "sockets"), checked_out);
        }
        if (kind == 1) {
            /* Suspects first: long checkouts, long idle sockets, stacks creating many clients. */
            int ns = 0;
            for (size_t i = 0; i < s.nhandles; i++) {
                const ls_handle_view *h = &s.handles[i];
                double age = now - h->checkout_time;
                if (h->checked_out && !h->freed && age > ls_opt.threshold) {
                    if (!ns++)
                        ls_buf_puts(text, "Suspects:\n");
                    ls_buf_printf(text, "  %s %s %#lx checked out for %.1fs (threshold %gs), checked out at:\n",
                                  ls_driver_name(h->driver), handle_type(h->driver, h->kind), (unsigned long)h->handle,
                                  age, ls_opt.threshold);
                    text_stack(text, h->co_pystack, h->co_stack, "    ");
                }
            }
            for (size_t i = 0; i < s.nconns; i++) {
                const ls_conn_view *c = &s.conns[i];
                if (c->state == LS_ST_IN_USE && c->idle >= 0 && c->idle > ls_opt.threshold && !c->background) {
                    char peer[160];
                    fmt_addr(&c->peer, c->peerlen, peer, sizeof peer);
                    if (!ns++)
                        ls_buf_puts(text, "Suspects:\n");
                    ls_buf_printf(text, "  fd %d to %s (%s) open and idle for %.1fs (threshold %gs), created at:\n",
                                  c->fd, peer, ls_driver_name(c->driver), c->idle, ls_opt.threshold);
                    text_stack(text, c->pystack, c->stack, "    ");
                }
            }
            for (size_t i = 0; i < nch && i < 3; i++) {
                if (ch[i].created < 10 || ch[i].created < 2u * (uint64_t)(ch[i].live + 1))
                    continue;
                if (!ns++)
                    ls_buf_puts(text, "Suspects:\n");
                ls_buf_printf(text,
                              "  %llu database connections or clients created from one stack (%d live): "
                              "a client or pool per request?\n    ",
                              (unsigned long long)ch[i].created, ch[i].live);
                short_stack(text, ls_stack_get(ch[i].id) && ls_stack_get(ch[i].id)->is_py ? ch[i].id : 0,
                            ls_stack_get(ch[i].id) && !ls_stack_get(ch[i].id)->is_py ? ch[i].id : 0);
                ls_buf_puts(text, "\n");
            }
            if (ns)
                ls_buf_puts(text, "\n");
            if (checked_out) {
                ls_buf_puts(text, "Checked out of pools (oldest first):\n");
                /* simple selection by age: the list is short */
                int done = 0;
                double last = 1e300;
                while (done < checked_out) {
                    const ls_handle_view *best = NULL;
                    for (size_t i = 0; i < s.nhandles; i++) {
                        const ls_handle_view *h = &s.handles[i];
                        if (h->checked_out && !h->freed && h->checkout_time < last &&
                            (!best || h->checkout_time > best->checkout_time))
                            best = h;
                    }
                    if (!best)
                        break;
                    last = best->checkout_time;
                    ls_buf_printf(text, "  %.1fs  %s %s %#lx from pool %#lx, checked out at:\n",
                                  now - best->checkout_time, ls_driver_name(best->driver),
                                  handle_type(best->driver, best->kind), (unsigned long)best->handle,
                                  (unsigned long)best->pool);
                    text_stack(text, best->co_pystack, best->co_stack, "    ");
                    done++;
                }
                ls_buf_puts(text, "\n");
            }
            for (size_t i = 0; i < s.nhandles; i++) {
                const ls_handle_view *p = &s.handles[i];
                if (p->kind != LS_HK_POOL || p->freed)
                    continue;
                int clients = 0, co = 0;
                for (size_t j = 0; j < s.nhandles; j++)
                    if (s.handles[j].pool == p->handle && s.handles[j].kind == LS_HK_CLIENT && !s.handles[j].freed)
                        clients++, co += s.handles[j].checked_out;
                ls_buf_printf(text, "Pool %#lx (%s): %d %s, %d checked out, %d idle\n", (unsigned long)p->handle,
                              ls_driver_name(p->driver), clients, plural(clients, "client", "clients"), co,
                              clients - co);
            }
        }
        for (size_t i = 0; i < ng; i++) {
            if (!cat_counts_as_leak(g[i].cat) && kind == 0)
                continue;
            if (g[i].suppressed)
                continue;
            group_title(text, &s, it, &g[i]);
            text_stack(text, g[i].pystack, g[i].stack, "    ");
            if (kind == 1) {
                for (size_t k = g[i].first; k < g[i].first + g[i].n && k < g[i].first + TEXT_SOCKETS_PER_GROUP; k++) {
                    const ls_conn_view *c = it[k].conn;
                    char peer[160], local[160];
                    fmt_addr(&c->peer, c->peerlen, peer, sizeof peer);
                    fmt_local(c->fd, local, sizeof local);
                    ls_buf_printf(text, "      fd %-4d %-12s age %7.1fs idle %s%.1fs  %s -> %s  handle %#lx\n", c->fd,
                                  ls_state_name(c->state), now - c->created, c->idle < 0 ? "?" : "",
                                  c->idle < 0 ? 0.0 : c->idle, local, peer, (unsigned long)c->handle);
                }
                if (g[i].n > TEXT_SOCKETS_PER_GROUP)
                    ls_buf_printf(text, "      ... and %zu more (all of them are in the JSON report)\n",
                                  g[i].n - TEXT_SOCKETS_PER_GROUP);
            }
            ls_buf_puts(text, "\n");
        }
        /* The quiet section: not leaks, but what a user asks next. */
        int quiet = 0;
        for (size_t i = 0; i < ng && kind == 0; i++) {
            if (cat_counts_as_leak(g[i].cat) && !g[i].suppressed)
                continue;
            if (!quiet++)
                ls_buf_puts(text, "-----------------------------------------------------------------\n"
                                  "Not counted as leaks:\n");
            if (g[i].suppressed)
                ls_buf_printf(text, "  suppressed: %d %s (%s)\n", g[i].count, cat_names[g[i].cat],
                              ls_driver_name(g[i].driver));
            else {
                ls_buf_puts(text, "  ");
                group_title(text, &s, it, &g[i]);
                ls_buf_puts(text, "    ");
                short_stack(text, g[i].pystack, g[i].stack);
                ls_buf_puts(text, "\n");
            }
        }
        /* Rows that read the same (stacks differing only inside libraries) are merged. */
        size_t nrows = nch < 200 ? nch : 200, nout = 0;
        struct row {
            ls_buf where;
            uint64_t created;
            int live;
        } *rows = calloc(nrows ? nrows : 1, sizeof *rows);
        for (size_t i = 0; rows && i < nrows; i++) {
            ls_buf w = {0};
            const ls_stack *st = ls_stack_get(ch[i].id);
            short_stack(&w, st && st->is_py ? ch[i].id : 0, st && !st->is_py ? ch[i].id : 0);
            size_t k;
            for (k = 0; k < nout; k++)
                if (w.data && rows[k].where.data && !strcmp(w.data, rows[k].where.data))
                    break;
            if (k < nout) {
                ls_buf_free(&w);
            } else {
                rows[k].where = w;
                nout++;
            }
            rows[k].created += ch[i].created;
            rows[k].live += ch[i].live;
        }
        for (size_t i = 0; rows && i < nout && i < (size_t)ls_opt.top; i++) {
            size_t best = i; /* selection sort: a handful of rows */
            for (size_t k = i + 1; k < nout; k++)
                if (rows[k].created > rows[best].created)
                    best = k;
            struct row t = rows[i];
            rows[i] = rows[best];
            rows[best] = t;
            if (!i)
                ls_buf_printf(
                    text, "%sDatabase connections and clients created per stack (whole run):\n",
                    quiet || kind == 1 ? "" : "-----------------------------------------------------------------\n");
            ls_buf_printf(text, "  %6llu created, %4d live: %s\n", (unsigned long long)rows[i].created, rows[i].live,
                          rows[i].where.data ? rows[i].where.data : "");
        }
        for (size_t i = 0; rows && i < nout; i++)
            ls_buf_free(&rows[i].where);
        free(rows);
        if (kind == 0) {
            if (leaks)
                ls_buf_printf(text, "\nSUMMARY: leakshim: %d leaked database %s in %d %s", leaks,
                              plural(leaks, "connection", "connections"), leak_groups,
                              plural(leak_groups, "group", "groups"));
            else
                ls_buf_printf(text, "leakshim: 0 leaked database connections");
            if (suppressed)
                ls_buf_printf(text, " (%d suppressed)", suppressed);
            ls_buf_puts(text, "\n");
        } else {
            ls_buf_printf(text, "leakshim: snapshot: %d live database %s in %zu %s\n", live,
                          plural(live, "socket", "sockets"), ng, plural((int)ng, "group", "groups"));
        }
    }

    /* ---- JSON (everything the text shows, plus raw frames and every socket) */
    if (json) {
        idset ids = {0};
        char exe[LS_PATH_LEN];
        ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[el > 0 ? el : 0] = 0;
        ls_buf_printf(json, "{\"leakshim\":1,\"kind\":\"%s\",\"pid\":%d,\"time\":%.6f,\"program\":",
                      kind ? "snapshot" : "exit", pid, now);
        ls_buf_json_str(json, exe);
        ls_buf_printf(json, ",\"threshold\":%g,\"sockets\":[", ls_opt.threshold);
        for (size_t i = 0; i < s.nconns; i++) {
            const ls_conn_view *c = &s.conns[i];
            char peer[160], local[160];
            fmt_addr(&c->peer, c->peerlen, peer, sizeof peer);
            fmt_local(c->fd, local, sizeof local);
            const ls_handle_view *h = find_handle(&s, c->handle);
            const char *cat = c->background      ? "background"
                              : c->inherited     ? "inherited"
                              : !c->handle       ? "leak"
                              : (!h || h->freed) ? "orphaned-socket"
                                                 : "owned";
            /* printf-free: this loop runs once per live socket (100k in a big dump) */
            ls_buf_puts(json, i ? ",{\"fd\":" : "{\"fd\":");
            ls_buf_fixed(json, c->fd, 0);
            ls_buf_puts(json, ",\"fds\":[");
            for (int k = 0; k < c->nfds; k++) {
                if (k)
                    ls_buf_puts(json, ",");
                ls_buf_fixed(json, c->fds[k], 0);
            }
            int port = c->peer.ss_family == AF_INET    ? ntohs(((const struct sockaddr_in *)&c->peer)->sin_port)
                       : c->peer.ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)&c->peer)->sin6_port)
                                                       : 0;
            ls_buf_puts(json, "],\"inode\":");
            ls_buf_fixed(json, (double)c->ino, 0);
            ls_buf_puts(json, ",\"family\":\"");
            ls_buf_puts(json, family_name(c->peer.ss_family));
            ls_buf_puts(json, "\",\"peer\":");
            ls_buf_json_str(json, peer);
            ls_buf_puts(json, ",\"local\":");
            ls_buf_json_str(json, local);
            ls_buf_puts(json, ",\"port\":");
            ls_buf_fixed(json, port, 0);
            ls_buf_puts(json, ",\"service\":\"");
            ls_buf_puts(json, ls_service_name(c->driver, (const struct sockaddr *)&c->peer, c->peerlen));
            ls_buf_puts(json, "\",\"driver\":\"");
            ls_buf_puts(json, ls_driver_name(c->driver));
            ls_buf_puts(json, "\",\"handle\":");
            if (c->handle)
                ls_buf_printf(json, "\"%#lx\"", (unsigned long)c->handle);
            else
                ls_buf_puts(json, "null");
            ls_buf_puts(json, ",\"pool\":");
            if (c->pool)
                ls_buf_printf(json, "\"%#lx\"", (unsigned long)c->pool);
            else
                ls_buf_puts(json, "null");
            ls_buf_puts(json, ",\"state\":\"");
            ls_buf_puts(json, ls_state_name(c->state));
            ls_buf_puts(json, "\",\"category\":\"");
            ls_buf_puts(json, cat);
            ls_buf_puts(json, "\",\"created\":");
            ls_buf_fixed(json, c->created, 6);
            ls_buf_puts(json, ",\"age\":");
            ls_buf_fixed(json, now - c->created, 3);
            ls_buf_puts(json, ",\"idle\":");
            if (c->idle >= 0)
                ls_buf_fixed(json, c->idle, 3);
            else
                ls_buf_puts(json, "null");
            ls_buf_puts(json, ",\"tid\":");
            ls_buf_fixed(json, c->tid, 0);
            ls_buf_puts(json, c->inherited ? ",\"inherited\":true" : ",\"inherited\":false");
            json_stack_ref(json, "stack", c->stack);
            json_stack_ref(json, "pystack", c->pystack);
            ls_buf_puts(json, "}");
            idset_add(&ids, c->stack);
            idset_add(&ids, c->pystack);
        }
        ls_buf_puts(json, "],\"handles\":[");
        for (size_t i = 0; i < s.nhandles; i++) {
            const ls_handle_view *h = &s.handles[i];
            int hc = handle_category(&s, h);
            const char *cat = h->freed ? "freed" : hc < 0 ? "live" : cat_names[hc];
            ls_buf_printf(json, "%s{\"handle\":\"%#lx\",\"driver\":\"%s\",\"kind\":\"%s\",\"type\":\"%s\",\"pool\":",
                          i ? "," : "", (unsigned long)h->handle, ls_driver_name(h->driver),
                          h->kind == LS_HK_POOL ? "pool" : "client", handle_type(h->driver, h->kind));
            if (h->pool)
                ls_buf_printf(json, "\"%#lx\"", (unsigned long)h->pool);
            else
                ls_buf_puts(json, "null");
            ls_buf_printf(json,
                          ",\"freed\":%s,\"inherited\":%s,\"open_sockets\":%d,\"sockets_ever\":%d,"
                          "\"closed_sockets\":%d,\"category\":\"%s\",\"created\":%.6f,\"age\":%.3f,"
                          "\"checked_out\":%s,\"checkout_age\":",
                          h->freed ? "true" : "false", h->inherited ? "true" : "false", h->open_socks, h->socks_ever,
                          h->closed_socks, cat, h->created, now - h->created, h->checked_out ? "true" : "false");
            if (h->checked_out)
                ls_buf_printf(json, "%.3f", now - h->checkout_time);
            else
                ls_buf_puts(json, "null");
            ls_buf_printf(json, ",\"tid\":%d", h->tid);
            json_stack_ref(json, "stack", h->stack);
            json_stack_ref(json, "pystack", h->pystack);
            json_stack_ref(json, "checkout_stack", h->co_stack);
            json_stack_ref(json, "checkout_pystack", h->co_pystack);
            ls_buf_puts(json, "}");
            idset_add(&ids, h->stack);
            idset_add(&ids, h->pystack);
            idset_add(&ids, h->co_stack);
            idset_add(&ids, h->co_pystack);
        }
        ls_buf_puts(json, "],\"groups\":[");
        for (size_t i = 0; i < ng; i++) {
            ls_buf title = {0};
            group_title(&title, &s, it, &g[i]);
            if (title.len && title.data[title.len - 1] == '\n')
                title.data[--title.len] = 0;
            ls_buf_printf(json,
                          "%s{\"category\":\"%s\",\"leak\":%s,\"suppressed\":%s,\"count\":%d,\"sockets\":%d,"
                          "\"driver\":\"%s\",\"title\":",
                          i ? "," : "", cat_names[g[i].cat], cat_counts_as_leak(g[i].cat) ? "true" : "false",
                          g[i].suppressed ? "true" : "false", g[i].count, g[i].nsocks, ls_driver_name(g[i].driver));
            ls_buf_json_str(json, title.data ? title.data : "");
            ls_buf_free(&title);
            json_stack_ref(json, "stack", g[i].stack);
            json_stack_ref(json, "pystack", g[i].pystack);
            ls_buf_puts(json, ",\"fds\":[");
            int first = 1;
            for (size_t k = g[i].first; k < g[i].first + g[i].n; k++)
                if (it[k].conn) {
                    ls_buf_printf(json, "%s%d", first ? "" : ",", it[k].conn->fd);
                    first = 0;
                }
            ls_buf_puts(json, "]}");
            idset_add(&ids, g[i].stack);
            idset_add(&ids, g[i].pystack);
        }
        ls_buf_puts(json, "],\"churn\":[");
        for (size_t i = 0; i < nch; i++) {
            const ls_stack *st = ls_stack_get(ch[i].id);
            ls_buf_printf(json, "%s{\"stack\":%u,\"python\":%s,\"created\":%llu,\"live\":%d}", i ? "," : "", ch[i].id,
                          st && st->is_py ? "true" : "false", (unsigned long long)ch[i].created, ch[i].live);
            idset_add(&ids, ch[i].id);
        }
        ls_buf_puts(json, "]");
        json_stacks(json, &ids);
        json_timeline(json);
        ls_buf_printf(json,
                      ",\"summary\":{\"leaks\":%d,\"groups\":%d,\"suppressed\":%d,\"live\":%d,"
                      "\"checked_out\":%d,\"closed_behind_our_back\":%llu}}\n",
                      leaks, leak_groups, suppressed, live, checked_out, (unsigned long long)s.closed_behind);
        free(ids.ids);
    }
    if (leaks_out)
        *leaks_out = leaks;
    free(it);
    free(g);
    free(ch);
    ls_registry_snapshot_free(&s);
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

static int exit_done;
static int exit_leaks = -1;

int ls_exit_leaks(void)
{
    return __atomic_load_n(&exit_leaks, __ATOMIC_ACQUIRE);
}

int ls_report_exit(void)
{
    if (__atomic_exchange_n(&exit_done, 1, __ATOMIC_ACQ_REL))
        return ls_exit_leaks() > 0 ? ls_exit_leaks() : 0;
    ls_buf text = {0}, json = {0};
    int leaks = 0;
    ls_report_build(&text, &json, 0, &leaks);
    emit_report(&text, &json);
    ls_buf_free(&text);
    ls_buf_free(&json);
    __atomic_store_n(&exit_leaks, leaks, __ATOMIC_RELEASE);
    return leaks;
}

void ls_report_reset_after_fork(void)
{
    exit_done = 0;
    exit_leaks = -1;
    pthread_mutex_init(&tl_lock, NULL);
    tl_count = tl_next = 0;
}

/* `kill -USR2`: the snapshot goes to the report destination, in the report's format(s). */
void ls_report_snapshot(void)
{
    ls_buf text = {0}, json = {0};
    ls_report_build(ls_opt.format != LS_FMT_JSON ? &text : NULL, ls_opt.format != LS_FMT_TEXT ? &json : NULL, 1, NULL);
    emit_report(&text, &json);
    ls_buf_free(&text);
    ls_buf_free(&json);
}

/* `leakshim dump`: one format, into b (sent over the private channel, never to a file). */
void ls_report_snapshot_to(ls_buf *b, int json)
{
    ls_report_build(json ? NULL : b, json ? b : NULL, 1, NULL);
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
    for (size_t i = 0; i < s.nhandles; i++) {
        const ls_handle_view *h = &s.handles[i];
        if (!h->checked_out || h->freed || h->inherited || now - h->checkout_time <= ls_opt.threshold)
            continue;
        if (!ls_checkout_mark_warned(h->handle, h->checkout_time))
            continue;
        ls_buf b = {0};
        ls_buf_printf(&b,
                      "leakshim: WARNING: %s %s %#lx checked out of pool %#lx for %.1fs (threshold %gs), "
                      "possible leak; checked out at:\n",
                      ls_driver_name(h->driver), handle_type(h->driver, h->kind), (unsigned long)h->handle,
                      (unsigned long)h->pool, now - h->checkout_time, ls_opt.threshold);
        text_stack(&b, h->co_pystack, h->co_stack, "    ");
        if (ls_opt.format == LS_FMT_JSON) /* a text line would corrupt a JSON-only report file */
            ls_write_host(2, b.data, b.len);
        else
            emit(&b, "");
        ls_buf_free(&b);
    }
    ls_registry_snapshot_free(&s);
}

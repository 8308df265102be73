/* Report model, part 2: a registry snapshot becomes plain data. Every socket and handle gets a
 * category (one vocabulary for sockets, handles and groups); the reported ones become items,
 * grouped by the stack a person would fix (creation stack; checkout stack for checkouts), and the
 * stacks the report shows are resolved. Pools, churn, suspects and the summary are part 3
 * (report_summary.c). No I/O: renderers and unit tests read the result. Runs in the reporter
 * thread or at exit, never in a signal handler. */
#include "ls_report.h"

#include <stdlib.h>
#include <string.h>

#define NONE ((size_t)-1)

/* s->handles is sorted by address (ls_registry_snapshot). */
size_t ls_snap_find_handle(const ls_snapshot *s, uintptr_t h)
{
    size_t lo = 0, hi = s->nhandles;
    while (h && lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->handles[mid].handle == h)
            return mid;
        if (s->handles[mid].handle < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NONE;
}

static double age_of(double now, double t)
{
    return now > t ? now - t : 0; /* clocks step: never a negative age */
}

int ls_checkout_overdue(const ls_handle_view *h, double now, double threshold)
{
    return h->checked_out && !h->freed && !h->inherited && age_of(now, h->checkout_time) > threshold;
}

static ls_mitem *add_item(ls_model *m, int cat, size_t conn, size_t handle)
{
    ls_mitem *it = &m->items[m->nitems++];
    memset(it, 0, sizeof *it);
    it->cat = cat;
    it->group = -1;
    it->conn = conn;
    it->handle = handle;
    const ls_snapshot *s = m->snap;
    if (handle != NONE) {
        const ls_handle_view *h = &s->handles[handle];
        int co = cat == LS_CAT_CHECKOUT_LEAK || cat == LS_CAT_CHECKED_OUT;
        it->stack = co ? h->co_stack : h->stack;
        it->pystack = co ? h->co_pystack : h->pystack;
        it->driver = h->driver;
        it->pool = h->pool;
        it->age = age_of(m->in.now, co ? h->checkout_time : h->created);
        it->over = co && ls_checkout_overdue(h, m->in.now, m->in.threshold);
    } else {
        const ls_conn_view *c = &s->conns[conn];
        it->stack = c->stack;
        it->pystack = c->pystack;
        it->driver = c->driver;
        it->pool = c->pool;
        it->age = age_of(m->in.now, c->created);
        it->nsocks = 1;
    }
    return it;
}

/* ------------------------------------------------------------------ categories and items */

/* Unclosed pools by creating place (driver, then the stack a person would fix). */
typedef struct pool_key {
    uint64_t k1;
    uint32_t k2;
} pool_key;

static pool_key pool_key_of(const ls_handle_view *h)
{
    return (pool_key){((uint64_t)(uint8_t)h->driver << 48) | h->pystack, h->pystack ? 0 : h->stack};
}

static int cmp_pool_key(const void *a, const void *b)
{
    const pool_key *x = a, *y = b;
    if (x->k1 != y->k1)
        return x->k1 < y->k1 ? -1 : 1;
    return x->k2 < y->k2 ? -1 : x->k2 > y->k2;
}

/* Exit: a pool is also what a driver client is (a MongoClient, a redis Redis() with its pool, an
 * asyncpg or psycopg pool, an engine): one never closed at shutdown is quiet, but two or more made
 * at the same place and never closed are a client made per use (per request) and forgotten: a
 * client leak, counted in clients with the sockets they hold. keys: the unclosed pools' keys,
 * sorted; returns how many equal k. */
static size_t pools_alike(const pool_key *keys, size_t n, pool_key k)
{
    size_t lo = 0, hi = n;
    while (lo < hi) { /* the first key >= k */
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_pool_key(&keys[mid], &k) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t c = 0;
    while (lo + c < n && !cmp_pool_key(&keys[lo + c], &k))
        c++;
    return c;
}

/* A socket shared across fork: in the process that made it, used since by another process; in a
 * child that inherited it, used by the child. */
static int fork_shared(const ls_conn_view *c)
{
    return c->inherited ? c->used_here : c->shared > 0;
}

/* A live client handle of this process whose socket is shared across fork is reported as that. */
static int share_handle(ls_model *m, size_t j, int *hand_item, const char *shared)
{
    if (!shared || !shared[j])
        return 0;
    m->hand_cat[j] = LS_CAT_SHARED_FORK;
    hand_item[j] = (int)m->nitems;
    add_item(m, LS_CAT_SHARED_FORK, NONE, j);
    return 1;
}

/* Exit: what a handle left behind is. Items for pools first, so their idle clients can join. */
static void exit_handles(ls_model *m, int *hand_item, const char *shared)
{
    const ls_snapshot *s = m->snap;
    pool_key *keys = malloc((s->nhandles ? s->nhandles : 1) * sizeof *keys);
    size_t nkeys = 0;
    for (size_t j = 0; keys && j < s->nhandles; j++)
        if (s->handles[j].kind == LS_HK_POOL && !s->handles[j].inherited && !s->handles[j].freed)
            keys[nkeys++] = pool_key_of(&s->handles[j]);
    if (nkeys)
        qsort(keys, nkeys, sizeof *keys, cmp_pool_key);
    for (size_t j = 0; j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        hand_item[j] = -1;
        m->hand_cat[j] = h->inherited ? LS_CAT_INHERITED : h->freed ? LS_CAT_FREED : -1;
        if (m->hand_cat[j] < 0 && h->kind == LS_HK_POOL) {
            int cat = keys && pools_alike(keys, nkeys, pool_key_of(h)) >= 2 ? LS_CAT_CLIENT_LEAK : LS_CAT_POOL_UNCLOSED;
            m->hand_cat[j] = cat;
            hand_item[j] = (int)m->nitems;
            add_item(m, cat, NONE, j);
        }
    }
    free(keys);
    for (size_t j = 0; j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        if (m->hand_cat[j] >= 0 || share_handle(m, j, hand_item, shared))
            continue;
        size_t p = h->pool ? ls_snap_find_handle(s, h->pool) : NONE;
        int cat;
        if (h->checked_out)
            cat = LS_CAT_CHECKOUT_LEAK;
        else if (p != NONE && hand_item[p] >= 0) { /* idle in a pool never closed: part of it */
            m->hand_cat[j] = m->items[hand_item[p]].cat;
            hand_item[j] = hand_item[p];
            continue;
        } else if (h->open_socks > 0)
            cat = LS_CAT_HANDLE_LEAK;
        else if (h->closed_socks > 0)
            cat = LS_CAT_CLOSED_UNDER;
        else if (h->moved_socks > 0) { /* reported under the handle that took its socket over */
            m->hand_cat[j] = LS_CAT_MOVED;
            continue;
        } else
            cat = LS_CAT_UNCONNECTED; /* never connected, or its connection failed */
        m->hand_cat[j] = cat;
        hand_item[j] = (int)m->nitems;
        add_item(m, cat, NONE, j);
    }
}

static void snapshot_handles(ls_model *m, int *hand_item, const char *shared)
{
    const ls_snapshot *s = m->snap;
    for (size_t j = 0; j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        hand_item[j] = -1;
        if (!h->inherited && !h->freed && h->kind == LS_HK_CLIENT && share_handle(m, j, hand_item, shared))
            continue;
        if (h->inherited)
            m->hand_cat[j] = LS_CAT_INHERITED;
        else if (h->freed)
            m->hand_cat[j] = LS_CAT_FREED;
        else if (h->kind == LS_HK_POOL)
            m->hand_cat[j] = LS_CAT_POOL;
        else if (h->checked_out) {
            m->hand_cat[j] = LS_CAT_CHECKED_OUT;
            hand_item[j] = (int)m->nitems;
            add_item(m, LS_CAT_CHECKED_OUT, NONE, j);
        } else
            m->hand_cat[j] = LS_CAT_LIVE; /* its sockets are live items */
    }
}

/* Every socket: an item of its own, or a member of its handle's item. */
static void classify_sockets(ls_model *m, const int *hand_item, int *sock_item)
{
    const ls_snapshot *s = m->snap;
    int exit = m->in.kind == LS_REPORT_EXIT;
    for (size_t i = 0; i < s->nconns; i++) {
        const ls_conn_view *c = &s->conns[i];
        size_t j = ls_snap_find_handle(s, c->handle);
        const ls_handle_view *h = j != NONE ? &s->handles[j] : NULL;
        sock_item[i] = -1;
        if (fork_shared(c) && (!h || h->freed || h->inherited || hand_item[j] < 0)) {
            /* shared across fork, with no handle of this process reported for it: the socket is
             * the item, at its handle's creation stack when the handle is known (the parent's) */
            sock_item[i] = (int)m->nitems;
            m->sock_cat[i] = LS_CAT_SHARED_FORK;
            ls_mitem *it = add_item(m, LS_CAT_SHARED_FORK, i, NONE);
            if (h && (h->stack || h->pystack)) {
                it->stack = h->stack;
                it->pystack = h->pystack;
            }
            continue;
        }
        if (c->inherited) {
            m->sock_cat[i] = LS_CAT_INHERITED;
            continue;
        }
        if (c->before_attach && !c->handle) { /* no stack, no handle: a group of its own, never a leak */
            sock_item[i] = (int)m->nitems;
            m->sock_cat[i] = LS_CAT_PRE_ATTACH;
            add_item(m, LS_CAT_PRE_ATTACH, i, NONE);
            continue;
        }
        if (exit && c->background && h && !h->freed && h->kind == LS_HK_POOL && hand_item[j] >= 0 &&
            m->items[hand_item[j]].cat == LS_CAT_CLIENT_LEAK) {
            /* a leaked client's own monitoring socket: held by the client, not the driver's business */
            sock_item[i] = hand_item[j];
            m->sock_cat[i] = m->items[hand_item[j]].cat;
            continue;
        }
        if (!c->background && h && !h->freed) {
            if (hand_item[j] >= 0) { /* reported with its handle */
                sock_item[i] = hand_item[j];
                m->sock_cat[i] = m->items[hand_item[j]].cat;
                continue;
            }
            if (exit) { /* its handle is not reported here (inherited, or moved): neither is it */
                m->sock_cat[i] = m->hand_cat[j];
                continue;
            }
        }
        int cat = c->background ? LS_CAT_BACKGROUND
                  : !exit       ? LS_CAT_LIVE
                  : !c->handle  ? LS_CAT_LEAK
                                : LS_CAT_ORPHANED; /* its handle was freed (or never seen) */
        sock_item[i] = (int)m->nitems;
        m->sock_cat[i] = cat;
        ls_mitem *it = add_item(m, cat, i, NONE);
        if (cat == LS_CAT_BACKGROUND && h && !h->freed && h->kind == LS_HK_POOL && (h->stack || h->pystack)) {
            /* a client's monitor: where the client was made, not the driver's insides */
            it->stack = h->stack;
            it->pystack = h->pystack;
        }
        if (cat == LS_CAT_LIVE) {
            if (h && !h->freed && h->stack) { /* the application's stack, not the driver's insides */
                it->stack = h->stack;
                it->pystack = h->pystack;
            }
            it->over = c->state == LS_ST_IN_USE && c->idle >= 0 && c->idle > m->in.threshold;
        }
    }
}

/* ------------------------------------------------------------------ groups */

/* Items sort by a compact key (at most 32 bytes: glibc's qsort then moves them directly) so
 * that a 100k-socket report sorts without chasing pointers: the group key, then oldest first. */
typedef struct sort_key {
    uint64_t k1;   /* category, driver, Python stack */
    uintptr_t k2;  /* checkouts: the pool */
    double age;    /* descending */
    uint32_t k3;   /* the native stack, when there is no Python stack */
    uint32_t item; /* ties: creation order */
} sort_key;

static sort_key key_of_item(const ls_mitem *it, uint32_t i)
{
    /* With a Python stack, it alone says where: CPython 3.11 specialises call sites, so the same
     * Python line shows different native return addresses. */
    int co = it->cat == LS_CAT_CHECKED_OUT || it->cat == LS_CAT_CHECKOUT_LEAK;
    return (sort_key){((uint64_t)(uint8_t)it->cat << 56) | ((uint64_t)(uint8_t)it->driver << 48) | it->pystack,
                      co ? it->pool : 0, it->age, it->pystack ? 0 : it->stack, i};
}

static int same_group(const sort_key *x, const sort_key *y)
{
    return x->k1 == y->k1 && x->k2 == y->k2 && x->k3 == y->k3;
}

static int cmp_key(const void *a, const void *b)
{
    const sort_key *x = a, *y = b;
    if (x->k1 != y->k1)
        return x->k1 < y->k1 ? -1 : 1;
    if (x->k3 != y->k3)
        return x->k3 < y->k3 ? -1 : 1;
    if (x->k2 != y->k2)
        return x->k2 < y->k2 ? -1 : 1;
    if (x->age != y->age)
        return x->age > y->age ? -1 : 1; /* oldest first inside a group */
    return x->item < y->item ? -1 : x->item > y->item;
}

/* Exit: leaks first (largest first), then the quiet ones. Snapshot: checkouts (oldest first),
 * open connections (suspects first, then largest), background sockets. */
static int cmp_group(const void *a, const void *b)
{
    const ls_mgroup *x = a, *y = b;
    if (x->section != y->section)
        return x->section - y->section;
    if (x->cat == LS_CAT_CHECKED_OUT && x->oldest != y->oldest)
        return x->oldest > y->oldest ? -1 : 1;
    if (x->cat == LS_CAT_LIVE && !x->over != !y->over)
        return x->over ? -1 : 1;
    if (x->count != y->count)
        return y->count - x->count;
    if (x->cat != y->cat)
        return x->cat - y->cat;
    if (x->oldest != y->oldest)
        return x->oldest > y->oldest ? -1 : 1;
    if (x->pystack != y->pystack)
        return x->pystack < y->pystack ? -1 : 1;
    return x->stack < y->stack ? -1 : x->stack > y->stack;
}

static int make_groups(ls_model *m)
{
    sort_key *k = malloc((m->nitems ? m->nitems : 1) * sizeof *k);
    m->order = malloc((m->nitems ? m->nitems : 1) * sizeof *m->order);
    m->groups = calloc(m->nitems ? m->nitems : 1, sizeof *m->groups);
    if (!k || !m->order || !m->groups) {
        free(k);
        return -1;
    }
    for (size_t i = 0; i < m->nitems; i++)
        k[i] = key_of_item(&m->items[i], (uint32_t)i);
    qsort(k, m->nitems, sizeof *k, cmp_key);
    for (size_t i = 0; i < m->nitems; i++) {
        const ls_mitem *it = &m->items[k[i].item];
        m->order[i] = k[i].item;
        if (!i || !same_group(&k[i - 1], &k[i])) {
            ls_mgroup *g = &m->groups[m->ngroups++];
            g->cat = it->cat;
            g->leak = ls_cat_is_leak(it->cat);
            g->driver = it->driver;
            g->pool = (uintptr_t)k[i].k2;
            g->pool_index = -1;
            g->stack = it->stack;
            g->pystack = it->pystack;
            g->peer = NONE;
            g->first = i;
            g->oldest = it->age;
        }
        ls_mgroup *g = &m->groups[m->ngroups - 1];
        g->n++;
        g->count++;
        g->newest = it->age;
        if (it->over) {
            g->over++;
            double t = it->cat == LS_CAT_LIVE ? m->snap->conns[it->conn].idle : it->age;
            if (t > g->worst)
                g->worst = t;
        }
    }
    free(k);
    return 0;
}

static void order_groups(ls_model *m)
{
    qsort(m->groups, m->ngroups, sizeof *m->groups, cmp_group);
    for (size_t g = 0; g < m->ngroups; g++)
        for (size_t k = m->groups[g].first; k < m->groups[g].first + m->groups[g].n; k++)
            m->items[m->order[k]].group = (int)g;
}

/* Member sockets and handles of each group, in item order (oldest first). */
static int members(ls_model *m, const int *sock_item, const int *hand_item)
{
    const ls_snapshot *s = m->snap;
    size_t ni = m->nitems;
    size_t *sfirst = calloc(ni + 1, sizeof *sfirst), *hfirst = calloc(ni + 1, sizeof *hfirst);
    size_t *sby = malloc((s->nconns ? s->nconns : 1) * sizeof *sby);
    size_t *hby = malloc((s->nhandles ? s->nhandles : 1) * sizeof *hby);
    m->gsocks = malloc((s->nconns ? s->nconns : 1) * sizeof *m->gsocks);
    m->ghands = malloc((s->nhandles ? s->nhandles : 1) * sizeof *m->ghands);
    int ok = sfirst && hfirst && sby && hby && m->gsocks && m->ghands;
    if (ok) { /* counting sort of sockets and handles by item */
        for (size_t i = 0; i < s->nconns; i++)
            if (sock_item[i] >= 0)
                sfirst[sock_item[i] + 1]++;
        for (size_t j = 0; j < s->nhandles; j++)
            if (hand_item[j] >= 0)
                hfirst[hand_item[j] + 1]++;
        for (size_t k = 0; k < ni; k++)
            sfirst[k + 1] += sfirst[k], hfirst[k + 1] += hfirst[k];
        for (size_t i = 0; i < s->nconns; i++)
            if (sock_item[i] >= 0)
                sby[sfirst[sock_item[i]]++] = i;
        for (size_t j = 0; j < s->nhandles; j++)
            if (hand_item[j] >= 0)
                hby[hfirst[hand_item[j]]++] = j;
        for (size_t k = ni; k > 0; k--) /* back to start offsets */
            sfirst[k] = sfirst[k - 1], hfirst[k] = hfirst[k - 1];
        sfirst[0] = hfirst[0] = 0;
        size_t ns = 0, nh = 0;
        for (size_t g = 0; g < m->ngroups; g++) {
            ls_mgroup *gr = &m->groups[g];
            gr->sfirst = ns;
            gr->hfirst = nh;
            for (size_t k = gr->first; k < gr->first + gr->n; k++) {
                size_t it = m->order[k];
                for (size_t x = sfirst[it]; x < sfirst[it + 1]; x++) {
                    size_t ci = sby[x];
                    m->gsocks[ns++] = ci;
                    m->sock_group[ci] = (int)g;
                    int st = s->conns[ci].state;
                    gr->states[st >= 0 && st < LS_ST_COUNT ? st : 0]++;
                    if (gr->peer == NONE)
                        gr->peer = ci;
                }
                for (size_t x = hfirst[it]; x < hfirst[it + 1]; x++) {
                    m->ghands[nh++] = hby[x];
                    m->hand_group[hby[x]] = (int)g;
                }
            }
            gr->sn = ns - gr->sfirst;
            gr->hn = nh - gr->hfirst;
            gr->nsocks = (int)gr->sn;
        }
        for (size_t k = 0; k < ni; k++)
            m->items[k].nsocks = (int)(sfirst[k + 1] - sfirst[k]);
    }
    free(sfirst);
    free(hfirst);
    free(sby);
    free(hby);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ stacks */

static int cmp_id(const void *a, const void *b)
{
    ls_stack_id x = *(const ls_stack_id *)a, y = *(const ls_stack_id *)b;
    return x < y ? -1 : x > y;
}

typedef struct idvec {
    ls_stack_id *v;
    size_t n, cap;
    int oom;
} idvec;

static void idvec_add(idvec *s, ls_stack_id id)
{
    if (!id || s->oom || (s->n && s->v[s->n - 1] == id)) /* runs of one id are common */
        return;
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        ls_stack_id *n = realloc(s->v, nc * sizeof *n);
        if (!n) {
            s->oom = 1;
            return;
        }
        s->v = n;
        s->cap = nc;
    }
    s->v[s->n++] = id;
}

const ls_mstack *ls_model_stack(const ls_model *m, ls_stack_id id)
{
    size_t lo = 0, hi = m->nstacks;
    while (id && lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->stacks[mid].id == id)
            return m->stacks[mid].resolved ? &m->stacks[mid] : NULL;
        if (m->stacks[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The stacks the report shows: groups', pools' and churn rows'; with all_stacks (the JSON),
 * every stack a socket or handle refers to. */
static int resolve_stacks(ls_model *m)
{
    const ls_snapshot *s = m->snap;
    idvec ids = {0};
    for (size_t g = 0; g < m->ngroups; g++) {
        idvec_add(&ids, m->groups[g].stack);
        idvec_add(&ids, m->groups[g].pystack);
    }
    for (size_t j = 0; j < s->nhandles; j++)
        if (s->handles[j].kind == LS_HK_POOL || m->in.all_stacks) {
            idvec_add(&ids, s->handles[j].stack);
            idvec_add(&ids, s->handles[j].pystack);
            idvec_add(&ids, s->handles[j].co_stack);
            idvec_add(&ids, s->handles[j].co_pystack);
        }
    for (size_t i = 0; m->in.all_stacks && i < s->nconns; i++) {
        idvec_add(&ids, s->conns[i].stack);
        idvec_add(&ids, s->conns[i].pystack);
    }
    for (size_t k = 0; k < m->nchurn && (k < LS_CHURN_ROWS_MAX || m->in.all_stacks); k++)
        idvec_add(&ids, m->churn[k].stack);
    for (size_t k = 0; k < m->in.ntl_groups; k++) /* the timeline's groups (the JSON, the HTML chart) */
        idvec_add(&ids, m->in.tl_groups[k].stack);
    if (ids.oom) {
        free(ids.v);
        return -1;
    }
    if (ids.n) /* qsort(NULL, 0) is undefined */
        qsort(ids.v, ids.n, sizeof *ids.v, cmp_id);
    m->stacks = calloc(ids.n ? ids.n : 1, sizeof *m->stacks);
    for (size_t i = 0; m->stacks && i < ids.n; i++) {
        if (i && ids.v[i] == ids.v[i - 1])
            continue;
        if (ls_mstack_resolve(&m->stacks[m->nstacks], ids.v[i], m->in.symbolize) == 0)
            m->nstacks++;
    }
    free(ids.v);
    return m->stacks ? 0 : -1;
}

static int frame_suppressed(const ls_mframe *f)
{
    if (f->py)
        return ls_suppressions_match(f->file) || ls_suppressions_match(f->func);
    return ls_suppressions_match(f->sym->symbol) || ls_suppressions_match(f->sym->module) ||
           (f->sym->src_file[0] && ls_suppressions_match(f->sym->src_file));
}

/* LSan's rule: a pattern matching any frame of the stack suppresses the group. */
static int stack_suppressed(const ls_mstack *st)
{
    for (int i = 0; st && i < st->n; i++)
        if (frame_suppressed(&st->f[i]))
            return 1;
    return 0;
}

static void describe_groups(ls_model *m)
{
    int kind = m->in.kind, have_patterns = ls_suppressions_count() > 0;
    for (size_t g = 0; g < m->ngroups; g++) {
        ls_mgroup *gr = &m->groups[g];
        const ls_mstack *py = ls_model_stack(m, gr->pystack), *nat = ls_model_stack(m, gr->stack);
        gr->where = ls_where_of(py, nat);
        if (gr->leak && have_patterns)
            gr->suppressed = stack_suppressed(py) || stack_suppressed(nat);
        if (kind == LS_REPORT_EXIT)
            gr->section = gr->leak && !gr->suppressed ? 0 : 1;
        else
            gr->section = gr->cat == LS_CAT_CHECKED_OUT   ? 0
                          : gr->cat == LS_CAT_LIVE        ? 1
                          : gr->cat == LS_CAT_SHARED_FORK ? 3
                          : gr->cat == LS_CAT_PRE_ATTACH  ? 4
                                                          : 2;
    }
}

/* ------------------------------------------------------------------ build */

void ls_model_free(ls_model *m)
{
    for (size_t i = 0; i < m->nstacks; i++)
        ls_mstack_free(&m->stacks[i]);
    free(m->stacks);
    free(m->items);
    free(m->order);
    free(m->groups);
    free(m->sock_cat);
    free(m->sock_group);
    free(m->hand_cat);
    free(m->hand_group);
    free(m->gsocks);
    free(m->ghands);
    free(m->pools);
    free(m->suspects);
    free(m->churn);
    free(m->rows);
    free(m->tl_group);
    free(m->ctxs);
    free(m->byctx);
    memset(m, 0, sizeof *m);
}

/* Each timeline group's report group: the one with its stack (or pool), a leak group first. */
static int timeline_groups(ls_model *m)
{
    if (!m->in.ntl_groups)
        return 0;
    m->tl_group = malloc(m->in.ntl_groups * sizeof *m->tl_group);
    if (!m->tl_group)
        return -1;
    for (size_t k = 0; k < m->in.ntl_groups; k++) {
        const ls_tl_group *t = &m->in.tl_groups[k];
        int best = -1;
        for (size_t g = 0; !t->other && g < m->ngroups; g++) {
            const ls_mgroup *gr = &m->groups[g];
            int match =
                t->pool ? gr->pool == t->pool : !gr->pool && (gr->pystack ? gr->pystack : gr->stack) == t->stack;
            if (match && (best < 0 || (gr->leak && !m->groups[best].leak)))
                best = (int)g;
        }
        m->tl_group[k] = best;
    }
    return 0;
}

int ls_model_build(ls_model *m, const ls_report_input *in)
{
    memset(m, 0, sizeof *m);
    m->in = *in;
    m->snap = in->snap;
    const ls_snapshot *s = in->snap;
    size_t nc = s->nconns ? s->nconns : 1, nh = s->nhandles ? s->nhandles : 1;
    int *hand_item = malloc(nh * sizeof *hand_item), *sock_item = malloc(nc * sizeof *sock_item);
    m->items = malloc((nc + nh) * sizeof *m->items);
    m->sock_cat = malloc(nc * sizeof *m->sock_cat);
    m->sock_group = malloc(nc * sizeof *m->sock_group);
    m->hand_cat = malloc(nh * sizeof *m->hand_cat);
    m->hand_group = malloc(nh * sizeof *m->hand_group);
    int ok = hand_item && sock_item && m->items && m->sock_cat && m->sock_group && m->hand_cat && m->hand_group;
    if (ok) {
        for (size_t i = 0; i < s->nconns; i++)
            m->sock_group[i] = -1;
        for (size_t j = 0; j < s->nhandles; j++)
            m->hand_group[j] = -1;
        char *shared = calloc(nh, 1); /* handles whose socket is shared across fork */
        for (size_t i = 0; shared && i < s->nconns; i++) {
            size_t j = fork_shared(&s->conns[i]) ? ls_snap_find_handle(s, s->conns[i].handle) : NONE;
            if (j != NONE && !s->handles[j].inherited && !s->handles[j].freed && s->handles[j].kind == LS_HK_CLIENT)
                shared[j] = 1;
        }
        if (in->kind == LS_REPORT_EXIT)
            exit_handles(m, hand_item, shared);
        else
            snapshot_handles(m, hand_item, shared);
        free(shared);
        classify_sockets(m, hand_item, sock_item);
        ok = make_groups(m) == 0 && ls_model_churn(m) == 0 && resolve_stacks(m) == 0;
    }
    if (ok) {
        for (size_t k = 0; k < m->nchurn; k++) {
            ls_mstack *st = (ls_mstack *)ls_model_stack(m, m->churn[k].stack);
            if (st)
                st->created = m->churn[k].created;
        }
        describe_groups(m);
        order_groups(m);
        ok = members(m, sock_item, hand_item) == 0 && ls_model_pools(m, hand_item) == 0 && ls_model_rows(m) == 0 &&
             ls_model_suspects(m) == 0 && ls_model_contexts(m) == 0;
    }
    if (ok) {
        for (size_t g = 0; g < m->ngroups; g++) {
            ls_mgroup *gr = &m->groups[g];
            const ls_conn_view *c = gr->peer != NONE ? &s->conns[gr->peer] : NULL;
            gr->service = ls_service_name(gr->driver, c ? (const struct sockaddr *)&c->peer : NULL, c ? c->peerlen : 0);
        }
        for (size_t i = 0; i < s->nconns; i++) { /* a live handle is in its sockets' group */
            size_t j = ls_snap_find_handle(s, s->conns[i].handle);
            if (j != NONE && m->hand_group[j] < 0 && m->hand_cat[j] == LS_CAT_LIVE)
                m->hand_group[j] = m->sock_group[i];
        }
        ls_model_summarize(m);
        ok = timeline_groups(m) == 0;
    }
    free(hand_item);
    free(sock_item);
    if (!ok)
        ls_model_free(m);
    return ok ? 0 : -1;
}

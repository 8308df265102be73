/* Report model, part 3: pools with their sizes, creations per stack over the whole run (churn) and
 * the rows the text merges them into, suspects, and the summary. Pure, like part 2 (it reads the
 * items, groups and stacks report_model.c built). */
#include "ls_report.h"

#include <stdlib.h>
#include <string.h>

#define NONE ((size_t)-1)

/* ------------------------------------------------------------------ pools */

int ls_model_pools(ls_model *m, const int *hand_item)
{
    const ls_snapshot *s = m->snap;
    int *pool_of = malloc((s->nhandles ? s->nhandles : 1) * sizeof *pool_of);
    m->pools = calloc(s->nhandles ? s->nhandles : 1, sizeof *m->pools);
    if (!pool_of || !m->pools) {
        free(pool_of);
        return -1;
    }
    for (size_t j = 0; j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        pool_of[j] = -1;
        if (h->kind != LS_HK_POOL || h->freed || h->inherited)
            continue;
        ls_mpool *p = &m->pools[m->npools];
        pool_of[j] = (int)m->npools++;
        p->handle = j;
        p->where = ls_where_of(ls_model_stack(m, h->pystack), ls_model_stack(m, h->stack));
        p->group = hand_item[j] >= 0 ? m->items[hand_item[j]].group : -1;
    }
    for (size_t j = 0; j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        size_t pj = h->pool && h->kind == LS_HK_CLIENT ? ls_snap_find_handle(s, h->pool) : NONE;
        if (pj == NONE || pool_of[pj] < 0 || h->freed || h->inherited)
            continue;
        ls_mpool *p = &m->pools[pool_of[pj]];
        p->clients++;
        p->checked_out += h->checked_out != 0;
    }
    for (size_t i = 0; i < s->nconns; i++) {
        const ls_conn_view *c = &s->conns[i];
        size_t pj = c->inherited ? NONE : ls_snap_find_handle(s, c->pool);
        if (pj == NONE) /* a pool's own (monitor) socket: owned by the pool handle itself */
            pj = c->inherited ? NONE : ls_snap_find_handle(s, c->handle);
        if (pj == NONE || pool_of[pj] < 0)
            continue;
        if (c->background)
            m->pools[pool_of[pj]].background++;
        else
            m->pools[pool_of[pj]].sockets++;
    }
    for (size_t k = 0; k < m->npools; k++) {
        m->pools[k].idle = m->pools[k].clients - m->pools[k].checked_out;
        if (m->pools[k].group >= 0)
            m->groups[m->pools[k].group].clients += m->pools[k].clients;
    }
    for (size_t g = 0; g < m->ngroups; g++) {
        size_t pj = m->groups[g].pool ? ls_snap_find_handle(s, m->groups[g].pool) : NONE;
        m->groups[g].pool_index = pj != NONE ? pool_of[pj] : -1;
    }
    free(pool_of);
    return 0;
}

/* ------------------------------------------------------------------ churn */

static int cmp_churn(const void *a, const void *b)
{
    const ls_mchurn *x = a, *y = b;
    if (x->created != y->created)
        return x->created < y->created ? 1 : -1;
    return x->stack < y->stack ? -1 : x->stack > y->stack;
}

static ls_stack_id key_of(ls_stack_id stack, ls_stack_id pystack)
{
    return pystack ? pystack : stack; /* the registry counts a Python stack alone */
}

/* Creations per stack (whole run) with what is live now. The unit is what a program creates: a
 * client handle, or a socket no handle owns; a pool is counted apart (it is not a connection). */
int ls_model_churn(ls_model *m)
{
    const ls_snapshot *s = m->snap;
    ls_stack_id max = 0;
    for (size_t k = 0; k < m->in.ncreated; k++)
        if (m->in.created[k].stack > max)
            max = m->in.created[k].stack;
    for (size_t j = 0; j < s->nhandles; j++)
        if (key_of(s->handles[j].stack, s->handles[j].pystack) > max)
            max = key_of(s->handles[j].stack, s->handles[j].pystack);
    for (size_t i = 0; i < s->nconns; i++)
        if (key_of(s->conns[i].stack, s->conns[i].pystack) > max)
            max = key_of(s->conns[i].stack, s->conns[i].pystack);
    uint64_t *created = calloc((size_t)max + 1, sizeof *created);
    int *live = calloc((size_t)max + 1, sizeof *live), *pools = calloc((size_t)max + 1, sizeof *pools);
    int ok = created && live && pools;
    for (size_t k = 0; ok && k < m->in.ncreated; k++)
        created[m->in.created[k].stack] += m->in.created[k].created;
    for (size_t j = 0; ok && j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        if (!h->freed && !h->inherited)
            (h->kind == LS_HK_POOL ? pools : live)[key_of(h->stack, h->pystack)]++;
    }
    for (size_t i = 0; ok && i < s->nconns; i++) {
        const ls_conn_view *c = &s->conns[i];
        size_t j = ls_snap_find_handle(s, c->handle);
        if (c->inherited || c->background || (j != NONE && !s->handles[j].freed))
            continue; /* counted as its live handle */
        /* an orphaned socket is a live connection its (freed) handle created */
        live[j != NONE ? key_of(s->handles[j].stack, s->handles[j].pystack) : key_of(c->stack, c->pystack)]++;
    }
    size_t n = 0;
    for (ls_stack_id id = 1; ok && id <= max; id++)
        n += created[id] || live[id] || pools[id];
    m->churn = ok ? calloc(n ? n : 1, sizeof *m->churn) : NULL;
    for (ls_stack_id id = 1; m->churn && id <= max; id++) {
        if (!created[id] && !live[id] && !pools[id])
            continue;
        ls_mchurn *c = &m->churn[m->nchurn++];
        const ls_stack *st = ls_stack_get(id);
        c->stack = id;
        c->py = st && st->is_py;
        /* Sockets connected inside a driver call that never returned a handle (psycopg 3 calls
         * libpq through ctypes) were never counted as created: what is live was created. */
        c->created = created[id] > (uint64_t)live[id] ? created[id] : (uint64_t)live[id];
        c->live = live[id];
        c->pools = pools[id];
        c->row = -1;
    }
    free(created);
    free(live);
    free(pools);
    if (!m->churn)
        return -1;
    qsort(m->churn, m->nchurn, sizeof *m->churn, cmp_churn);
    return 0;
}

static int frames_same(const ls_mframe *a, const ls_mframe *b)
{
    if (a->py != b->py)
        return 0;
    if (a->py)
        return a->line == b->line && a->file == b->file && a->func == b->func;
    if (a->sym->symbol[0] || b->sym->symbol[0])
        return !strcmp(a->sym->symbol, b->sym->symbol) && !strcmp(a->sym->module, b->sym->module);
    return a->sym->offset == b->sym->offset && !strcmp(a->sym->module, b->sym->module);
}

/* Rows read the same when the three frames from the user's line are the same frames: stacks that
 * differ only below, or inside libraries, are one place to the person reading. */
static int where_same(const ls_where *x, const ls_where *y)
{
    if (!x->user || !y->user)
        return x->user == y->user;
    const ls_mstack *sx = x->user->py ? x->py : x->nat, *sy = y->user->py ? y->py : y->nat;
    int ix = (int)(x->user - sx->f), iy = (int)(y->user - sy->f);
    for (int k = 0; k < 3; k++) {
        int ex = ix + k >= sx->n, ey = iy + k >= sy->n;
        if (ex || ey)
            return ex && ey;
        if (!frames_same(&sx->f[ix + k], &sy->f[iy + k]))
            return 0;
    }
    return 1;
}

int ls_model_rows(ls_model *m)
{
    size_t n = m->nchurn < LS_CHURN_ROWS_MAX ? m->nchurn : LS_CHURN_ROWS_MAX;
    m->rows = calloc(n ? n : 1, sizeof *m->rows);
    if (!m->rows)
        return -1;
    for (size_t k = 0; k < n; k++) {
        ls_mchurn *c = &m->churn[k];
        const ls_mstack *st = ls_model_stack(m, c->stack);
        ls_where w = ls_where_of(c->py ? st : NULL, c->py ? NULL : st);
        size_t r;
        for (r = 0; r < m->nrows; r++)
            if (where_same(&m->rows[r].where, &w))
                break;
        if (r == m->nrows)
            m->rows[m->nrows++].where = w;
        c->row = (int)r;
        m->rows[r].created += c->created;
        m->rows[r].live += c->live;
        m->rows[r].pools += c->pools;
    }
    /* A merge can overtake rows above it: order by what was created, keeping the churn order
     * (most created first) among equals, and point the churn entries at the moved rows. */
    size_t *perm = malloc((m->nrows ? m->nrows : 1) * sizeof *perm);
    ls_mrow *sorted = malloc((m->nrows ? m->nrows : 1) * sizeof *sorted);
    if (!perm || !sorted) {
        free(perm);
        free(sorted);
        return -1;
    }
    for (size_t r = 0; r < m->nrows; r++)
        perm[r] = r;
    for (size_t i = 1; i < m->nrows; i++) /* insertion sort: stable, and rows are few */
        for (size_t j = i; j > 0 && m->rows[perm[j]].created > m->rows[perm[j - 1]].created; j--) {
            size_t t = perm[j];
            perm[j] = perm[j - 1];
            perm[j - 1] = t;
        }
    for (size_t r = 0; r < m->nrows; r++) {
        sorted[r] = m->rows[perm[r]];
        for (size_t k = 0; k < n; k++)
            if (m->churn[k].row == (int)perm[r])
                m->churn[k].row = -2 - (int)r; /* marked as done */
    }
    for (size_t k = 0; k < n; k++)
        m->churn[k].row = -2 - m->churn[k].row;
    free(m->rows);
    free(perm);
    m->rows = sorted;
    for (size_t r = 0; r < m->nrows; r++)
        m->rows[r].many = m->rows[r].created >= 10 && m->rows[r].created >= 2u * (uint64_t)(m->rows[r].live + 1);
    return 0;
}

/* ------------------------------------------------------------------ suspects, summary */

static int cmp_suspect(const void *a, const void *b)
{
    const ls_msuspect *x = a, *y = b;
    if (x->why != y->why)
        return x->why - y->why;
    if (x->seconds != y->seconds)
        return x->seconds > y->seconds ? -1 : 1;
    return x->group != y->group ? x->group - y->group : x->row - y->row;
}

/* A staircase: one place whose clients or connections are all still open, at least
 * STAIR_MIN of them, created over at least STAIR_SPAN seconds (a loop making a few pools at
 * start-up takes less). What counts is what a program creates and must close: pools (a client
 * with its pool), clients in no pool, sockets no handle owns; a pool's members are the pool's
 * business. "All still open": nothing created there was ever closed (created == live + pools). */
#define STAIR_MIN 3
#define STAIR_SPAN 0.05

typedef struct stair {
    int n;
    double first, last;
} stair;

static void stair_add(stair *st, double t)
{
    if (!st->n || t < st->first)
        st->first = t;
    if (!st->n || t > st->last)
        st->last = t;
    st->n++;
}

static int staircases(ls_model *m)
{
    const ls_snapshot *s = m->snap;
    ls_stack_id max = 0;
    for (size_t k = 0; k < m->nchurn; k++)
        if (m->churn[k].stack > max)
            max = m->churn[k].stack;
    int *churn_of = malloc(((size_t)max + 1) * sizeof *churn_of);
    stair *rows = calloc(m->nrows ? m->nrows : 1, sizeof *rows);
    int *closed = calloc(m->nrows ? m->nrows : 1, sizeof *closed);
    if (!churn_of || !rows || !closed) {
        free(churn_of);
        free(rows);
        free(closed);
        return -1;
    }
    for (ls_stack_id id = 0; id <= max; id++)
        churn_of[id] = -1;
    for (size_t k = 0; k < m->nchurn; k++) {
        const ls_mchurn *c = &m->churn[k];
        churn_of[c->stack] = (int)k;
        if (c->row >= 0 && (size_t)c->row < m->nrows && c->created > (uint64_t)c->live + (uint64_t)c->pools)
            closed[c->row] = 1;
    }
    for (size_t j = 0; j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        if (h->freed || h->inherited)
            continue;
        if (h->kind == LS_HK_CLIENT && h->pool && ls_snap_find_handle(s, h->pool) != NONE)
            continue; /* a pool's member */
        ls_stack_id key = h->pystack ? h->pystack : h->stack;
        int k = key <= max ? churn_of[key] : -1;
        if (k >= 0 && m->churn[k].row >= 0 && (size_t)m->churn[k].row < m->nrows)
            stair_add(&rows[m->churn[k].row], h->created);
    }
    for (size_t i = 0; i < s->nconns; i++) {
        const ls_conn_view *c = &s->conns[i];
        if (c->inherited || c->background || (c->handle && ls_snap_find_handle(s, c->handle) != NONE))
            continue;
        ls_stack_id key = c->pystack ? c->pystack : c->stack;
        int k = key <= max ? churn_of[key] : -1;
        if (k >= 0 && m->churn[k].row >= 0 && (size_t)m->churn[k].row < m->nrows)
            stair_add(&rows[m->churn[k].row], c->created);
    }
    for (size_t r = 0; r < m->nrows; r++)
        if (!closed[r] && rows[r].n >= STAIR_MIN && rows[r].last - rows[r].first >= STAIR_SPAN)
            m->suspects[m->nsuspects++] =
                (ls_msuspect){LS_SUS_STAIRCASE, -1, (int)r, rows[r].n, rows[r].last - rows[r].first};
    free(churn_of);
    free(rows);
    free(closed);
    return 0;
}

/* Snapshots only: checked out or open-and-idle past the threshold, and the stacks that created
 * many clients with few live (the client-per-request pattern). */
int ls_model_suspects(ls_model *m)
{
    m->suspects = calloc(m->ngroups + 4 + m->nrows, sizeof *m->suspects);
    if (!m->suspects)
        return -1;
    if (m->in.kind != LS_REPORT_SNAPSHOT)
        return 0;
    for (size_t g = 0; g < m->ngroups; g++) {
        const ls_mgroup *gr = &m->groups[g];
        if (gr->over && (gr->cat == LS_CAT_CHECKED_OUT || gr->cat == LS_CAT_LIVE))
            m->suspects[m->nsuspects++] = (ls_msuspect){gr->cat == LS_CAT_CHECKED_OUT ? LS_SUS_CHECKOUT : LS_SUS_IDLE,
                                                        (int)g, -1, gr->over, gr->worst};
    }
    for (size_t r = 0; r < m->nrows && r < 3; r++)
        if (m->rows[r].many)
            m->suspects[m->nsuspects++] = (ls_msuspect){LS_SUS_CHURN, -1, (int)r, (int)m->rows[r].created, 0};
    if (staircases(m) < 0)
        return -1;
    qsort(m->suspects, m->nsuspects, sizeof *m->suspects, cmp_suspect);
    return 0;
}

void ls_model_summarize(ls_model *m)
{
    const ls_snapshot *s = m->snap;
    ls_msummary *sum = &m->sum;
    for (size_t g = 0; g < m->ngroups; g++) {
        const ls_mgroup *gr = &m->groups[g];
        if (m->in.kind != LS_REPORT_EXIT)
            continue;
        if (!gr->leak)
            sum->quiet += gr->count;
        else if (gr->suppressed)
            sum->suppressed += gr->count;
        else
            sum->leaks += gr->count, sum->groups++;
    }
    for (size_t i = 0; i < s->nconns; i++)
        if (!s->conns[i].inherited) {
            sum->live++;
            sum->background += s->conns[i].background != 0;
        }
    for (size_t j = 0; j < s->nhandles; j++) {
        const ls_handle_view *h = &s->handles[j];
        if (h->freed || h->inherited)
            continue;
        sum->checked_out += h->checked_out != 0;
        sum->clients += h->kind == LS_HK_CLIENT;
        sum->pools += h->kind == LS_HK_POOL;
    }
    sum->closed_behind = s->closed_behind;
    for (size_t r = 0; r < m->nrows; r++)
        m->churn_notable |= m->rows[r].many;
    if (sum->leaks)
        m->churn_notable = 1;
}

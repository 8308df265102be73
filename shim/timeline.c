/* The timeline: live connections, checked-out connections and creations, in total and per group
 * (a creating stack, or a pool), sampled by the reporter thread every interval= seconds (default 1)
 * into a fixed ring, and the counts behind the metrics file (metrics.c).
 *
 * Always on, so it must be cheap: a sample is one pass over the registry under its lock, counting
 * (no copy, no malloc, no kernel check, no symbolization): about 1 us per 30 tracked sockets here
 * (`make bench`). Memory is fixed: LS_TL_CAP samples of LS_TL_GROUPS + 1 groups (~115 KB of .bss,
 * touched only as it fills). When the ring is full its older half is thinned (every other sample
 * kept), so a process that runs for a month still shows its first minutes, at a coarser step,
 * and its latest LS_TL_CAP / 2 samples at full resolution. */
#include "ls_report.h"
#include "registry_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static ls_tl_sample ring[LS_TL_CAP];
static size_t ring_n;
static ls_tl_group groups[LS_TL_GROUPS];
static int ngroups, other_used;
static pthread_mutex_t tl_lock = PTHREAD_MUTEX_INITIALIZER;

/* Caller holds tl_lock. */
static void push_locked(const ls_tl_sample *s)
{
    if (ring_n == LS_TL_CAP) {
        /* Thin the older half: keep samples 0, 2, 4, ... of it (the first sample always stays),
         * then the newer half, unchanged, after them. */
        size_t half = LS_TL_CAP / 2, k = 0;
        for (size_t i = 0; i < half; i += 2)
            ring[k++] = ring[i];
        memmove(&ring[k], &ring[half], (LS_TL_CAP - half) * sizeof ring[0]);
        ring_n = k + (LS_TL_CAP - half);
    }
    ring[ring_n++] = *s;
}

void ls_tl_push(const ls_tl_sample *s)
{
    pthread_mutex_lock(&tl_lock);
    push_locked(s);
    pthread_mutex_unlock(&tl_lock);
}

static int same_group(const ls_tl_group *a, const ls_tl_group *b)
{
    if (a->pool || b->pool)
        return a->pool == b->pool && a->driver == b->driver;
    return a->stack == b->stack && a->driver == b->driver;
}

/* Caller holds tl_lock. A linear search: at most LS_TL_GROUPS keys. */
int ls_tl_group_slot(const ls_tl_group *key)
{
    for (int i = 0; i < ngroups; i++)
        if (same_group(&groups[i], key))
            return i;
    if (ngroups < LS_TL_GROUPS) {
        groups[ngroups] = *key;
        groups[ngroups].other = 0;
        return ngroups++;
    }
    other_used = 1;
    return LS_TL_GROUPS;
}

ls_tl_sample *ls_timeline_copy(size_t *n, ls_tl_group **gout, size_t *ng)
{
    pthread_mutex_lock(&tl_lock);
    size_t k = ring_n, g = (size_t)ngroups + (other_used ? 1 : 0);
    ls_tl_sample *t = k ? malloc(k * sizeof *t) : NULL;
    ls_tl_group *gr = g ? malloc(g * sizeof *gr) : NULL;
    if (t)
        memcpy(t, ring, k * sizeof *t);
    if (gr) {
        memcpy(gr, groups, (size_t)ngroups * sizeof *gr);
        if (other_used)
            gr[ngroups] = (ls_tl_group){.other = 1, .driver = -1};
    }
    pthread_mutex_unlock(&tl_lock);
    if ((k && !t) || (g && !gr)) { /* out of memory: no timeline rather than a wrong one */
        free(t);
        free(gr);
        t = NULL;
        gr = NULL;
        k = g = 0;
    }
    *n = k;
    *gout = gr;
    *ng = g;
    return t;
}

/* Unit tests, and the atfork child (no malloc; the lock is re-initialised, not taken). */
void ls_timeline_reset(void)
{
    LS_MUTEX_REINIT(tl_lock);
    ring_n = 0;
    ngroups = 0;
    other_used = 0;
}

/* ------------------------------------------------------------------ counting */

static int svc_index(ls_counts *k, const char *svc)
{
    for (int i = 0; i < k->nsvc; i++)
        if (k->svc[i] == svc || !strcmp(k->svc[i], svc))
            return i;
    if (k->nsvc < LS_MX_SERVICES) {
        k->svc[k->nsvc] = svc;
        return k->nsvc++;
    }
    return LS_MX_SERVICES - 1; /* more databases than that in one process: the last row takes them */
}

/* The group key of a socket: its pool if it has one (the pool's creation stack), else its
 * creating stack (Python's when known: the one the registry counts creations on). */
static ls_tl_group key_of(const conn *c, const handle *h)
{
    uintptr_t pool = h ? h->pool : c->pool;
    ls_tl_group k = {.pool = pool, .driver = h ? h->driver : c->driver};
    if (pool) {
        const handle *p = ls_reg_handle_get(pool);
        k.stack = p ? (p->pystack ? p->pystack : p->stack) : 0;
    } else
        k.stack = c->pystack ? c->pystack : c->stack;
    return k;
}

/* One pass over the registry under its lock, then over the groups under the timeline's. Inherited
 * sockets (the parent's) are not counted, as the reports do not count them as live. */
void ls_counts_take(ls_counts *k, double now, double threshold, int by_service)
{
    memset(k, 0, sizeof *k);
    ls_tl_sample *s = &k->s;
    s->t = now;
    pthread_mutex_lock(&tl_lock);
    pthread_mutex_lock(&ls_reg_lock);
    for (conn *c = ls_reg_conns; c; c = c->hh.next) {
        if (c->inherited)
            continue;
        const handle *h = c->handle ? ls_reg_handle_get(c->handle) : NULL;
        int st = ls_reg_state_of(c, h);
        ls_tl_group key = key_of(c, h);
        ls_tl_gcount *g = &s->g[ls_tl_group_slot(&key)];
        g->live++;
        g->checked_out += st == LS_ST_CHECKED_OUT;
        s->live++;
        if (by_service)
            k->open[svc_index(k, ls_service_name(c->driver, (const struct sockaddr *)&c->peer, c->peerlen))][st]++;
        if (c->driver >= 0 && c->driver < LS_DRV_COUNT)
            k->open_by_driver[c->driver]++;
    }
    for (handle *h = ls_reg_handles; h; h = h->hh.next) {
        if (h->inherited || h->freed)
            continue;
        if (h->checked_out) {
            double held = now > h->checkout_time ? now - h->checkout_time : 0;
            s->checked_out++;
            k->over_threshold += held > threshold;
            if (held > k->oldest_checkout)
                k->oldest_checkout = held;
        }
        uintptr_t pool = h->kind == LS_HK_POOL ? h->key : h->pool;
        if (pool) { /* a pool's creations: the sockets its live clients (and itself) ever had */
            ls_tl_group key = {.pool = pool, .driver = h->driver};
            for (int i = 0; i < ngroups; i++)
                if (same_group(&groups[i], &key))
                    s->g[i].created += (uint32_t)h->socks_ever;
        }
    }
    memcpy(k->closed_by_driver, ls_reg_closed_by_driver, sizeof k->closed_by_driver);
    pthread_mutex_unlock(&ls_reg_lock);
    for (int i = 0; i < LS_DRV_COUNT; i++)
        s->created += k->closed_by_driver[i] + (uint64_t)k->open_by_driver[i];
    for (int i = 0; i < ngroups; i++) {
        const ls_stack *st = groups[i].pool ? NULL : ls_stack_get(groups[i].stack);
        if (st)
            s->g[i].created = (uint32_t)__atomic_load_n(&st->created, __ATOMIC_RELAXED);
    }
    s->ngroups = ngroups;
    pthread_mutex_unlock(&tl_lock);
}

/* Reporter thread, every interval= seconds: one sample, and the metrics file when asked for. */
void ls_timeline_sample(void)
{
    ls_counts *k = malloc(sizeof *k);
    if (!k)
        return;
    ls_counts_take(k, ls_now(), ls_opt.threshold, ls_opt.metrics[0] != 0);
    ls_tl_push(&k->s);
    if (ls_opt.metrics[0])
        ls_metrics_write(k);
    free(k);
}

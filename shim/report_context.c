/* Report model, part 4: attribution contexts. Each group's members are counted by the context they
 * were created in (a test id and phase, a request route; attrib.c), most first, and the report's
 * leaks (exit) or items (snapshot) by context: "3 leaks in test tests/test_x.py::test_a (call)",
 * "12 created during POST /webhooks/{id}, 12 requests". No I/O. */
#include "ls_report.h"

#include <stdlib.h>
#include <string.h>

#define NONE ((size_t)-1)

typedef struct pair {
    uint64_t g;    /* group, or 0 for the by-context summary */
    uint32_t id;   /* attribution id */
    uint32_t inst; /* instance (request) number */
} pair;

static int cmp_pair(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    if (x->g != y->g)
        return x->g < y->g ? -1 : 1;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->inst < y->inst ? -1 : x->inst > y->inst;
}

static int cmp_ctx(const void *a, const void *b)
{
    const ls_mctx *x = a, *y = b;
    if (x->count != y->count)
        return y->count - x->count;
    int c = strcmp(x->label, y->label);
    return c ? c : strcmp(x->phase, y->phase);
}

static uint64_t item_attr(const ls_model *m, const ls_mitem *it)
{
    if (it->handle != NONE) {
        const ls_handle_view *h = &m->snap->handles[it->handle];
        int co = it->cat == LS_CAT_CHECKOUT_LEAK || it->cat == LS_CAT_CHECKED_OUT;
        return co ? h->co_attr : h->attr;
    }
    return it->conn != NONE ? m->snap->conns[it->conn].attr : 0;
}

/* Runs of equal (g, id) in sorted pairs become contexts appended to *out. */
static int collapse(const pair *p, size_t n, ls_mctx **out, size_t *nout, size_t *cap)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int inst = 0;
        while (j < n && p[j].g == p[i].g && p[j].id == p[i].id) {
            if (p[j].inst && (j == i || p[j].inst != p[j - 1].inst))
                inst++;
            j++;
        }
        const char *label = ls_attr_label(p[i].id);
        if (label) {
            if (*nout == *cap) {
                size_t nc = *cap ? *cap * 2 : 16;
                ls_mctx *x = realloc(*out, nc * sizeof *x);
                if (!x)
                    return -1;
                *out = x;
                *cap = nc;
            }
            const char *phase = ls_attr_phase(p[i].id);
            (*out)[(*nout)++] = (ls_mctx){label, phase ? phase : "", (int)(j - i), inst, 0};
        }
        i = j;
    }
    return 0;
}

int ls_model_contexts(ls_model *m)
{
    pair *p = malloc((m->nitems ? m->nitems : 1) * sizeof *p);
    if (!p)
        return -1;
    size_t n = 0, cap = 0;
    int exit = m->in.kind == LS_REPORT_EXIT;
    for (size_t g = 0; g < m->ngroups; g++)
        for (size_t k = m->groups[g].first; k < m->groups[g].first + m->groups[g].n; k++) {
            uint64_t a = item_attr(m, &m->items[m->order[k]]);
            if ((uint32_t)a)
                p[n++] = (pair){g, (uint32_t)a, (uint32_t)(a >> 32)};
        }
    if (n)
        qsort(p, n, sizeof *p, cmp_pair);
    /* per group: collapse each group's run, then sort it most first */
    for (size_t i = 0, g = 0; g < m->ngroups; g++) {
        size_t j = i;
        while (j < n && p[j].g == g)
            j++;
        m->groups[g].cfirst = m->nctxs;
        if (collapse(p + i, j - i, &m->ctxs, &m->nctxs, &cap) < 0) {
            free(p);
            return -1;
        }
        m->groups[g].cn = m->nctxs - m->groups[g].cfirst;
        if (m->groups[g].cn > 1)
            qsort(m->ctxs + m->groups[g].cfirst, m->groups[g].cn, sizeof *m->ctxs, cmp_ctx);
        i = j;
    }
    /* by context: the reported groups only (exit: the counted leaks) */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const ls_mgroup *gr = &m->groups[p[i].g];
        if (exit ? gr->section == 0 : gr->cat != LS_CAT_BACKGROUND)
            p[k++] = (pair){0, p[i].id, p[i].inst};
    }
    if (k)
        qsort(p, k, sizeof *p, cmp_pair);
    size_t bcap = 0;
    int rc = collapse(p, k, &m->byctx, &m->nbyctx, &bcap);
    free(p);
    if (rc < 0)
        return -1;
    for (size_t b = 0; b < m->nbyctx; b++) /* groups per context */
        for (size_t g = 0; g < m->ngroups; g++) {
            const ls_mgroup *gr = &m->groups[g];
            if (!(exit ? gr->section == 0 : gr->cat != LS_CAT_BACKGROUND))
                continue;
            for (size_t c = gr->cfirst; c < gr->cfirst + gr->cn; c++)
                if (m->ctxs[c].label == m->byctx[b].label && m->ctxs[c].phase == m->byctx[b].phase) {
                    m->byctx[b].groups++;
                    break;
                }
        }
    if (m->nbyctx > 1)
        qsort(m->byctx, m->nbyctx, sizeof *m->byctx, cmp_ctx);
    return 0;
}

void ls_text_context(ls_buf *b, const ls_mctx *c)
{
    if (!strcmp(c->phase, "request")) {
        ls_buf_printf(b, "during %s", c->label);
        if (c->instances)
            ls_buf_printf(b, ", %d %s", c->instances, c->instances == 1 ? "request" : "requests");
    } else if (!strcmp(c->phase, "setup") || !strcmp(c->phase, "call") || !strcmp(c->phase, "teardown"))
        ls_buf_printf(b, "in test %s (%s)", c->label, c->phase);
    else if (c->phase[0])
        ls_buf_printf(b, "in %s (%s)", c->label, c->phase);
    else
        ls_buf_printf(b, "in %s", c->label);
}

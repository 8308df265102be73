/* `leakshim report [--format text|json|html] [-o OUT] FILE.json...`: saved JSON reports rendered
 * again, as text, JSON or one self-contained HTML page (tools/html.c); several reports (the
 * workers of one service, several pods) merged by the stack a person would fix. */
#include "report_load.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int cmp_merged(const void *a, const void *b)
{
    const rp_merged *x = a, *y = b;
    if (x->leak != y->leak)
        return y->leak - x->leak;
    if (x->total != y->total)
        return y->total > x->total ? 1 : -1;
    return strcmp(x->key, y->key);
}

rp_merged *rp_merge(const rp_file *files, int n, int *count)
{
    int cap = 1, k = 0;
    for (int i = 0; i < n; i++)
        cap += files[i].ngroups;
    rp_merged *m = calloc((size_t)cap, sizeof *m);
    if (!m) {
        fputs("leakshim: out of memory\n", stderr);
        exit(1);
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < files[i].ngroups; j++) {
            const rp_group *g = &files[i].groups[j];
            int at = -1;
            for (int q = 0; q < k && at < 0; q++)
                if (!strcmp(m[q].key, g->key))
                    at = q;
            if (at < 0) {
                at = k++;
                m[at] = (rp_merged){.key = g->key, .first = g, .leak = g->leak && !g->suppressed};
            }
            /* one report may hold two groups with one key (they differ only inside a library) */
            int seen = 0;
            for (int jj = 0; jj < j; jj++)
                seen |= !strcmp(files[i].groups[jj].key, g->key);
            m[at].procs += !seen;
            m[at].total += g->count;
        }
    qsort(m, (size_t)k, sizeof *m, cmp_merged);
    *count = k;
    return m;
}

char *rp_merged_title(const rp_merged *m, int nfiles)
{
    const rp_group *g = m->first;
    char *s = NULL;
    int r;
    if (nfiles == 1)
        r = asprintf(&s, "%s", g->title ? g->title : "?");
    else
        r = asprintf(&s, "%s %s (%s): %s in %d of %d processes, %ld in all", g->service ? g->service : "?",
                     g->driver ? g->driver : "?", g->category ? g->category : "?", m->leak ? "leaked" : "found",
                     m->procs, nfiles, m->total);
    if (r < 0) {
        fputs("leakshim: out of memory\n", stderr);
        exit(1);
    }
    return s;
}

/* ------------------------------------------------------------------ text */

static void text_stack(FILE *o, const rp_stack *s)
{
    for (int i = 0; i < s->n; i++)
        fprintf(o, "    %s %s\n", i == 0 ? "at" : "  ", s->f[i].text);
    if (s->inner) {
        fprintf(o, "       called into %d frame%s inside:", s->inner, s->inner == 1 ? "" : "s");
        for (int i = s->n; i < s->n + s->inner; i++)
            fprintf(o, " %s", s->f[i].lib ? s->f[i].lib : s->f[i].text);
        fputc('\n', o);
    }
}

static void render_text(FILE *o, const rp_file *files, int n)
{
    int nm;
    rp_merged *m = rp_merge(files, n, &nm);
    long leaks = 0;
    for (int i = 0; i < n; i++) {
        const rp_file *f = &files[i];
        fprintf(o, "leakshim report: %s, pid %d (%s): %s report, %d leak%s\n", f->path, f->pid,
                f->program ? f->program : "?", f->kind ? f->kind : "?", f->leaks, f->leaks == 1 ? "" : "s");
        leaks += f->leaks;
    }
    int shown = 0;
    for (int i = 0; i < nm; i++) {
        if (!shown++)
            fprintf(o, "\n");
        char *t = rp_merged_title(&m[i], n);
        fprintf(o, "%s%s\n", m[i].leak ? "LEAK " : "", t);
        free(t);
        text_stack(o, &m[i].first->stack);
    }
    for (int i = 0; i < n; i++) { /* churn rows: each process's own table */
        const cJSON *rows = rp_get(files[i].root, "churn_rows");
        if (!cJSON_GetArraySize(rows))
            continue;
        fprintf(o, "\nCreations per stack, pid %d (created, live, pools, where):\n", files[i].pid);
        const cJSON *r;
        int k = 0;
        cJSON_ArrayForEach(r, rows)
        {
            if (k++ == 10)
                break;
            rp_stack s;
            rp_stack_of(&files[i], rp_get(r, "where"), 0, &s);
            fprintf(o, "  %6.0f %5.0f %5.0f  %s%s\n", rp_num(r, "created", 0), rp_num(r, "live", 0),
                    rp_num(r, "pools", 0), s.n ? s.f[0].text : "?",
                    cJSON_IsTrue(rp_get(r, "many")) ? "   <- a client or pool per request?" : "");
            rp_stack_free(&s);
        }
    }
    fprintf(o, "\nleakshim report: %ld leaked database connection%s in %d report%s\n", leaks, leaks == 1 ? "" : "s", n,
            n == 1 ? "" : "s");
    free(m);
}

/* ------------------------------------------------------------------ JSON (merged) */

static cJSON *stack_json(const rp_stack *s)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < s->n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(s->f[i].text));
    return a;
}

static void render_json(FILE *o, const rp_file *files, int n)
{
    int nm;
    rp_merged *m = rp_merge(files, n, &nm);
    cJSON *root = cJSON_CreateObject(), *reps = cJSON_CreateArray(), *gs = cJSON_CreateArray();
    cJSON_AddNumberToObject(root, "leakshim_merged", 1);
    for (int i = 0; i < n; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "path", files[i].path);
        cJSON_AddNumberToObject(r, "pid", files[i].pid);
        cJSON_AddItemToObject(r, "program",
                              files[i].program ? cJSON_CreateString(files[i].program) : cJSON_CreateNull());
        cJSON_AddStringToObject(r, "kind", files[i].kind ? files[i].kind : "?");
        cJSON_AddNumberToObject(r, "time", files[i].time);
        cJSON_AddNumberToObject(r, "leaks", files[i].leaks);
        cJSON_AddItemToArray(reps, r);
    }
    for (int i = 0; i < nm; i++) {
        const rp_group *g = m[i].first;
        cJSON *x = cJSON_CreateObject(), *counts = cJSON_CreateArray();
        char *t = rp_merged_title(&m[i], n);
        cJSON_AddStringToObject(x, "title", t);
        free(t);
        cJSON_AddStringToObject(x, "category", g->category ? g->category : "?");
        cJSON_AddBoolToObject(x, "leak", m[i].leak);
        cJSON_AddItemToObject(x, "driver", g->driver ? cJSON_CreateString(g->driver) : cJSON_CreateNull());
        cJSON_AddItemToObject(x, "service", g->service ? cJSON_CreateString(g->service) : cJSON_CreateNull());
        cJSON_AddNumberToObject(x, "processes", m[i].procs);
        cJSON_AddNumberToObject(x, "total", (double)m[i].total);
        for (int f = 0; f < n; f++) {
            long c = 0;
            int found = 0;
            for (int j = 0; j < files[f].ngroups; j++)
                if (!strcmp(files[f].groups[j].key, m[i].key)) {
                    c += files[f].groups[j].count;
                    found = 1;
                }
            cJSON_AddItemToArray(counts, found ? cJSON_CreateNumber((double)c) : cJSON_CreateNull());
        }
        cJSON_AddItemToObject(x, "counts", counts);
        cJSON_AddItemToObject(x, "frames", stack_json(&g->stack));
        cJSON_AddItemToArray(gs, x);
    }
    cJSON_AddItemToObject(root, "reports", reps);
    cJSON_AddItemToObject(root, "groups", gs);
    char *s = cJSON_PrintUnformatted(root);
    if (s)
        fprintf(o, "%s\n", s);
    cJSON_free(s);
    cJSON_Delete(root);
    free(m);
}

/* ------------------------------------------------------------------ the command */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("leakshim report: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nusage: leakshim report [--format text|json|html] [-o OUT] FILE.json...\n", stderr);
    return 2;
}

int ls_tool_report(int argc, char **argv)
{
    const char *format = "text", *out = NULL;
    char **paths = calloc((size_t)argc + 1, sizeof *paths);
    int np = 0, dashdash = 0;
    if (!paths)
        return 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!dashdash && !strcmp(a, "--")) {
            dashdash = 1;
        } else if (!dashdash && (!strcmp(a, "--format") || !strcmp(a, "-o") || !strcmp(a, "--output"))) {
            if (i + 1 >= argc) {
                free(paths);
                return usage_error("%s needs a value", a);
            }
            if (!strcmp(a, "--format"))
                format = argv[++i];
            else
                out = argv[++i];
        } else if (!dashdash && !strncmp(a, "--format=", 9)) {
            format = a + 9;
        } else if (!dashdash && a[0] == '-' && a[1]) {
            free(paths);
            return usage_error("unknown flag '%s'", a);
        } else
            paths[np++] = argv[i];
    }
    if (strcmp(format, "text") && strcmp(format, "json") && strcmp(format, "html")) {
        free(paths);
        return usage_error("--format takes text, json or html, not '%s'", format);
    }
    if (!np) {
        free(paths);
        return usage_error("no report given");
    }
    rp_file *files = calloc((size_t)np, sizeof *files);
    int bad = 0;
    for (int i = 0; files && i < np; i++)
        bad |= rp_load(&files[i], paths[i], stderr) < 0;
    FILE *o = stdout;
    if (!bad && files && out && strcmp(out, "-") && !(o = fopen(out, "w"))) {
        fprintf(stderr, "leakshim report: cannot write '%s': %s\n", out, strerror(errno));
        bad = 1;
    }
    if (!bad && files) {
        if (!strcmp(format, "html"))
            html_render(o, files, np);
        else if (!strcmp(format, "json"))
            render_json(o, files, np);
        else
            render_text(o, files, np);
        if (o != stdout ? fclose(o) != 0 : fflush(o) != 0) {
            fprintf(stderr, "leakshim report: writing '%s': %s\n", out ? out : "stdout", strerror(errno));
            bad = 1;
        }
    }
    for (int i = 0; files && i < np; i++)
        rp_free(&files[i]);
    free(files);
    free(paths);
    return bad || !files ? 1 : 0;
}

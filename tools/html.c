/* `leakshim report --format html`: one self-contained page. Inline CSS and SVG only: no script, no
 * font, no image and no link to anything outside the file, so it opens from disk, from a CI
 * artifact or a mail attachment, offline. Every string from a report is escaped.
 *
 * The page: the staircase chart (live connections over time per top group, from the report's
 * timeline; a pool's highest count drawn as a dashed line; leak groups in red and marked), then
 * the leak groups and suspects with their stacks (the user's frame first), the pools and the churn
 * table. Several reports: one chart per report and the groups merged by stack. The chart's
 * polylines carry their numbers (data-live) so that tests compare them with the JSON. */
#include "report_load.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOP_GROUPS 8 /* lines drawn per chart; the rest are summed into "other groups" */
#define MAX_CHARTS 8 /* charts drawn for a merge of many reports */
#define W 900
#define H 300
#define ML 50
#define MR 240
#define MT 15
#define MB 30

static void esc(FILE *o, const char *s)
{
    for (; s && *s; s++)
        switch (*s) {
        case '&': fputs("&amp;", o); break;
        case '<': fputs("&lt;", o); break;
        case '>': fputs("&gt;", o); break;
        case '"': fputs("&quot;", o); break;
        case '\'': fputs("&#39;", o); break;
        default: fputc(*s, o);
        }
}

static const char *const palette[] = {"#1f77b4", "#2ca02c", "#9467bd", "#8c564b",
                                      "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
static const char *const leak_palette[] = {"#d62728", "#ff7f0e", "#b22222", "#e6550d"};

static void css(FILE *o)
{
    fputs("<style>\n"
          "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}\n"
          "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}\n"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;"
          "font-size:.9em}th{background:#f3f3f3}\n"
          ".leak{color:#b00;font-weight:bold}.muted{color:#777}.num{text-align:right}\n"
          "pre{background:#f7f7f7;padding:.5em;margin:.3em 0 1em 0;overflow-x:auto;font-size:.85em}\n"
          ".user{font-weight:bold}.group{margin:.8em 0}\n"
          "svg text{font-family:sans-serif;font-size:11px}\n"
          "</style>\n",
          o);
}

typedef struct line {
    int tl;      /* index in timeline_groups; -1 other groups summed; -2 all connections */
    double peak; /* highest live count */
    int leak, pool;
    char label[160];
} line;

static int cmp_line(const void *a, const void *b)
{
    const line *x = a, *y = b;
    if (x->leak != y->leak)
        return y->leak - x->leak;
    return (y->peak > x->peak) - (y->peak < x->peak);
}

static double sample_live(const cJSON *s, int tl)
{
    if (tl == -2)
        return rp_num(s, "live", 0);
    const cJSON *g = cJSON_GetArrayItem(rp_get(s, "groups"), tl);
    const cJSON *live = cJSON_IsArray(g) ? cJSON_GetArrayItem(g, 0) : NULL; /* a report may come from anywhere */
    return cJSON_IsNumber(live) ? live->valuedouble : 0;
}

/* A timeline group's label: its report group's driver and service, and its user frame. */
static void label_of(const rp_file *f, const cJSON *tg, line *l)
{
    const char *drv = rp_str(tg, "driver");
    int gi = (int)rp_num(tg, "group", -1);
    const cJSON *pool = rp_get(tg, "pool");
    rp_stack s;
    rp_stack_of(f, NULL, (int)rp_num(tg, "stack", 0), &s);
    const char *where = s.n ? s.f[0].text : "?";
    if (cJSON_IsTrue(rp_get(tg, "other")))
        snprintf(l->label, sizeof l->label, "other groups");
    else if (cJSON_IsString(pool))
        snprintf(l->label, sizeof l->label, "pool %s (%s), made at %s", pool->valuestring, drv ? drv : "?", where);
    else
        snprintf(l->label, sizeof l->label, "%s%s, %s", gi >= 0 && gi < f->ngroups && f->groups[gi].leak ? "LEAK " : "",
                 drv ? drv : "?", where);
    rp_stack_free(&s);
}

static void chart(FILE *o, const rp_file *f, int which)
{
    const cJSON *tl = rp_get(f->root, "timeline"), *tgs = rp_get(f->root, "timeline_groups");
    int ns = cJSON_GetArraySize(tl), ng = cJSON_GetArraySize(tgs);
    fprintf(o, "<h2>Live connections over time: pid %d (", f->pid);
    esc(o, f->program ? f->program : "?");
    fputs(")</h2>\n", o);
    if (ns < 2) {
        fputs("<p class=\"muted\">No timeline in this report (fewer than two samples: a run shorter than interval=, "
              "or interval=0).</p>\n",
              o);
        return;
    }
    line *lines = calloc((size_t)ng + 2, sizeof *lines);
    if (!lines)
        return;
    for (int k = 0; k < ng; k++) {
        const cJSON *tg = cJSON_GetArrayItem(tgs, k);
        int gi = (int)rp_num(tg, "group", -1);
        lines[k].tl = k;
        lines[k].leak = gi >= 0 && gi < f->ngroups && f->groups[gi].leak && !f->groups[gi].suppressed;
        lines[k].pool = cJSON_IsString(rp_get(tg, "pool"));
        for (int i = 0; i < ns; i++)
            lines[k].peak = fmax(lines[k].peak, sample_live(cJSON_GetArrayItem(tl, i), k));
        label_of(f, tg, &lines[k]);
    }
    qsort(lines, (size_t)ng, sizeof *lines, cmp_line);
    int nl = ng < TOP_GROUPS ? ng : TOP_GROUPS;
    double t0 = rp_num(cJSON_GetArrayItem(tl, 0), "t", 0), t1 = rp_num(cJSON_GetArrayItem(tl, ns - 1), "t", 0);
    double ymax = 1;
    for (int i = 0; i < ns; i++)
        ymax = fmax(ymax, rp_num(cJSON_GetArrayItem(tl, i), "live", 0));
    ymax = ceil(ymax / 4) * 4; /* whole numbers on the four grid lines */
    double span = t1 > t0 ? t1 - t0 : 1, pw = W - ML - MR, ph = H - MT - MB;
#define X(t) (ML + ((t)-t0) / span * pw)
#define Y(v) (MT + ph - (v) / ymax * ph)
    fprintf(o, "<svg class=\"chart\" data-pid=\"%d\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">\n",
            f->pid, W, H, W, H);
    fprintf(o, "<title>Live database connections over time, pid %d</title>\n", f->pid);
    fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"#fcfcfc\" stroke=\"#ccc\"/>\n", ML, MT,
            pw, ph);
    for (int k = 0; k <= 4; k++) { /* y grid */
        double v = ymax * k / 4;
        fprintf(o, "<line x1=\"%d\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", ML, ML + pw, Y(v), Y(v));
        fprintf(o, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", ML - 4, Y(v) + 4, v);
    }
    for (int k = 0; k <= 4; k++) {
        double t = t0 + span * k / 4;
        fprintf(o, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.3gs</text>\n", X(t), H - 10, t - t0);
    }
    /* the sample times, once; each polyline lists its values in the same order */
    fputs("<g class=\"samples\" data-t=\"", o);
    for (int i = 0; i < ns; i++)
        fprintf(o, "%s%.3f", i ? " " : "", rp_num(cJSON_GetArrayItem(tl, i), "t", 0));
    fputs("\">\n", o);
    for (int k = -1; k < nl; k++) {
        int tlk = k < 0 ? -2 : lines[k].tl;
        const char *color = k < 0           ? "#bbbbbb"
                            : lines[k].leak ? leak_palette[k % 4]
                                            : palette[k % (int)(sizeof palette / sizeof *palette)];
        fprintf(o,
                "<polyline class=\"%s\" data-group=\"%d\" fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" data-live=\"",
                k < 0 ? "total" : "group", tlk, color,
                k >= 0 && lines[k].leak ? "3"
                : k < 0                 ? "4"
                                        : "2");
        for (int i = 0; i < ns; i++)
            fprintf(o, "%s%.0f", i ? " " : "", sample_live(cJSON_GetArrayItem(tl, i), tlk));
        fputs("\" points=\"", o);
        for (int i = 0; i < ns; i++) {
            const cJSON *s = cJSON_GetArrayItem(tl, i);
            fprintf(o, "%s%.1f,%.1f", i ? " " : "", X(rp_num(s, "t", 0)), Y(sample_live(s, tlk)));
        }
        fputs("\"/>\n", o);
        if (k >= 0 && lines[k].pool) { /* the pool's highest count, as a ceiling */
            fprintf(
                o,
                "<line class=\"poolmax\" data-group=\"%d\" x1=\"%d\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-dasharray=\"6 4\"/><text x=\"%.0f\" y=\"%.1f\" fill=\"%s\" text-anchor=\"end\">pool max "
                "%.0f</text>\n",
                tlk, ML, ML + pw, Y(lines[k].peak), Y(lines[k].peak), color, ML + pw - 4, Y(lines[k].peak) - 3, color,
                lines[k].peak);
        }
        if (k >= 0 && lines[k].leak) { /* a leak group is marked at its last sample */
            const cJSON *s = cJSON_GetArrayItem(tl, ns - 1);
            double x = X(rp_num(s, "t", 0)), y = Y(sample_live(s, tlk));
            fprintf(o,
                    "<path class=\"leakmark\" d=\"M%.1f %.1fl-5 -9h10z\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\" "
                    "fill=\"%s\" text-anchor=\"end\" font-weight=\"bold\">leak</text>\n",
                    x, y - 2, color, x - 7, y - 6, color);
        }
    }
    fputs("</g>\n", o);
    /* legend */
    int ly = MT + 10;
    fprintf(o,
            "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" fill=\"#bbbbbb\"/><text x=\"%d\" y=\"%d\">all "
            "connections</text>\n",
            W - MR + 10, ly - 4, W - MR + 28, ly);
    for (int k = 0; k < nl; k++) {
        ly += 16;
        const char *color = lines[k].leak ? leak_palette[k % 4] : palette[k % (int)(sizeof palette / sizeof *palette)];
        char shortl[34];
        size_t len = strlen(lines[k].label);
        if (len < sizeof shortl)
            memcpy(shortl, lines[k].label, len + 1);
        else { /* cut, with "..." (the whole label is the tooltip and in the table below) */
            memcpy(shortl, lines[k].label, sizeof shortl - 4);
            memcpy(shortl + sizeof shortl - 4, "...", 4);
        }
        fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" fill=\"%s\"/><text x=\"%d\" y=\"%d\"%s>",
                W - MR + 10, ly - 4, color, W - MR + 28, ly, lines[k].leak ? " font-weight=\"bold\"" : "");
        esc(o, shortl);
        fputs("<title>", o);
        esc(o, lines[k].label);
        fputs("</title></text>\n", o);
    }
    fputs("</svg>\n<table><tr><th>line</th><th>group</th><th class=\"num\">highest</th></tr>\n", o);
    for (int k = 0; k < nl; k++) {
        const char *color = lines[k].leak ? leak_palette[k % 4] : palette[k % (int)(sizeof palette / sizeof *palette)];
        fprintf(o, "<tr><td><span style=\"color:%s\">&#9632;</span></td><td%s>", color,
                lines[k].leak ? " class=\"leak\"" : "");
        esc(o, lines[k].label);
        fprintf(o, "</td><td class=\"num\">%.0f</td></tr>\n", lines[k].peak);
    }
    fputs("</table>\n", o);
    if (ng > nl)
        fprintf(o, "<p class=\"muted\">%d more groups not drawn.</p>\n", ng - nl);
    (void)which;
#undef X
#undef Y
    free(lines);
}

static void stack_html(FILE *o, const rp_stack *s)
{
    fputs("<pre>", o);
    for (int i = 0; i < s->n; i++) {
        fputs(i ? "   " : "at ", o);
        if (s->f[i].user)
            fputs("<span class=\"user\">", o);
        esc(o, s->f[i].text);
        if (s->f[i].user)
            fputs("</span>", o);
        fputc('\n', o);
    }
    if (!s->n)
        fputs("(no stack)\n", o);
    fputs("</pre>\n", o);
    if (s->inner) {
        fprintf(o, "<details><summary class=\"muted\">%d inner frame%s (libraries)</summary><pre>", s->inner,
                s->inner == 1 ? "" : "s");
        for (int i = s->n; i < s->n + s->inner; i++) {
            esc(o, s->f[i].text);
            fputc('\n', o);
        }
        fputs("</pre></details>\n", o);
    }
}

static void groups_html(FILE *o, const rp_file *files, int n)
{
    int nm;
    rp_merged *m = rp_merge(files, n, &nm);
    fputs("<h2>Leak groups</h2>\n", o);
    int any = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            fputs("<h2>Other groups</h2>\n", o);
        for (int i = 0; i < nm; i++) {
            if (m[i].leak != (pass == 0))
                continue;
            any |= pass == 0;
            char *t = rp_merged_title(&m[i], n);
            fprintf(o, "<div class=\"group\"><div%s>", m[i].leak ? " class=\"leak\"" : "");
            esc(o, t);
            fputs("</div>\n", o);
            free(t);
            stack_html(o, &m[i].first->stack);
            fputs("</div>\n", o);
        }
        if (pass == 0 && !any)
            fputs("<p>No leaked database connection.</p>\n", o);
        int others = 0;
        for (int i = 0; pass == 1 && i < nm; i++)
            others += !m[i].leak;
        if (pass == 1 && !others)
            fputs("<p class=\"muted\">None.</p>\n", o);
    }
    free(m);
}

/* The user's frame of an item's "where" (a pool's or a churn row's creation stack), escaped. */
static void where_top(FILE *o, const rp_file *f, const cJSON *item)
{
    const cJSON *where = rp_get(item, "where");
    rp_stack s;
    rp_stack_of(f, cJSON_IsObject(where) ? where : NULL, 0, &s);
    esc(o, s.n ? s.f[0].text : "?");
    rp_stack_free(&s);
}

static void suspects_pools_churn(FILE *o, const rp_file *files, int n)
{
    fputs("<h2>Suspects</h2>\n", o);
    int any = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *s;
        cJSON_ArrayForEach(s, rp_get(files[i].root, "suspects"))
        {
            const char *why = rp_str(s, "reason");
            int gi = (int)rp_num(s, "group", -1);
            fprintf(o, "<div class=\"group\"><div>pid %d: %s, %.0f", files[i].pid, why ? why : "?",
                    rp_num(s, "count", 0));
            if (cJSON_IsNumber(rp_get(s, "seconds")))
                fprintf(o, ", longest %.1f s", rp_num(s, "seconds", 0));
            if (gi >= 0 && gi < files[i].ngroups) {
                fputs(": ", o);
                esc(o, files[i].groups[gi].title);
                fputs("</div>\n", o);
                stack_html(o, &files[i].groups[gi].stack);
            } else
                fputs("</div>\n", o);
            fputs("</div>\n", o);
            any = 1;
        }
    }
    if (!any)
        fputs("<p class=\"muted\">None (an exit report has none; a snapshot lists checkouts and idle connections past "
              "the threshold, and stacks that create a client per request).</p>\n",
              o);
    fputs("<h2>Pools</h2>\n", o);
    any = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *p;
        cJSON_ArrayForEach(p, rp_get(files[i].root, "pools"))
        {
            if (!any++)
                fputs("<table><tr><th>pid</th><th>type</th><th>driver</th><th class=\"num\">size</th><th "
                      "class=\"num\">in use</th><th class=\"num\">idle</th><th>created at</th></tr>\n",
                      o);
            fprintf(o, "<tr><td>%d</td><td>", files[i].pid);
            esc(o, rp_str(p, "type"));
            fputs("</td><td>", o);
            esc(o, rp_str(p, "driver"));
            fprintf(o, "</td><td class=\"num\">%.0f</td><td class=\"num\">%.0f</td><td class=\"num\">%.0f</td><td>",
                    rp_num(p, "size", 0), rp_num(p, "in_use", 0), rp_num(p, "idle", 0));
            where_top(o, &files[i], p);
            fputs("</td></tr>\n", o);
        }
    }
    fputs(any ? "</table>\n" : "<p class=\"muted\">No pool open when the report was taken.</p>\n", o);
    fputs("<h2>Creations per stack (churn)</h2>\n", o);
    any = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *r;
        cJSON_ArrayForEach(r, rp_get(files[i].root, "churn_rows"))
        {
            if (!any++)
                fputs("<table><tr><th>pid</th><th class=\"num\">created</th><th class=\"num\">live</th><th "
                      "class=\"num\">pools</th><th>where</th><th></th></tr>\n",
                      o);
            fprintf(
                o,
                "<tr><td>%d</td><td class=\"num\">%.0f</td><td class=\"num\">%.0f</td><td class=\"num\">%.0f</td><td>",
                files[i].pid, rp_num(r, "created", 0), rp_num(r, "live", 0), rp_num(r, "pools", 0));
            where_top(o, &files[i], r);
            fprintf(o, "</td><td>%s</td></tr>\n",
                    cJSON_IsTrue(rp_get(r, "many")) ? "many created, few live: a client or pool per request?" : "");
        }
    }
    fputs(any ? "</table>\n" : "<p class=\"muted\">No creations recorded.</p>\n", o);
}

void html_render(FILE *o, const rp_file *files, int n)
{
    long leaks = 0;
    for (int i = 0; i < n; i++)
        leaks += files[i].leaks;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>leakshim report</title>\n", o);
    css(o);
    fputs("</head><body>\n<h1>leakshim report</h1>\n<table><tr><th>report</th><th>pid</th><th>program</th><th>kind</th>"
          "<th class=\"num\">leaks</th></tr>\n",
          o);
    for (int i = 0; i < n; i++) {
        fputs("<tr><td>", o);
        esc(o, files[i].path);
        fprintf(o, "</td><td>%d</td><td>", files[i].pid);
        esc(o, files[i].program ? files[i].program : "?");
        fputs("</td><td>", o);
        esc(o, files[i].kind);
        fprintf(o, "</td><td class=\"num%s\">%d</td></tr>\n", files[i].leaks ? " leak" : "", files[i].leaks);
    }
    fprintf(o, "</table>\n<p class=\"%s\">%ld leaked database connection%s in %d report%s.</p>\n", leaks ? "leak" : "",
            leaks, leaks == 1 ? "" : "s", n, n == 1 ? "" : "s");
    for (int i = 0; i < n && i < MAX_CHARTS; i++)
        chart(o, &files[i], i);
    if (n > MAX_CHARTS)
        fprintf(o, "<p class=\"muted\">%d more reports: charts not drawn.</p>\n", n - MAX_CHARTS);
    groups_html(o, files, n);
    suspects_pools_churn(o, files, n);
    fputs("</body></html>\n", o);
}

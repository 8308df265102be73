/* Saved reports read back (see report_load.h). */
#include "report_load.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPORT_BYTES (1024L * 1024 * 1024) /* a report of a million sockets is ~400 MB */

const cJSON *rp_get(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

const char *rp_str(const cJSON *o, const char *k)
{
    const cJSON *v = rp_get(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

double rp_num(const cJSON *o, const char *k, double def)
{
    const cJSON *v = rp_get(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

char *rp_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) {
        fputs("leakshim: out of memory\n", stderr);
        exit(1);
    }
    return memcpy(d, s, n);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0) {
        fputs("leakshim: out of memory\n", stderr);
        exit(1);
    }
    va_end(ap);
    return s;
}

/* The whole file; of several reports (one per line: a snapshot, then the exit report), the last. */
static char *read_all(const char *path, size_t *len, FILE *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(err, "leakshim: cannot read '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (size_t r; b && (r = fread(b + n, 1, cap - n, fp)) > 0;) {
        n += r;
        if (n == cap) {
            if (cap >= (size_t)MAX_REPORT_BYTES) {
                fprintf(err, "leakshim: '%s' is larger than 1 GiB: not a report\n", path);
                free(b);
                fclose(fp);
                return NULL;
            }
            char *nb = realloc(b, cap * 2);
            if (!nb)
                free(b);
            b = nb;
            cap *= 2;
        }
    }
    fclose(fp);
    if (!b) {
        fprintf(err, "leakshim: out of memory reading '%s'\n", path);
        return NULL;
    }
    *len = n;
    return b;
}

static const char *last_report(const char *b, size_t n, size_t *len)
{
    const char *start = b, *p = b;
    while ((p = memchr(p, '\n', (size_t)(b + n - p))) && p + 1 < b + n) {
        p++;
        if (!strncmp(p, "{\"leakshim\":", 12 < b + n - p ? 12 : (size_t)(b + n - p)))
            start = p;
    }
    *len = (size_t)(b + n - start);
    return start;
}

static const char *shorten(const rp_file *f, const char *file)
{
    const char *cwd = rp_str(f->root, "cwd");
    size_t k = cwd ? strlen(cwd) : 0;
    if (file && k && !strncmp(file, cwd, k) && file[k] == '/')
        return file + k + 1;
    return file ? file : "?";
}

static const char *base_name(const char *p)
{
    const char *s = p ? strrchr(p, '/') : NULL;
    return s ? s + 1 : p ? p : "?";
}

static char *frame_text(const rp_file *f, const cJSON *fr, int py)
{
    const char *file = rp_str(fr, "file"), *func = rp_str(fr, py ? "func" : "symbol");
    int line = (int)rp_num(fr, "line", 0);
    if (py)
        return fmt("%s (%s:%d)", func ? func : "?", shorten(f, file), line);
    if (func && file && line > 0)
        return fmt("%s (%s:%d)", func, shorten(f, file), line);
    const char *mod = base_name(rp_str(fr, "module")), *off = rp_str(fr, "offset");
    return func ? fmt("%s (%s+%s)", func, mod, off ? off : "?") : fmt("%s+%s", mod, off ? off : "?");
}

/* A frame's matching key: its text, except native frames without a line, which are matched by
 * module and offset (the same build in every process). */
static char *frame_key(const cJSON *fr, int py, const char *text)
{
    if (py || rp_num(fr, "line", 0) > 0)
        return rp_strdup(text);
    const char *off = rp_str(fr, "offset");
    return fmt("%s+%s", base_name(rp_str(fr, "module")), off ? off : "?");
}

void rp_stack_of(const rp_file *f, const cJSON *where, int id, rp_stack *out)
{
    memset(out, 0, sizeof *out);
    int user = -1;
    if (where) {
        id = (int)rp_num(where, "stack", 0);
        user = (int)rp_num(where, "frame", -1);
    }
    char ids[24];
    snprintf(ids, sizeof ids, "%d", id);
    const cJSON *st = rp_get(rp_get(f->root, "stacks"), ids);
    if (!st)
        return;
    if (user < 0)
        user = (int)rp_num(st, "user_frame", 0);
    int py = cJSON_IsTrue(rp_get(st, "python"));
    const cJSON *frames = rp_get(st, py ? "pyframes" : "frames");
    int n = cJSON_GetArraySize(frames);
    if (n <= 0)
        return;
    if (user < 0 || user >= n)
        user = 0;
    out->f = calloc((size_t)n, sizeof *out->f);
    if (!out->f)
        return;
    for (int i = 0; i < n; i++) {
        int src = i < n - user ? user + i : i - (n - user); /* the user's frame and its callers, then the inner ones */
        const cJSON *fr = cJSON_GetArrayItem(frames, src);
        const char *cls = rp_str(fr, "class");
        out->f[i].text = frame_text(f, fr, py);
        out->f[i].user = cls && !strcmp(cls, "user");
        out->f[i].lib = rp_str(fr, "library");
        out->f[i].key = frame_key(fr, py, out->f[i].text);
    }
    out->n = n - user;
    out->inner = user;
}

void rp_stack_free(rp_stack *s)
{
    for (int i = 0; s->f && i < s->n + s->inner; i++) {
        free(s->f[i].text);
        free(s->f[i].key);
    }
    free(s->f);
    memset(s, 0, sizeof *s);
}

char *rp_stack_key(const rp_stack *s)
{
    size_t len = 1;
    for (int i = 0; i < s->n; i++)
        len += strlen(s->f[i].key) + 1;
    char *k = malloc(len), *p = k;
    if (!k)
        return rp_strdup("");
    for (int i = 0; i < s->n; i++) {
        size_t l = strlen(s->f[i].key);
        memcpy(p, s->f[i].key, l);
        p += l;
        *p++ = '\n';
    }
    *p = 0;
    return k;
}

int rp_load(rp_file *f, const char *path, FILE *err)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    size_t n, len;
    char *b = read_all(path, &n, err);
    if (!b)
        return -1;
    const char *doc = last_report(b, n, &len);
    f->root = cJSON_ParseWithLength(doc, len);
    free(b);
    const cJSON *v = rp_get(f->root, "leakshim");
    if (!f->root || !cJSON_IsNumber(v) || v->valueint != 2 || !cJSON_IsArray(rp_get(f->root, "groups")) ||
        !cJSON_IsObject(rp_get(f->root, "stacks"))) {
        fprintf(err, "leakshim: '%s' is not a leakshim JSON report (format=json, or `leakshim dump --json`)%s\n", path,
                cJSON_IsNumber(v) && v->valueint != 2 ? ": another report version" : "");
        rp_free(f);
        return -1;
    }
    f->pid = (int)rp_num(f->root, "pid", 0);
    f->program = rp_str(f->root, "program");
    f->kind = rp_str(f->root, "kind");
    f->time = rp_num(f->root, "time", 0);
    f->leaks = (int)rp_num(rp_get(f->root, "summary"), "leaks", 0);
    const cJSON *groups = rp_get(f->root, "groups");
    f->ngroups = cJSON_GetArraySize(groups);
    f->groups = calloc(f->ngroups ? (size_t)f->ngroups : 1, sizeof *f->groups);
    if (!f->groups) {
        fprintf(err, "leakshim: out of memory reading '%s'\n", path);
        rp_free(f);
        return -1;
    }
    for (int i = 0; i < f->ngroups; i++) {
        rp_group *g = &f->groups[i];
        const cJSON *j = cJSON_GetArrayItem(groups, i);
        g->j = j;
        g->index = i;
        g->category = rp_str(j, "category");
        g->title = rp_str(j, "title");
        g->driver = rp_str(j, "driver");
        g->service = rp_str(j, "service");
        g->leak = cJSON_IsTrue(rp_get(j, "leak"));
        g->suppressed = cJSON_IsTrue(rp_get(j, "suppressed"));
        g->count = (int)rp_num(j, "count", 0);
        g->sockets = (int)rp_num(j, "sockets", 0);
        const cJSON *w = rp_get(j, "where");
        rp_stack_of(f, cJSON_IsObject(w) ? w : NULL, 0, &g->stack);
        char *frames = rp_stack_key(&g->stack);
        g->key = fmt("%s|%s|%s|%s", g->category ? g->category : "?", g->driver ? g->driver : "?",
                     g->service ? g->service : "?", frames);
        free(frames);
    }
    return 0;
}

void rp_free(rp_file *f)
{
    for (int i = 0; f->groups && i < f->ngroups; i++) {
        free(f->groups[i].key);
        rp_stack_free(&f->groups[i].stack);
    }
    free(f->groups);
    cJSON_Delete(f->root);
    memset(f, 0, sizeof *f);
}

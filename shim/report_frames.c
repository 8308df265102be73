/* Report model, part 1: stacks resolved into frames a person reads, each frame classified as the
 * program's own code, a third-party or system library, the interpreter, or the shim, so that
 * renderers can put the user's line first and fold the rest. Pure: symbols come from the
 * symbolizer the caller passes in (ls_symbolize_frames in the shim, a table in unit tests). */
#include "ls_report.h"

#include <stdlib.h>
#include <string.h>

static const char *const cat_names[LS_CAT_COUNT] = {
#define LS_CAT_NAME(name, str) str,
    LS_CATEGORIES(LS_CAT_NAME)
#undef LS_CAT_NAME
};

const char *ls_cat_name(int cat)
{
    return cat >= 0 && cat < LS_CAT_COUNT ? cat_names[cat] : "?";
}

int ls_cat_is_leak(int cat)
{
    return (cat >= LS_CAT_LEAK && cat <= LS_CAT_CHECKOUT_LEAK) || cat == LS_CAT_CLIENT_LEAK ||
           cat == LS_CAT_SHARED_FORK;
}

const char *ls_fclass_name(int fclass)
{
    static const char *const n[] = {"user", "library", "interpreter", "shim"};
    return fclass >= 0 && fclass <= LS_FC_SHIM ? n[fclass] : "?";
}

/* ------------------------------------------------------------------ classification */

static void set_lib(char *lib, size_t cap, const char *s, size_t n)
{
    if (!cap)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(lib, s, n);
    lib[n] = 0;
}

/* The path component at p (up to '/'), without its extension ("six.py" -> "six"). */
static void component(char *lib, size_t cap, const char *p)
{
    size_t n = strcspn(p, "/.");
    /* pytest's code lives in the package "_pytest" */
    if (n == 7 && !strncmp(p, "_pytest", 7))
        p++, n--;
    set_lib(lib, cap, p, n);
}

/* Libraries people install, recognised wherever they live (a checkout, a vendored copy): the
 * database drivers the shim knows and the test runners whose frames sit under every test. */
static const char *const known_libs[] = {
    "psycopg2", "psycopg", "psycopg_c", "psycopg_pool", "sqlalchemy", "redis",   "pymongo",  "bson",     "gridfs",
    "_pytest",  "pytest",  "pluggy",    "asyncpg",      "pymysql",    "MySQLdb", "aiomysql", "greenlet",
};

/* ".../lib/python3/" or ".../lib/python3.11/": where the standard library lives. */
static const char *stdlib_dir(const char *file)
{
    for (const char *p = strstr(file, "/lib/python3"); p; p = strstr(p + 1, "/lib/python3")) {
        const char *q = p + 12;
        while ((*q >= '0' && *q <= '9') || *q == '.')
            q++;
        if (*q == '/')
            return q + 1;
    }
    return NULL;
}

int ls_classify_pyframe(const char *file, char *lib, size_t cap)
{
    set_lib(lib, cap, "", 0);
    if (!file || !*file) {
        set_lib(lib, cap, "unknown", 7);
        return LS_FC_LIBRARY;
    }
    if (file[0] == '<') {
        if (!strncmp(file, "<leakshim>", 10)) { /* the shim's own Python (shim/py, embedded) */
            set_lib(lib, cap, "leakshim", 8);
            return LS_FC_SHIM;
        }
        if (!strncmp(file, "<frozen ", 8)) { /* the import system, runpy...: frozen standard library */
            component(lib, cap, file + 8);
            lib[strcspn(lib, ">")] = 0;
            return LS_FC_LIBRARY;
        }
        return LS_FC_USER; /* <string>, <stdin>: code given on the command line */
    }
    const char *p = strstr(file, "/site-packages/");
    if (!p)
        p = strstr(file, "/dist-packages/");
    if (p) {
        component(lib, cap, p + 15);
        return LS_FC_LIBRARY;
    }
    if ((p = stdlib_dir(file))) {
        component(lib, cap, p);
        return LS_FC_LIBRARY;
    }
    for (size_t i = 0; i < sizeof known_libs / sizeof known_libs[0]; i++) {
        size_t n = strlen(known_libs[i]);
        for (p = strstr(file, known_libs[i]); p; p = strstr(p + 1, known_libs[i]))
            if ((p == file || p[-1] == '/') && p[n] == '/') {
                component(lib, cap, p);
                return LS_FC_LIBRARY;
            }
    }
    return LS_FC_USER;
}

/* python, python3, python3.11, python3.11d: the interpreter's own binary. */
static int is_python_binary(const char *base)
{
    if (strncmp(base, "python", 6))
        return 0;
    for (const char *p = base + 6; *p; p++)
        if (!strchr("0123456789.dmu", *p))
            return 0;
    return 1;
}

int ls_classify_native(const char *module, const char *symbol, char *lib, size_t cap)
{
    set_lib(lib, cap, "", 0);
    if (!module || !*module || !strcmp(module, "?")) {
        set_lib(lib, cap, "unknown", 7);
        return LS_FC_LIBRARY;
    }
    const char *base = strrchr(module, '/');
    base = base ? base + 1 : module;
    if (!strncmp(base, "libleakshim", 11)) {
        set_lib(lib, cap, "leakshim", 8);
        return LS_FC_SHIM;
    }
    if (!strncmp(base, "libpython", 9) || is_python_binary(base) || strstr(module, "/lib-dynload/")) {
        set_lib(lib, cap, "interpreter", 11);
        return LS_FC_INTERPRETER;
    }
    const char *p = strstr(module, "/site-packages/");
    if (!p)
        p = strstr(module, "/dist-packages/");
    if (p) { /* an extension module (psycopg2's _psycopg.so) or a library a wheel bundles */
        component(lib, cap, p + 15);
        return LS_FC_LIBRARY;
    }
    if (symbol && !strcmp(symbol, "_start")) { /* the C runtime's entry, linked into the program */
        set_lib(lib, cap, "libc", 4);
        return LS_FC_LIBRARY;
    }
    static const char *const sysdirs[] = {"/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/local/lib/"};
    for (size_t i = 0; i < sizeof sysdirs / sizeof sysdirs[0]; i++)
        if (!strncmp(module, sysdirs[i], strlen(sysdirs[i]))) {
            const char *so = strstr(base, ".so");
            set_lib(lib, cap, base, so ? (size_t)(so - base) : strlen(base));
            return LS_FC_LIBRARY;
        }
    return LS_FC_USER;
}

/* ------------------------------------------------------------------ stacks */

#define LS_INLINE_MAX 8 /* frames one return address may expand to */

void ls_mstack_free(ls_mstack *s)
{
    free(s->f);
    free(s->syms);
    s->f = NULL;
    s->syms = NULL;
    s->n = 0;
}

static void first_user(ls_mstack *s)
{
    s->user = -1;
    for (int i = 0; i < s->n && s->user < 0; i++)
        if (s->f[i].fclass == LS_FC_USER)
            s->user = i;
}

static int resolve_native(ls_mstack *s, const ls_stack *st, int (*symbolize)(void *, ls_sym *, int))
{
    size_t cap = (size_t)st->n + 4, n = 0;
    s->syms = calloc(cap, sizeof *s->syms);
    int *raw = calloc(cap, sizeof *raw);
    for (int i = 0; s->syms && raw && i < st->n; i++) {
        ls_sym tmp[LS_INLINE_MAX];
        int k = symbolize ? symbolize(st->frames[i], tmp, LS_INLINE_MAX) : 0;
        if (k < 1) { /* no symbolizer: the raw address alone */
            memset(tmp, 0, sizeof tmp[0]);
            strcpy(tmp[0].module, "?");
            tmp[0].offset = (uintptr_t)st->frames[i];
            k = 1;
        }
        if (n + (size_t)k > cap) {
            size_t nc = (n + (size_t)k) * 2;
            ls_sym *ns = realloc(s->syms, nc * sizeof *ns);
            int *nr = ns ? realloc(raw, nc * sizeof *nr) : NULL;
            if (ns)
                s->syms = ns;
            if (!nr)
                break;
            raw = nr;
            cap = nc;
        }
        for (int j = 0; j < k; j++) {
            tmp[j].inlined = j < k - 1;
            s->syms[n] = tmp[j];
            raw[n++] = i;
        }
    }
    s->f = s->syms && raw ? calloc(n ? n : 1, sizeof *s->f) : NULL;
    if (!s->f) {
        free(raw);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        ls_mframe *f = &s->f[i];
        f->sym = &s->syms[i];
        f->pc = st->frames[raw[i]];
        f->raw = raw[i];
        f->fclass = ls_classify_native(f->sym->module, f->sym->symbol, f->lib, sizeof f->lib);
    }
    free(raw);
    s->n = (int)n;
    s->nraw = st->n;
    return 0;
}

int ls_mstack_resolve(ls_mstack *s, ls_stack_id id, int (*symbolize)(void *, ls_sym *, int))
{
    memset(s, 0, sizeof *s);
    s->id = id;
    s->user = -1;
    s->resolved = 1;
    const ls_stack *st = ls_stack_get(id);
    if (!st)
        return 0;
    s->py = st->is_py;
    if (!st->is_py) {
        if (resolve_native(s, st, symbolize) < 0) {
            ls_mstack_free(s);
            return -1;
        }
    } else {
        s->f = calloc(st->n ? (size_t)st->n : 1, sizeof *s->f);
        if (!s->f)
            return -1;
        for (int i = 0; i < st->n; i++) {
            ls_mframe *f = &s->f[i];
            f->py = 1;
            f->raw = i;
            f->file = st->pyframes[i].file;
            f->func = st->pyframes[i].func;
            f->line = st->pyframes[i].line;
            f->fclass = ls_classify_pyframe(f->file, f->lib, sizeof f->lib);
        }
        s->n = s->nraw = st->n;
    }
    first_user(s);
    return 0;
}

ls_where ls_where_of(const ls_mstack *py, const ls_mstack *nat)
{
    ls_where w = {py && py->n ? py : NULL, nat && nat->n ? nat : NULL, NULL};
    if (w.py && w.py->user >= 0)
        w.user = &w.py->f[w.py->user];
    else if (w.nat && w.nat->user >= 0)
        w.user = &w.nat->f[w.nat->user];
    else {
        /* nothing of the user's: the first frame that is not the shim's */
        const ls_mstack *s = w.py ? w.py : w.nat;
        for (int i = 0; s && i < s->n && !w.user; i++)
            if (s->f[i].fclass != LS_FC_SHIM)
                w.user = &s->f[i];
    }
    return w;
}

/* The report engine: the model built from hand-made snapshots (every category, grouping, order,
 * pools, churn, suspects), rendered as text and JSON and compared with reviewed golden files;
 * frame classification; and the whole path from the live registry (ls_report_build).
 *
 * Golden files: tests/unit/golden/NAME.txt (text) and NAME.json (the JSON, pretty-printed by
 * this test so that a change reads as a diff). After an intended change of the output:
 *     UPDATE_GOLDEN=1 ./tests/unit/test_report     (from the repository root)
 * rewrites them; review the diff before committing it (tests/unit/golden/README.md). */
#include "unit.h"
#include "ls_report.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ================================================================== hand-made inputs */

/* A symbolizer from a table: the same frames on every machine and build. */
static const struct fake_sym {
    uintptr_t pc;
    const char *module, *symbol;
    uintptr_t offset, sym_off;
    const char *src;
    int line;
    const char *inl_symbol, *inl_src; /* a function inlined at pc, if any */
    int inl_line;
} fake_syms[] = {
    /* the program, built with debug info for most of it */
    {0x401118, "/srv/app/bin/service", "handle_report", 0x1118, 0x18, "src/service.c", 30, NULL, NULL, 0},
    {0x401236, "/srv/app/bin/service", "serve", 0x1236, 0x36, "src/service.c", 51, "dispatch", "src/dispatch.h", 12},
    {0x40136f, "/srv/app/bin/service", "main", 0x136f, 0x16f, "src/service.c", 73, NULL, NULL, 0},
    {0x401420, "/srv/app/bin/service", "handle_lookup", 0x1420, 0x20, "src/service.c", 15, NULL, NULL, 0},
    {0x401530, "/srv/app/bin/service", "remember_connection", 0x1530, 0x30, NULL, 0, NULL, NULL, 0},
    {0x401640, "/srv/app/bin/service", "open_session", 0x1640, 0x40, NULL, 0, NULL, NULL, 0},
    {0x401721, "/srv/app/bin/service", "_start", 0x1721, 0x21, NULL, 0, NULL, NULL, 0},
    {0x401800, "/srv/app/bin/service", NULL, 0x1800, 0, NULL, 0, NULL, NULL, 0},
    {0x7f000002724a, "/lib/x86_64-linux-gnu/libc.so.6", NULL, 0x2724a, 0, NULL, 0, NULL, NULL, 0},
    {0x7f0000027305, "/lib/x86_64-linux-gnu/libc.so.6", "__libc_start_main", 0x27305, 0x85, NULL, 0, NULL, NULL, 0},
    {0x7f1000010d19, "/lib/x86_64-linux-gnu/libpq.so.5", "PQconnectPoll", 0x10d19, 0x11f9, NULL, 0, NULL, NULL, 0},
    {0x7f1000014c8e, "/lib/x86_64-linux-gnu/libpq.so.5", "PQconnectStart", 0x14c8e, 0x5e, NULL, 0, NULL, NULL, 0},
    {0x7f1000015030, "/lib/x86_64-linux-gnu/libpq.so.5", "PQconnectdb", 0x15030, 0x30, NULL, 0, NULL, NULL, 0},
    {0x7f3000004040, "/lib/x86_64-linux-gnu/libmongoc-1.0.so.0", "mongoc_client_pool_pop", 0x4040, 0x40, NULL, 0, NULL,
     NULL, 0},
    {0x7f2000016998, "/usr/lib/python3/dist-packages/psycopg2/_psycopg.cpython-311-x86_64-linux-gnu.so", NULL, 0x16998,
     0, NULL, 0, NULL, NULL, 0},
    {0x7f2000018001, "/usr/lib/python3/dist-packages/psycopg2/_psycopg.cpython-311-x86_64-linux-gnu.so", NULL, 0x18001,
     0, NULL, 0, NULL, NULL, 0},
    {0x555500005000, "/usr/bin/python3.11", "_PyEval_EvalFrameDefault", 0x105000, 0x1234, NULL, 0, NULL, NULL, 0},
    {0x555500005100, "/usr/bin/python3.11", "PyObject_Vectorcall", 0x105100, 0x40, NULL, 0, NULL, NULL, 0},
    {0x555500005200, "/usr/bin/python3.11", "Py_RunMain", 0x105200, 0x90, NULL, 0, NULL, NULL, 0},
};

static int fake_symbolize(void *pc, ls_sym *out, int max)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof fake_syms / sizeof fake_syms[0]; i++) {
        const struct fake_sym *f = &fake_syms[i];
        if (f->pc != (uintptr_t)pc)
            continue;
        int n = 0;
        if (f->inl_symbol && max > 1) {
            memset(&out[n], 0, sizeof out[n]);
            snprintf(out[n].module, sizeof out[n].module, "%s", f->module);
            snprintf(out[n].symbol, sizeof out[n].symbol, "%s", f->inl_symbol);
            snprintf(out[n].src_file, sizeof out[n].src_file, "%s", f->inl_src);
            out[n].src_line = f->inl_line;
            out[n].offset = f->offset;
            out[n].inlined = 1;
            n++;
        }
        ls_sym *s = &out[n++];
        memset(s, 0, sizeof *s);
        snprintf(s->module, sizeof s->module, "%s", f->module);
        snprintf(s->symbol, sizeof s->symbol, "%s", f->symbol ? f->symbol : "");
        snprintf(s->src_file, sizeof s->src_file, "%s", f->src ? f->src : "");
        s->src_line = f->line;
        s->offset = f->offset;
        s->sym_off = f->sym_off;
        if (!strncmp(f->module, "/srv/app", 8))
            snprintf(s->build_id, sizeof s->build_id, "0123456789abcdef0123456789abcdef01234567");
        return n;
    }
    snprintf(out->module, sizeof out->module, "?");
    out->offset = (uintptr_t)pc;
    return 1;
}

#define NAT(...) nat_stack((void *[]){__VA_ARGS__}, sizeof((void *[]){__VA_ARGS__}) / sizeof(void *))
static ls_stack_id nat_stack(void *const *frames, size_t n)
{
    ls_stack_id id = ls_stack_intern(frames, (int)n);
    assert_true(id != 0);
    return id;
}

static ls_stack_id py_stack(const ls_pyframe *f, int n)
{
    ls_stack_id id = ls_pystack_intern(f, n);
    assert_true(id != 0);
    return id;
}

#define P(x) ((void *)(uintptr_t)(x))
#define T0 1795000000.0 /* the process started 2026-11-18 11:06:40 UTC */
#define NOW (T0 + 120.0)

static const char *const test_argv[] = {"/srv/app/bin/service", "--config", "/etc/app/service conf.ini"};

typedef struct scenario {
    ls_conn_view c[32];
    ls_handle_view h[32];
    size_t nc, nh;
    ls_created created[16];
    size_t ncreated;
    ls_tl_sample tl[4];
    size_t ntl;
    ls_tl_group tlg[4];
    size_t ntlg;
    ls_snapshot snap;
    ls_report_input in;
    ls_model m;
} scenario;

static void sa_in(struct sockaddr_storage *ss, socklen_t *len, const char *ip, int p)
{
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof *ss);
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)p);
    inet_pton(AF_INET, ip, &in->sin_addr);
    *len = sizeof *in;
}

static ls_conn_view *add_conn(scenario *s, int fd, int peer_port, int driver, uintptr_t handle, double created,
                              ls_stack_id stack, ls_stack_id pystack)
{
    ls_conn_view *c = &s->c[s->nc++];
    memset(c, 0, sizeof *c);
    c->fd = c->fds[0] = fd;
    c->nfds = 1;
    c->ino = 900000 + (uint64_t)fd;
    sa_in(&c->peer, &c->peerlen, "10.0.0.5", peer_port);
    sa_in(&c->local, &c->locallen, "10.0.0.9", 40000 + fd);
    c->driver = driver;
    c->handle = handle;
    c->created = created;
    c->idle = 0.5;
    c->tid = 4242;
    c->stack = stack;
    c->pystack = pystack;
    return c;
}

static ls_handle_view *add_handle(scenario *s, uintptr_t addr, int driver, int kind, double created, ls_stack_id stack,
                                  ls_stack_id pystack)
{
    ls_handle_view *h = &s->h[s->nh++];
    memset(h, 0, sizeof *h);
    h->handle = addr;
    h->driver = driver;
    h->kind = kind;
    h->created = created;
    h->stack = stack;
    h->pystack = pystack;
    h->tid = 4242;
    return h;
}

static void add_created(scenario *s, ls_stack_id id, uint64_t n)
{
    s->created[s->ncreated++] = (ls_created){id, n};
}

static int cmp_hv(const void *a, const void *b)
{
    uintptr_t x = ((const ls_handle_view *)a)->handle, y = ((const ls_handle_view *)b)->handle;
    return x < y ? -1 : x > y;
}

/* The state a socket's view has, as ls_registry_snapshot derives it. */
static void derive_states(scenario *s)
{
    for (size_t i = 0; i < s->nc; i++) {
        ls_conn_view *c = &s->c[i];
        const ls_handle_view *h = NULL;
        for (size_t j = 0; j < s->nh; j++)
            if (s->h[j].handle == c->handle)
                h = &s->h[j];
        c->pool = h ? h->pool : c->pool;
        c->state = c->background   ? LS_ST_BACKGROUND
                   : h && h->freed ? LS_ST_ORPHANED
                   : h && h->pool  ? (h->checked_out ? LS_ST_CHECKED_OUT : LS_ST_IDLE_IN_POOL)
                                   : LS_ST_IN_USE;
    }
}

static void build_model(scenario *s, int kind)
{
    derive_states(s);
    qsort(s->h, s->nh, sizeof s->h[0], cmp_hv);
    s->snap = (ls_snapshot){s->c, s->nc, s->h, s->nh, 2};
    s->in = (ls_report_input){.kind = kind,
                              .now = NOW,
                              .threshold = 30,
                              .snap = &s->snap,
                              .created = s->created,
                              .ncreated = s->ncreated,
                              .timeline = s->tl,
                              .ntimeline = s->ntl,
                              .tl_groups = s->tlg,
                              .ntl_groups = s->ntlg,
                              .proc = {4242, 4000, T0, "/srv/app/bin/service", "/srv/app", test_argv, 3},
                              .all_stacks = 1,
                              .symbolize = fake_symbolize};
    assert_int_equal(ls_model_build(&s->m, &s->in), 0);
}

/* ================================================================== golden files */

#define GOLDEN_DIR "tests/unit/golden"

/* One JSON value per line at most, two-space indent: golden JSON that reads as a diff. */
static void pretty_json(const char *j, ls_buf *out)
{
    int depth = 0, in_str = 0;
    for (const char *p = j; *p && *p != '\n'; p++) {
        char c = *p;
        if (in_str) {
            ls_buf_printf(out, "%c", c);
            if (c == '\\' && p[1])
                ls_buf_printf(out, "%c", *++p);
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
            ls_buf_puts(out, "\"");
        } else if ((c == '{' || c == '[') && (p[1] == '}' || p[1] == ']')) {
            ls_buf_printf(out, "%c%c", c, p[1]);
            p++;
        } else if (c == '{' || c == '[') {
            ls_buf_printf(out, "%c\n%*s", c, 2 * ++depth, "");
        } else if (c == '}' || c == ']') {
            ls_buf_printf(out, "\n%*s%c", 2 * --depth, "", c);
        } else if (c == ',') {
            ls_buf_printf(out, ",\n%*s", 2 * depth, "");
        } else if (c == ':') {
            ls_buf_puts(out, ": ");
        } else {
            ls_buf_printf(out, "%c", c);
        }
    }
    ls_buf_puts(out, "\n");
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    ls_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        for (size_t i = 0; i < n; i++)
            ls_buf_printf(&b, "%c", chunk[i]);
    fclose(f);
    return b.data ? b.data : strdup("");
}

/* Compares got with the golden file; UPDATE_GOLDEN=1 writes it instead. On a difference, the
 * first differing line of each is printed. */
static void golden(const char *name, const char *got)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", GOLDEN_DIR, name);
    const char *upd = getenv("UPDATE_GOLDEN");
    if (upd && !strcmp(upd, "1")) {
        mkdir(GOLDEN_DIR, 0755);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fputs(got, f);
        fclose(f);
        fprintf(stderr, "golden: wrote %s\n", path);
        return;
    }
    char *want = read_all(path);
    if (!want)
        fail_msg("golden file %s missing (%s): run UPDATE_GOLDEN=1 %s and review it", path, strerror(errno),
                 "./tests/unit/test_report");
    if (strcmp(want, got)) {
        const char *a = want, *b = got;
        int line = 1;
        while (*a && *a == *b) {
            line += *a == '\n';
            a++, b++;
        }
        while (a > want && a[-1] != '\n')
            a--, b--;
        fprintf(stderr, "golden %s differs at line %d:\n  want: %.*s\n  got:  %.*s\n", path, line,
                (int)strcspn(a, "\n"), a, (int)strcspn(b, "\n"), b);
        free(want);
        fail_msg("output differs from %s (UPDATE_GOLDEN=1 rewrites it; review the diff)", path);
    }
    free(want);
}

static void golden_text(const char *name, const ls_model *m, int fold, int sockets, int verbose)
{
    ls_render_opts o = {.fold = fold, .sockets = sockets, .verbose = verbose, .top = 5};
    ls_buf b = {0};
    ls_render_text(&b, m, &o);
    assert_non_null(b.data);
    golden(name, b.data);
    ls_buf_free(&b);
}

static void golden_json(const char *name, const ls_model *m)
{
    ls_buf b = {0}, p = {0};
    ls_render_json(&b, m);
    assert_non_null(b.data);
    assert_int_equal(b.data[b.len - 1], '\n'); /* one document per line */
    assert_null(memchr(b.data, '\n', b.len - 1));
    pretty_json(b.data, &p);
    golden(name, p.data);
    ls_buf_free(&b);
    ls_buf_free(&p);
}

/* ================================================================== scenarios */

/* A C service at exit: one of each category, so every group title and the quiet section show. */
static void c_service_exit(scenario *s)
{
    memset(s, 0, sizeof *s);
    ls_stack_id report = NAT(P(0x401118), P(0x401236), P(0x40136f), P(0x7f000002724a), P(0x7f0000027305), P(0x401721));
    ls_stack_id lookup = NAT(P(0x401420), P(0x401236), P(0x40136f), P(0x7f000002724a), P(0x7f0000027305), P(0x401721));
    ls_stack_id remember = NAT(P(0x401530), P(0x401800), P(0x40136f), P(0x7f000002724a));
    ls_stack_id inside_libpq = NAT(P(0x7f1000010d19), P(0x7f1000014c8e), P(0x7f1000015030), P(0x401118));
    ls_stack_id session = NAT(P(0x401640), P(0x40136f));
    ls_stack_id pool_pop = NAT(P(0x7f3000004040), P(0x401236), P(0x40136f));
    ls_stack_id no_symbols = NAT(P(0xdead0000), P(0xdead0100));
    /* 3 PGconn never freed, one socket each, plus one whose connection failed */
    for (int i = 0; i < 3; i++) {
        add_handle(s, 0x5000 + 0x100 * (uintptr_t)i, LS_DRV_LIBPQ, LS_HK_CLIENT, T0 + 10 + i, report, 0)->open_socks =
            1;
        add_conn(s, 5 + i, 5432, LS_DRV_LIBPQ, 0x5000 + 0x100 * (uintptr_t)i, T0 + 10 + i, inside_libpq, 0);
    }
    ls_handle_view *failed = add_handle(s, 0x5800, LS_DRV_LIBPQ, LS_HK_CLIENT, T0 + 20, report, 0);
    (void)failed; /* no socket ever: PQconnectdb failed, PQfinish forgotten */
    /* 2 raw sockets no driver owns (a Redis port) */
    add_conn(s, 9, 6379, LS_DRV_NONE, 0, T0 + 30, remember, 0);
    add_conn(s, 10, 6379, LS_DRV_NONE, 0, T0 + 31, remember, 0);
    /* a hiredis handle freed with redisFreeKeepFd, its socket left open */
    add_handle(s, 0x6000, LS_DRV_HIREDIS, LS_HK_CLIENT, T0 + 40, session, 0)->freed = 1;
    add_conn(s, 11, 6379, LS_DRV_HIREDIS, 0x6000, T0 + 40, session, 0);
    /* a MYSQL whose socket was closed under it */
    ls_handle_view *my = add_handle(s, 0x7000, LS_DRV_MYSQL, LS_HK_CLIENT, T0 + 50, session, 0);
    my->closed_socks = my->socks_ever = 1;
    /* a libmongoc pool: two clients popped and never pushed, one idle, one monitor socket */
    add_handle(s, 0x8000, LS_DRV_MONGOC, LS_HK_POOL, T0 + 1, session, 0);
    for (int i = 0; i < 3; i++) {
        ls_handle_view *c = add_handle(s, 0x8100 + 0x100 * (uintptr_t)i, LS_DRV_MONGOC, LS_HK_CLIENT, T0 + 2, 0, 0);
        c->pool = 0x8000;
        c->checked_out = i < 2;
        c->checkout_time = T0 + 60 + 5 * i;
        c->co_stack = pool_pop;
        c->open_socks = 1;
        add_conn(s, 12 + i, 27017, LS_DRV_MONGOC, c->handle, T0 + 3, no_symbols, 0);
    }
    ls_conn_view *mon = add_conn(s, 15, 27017, LS_DRV_MONGOC, 0x8000, T0 + 1, no_symbols, 0);
    mon->background = 1;
    /* inherited from the parent: its report, not ours */
    add_conn(s, 16, 5432, LS_DRV_NONE, 0, T0 - 5, remember, 0)->inherited = 1;
    add_created(s, lookup, 25);
    add_created(s, report, 4);
    add_created(s, remember, 2);
    add_created(s, session, 3);
    s->tl[0] = (ls_tl_sample){.t = T0 + 60, .live = 10, .checked_out = 1};
    s->tl[1] = (ls_tl_sample){.t = T0 + 90, .live = 12, .checked_out = 2};
    s->ntl = 2;
    /* timeline groups: the raw sockets' stack (seen from the first sample), the pool (from the
     * second), and "other" */
    s->tlg[0] = (ls_tl_group){.stack = remember, .driver = LS_DRV_NONE};
    s->tlg[1] = (ls_tl_group){.stack = session, .pool = 0x8000, .driver = LS_DRV_MONGOC};
    s->tlg[2] = (ls_tl_group){.other = 1, .driver = -1};
    s->ntlg = 3;
    s->tl[0].created = 20;
    s->tl[0].ngroups = 1;
    s->tl[0].g[0] = (ls_tl_gcount){.live = 1, .created = 1};
    s->tl[0].g[LS_TL_GROUPS] = (ls_tl_gcount){.live = 2, .created = 2};
    s->tl[1].created = 31;
    s->tl[1].ngroups = 2;
    s->tl[1].g[0] = (ls_tl_gcount){.live = 2, .created = 2};
    s->tl[1].g[1] = (ls_tl_gcount){.live = 4, .checked_out = 2, .created = 4};
    s->tl[1].g[LS_TL_GROUPS] = (ls_tl_gcount){.live = 3, .created = 3};
}

static void golden_c_service_exit(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    c_service_exit(s);
    build_model(s, LS_REPORT_EXIT);
    /* counted: 3 handle-leak + 2 leak + 1 orphaned + 1 closed-under + 2 checkout-leak */
    assert_int_equal(s->m.sum.leaks, 9);
    /* each timeline group is mapped to the report group holding its connections: the raw sockets'
     * leak group, the pool's checkout leak (a leak before its quiet pool-unclosed group), none for
     * "other" */
    assert_non_null(s->m.tl_group);
    const ls_mgroup *raw = &s->m.groups[s->m.tl_group[0]], *pool = &s->m.groups[s->m.tl_group[1]];
    assert_int_equal(raw->cat, LS_CAT_LEAK);
    assert_int_equal(pool->cat, LS_CAT_CHECKOUT_LEAK);
    assert_int_equal(s->m.tl_group[2], -1);
    assert_int_equal(s->m.sum.groups, 5);
    assert_int_equal(s->m.sum.quiet, 3); /* unconnected handle, pool, background socket */
    golden_text("c_service_exit.txt", &s->m, 1, 0, 0);
    golden_text("c_service_exit_unfolded.txt", &s->m, 0, 0, 0);
    golden_json("c_service_exit.json", &s->m);
    ls_model_free(&s->m);
    free(s);
}

/* A Python service under pytest, snapshotted: ten sessions checked out from one line (the
 * oldest past the threshold), idle pooled connections, a client per request, a monitor socket. */
static const ls_pyframe sa_frames[] = {
    {"/usr/lib/python3/dist-packages/sqlalchemy/event/attr.py", "_EmptyListener.__call__", 247},
    {"/usr/lib/python3/dist-packages/sqlalchemy/pool/base.py", "_ConnectionFairy._checkout", 943},
    {"/usr/lib/python3/dist-packages/sqlalchemy/pool/base.py", "Pool.connect", 327},
    {"/usr/lib/python3/dist-packages/sqlalchemy/engine/base.py", "Engine.raw_connection", 3394},
    {"/usr/lib/python3/dist-packages/sqlalchemy/engine/base.py", "Engine.connect", 3315},
    {"/usr/lib/python3/dist-packages/sqlalchemy/orm/session.py", "Session._connection_for_bind", 1552},
    {"/usr/lib/python3/dist-packages/sqlalchemy/orm/session.py", "Session.execute", 1713},
    {"/srv/app/app.py", "get_user", 34},
    {"/srv/app/tests/test_users.py", "test_get_user", 9},
    {"/usr/lib/python3/dist-packages/_pytest/python.py", "pytest_pyfunc_call", 195},
    {"/usr/lib/python3/dist-packages/pluggy/_callers.py", "_multicall", 39},
    {"/usr/lib/python3/dist-packages/pluggy/_manager.py", "PluginManager._hookexec", 80},
    {"/usr/lib/python3/dist-packages/pluggy/_hooks.py", "_HookCaller.__call__", 265},
    {"/usr/lib/python3/dist-packages/_pytest/python.py", "Function.runtest", 1789},
    {"/usr/lib/python3/dist-packages/_pytest/runner.py", "pytest_runtest_call", 167},
    {"/usr/lib/python3/dist-packages/pluggy/_callers.py", "_multicall", 39},
    {"/usr/lib/python3/dist-packages/_pytest/runner.py", "call_and_report", 222},
    {"/usr/lib/python3/dist-packages/_pytest/main.py", "main", 324},
    {"<frozen runpy>", "_run_module_as_main", 198},
};

static const ls_pyframe connect_frames[] = {
    {"/usr/lib/python3/dist-packages/psycopg2/__init__.py", "connect", 122},
    {"/srv/app/app.py", "main.<locals>.<lambda>", 52},
    {"/usr/lib/python3/dist-packages/sqlalchemy/pool/base.py", "Pool._should_wrap_creator.<locals>.<lambda>", 250},
    {"/usr/lib/python3/dist-packages/sqlalchemy/pool/base.py", "_ConnectionRecord.__connect", 686},
    {"/usr/lib/python3.11/threading.py", "Thread.run", 975},
    {"/usr/lib/python3.11/threading.py", "Thread._bootstrap_inner", 1038},
};

static const ls_pyframe redis_frames[] = {
    {"/usr/lib/python3/dist-packages/redis/connection.py", "Connection._connect", 613},
    {"/usr/lib/python3/dist-packages/redis/connection.py", "Connection.connect", 560},
    {"/srv/app/cache.py", "handle_request", 30},
    {"<string>", "<module>", 1},
};

static const ls_pyframe mongo_frames[] = {
    {"/usr/lib/python3/dist-packages/pymongo/pool.py", "Pool.connect", 1450},
    {"/usr/lib/python3/dist-packages/pymongo/monitor.py", "Monitor._run", 199},
    {"/usr/lib/python3.11/threading.py", "Thread.run", 975},
};

static void py_service_snapshot(scenario *s)
{
    memset(s, 0, sizeof *s);
    ls_stack_id co = py_stack(sa_frames, (int)(sizeof sa_frames / sizeof sa_frames[0]));
    ls_stack_id conn_py = py_stack(connect_frames, 6);
    ls_stack_id redis_py = py_stack(redis_frames, 4);
    ls_stack_id mongo_py = py_stack(mongo_frames, 3);
    ls_stack_id pool_py = py_stack(sa_frames + 6, 3);
    ls_stack_id conn_nat =
        NAT(P(0x7f1000010d19), P(0x7f1000014c8e), P(0x7f1000015030), P(0x7f2000016998), P(0x7f2000018001),
            P(0x555500005000), P(0x555500005100), P(0x555500005000), P(0x555500005200), P(0x7f000002724a));
    add_handle(s, 0x7f00a000, LS_DRV_SQLALCHEMY, LS_HK_POOL, T0 + 5, 0, pool_py);
    /* ten psycopg2 (libpq) connections of the pool, checked out at app.py:34, in another order */
    static const int order[10] = {3, 0, 7, 1, 9, 4, 2, 8, 6, 5};
    for (int i = 0; i < 12; i++) {
        uintptr_t addr = 0x9000 + 0x100 * (uintptr_t)i;
        ls_handle_view *h = add_handle(s, addr, LS_DRV_LIBPQ, LS_HK_CLIENT, T0 + 6 + i, conn_nat, conn_py);
        h->pool = 0x7f00a000;
        h->open_socks = h->socks_ever = 1;
        if (i < 10) { /* checkouts 1 s apart, the oldest 36 s ago: past the 30 s threshold */
            h->checked_out = 1;
            h->checkout_time = NOW - 36 + order[i];
            h->co_pystack = co;
        }
        ls_conn_view *c = add_conn(s, 20 + i, 5432, LS_DRV_LIBPQ, addr, T0 + 6 + i, conn_nat, conn_py);
        c->idle = i < 10 ? 30.0 - order[i] : 2.0;
    }
    /* a redis-py client per request, one of them still open and idle past the threshold */
    ls_handle_view *r = add_handle(s, 0xb000, LS_DRV_REDISPY, LS_HK_CLIENT, NOW - 45, 0, redis_py);
    r->open_socks = r->socks_ever = 1;
    add_conn(s, 40, 6379, LS_DRV_REDISPY, 0xb000, NOW - 45, 0, redis_py)->idle = 44.0;
    /* pymongo's monitor */
    add_conn(s, 41, 27017, LS_DRV_PYMONGO, 0, T0 + 3, 0, mongo_py)->background = 1;
    add_created(s, conn_py, 12);
    add_created(s, redis_py, 40);
    add_created(s, pool_py, 1);
}

static void golden_py_service_snapshot(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    py_service_snapshot(s);
    build_model(s, LS_REPORT_SNAPSHOT);
    assert_int_equal(s->m.sum.live, 14);
    assert_int_equal(s->m.sum.checked_out, 10);
    assert_int_equal(s->m.nsuspects, 3); /* a long checkout, an idle connection, a client per request */
    golden_text("py_service_snapshot.txt", &s->m, 1, 0, 0);
    golden_text("py_service_snapshot_sockets.txt", &s->m, 1, 1, 0);
    golden_json("py_service_snapshot.json", &s->m);
    ls_model_free(&s->m);
    free(s);
}

/* Nothing leaked: quiet (the caller writes nothing) unless asked; asked, a clean report. */
static void golden_clean_exit(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    ls_stack_id lookup = NAT(P(0x401420), P(0x401236), P(0x40136f), P(0x7f000002724a), P(0x7f0000027305), P(0x401721));
    add_created(s, lookup, 25);
    build_model(s, LS_REPORT_EXIT);
    assert_int_equal(s->m.sum.leaks, 0);
    assert_int_equal(s->m.ngroups, 0);
    assert_true(s->m.churn_notable); /* 25 created, none live: a connection per request */
    golden_text("clean_exit.txt", &s->m, 1, 0, 1);
    golden_json("clean_exit.json", &s->m);
    ls_model_free(&s->m);
    free(s);
}

/* ================================================================== facts the renderers rely on */

static void checkouts_are_grouped_oldest_first(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    py_service_snapshot(s);
    build_model(s, LS_REPORT_SNAPSHOT);
    const ls_model *m = &s->m;
    const ls_mgroup *g = &m->groups[0];
    assert_int_equal(g->cat, LS_CAT_CHECKED_OUT); /* checkouts come first in a snapshot */
    assert_int_equal(g->count, 10);
    assert_int_equal(g->nsocks, 10);
    assert_true(g->oldest > g->newest);
    for (size_t k = g->first + 1; k < g->first + g->n; k++)
        assert_true(m->items[m->order[k - 1]].age >= m->items[m->order[k]].age);
    assert_int_equal((int)(g->oldest + 0.5), 36);
    assert_int_equal(g->over, 6); /* held longer than 30 s: 36, 35 .. 31 */
    assert_int_equal(m->suspects[0].why, LS_SUS_CHECKOUT);
    assert_int_equal(m->suspects[0].count, 6);
    ls_model_free(&s->m);
    free(s);
}

/* A socket and a handle carry the category of the group they are in; a group lists its sockets. */
static void one_vocabulary(const ls_model *m)
{
    const ls_snapshot *sn = m->snap;
    int grouped = 0;
    for (size_t i = 0; i < sn->nconns; i++)
        if (m->sock_group[i] >= 0) {
            assert_int_equal(m->sock_cat[i], m->groups[m->sock_group[i]].cat);
            grouped++;
        }
    for (size_t j = 0; j < sn->nhandles; j++)
        if (m->hand_group[j] >= 0 && m->hand_cat[j] != LS_CAT_LIVE)
            assert_int_equal(m->hand_cat[j], m->groups[m->hand_group[j]].cat);
    size_t members = 0;
    for (size_t g = 0; g < m->ngroups; g++) {
        members += m->groups[g].sn;
        for (size_t k = 0; k < m->groups[g].sn; k++)
            assert_int_equal(m->sock_group[m->gsocks[m->groups[g].sfirst + k]], (int)g);
    }
    assert_int_equal(members, (size_t)grouped);
}

static void categories_agree_everywhere(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    c_service_exit(s);
    build_model(s, LS_REPORT_EXIT);
    one_vocabulary(&s->m);
    /* the handle-leak group lists the sockets its handles hold */
    const ls_mgroup *hl = NULL;
    for (size_t g = 0; g < s->m.ngroups; g++)
        if (s->m.groups[g].cat == LS_CAT_HANDLE_LEAK)
            hl = &s->m.groups[g];
    assert_non_null(hl);
    assert_int_equal(hl->count, 3);
    assert_int_equal(hl->sn, 3);
    ls_model_free(&s->m);
    py_service_snapshot(s);
    build_model(s, LS_REPORT_SNAPSHOT);
    one_vocabulary(&s->m);
    ls_model_free(&s->m);
    free(s);
}

/* The churn table counts what a program creates: pools apart, so that live never exceeds the
 * sockets; a socket a driver opened without ever returning a handle (psycopg 3 through ctypes)
 * is counted too. */
static void churn_counts_connections_not_pools(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    ls_stack_id pool_at = NAT(P(0x401640), P(0x401800));
    ls_stack_id conn_at = NAT(P(0x401530), P(0x401800));
    ls_stack_id ctypes_at = NAT(P(0x401420), P(0x401800));
    add_handle(s, 0x100, LS_DRV_PSYCOPG2, LS_HK_POOL, T0, pool_at, 0);
    for (int i = 0; i < 3; i++) {
        ls_handle_view *h = add_handle(s, 0x200 + (uintptr_t)i, LS_DRV_LIBPQ, LS_HK_CLIENT, T0, conn_at, 0);
        h->pool = 0x100;
        h->open_socks = 1;
        add_conn(s, 5 + i, 5432, LS_DRV_LIBPQ, h->handle, T0, conn_at, 0);
    }
    add_conn(s, 9, 5432, LS_DRV_LIBPQ, 0, T0, ctypes_at, 0); /* no handle, never counted as created */
    add_created(s, pool_at, 1);
    add_created(s, conn_at, 3);
    build_model(s, LS_REPORT_SNAPSHOT);
    int live = 0;
    for (size_t k = 0; k < s->m.nchurn; k++) {
        const ls_mchurn *c = &s->m.churn[k];
        live += c->live;
        if (c->stack == pool_at)
            assert_true(c->live == 0 && c->pools == 1 && c->created == 1);
        if (c->stack == conn_at)
            assert_true(c->live == 3 && c->created == 3);
        if (c->stack == ctypes_at)
            assert_true(c->live == 1 && c->created == 1);
    }
    assert_int_equal(s->m.nchurn, 3);
    assert_int_equal(live, 4);
    assert_true(live <= s->m.sum.live);
    ls_model_free(&s->m);
    free(s);
}

/* A handle whose connection failed holds no connection: not "1 leaked database connection". */
static void unconnected_handle_is_not_a_leaked_connection(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    ls_stack_id at = NAT(P(0x401118), P(0x40136f));
    add_handle(s, 0x300, LS_DRV_LIBPQ, LS_HK_CLIENT, T0, at, 0);
    add_created(s, at, 1);
    build_model(s, LS_REPORT_EXIT);
    assert_int_equal(s->m.sum.leaks, 0);
    assert_int_equal(s->m.sum.quiet, 1);
    assert_int_equal(s->m.ngroups, 1);
    assert_int_equal(s->m.groups[0].cat, LS_CAT_UNCONNECTED);
    assert_false(s->m.groups[0].leak);
    ls_render_opts o = {.fold = 1, .top = 5};
    ls_buf b = {0};
    ls_render_text(&b, &s->m, &o);
    assert_null(strstr(b.data, "ERROR"));
    assert_non_null(strstr(b.data, "never freed, holding no connection"));
    assert_non_null(strstr(b.data, "\nleakshim: 0 leaked database connections\n"));
    assert_null(strstr(b.data, "JSON report")); /* no promise of a file that may not exist */
    ls_buf_free(&b);
    ls_model_free(&s->m);
    free(s);
}

static void suppressed_groups_leave_the_count(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    c_service_exit(s);
    assert_int_equal(ls_suppressions_add("remember_connection"), 0);
    assert_int_equal(ls_suppressions_add("src/dispatch.h"), 0); /* an inlined frame's file */
    build_model(s, LS_REPORT_EXIT);
    /* the raw sockets (remember_connection) and the pool checkouts (their stack has the inlined
     * dispatch()) are suppressed; the 3 PGconn (serve, inlined dispatch too) as well */
    assert_int_equal(s->m.sum.suppressed, 7);
    assert_int_equal(s->m.sum.leaks, 2);
    ls_render_opts o = {.fold = 1, .top = 5};
    ls_buf b = {0};
    ls_render_text(&b, &s->m, &o);
    assert_non_null(strstr(b.data, "SUMMARY: leakshim: 2 leaked database connections in 2 groups (7 suppressed)\n"));
    assert_non_null(
        strstr(b.data, "  suppressed: 2 leak (socket), created at remember_connection+0x30 (service+0x1530)"));
    ls_buf_free(&b);
    ls_suppressions_clear();
    ls_model_free(&s->m);
    free(s);
}

static void frames_are_classified(void **state)
{
    (void)state;
    char lib[32];
    static const struct {
        const char *file;
        int fclass;
        const char *lib;
    } py[] = {
        {"/srv/app/app.py", LS_FC_USER, ""},
        {"<string>", LS_FC_USER, ""},
        {"/usr/lib/python3/dist-packages/sqlalchemy/orm/session.py", LS_FC_LIBRARY, "sqlalchemy"},
        {"/home/u/venv/lib/python3.11/site-packages/psycopg/connection.py", LS_FC_LIBRARY, "psycopg"},
        {"/usr/lib/python3/dist-packages/_pytest/runner.py", LS_FC_LIBRARY, "pytest"},
        {"/usr/lib/python3/dist-packages/six.py", LS_FC_LIBRARY, "six"},
        {"/usr/lib/python3.11/threading.py", LS_FC_LIBRARY, "threading"},
        {"/root/.pyenv/versions/3.12.1/lib/python3.12/asyncio/base_events.py", LS_FC_LIBRARY, "asyncio"},
        {"<frozen importlib._bootstrap>", LS_FC_LIBRARY, "importlib"},
        {"<leakshim>/boot.py", LS_FC_SHIM, "leakshim"},
        {"/srv/vendor/redis/client.py", LS_FC_LIBRARY, "redis"},
        {"/srv/app/redis_helpers.py", LS_FC_USER, ""},
        {NULL, LS_FC_LIBRARY, "unknown"},
    };
    for (size_t i = 0; i < sizeof py / sizeof py[0]; i++) {
        assert_int_equal(ls_classify_pyframe(py[i].file, lib, sizeof lib), py[i].fclass);
        assert_string_equal(lib, py[i].lib);
    }
    static const struct {
        const char *module, *symbol;
        int fclass;
        const char *lib;
    } nat[] = {
        {"/srv/app/bin/service", "main", LS_FC_USER, ""},
        {"/srv/app/bin/service", "_start", LS_FC_LIBRARY, "libc"},
        {"/lib/x86_64-linux-gnu/libc.so.6", "__libc_start_main", LS_FC_LIBRARY, "libc"},
        {"/usr/lib/x86_64-linux-gnu/libmongoc-1.0.so.0", NULL, LS_FC_LIBRARY, "libmongoc-1.0"},
        {"/usr/lib/python3/dist-packages/psycopg2/_psycopg.cpython-311-x86_64-linux-gnu.so", "", LS_FC_LIBRARY,
         "psycopg2"},
        {"/usr/bin/python3.11", "_PyEval_EvalFrameDefault", LS_FC_INTERPRETER, "interpreter"},
        {"/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0", "", LS_FC_INTERPRETER, "interpreter"},
        {"/usr/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so", "", LS_FC_INTERPRETER,
         "interpreter"},
        {"/srv/app/python_service", "main", LS_FC_USER, ""}, /* not the interpreter */
        {"/work/build/asan/libleakshim.so", "connect", LS_FC_SHIM, "leakshim"},
        {"?", NULL, LS_FC_LIBRARY, "unknown"},
    };
    for (size_t i = 0; i < sizeof nat / sizeof nat[0]; i++) {
        assert_int_equal(ls_classify_native(nat[i].module, nat[i].symbol, lib, sizeof lib), nat[i].fclass);
        assert_string_equal(lib, nat[i].lib);
    }
}

/* ================================================================== through the live registry */

/* noipa + a barrier after the call: no inlining, no merging, no tail call. */
static int __attribute__((noipa)) leak_site_a(void)
{
    int fd = unit_connect(unit_port);
    __asm__ volatile("" ::: "memory");
    return fd;
}

static int __attribute__((noipa)) leak_site_b(void)
{
    int fd = unit_connect(unit_port);
    __asm__ volatile("" ::: "memory");
    return fd;
}

/* One call site for all rounds (-O0: not unrolled). */
static void __attribute__((noipa, optimize("O0"))) leak_a_rounds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        fds[i] = leak_site_a();
}

static const char *last_line(const ls_buf *b)
{
    const char *end = b->data + b->len - 1; /* the final newline */
    const char *p = end;
    while (p > b->data && p[-1] != '\n')
        p--;
    return p;
}

static void registry_groups_largest_first_summary_last(void **state)
{
    (void)state;
    int fds[4];
    leak_a_rounds(fds, 3);
    fds[3] = leak_site_b();
    ls_buf text, json;
    int leaks = -1;
    unit_build_report(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 4);
    const char *g3 = strstr(text.data, "3 database connections to 127.0.0.1:");
    const char *g1 = strstr(text.data, "1 database connection to 127.0.0.1:");
    assert_non_null(g3);
    assert_non_null(g1);
    assert_true(g3 < g1);
    assert_non_null(strstr(g3, "leak_site_a"));
    assert_true(strstr(g3, "leak_site_a") < g1);
    assert_non_null(strstr(g1, "leak_site_b"));
    assert_non_null(strstr(last_line(&text), "leakshim: 4 leaked database connections in 2 groups"));
    char pidline[64];
    snprintf(pidline, sizeof pidline, "==%d==process %d (parent %d), started ", (int)getpid(), (int)getpid(),
             (int)getppid());
    assert_non_null(strstr(text.data, pidline));
    assert_non_null(strstr(json.data, "{\"leakshim\":2,\"kind\":\"exit\""));
    assert_non_null(strstr(json.data, "\"summary\":{\"leaks\":4,\"groups\":2"));
    assert_non_null(strstr(json.data, "\"symbol\":\"leak_site_a\""));
    assert_non_null(strstr(json.data, "\"build_id\":\""));
    ls_buf_free(&text);
    ls_buf_free(&json);

    /* suppress one group by function name: it leaves the count and is listed as suppressed */
    ls_suppressions_add("leak_site_a");
    unit_build_report(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 1);
    assert_non_null(strstr(last_line(&text), "1 leaked database connection in 1 group (3 suppressed)"));
    assert_non_null(strstr(json.data, "\"suppressed\":3"));
    ls_suppressions_clear();
    ls_buf_free(&text);
    ls_buf_free(&json);

    for (int i = 0; i < 4; i++)
        unit_close(fds[i]);
    unit_build_report(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 0);
    assert_non_null(strstr(last_line(&text), "leakshim: 0 leaked database connections"));
    assert_non_null(strstr(json.data, "\"created\":3,\"live\":0,"));
    ls_buf_free(&text);
    ls_buf_free(&json);
}

static void registry_driver_categories(void **state)
{
    (void)state;
    int leaks;
    ls_buf text, json;
    /* 1: handle never freed, its socket open */
    ls_handle_open(LS_DRV_LIBPQ, LS_HK_CLIENT, 0x100, 0);
    ls_ctx prev = ls_ctx_push(LS_DRV_LIBPQ, 0x100, 0, 0);
    int a = unit_connect(unit_port);
    ls_ctx_pop(prev);
    /* 2: handle freed, socket still open (redisFreeKeepFd) */
    ls_handle_open(LS_DRV_HIREDIS, LS_HK_CLIENT, 0x200, 0);
    prev = ls_ctx_push(LS_DRV_HIREDIS, 0x200, 0, 0);
    int b = unit_connect(unit_port);
    ls_ctx_pop(prev);
    ls_handle_release_fd(0x200, b);
    ls_handle_close(0x200);
    /* 3: socket closed under a live handle */
    ls_handle_open(LS_DRV_MYSQL, LS_HK_CLIENT, 0x300, 0);
    prev = ls_ctx_push(LS_DRV_MYSQL, 0x300, 0, 0);
    int c = unit_connect(unit_port);
    ls_ctx_pop(prev);
    unit_close(c);
    /* 4: checked out of a pool and never returned; 5: the pool itself never destroyed */
    ls_handle_open(LS_DRV_MONGOC, LS_HK_POOL, 0x400, 0);
    ls_pool_checkout(0x400, 0x410);
    ls_pool_checkout(0x400, 0x420);
    ls_pool_checkin(0x400, 0x420);
    /* 6: background monitoring socket */
    prev = ls_ctx_push(LS_DRV_MONGOC, 0, 0x400, 1);
    int d = unit_connect(unit_port);
    ls_ctx_pop(prev);

    unit_build_report(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 4); /* handle leak + orphaned + closed-under + checkout */
    assert_non_null(strstr(text.data, "1 libpq handle (PGconn) never freed, holding 1 open PostgreSQL connection"));
    assert_non_null(strstr(text.data, "1 Redis connection to 127.0.0.1:"));
    assert_non_null(strstr(text.data, "handle freed, socket still open"));
    assert_non_null(strstr(text.data, "1 mariadb handle (MYSQL) still live after its socket was closed under it"));
    assert_non_null(strstr(text.data, "checked out of a pool and never returned"));
    const char *quiet = strstr(text.data, "Not counted as leaks:");
    assert_non_null(quiet);
    assert_non_null(strstr(quiet, "1 libmongoc pool not closed at shutdown (2 clients)"));
    assert_non_null(strstr(quiet, "background socket"));
    assert_non_null(strstr(json.data, "\"category\":\"checkout-leak\""));
    assert_non_null(strstr(json.data, "\"category\":\"orphaned-socket\""));
    assert_non_null(strstr(json.data, "\"category\":\"closed-under-handle\""));
    assert_non_null(strstr(json.data, "\"category\":\"pool-unclosed\""));
    ls_buf_free(&text);
    ls_buf_free(&json);

    /* snapshot: checked-out connections are grouped by their checkout stack; pools named */
    unit_build_report(&text, &json, 1, NULL);
    assert_non_null(strstr(text.data, "Checked out of pools (oldest first):\n1 MongoDB connection (libmongoc) "
                                      "checked out of libmongoc pool 0x400 for "));
    assert_non_null(strstr(text.data, "Pools:\n  libmongoc pool 0x400 created at "));
    assert_non_null(strstr(text.data, ": size 2, 1 in use, 1 idle, 1 monitor socket\n"));
    assert_non_null(strstr(json.data, "\"kind\":\"snapshot\""));
    ls_buf_free(&text);
    ls_buf_free(&json);

    ls_handle_close(0x100);
    unit_close(a);
    unit_close(b);
    ls_handle_close(0x300);
    ls_pool_checkin(0x400, 0x410);
    ls_handle_close(0x400);
    unit_close(d);
    unit_build_report(&text, &json, 0, &leaks);
    assert_int_equal(leaks, 0);
    assert_null(strstr(text.data, "Not counted as leaks:"));
    ls_buf_free(&text);
    ls_buf_free(&json);
}

/* ================================================================== clients, staircases, fork (issue 10) */

static const ls_mgroup *group_of_cat(const ls_model *m, int cat)
{
    for (size_t g = 0; g < m->ngroups; g++)
        if (m->groups[g].cat == cat)
            return &m->groups[g];
    return NULL;
}

/* Three MongoClients made at one line and never closed: three clients, with their pooled and
 * monitoring sockets; a fourth, made once elsewhere, is only "not closed at shutdown". */
static void client_leak_counts_clients_with_their_sockets(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    ls_pyframe per_request[] = {{"/srv/app/webhook.py", "VectorStore.__init__", 31},
                                {"/srv/app/webhook.py", "hook", 43}};
    ls_pyframe once[] = {{"/srv/app/webhook.py", "<module>", 12}};
    ls_stack_id pr = py_stack(per_request, 2), one = py_stack(once, 1);
    for (int c = 0; c < 4; c++) {
        uintptr_t topo = 0x1000 + 0x1000 * (uintptr_t)c;
        add_handle(s, topo, LS_DRV_PYMONGO, LS_HK_POOL, T0 + 10 + c, 0, c < 3 ? pr : one);
        for (int k = 0; k < 2; k++) {
            ls_handle_view *h = add_handle(s, topo + 0x10 * (uintptr_t)(k + 1), LS_DRV_PYMONGO, LS_HK_CLIENT,
                                           T0 + 11 + c, 0, c < 3 ? pr : one);
            h->pool = topo;
            h->open_socks = 1;
            add_conn(s, 10 + 3 * c + k, 27017, LS_DRV_PYMONGO, h->handle, T0 + 11 + c, 0, c < 3 ? pr : one);
        }
        add_conn(s, 12 + 3 * c, 27017, LS_DRV_PYMONGO, topo, T0 + 10 + c, 0, 0)->background = 1;
    }
    build_model(s, LS_REPORT_EXIT);
    const ls_mgroup *g = group_of_cat(&s->m, LS_CAT_CLIENT_LEAK);
    assert_non_null(g);
    assert_true(g->leak);
    assert_int_equal(g->count, 3);                      /* clients, not connections */
    assert_int_equal(g->nsocks, 9);                     /* 6 pooled + 3 monitoring */
    assert_int_equal(g->states[LS_ST_BACKGROUND], 3);   /* the monitors are the clients' */
    assert_int_equal(g->states[LS_ST_IDLE_IN_POOL], 6); /* pooled sockets are idle, not in use */
    assert_int_equal(s->m.sum.leaks, 3);
    const ls_mgroup *q = group_of_cat(&s->m, LS_CAT_POOL_UNCLOSED);
    assert_non_null(q);
    assert_false(q->leak);
    assert_int_equal(q->count, 1);
    const ls_mgroup *bg = group_of_cat(&s->m, LS_CAT_BACKGROUND); /* its monitor: at the client's line */
    assert_non_null(bg);
    assert_int_equal(bg->pystack, one);
    ls_buf b = {0};
    ls_text_group_title(&b, &s->m, g);
    assert_non_null(strstr(b.data, "3 pymongo clients (MongoClient) never closed, holding 9 open MongoDB connections "
                                   "to 10.0.0.5:27017 (6 pooled, 3 monitoring)"));
    ls_buf_free(&b);
    ls_model_free(&s->m);
    free(s);
}

/* Snapshots: one place whose clients are all still open and were made over time is a staircase;
 * pools made once each, or made at the same moment, or a place that closed some, are not. */
static void staircase_is_a_suspect(void **state)
{
    (void)state;
    scenario *s = calloc(1, sizeof *s);
    ls_pyframe stair[] = {{"/srv/app/api.py", "handler", 20}};
    ls_pyframe burst[] = {{"/srv/app/api.py", "startup", 5}};
    ls_pyframe churn[] = {{"/srv/app/api.py", "other", 40}};
    ls_stack_id st = py_stack(stair, 1), bu = py_stack(burst, 1), ch = py_stack(churn, 1);
    for (int i = 0; i < 4; i++) {
        add_handle(s, 0x100 + 0x10 * (uintptr_t)i, LS_DRV_REDIS_ASYNCIO, LS_HK_POOL, T0 + 10 * i, 0, st);
        add_handle(s, 0x200 + 0x10 * (uintptr_t)i, LS_DRV_REDIS_ASYNCIO, LS_HK_POOL, T0 + 1 + 0.001 * i, 0, bu);
        add_handle(s, 0x300 + 0x10 * (uintptr_t)i, LS_DRV_ASYNCPG, LS_HK_CLIENT, T0 + 10 * i, 0, ch);
    }
    add_created(s, st, 4);
    add_created(s, bu, 4);
    add_created(s, ch, 5); /* one was closed: not every one is still open */
    build_model(s, LS_REPORT_SNAPSHOT);
    int stairs = 0;
    for (size_t k = 0; k < s->m.nsuspects; k++)
        if (s->m.suspects[k].why == LS_SUS_STAIRCASE) {
            stairs++;
            const ls_msuspect *x = &s->m.suspects[k];
            assert_int_equal(x->count, 4);
            assert_true(x->seconds > 29.9 && x->seconds < 30.1);
            assert_int_equal(s->m.rows[x->row].where.user->line, 20);
        }
    assert_int_equal(stairs, 1);
    ls_buf b = {0};
    ls_render_opts o = {.fold = 1, .top = 10};
    ls_render_text(&b, &s->m, &o);
    assert_non_null(strstr(b.data, "4 database clients or connections created from one place over 30.0s, all still "
                                   "open (a staircase)"));
    ls_buf_free(&b);
    ls_model_free(&s->m);
    free(s);
}

/* A connection made before fork() and used since by another process: in the process that made
 * it, and in a child that used it; a child that only inherited it says nothing. */
static void shared_across_fork_is_its_own_category(void **state)
{
    (void)state;
    ls_pyframe at_import[] = {{"/srv/app/wsgi.py", "<module>", 17}};
    ls_stack_id imp = py_stack(at_import, 1);
    for (int child = 0; child < 3; child++) {
        scenario *s = calloc(1, sizeof *s);
        ls_handle_view *h = add_handle(s, 0x500, LS_DRV_LIBPQ, LS_HK_CLIENT, T0, 0, imp);
        h->open_socks = 1;
        h->inherited = child > 0;
        ls_conn_view *c = add_conn(s, 5, 5432, LS_DRV_LIBPQ, 0x500, T0, 0, 0);
        c->inherited = child > 0;
        c->shared = child == 2 ? 0 : 2; /* child 2 never used it: nobody else did either */
        c->used_here = child == 1;
        build_model(s, LS_REPORT_EXIT);
        const ls_mgroup *g = group_of_cat(&s->m, LS_CAT_SHARED_FORK);
        if (child == 2) {
            assert_null(g);
            assert_int_equal(s->m.sum.leaks, 0);
        } else {
            assert_non_null(g);
            assert_true(g->leak);
            assert_int_equal(g->count, 1);
            assert_int_equal(g->pystack, imp); /* the line that opened it, in parent and child */
            assert_null(group_of_cat(&s->m, LS_CAT_HANDLE_LEAK));
            assert_int_equal(s->m.sum.leaks, 1);
        }
        ls_model_free(&s->m);
        free(s);
    }
}

int main(void)
{
    /* The golden tests come first: the stack ids they print are the first ones interned. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(golden_c_service_exit),
        cmocka_unit_test(golden_py_service_snapshot),
        cmocka_unit_test(golden_clean_exit),
        cmocka_unit_test(checkouts_are_grouped_oldest_first),
        cmocka_unit_test(categories_agree_everywhere),
        cmocka_unit_test(churn_counts_connections_not_pools),
        cmocka_unit_test(unconnected_handle_is_not_a_leaked_connection),
        cmocka_unit_test(suppressed_groups_leave_the_count),
        cmocka_unit_test(frames_are_classified),
        cmocka_unit_test(registry_groups_largest_first_summary_last),
        cmocka_unit_test(registry_driver_categories),
        cmocka_unit_test(client_leak_counts_clients_with_their_sockets),
        cmocka_unit_test(staircase_is_a_suspect),
        cmocka_unit_test(shared_across_fork_is_its_own_category),
    };
    return cmocka_run_group_tests(tests, unit_group_setup, unit_group_teardown);
}

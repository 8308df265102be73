/*
 * The report engine (DESIGN.md "Three workflows, one report model"; LSan's Leak/LeakReport).
 *
 *   report_emit.c   gathers the inputs (registry snapshot, creation counts, timeline, process
 *                   facts) and writes the outputs to their destinations; the only part with I/O.
 *   report_model.c  snapshot -> model: categories, groups, suspects, pools, churn, summary, and
 *                   every stack resolved and its frames classified. Plain data, no I/O (the
 *                   symbolizer is passed in, so unit tests build models from hand-made data).
 *   report_text.c   the text renderer (LeakSanitizer's shape), and the live warning line.
 *   report_json.c   the JSON renderer (schema shim/report.schema.json, "leakshim": 2).
 *
 * Renderers only read the model: every number, category and ordering they print is in it.
 */
#ifndef LS_REPORT_H
#define LS_REPORT_H

#include "ls_internal.h"

#define LS_REPORT_VERSION 2 /* the JSON's "leakshim" field; bump with shim/report.schema.json */

enum ls_report_kind { LS_REPORT_EXIT = 0, LS_REPORT_SNAPSHOT = 1 };

/* One vocabulary for groups, sockets and handles: a socket or handle carries the category of the
 * group it is reported in, or one of the last four when it is in none. */
#define LS_CATEGORIES(X)                                                                                               \
    X(LEAK, "leak")                        /* exit: a socket no driver handle owns */                                  \
    X(HANDLE_LEAK, "handle-leak")          /* exit: a driver handle never freed, holding sockets */                    \
    X(ORPHANED, "orphaned-socket")         /* exit: its handle was freed, the socket is still open */                  \
    X(CLOSED_UNDER, "closed-under-handle") /* exit: a live handle whose socket was closed under it */                  \
    X(CHECKOUT_LEAK, "checkout-leak")      /* exit: checked out of a pool and never returned */                        \
    X(UNCONNECTED, "unconnected-handle")   /* exit, quiet: a handle never freed that holds no socket */                \
    X(POOL_UNCLOSED, "pool-unclosed")      /* exit, quiet: a pool (with its idle clients) never closed */              \
    X(BACKGROUND, "background")            /* quiet: a driver's own monitoring socket */                               \
    X(CHECKED_OUT, "checked-out")          /* snapshot: checked out of a pool now */                                   \
    X(LIVE, "live")                        /* snapshot: open, not checked out */                                       \
    X(POOL, "pool")                        /* snapshot: a pool handle (the pools list) */                              \
    X(FREED, "freed")                      /* a freed handle kept because its socket is still open */                  \
    X(MOVED, "moved")                      /* a handle whose sockets another handle took over */                       \
    X(INHERITED, "inherited")              /* the parent process's, reported there */                                  \
    X(PRE_ATTACH, "opened-before-attach")  /* found open by `leakshim attach`: no stack, never a leak */               \
    X(CLIENT_LEAK, "client-leak")          /* exit: clients (pools of their own) from one line never closed */         \
    X(SHARED_FORK, "shared-across-fork")   /* a socket made before fork() and used by more than one process */
#define LS_CAT_ENUM(name, str) LS_CAT_##name,
enum ls_cat { LS_CATEGORIES(LS_CAT_ENUM) LS_CAT_COUNT };
#undef LS_CAT_ENUM
const char *ls_cat_name(int cat);
int ls_cat_is_leak(int cat); /* counted as a leak (and by exitcode) at exit */

/* Frames are classified so that renderers can put the user's line first and fold the rest. */
enum ls_fclass { LS_FC_USER, LS_FC_LIBRARY, LS_FC_INTERPRETER, LS_FC_SHIM };
const char *ls_fclass_name(int fclass);
/* Pure classifiers (unit-tested). lib receives the name a folded line shows ("sqlalchemy",
 * "libc", "threading"), "" for the user's code. */
int ls_classify_pyframe(const char *file, char *lib, size_t cap);
int ls_classify_native(const char *module, const char *symbol, char *lib, size_t cap);

typedef struct ls_mframe {
    int py;     /* 1: a Python frame (file, func, line); 0: native (pc, sym) */
    int fclass; /* enum ls_fclass */
    char lib[32];
    int raw; /* index of the captured frame (a native pc with inlined functions gives several) */
    const char *file, *func;
    int line;
    void *pc;
    ls_sym *sym; /* native: module, offset, symbol, src_file:src_line, inlined */
} ls_mframe;

typedef struct ls_mstack {
    ls_stack_id id;
    int py;
    uint64_t created; /* creations counted from this stack (whole run) */
    int resolved;     /* frames filled (the JSON resolves every stack, the text only those it shows) */
    int n, nraw;
    ls_mframe *f; /* innermost first */
    ls_sym *syms; /* native frames' symbols (f[i].sym points here) */
    int user;     /* index of the first frame in the user's code, -1 if none */
} ls_mstack;

/* Where something comes from: its Python and native stacks, and the frame a person looks at
 * first (the first user frame, Python first; else the first frame; NULL without a stack). */
typedef struct ls_where {
    const ls_mstack *py, *nat;
    const ls_mframe *user;
} ls_where;

typedef struct ls_mitem { /* one reported thing: a socket, or a handle with its sockets */
    int cat;
    int group;
    size_t conn;   /* index into snap->conns, or (size_t)-1 */
    size_t handle; /* index into snap->handles, or (size_t)-1 */
    ls_stack_id stack, pystack;
    int driver;
    uintptr_t pool;
    int nsocks;
    double age; /* since created, or since checked out */
    int over;   /* snapshot: past the threshold (checked out, or open and idle) */
} ls_mitem;

typedef struct ls_mgroup {
    int cat, leak, suppressed;
    int section; /* exit: 0 leaks, 1 not counted; snapshot: 0 checked out, 1 open, 2 background, 3 shared across fork */
    int driver;
    uintptr_t pool; /* checked-out and checkout-leak groups: the pool they came from */
    int pool_index; /* into pools, -1 */
    ls_stack_id stack, pystack;
    ls_where where;
    size_t peer;         /* a member socket (snap->conns index), (size_t)-1 if none */
    const char *service; /* "PostgreSQL", "Redis", ... */
    int count, nsocks;
    int clients;             /* pool-unclosed: the pools' clients */
    int states[LS_ST_COUNT]; /* the members' sockets by state */
    double oldest, newest;   /* item ages */
    int over;                /* snapshot: items past the threshold */
    double worst;            /* their longest checkout or idle time */
    size_t first, n;         /* items: m->order[first .. first+n), oldest first */
    size_t sfirst, sn;       /* member sockets: m->gsocks[sfirst .. sfirst+sn) */
    size_t hfirst, hn;       /* member handles: m->ghands[hfirst .. hfirst+hn) */
    size_t cfirst, cn;       /* attribution contexts of its members: m->ctxs[cfirst .. cfirst+cn) */
} ls_mgroup;

typedef struct ls_mpool {
    size_t handle; /* snap->handles index */
    ls_where where;
    int clients, checked_out, idle, sockets, background;
    int group; /* exit: its pool-unclosed group */
} ls_mpool;

/* LS_SUS_STAIRCASE: one place's clients or connections all still live and created over time. */
enum ls_suspect_why { LS_SUS_CHECKOUT, LS_SUS_IDLE, LS_SUS_CHURN, LS_SUS_STAIRCASE };
typedef struct ls_msuspect {
    int why;
    int group; /* LS_SUS_CHECKOUT, LS_SUS_IDLE: the group, else -1 */
    int row;   /* LS_SUS_CHURN, LS_SUS_STAIRCASE: the churn row, else -1 */
    int count;
    double seconds; /* the longest checkout or idle time; staircase: the time its creations span */
} ls_msuspect;

typedef struct ls_mchurn { /* one creating stack (the JSON lists them all) */
    ls_stack_id stack;
    int py;
    uint64_t created;
    int live, pools;
    int row; /* its merged row */
} ls_mchurn;

typedef struct ls_mrow { /* creating stacks that read the same (they differ inside libraries) */
    ls_where where;
    uint64_t created;
    int live, pools, many; /* many: created many, few live: a client or pool per request? */
} ls_mrow;

typedef struct ls_msummary {
    int leaks, groups, suppressed; /* exit: leak items, leak groups, suppressed items */
    int quiet;                     /* exit: items in groups not counted as leaks */
    int live;                      /* sockets open now (not inherited) */
    int checked_out, clients, pools, background;
    uint64_t closed_behind;
} ls_msummary;

/* ---------------------------------------------------------------- inputs */
typedef struct ls_created { /* creations from one stack, whole run (ls_stack->created) */
    ls_stack_id stack;
    uint64_t created;
} ls_created;

/* The timeline (timeline.c): counts sampled every interval= seconds into a ring of at most
 * LS_TL_CAP samples (older samples thinned when it fills, never the whole past dropped), per group
 * for the first LS_TL_GROUPS groups seen; the rest are counted in one more, "other". */
#define LS_TL_CAP 512
#define LS_TL_GROUPS 16
typedef struct ls_tl_gcount {
    int32_t live, checked_out;
    uint32_t created; /* creations counted for the group so far (whole run) */
} ls_tl_gcount;

typedef struct ls_tl_sample {
    double t;
    int live, checked_out;
    uint64_t created; /* connections created so far (whole run) */
    int ngroups;      /* g[0 .. ngroups) are the groups known at that time; g[LS_TL_GROUPS] "other" */
    ls_tl_gcount g[LS_TL_GROUPS + 1];
} ls_tl_sample;

typedef struct ls_tl_group { /* what a timeline group is: a creating stack, or a pool */
    ls_stack_id stack;       /* the creating stack (Python's when known); a pool's: the pool's */
    uintptr_t pool;          /* 0: sockets no pool owns, grouped by stack */
    int driver;
    int other; /* 1: the "other" group (every group past the first LS_TL_GROUPS) */
} ls_tl_group;

typedef struct ls_proc { /* who wrote the report: tells a test suite's many processes apart */
    int pid, ppid;
    double started; /* realtime; 0 unknown */
    const char *exe, *cwd;
    const char *const *argv;
    int argc;
    double attached; /* realtime of `leakshim attach`; 0 = the shim was there from the start */
} ls_proc;

typedef struct ls_report_input {
    int kind;   /* enum ls_report_kind */
    double now; /* realtime of the report */
    double threshold;
    const ls_snapshot *snap; /* handles sorted by address (ls_registry_snapshot does) */
    const ls_created *created;
    size_t ncreated;
    const ls_tl_sample *timeline;
    size_t ntimeline;
    ls_proc proc;
    int all_stacks; /* resolve every stack referenced (the JSON), not only the ones text shows */
    int (*symbolize)(void *pc, ls_sym *out, int max); /* ls_symbolize_frames */
    const ls_tl_group *tl_groups;                     /* the timeline's groups (samples' g[] index them) */
    size_t ntl_groups;
} ls_report_input;

/* An attribution context (a test id and phase, a request route) and what was created in it. */
typedef struct ls_mctx {
    const char *label, *phase; /* interned for the process lifetime (attrib.c) */
    int count;                 /* members created (checkouts: checked out) in it */
    int instances;             /* distinct numbered instances among them (requests), 0 if unnumbered */
    int groups;                /* byctx: the groups they are in */
} ls_mctx;
/* "in test T (call)", "during POST /x, 3 requests": the wording shared by text and JSON titles. */
void ls_text_context(ls_buf *b, const ls_mctx *c);

typedef struct ls_model {
    ls_report_input in;
    const ls_snapshot *snap;
    ls_mstack *stacks;
    size_t nstacks;
    ls_mitem *items;
    size_t nitems;
    size_t *order; /* items by group, oldest first */
    ls_mgroup *groups;
    size_t ngroups;
    int *sock_cat, *sock_group; /* per snap->conns */
    int *hand_cat, *hand_group; /* per snap->handles */
    size_t *gsocks, *ghands;
    ls_mpool *pools;
    size_t npools;
    ls_msuspect *suspects;
    size_t nsuspects;
    ls_mchurn *churn;
    size_t nchurn;
    ls_mrow *rows;
    size_t nrows;
    int churn_notable; /* a row to look at (many creations) or a leak: text shows the table */
    ls_msummary sum;
    int *tl_group; /* per in.tl_groups: the report group holding its connections now, -1 */
    ls_mctx *ctxs; /* per group, most members first (report_context.c) */
    size_t nctxs;
    ls_mctx *byctx; /* exit: leaks by context; snapshot: reported items by context */
    size_t nbyctx;
} ls_model;

/* Model internals shared by report_model.c and report_summary.c. */
#define LS_CHURN_ROWS_MAX 200 /* creating stacks merged into text rows (the JSON lists them all) */
size_t ls_snap_find_handle(const ls_snapshot *s, uintptr_t h); /* index, or (size_t)-1 */
int ls_model_pools(ls_model *m, const int *hand_item);
int ls_model_churn(ls_model *m);
int ls_model_rows(ls_model *m);
int ls_model_suspects(ls_model *m);
void ls_model_summarize(ls_model *m);
int ls_model_contexts(ls_model *m); /* report_context.c: fills ctxs, byctx and each group's cfirst/cn */

/* Builds m from in (no I/O but in->symbolize). 0, or -1 out of memory (m is then empty). */
int ls_model_build(ls_model *m, const ls_report_input *in);
void ls_model_free(ls_model *m);
const ls_mstack *ls_model_stack(const ls_model *m, ls_stack_id id); /* NULL if absent */
/* One stack resolved on its own (live warnings): free with ls_mstack_free. */
int ls_mstack_resolve(ls_mstack *s, ls_stack_id id, int (*symbolize)(void *, ls_sym *, int));
void ls_mstack_free(ls_mstack *s);
ls_where ls_where_of(const ls_mstack *py, const ls_mstack *nat);
/* A checkout held longer than threshold (live warnings; the model's suspects use the same rule). */
int ls_checkout_overdue(const ls_handle_view *h, double now, double threshold);

/* ---------------------------------------------------------------- renderers */
typedef struct ls_render_opts {
    int fold;    /* text: library and interpreter frames folded into one line each */
    int sockets; /* text: one line per socket under its group (`leakshim dump --sockets`) */
    int verbose; /* text: the churn table even when no row asks for a look */
    int top;     /* text: churn rows shown */
} ls_render_opts;

void ls_render_text(ls_buf *b, const ls_model *m, const ls_render_opts *o);
void ls_render_json(ls_buf *b, const ls_model *m);
/* Shared wording: a group's one-line title (text headers and the JSON "title"). */
void ls_text_group_title(ls_buf *b, const ls_model *m, const ls_mgroup *g);
/* A live warning: a checkout past the threshold, with the stack that checked it out. */
void ls_text_checkout_warning(ls_buf *b, const ls_handle_view *h, double held, double threshold, const ls_where *w,
                              const ls_render_opts *o);
/* ---------------------------------------------------------------- timeline (timeline.c), metrics (metrics.c) */
/* The group slot of key (added while there is room), or LS_TL_GROUPS ("other"). Caller holds the
 * timeline lock (ls_tl_push / ls_timeline_sample take it). */
void ls_tl_push(const ls_tl_sample *s); /* appends, thinning the older half when full */
int ls_tl_group_slot(const ls_tl_group *key);
/* Copies of the samples (oldest first) and the groups; free both. NULL (n = 0) when empty. */
ls_tl_sample *ls_timeline_copy(size_t *n, ls_tl_group **groups, size_t *ngroups);
void ls_timeline_reset(void);     /* unit tests; fork child (no malloc, no lock taken) */
extern uint64_t ls_leak_warnings; /* live checkout warnings written (metrics) */
/* Counts read under the registry lock in one pass (no copy, no kernel check): what a sample and
 * the metrics file need. */
#define LS_MX_SERVICES 16
typedef struct ls_counts {
    ls_tl_sample s;
    int open[LS_MX_SERVICES][LS_ST_COUNT]; /* by service (svc[i]) and state */
    const char *svc[LS_MX_SERVICES];
    int nsvc;
    int open_by_driver[LS_DRV_COUNT];
    uint64_t closed_by_driver[LS_DRV_COUNT];
    int over_threshold;     /* checkouts held longer than threshold */
    double oldest_checkout; /* seconds, 0 when none */
} ls_counts;
/* by_service: also the open[][] table by database (the metrics file; a lookup per socket). */
void ls_counts_take(ls_counts *c, double now, double threshold, int by_service);
void ls_metrics_write(const ls_counts *c); /* metrics=DIR: the textfile, replaced atomically */
void ls_metrics_remove(void);              /* at exit: this process's file is removed */
void ls_metrics_after_fork(void);          /* atfork child */
/* The textfile's contents (unit tests); prog is the program's name. */
void ls_metrics_render(ls_buf *b, const ls_counts *c, const char *prog, int pid, int slot, int leaks_now);

/* "127.0.0.1:5432", "[::1]:5432", "/run/x/.s.PGSQL.5432", "@abstract", "?" (formatting only). */

#endif

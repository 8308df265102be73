/* CPython support: Python stacks for database sockets, the exit report before Python's own
 * shutdown closes leaked sockets, and pool awareness for psycopg2.pool, SQLAlchemy, redis-py and
 * pymongo. The C API is resolved at run time with dlsym(RTLD_DEFAULT) (Debian's python3 exports
 * it); the shim never links libpython and includes no Python header, so it builds without
 * python3-dev. In a process that is not CPython this file does nothing beyond one dlsym.
 *
 * How it hooks in (all without changing the program):
 *  - Constructor (before Py_Initialize): PySys_AddAuditHook, which CPython documents as safe to
 *    call before initialisation. The audit hook's only job is to notice the first moment the
 *    interpreter is fully initialised with the GIL held in the main thread ("cpython.run_*",
 *    raised just before the program's code runs, or the first "import" after initialisation for
 *    embedders) and run the bootstrap once.
 *  - Bootstrap: registers the exit report with Python's atexit (registered first, so it runs
 *    last, after the program's own atexit handlers but before the interpreter tears modules
 *    down and closes sockets), and installs a sys.meta_path finder that patches the driver
 *    modules right after their body ran (post-import hook; modules already imported are patched
 *    at once). The patch code is the Python source below, run in a private namespace: nothing is
 *    added to sys.modules or __main__.
 *  - Python stacks: ls_pystack_hook walks the calling thread's frames with the public 3.11 API.
 *    Threads Python never saw (no thread state) get no Python stack and never get a thread state.
 *    A thread that released the GIL (libpq connecting for psycopg2) takes it with
 *    PyGILState_Ensure around the walk. Driver wrappers that open a socket (redis-py, pymongo)
 *    capture the stack while they hold the GIL and scope it to the connect, so those connects
 *    never wait for the GIL inside connect().
 *  - The dump signal: when Python's signal.signal() installs a handler, it is installed for real
 *    (hook_signal.c); `leakshim dump` talks to the reporter thread over its private socket, so
 *    nothing is needed here.
 */
#include "ls_attach.h"
#include "ls_hook.h"
#include "ls_report.h" /* ls_classify_pyframe: which frames are the program's */

#include <dlfcn.h>
#include <link.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ the few C API declarations
 * Only opaque pointers and stable-ABI function signatures: no struct layout is relied upon. */
typedef struct _object PyObject;
typedef struct _frame PyFrameObject;
typedef struct PyCodeObject PyCodeObject;
typedef struct _ts PyThreadState;
typedef ssize_t Py_ssize_t;
typedef int PyGILState_STATE;
typedef PyObject *(*PyCFunction)(PyObject *, PyObject *);
typedef struct PyMethodDef {
    const char *ml_name;
    PyCFunction ml_meth;
    int ml_flags;
    const char *ml_doc;
} PyMethodDef;
typedef int (*Py_AuditHookFunction)(const char *, PyObject *, void *);
#define PY_METH_NOARGS 0x0004
#define PY_METH_FASTCALL 0x0080
#define PY_FILE_INPUT 257

static struct {
    int (*IsInitialized)(void);
    int (*IsFinalizing)(void);
    int (*AddAuditHook)(Py_AuditHookFunction, void *);
    PyThreadState *(*GILState_GetThisThreadState)(void);
    PyGILState_STATE (*GILState_Ensure)(void);
    void (*GILState_Release)(PyGILState_STATE);
    PyFrameObject *(*Eval_GetFrame)(void);
    PyCodeObject *(*Frame_GetCode)(PyFrameObject *);
    int (*Frame_GetLineNumber)(PyFrameObject *);
    PyFrameObject *(*Frame_GetBack)(PyFrameObject *);
    int (*Frame_GetLasti)(PyFrameObject *); /* optional (3.11+): keys the line cache */
    PyObject *(*Object_GetAttrString)(PyObject *, const char *);
    const char *(*Unicode_AsUTF8)(PyObject *);
    PyObject *(*Unicode_DecodeUTF8)(const char *, Py_ssize_t, const char *);
    long (*Import_GetMagicNumber)(void);                                 /* optional */
    PyObject *(*Marshal_ReadObjectFromString)(const char *, Py_ssize_t); /* optional */
    void (*IncRef)(PyObject *);
    void (*DecRef)(PyObject *);
    int (*GC_Disable)(void);
    int (*GC_Enable)(void);
    PyObject *(*CompileString)(const char *, const char *, int);
    PyObject *(*Eval_EvalCode)(PyObject *, PyObject *, PyObject *);
    PyObject *(*Dict_New)(void);
    int (*Dict_SetItemString)(PyObject *, const char *, PyObject *);
    PyObject *(*Eval_GetBuiltins)(void);
    PyObject *(*CFunction_NewEx)(PyMethodDef *, PyObject *, PyObject *);
    unsigned long long (*Long_AsUnsignedLongLong)(PyObject *);
    PyObject *(*Long_FromLong)(long);
    PyObject *(*Bool_FromLong)(long);
    PyObject *(*Err_Occurred)(void);
    void (*Err_Clear)(void);
    void (*Err_Fetch)(PyObject **, PyObject **, PyObject **);
    void (*Err_Restore)(PyObject *, PyObject *, PyObject *);
    void (*Err_Print)(void);
    PyObject *None;
    /* Optional (attribution contexts, issue 11): without them labels come from the environment. */
    int (*ContextVar_Get)(PyObject *, PyObject *, PyObject **);
    PyObject *(*Tuple_Pack)(Py_ssize_t, ...);
    PyObject *(*Long_FromUnsignedLongLong)(unsigned long long);
} py;

/* 1 once every required symbol resolved (the host is CPython 3.11+). */
static int py_ok;
/* Set by the bootstrap (GIL held; read under the GIL). */
static int py_booted;
static PyObject *py_ns; /* the bootstrap's private namespace, kept for the process lifetime */

#define PYSYM(field, name) (*(void **)&py.field = dlsym(RTLD_DEFAULT, name))

/* Constructor context: only dlsym; no Python call except PySys_AddAuditHook. */
static int resolve_api(void)
{
    int ok = 1;
    ok &= PYSYM(IsInitialized, "Py_IsInitialized") != NULL;
    ok &= PYSYM(AddAuditHook, "PySys_AddAuditHook") != NULL;
    ok &= PYSYM(GILState_GetThisThreadState, "PyGILState_GetThisThreadState") != NULL;
    ok &= PYSYM(GILState_Ensure, "PyGILState_Ensure") != NULL;
    ok &= PYSYM(GILState_Release, "PyGILState_Release") != NULL;
    ok &= PYSYM(Eval_GetFrame, "PyEval_GetFrame") != NULL;
    ok &= PYSYM(Frame_GetCode, "PyFrame_GetCode") != NULL; /* 3.9+ */
    ok &= PYSYM(Frame_GetLineNumber, "PyFrame_GetLineNumber") != NULL;
    ok &= PYSYM(Frame_GetBack, "PyFrame_GetBack") != NULL; /* 3.9+ */
    ok &= PYSYM(Object_GetAttrString, "PyObject_GetAttrString") != NULL;
    ok &= PYSYM(Unicode_AsUTF8, "PyUnicode_AsUTF8") != NULL;
    ok &= PYSYM(Unicode_DecodeUTF8, "PyUnicode_DecodeUTF8") != NULL;
    ok &= PYSYM(IncRef, "Py_IncRef") != NULL;
    ok &= PYSYM(DecRef, "Py_DecRef") != NULL;
    ok &= PYSYM(GC_Disable, "PyGC_Disable") != NULL; /* 3.10+ */
    ok &= PYSYM(GC_Enable, "PyGC_Enable") != NULL;
    ok &= PYSYM(CompileString, "Py_CompileString") != NULL;
    ok &= PYSYM(Eval_EvalCode, "PyEval_EvalCode") != NULL;
    ok &= PYSYM(Dict_New, "PyDict_New") != NULL;
    ok &= PYSYM(Dict_SetItemString, "PyDict_SetItemString") != NULL;
    ok &= PYSYM(Eval_GetBuiltins, "PyEval_GetBuiltins") != NULL;
    ok &= PYSYM(CFunction_NewEx, "PyCFunction_NewEx") != NULL;
    ok &= PYSYM(Long_AsUnsignedLongLong, "PyLong_AsUnsignedLongLong") != NULL;
    ok &= PYSYM(Long_FromLong, "PyLong_FromLong") != NULL;
    ok &= PYSYM(Bool_FromLong, "PyBool_FromLong") != NULL;
    ok &= PYSYM(Err_Occurred, "PyErr_Occurred") != NULL;
    ok &= PYSYM(Err_Clear, "PyErr_Clear") != NULL;
    ok &= PYSYM(Err_Fetch, "PyErr_Fetch") != NULL;
    ok &= PYSYM(Err_Restore, "PyErr_Restore") != NULL;
    ok &= PYSYM(Err_Print, "PyErr_Print") != NULL;
    ok &= PYSYM(None, "_Py_NoneStruct") != NULL;
    PYSYM(Frame_GetLasti, "PyFrame_GetLasti"); /* optional: without it, no line cache */
    /* Optional: without them the embedded files are compiled from source. */
    PYSYM(Import_GetMagicNumber, "PyImport_GetMagicNumber");
    PYSYM(Marshal_ReadObjectFromString, "PyMarshal_ReadObjectFromString");
    PYSYM(ContextVar_Get, "PyContextVar_Get");
    PYSYM(Tuple_Pack, "PyTuple_Pack");
    PYSYM(Long_FromUnsignedLongLong, "PyLong_FromUnsignedLongLong");
    /* Optional: 3.13 renamed it Py_IsFinalizing. */
    if (!PYSYM(IsFinalizing, "Py_IsFinalizing"))
        PYSYM(IsFinalizing, "_Py_IsFinalizing");
    return ok;
}

/* ------------------------------------------------------------------ interned strings and code cache
 * Both are only touched with the GIL held, which serialises them: no lock of our own. Strings live
 * forever (ls_pyframe's contract); code objects in the cache hold a strong reference so their
 * address can never be reused by another code object. */

static uint32_t fnv(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static const char **str_tab;
static size_t str_cap, str_n;

static const char *intern_str(const char *s)
{
    if (!s)
        return NULL;
    if (str_n * 2 >= str_cap) {
        size_t nc = str_cap ? str_cap * 2 : 1024;
        const char **nt = calloc(nc, sizeof *nt);
        if (!nt)
            return NULL;
        for (size_t i = 0; i < str_cap; i++)
            if (str_tab[i]) {
                size_t j = fnv(str_tab[i]) & (nc - 1);
                while (nt[j])
                    j = (j + 1) & (nc - 1);
                nt[j] = str_tab[i];
            }
        free(str_tab);
        str_tab = nt;
        str_cap = nc;
    }
    size_t j = fnv(s) & (str_cap - 1);
    while (str_tab[j]) {
        if (!strcmp(str_tab[j], s))
            return str_tab[j];
        j = (j + 1) & (str_cap - 1);
    }
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    str_tab[j] = copy;
    str_n++;
    return copy;
}

typedef struct code_ent {
    PyCodeObject *co; /* strong reference; NULL = empty slot */
    const char *file, *func;
    int skip; /* our own bootstrap code: not shown */
    int held; /* in the cache, which keeps co alive: its address is not reused meanwhile */
} code_ent;

#define CODE_CACHE_MAX (1u << 17) /* beyond this, names are looked up on every walk */
static code_ent *code_tab;
static size_t code_cap, code_n;

static size_t ptr_hash(const void *p)
{
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 17;
    x *= 0xed5ad4bbu;
    x ^= x >> 11;
    return (size_t)x;
}

static const char *code_attr(PyCodeObject *co, const char *name, const char *fallback)
{
    PyObject *o = py.Object_GetAttrString((PyObject *)co, name);
    if (!o) {
        py.Err_Clear();
        return fallback ? code_attr(co, fallback, NULL) : intern_str("?");
    }
    const char *u = py.Unicode_AsUTF8(o);
    const char *r = intern_str(u ? u : "?");
    if (!u)
        py.Err_Clear();
    py.DecRef(o);
    return r;
}

static code_ent code_lookup(PyCodeObject *co)
{
    if (code_cap) {
        size_t j = ptr_hash(co) & (code_cap - 1);
        while (code_tab[j].co) {
            if (code_tab[j].co == co)
                return code_tab[j];
            j = (j + 1) & (code_cap - 1);
        }
    }
    code_ent e = {.co = co};
    e.file = code_attr(co, "co_filename", NULL);
    e.func = code_attr(co, "co_qualname", "co_name");       /* co_qualname is 3.11+ */
    e.skip = e.file && !strncmp(e.file, "<leakshim>/", 11); /* our own embedded files */
    if (code_n * 2 >= code_cap && code_cap < CODE_CACHE_MAX) {
        size_t nc = code_cap ? code_cap * 2 : 4096;
        code_ent *nt = calloc(nc, sizeof *nt);
        if (nt) {
            for (size_t i = 0; i < code_cap; i++)
                if (code_tab[i].co) {
                    size_t k = ptr_hash(code_tab[i].co) & (nc - 1);
                    while (nt[k].co)
                        k = (k + 1) & (nc - 1);
                    nt[k] = code_tab[i];
                }
            free(code_tab);
            code_tab = nt;
            code_cap = nc;
        }
    }
    if (code_n * 2 < code_cap) {
        size_t j = ptr_hash(co) & (code_cap - 1);
        while (code_tab[j].co)
            j = (j + 1) & (code_cap - 1);
        py.IncRef((PyObject *)co);
        e.held = 1;
        code_tab[j] = e;
        code_n++;
    }
    return e;
}

/* Line numbers by (code object, instruction offset): PyFrame_GetLineNumber scans the code's line
 * table from its start on every call, the larger part of a walk's cost; the same call sites are
 * walked again and again (a connect per request). Direct-mapped, GIL held; only for code objects
 * the code cache holds, whose addresses cannot be reused by another code object. */
#define LINE_CACHE 4096
static struct line_ent {
    PyCodeObject *co;
    int lasti, line;
} line_tab[LINE_CACHE];

static int frame_line(PyFrameObject *f, PyCodeObject *co, int held)
{
    if (!held || !py.Frame_GetLasti)
        return py.Frame_GetLineNumber(f);
    int lasti = py.Frame_GetLasti(f);
    struct line_ent *e = &line_tab[(ptr_hash(co) ^ (size_t)lasti * 0x9e3779b1u) & (LINE_CACHE - 1)];
    if (e->co != co || e->lasti != lasti) {
        e->co = co;
        e->lasti = lasti;
        e->line = py.Frame_GetLineNumber(f);
    }
    return e->line;
}

/* ------------------------------------------------------------------ the stack walk */

static int py_max_frames(void)
{
    /* Python frames are what users read: keep up to the format's limit; the innermost come first. */
    return LS_MAX_FRAMES;
}

/* GIL held. Fills out[] innermost first; returns the count. */
static int walk_locked(ls_pyframe *out, int max)
{
    PyObject *et, *ev, *tb;
    /* Never let our lookups disturb an error the host is in the middle of raising. */
    py.Err_Fetch(&et, &ev, &tb);
    /* Frame objects are created on demand (3.11) and are GC-tracked: a collection started by one
     * of those allocations could run arbitrary __del__ code inside connect(). */
    int gc_was = py.GC_Disable();
    int n = 0;
    PyFrameObject *f = py.Eval_GetFrame(); /* borrowed */
    if (f)
        py.IncRef((PyObject *)f);
    while (f && n < max) {
        PyCodeObject *co = py.Frame_GetCode(f);
        if (co) {
            code_ent e = code_lookup(co);
            if (!e.skip) {
                out[n].file = e.file;
                out[n].func = e.func;
                out[n].line = frame_line(f, co, e.held);
                n++;
            }
            py.DecRef((PyObject *)co);
        }
        PyFrameObject *back = py.Frame_GetBack(f);
        py.DecRef((PyObject *)f);
        f = back;
    }
    if (f)
        py.DecRef((PyObject *)f);
    if (gc_was)
        py.GC_Enable();
    py.Err_Restore(et, ev, tb);
    return n;
}

/* ------------------------------------------------------------------ attribution contexts (attrib.c)
 * The current test or route is kept by the Python side in a contextvars.ContextVar (so it follows
 * asyncio tasks and the thread pools that copy contexts), whose value is the attribution value
 * (attrib.c). It is read here during the stack walk, GIL held. Without a value, pytest's
 * PYTEST_CURRENT_TEST ("tests/x.py::test_a (call)") names the test. */
static PyObject *attr_var;           /* set by _ls_attr_var; a strong reference, kept */
static LS_TLS uint64_t py_attr_last; /* the value read by this thread's last capture */
static char env_last[1024];          /* GIL held: the last PYTEST_CURRENT_TEST interned */
static uint32_t env_last_id;

static uint64_t attr_from_env(void)
{
    const char *t = getenv("PYTEST_CURRENT_TEST"); /* GIL held: os.environ's putenv cannot race */
    if (!t || !*t || strlen(t) >= sizeof env_last || !strcmp(t, ls_inherited_test()))
        return 0; /* none, or the parent's test (this process is one a test started) */
    if (env_last_id && !strcmp(t, env_last))
        return env_last_id;
    char label[sizeof env_last], *phase = "";
    strcpy(label, t);
    char *open = strrchr(label, '(');
    size_t n = strlen(label);
    if (open && open > label && open[-1] == ' ' && label[n - 1] == ')') {
        open[-1] = 0;
        label[n - 1] = 0;
        phase = open + 1;
    }
    env_last_id = ls_attr_intern(label, phase);
    strcpy(env_last, t);
    return env_last_id;
}

/* GIL held. The task's (or thread's) attribution value, 0 if none; the host's error state kept. */
static uint64_t attr_locked(void)
{
    uint64_t a = 0;
    if (attr_var && py.ContextVar_Get) {
        PyObject *et, *ev, *tb, *v = NULL;
        py.Err_Fetch(&et, &ev, &tb);
        if (py.ContextVar_Get(attr_var, NULL, &v) == 0 && v) {
            a = py.Long_AsUnsignedLongLong(v);
            py.DecRef(v);
        }
        if (py.Err_Occurred()) {
            py.Err_Clear();
            a = 0;
        }
        py.Err_Restore(et, ev, tb);
    }
    return a ? a : attr_from_env();
}

/* ls_attr_py_hook: what the last capture on this thread read. */
static uint64_t attr_hook(void)
{
    return py_attr_last;
}

/* Any thread. Takes the GIL only if the thread is one Python knows. */
static ls_stack_id capture(void)
{
    py_attr_last = 0;
    if (!py.IsInitialized())
        return 0;
    if (py.IsFinalizing && py.IsFinalizing())
        return 0; /* taking the GIL now may terminate this thread (daemon threads at shutdown) */
    if (!py.GILState_GetThisThreadState())
        return 0; /* a thread Python never saw: never give it a thread state */
    /* Zeroed: the core hashes and compares whole ls_pyframe structs, padding included. */
    ls_pyframe frames[LS_MAX_FRAMES];
    memset(frames, 0, sizeof frames);
    PyGILState_STATE st = py.GILState_Ensure(); /* cheap when this thread already holds it */
    int n = walk_locked(frames, py_max_frames());
    py_attr_last = attr_locked();
    py.GILState_Release(st);
    /* The strings are interned for good, so interning the stack needs no GIL. */
    return n > 0 ? ls_pystack_intern(frames, n) : 0;
}

/* Attribution scopes opened by the Python wrappers around a driver's connect: the ctx for the
 * core, plus the Python stack captured while the wrapper held the GIL. */
#define PY_SCOPES 16
static LS_TLS int scope_depth;
static LS_TLS ls_ctx scope_prev[PY_SCOPES];
static LS_TLS ls_stack_id scope_stack[PY_SCOPES];
/* The handle and stack of this thread's last _ls_push (a connect), for the checkout after it. */
static LS_TLS uintptr_t last_push_handle;
static LS_TLS ls_stack_id last_push_stack;
static LS_TLS uint64_t last_push_attr;
static LS_TLS uint64_t scope_attr[PY_SCOPES]; /* the attribution read with that stack */

/* ------------------------------------------------------------------ awaiter chains (asyncio)
 * A socket opened inside an asyncio task that another task awaits (asyncpg connects in a task of
 * its own through wait_for; gather runs each coroutine in a task) has a Python stack that stops at
 * the event loop. When a captured stack runs through asyncio's Handle._run and the task's own
 * frames are all library code, the awaiting tasks' suspended coroutine frames are spliced in
 * there (innermost first), so the stack reaches the line that awaited the driver. Finding the awaiters is Python's job
 * (aio.py registers it with _ls_set_async_tail when asyncio is imported); here the frames it returns are read. */
static PyObject *aio_tail_fn; /* a strong reference, kept for the process lifetime */
static struct {
    Py_ssize_t (*List_Size)(PyObject *);
    PyObject *(*List_GetItem)(PyObject *, Py_ssize_t);
    PyObject *(*Object_CallNoArgs)(PyObject *);
} pyx;

static int is_loop_frame(const ls_pyframe *f)
{
    static const char tail[] = "asyncio/events.py";
    size_t n = f->file ? strlen(f->file) : 0;
    return f->func && !strcmp(f->func, "Handle._run") && n >= sizeof tail - 1 &&
           !strcmp(f->file + n - (sizeof tail - 1), tail);
}

/* Any thread, ls_in_shim set. id with the awaiting tasks' frames spliced in, or id itself. */
static ls_stack_id with_awaiters(ls_stack_id id)
{
    if (!aio_tail_fn || !id)
        return id;
    const ls_stack *s = ls_stack_get(id);
    if (!s || !s->is_py)
        return id;
    int k = 0;
    while (k < s->n && !is_loop_frame(&s->pyframes[k]))
        k++;
    if (k == s->n)
        return id; /* not inside an event loop callback */
    /* The task's own frames already name the program's code (a redis.asyncio command from an
     * endpoint): they say where, and finding the awaiters (a walk over the loop's tasks) would be
     * paid on every checkout. Only a task running nothing but library code is continued. */
    for (int i = 0; i < k; i++) {
        char lib[32];
        if (ls_classify_pyframe(s->pyframes[i].file, lib, sizeof lib) == LS_FC_USER)
            return id;
    }
    ls_pyframe out[LS_MAX_FRAMES];
    memset(out, 0, sizeof out);
    int n = 0, added = 0;
    for (int i = 0; i < k && n < LS_MAX_FRAMES; i++)
        out[n++] = s->pyframes[i];
    PyGILState_STATE st = py.GILState_Ensure();
    PyObject *et, *ev, *tb;
    py.Err_Fetch(&et, &ev, &tb);
    int gc_was = py.GC_Disable();
    PyObject *r = pyx.Object_CallNoArgs(aio_tail_fn);
    Py_ssize_t m = r ? pyx.List_Size(r) : -1;
    for (Py_ssize_t j = 0; j < m && n < LS_MAX_FRAMES; j++) {
        PyFrameObject *f = (PyFrameObject *)pyx.List_GetItem(r, j); /* borrowed; aio.py gives frames only */
        PyCodeObject *co = f ? py.Frame_GetCode(f) : NULL;
        if (!co)
            break;
        code_ent e = code_lookup(co);
        if (!e.skip) {
            out[n].file = e.file;
            out[n].func = e.func;
            out[n].line = py.Frame_GetLineNumber(f);
            n++;
            added++;
        }
        py.DecRef((PyObject *)co);
    }
    if (r)
        py.DecRef(r);
    if (py.Err_Occurred())
        py.Err_Clear();
    if (gc_was)
        py.GC_Enable();
    py.Err_Restore(et, ev, tb);
    py.GILState_Release(st);
    if (!added)
        return id;
    for (int i = k; i < s->n && n < LS_MAX_FRAMES; i++)
        out[n++] = s->pyframes[i];
    return ls_pystack_intern(out, n);
}

/* The stacks the core and the wrappers record: the thread's frames, continued into the tasks that
 * await this one. */
static ls_stack_id capture_full(void)
{
    return with_awaiters(capture());
}

/* ls_pystack_hook. Called by the core with ls_in_shim set, outside its locks. */
static ls_stack_id pystack_hook(void)
{
    if (scope_depth > 0 && scope_depth <= PY_SCOPES && scope_stack[scope_depth - 1]) {
        py_attr_last = scope_attr[scope_depth - 1];
        return scope_stack[scope_depth - 1];
    }
    return capture_full();
}

/* ------------------------------------------------------------------ functions the Python side calls
 * METH_FASTCALL, integer arguments only. They never raise into the host: a bad argument is
 * ignored. ls_in_shim is raised around core calls like any hook. */

static int get_u64(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, unsigned long long *out)
{
    if (nargs != want)
        return -1;
    for (Py_ssize_t i = 0; i < want; i++) {
        out[i] = py.Long_AsUnsignedLongLong(args[i]);
        if (out[i] == (unsigned long long)-1 && py.Err_Occurred()) {
            py.Err_Clear();
            return -1;
        }
    }
    return 0;
}

static PyObject *ret_none(void)
{
    py.IncRef(py.None);
    return py.None;
}

#define FASTCALL_FN(name) static PyObject *name(PyObject *self, PyObject *const *args, Py_ssize_t nargs)

FASTCALL_FN(f_open)
{
    (void)self;
    unsigned long long a[4];
    if (!get_u64(args, nargs, 4, a)) {
        LS_RECORD(ls_handle_open((int)a[0], (int)a[1], (uintptr_t)a[2], (uintptr_t)a[3]));
    }
    return ret_none();
}

FASTCALL_FN(f_close)
{
    (void)self;
    unsigned long long a[1];
    if (!get_u64(args, nargs, 1, a)) {
        LS_RECORD(ls_handle_close((uintptr_t)a[0]));
    }
    return ret_none();
}

FASTCALL_FN(f_known)
{
    (void)self;
    unsigned long long a[1];
    int k = 0;
    if (!get_u64(args, nargs, 1, a)) {
        LS_RECORD(k = ls_handle_known((uintptr_t)a[0]));
    }
    return py.Bool_FromLong(k);
}

FASTCALL_FN(f_adopt_fd)
{
    (void)self;
    unsigned long long a[2];
    if (!get_u64(args, nargs, 2, a)) {
        LS_RECORD(ls_handle_adopt_fd((uintptr_t)a[0], (int)a[1]));
    }
    return ret_none();
}

FASTCALL_FN(f_checkout)
{
    (void)self;
    unsigned long long a[2];
    if (!get_u64(args, nargs, 2, a)) {
        LS_RECORD({
            /* One walk serves both captures the core makes when the client is new to it (its
             * creation stack and the checkout stack); a client this thread has just connected
             * (redis-py connects inside get_connection) is checked out at its connect's stack. */
            ls_stack_id st = a[1] && a[1] == last_push_handle ? last_push_stack : 0;
            last_push_handle = 0;
            if (st)
                py_attr_last = last_push_attr; /* read with that stack */
            else
                st = capture_full();
            int d = scope_depth;
            if (d < PY_SCOPES) {
                scope_prev[d] = ls_ctx_current();
                scope_stack[d] = st;
                scope_attr[d] = py_attr_last;
                scope_depth++;
            }
            ls_pool_checkout((uintptr_t)a[0], (uintptr_t)a[1]);
            if (d < PY_SCOPES)
                scope_depth--;
        });
    }
    return ret_none();
}

FASTCALL_FN(f_checkin)
{
    (void)self;
    unsigned long long a[2];
    if (!get_u64(args, nargs, 2, a)) {
        LS_RECORD(ls_pool_checkin((uintptr_t)a[0], (uintptr_t)a[1]));
    }
    return ret_none();
}

/* _ls_push(driver, handle, pool, background): sockets this thread connects until _ls_pop() belong
 * to the driver (and handle); their Python stack is the one taken here, with the GIL held. */
FASTCALL_FN(f_push)
{
    (void)self;
    unsigned long long a[4];
    if (get_u64(args, nargs, 4, a))
        a[0] = a[1] = a[2] = a[3] = 0;
    if (scope_depth < PY_SCOPES) {
        ls_stack_id st = capture_full();
        scope_prev[scope_depth] = ls_ctx_push((int)a[0], (uintptr_t)a[1], (uintptr_t)a[2], (int)a[3]);
        scope_stack[scope_depth] = st;
        scope_attr[scope_depth] = py_attr_last;
        last_push_handle = (uintptr_t)a[1];
        last_push_stack = st;
        last_push_attr = py_attr_last;
    }
    scope_depth++;
    return ret_none();
}

FASTCALL_FN(f_pop)
{
    (void)self;
    (void)args;
    (void)nargs;
    if (scope_depth > 0) {
        scope_depth--;
        if (scope_depth < PY_SCOPES)
            ls_ctx_pop(scope_prev[scope_depth]);
    }
    return ret_none();
}

/* _ls_capture(): the current Python stack's id, to attach later to what this call creates. */
FASTCALL_FN(f_capture)
{
    (void)self;
    (void)args;
    (void)nargs;
    ls_stack_id st = 0;
    LS_RECORD(st = capture_full());
    return py.Long_FromLong((long)st);
}

/* _ls_scope(stack_id): until _ls_pop(), what this thread creates gets that Python stack (0: the
 * live one); the attribution ctx is left as it is. */
FASTCALL_FN(f_scope)
{
    (void)self;
    unsigned long long a[1];
    if (get_u64(args, nargs, 1, a))
        a[0] = 0;
    if (scope_depth < PY_SCOPES) {
        ls_stack_id st = a[0] ? (ls_stack_id)a[0] : capture_full();
        if (a[0]) /* a stack taken earlier: the context is the one current now */
            py_attr_last = attr_locked();
        scope_prev[scope_depth] = ls_ctx_current();
        scope_stack[scope_depth] = st;
        scope_attr[scope_depth] = py_attr_last;
    }
    scope_depth++;
    return ret_none();
}

/* ------------------------------------------------------------------ attribution and the public API
 * for the Python side (pytest plugin, unittest, ASGI/WSGI routes: attribution.py, pytest_plugin.py) */

/* _ls_attr(label, phase) -> the attribution id (0 if label is empty). */
FASTCALL_FN(f_attr)
{
    (void)self;
    uint32_t id = 0;
    if (nargs == 2) {
        const char *l = py.Unicode_AsUTF8(args[0]), *p = l ? py.Unicode_AsUTF8(args[1]) : NULL;
        if (l && p) {
            LS_RECORD(id = ls_attr_intern(l, p));
        } else
            py.Err_Clear();
    }
    return py.Long_FromLong((long)id);
}

/* _ls_attr_var(contextvar): the ContextVar captures read (its value: an attribution value). */
FASTCALL_FN(f_attr_var)
{
    (void)self;
    if (nargs == 1 && !attr_var) {
        py.IncRef(args[0]);
        attr_var = args[0];
    }
    return ret_none();
}

/* _ls_attr_process(value): the value threads without a context of their own record. */
FASTCALL_FN(f_attr_process)
{
    (void)self;
    unsigned long long a[1];
    if (!get_u64(args, nargs, 1, a))
        ls_attr_set_process((uint64_t)a[0]);
    return ret_none();
}

/* _ls_seq() -> the creation counter (leakshim_creations). */
FASTCALL_FN(f_seq)
{
    (void)self;
    (void)args;
    (void)nargs;
    return py.Long_FromUnsignedLongLong ? py.Long_FromUnsignedLongLong(ls_seq_now())
                                        : py.Long_FromLong((long)ls_seq_now());
}

/* _ls_live(want_text, lo, hi, lo, hi, ...) -> (leaks, json, text or None): what was created in
 * those ranges of the counter and is still open, as an exit report of just that (hi 0: no end). */
FASTCALL_FN(f_live)
{
    (void)self;
    enum { MAXR = 64 };
    unsigned long long a[1 + 2 * MAXR];
    if (nargs < 1 || nargs > 1 + 2 * MAXR || !(nargs & 1) || get_u64(args, nargs, nargs, a) || !py.Tuple_Pack)
        return ret_none();
    uint64_t r[2 * MAXR];
    for (Py_ssize_t i = 1; i < nargs; i++)
        r[i - 1] = a[i];
    ls_buf json = {0}, text = {0};
    int leaks = 0, rc = -1;
    LS_RECORD(rc = ls_report_live_in(r, (size_t)(nargs - 1) / 2, &json, a[0] ? &text : NULL, &leaks));
    PyObject *out = NULL;
    if (rc == 0 && !json.oom && json.data) {
        PyObject *n = py.Long_FromLong(leaks), *j = py.Unicode_DecodeUTF8(json.data, (Py_ssize_t)json.len, "replace");
        PyObject *t = text.data ? py.Unicode_DecodeUTF8(text.data, (Py_ssize_t)text.len, "replace") : NULL;
        if (n && j)
            out = py.Tuple_Pack(3, n, j, t ? t : py.None);
        if (n)
            py.DecRef(n);
        if (j)
            py.DecRef(j);
        if (t)
            py.DecRef(t);
    }
    ls_buf_free(&json);
    ls_buf_free(&text);
    if (!out && py.Err_Occurred())
        py.Err_Clear();
    return out ? out : ret_none();
}

/* _ls_suppress(pattern) -> True if added: a suppressions pattern (the `leak:` part removed). */
FASTCALL_FN(f_suppress)
{
    (void)self;
    int ok = 0;
    const char *s = nargs == 1 ? py.Unicode_AsUTF8(args[0]) : NULL;
    if (s) {
        LS_RECORD(ok = ls_suppressions_add(s) == 0);
    } else
        py.Err_Clear();
    return py.Bool_FromLong(ok);
}

/* Registered with Python's atexit: the exit report while the program's sockets are still open.
 * The C atexit handler later finds it taken and only applies exitcode. */
static PyObject *f_report_exit(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (!__atomic_load_n(&ls_paused, __ATOMIC_ACQUIRE)) /* `leakshim detach`: no exit report */
        LS_RECORD(ls_report_exit());
    return ret_none();
}

FASTCALL_FN(f_warn)
{
    (void)self;
    if (nargs == 1) {
        const char *s = py.Unicode_AsUTF8(args[0]);
        if (s)
            ls_warn("%s", s);
        else
            py.Err_Clear();
    }
    return ret_none();
}

FASTCALL_FN(f_verbosity)
{
    (void)self;
    (void)args;
    (void)nargs;
    return py.Long_FromLong(ls_opt.verbosity);
}

/* _ls_set_async_tail(fn): fn() returns the frames of the tasks awaiting the current one
 * (aio.py). Set once; later calls are ignored. */
FASTCALL_FN(f_set_async_tail)
{
    (void)self;
    *(void **)&pyx.List_Size = dlsym(RTLD_DEFAULT, "PyList_Size");
    *(void **)&pyx.List_GetItem = dlsym(RTLD_DEFAULT, "PyList_GetItem");
    *(void **)&pyx.Object_CallNoArgs = dlsym(RTLD_DEFAULT, "PyObject_CallNoArgs"); /* 3.9+ */
    if (nargs == 1 && !aio_tail_fn && pyx.List_Size && pyx.List_GetItem && pyx.Object_CallNoArgs) {
        py.IncRef(args[0]);
        aio_tail_fn = args[0];
    }
    return ret_none();
}

/* ------------------------------------------------------------------ the Python side
 * Real .py files (shim/py/), linted and unit-tested on their own (tests/pyunit/), embedded here at
 * build time with .incbin: the .so still needs nothing at run time. Each is embedded twice: its
 * source, and (build/py/NAME.pyc) the build's python3 magic number followed by its marshalled code
 * object. When the running interpreter has that magic number the code is loaded (~0.2M
 * instructions) instead of compiled (~13M for boot.py), which is most of what a Python process
 * pays at start; any other interpreter compiles the source. boot.py runs once; each driver file
 * only when that driver is first imported (boot.py asks for it by name). */
/* clang-format off */
#define LS_PY_FILES(X) \
    X(boot) X(psycopg2) X(redis) X(pymongo) X(sqlalchemy) X(attribution) X(pytest_plugin) \
    X(aio) X(asyncpg) X(redis_asyncio) X(psycopg)
/* clang-format on */
#define LS_PY_EMBED(n)                                                                                                 \
    __asm__(".pushsection .rodata\n"                                                                                   \
            ".hidden ls_py_" #n "_start\n"                                                                             \
            ".hidden ls_py_" #n "_end\n"                                                                               \
            ".hidden ls_pyc_" #n "_start\n"                                                                            \
            ".hidden ls_pyc_" #n "_end\n"                                                                              \
            "ls_py_" #n "_start:\n"                                                                                    \
            ".incbin \"shim/py/" #n ".py\"\n"                                                                          \
            "ls_py_" #n "_end:\n"                                                                                      \
            ".byte 0\n"                                                                                                \
            "ls_pyc_" #n "_start:\n"                                                                                   \
            ".incbin \"build/py/" #n ".pyc\"\n"                                                                        \
            "ls_pyc_" #n "_end:\n"                                                                                     \
            ".popsection\n");                                                                                          \
    extern const char ls_py_##n##_start[], ls_py_##n##_end[], ls_pyc_##n##_start[], ls_pyc_##n##_end[];
LS_PY_FILES(LS_PY_EMBED)

static const struct py_file {
    const char *name, *filename;
    const char *start, *end, *pyc, *pyc_end;
} py_files[] = {
#define LS_PY_ROW(n)                                                                                                   \
    {#n ".py", "<leakshim>/" #n ".py", ls_py_##n##_start, ls_py_##n##_end, ls_pyc_##n##_start, ls_pyc_##n##_end},
    LS_PY_FILES(LS_PY_ROW)
#undef LS_PY_ROW
};

static const struct py_file *py_file(const char *name)
{
    for (size_t i = 0; name && i < sizeof py_files / sizeof py_files[0]; i++)
        if (!strcmp(py_files[i].name, name))
            return &py_files[i];
    return NULL;
}

/* GIL held. The file's code object: unmarshalled when built for this interpreter, else compiled
 * from the embedded source under its own name. NULL with a Python error set on failure. */
static PyObject *py_code(const struct py_file *f)
{
    size_t n = (size_t)(f->pyc_end - f->pyc);
    if (n > 4 && py.Import_GetMagicNumber && py.Marshal_ReadObjectFromString) {
        const unsigned char *m = (const unsigned char *)f->pyc;
        unsigned long magic = m[0] | (unsigned long)m[1] << 8 | (unsigned long)m[2] << 16 | (unsigned long)m[3] << 24;
        if ((long)magic == py.Import_GetMagicNumber()) {
            PyObject *code = py.Marshal_ReadObjectFromString(f->pyc + 4, (Py_ssize_t)(n - 4));
            if (code)
                return code;
        }
        if (py.Err_Occurred())
            py.Err_Clear();
    }
    return py.CompileString(f->start, f->filename, PY_FILE_INPUT);
}

/* The embedded file named by the one str argument; NULL (no error left set) if there is none. */
static const struct py_file *arg_file(PyObject *const *args, Py_ssize_t nargs)
{
    const struct py_file *f = nargs == 1 ? py_file(py.Unicode_AsUTF8(args[0])) : NULL;
    if (!f && py.Err_Occurred())
        py.Err_Clear();
    return f;
}

/* _ls_source(name) -> the text of an embedded file (None if there is no such file). */
FASTCALL_FN(f_source)
{
    (void)self;
    const struct py_file *f = arg_file(args, nargs);
    return f ? py.Unicode_DecodeUTF8(f->start, (Py_ssize_t)(f->end - f->start), NULL) : ret_none();
}

/* _ls_code(name) -> the code object of an embedded file (None if there is no such file). */
FASTCALL_FN(f_code)
{
    (void)self;
    const struct py_file *f = arg_file(args, nargs);
    return f ? py_code(f) : ret_none();
}

#define FC(fn) ((PyCFunction)(void (*)(void))(fn))
static PyMethodDef py_methods[] = {
    {"_ls_open", FC(f_open), PY_METH_FASTCALL, NULL},
    {"_ls_close", FC(f_close), PY_METH_FASTCALL, NULL},
    {"_ls_known", FC(f_known), PY_METH_FASTCALL, NULL},
    {"_ls_adopt_fd", FC(f_adopt_fd), PY_METH_FASTCALL, NULL},
    {"_ls_checkout", FC(f_checkout), PY_METH_FASTCALL, NULL},
    {"_ls_checkin", FC(f_checkin), PY_METH_FASTCALL, NULL},
    {"_ls_push", FC(f_push), PY_METH_FASTCALL, NULL},
    {"_ls_pop", FC(f_pop), PY_METH_FASTCALL, NULL},
    {"_ls_capture", FC(f_capture), PY_METH_FASTCALL, NULL},
    {"_ls_scope", FC(f_scope), PY_METH_FASTCALL, NULL},
    {"_ls_report_exit", FC(f_report_exit), PY_METH_NOARGS, NULL},
    {"_ls_warn", FC(f_warn), PY_METH_FASTCALL, NULL},
    {"_ls_verbosity", FC(f_verbosity), PY_METH_FASTCALL, NULL},
    {"_ls_source", FC(f_source), PY_METH_FASTCALL, NULL},
    {"_ls_code", FC(f_code), PY_METH_FASTCALL, NULL},
    {"_ls_attr", FC(f_attr), PY_METH_FASTCALL, NULL},
    {"_ls_attr_var", FC(f_attr_var), PY_METH_FASTCALL, NULL},
    {"_ls_attr_process", FC(f_attr_process), PY_METH_FASTCALL, NULL},
    {"_ls_seq", FC(f_seq), PY_METH_FASTCALL, NULL},
    {"_ls_live", FC(f_live), PY_METH_FASTCALL, NULL},
    {"_ls_suppress", FC(f_suppress), PY_METH_FASTCALL, NULL},
    {"_ls_set_async_tail", FC(f_set_async_tail), PY_METH_FASTCALL, NULL},
};

/* GIL held (audit hook). Runs boot.py once in a private namespace. */
static void bootstrap(void)
{
    py_booted = 1;
    PyObject *et, *ev, *tb;
    py.Err_Fetch(&et, &ev, &tb);
    ls_in_shim++; /* nothing the bootstrap does is the host's */
    PyObject *ns = py.Dict_New(), *name = py.Unicode_DecodeUTF8("leakshim.boot", 13, NULL);
    int ok = ns && name && py.Dict_SetItemString(ns, "__builtins__", py.Eval_GetBuiltins()) == 0 &&
             py.Dict_SetItemString(ns, "__name__", name) == 0;
    if (name)
        py.DecRef(name);
    PyObject *install = py.Bool_FromLong(1);
    ok = ok && install && py.Dict_SetItemString(ns, "_LS_INSTALL", install) == 0;
    if (install)
        py.DecRef(install);
    for (size_t i = 0; ok && i < sizeof py_methods / sizeof py_methods[0]; i++) {
        PyObject *f = py.CFunction_NewEx(&py_methods[i], NULL, NULL);
        ok = f && py.Dict_SetItemString(ns, py_methods[i].ml_name, f) == 0;
        if (f)
            py.DecRef(f);
    }
    static const struct {
        const char *name;
        long v;
    } consts[] = {
#define DRIVER(id, name, service, client_type, pool_type) {"DRV_" #id, LS_DRV_##id},
#include "drivers.def"
#undef DRIVER
        {"HK_CLIENT", LS_HK_CLIENT},
        {"HK_POOL", LS_HK_POOL},
    };
    for (size_t i = 0; ok && i < sizeof consts / sizeof consts[0]; i++) {
        PyObject *v = py.Long_FromLong(consts[i].v);
        ok = v && py.Dict_SetItemString(ns, consts[i].name, v) == 0;
        if (v)
            py.DecRef(v);
    }
    PyObject *code = ok ? py_code(py_file("boot.py")) : NULL;
    PyObject *r = code ? py.Eval_EvalCode(code, ns, ns) : NULL;
    if (!r) {
        ls_warn("Python support is off: its bootstrap failed%s", ls_opt.verbosity > 0 ? ":" : "");
        if (py.Err_Occurred()) {
            if (ls_opt.verbosity > 0)
                py.Err_Print();
            else
                py.Err_Clear();
        }
    } else
        py.DecRef(r);
    if (code)
        py.DecRef(code);
    py_ns = ns; /* kept: the wrappers' globals */
    ls_in_shim--;
    py.Err_Restore(et, ev, tb);
}

static int audit_hook(const char *event, PyObject *args, void *data);

/* After the bootstrap the audit hook has nothing left to do, yet while any C audit hook is
 * registered CPython builds an argument tuple for every audited event (each id(), import, socket
 * connect...): 5-10% of a redis-py connect loop. CPython can add a hook but not remove one, so we
 * unlink our entry from the runtime's list ourselves, under the GIL: the head pointer inside
 * _PyRuntime (3.11's `audit_hook_head`) is the one slot of that object that points at an entry
 * {next, audit_hook, NULL}; each candidate is read with process_vm_readv, so a wrong guess cannot
 * fault. Unless exactly one slot matches, nothing is changed. The entry itself is left allocated:
 * the loop running us reads its `next`, and the interpreter no longer frees it at exit. */
static void audit_hook_unlink(void)
{
    void *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (!rt || !dladdr1(rt, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym || sym->st_size < sizeof(void *))
        return;
    struct entry {
        struct entry *next;
        Py_AuditHookFunction fn;
        void *data;
    };
    uintptr_t *slots = rt, *found = NULL;
    /* The head sits near the start of the runtime state (after the interpreter list, the eval
     * and GIL state and the pre-config: about 0.5 KB in 3.11); the rest of its 166 KB is not read. */
    size_t n = (sym->st_size < 4096 ? sym->st_size : 4096) / sizeof *slots;
    struct entry e, hit = {0};
    for (size_t i = 0; i < n; i++) {
        uintptr_t v = __atomic_load_n(&slots[i], __ATOMIC_RELAXED);
        if (!v || (v & (sizeof(void *) - 1)) || ls_read_self((const void *)v, &e, sizeof e) != 0)
            continue;
        if (e.fn == audit_hook && !e.data) {
            if (found)
                return; /* two: not the layout we know */
            found = &slots[i];
            hit = e;
        }
    }
    if (found)
        __atomic_store_n(found, (uintptr_t)hit.next, __ATOMIC_RELEASE);
}

/* The audit hook: GIL held, any thread. Unlinked once the bootstrap ran (audit_hook_unlink); if
 * that was not possible it costs one load per event. */
static int audit_hook(const char *event, PyObject *args, void *data)
{
    (void)args;
    (void)data;
    if (LS_LIKELY(py_booted))
        return 0;
    /* "cpython.run_file/_module/_command/_stdin/_startup/_interactivehook": the interpreter is up
     * and the program's own code is about to run. "import" after initialisation covers hosts that
     * embed Python and run code another way. */
    if (!strncmp(event, "cpython.run_", 12) || (!strcmp(event, "import") && py.IsInitialized())) {
        if (py.IsInitialized()) {
            bootstrap();
            audit_hook_unlink();
        }
    }
    return 0;
}

/* Constructor context. Is "-X dev" among the interpreter's own options in /proc/self/cmdline? */
static int cmdline_devmode(void)
{
    char buf[4096];
    ssize_t n = ls_read_file("/proc/self/cmdline", buf, sizeof buf - 1);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *end = buf + n;
    const char *a = buf + strlen(buf) + 1; /* skip argv[0] */
    while (a < end && a[0] == '-') {
        if (!strcmp(a, "-c") || !strcmp(a, "-m") || !strcmp(a, "--") || !strcmp(a, "-"))
            break; /* what follows is the program's */
        const char *x = NULL;
        if (!strcmp(a, "-X") || !strcmp(a, "-W")) {
            const char *next = a + strlen(a) + 1;
            if (next >= end)
                break;
            if (a[1] == 'X')
                x = next;
            a = next;
        } else if (!strncmp(a, "-X", 2))
            x = a + 2;
        if (x && (!strcmp(x, "dev") || !strncmp(x, "dev=", 4)))
            return 1;
        a += strlen(a) + 1;
    }
    return 0;
}

/* Debug allocators (PYTHONMALLOC=debug, -X dev, a debug build) are installed after our
 * constructor, and the interpreter frees the audit hook list with them at exit: an entry we
 * allocated before would abort the process ("_PyMem_DebugRawFree: bad ID"). In those modes no
 * audit hook is registered: Python stacks still work, the early exit report and pool tracking
 * are off. */
static int debug_allocator_likely(void)
{
    const char *m = getenv("PYTHONMALLOC");
    if (m && strstr(m, "debug"))
        return 1;
    const char *d = getenv("PYTHONDEVMODE");
    if (d && *d)
        return 1;
    if (dlsym(RTLD_DEFAULT, "_Py_RefTotal") || dlsym(RTLD_DEFAULT, "_Py_GetGlobalRefTotal"))
        return 1; /* --with-pydebug build */
    return cmdline_devmode();
}

/* Constructor context (before Py_Initialize in a python3 process): dlsym only, plus registering
 * the audit hook, which CPython allows before initialisation. */
__attribute__((constructor)) static void leakshim_python_ctor(void)
{
    if (ls_got_defined("Py_IsInitialized") == 0 || !dlsym(RTLD_DEFAULT, "Py_IsInitialized"))
        return; /* not CPython: nothing at all (the hash tables say so without the loader) */
    if (!resolve_api())
        return; /* older than 3.10, or a stripped build */
    py_ok = 1;
    ls_pystack_hook = pystack_hook;
    ls_attr_py_hook = attr_hook;
    if (debug_allocator_likely())
        return;
    if (py.IsInitialized()) {
        /* Preloaded into an already running interpreter (dlopen): no audit hook needed to know
         * it is up, but we have no GIL here; stacks work, pools wait for a later version. */
        return;
    }
    py.AddAuditHook(audit_hook, NULL);
}

/* Benchmark entry (tests/bench/bench_python.py calls it through ctypes.PyDLL with the GIL held):
 * average microseconds per Python stack capture from the caller's current depth, and the number
 * of frames captured in *frames_out. */
LEAKSHIM_EXPORT double leakshim_pystack_bench(int iterations, int *frames_out)
{
    if (!py_ok || iterations <= 0)
        return -1;
    ls_pyframe frames[LS_MAX_FRAMES];
    PyGILState_STATE st = py.GILState_Ensure();
    int n = walk_locked(frames, py_max_frames());
    py.GILState_Release(st);
    if (frames_out)
        *frames_out = n;
    double t0 = ls_mono(), t1 = t0;
    LS_RECORD({
        for (int i = 0; i < iterations; i++)
            (void)capture();
        t1 = ls_mono();
    });
    return (t1 - t0) * 1e6 / iterations;
}

/* `leakshim attach` into a running interpreter: the bootstrap needs the GIL, which the thread the
 * debugger stopped may be waiting for (or hold): a thread of our own takes it with
 * PyGILState_Ensure, when the interpreter next lets go of it, and the attach does not wait. Every
 * signal is blocked in it, so it never takes one meant for the host. */
static void *py_attach_thread(void *arg)
{
    (void)arg;
    if (py.IsFinalizing && py.IsFinalizing())
        return NULL;
    PyGILState_STATE st = py.GILState_Ensure();
    if (!py_booted && !(py.IsFinalizing && py.IsFinalizing()))
        bootstrap();
    py.GILState_Release(st);
    return NULL;
}

int ls_python_attach(void)
{
    static int started;
    if (!py_ok || py_booted || started || !py.IsInitialized())
        return 0;
    pthread_attr_t a;
    sigset_t all, prev;
    pthread_t t;
    if (pthread_attr_init(&a) != 0)
        return 0;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &prev);
    started = pthread_create(&t, &a, py_attach_thread, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    pthread_attr_destroy(&a);
    return started;
}

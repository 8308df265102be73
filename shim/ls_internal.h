/*
 * leakshim internal API: the one header between the thin hook files (hook_*.c) and the core
 * (registry.c, stack.c, report_*.c, options.c, rawio.c, init.c). Nothing here is exported from
 * libleakshim.so except what is marked LEAKSHIM_EXPORT in the hook files.
 *
 * The core is unit-tested by linking it directly (no preload), so core files never call a hooked
 * libc function through its public name where that would recurse: they use ls_sys_close().
 */
#ifndef LS_INTERNAL_H
#define LS_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "ls_bind.h"

#define LEAKSHIM_EXPORT __attribute__((visibility("default")))
#define LS_LIKELY(x) __builtin_expect(!!(x), 1)
#define LS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define LS_TLS __thread __attribute__((tls_model("initial-exec")))
#define LS_PRINTF(a, b) __attribute__((format(printf, a, b)))
/* A default mutex made new again in a fork child (atfork handlers run on the host's stack inside
 * fork: an assignment, no call). */
#define LS_MUTEX_REINIT(m) ((m) = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER)
/* The usual atfork handling of one lock: 0 prepare (take it), 1 parent (give it back), 2 child
 * (new again: its owner may be a thread the child does not have). */
static inline void ls_mutex_atfork(pthread_mutex_t *m, int phase)
{
    if (phase == 0)
        pthread_mutex_lock(m);
    else if (phase == 1)
        pthread_mutex_unlock(m);
    else
        LS_MUTEX_REINIT(*m);
}

/* ---------------------------------------------------------------- recursion guard
 * A __thread counter rather than a pthread key: pthread_getspecific may allocate on first use and
 * is not async-signal-safe; an initial-exec TLS int is one instruction and never allocates.
 * Every hook does: if (ls_in_shim) return real(...); ls_in_shim++ ... ls_in_shim--. */
extern LS_TLS int ls_in_shim;

/* ---------------------------------------------------------------- real functions
 * One place resolves symbols (libfiu's libc_symbol()): RTLD_NEXT, then (for drivers loaded
 * RTLD_LOCAL by a plugin) each loaded object but the shim. Returns NULL when absent, never
 * asserts, leaves errno alone. */
void *ls_real_symbol(const char *name);
/* constructors, a batch: reals[i] is &real_<fn> (cast), filled if still NULL */
void ls_real_symbols(const char *const *names, void **const *reals, size_t n);
/* Required symbol missing: one raw-written line naming it (once per name). */
void ls_missing_symbol(const char *name);

/* ---------------------------------------------------------------- time, raw output */
double ls_now(void);                                           /* CLOCK_REALTIME seconds */
double ls_mono(void);                                          /* CLOCK_MONOTONIC seconds */
int ls_sys_close(int fd);                                      /* raw syscall close, bypasses every hook */
ssize_t ls_read_file(const char *path, char *buf, size_t cap); /* a small file: bytes read, or -1 */
int ls_read_self(const void *addr, void *out, size_t n);       /* copy our own memory, 0; -1 (EFAULT) if unreadable */
int ls_write_all(int fd, const void *buf, size_t len);         /* retries EINTR/partial; 0 or -1 */
/* The host's fd n as an fd this thread can use: n itself, or on the reporter thread (which has
 * an fd table of its own) a private duplicate; give it back with ls_host_fd_done. -1 if gone. */
extern LS_TLS int ls_fds_private;
extern int ls_self_pidfd;
int ls_host_fd(int n);
void ls_host_fd_done(int n, int got);
struct stat;
int ls_host_fstat(int n, struct stat *st);             /* fstat of the host's fd n */
int ls_write_host(int n, const void *buf, size_t len); /* ls_write_all to the host's fd n */
/* One line to stderr prefixed "leakshim: ". Not for signal handlers (uses vsnprintf). */
void ls_warn(const char *fmt, ...) LS_PRINTF(1, 2);

/* Growable output buffer used by the reporters (never used in a signal handler). */
typedef struct ls_buf {
    char *data;
    size_t len, cap;
    int oom;
} ls_buf;
void ls_buf_printf(ls_buf *b, const char *fmt, ...) LS_PRINTF(2, 3);
void ls_buf_puts(ls_buf *b, const char *s);
void ls_buf_json_str(ls_buf *b, const char *s);       /* quoted, escaped JSON string; NULL -> null */
void ls_buf_fixed(ls_buf *b, double v, int decimals); /* like %.Nf, N <= 6, without printf */
void ls_buf_free(ls_buf *b);

/* ---------------------------------------------------------------- private stacks (altstack.c)
 * Runs fn(arg) on a pooled 256 KB stack (directly when already on one): what a hook records costs
 * the host's stack a few hundred bytes, whatever capturing and first-time set-up need. */
void ls_on_private_stack(void (*fn)(void *), void *arg);
void ls_altstack_atfork(int phase); /* 0 prepare, 1 parent, 2 child */

/* ---------------------------------------------------------------- options (options.c) */
enum ls_format { LS_FMT_TEXT, LS_FMT_JSON, LS_FMT_BOTH };
enum ls_track { LS_TRACK_DB, LS_TRACK_ALL };

#define LS_MAX_PORTS 64
#define LS_MAX_PATHS 32
#define LS_PATH_LEN 256

typedef struct ls_port_range {
    uint16_t lo, hi;
} ls_port_range;

typedef struct ls_options {
    char report[LS_PATH_LEN]; /* "stderr" or a path, %p = pid */
    int format;               /* enum ls_format */
    int signal;               /* signal number; 0 = none */
    int exitcode;             /* 0 = off */
    double threshold;         /* seconds */
    int frames;               /* native frames captured, 1..64 */
    ls_port_range ports[LS_MAX_PORTS];
    int nports;
    char paths[LS_MAX_PATHS][LS_PATH_LEN]; /* fnmatch patterns on the socket path's basename */
    int npaths;
    int track;                      /* enum ls_track */
    char suppressions[LS_PATH_LEN]; /* file or "" */
    double interval;                /* timeline sample period, 0 = off */
    int verbosity;                  /* 0 quiet .. 2 chatty */
    int top;                        /* churn table rows */
    int fold;                       /* text reports fold library and interpreter frames */
    int help;
    char metrics[LS_PATH_LEN]; /* Prometheus textfile directory, "" = off */
    int children;              /* enum ls_children: what a test suite's child processes do at exit */
} ls_options;

extern ls_options ls_opt; /* holds the defaults from the start (no parsing at start-up) */

void ls_options_defaults(ls_options *o);
/* Parses a LEAKSHIM_OPTIONS string into o (which should hold defaults). Each problem is reported
 * through err(msg) as one line; the key keeps its default. Returns the number of problems. */
/* err may be NULL (problems are then only counted). */
int ls_options_parse(ls_options *o, const char *s, void (*err)(const char *msg, void *arg), void *arg);
/* Writes the options table: as plain text (help=1) or as a Markdown table (README). */
void ls_options_help(ls_buf *b, int markdown);
int ls_signal_from_name(const char *name); /* "USR2", "SIGUSR2", "12" -> number; -1 unknown */
const char *ls_signal_name(int sig);

/* ---------------------------------------------------------------- stacks (stack.c) */
#define LS_MAX_FRAMES 64
typedef uint32_t ls_stack_id; /* 0 = no stack */

/* Python frames are provided by hook_python.c; strings must live for the whole process
 * (the provider interns them). */
typedef struct ls_pyframe {
    const char *file;
    const char *func;
    int line;
} ls_pyframe;

/* Captures the caller's native stack (frames inside libleakshim are dropped), interns it. */
ls_stack_id ls_stack_capture(void);
/* Interns a raw native stack (used by capture and by unit tests). */
ls_stack_id ls_stack_intern(void *const *frames, int n);
ls_stack_id ls_pystack_intern(const ls_pyframe *frames, int n);
/* Set by hook_python.c when the host is CPython: returns the current Python stack, 0 if none. */
extern ls_stack_id (*ls_pystack_hook)(void);
ls_stack_id ls_pystack_capture(void); /* calls the hook if set */

typedef struct ls_stack {
    ls_stack_id id;
    uint32_t hash;
    int n;
    int is_py;
    uint64_t created;     /* how many sockets/handles were created from this stack */
    void **frames;        /* native */
    ls_pyframe *pyframes; /* python */
} ls_stack;
const ls_stack *ls_stack_get(ls_stack_id id);
void ls_stack_count(ls_stack_id id); /* +1 creation */
size_t ls_stack_total(void);         /* number of interned stacks */

/* Report-time symbolization of one native frame. Never in a signal handler. */
typedef struct ls_sym {
    char module[LS_PATH_LEN];
    uintptr_t offset; /* pc - module load base */
    char build_id[41];
    char symbol[128];
    uintptr_t sym_off;
    char src_file[LS_PATH_LEN]; /* source file from debug info, "" when unknown */
    int src_line;               /* 0 when unknown */
    int inlined;                /* 1: a function inlined into the next entry (ls_symbolize_frames) */
} ls_sym;
void ls_symbolize(void *pc, ls_sym *out);
/* One return address as the frames a person would see: the functions inlined at pc (innermost
 * first, inlined = 1) then the function that contains it. Fills up to max entries, returns how
 * many (at least 1). Report time only. */
int ls_symbolize_frames(void *pc, ls_sym *out, int max);
/* Is this frame inside libleakshim itself (skipped when capturing)? */
int ls_frame_is_self(void *pc);
void ls_stack_lock_all(void);        /* atfork prepare */
void ls_stack_unlock_all(int child); /* atfork parent/child */
void ls_stack_init_self(void);       /* constructor: learn the shim's own text range */

/* ---------------------------------------------------------------- registry (registry.c) */
/* The drivers: one row each in drivers.def, which says how to add one. */
enum ls_driver {
#define DRIVER(id, name, service, client_type, pool_type) LS_DRV_##id,
#include "drivers.def"
#undef DRIVER
    LS_DRV_COUNT
};
const char *ls_driver_name(int drv);
const char *ls_handle_type(int driver, int kind); /* "PGconn", "mongoc_client_pool_t", ... */

enum ls_state {
    LS_ST_IN_USE = 0, /* open, owned by a live handle or by nobody known */
    LS_ST_IDLE_IN_POOL,
    LS_ST_CHECKED_OUT,
    LS_ST_ORPHANED,   /* its handle was freed but the socket is still open */
    LS_ST_BACKGROUND, /* driver's own monitoring socket */
    LS_ST_COUNT
};
const char *ls_state_name(int st);

enum ls_hkind { LS_HK_CLIENT = 0, LS_HK_POOL };

/* Attribution context: sockets connected by this thread while a context is set are database
 * sockets (whatever their address) owned by ctx.driver / ctx.handle / ctx.pool. handle may be 0
 * when the driver call has not returned its handle yet; ls_handle_adopt_pending() then links
 * them. Contexts nest (push returns the previous one, pop restores it). */
typedef struct ls_ctx {
    int driver;
    uintptr_t handle;
    uintptr_t pool;
    int background;
    /* The Python stack captured for the first socket of this driver call, reused by its other
     * sockets and by the handle the call returns: one walk per connect (ls_handle_open_after).
     * Native stacks are not shared: a socket's starts deep inside the driver, a handle's at the
     * program's call. */
    ls_stack_id pystack;
    uint64_t attr; /* the attribution read with pystack */
} ls_ctx;
ls_ctx ls_ctx_push(int driver, uintptr_t handle, uintptr_t pool, int background);
void ls_ctx_pop(ls_ctx prev);
ls_ctx ls_ctx_current(void);

void ls_registry_init(void);
/* Called (outside the lock, on the host's thread) each time a socket or handle is tracked: the
 * runtime starts the reporter thread the first time and keeps its channel open. A pointer, so the
 * core does not depend on the runtime (unit tests leave it NULL). */
extern void (*ls_on_track)(void);
/* 1 in the process that owns the registry; 0 in a vfork child, which shares our memory and must
 * not change it (its close() of an inherited socket is not the parent's). */
int ls_registry_owner(void);
/* Socket events from hook_socket.c (call after the real call succeeded). */
void ls_on_connect(int fd, const struct sockaddr *addr, socklen_t len);
void ls_on_close(int fd); /* call BEFORE the real close (forget-before-close rule) */
void ls_on_close_range(unsigned lo, unsigned hi);
void ls_on_dup(int oldfd, int newfd); /* newfd now refers to oldfd's socket */
void ls_on_socket_new(int fd);        /* a fresh fd number: drop any stale entry with that number */
int ls_registry_ever_tracked(void);   /* anything recorded in this process (or before its fork) */
int ls_fd_tracked(int fd);            /* lock-free quick check */
void ls_on_fork_child(void);
/* Sockets shared across fork (forkshare.c): the fork() hook calls prepare in the parent before
 * the real fork; where ls_fs_watch is set (this process inherited tracked sockets) the send/write
 * hooks call use(fd) before the real call. */
extern int ls_fs_watch;
void ls_forkshare_prepare(void);
void ls_forkshare_use(int fd);

/* Driver handles and pools (hook_libpq.c, hook_hiredis.c, hook_mongoc.c, hook_mysql.c,
 * hook_python.c). All keys are the handle's address (or a Python object's id). */
void ls_handle_open(int driver, int kind, uintptr_t h, uintptr_t pool);
/* The same, for a handle returned by the driver call whose ctx was just popped: takes the Python
 * stack that call captured for its sockets instead of walking it again. */
void ls_handle_open_after(int driver, int kind, uintptr_t h, uintptr_t pool);
void ls_handle_close(uintptr_t h);                       /* the driver freed it */
void ls_handle_adopt_fd(uintptr_t h, int fd);            /* fd's socket belongs to h */
void ls_handle_adopt_pending(uintptr_t h);               /* sockets this thread connected in a ctx with handle 0 */
void ls_handle_release_fd(uintptr_t h, int fd);          /* driver keeps fd open but h no longer owns it */
void ls_pool_checkout(uintptr_t pool, uintptr_t client); /* captures the checkout stack */
void ls_pool_checkin(uintptr_t pool, uintptr_t client);
int ls_handle_known(uintptr_t h);

/* Report-time view of the registry: copied under the lock after every entry was checked against
 * the kernel (stored inode vs fstat now), so reports never hold the registry lock while they
 * symbolize or write. Free with ls_registry_snapshot_free(). */
typedef struct ls_conn_view {
    int fd; /* lowest live fd */
    int fds[8];
    int nfds;
    uint64_t ino;
    struct sockaddr_storage peer;
    socklen_t peerlen;
    struct sockaddr_storage local; /* filled by snapshots with kernel_check >= 1; locallen 0 = unknown */
    socklen_t locallen;
    int driver;
    uintptr_t handle, pool;
    int state; /* enum ls_state */
    int background, inherited;
    int before_attach; /* found open by `leakshim attach` (no stack) */
    double created;    /* realtime */
    double idle;       /* seconds since last data (TCP_INFO), -1 unknown */
    int shared;        /* created before a fork: processes other than its creator that used it since */
    int used_here;     /* inherited, and used by this process: shared across fork */
    int tid;
    ls_stack_id stack, pystack;
    uint64_t attr, seq; /* attribution at creation (attrib.c), creation number */
} ls_conn_view;

typedef struct ls_handle_view {
    uintptr_t handle;
    int driver, kind;
    uintptr_t pool;
    int freed, inherited;
    int open_socks;   /* sockets open now */
    int socks_ever;   /* sockets ever attributed */
    int closed_socks; /* closed while attached */
    int moved_socks;  /* re-attributed to another handle (e.g. Python wrapper) */
    int checked_out;
    double created, checkout_time;
    ls_stack_id stack, pystack, co_stack, co_pystack;
    int tid;
    uint64_t attr, seq, co_attr, co_seq; /* at creation, at the last checkout (attrib.c) */
} ls_handle_view;

typedef struct ls_snapshot {
    ls_conn_view *conns;
    size_t nconns;
    ls_handle_view *handles;
    size_t nhandles;
    uint64_t closed_behind; /* entries dropped by the kernel check */
} ls_snapshot;
/* kernel_check: 0 = none (cheap, for live warnings), 1 = verify every fd against the kernel,
 * 2 = also read TCP_INFO for idle times (snapshots). */
int ls_registry_snapshot(ls_snapshot *s, int kernel_check);
int ls_registry_checked_out(void); /* clients checked out now (cheap) */
void ls_registry_snapshot_free(ls_snapshot *s);
/* Marks the checkout of client as warned; returns 1 if it was not warned before. */
int ls_checkout_mark_warned(uintptr_t client, double checkout_time);
/* Service name for a socket ("PostgreSQL", "Redis", ...), from driver, port or path. */
const char *ls_service_name(int driver, const struct sockaddr *sa, socklen_t len);
int ls_classify(const struct sockaddr *sa, socklen_t len); /* 1 if the address is a database's */
void ls_registry_lock_all(void);                           /* atfork prepare */
void ls_registry_unlock_all(int child);                    /* atfork parent/child */

/* ---------------------------------------------------------------- many sockets at once (sockdiag.c, rawio.c)
 * Snapshots of many live sockets (registry.c): the per-fd kernel check in batches, each socket's
 * local address and idle time asked on the fd just checked or taken from sock_diag dumps, and
 * printf-free formatting for renderers that write a line per socket. */

/* The host's fds checked one after another (the registry's kernel check): the socket inode behind
 * each, and an fd this thread may use for that socket until the next call. On a thread that shares
 * the host's fd table that is n itself (one fstat); on the reporter thread (ls_fds_private) a
 * pidfd_getfd duplicate, fstat'ed, and closed with its neighbours in one close_range when the
 * batch is full or ends. Returns 1 (a socket: *ino, *usable set), 0 (n is closed or not a socket). */
#define LS_HOSTFDS_BATCH 256
typedef struct ls_hostfds {
    int dups[LS_HOSTFDS_BATCH];
    int ndups;
    unsigned flushes; /* a usable fd given before the count changed is closed */
} ls_hostfds;
int ls_hostfds_sock(ls_hostfds *b, int n, uint64_t *ino, int *usable);
void ls_hostfds_end(ls_hostfds *b); /* closes the duplicates; every usable fd given is gone */

/* Formatting without printf (rawio.c), for renderers that write a line per socket. */
void ls_buf_put(ls_buf *b, const char *s, size_t n); /* n bytes of s */
void ls_buf_u64(ls_buf *b, uint64_t v);              /* %llu */
void ls_buf_i64(ls_buf *b, int64_t v);               /* %lld */
void ls_buf_hex(ls_buf *b, uint64_t v);              /* %#llx: "0", "0x7f..." */
/* An address as text, as snprintf + inet_ntop write it: "1.2.3.4:5432", "[::1]:5432" (glibc's
 * inet_ntop forms, IPv4-mapped included), a path, "@abstract", "?" (len 0), "family N". Writes at
 * most cap - 1 characters and a NUL; returns the length written. */
size_t ls_addr_format(char *out, size_t cap, const struct sockaddr_storage *ss, socklen_t len);
void ls_buf_addr(ls_buf *b, const struct sockaddr_storage *ss, socklen_t len);

/* Socket facts by inode from NETLINK_SOCK_DIAG dumps: inet_diag for TCP (IPv4, IPv6) and
 * unix_diag, for the sockets of the calling thread's network namespace. Only the inodes asked for
 * are kept. It cannot say which fd holds a socket: that is the kernel check's job. */
#define LS_SD_MAX_PORTS 16 /* TCP dumps filter on up to this many peer ports */
enum { LS_SD_TCP4 = 1, LS_SD_TCP6 = 2, LS_SD_UNIX = 4, LS_SD_ALL = 7, LS_SD_INFO = 8 /* tcp_info: idle */ };
typedef struct ls_sockdiag_ent {
    uint64_t ino;
    int family; /* AF_INET, AF_INET6 (TCP) or AF_UNIX */
    int state;  /* TCP_* (unix: TCP_ESTABLISHED, TCP_LISTEN or TCP_CLOSE) */
    int found;  /* facts present: from a dump, or written by the caller (the registry asks per socket) */
    struct sockaddr_storage local; /* as getsockname returns it, locallen bytes */
    socklen_t locallen;
    socklen_t peerlen; /* TCP: as getpeername returns it; unix: 0 (see peer_ino) */
    struct sockaddr_storage peer;
    uint64_t peer_ino; /* unix: the peer socket's inode, 0 if none */
    double idle;       /* TCP, dumped with LS_SD_INFO: seconds since data last moved; else -1 */
} ls_sockdiag_ent;
typedef struct ls_sockdiag {
    ls_sockdiag_ent *ents; /* the inodes asked for, in order */
    size_t n, cap, found;
    uint32_t *slots; /* open addressing on the inode: index + 1, 0 empty */
    int bits;
    unsigned what; /* LS_SD_TCP4/TCP6/UNIX: the dumps the recorded peers call for */
    uint16_t ports[LS_SD_MAX_PORTS];
    int nports, tcp_ports_ok;
} ls_sockdiag;
int ls_sockdiag_init(ls_sockdiag *t, size_t cap); /* room for cap inodes; -1 out of memory */
/* Asks for inode ino; peer (as recorded at connect) selects the dump and the TCP port filter. */
int ls_sockdiag_want(ls_sockdiag *t, uint64_t ino, const struct sockaddr *peer, socklen_t peerlen);
/* Runs the dumps among flags (LS_SD_*) that the wanted sockets need. Returns how many dumps the
 * kernel answered, -1 if none (netlink refused): callers then ask per socket. */
int ls_sockdiag_fill(ls_sockdiag *t, unsigned flags);
const ls_sockdiag_ent *ls_sockdiag_find(const ls_sockdiag *t, uint64_t ino); /* NULL: not seen */
long ls_sockdiag_index(const ls_sockdiag *t, uint64_t ino);                  /* index in ents of a wanted inode, -1 */
void ls_sockdiag_free(ls_sockdiag *t);
/* registry.c: 1 = snapshots take local addresses and idle times from sock_diag first; 0 (default)
 * = per socket, on the fd the kernel check has just verified (faster where measured: registry.c). */
extern int ls_snapshot_sockdiag;

/* ---------------------------------------------------------------- reports (report_*.c, ls_report.h)
 * A model built from a registry snapshot (report_model.c), rendered as text or JSON, written by
 * report_emit.c. */
/* Takes the exit report once (later calls do nothing); returns the number of unsuppressed
 * leaks found. Quiet when nothing leaked (unless report= names a path, or verbosity=2). Python
 * calls this from its own atexit, the C atexit handler afterwards. */
int ls_report_exit(void);
int ls_report_exit_says_nothing(void); /* nothing tracked, quiet destination: no report to build */
void ls_report_snapshot(void);         /* `kill -USR2` dump: to the report destination */
/* `leakshim dump`: into b, for the private channel; sockets: one text line per socket. */
void ls_report_snapshot_to(ls_buf *b, int json, int sockets);
void ls_report_check_thresholds(void); /* live warnings; called by the reporter thread */
int ls_exit_leaks(void);               /* leaks counted by the exit report (-1 if not taken) */
/* Builds a report from the live registry into text and/or json (either may be NULL; unit tests
 * and benchmarks). kind: 0 exit, 1 snapshot. Unlike ls_report_exit, always renders. */
void ls_report_build(ls_buf *text, ls_buf *json, int kind, int *leaks_out);
void ls_timeline_sample(void); /* reporter thread, every `interval` seconds */
void ls_report_reset_after_fork(void);

/* ---------------------------------------------------------------- suppressions (suppress.c)
 * LSan's file format: one `leak:PATTERN` per line, `#` comments, blank lines; a pattern matches
 * a function name, module path, Python file or function anywhere unless anchored with ^ or $.
 * Patterns are added to the ones already loaded. Never in a signal handler (malloc, a mutex).
 * Each file gets at most one warning line, so a wrong file cannot flood stderr. */
#define LS_SUPP_MAX_FILE (1 << 20)          /* a larger file is refused: nobody writes 1 MiB of patterns */
#define LS_SUPP_MAX_PATTERN 1024            /* a longer pattern is a bad line (fnmatch cost grows with it) */
int ls_suppressions_load(const char *path); /* number of patterns, -1 on error (warned) */
/* The parser behind load(), on a buffer (NUL bytes refuse it: not a text file); name is only
 * used in the warning. Returns the number of patterns added, -1 if the buffer was refused. */
int ls_suppressions_parse(const char *data, size_t len, const char *name);
int ls_suppressions_add(const char *pattern); /* 0, or -1 if refused (empty: ^, $, ^$; too long) */
void ls_suppressions_clear(void);
int ls_suppressions_count(void);
const char *ls_suppressions_pattern(int i);  /* as written, for tests; NULL if out of range */
int ls_suppressions_match(const char *name); /* 1 if a pattern matches name */
/* 1 if a pattern matches any frame of the stack (symbol or module; Python file or function). */
int ls_stack_suppressed(ls_stack_id id);
void ls_suppressions_atfork(int phase); /* 0 prepare, 1 parent, 2 child */
/* Copies s[0..len) into out (cap bytes, NUL-terminated) as one printable line: \n \r \t \\ and
 * \xNN for other bytes outside 0x20-0x7e; cut at a whole escape with "..." if it does not fit.
 * Returns strlen(out). For echoing user input in warnings (options.c). */
size_t ls_escape(char *out, size_t cap, const char *s, size_t len);

/* ---------------------------------------------------------------- runtime (init.c) */
void ls_init(void);             /* idempotent; constructor and first hook */
void ls_after_fork_child(void); /* fork() hook, child side, normal context */

/* ---------------------------------------------------------------- reporter thread (reporter.c) */
void ls_trigger_dump(void);      /* async-signal-safe: the reporter dumps at its next tick */
int ls_take_dump_request(void);  /* 1 if a dump was asked for (and clears the request) */
int ls_dump_requested(void);     /* the same, without clearing it */
void ls_reporter_start(void);    /* once per process */
void ls_reporter_on_track(void); /* something was tracked: channel open, thread started */
int ls_reporter_started(void);
void ls_reporter_after_fork(void);       /* atfork child: async-signal-safe */
void ls_reporter_restart_in_child(void); /* fork() hook, child side */

/* ---------------------------------------------------------------- attach (hook_attach.c, registry.c)
 * `leakshim attach PID` loads the shim into a running process; `leakshim detach PID` pauses it
 * (the library is never unloaded: a hook may be running on another thread). */
extern int ls_paused;         /* detached: nothing new is recorded, hooks pass through */
extern double ls_attached_at; /* realtime of the (last) attach; 0 = loaded at start (preloaded) */
/* A socket found open at attach time: tracked with no stack, marked before_attach. Its fd is
 * checked (fstat) here; a socket already tracked is left alone. Returns 1 if it was added. */
int ls_on_existing_socket(int fd, const struct sockaddr *peer, socklen_t len);
/* ---------------------------------------------------------------- attribution contexts (attrib.c)
 * A label (test id, request route) and a phase, interned into an id recorded by every socket,
 * handle and checkout at creation. An attribution value: id in the low 32 bits, an instance
 * number (which request) in the high 32 bits; 0 = none. Never in a signal handler (intern). */
uint32_t ls_attr_intern(const char *label, const char *phase); /* 0 if label is empty or no memory */
const char *ls_attr_label(uint64_t a);                         /* NULL for 0 or unknown */
const char *ls_attr_phase(uint64_t a);
void ls_attr_set_thread(uint64_t a); /* this thread's value (C API) */
uint64_t ls_attr_thread(void);
void ls_attr_set_process(uint64_t a); /* every thread's fallback */
/* The value a creation records now: the Python hook's (task-local), this thread's, the process's. */
uint64_t ls_attr_current(void);
/* Set by hook_python.c: the ContextVar value read during this thread's last Python stack capture
 * (which it clears), 0 if none. Called right after ls_pystack_capture(). */
extern uint64_t (*ls_attr_py_hook)(void);
uint64_t ls_seq_next(void); /* numbers each creation and checkout: 1, 2, ... */
uint64_t ls_seq_now(void);  /* the last number given */
void ls_attr_atfork(int phase);
/* Reports on what was created in given ranges of the sequence and is still live (report_emit.c):
 * ranges are nranges pairs (lo, hi], hi 0 = no end. Built as an exit report over those sockets
 * and handles only; json/text may be NULL. Returns 0, -1 out of memory. */
int ls_report_live_in(const uint64_t *ranges, size_t nranges, ls_buf *json, ls_buf *text, int *leaks);
/* The program's exit status when known (main's return value or an exit() call), else -1
 * (exitpolicy.c; set by hook_exit.c). */
int ls_exit_status(void);
void ls_exit_status_set(int status);
void ls_exitpolicy_init(void); /* constructor: notes the environment we started with */
/* 1 in a process exec'ed by a test of a suite running under the shim (children= applies). */
int ls_suite_child(void);
/* PYTEST_CURRENT_TEST as this process inherited it ("" if not): a test of the parent's, which
 * names nothing this process creates (hook_python.c skips it). */
const char *ls_inherited_test(void);
enum ls_children { LS_CHILD_FILE, LS_CHILD_REPORT, LS_CHILD_GATE };

#endif

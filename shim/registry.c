/* The registry: live tracked sockets (keyed by socket inode, so a dup'ed or reused fd number is
 * never confused with the original) and driver handles/pools (keyed by address). One mutex, never
 * held while calling out (stack capture and symbolization happen outside it); untracked fds are
 * rejected lock-free through fdtab. */
#include "registry_int.h"

#include <fnmatch.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FDTAB_MAX (1 << 20)
static conn **fdtab; /* fd -> conn, read lock-free by ls_fd_tracked */
static fd_over *fdover;
conn *ls_reg_conns;
handle *ls_reg_handles;
pthread_mutex_t ls_reg_lock = PTHREAD_MUTEX_INITIALIZER;
uint64_t ls_reg_closed_behind;

static LS_TLS ls_ctx tls_ctx;
static LS_TLS uint64_t tls_pending[8]; /* inodes connected in a ctx whose handle was not known yet */
static LS_TLS int tls_npending;
static LS_TLS int tls_tid;

void (*ls_on_track)(void);
int ls_paused;
double ls_attached_at;
static pid_t owner_pid; /* 0 until ls_registry_init (unit tests): every caller is the owner */

/* A raw getpid: only on paths that change the registry (a tracked fd closes, a socket connects),
 * never on an untracked close. */
int ls_registry_owner(void)
{
    pid_t o = __atomic_load_n(&owner_pid, __ATOMIC_RELAXED);
    return o == 0 || (pid_t)syscall(SYS_getpid) == o;
}
#define OWNER_OR_RETURN(...)                                                                                           \
    do {                                                                                                               \
        if (LS_UNLIKELY(!ls_registry_owner()))                                                                         \
            return __VA_ARGS__;                                                                                        \
    } while (0)

static int ever_tracked; /* a socket or handle was recorded (inherited by a forked child) */

int ls_registry_ever_tracked(void)
{
    return __atomic_load_n(&ever_tracked, __ATOMIC_ACQUIRE);
}

static void tracked(void)
{
    __atomic_store_n(&ever_tracked, 1, __ATOMIC_RELEASE);
    if (ls_on_track)
        ls_on_track();
}

void ls_registry_init(void)
{
    owner_pid = (pid_t)syscall(SYS_getpid);
    if (fdtab)
        return;
    void *p = mmap(NULL, FDTAB_MAX * sizeof(conn *), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED)
        fdtab = p;
}

conn *ls_reg_fd_get(int fd)
{
    if (fd < 0)
        return NULL;
    if (fdtab && fd < FDTAB_MAX)
        return __atomic_load_n(&fdtab[fd], __ATOMIC_ACQUIRE);
    fd_over *o;
    HASH_FIND_INT(fdover, &fd, o);
    return o ? o->c : NULL;
}

static void fd_set_conn(int fd, conn *c)
{
    if (fdtab && fd < FDTAB_MAX) {
        __atomic_store_n(&fdtab[fd], c, __ATOMIC_RELEASE);
        return;
    }
    fd_over *o;
    HASH_FIND_INT(fdover, &fd, o);
    if (c) {
        if (!o && (o = calloc(1, sizeof *o))) {
            o->fd = fd;
            ls_hash_oom = 0;
            HASH_ADD_INT(fdover, fd, o);
            if (ls_hash_oom) {
                ls_hash_oom = 0;
                free(o);
                return;
            }
        }
        if (o)
            o->c = c;
    } else if (o) {
        HASH_DEL(fdover, o);
        free(o);
    }
}

/* Lock-free: the common close() of a file or an untracked socket costs one load. Tracked fds
 * above FDTAB_MAX (rare) answer 1 so the caller takes the locked path. */
int ls_fd_tracked(int fd)
{
    if (fd < 0)
        return 0;
    if (LS_LIKELY(fdtab && fd < FDTAB_MAX))
        return __atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED) != NULL;
    return fdover != NULL;
}

handle *ls_reg_handle_get(uintptr_t h)
{
    handle *e;
    HASH_FIND(hh, ls_reg_handles, &h, sizeof h, e);
    return e;
}

static void handle_maybe_drop(handle *h)
{
    if (h && h->freed && h->open_socks <= 0) {
        HASH_DEL(ls_reg_handles, h);
        free(h);
    }
}

uint64_t ls_reg_closed_by_driver[LS_DRV_COUNT];

static void conn_free(conn *c)
{
    HASH_DEL(ls_reg_conns, c);
    if (c->driver >= 0 && c->driver < LS_DRV_COUNT)
        ls_reg_closed_by_driver[c->driver]++; /* the timeline's and metrics' created/closed totals */
    if (c->handle) {
        handle *h = ls_reg_handle_get(c->handle);
        if (h) {
            h->open_socks--;
            h->closed_socks++;
            handle_maybe_drop(h);
        }
    }
    free(c->fds);
    free(c);
}

/* Caller holds ls_reg_lock. */
void ls_reg_unmap_fd(int fd)
{
    conn *c = ls_reg_fd_get(fd);
    if (!c)
        return;
    fd_set_conn(fd, NULL);
    for (int i = 0; i < c->nfds; i++) {
        if (c->fds[i] == fd) {
            c->fds[i] = c->fds[--c->nfds];
            break;
        }
    }
    if (c->nfds == 0)
        conn_free(c);
}

static int map_fd(int fd, conn *c)
{
    if (c->nfds == c->capfds) {
        int nc = c->capfds ? c->capfds * 2 : 2;
        int *n = realloc(c->fds, (size_t)nc * sizeof *n);
        if (!n)
            return -1;
        c->fds = n;
        c->capfds = nc;
    }
    c->fds[c->nfds++] = fd;
    fd_set_conn(fd, c);
    return 0;
}

static int my_tid(void)
{
    if (!tls_tid)
        tls_tid = (int)gettid();
    return tls_tid;
}

/* ------------------------------------------------------------------ attribution context */

/* Python stack (and attribution) of the outermost driver call this thread left last;
 * ls_handle_open_after takes them. */
static LS_TLS ls_stack_id tls_last_pystack;
static LS_TLS uint64_t tls_last_attr;

ls_ctx ls_ctx_push(int driver, uintptr_t h, uintptr_t pool, int background)
{
    ls_ctx prev = tls_ctx;
    tls_ctx.driver = driver;
    tls_ctx.handle = h;
    tls_ctx.pool = pool;
    tls_ctx.background = background;
    tls_ctx.pystack = 0;
    tls_ctx.attr = 0;
    if (!prev.driver) {
        tls_npending = 0;
        tls_last_pystack = 0;
        tls_last_attr = 0;
    }
    return prev;
}

void ls_ctx_pop(ls_ctx prev)
{
    if (!prev.driver) {
        tls_last_pystack = tls_ctx.pystack;
        tls_last_attr = tls_ctx.attr;
    } else if (!prev.pystack) { /* the enclosing call's sockets get it too */
        prev.pystack = tls_ctx.pystack;
        prev.attr = tls_ctx.attr;
    }
    tls_ctx = prev;
}

ls_ctx ls_ctx_current(void)
{
    return tls_ctx;
}

/* ------------------------------------------------------------------ socket events */

static void stale_locked(void *arg)
{
    pthread_mutex_lock(&ls_reg_lock);
    if (ls_reg_fd_get(*(const int *)arg)) {
        ls_reg_closed_behind++;
        ls_reg_unmap_fd(*(const int *)arg);
    }
    pthread_mutex_unlock(&ls_reg_lock);
}

void ls_on_socket_new(int fd)
{
    if (LS_LIKELY(!ls_fd_tracked(fd)))
        return;
    OWNER_OR_RETURN();
    /* The number was closed behind our back (syscall, fclose of an unknown FILE...) and reused. */
    ls_on_private_stack(stale_locked, &fd);
}

static void attach_locked(conn *c, uintptr_t h)
{
    handle *e = ls_reg_handle_get(h);
    if (!e || c->handle == h)
        return;
    if (c->handle) {
        handle *old = ls_reg_handle_get(c->handle);
        if (old) {
            old->open_socks--;
            old->moved_socks++;
            handle_maybe_drop(old);
        }
    }
    c->handle = h;
    c->pool = e->kind == LS_HK_POOL ? h : e->pool; /* a pool's own (monitor) socket */
    if (c->driver == LS_DRV_NONE)
        c->driver = e->driver;
    e->open_socks++;
    e->socks_ever++;
}

struct connect_args {
    int fd;
    const struct sockaddr *addr;
    socklen_t len;
    int decide; /* not known yet to be a database socket: classify first */
};
static void record_connect(void *arg);

/* Whether a connected socket that no driver call made is tracked: its peer (port or socket path),
 * or with track=all any stream socket. */
static int is_db_socket(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (ls_classify(addr, len))
        return 1;
    if (ls_opt.track != LS_TRACK_ALL || !addr ||
        !(addr->sa_family == AF_INET || addr->sa_family == AF_INET6 || addr->sa_family == AF_UNIX))
        return 0;
    int type = 0;
    socklen_t tl = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM;
}

void ls_on_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    OWNER_OR_RETURN();
    if (LS_UNLIKELY(__atomic_load_n(&ls_paused, __ATOMIC_RELAXED))) {
        ls_on_socket_new(fd); /* detached: record nothing new, but drop a stale entry */
        return;
    }
    /* A TCP peer is classified here (its port, no libc call); a socket path (fnmatch) or the
     * socket type (track=all) is decided on the private stack, with the rest. */
    int decide = !tls_ctx.driver && (ls_opt.track == LS_TRACK_ALL || (addr && addr->sa_family == AF_UNIX));
    if (!tls_ctx.driver && !decide && !ls_classify(addr, len)) {
        ls_on_socket_new(fd); /* a stale entry under this number is dead */
        return;
    }
    /* Stacks, allocation and a first-time thread start: on a private stack, not the host's. */
    struct connect_args a = {fd, addr, len, decide};
    ls_on_private_stack(record_connect, &a);
}

static void record_connect(void *arg)
{
    const struct connect_args *a = arg;
    int fd = a->fd;
    const struct sockaddr *addr = a->addr;
    socklen_t len = a->len;
    if (a->decide && !is_db_socket(fd, addr, len)) {
        ls_on_socket_new(fd); /* a stale entry under this number is dead */
        return;
    }
    ls_ctx ctx = tls_ctx;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    /* Stacks before the lock: capture may take the loader lock, and the Python hook the GIL. A
     * driver call's later sockets reuse its first one's Python stack (and the attribution read
     * with it); when the Python stack names the line, the native unwind through the interpreter
     * adds nothing but cost. */
    ls_stack_id pystack;
    uint64_t attr;
    if (ctx.driver && ctx.pystack) {
        pystack = ctx.pystack;
        attr = ctx.attr;
    } else {
        pystack = ls_pystack_capture();
        attr = ls_attr_current();
        if (ctx.driver) {
            tls_ctx.pystack = pystack;
            tls_ctx.attr = attr;
        }
    }
    ls_stack_id stack = pystack ? 0 : ls_stack_capture();
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->ino = (uint64_t)st.st_ino;
    if (addr && len > 0) {
        c->peerlen = len > sizeof c->peer ? sizeof c->peer : len;
        memcpy(&c->peer, addr, c->peerlen);
    }
    c->driver = ctx.driver;
    c->pool = ctx.pool;
    c->background = ctx.background;
    c->created = ls_now();
    c->tid = my_tid();
    c->stack = stack;
    c->pystack = pystack;
    c->attr = attr;
    c->seq = ls_seq_next();

    pthread_mutex_lock(&ls_reg_lock);
    if (ls_reg_fd_get(fd))
        ls_reg_unmap_fd(fd); /* connect() again on a tracked fd, or a stale entry */
    conn *old;
    HASH_FIND(hh, ls_reg_conns, &c->ino, sizeof c->ino, old);
    if (old) /* same socket reached under another fd (dup we missed): keep one record */
        conn_free(old);
    ls_hash_oom = 0;
    HASH_ADD(hh, ls_reg_conns, ino, sizeof c->ino, c);
    if (ls_hash_oom) {
        ls_hash_oom = 0;
        pthread_mutex_unlock(&ls_reg_lock);
        free(c);
        return;
    }
    if (map_fd(fd, c) < 0) {
        HASH_DEL(ls_reg_conns, c);
        pthread_mutex_unlock(&ls_reg_lock);
        free(c);
        return;
    }
    if (ctx.handle)
        attach_locked(c, ctx.handle);
    else if (ctx.driver && tls_npending < (int)(sizeof tls_pending / sizeof tls_pending[0]))
        tls_pending[tls_npending++] = c->ino;
    pthread_mutex_unlock(&ls_reg_lock);
    /* Churn is counted per creating stack; a socket opened inside a driver call is counted
     * through its handle's creation stack instead (its own starts deep inside the driver). */
    if (!ctx.driver)
        ls_stack_count(pystack ? pystack : stack); /* a Python stack alone says where */
    tracked();
}

/* `leakshim attach`: a socket the process opened before the shim was loaded. No stack (nobody saw
 * it being created); its creation time is unknown, so the attach time stands in for it. Runs on
 * the attaching thread (hook_attach.c), not in a hook. */
int ls_on_existing_socket(int fd, const struct sockaddr *peer, socklen_t len)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        return 0;
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return 0;
    c->ino = (uint64_t)st.st_ino;
    if (peer && len > 0) {
        c->peerlen = len > sizeof c->peer ? sizeof c->peer : len;
        memcpy(&c->peer, peer, c->peerlen);
    }
    c->created = ls_attached_at > 0 ? ls_attached_at : ls_now();
    c->before_attach = 1;
    pthread_mutex_lock(&ls_reg_lock);
    conn *byfd = ls_reg_fd_get(fd), *byino;
    HASH_FIND(hh, ls_reg_conns, &c->ino, sizeof c->ino, byino);
    if (byfd && byfd != byino)
        ls_reg_unmap_fd(fd); /* a stale entry under this number */
    if (byino) {             /* known already (tracked, or another fd of the same socket) */
        if (byfd != byino)
            map_fd(fd, byino);
        pthread_mutex_unlock(&ls_reg_lock);
        free(c);
        return 0;
    }
    ls_hash_oom = 0;
    HASH_ADD(hh, ls_reg_conns, ino, sizeof c->ino, c);
    if (ls_hash_oom || map_fd(fd, c) < 0) {
        if (!ls_hash_oom)
            HASH_DEL(ls_reg_conns, c);
        ls_hash_oom = 0;
        pthread_mutex_unlock(&ls_reg_lock);
        free(c);
        return 0;
    }
    pthread_mutex_unlock(&ls_reg_lock);
    tracked();
    return 1;
}

/* Called before the real close (forget-before-close), so another thread cannot be handed the same
 * number and connect it before we drop the old entry. */
/* Closing, dup'ing or renumbering a tracked fd frees and grows records: on a private stack, where
 * malloc and free (and the loader binding them on first use) do not use the host's. */
static void close_locked(void *arg)
{
    pthread_mutex_lock(&ls_reg_lock);
    ls_reg_unmap_fd(*(const int *)arg);
    pthread_mutex_unlock(&ls_reg_lock);
}

void ls_on_close(int fd)
{
    if (LS_LIKELY(!ls_fd_tracked(fd)))
        return;
    OWNER_OR_RETURN();
    ls_on_private_stack(close_locked, &fd);
}

static void close_range_locked(void *arg)
{
    unsigned lo = ((const unsigned *)arg)[0], hi = ((const unsigned *)arg)[1];
    pthread_mutex_lock(&ls_reg_lock);
    conn *c, *tmp;
    HASH_ITER(hh, ls_reg_conns, c, tmp)
    {
        for (int i = c->nfds - 1; i >= 0 && i < c->nfds; i--) {
            unsigned fd = (unsigned)c->fds[i];
            if (fd >= lo && fd <= hi) {
                int last = c->nfds == 1;
                ls_reg_unmap_fd((int)fd);
                if (last)
                    break; /* c is freed */
            }
        }
    }
    pthread_mutex_unlock(&ls_reg_lock);
}

void ls_on_close_range(unsigned lo, unsigned hi)
{
    if (!__atomic_load_n(&ls_reg_conns, __ATOMIC_RELAXED))
        return; /* nothing tracked: nothing in any range */
    OWNER_OR_RETURN();
    unsigned range[2] = {lo, hi};
    ls_on_private_stack(close_range_locked, range);
}

static void dup_locked(void *arg)
{
    int oldfd = ((const int *)arg)[0], newfd = ((const int *)arg)[1];
    pthread_mutex_lock(&ls_reg_lock);
    if (ls_reg_fd_get(newfd))
        ls_reg_unmap_fd(newfd); /* dup2/dup3 closed it */
    conn *c = ls_reg_fd_get(oldfd);
    if (c)
        map_fd(newfd, c);
    pthread_mutex_unlock(&ls_reg_lock);
}

void ls_on_dup(int oldfd, int newfd)
{
    if (oldfd == newfd)
        return;
    if (!ls_fd_tracked(oldfd) && !ls_fd_tracked(newfd))
        return;
    OWNER_OR_RETURN();
    int fds[2] = {oldfd, newfd};
    ls_on_private_stack(dup_locked, fds);
}

/* fork child (before any other thread exists): everything in the table belongs to the parent. */
void ls_on_fork_child(void)
{
    owner_pid = (pid_t)syscall(SYS_getpid);
    conn *c, *tmp;
    HASH_ITER(hh, ls_reg_conns, c, tmp) c->inherited = 1;
    handle *h, *htmp;
    HASH_ITER(hh, ls_reg_handles, h, htmp) h->inherited = 1;
    ls_forkshare_child();
}

/* ------------------------------------------------------------------ ls_reg_handles and pools */

static void handle_open_with(int driver, int kind, uintptr_t h, uintptr_t pool, ls_stack_id stack, ls_stack_id pystack,
                             uint64_t attr);

struct handle_args {
    int driver, kind;
    uintptr_t h, pool;
    ls_stack_id pystack; /* 0: capture it (and the attribution) */
    uint64_t attr;
};

static void record_handle(void *arg)
{
    const struct handle_args *a = arg;
    ls_stack_id pystack = a->pystack;
    uint64_t attr = a->attr;
    if (!pystack) {
        pystack = ls_pystack_capture();
        attr = ls_attr_current();
    }
    handle_open_with(a->driver, a->kind, a->h, a->pool, pystack ? 0 : ls_stack_capture(), pystack, attr);
}

void ls_handle_open(int driver, int kind, uintptr_t h, uintptr_t pool)
{
    if (!h || LS_UNLIKELY(__atomic_load_n(&ls_paused, __ATOMIC_RELAXED)))
        return;
    OWNER_OR_RETURN();
    struct handle_args a = {driver, kind, h, pool, 0, 0};
    ls_on_private_stack(record_handle, &a);
}

void ls_handle_open_after(int driver, int kind, uintptr_t h, uintptr_t pool)
{
    ls_stack_id pystack = tls_last_pystack;
    uint64_t attr = tls_last_attr;
    tls_last_pystack = 0;
    tls_last_attr = 0;
    if (!h)
        return;
    OWNER_OR_RETURN();
    struct handle_args a = {driver, kind, h, pool, pystack, attr};
    ls_on_private_stack(record_handle, &a);
}

static void handle_open_with(int driver, int kind, uintptr_t h, uintptr_t pool, ls_stack_id stack, ls_stack_id pystack,
                             uint64_t attr)
{
    handle *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->key = h;
    e->driver = driver;
    e->kind = kind;
    e->pool = pool;
    e->created = ls_now();
    e->stack = stack;
    e->pystack = pystack;
    e->tid = my_tid();
    e->attr = attr;
    e->seq = ls_seq_next();
    pthread_mutex_lock(&ls_reg_lock);
    handle *old = ls_reg_handle_get(h);
    if (old) { /* address reused after a free we did not see, or opened twice: keep the newest */
        conn *c, *tmp;
        HASH_ITER(hh, ls_reg_conns, c, tmp) if (c->handle == h) c->handle = 0;
        HASH_DEL(ls_reg_handles, old);
        free(old);
    }
    ls_hash_oom = 0;
    HASH_ADD(hh, ls_reg_handles, key, sizeof e->key, e);
    if (ls_hash_oom) {
        ls_hash_oom = 0;
        free(e);
        stack = 0;
    }
    pthread_mutex_unlock(&ls_reg_lock);
    ls_stack_count(pystack ? pystack : stack);
    tracked();
}

int ls_handle_known(uintptr_t h)
{
    pthread_mutex_lock(&ls_reg_lock);
    int known = ls_reg_handle_get(h) != NULL;
    pthread_mutex_unlock(&ls_reg_lock);
    return known;
}

void ls_handle_close(uintptr_t h)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&ls_reg_lock);
    handle *e = ls_reg_handle_get(h);
    if (e) {
        e->freed = 1;
        e->checked_out = 0;
        if (e->kind == LS_HK_POOL) { /* the pool frees its idle clients */
            handle *c, *tmp;
            HASH_ITER(hh, ls_reg_handles, c, tmp) if (c->pool == h && !c->checked_out && c != e)
            {
                c->freed = 1;
                handle_maybe_drop(c);
            }
        }
        handle_maybe_drop(e);
    }
    pthread_mutex_unlock(&ls_reg_lock);
}

void ls_handle_adopt_fd(uintptr_t h, int fd)
{
    if (fd < 0 || !h || LS_UNLIKELY(__atomic_load_n(&ls_paused, __ATOMIC_RELAXED)))
        return;
    OWNER_OR_RETURN();
    pthread_mutex_lock(&ls_reg_lock);
    conn *c = ls_reg_fd_get(fd);
    if (c)
        attach_locked(c, h);
    pthread_mutex_unlock(&ls_reg_lock);
    if (!c) {
        /* Not tracked yet (connected before the driver was known, e.g. an address we do not
         * classify): track it now as the driver's. */
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
            return;
        pthread_mutex_lock(&ls_reg_lock);
        handle *e = ls_reg_handle_get(h);
        int drv = e ? e->driver : LS_DRV_PYTHON;
        uintptr_t pool = e ? e->pool : 0;
        pthread_mutex_unlock(&ls_reg_lock);
        ls_ctx prev = ls_ctx_push(drv, h, pool, 0);
        ls_on_connect(fd, (struct sockaddr *)&ss, len);
        ls_ctx_pop(prev);
    }
}

void ls_handle_adopt_pending(uintptr_t h)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&ls_reg_lock);
    for (int i = 0; i < tls_npending; i++) {
        conn *c;
        HASH_FIND(hh, ls_reg_conns, &tls_pending[i], sizeof tls_pending[i], c);
        if (c && !c->handle)
            attach_locked(c, h);
    }
    tls_npending = 0;
    pthread_mutex_unlock(&ls_reg_lock);
}

void ls_handle_release_fd(uintptr_t h, int fd)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&ls_reg_lock);
    conn *c = ls_reg_fd_get(fd);
    if (c && c->handle == h) {
        /* keep c->handle so the report can say "handle freed, socket still open" */
        c->pool = 0;
    }
    pthread_mutex_unlock(&ls_reg_lock);
}

struct checkout_args {
    uintptr_t pool, client;
};
static void record_checkout(void *arg);

void ls_pool_checkout(uintptr_t pool, uintptr_t client)
{
    if (!client || LS_UNLIKELY(__atomic_load_n(&ls_paused, __ATOMIC_RELAXED)))
        return;
    OWNER_OR_RETURN();
    struct checkout_args a = {pool, client};
    ls_on_private_stack(record_checkout, &a);
}

static void record_checkout(void *arg)
{
    uintptr_t pool = ((const struct checkout_args *)arg)->pool, client = ((const struct checkout_args *)arg)->client;
    /* A checkout happens per request: when the Python stack names the line, the interpreter's
     * native frames add nothing but cost. */
    ls_stack_id pystack = ls_pystack_capture();
    uint64_t attr = ls_attr_current();
    ls_stack_id stack = pystack ? 0 : ls_stack_capture();
    pthread_mutex_lock(&ls_reg_lock);
    handle *e = ls_reg_handle_get(client), *p = ls_reg_handle_get(pool);
    int drv = p ? p->driver : LS_DRV_PYTHON;
    pthread_mutex_unlock(&ls_reg_lock);
    if (!e)
        handle_open_with(drv, LS_HK_CLIENT, client, pool, stack, pystack, attr);
    pthread_mutex_lock(&ls_reg_lock);
    e = ls_reg_handle_get(client);
    if (e) {
        e->pool = pool;
        e->checked_out = 1;
        e->warned = 0;
        e->checkout_time = ls_now();
        e->co_stack = stack;
        e->co_pystack = pystack;
        e->co_attr = attr;
        e->co_seq = ls_seq_next();
    }
    pthread_mutex_unlock(&ls_reg_lock);
}

void ls_pool_checkin(uintptr_t pool, uintptr_t client)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&ls_reg_lock);
    handle *e = ls_reg_handle_get(client);
    if (e) {
        e->checked_out = 0;
        if (pool)
            e->pool = pool;
    }
    pthread_mutex_unlock(&ls_reg_lock);
}

int ls_checkout_mark_warned(uintptr_t client, double checkout_time)
{
    int first = 0;
    pthread_mutex_lock(&ls_reg_lock);
    handle *e = ls_reg_handle_get(client);
    if (e && e->checked_out && e->checkout_time == checkout_time && !e->warned) {
        e->warned = 1;
        first = 1;
    }
    pthread_mutex_unlock(&ls_reg_lock);
    return first;
}

void ls_registry_lock_all(void)
{
    pthread_mutex_lock(&ls_reg_lock);
}

/* atfork parent/child: in the child the lock owner is gone, so reinitialise rather than unlock. */
void ls_registry_unlock_all(int child)
{
    if (child) {
        LS_MUTEX_REINIT(ls_reg_lock);
        tls_tid = 0;
    } else
        pthread_mutex_unlock(&ls_reg_lock);
}

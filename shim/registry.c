/* The registry: live tracked sockets (keyed by socket inode, so a dup'ed or reused fd number is
 * never confused with the original) and driver handles/pools (keyed by address). One mutex, never
 * held while calling out (stack capture and symbolization happen outside it); untracked fds are
 * rejected lock-free through fdtab. */
#include "ls_internal.h"
#include "ls_uthash.h"

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

typedef struct conn {
    uint64_t ino; /* key */
    int *fds;
    int nfds, capfds;
    struct sockaddr_storage peer;
    socklen_t peerlen;
    int driver;
    uintptr_t handle, pool;
    int background, inherited;
    double created;
    int tid;
    ls_stack_id stack, pystack;
    UT_hash_handle hh;
} conn;

typedef struct handle {
    uintptr_t key;
    int driver, kind;
    uintptr_t pool;
    int freed, inherited;
    int open_socks, socks_ever, closed_socks, moved_socks;
    int checked_out, warned;
    double created, checkout_time;
    ls_stack_id stack, pystack, co_stack, co_pystack;
    int tid;
    UT_hash_handle hh;
} handle;

typedef struct fd_over { /* fds beyond FDTAB_MAX */
    int fd;
    conn *c;
    UT_hash_handle hh;
} fd_over;

#define FDTAB_MAX (1 << 20)
static conn **fdtab; /* fd -> conn, read lock-free by ls_fd_tracked */
static fd_over *fdover;
static conn *conns;
static handle *handles;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t closed_behind;

static LS_TLS ls_ctx tls_ctx;
static LS_TLS uint64_t tls_pending[8]; /* inodes connected in a ctx whose handle was not known yet */
static LS_TLS int tls_npending;
static LS_TLS int tls_tid;

void (*ls_on_track)(void);
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

static void tracked(void)
{
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

static conn *fd_get(int fd)
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

static handle *handle_get(uintptr_t h)
{
    handle *e;
    HASH_FIND(hh, handles, &h, sizeof h, e);
    return e;
}

static void handle_maybe_drop(handle *h)
{
    if (h && h->freed && h->open_socks <= 0) {
        HASH_DEL(handles, h);
        free(h);
    }
}

static void conn_free(conn *c)
{
    HASH_DEL(conns, c);
    if (c->handle) {
        handle *h = handle_get(c->handle);
        if (h) {
            h->open_socks--;
            h->closed_socks++;
            handle_maybe_drop(h);
        }
    }
    free(c->fds);
    free(c);
}

/* Caller holds reg_lock. */
static void unmap_fd(int fd)
{
    conn *c = fd_get(fd);
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

/* ------------------------------------------------------------------ classification */

int ls_classify(const struct sockaddr *sa, socklen_t len)
{
    if (!sa || len < sizeof(sa_family_t))
        return 0;
    int port = -1;
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    if (port >= 0) {
        for (int i = 0; i < ls_opt.nports; i++)
            if (port >= ls_opt.ports[i].lo && port <= ls_opt.ports[i].hi)
                return 1;
        return 0;
    }
    if (sa->sa_family == AF_UNIX && len > offsetof(struct sockaddr_un, sun_path)) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        char path[sizeof un->sun_path + 1];
        size_t n = len - offsetof(struct sockaddr_un, sun_path);
        if (n > sizeof un->sun_path)
            n = sizeof un->sun_path;
        memcpy(path, un->sun_path, n);
        path[n] = 0;
        if (!path[0]) /* abstract socket: match the name after the NUL */
            memmove(path, path + 1, n);
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        for (int i = 0; i < ls_opt.npaths; i++)
            if (!fnmatch(ls_opt.paths[i], base, 0))
                return 1;
    }
    return 0;
}

static const struct {
    int lo, hi;
    const char *name;
} port_names[] = {
#define DATABASE_PORT(text, lo, hi, service) {lo, hi, service},
#include "drivers.def"
#undef DATABASE_PORT
};

static const struct {
    const char *glob, *name;
} path_names[] = {
#define DATABASE_PATH(glob, service) {glob, service},
#include "drivers.def"
#undef DATABASE_PATH
};

static const struct {
    const char *name, *service, *client_type, *pool_type;
} drivers[LS_DRV_COUNT] = {
#define DRIVER(id, name, service, client_type, pool_type) [LS_DRV_##id] = {name, service, client_type, pool_type},
#include "drivers.def"
#undef DRIVER
};

const char *ls_service_name(int driver, const struct sockaddr *sa, socklen_t len)
{
    if (driver > 0 && driver < LS_DRV_COUNT && drivers[driver].service)
        return drivers[driver].service;
    if (sa && len >= sizeof(struct sockaddr_in) && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
        int port = sa->sa_family == AF_INET ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
                                            : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        for (size_t i = 0; i < sizeof port_names / sizeof port_names[0]; i++)
            if (port >= port_names[i].lo && port <= port_names[i].hi)
                return port_names[i].name;
    }
    if (sa && sa->sa_family == AF_UNIX && len > offsetof(struct sockaddr_un, sun_path)) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        char path[sizeof un->sun_path + 1];
        size_t n = len - offsetof(struct sockaddr_un, sun_path);
        if (n > sizeof un->sun_path)
            n = sizeof un->sun_path;
        memcpy(path, un->sun_path, n);
        path[n] = 0;
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        for (size_t i = 0; i < sizeof path_names / sizeof path_names[0]; i++)
            if (!fnmatch(path_names[i].glob, base, 0))
                return path_names[i].name;
    }
    return "database";
}

const char *ls_handle_type(int driver, int kind)
{
    if (driver < 0 || driver >= LS_DRV_COUNT)
        driver = LS_DRV_NONE;
    return kind == LS_HK_POOL ? drivers[driver].pool_type : drivers[driver].client_type;
}

const char *ls_driver_name(int drv)
{
    return drv >= 0 && drv < LS_DRV_COUNT ? drivers[drv].name : "?";
}

const char *ls_state_name(int st)
{
    static const char *const n[LS_ST_COUNT] = {"in-use", "idle-in-pool", "checked-out", "orphaned", "background"};
    return st >= 0 && st < LS_ST_COUNT ? n[st] : "?";
}

/* ------------------------------------------------------------------ attribution context */

ls_ctx ls_ctx_push(int driver, uintptr_t h, uintptr_t pool, int background)
{
    ls_ctx prev = tls_ctx;
    tls_ctx.driver = driver;
    tls_ctx.handle = h;
    tls_ctx.pool = pool;
    tls_ctx.background = background;
    if (!prev.driver)
        tls_npending = 0;
    return prev;
}

void ls_ctx_pop(ls_ctx prev)
{
    tls_ctx = prev;
}

ls_ctx ls_ctx_current(void)
{
    return tls_ctx;
}

/* ------------------------------------------------------------------ socket events */

void ls_on_socket_new(int fd)
{
    if (LS_LIKELY(!ls_fd_tracked(fd)))
        return;
    OWNER_OR_RETURN();
    /* The number was closed behind our back (syscall, fclose of an unknown FILE...) and reused. */
    pthread_mutex_lock(&reg_lock);
    if (fd_get(fd)) {
        closed_behind++;
        unmap_fd(fd);
    }
    pthread_mutex_unlock(&reg_lock);
}

static void attach_locked(conn *c, uintptr_t h)
{
    handle *e = handle_get(h);
    if (!e || c->handle == h)
        return;
    if (c->handle) {
        handle *old = handle_get(c->handle);
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
};
static void record_connect(void *arg);

void ls_on_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    OWNER_OR_RETURN();
    int db = tls_ctx.driver != 0 || ls_classify(addr, len);
    if (!db && ls_opt.track == LS_TRACK_ALL && addr &&
        (addr->sa_family == AF_INET || addr->sa_family == AF_INET6 || addr->sa_family == AF_UNIX)) {
        int type = 0;
        socklen_t tl = sizeof type;
        db = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM;
    }
    if (!db) {
        ls_on_socket_new(fd); /* a stale entry under this number is dead */
        return;
    }
    /* Stacks, allocation and a first-time thread start: on a private stack, not the host's. */
    struct connect_args a = {fd, addr, len};
    ls_on_private_stack(record_connect, &a);
}

static void record_connect(void *arg)
{
    const struct connect_args *a = arg;
    int fd = a->fd;
    const struct sockaddr *addr = a->addr;
    socklen_t len = a->len;
    ls_ctx ctx = tls_ctx;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    /* Stacks before the lock: capture may take the loader lock, and the Python hook the GIL. */
    ls_stack_id stack = ls_stack_capture();
    ls_stack_id pystack = ls_pystack_capture();
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

    pthread_mutex_lock(&reg_lock);
    if (fd_get(fd))
        unmap_fd(fd); /* connect() again on a tracked fd, or a stale entry */
    conn *old;
    HASH_FIND(hh, conns, &c->ino, sizeof c->ino, old);
    if (old) /* same socket reached under another fd (dup we missed): keep one record */
        conn_free(old);
    ls_hash_oom = 0;
    HASH_ADD(hh, conns, ino, sizeof c->ino, c);
    if (ls_hash_oom) {
        ls_hash_oom = 0;
        pthread_mutex_unlock(&reg_lock);
        free(c);
        return;
    }
    if (map_fd(fd, c) < 0) {
        HASH_DEL(conns, c);
        pthread_mutex_unlock(&reg_lock);
        free(c);
        return;
    }
    if (ctx.handle)
        attach_locked(c, ctx.handle);
    else if (ctx.driver && tls_npending < (int)(sizeof tls_pending / sizeof tls_pending[0]))
        tls_pending[tls_npending++] = c->ino;
    pthread_mutex_unlock(&reg_lock);
    /* Churn is counted per creating stack; a socket opened inside a driver call is counted
     * through its handle's creation stack instead (its own starts deep inside the driver). */
    if (!ctx.driver)
        ls_stack_count(pystack ? pystack : stack); /* a Python stack alone says where */
    tracked();
}

/* Called before the real close (forget-before-close), so another thread cannot be handed the same
 * number and connect it before we drop the old entry. */
void ls_on_close(int fd)
{
    if (LS_LIKELY(!ls_fd_tracked(fd)))
        return;
    OWNER_OR_RETURN();
    pthread_mutex_lock(&reg_lock);
    unmap_fd(fd);
    pthread_mutex_unlock(&reg_lock);
}

void ls_on_close_range(unsigned lo, unsigned hi)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&reg_lock);
    conn *c, *tmp;
    HASH_ITER(hh, conns, c, tmp)
    {
        for (int i = c->nfds - 1; i >= 0 && i < c->nfds; i--) {
            unsigned fd = (unsigned)c->fds[i];
            if (fd >= lo && fd <= hi) {
                int last = c->nfds == 1;
                unmap_fd((int)fd);
                if (last)
                    break; /* c is freed */
            }
        }
    }
    pthread_mutex_unlock(&reg_lock);
}

void ls_on_dup(int oldfd, int newfd)
{
    if (oldfd == newfd)
        return;
    if (!ls_fd_tracked(oldfd) && !ls_fd_tracked(newfd))
        return;
    OWNER_OR_RETURN();
    pthread_mutex_lock(&reg_lock);
    if (fd_get(newfd))
        unmap_fd(newfd); /* dup2/dup3 closed it */
    conn *c = fd_get(oldfd);
    if (c)
        map_fd(newfd, c);
    pthread_mutex_unlock(&reg_lock);
}

/* fork child (before any other thread exists): everything in the table belongs to the parent. */
void ls_on_fork_child(void)
{
    owner_pid = (pid_t)syscall(SYS_getpid);
    conn *c, *tmp;
    HASH_ITER(hh, conns, c, tmp) c->inherited = 1;
    handle *h, *htmp;
    HASH_ITER(hh, handles, h, htmp) h->inherited = 1;
}

/* ------------------------------------------------------------------ handles and pools */

static void handle_open_with(int driver, int kind, uintptr_t h, uintptr_t pool, ls_stack_id stack, ls_stack_id pystack);

struct handle_args {
    int driver, kind;
    uintptr_t h, pool;
};

static void record_handle(void *arg)
{
    const struct handle_args *a = arg;
    ls_stack_id pystack = ls_pystack_capture();
    handle_open_with(a->driver, a->kind, a->h, a->pool, ls_stack_capture(), pystack);
}

void ls_handle_open(int driver, int kind, uintptr_t h, uintptr_t pool)
{
    if (!h)
        return;
    OWNER_OR_RETURN();
    struct handle_args a = {driver, kind, h, pool};
    ls_on_private_stack(record_handle, &a);
}

static void handle_open_with(int driver, int kind, uintptr_t h, uintptr_t pool, ls_stack_id stack, ls_stack_id pystack)
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
    pthread_mutex_lock(&reg_lock);
    handle *old = handle_get(h);
    if (old) { /* address reused after a free we did not see, or opened twice: keep the newest */
        conn *c, *tmp;
        HASH_ITER(hh, conns, c, tmp) if (c->handle == h) c->handle = 0;
        HASH_DEL(handles, old);
        free(old);
    }
    ls_hash_oom = 0;
    HASH_ADD(hh, handles, key, sizeof e->key, e);
    if (ls_hash_oom) {
        ls_hash_oom = 0;
        free(e);
        stack = 0;
    }
    pthread_mutex_unlock(&reg_lock);
    ls_stack_count(pystack ? pystack : stack);
    tracked();
}

int ls_handle_known(uintptr_t h)
{
    pthread_mutex_lock(&reg_lock);
    int known = handle_get(h) != NULL;
    pthread_mutex_unlock(&reg_lock);
    return known;
}

void ls_handle_close(uintptr_t h)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&reg_lock);
    handle *e = handle_get(h);
    if (e) {
        e->freed = 1;
        e->checked_out = 0;
        if (e->kind == LS_HK_POOL) { /* the pool frees its idle clients */
            handle *c, *tmp;
            HASH_ITER(hh, handles, c, tmp) if (c->pool == h && !c->checked_out && c != e)
            {
                c->freed = 1;
                handle_maybe_drop(c);
            }
        }
        handle_maybe_drop(e);
    }
    pthread_mutex_unlock(&reg_lock);
}

void ls_handle_adopt_fd(uintptr_t h, int fd)
{
    if (fd < 0 || !h)
        return;
    OWNER_OR_RETURN();
    pthread_mutex_lock(&reg_lock);
    conn *c = fd_get(fd);
    if (c)
        attach_locked(c, h);
    pthread_mutex_unlock(&reg_lock);
    if (!c) {
        /* Not tracked yet (connected before the driver was known, e.g. an address we do not
         * classify): track it now as the driver's. */
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
            return;
        pthread_mutex_lock(&reg_lock);
        handle *e = handle_get(h);
        int drv = e ? e->driver : LS_DRV_PYTHON;
        uintptr_t pool = e ? e->pool : 0;
        pthread_mutex_unlock(&reg_lock);
        ls_ctx prev = ls_ctx_push(drv, h, pool, 0);
        ls_on_connect(fd, (struct sockaddr *)&ss, len);
        ls_ctx_pop(prev);
    }
}

void ls_handle_adopt_pending(uintptr_t h)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < tls_npending; i++) {
        conn *c;
        HASH_FIND(hh, conns, &tls_pending[i], sizeof tls_pending[i], c);
        if (c && !c->handle)
            attach_locked(c, h);
    }
    tls_npending = 0;
    pthread_mutex_unlock(&reg_lock);
}

void ls_handle_release_fd(uintptr_t h, int fd)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&reg_lock);
    conn *c = fd_get(fd);
    if (c && c->handle == h) {
        /* keep c->handle so the report can say "handle freed, socket still open" */
        c->pool = 0;
    }
    pthread_mutex_unlock(&reg_lock);
}

struct checkout_args {
    uintptr_t pool, client;
};
static void record_checkout(void *arg);

void ls_pool_checkout(uintptr_t pool, uintptr_t client)
{
    if (!client)
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
    ls_stack_id stack = pystack ? 0 : ls_stack_capture();
    pthread_mutex_lock(&reg_lock);
    handle *e = handle_get(client), *p = handle_get(pool);
    int drv = p ? p->driver : LS_DRV_PYTHON;
    pthread_mutex_unlock(&reg_lock);
    if (!e)
        handle_open_with(drv, LS_HK_CLIENT, client, pool, stack, pystack);
    pthread_mutex_lock(&reg_lock);
    e = handle_get(client);
    if (e) {
        e->pool = pool;
        e->checked_out = 1;
        e->warned = 0;
        e->checkout_time = ls_now();
        e->co_stack = stack;
        e->co_pystack = pystack;
    }
    pthread_mutex_unlock(&reg_lock);
}

void ls_pool_checkin(uintptr_t pool, uintptr_t client)
{
    OWNER_OR_RETURN();
    pthread_mutex_lock(&reg_lock);
    handle *e = handle_get(client);
    if (e) {
        e->checked_out = 0;
        if (pool)
            e->pool = pool;
    }
    pthread_mutex_unlock(&reg_lock);
}

int ls_checkout_mark_warned(uintptr_t client, double checkout_time)
{
    int first = 0;
    pthread_mutex_lock(&reg_lock);
    handle *e = handle_get(client);
    if (e && e->checked_out && e->checkout_time == checkout_time && !e->warned) {
        e->warned = 1;
        first = 1;
    }
    pthread_mutex_unlock(&reg_lock);
    return first;
}

/* ------------------------------------------------------------------ snapshots */

static int state_of(const conn *c, const handle *h)
{
    if (c->background)
        return LS_ST_BACKGROUND;
    if (h && h->freed)
        return LS_ST_ORPHANED;
    if (h && h->pool)
        return h->checked_out ? LS_ST_CHECKED_OUT : LS_ST_IDLE_IN_POOL;
    return LS_ST_IN_USE;
}

/* A snapshot with the kernel check (kernel_check >= 1) costs a few system calls per socket, and
 * they must not all run under the registry lock: 20k sockets held it for 50-120 ms (every host
 * thread connecting or closing a database socket waited), 100k for half a second. So it runs in
 * three steps:
 *   1. under the lock, the inodes of the tracked sockets are listed (memory only);
 *   2. in batches of SNAPSHOT_BATCH, each under the lock: every fd of those sockets is checked
 *      against the kernel (the zero-false-positive rule: an fd that no longer holds the recorded
 *      socket died behind our back and is forgotten), and the local address and idle time are
 *      asked on the fd just checked (or taken from a sock_diag dump made before, unlocked);
 *   3. under the lock, the views are copied from the registry as it is then, with the facts of
 *      step 2; a socket tracked since step 1 is checked there. Handles are copied in the same
 *      hold, after every check, so a handle never counts a socket the check dropped.
 * Step 2 holds the lock for one batch at a time (about a millisecond, and naps between batches
 * when a host thread waits); steps 1 and 3 touch memory only, O(tracked sockets): 2-10 ms for
 * 20k sockets here.
 *
 * Per socket, where the time goes (19,936 TCP sockets, this project's 2-core VM, `make bench`):
 * on a thread sharing the host's fd table (the exit report) fstat + getsockname + TCP_INFO, about
 * 1 us each once 20k sockets no longer fit in the caches; on the reporter thread (own fd table)
 * pidfd_getfd first (~1.5 us; the duplicates are closed 256 at a time with close_range). A
 * sock_diag dump replaces getsockname + TCP_INFO with ~1/70 recvmsg per socket, but the kernel
 * does the same per-socket work in it (tcp_get_info, the same cold cache lines) and walks every
 * TCP socket of the network namespace (peers on this host, TIME_WAIT, other processes) plus its
 * whole hash table (0.4-0.8 ms, 4-7 ms with 40k TIME_WAIT sockets): measured as fast to 20%
 * slower at 20k sockets, 5-8x slower at 100. It is kept, off by default (ls_snapshot_sockdiag),
 * for kernels where a system call costs more than the cache misses; `make bench` shows both. */
#define SNAPSHOT_BATCH 256

int ls_snapshot_sockdiag;

/* Idle time from TCP_INFO on fd; -1 for a socket that is not TCP. */
static double tcp_idle(int fd, const struct sockaddr_storage *peer)
{
    if (peer->ss_family != AF_INET && peer->ss_family != AF_INET6)
        return -1;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return -1;
    unsigned ms = ti.tcpi_last_data_sent < ti.tcpi_last_data_recv ? ti.tcpi_last_data_sent : ti.tcpi_last_data_recv;
    return ms / 1000.0;
}

/* Asked on fd (an fd this thread may use for the socket, -1 if none): the local address and, for
 * kernel_check 2 and a TCP peer, the idle time from TCP_INFO. */
static void ask_socket(int fd, const struct sockaddr_storage *peer, int kernel_check, ls_sockdiag_ent *out)
{
    socklen_t len = sizeof out->local;
    out->locallen = 0;
    out->idle = -1;
    out->found = 1;
    if (fd < 0)
        return;
    if (getsockname(fd, (struct sockaddr *)&out->local, &len) == 0)
        out->locallen = len > sizeof out->local ? sizeof out->local : len;
    if (kernel_check > 1)
        out->idle = tcp_idle(fd, peer);
}

static int cmp_handle_view(const void *a, const void *b)
{
    uintptr_t x = ((const ls_handle_view *)a)->handle, y = ((const ls_handle_view *)b)->handle;
    return x < y ? -1 : x > y;
}

/* Caller holds reg_lock. The kernel is the truth: an fd that no longer holds the socket we recorded
 * died behind our back (syscall close, fclose of an fdopen'ed FILE we missed, exec...) and is
 * forgotten, so a snapshot never shows a socket that is not open. Returns an fd this thread can
 * use for c's socket until the next ls_hostfds_sock (-1 if none), or -2 if c was freed. */
static int verify_fds(conn *c, ls_hostfds *hf)
{
    int usable = -1;
    unsigned gen = 0;
    for (int i = c->nfds - 1; i >= 0; i--) {
        uint64_t ino;
        int u, fd = c->fds[i];
        if (ls_hostfds_sock(hf, fd, &ino, &u) && ino == c->ino) {
            usable = u;
            gen = hf->flushes;
            continue;
        }
        int last = c->nfds == 1;
        closed_behind++;
        unmap_fd(fd);
        if (last)
            return -2;
    }
    if (usable >= 0 && gen != hf->flushes) { /* a flush closed the duplicate it was: ask again */
        uint64_t ino;
        if (!ls_hostfds_sock(hf, c->fds[0], &ino, &usable) || ino != c->ino)
            usable = -1;
    }
    return usable;
}

/* Step 1: the inodes (and recorded peers, which tell sock_diag where to look). The table is
 * allocated before the lock is taken. */
static int list_inodes(ls_sockdiag *t)
{
    pthread_mutex_lock(&reg_lock);
    size_t n = HASH_COUNT(conns);
    pthread_mutex_unlock(&reg_lock);
    if (ls_sockdiag_init(t, n + n / 8 + 16) != 0)
        return -1;
    pthread_mutex_lock(&reg_lock);
    conn *c, *tmp;
    HASH_ITER(hh, conns, c, tmp)
    {
        /* one that does not fit (opened since the count) is checked in step 3 */
        ls_sockdiag_want(t, c->ino, (const struct sockaddr *)&c->peer, c->peerlen);
    }
    pthread_mutex_unlock(&reg_lock);
    return 0;
}

/* Caller holds reg_lock: does another thread sleep waiting for it? glibc's mutex word is 2 while
 * one does (nptl's lll_lock protocol: 0 free, 1 held, 2 held with waiters); elsewhere assume so. */
static int lock_has_waiters(void)
{
#ifdef __GLIBC__
    return __atomic_load_n(&reg_lock.__data.__lock, __ATOMIC_RELAXED) > 1;
#else
    return 1;
#endif
}

/* Step 2, one hold of the lock: checks up to SNAPSHOT_BATCH sockets from entry *next of t on,
 * walking the registry in its own order. uthash keeps insertion order (new entries at the tail,
 * deleted ones unlinked, nothing reordered) and step 1 listed that order, so after each unlock one
 * lookup finds the place again, instead of one per socket (those lookups were a tenth of a 20k
 * dump: uthash chains are several elements long, each a cache miss). An order surprise only ends
 * the batch early; step 3 checks whatever is left. Returns 0 when t is done. */
static int check_batch(ls_sockdiag *t, size_t *next, unsigned char *checked, ls_hostfds *hf, int kernel_check)
{
    size_t j = *next;
    conn *c = NULL;
    pthread_mutex_lock(&reg_lock);
    while (j < t->n && !c) { /* the first entry left whose socket is still tracked */
        HASH_FIND(hh, conns, &t->ents[j].ino, sizeof t->ents[j].ino, c);
        if (!c)
            j++;
    }
    for (int k = 0; c && k < SNAPSHOT_BATCH; k++) {
        conn *after = c->hh.next; /* read first: the check may free c */
        if (c->ino != t->ents[j].ino) {
            /* entries between were closed while unlocked; or c is newer than step 1 (then every
             * entry left was closed: new ones come last) */
            long i = ls_sockdiag_index(t, c->ino);
            if (i < (long)j) {
                j = t->n;
                break;
            }
            j = (size_t)i;
        }
        int fd = verify_fds(c, hf);
        if (fd != -2) {
            checked[j] = 1;
            ls_sockdiag_ent *e = &t->ents[j];
            if (!e->found || (kernel_check > 1 && e->idle < 0 && e->family != AF_UNIX))
                ask_socket(fd, &c->peer, kernel_check, e);
        }
        c = ++j < t->n ? after : NULL;
    }
    int waiters = lock_has_waiters();
    pthread_mutex_unlock(&reg_lock);
    ls_hostfds_end(hf);
    *next = j;
    /* The thread that unlock woke needs tens of microseconds to run here; locking again at once
     * would win the mutex back and keep it waiting batch after batch (measured: 25-35 ms worst
     * waits at 20k sockets instead of 1-2 ms). A nap (80-180 us on this VM) lets it in; only when
     * someone waits, so a quiet process pays nothing. */
    if (waiters && j < t->n) {
        struct timespec nap = {0, 1000};
        nanosleep(&nap, NULL);
    }
    return j < t->n;
}

/* Caller holds reg_lock. */
static void fill_view(ls_conn_view *v, const conn *c, const handle *h)
{
    v->nfds = c->nfds < 8 ? c->nfds : 8;
    v->fd = c->fds[0];
    for (int i = 0; i < c->nfds; i++) {
        if (i < 8)
            v->fds[i] = c->fds[i];
        if (c->fds[i] < v->fd)
            v->fd = c->fds[i];
    }
    v->ino = c->ino;
    v->peer = c->peer;
    v->peerlen = c->peerlen;
    v->driver = c->driver;
    v->handle = c->handle;
    v->pool = h ? h->pool : c->pool;
    v->state = state_of(c, h);
    v->background = c->background;
    v->inherited = c->inherited;
    v->created = c->created;
    v->idle = -1;
    v->tid = c->tid;
    v->stack = c->stack;
    v->pystack = c->pystack;
}

static void set_facts(ls_conn_view *v, const ls_sockdiag_ent *e, int kernel_check)
{
    memcpy(&v->local, &e->local, e->locallen);
    v->locallen = e->locallen;
    v->idle = kernel_check > 1 ? e->idle : -1;
}

/* Caller holds reg_lock: room for n elements of *arr (capacity *cap), growing under the lock only
 * when more were tracked since the arrays were sized. */
static int room(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n <= *cap)
        return 0;
    void *p = realloc(*arr, n * size);
    if (!p)
        return -1;
    *arr = p;
    *cap = n;
    return 0;
}

/* Step 3 (caller holds reg_lock): the views of every socket tracked now. */
static int copy_conns(ls_snapshot *s, size_t *cap, const ls_sockdiag *t, const unsigned char *checked, ls_hostfds *hf,
                      int kernel_check)
{
    if (room((void **)&s->conns, cap, HASH_COUNT(conns), sizeof *s->conns) != 0)
        return -1;
    conn *c, *tmp;
    size_t next = 0; /* uthash iterates in insertion order, as step 1 did: try the next entry first */
    HASH_ITER(hh, conns, c, tmp)
    {
        long i = -1;
        if (checked)
            i = next < t->n && t->ents[next].ino == c->ino ? (long)next : ls_sockdiag_index(t, c->ino);
        if (i >= 0)
            next = (size_t)i + 1;
        ls_sockdiag_ent asked;
        int fd = -1;
        if (kernel_check && (i < 0 || !checked[i])) { /* tracked since step 1, or no step 2 */
            fd = verify_fds(c, hf);
            if (fd == -2)
                continue;
            ask_socket(fd, &c->peer, kernel_check, &asked);
        }
        ls_conn_view *v = &s->conns[s->nconns++];
        memset(v, 0, sizeof *v);
        fill_view(v, c, c->handle ? handle_get(c->handle) : NULL);
        if (kernel_check)
            set_facts(v, i >= 0 && checked[i] ? &t->ents[i] : &asked, kernel_check);
    }
    return 0;
}

static int copy_handles(ls_snapshot *s, size_t *cap)
{
    if (room((void **)&s->handles, cap, HASH_COUNT(handles), sizeof *s->handles) != 0)
        return -1;
    handle *h, *tmp;
    HASH_ITER(hh, handles, h, tmp)
    {
        ls_handle_view *v = &s->handles[s->nhandles++];
        memset(v, 0, sizeof *v);
        v->handle = h->key;
        v->driver = h->driver;
        v->kind = h->kind;
        v->pool = h->pool;
        v->freed = h->freed;
        v->inherited = h->inherited;
        v->open_socks = h->open_socks;
        v->socks_ever = h->socks_ever;
        v->closed_socks = h->closed_socks;
        v->moved_socks = h->moved_socks;
        v->checked_out = h->checked_out;
        v->created = h->created;
        v->checkout_time = h->checkout_time;
        v->stack = h->stack;
        v->pystack = h->pystack;
        v->co_stack = h->co_stack;
        v->co_pystack = h->co_pystack;
        v->tid = h->tid;
    }
    return 0;
}

int ls_registry_snapshot(ls_snapshot *s, int kernel_check)
{
    memset(s, 0, sizeof *s);
    ls_sockdiag t;
    memset(&t, 0, sizeof t);
    unsigned char *checked = NULL;
    ls_hostfds hf = {.ndups = 0, .flushes = 0};
    if (kernel_check && list_inodes(&t) == 0) {
        checked = calloc(t.n ? t.n : 1, 1);
        if (checked && ls_snapshot_sockdiag) /* unlocked: the dump may take tens of ms */
            ls_sockdiag_fill(&t, LS_SD_ALL | (kernel_check > 1 ? LS_SD_INFO : 0));
        size_t next = 0;
        while (checked && check_batch(&t, &next, checked, &hf, kernel_check))
            ;
    }
    pthread_mutex_lock(&reg_lock);
    size_t nc = HASH_COUNT(conns) + 16, nh = HASH_COUNT(handles) + 16;
    pthread_mutex_unlock(&reg_lock);
    s->conns = malloc(nc * sizeof *s->conns); /* each view is zeroed as it is filled */
    s->handles = malloc(nh * sizeof *s->handles);
    pthread_mutex_lock(&reg_lock);
    int r = -1;
    if (s->conns && s->handles && copy_conns(s, &nc, &t, checked, &hf, kernel_check) == 0 && copy_handles(s, &nh) == 0)
        r = 0;
    s->closed_behind = closed_behind;
    pthread_mutex_unlock(&reg_lock);
    ls_hostfds_end(&hf);
    ls_sockdiag_free(&t);
    free(checked);
    if (r < 0) {
        ls_registry_snapshot_free(s);
        return -1;
    }
    qsort(s->handles, s->nhandles, sizeof *s->handles, cmp_handle_view);
    return 0;
}

void ls_registry_snapshot_free(ls_snapshot *s)
{
    free(s->conns);
    free(s->handles);
    memset(s, 0, sizeof *s);
}

int ls_registry_checked_out(void)
{
    int n = 0;
    pthread_mutex_lock(&reg_lock);
    handle *h, *tmp;
    HASH_ITER(hh, handles, h, tmp) n += h->checked_out && !h->inherited;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

/* atfork prepare: no other thread may be inside the tables while the address space is copied. */
void ls_registry_lock_all(void)
{
    pthread_mutex_lock(&reg_lock);
}

/* atfork parent/child: in the child the lock owner is gone, so reinitialise rather than unlock. */
void ls_registry_unlock_all(int child)
{
    if (child) {
        pthread_mutex_init(&reg_lock, NULL);
        tls_tid = 0;
    } else
        pthread_mutex_unlock(&reg_lock);
}

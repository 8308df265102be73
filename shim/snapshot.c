/* Snapshots of the registry for reports: copies of every tracked socket and handle, each socket
 * checked against the kernel first (the zero-false-positive rule), taken in batches so the
 * registry lock is never held long. */
#include "registry_int.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ snapshots */

/* Caller holds ls_reg_lock. Shared with timeline.c, which counts sockets by state. */
int ls_reg_state_of(const conn *c, const handle *h)
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

/* Caller holds ls_reg_lock. The kernel is the truth: an fd that no longer holds the socket we recorded
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
        ls_reg_closed_behind++;
        ls_reg_unmap_fd(fd);
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
    pthread_mutex_lock(&ls_reg_lock);
    size_t n = HASH_COUNT(ls_reg_conns);
    pthread_mutex_unlock(&ls_reg_lock);
    if (ls_sockdiag_init(t, n + n / 8 + 16) != 0)
        return -1;
    pthread_mutex_lock(&ls_reg_lock);
    conn *c, *tmp;
    HASH_ITER(hh, ls_reg_conns, c, tmp)
    {
        /* one that does not fit (opened since the count) is checked in step 3 */
        ls_sockdiag_want(t, c->ino, (const struct sockaddr *)&c->peer, c->peerlen);
    }
    pthread_mutex_unlock(&ls_reg_lock);
    return 0;
}

/* Caller holds ls_reg_lock: does another thread sleep waiting for it? glibc's mutex word is 2 while
 * one does (nptl's lll_lock protocol: 0 free, 1 held, 2 held with waiters); elsewhere assume so. */
static int lock_has_waiters(void)
{
#ifdef __GLIBC__
    return __atomic_load_n(&ls_reg_lock.__data.__lock, __ATOMIC_RELAXED) > 1;
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
    pthread_mutex_lock(&ls_reg_lock);
    while (j < t->n && !c) { /* the first entry left whose socket is still tracked */
        HASH_FIND(hh, ls_reg_conns, &t->ents[j].ino, sizeof t->ents[j].ino, c);
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
    pthread_mutex_unlock(&ls_reg_lock);
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

/* Caller holds ls_reg_lock. */
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
    v->state = ls_reg_state_of(c, h);
    v->background = c->background;
    v->inherited = c->inherited;
    v->before_attach = c->before_attach;
    v->shared = ls_forkshare_users(c);
    v->used_here = c->inherited && c->fs_used;
    v->created = c->created;
    v->idle = -1;
    v->tid = c->tid;
    v->stack = c->stack;
    v->pystack = c->pystack;
    v->attr = c->attr;
    v->seq = c->seq;
}

static void set_facts(ls_conn_view *v, const ls_sockdiag_ent *e, int kernel_check)
{
    memcpy(&v->local, &e->local, e->locallen);
    v->locallen = e->locallen;
    v->idle = kernel_check > 1 ? e->idle : -1;
}

/* Caller holds ls_reg_lock: room for n elements of *arr (capacity *cap), growing under the lock only
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

/* Step 3 (caller holds ls_reg_lock): the views of every socket tracked now. */
static int copy_conns(ls_snapshot *s, size_t *cap, const ls_sockdiag *t, const unsigned char *checked, ls_hostfds *hf,
                      int kernel_check)
{
    if (room((void **)&s->conns, cap, HASH_COUNT(ls_reg_conns), sizeof *s->conns) != 0)
        return -1;
    conn *c, *tmp;
    size_t next = 0; /* uthash iterates in insertion order, as step 1 did: try the next entry first */
    HASH_ITER(hh, ls_reg_conns, c, tmp)
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
        fill_view(v, c, c->handle ? ls_reg_handle_get(c->handle) : NULL);
        if (kernel_check)
            set_facts(v, i >= 0 && checked[i] ? &t->ents[i] : &asked, kernel_check);
    }
    return 0;
}

static int copy_handles(ls_snapshot *s, size_t *cap)
{
    if (room((void **)&s->handles, cap, HASH_COUNT(ls_reg_handles), sizeof *s->handles) != 0)
        return -1;
    handle *h, *tmp;
    HASH_ITER(hh, ls_reg_handles, h, tmp)
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
        v->attr = h->attr;
        v->seq = h->seq;
        v->co_attr = h->co_attr;
        v->co_seq = h->co_seq;
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
    pthread_mutex_lock(&ls_reg_lock);
    size_t nc = HASH_COUNT(ls_reg_conns) + 16, nh = HASH_COUNT(ls_reg_handles) + 16;
    pthread_mutex_unlock(&ls_reg_lock);
    s->conns = malloc(nc * sizeof *s->conns); /* each view is zeroed as it is filled */
    s->handles = malloc(nh * sizeof *s->handles);
    pthread_mutex_lock(&ls_reg_lock);
    int r = -1;
    if (s->conns && s->handles && copy_conns(s, &nc, &t, checked, &hf, kernel_check) == 0 && copy_handles(s, &nh) == 0)
        r = 0;
    s->closed_behind = ls_reg_closed_behind;
    pthread_mutex_unlock(&ls_reg_lock);
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
    pthread_mutex_lock(&ls_reg_lock);
    handle *h, *tmp;
    HASH_ITER(hh, ls_reg_handles, h, tmp) n += h->checked_out && !h->inherited;
    pthread_mutex_unlock(&ls_reg_lock);
    return n;
}

/* atfork prepare: no other thread may be inside the tables while the address space is copied. */

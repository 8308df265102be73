/* Snapshots of many sockets: the sock_diag table against what getsockname/getpeername/fstat say
 * for real loopback TCP connections (IPv4, IPv6) and Unix sockets; snapshots taken with sock_diag,
 * per socket, with netlink refused by a seccomp filter, and from a thread with a fd table of its
 * own (as the reporter thread) all give the same views; an fd closed behind our back whose number
 * now holds another socket is dropped (no false positive) even while the old socket lives on; the
 * batched duplicates on the reporter thread survive a full table; snapshots taken while other
 * threads open and close sockets keep the ones that stay; the printf-free formatters write what
 * snprintf and inet_ntop write. */
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t ino_of(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return (uint64_t)st.st_ino;
}

/* ================================================================== the sock_diag table */

/* A listener on the loopback of family (AF_INET or AF_INET6); -1 if that family is missing. */
static int listen_on(int family, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    ss->ss_family = (sa_family_t)family;
    if (family == AF_INET) {
        inet_pton(AF_INET, "127.0.0.1", &((struct sockaddr_in *)ss)->sin_addr);
        *len = sizeof(struct sockaddr_in);
    } else {
        ((struct sockaddr_in6 *)ss)->sin6_addr = in6addr_loopback;
        *len = sizeof(struct sockaddr_in6);
    }
    int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)ss, *len) != 0 || listen(l, 64) != 0) {
        if (l >= 0)
            close(l);
        return -1;
    }
    assert_int_equal(getsockname(l, (struct sockaddr *)ss, len), 0);
    return l;
}

static void assert_same_addr(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b,
                             socklen_t blen)
{
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
}

/* Both ends of real connections: local and peer as getsockname/getpeername, idle from tcp_info. */
static void tcp_table_matches_the_socket_calls(void **state)
{
    (void)state;
    enum { PER_FAMILY = 4 };
    int families[2] = {AF_INET, AF_INET6}, fds[4 * PER_FAMILY], nfds = 0;
    for (int f = 0; f < 2; f++) {
        struct sockaddr_storage ss;
        socklen_t len;
        int l = listen_on(families[f], &ss, &len);
        if (l < 0) {
            assert_int_equal(families[f], AF_INET6); /* IPv4 loopback is always there */
            continue;
        }
        for (int i = 0; i < PER_FAMILY; i++) {
            int c = socket(families[f], SOCK_STREAM | SOCK_CLOEXEC, 0);
            assert_int_equal(connect(c, (struct sockaddr *)&ss, len), 0);
            int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
            assert_true(a >= 0);
            fds[nfds++] = c;
            fds[nfds++] = a;
        }
        close(l);
    }
    ls_sockdiag t;
    assert_int_equal(ls_sockdiag_init(&t, (size_t)nfds), 0);
    for (int i = 0; i < nfds; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        assert_int_equal(getpeername(fds[i], (struct sockaddr *)&peer, &plen), 0);
        assert_int_equal(ls_sockdiag_want(&t, ino_of(fds[i]), (struct sockaddr *)&peer, plen), 0);
    }
    assert_true(t.tcp_ports_ok); /* few peer ports: the kernel filters */
    assert_true(ls_sockdiag_fill(&t, LS_SD_ALL | LS_SD_INFO) >= 1);
    assert_int_equal(t.found, (size_t)nfds);
    for (int i = 0; i < nfds; i++) {
        const ls_sockdiag_ent *e = ls_sockdiag_find(&t, ino_of(fds[i]));
        assert_non_null(e);
        struct sockaddr_storage local, peer;
        socklen_t llen = sizeof local, plen = sizeof peer;
        assert_int_equal(getsockname(fds[i], (struct sockaddr *)&local, &llen), 0);
        assert_int_equal(getpeername(fds[i], (struct sockaddr *)&peer, &plen), 0);
        assert_int_equal(e->family, local.ss_family);
        assert_int_equal(e->state, TCP_ESTABLISHED);
        assert_same_addr(&e->local, e->locallen, &local, llen);
        assert_same_addr(&e->peer, e->peerlen, &peer, plen);
        assert_true(e->idle >= 0);
    }
    assert_null(ls_sockdiag_find(&t, 1)); /* never asked for, never found */
    ls_sockdiag_free(&t);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* More peer ports than the kernel filter takes: every TCP socket is dumped, ours still found. */
static void many_peer_ports_need_no_filter(void **state)
{
    (void)state;
    enum { N = LS_SD_MAX_PORTS + 4 };
    int ls[N], cs[N], as[N];
    ls_sockdiag t;
    assert_int_equal(ls_sockdiag_init(&t, N), 0);
    for (int i = 0; i < N; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        ls[i] = listen_on(AF_INET, &ss, &len);
        cs[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(cs[i], (struct sockaddr *)&ss, len), 0);
        as[i] = accept4(ls[i], NULL, NULL, SOCK_CLOEXEC);
        ls_sockdiag_want(&t, ino_of(cs[i]), (struct sockaddr *)&ss, len);
    }
    assert_false(t.tcp_ports_ok);
    assert_true(ls_sockdiag_fill(&t, LS_SD_ALL) >= 1);
    assert_int_equal(t.found, (size_t)N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ls_sockdiag_find(&t, ino_of(cs[i]))->idle, -1); /* no LS_SD_INFO */
        close(cs[i]);
        close(as[i]);
        close(ls[i]);
    }
    ls_sockdiag_free(&t);
}

/* Unix sockets: the name as getsockname gives it (unbound, path with its NUL, abstract), the
 * peer's inode as fstat of the other end gives it. */
static void unix_table_matches_the_socket_calls(void **state)
{
    (void)state;
    char dir[] = "/tmp/ls-sockdiag-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un path = {.sun_family = AF_UNIX}, abstract = {.sun_family = AF_UNIX};
    snprintf(path.sun_path, sizeof path.sun_path, "%s/.s.PGSQL.5432", dir);
    socklen_t plen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path.sun_path) + 1);
    snprintf(abstract.sun_path + 1, sizeof abstract.sun_path - 1, "ls-sockdiag-%d", (int)getpid());
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(abstract.sun_path + 1));
    int fds[6], nfds = 0;
    const struct sockaddr_un *addrs[2] = {&path, &abstract};
    socklen_t lens[2] = {plen, alen};
    for (int k = 0; k < 2; k++) {
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(bind(l, (const struct sockaddr *)addrs[k], lens[k]), 0);
        assert_int_equal(listen(l, 8), 0);
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(c, (const struct sockaddr *)addrs[k], lens[k]), 0);
        fds[nfds++] = c;
        fds[nfds++] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        close(l);
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds + nfds), 0);
    nfds += 2;
    ls_sockdiag t;
    assert_int_equal(ls_sockdiag_init(&t, (size_t)nfds), 0);
    for (int i = 0; i < nfds; i++)
        ls_sockdiag_want(&t, ino_of(fds[i]), (const struct sockaddr *)&path, plen);
    assert_int_equal(ls_sockdiag_fill(&t, LS_SD_ALL), 1); /* only the unix dump was needed */
    assert_int_equal(t.found, (size_t)nfds);
    for (int i = 0; i < nfds; i++) {
        const ls_sockdiag_ent *e = ls_sockdiag_find(&t, ino_of(fds[i]));
        assert_non_null(e);
        struct sockaddr_storage local;
        socklen_t llen = sizeof local;
        assert_int_equal(getsockname(fds[i], (struct sockaddr *)&local, &llen), 0);
        assert_int_equal(e->family, AF_UNIX);
        assert_int_equal(e->state, TCP_ESTABLISHED);
        assert_same_addr(&e->local, e->locallen, &local, llen);
        assert_int_equal(e->peerlen, 0);
        assert_int_equal(e->peer_ino, ino_of(fds[i ^ 1])); /* pairs sit side by side */
        assert_int_equal(e->idle, -1);
    }
    assert_int_equal(ls_sockdiag_find(&t, ino_of(fds[0]))->locallen, sizeof(sa_family_t)); /* unbound client */
    ls_sockdiag_free(&t);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    unlink(path.sun_path);
    rmdir(dir);
}

/* ================================================================== snapshots */

static void view_equal(const ls_conn_view *a, const ls_conn_view *b, double idle_slack)
{
    assert_int_equal(a->fd, b->fd);
    assert_int_equal(a->nfds, b->nfds);
    assert_memory_equal(a->fds, b->fds, sizeof a->fds[0] * (size_t)a->nfds);
    assert_int_equal(a->ino, b->ino);
    assert_same_addr(&a->peer, a->peerlen, &b->peer, b->peerlen);
    assert_true(a->locallen > 0); /* every socket of these tests has a local address */
    assert_same_addr(&a->local, a->locallen, &b->local, b->locallen);
    assert_int_equal(a->driver, b->driver);
    assert_int_equal(a->handle, b->handle);
    assert_int_equal(a->pool, b->pool);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->background, b->background);
    assert_int_equal(a->inherited, b->inherited);
    assert_true(a->created == b->created);
    assert_int_equal(a->tid, b->tid);
    assert_int_equal(a->stack, b->stack);
    assert_int_equal(a->pystack, b->pystack);
    /* The idle time is the kernel's clock (ms since data last moved), read twice: the two reads
     * may differ by the time between them (plus a jiffy each and the ms rounding). */
    assert_int_equal(a->idle < 0, b->idle < 0);
    if (a->idle >= 0) {
        double d = a->idle > b->idle ? a->idle - b->idle : b->idle - a->idle;
        assert_true(d <= idle_slack + 0.011);
    }
}

static void snapshots_equal(const ls_snapshot *a, const ls_snapshot *b, double idle_slack)
{
    assert_int_equal(a->nconns, b->nconns);
    for (size_t i = 0; i < a->nconns; i++)
        view_equal(&a->conns[i], &b->conns[i], idle_slack);
    assert_int_equal(a->nhandles, b->nhandles);
    assert_int_equal(a->closed_behind, b->closed_behind);
}

static void snap(ls_snapshot *s, int sockdiag)
{
    ls_snapshot_sockdiag = sockdiag;
    assert_int_equal(ls_registry_snapshot(s, 2), 0);
    ls_snapshot_sockdiag = 0;
}

/* A Unix listener at DIR/.s.PGSQL.5432 (a database's name) and tracked connections to it. */
struct unix_db {
    char dir[32];
    struct sockaddr_un addr;
    socklen_t len;
    int l;
};

static void unix_db_open(struct unix_db *u)
{
    strcpy(u->dir, "/tmp/ls-sockdiag-XXXXXX");
    assert_non_null(mkdtemp(u->dir));
    memset(&u->addr, 0, sizeof u->addr);
    u->addr.sun_family = AF_UNIX;
    snprintf(u->addr.sun_path, sizeof u->addr.sun_path, "%s/.s.PGSQL.5432", u->dir);
    u->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(u->addr.sun_path) + 1);
    u->l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_int_equal(bind(u->l, (struct sockaddr *)&u->addr, u->len), 0);
    assert_int_equal(listen(u->l, 64), 0);
}

static int unix_db_connect(struct unix_db *u)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ls_on_socket_new(fd);
    assert_int_equal(connect(fd, (struct sockaddr *)&u->addr, u->len), 0);
    ls_on_connect(fd, (struct sockaddr *)&u->addr, u->len);
    int a;
    while ((a = accept4(u->l, NULL, NULL, SOCK_CLOEXEC)) >= 0)
        close(a); /* the client end stays connected (its peer is gone: CLOSE state is fine) */
    return fd;
}

static void unix_db_close(struct unix_db *u)
{
    close(u->l);
    unlink(u->addr.sun_path);
    rmdir(u->dir);
}

/* A mixed registry: TCP connections, a dup'ed one, Unix connections. */
static int make_registry(int *fds, struct unix_db *u)
{
    int n = 0;
    for (int i = 0; i < 6; i++)
        fds[n++] = unit_connect(unit_port);
    fds[n] = dup(fds[0]);
    ls_on_dup(fds[0], fds[n]);
    n++;
    unix_db_open(u);
    for (int i = 0; i < 3; i++)
        fds[n++] = unix_db_connect(u);
    return n;
}

static void free_registry(int *fds, int n, struct unix_db *u)
{
    for (int i = 0; i < n; i++)
        unit_close(fds[i]);
    unix_db_close(u);
}

/* The same registry, once per path: with the dump, per socket, the dump first then per socket. */
static void snapshot_paths_agree(void **state)
{
    (void)state;
    int fds[16];
    struct unix_db u;
    int n = make_registry(fds, &u);
    ls_snapshot a, b;
    double t0 = ls_mono();
    snap(&a, 0);
    snap(&b, 1);
    snapshots_equal(&a, &b, ls_mono() - t0);
    assert_true(a.nconns >= (size_t)n - 1); /* the dup'ed pair is one socket */
    size_t tcp = 0;
    for (size_t i = 0; i < a.nconns; i++)
        tcp += a.conns[i].idle >= 0;
    assert_true(tcp >= 6); /* TCP sockets have an idle time, Unix ones none */
    ls_registry_snapshot_free(&a);
    ls_registry_snapshot_free(&b);
    free_registry(fds, n, &u);
}

/* As the reporter thread: an fd table of its own, the host's fds reached through a pidfd. */
struct private_args {
    void (*fn)(void *);
    void *arg;
};

static void *private_main(void *p)
{
    struct private_args *a = p;
    if (unshare(CLONE_FILES) != 0)
        return NULL;
    syscall(SYS_close_range, 0U, ~0U, 0U);
    ls_self_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0U);
    ls_fds_private = 1;
    a->fn(a->arg);
    ls_sys_close(ls_self_pidfd);
    ls_self_pidfd = -1;
    return (void *)1;
}

static int on_private_table(void (*fn)(void *), void *arg)
{
    struct private_args a = {fn, arg};
    pthread_t t;
    void *ret = NULL;
    assert_int_equal(pthread_create(&t, NULL, private_main, &a), 0);
    pthread_join(t, &ret);
    return ret != NULL;
}

struct two_snaps {
    ls_snapshot a, b;
    double slack;
};

static void two_snaps_here(void *p)
{
    struct two_snaps *s = p;
    double t0 = ls_mono();
    snap(&s->a, 0);
    snap(&s->b, 1);
    s->slack = ls_mono() - t0;
}

static void reporter_thread_agrees(void **state)
{
    (void)state;
    int fds[16];
    struct unix_db u;
    int n = make_registry(fds, &u);
    ls_snapshot here;
    double t0 = ls_mono();
    snap(&here, 0);
    struct two_snaps s;
    if (!on_private_table(two_snaps_here, &s)) {
        ls_registry_snapshot_free(&here);
        free_registry(fds, n, &u);
        skip(); /* no unshare or pidfd here */
    }
    double slack = ls_mono() - t0;
    snapshots_equal(&here, &s.a, slack);
    snapshots_equal(&here, &s.b, slack);
    ls_registry_snapshot_free(&here);
    ls_registry_snapshot_free(&s.a);
    ls_registry_snapshot_free(&s.b);
    free_registry(fds, n, &u);
}

/* seccomp: socket(AF_NETLINK, ...) fails with EPERM, as under a container's profile. */
static int refuse_netlink(void)
{
#if defined(__x86_64__)
    const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    const unsigned arch = AUDIT_ARCH_AARCH64;
#else
    const unsigned arch = 0;
    return -1;
#endif
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/* In a child (seccomp cannot be undone): netlink refused, the snapshot falls back per socket and
 * gives the views the parent got. The child reports through its exit status. */
static void netlink_refused_falls_back(void **state)
{
    (void)state;
    int fds[16];
    struct unix_db u;
    int n = make_registry(fds, &u);
    ls_snapshot ref;
    double t0 = ls_mono();
    snap(&ref, 1);
    pid_t pid = fork();
    if (pid == 0) {
        if (refuse_netlink() != 0)
            _exit(77);
        ls_sockdiag t;
        ls_sockdiag_init(&t, 1);
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)unit_port)};
        ls_sockdiag_want(&t, ino_of(fds[0]), (struct sockaddr *)&in, sizeof in);
        if (ls_sockdiag_fill(&t, LS_SD_ALL) != -1 || errno != EPERM)
            _exit(3); /* the filter did not refuse */
        ls_sockdiag_free(&t);
        ls_snapshot s;
        snap(&s, 1);
        /* cmocka's asserts would jump back into the parent's runner: compare by hand here */
        int bad = s.nconns != ref.nconns;
        for (size_t i = 0; !bad && i < s.nconns; i++) {
            const ls_conn_view *a = &s.conns[i], *b = &ref.conns[i];
            bad = a->fd != b->fd || a->ino != b->ino || a->locallen != b->locallen || a->locallen == 0 ||
                  memcmp(&a->local, &b->local, a->locallen) != 0 || (a->idle < 0) != (b->idle < 0) ||
                  a->state != b->state || a->handle != b->handle;
            if (!bad && a->idle >= 0)
                bad = (a->idle > b->idle ? a->idle - b->idle : b->idle - a->idle) > ls_mono() - t0 + 0.011;
            if (bad)
                fprintf(stderr, "fd %d: views differ with netlink refused\n", a->fd);
        }
        _exit(bad ? 1 : 0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    ls_registry_snapshot_free(&ref);
    free_registry(fds, n, &u);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77)
        skip(); /* no seccomp here */
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ================================================================== no false positive */

static int in_snapshot(const ls_snapshot *s, uint64_t ino, int fd)
{
    for (size_t i = 0; i < s->nconns; i++)
        for (int k = 0; k < s->conns[i].nfds; k++)
            if (s->conns[i].fds[k] == fd || s->conns[i].ino == ino)
                return 1;
    return 0;
}

/* fd a is closed with a raw syscall (no hook sees it) while an untracked duplicate keeps the
 * socket alive (as a forked child holding it would: sock_diag still lists its inode), and a's
 * number is taken by another socket. Every path must drop a. */
struct reuse_state {
    int a;
    uint64_t old_ino;
    int sockdiag;
    int dropped;
    uint64_t closed_before, closed_after;
};

static void check_reuse(void *p)
{
    struct reuse_state *r = p;
    ls_snapshot s;
    snap(&s, r->sockdiag);
    r->dropped = !in_snapshot(&s, r->old_ino, r->a);
    r->closed_after = s.closed_behind;
    ls_registry_snapshot_free(&s);
}

static void reused_number_is_dropped(void **state)
{
    (void)state;
    for (int mode = 0; mode < 4; mode++) {
        int sockdiag = mode & 1, private_table = mode & 2;
        int a = unit_connect(unit_port);
        uint64_t old_ino = ino_of(a);
        int keep = (int)syscall(SYS_dup, a); /* untracked: the socket outlives a */
        assert_true(keep >= 0);
        syscall(SYS_close, a);
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        if (sv[0] != a) { /* the number is reused by another socket, behind our back */
            assert_int_equal((int)syscall(SYS_dup2, sv[0], a), a);
            syscall(SYS_close, sv[0]);
        }
        ls_snapshot before;
        assert_int_equal(ls_registry_snapshot(&before, 0), 0); /* no check: still listed */
        assert_true(in_snapshot(&before, old_ino, a));
        struct reuse_state r = {a, old_ino, sockdiag, 0, before.closed_behind, 0};
        ls_registry_snapshot_free(&before);
        if (private_table) {
            if (!on_private_table(check_reuse, &r))
                skip();
        } else {
            check_reuse(&r);
        }
        assert_true(r.dropped);
        assert_true(r.closed_after > r.closed_before);
        assert_false(ls_fd_tracked(a));
        syscall(SYS_close, a);
        close(sv[1]);
        close(keep);
    }
}

/* ================================================================== the reporter's duplicates */

struct many_state {
    int n;
    size_t seen;
    int bad; /* a socket without its local address, or a duplicate left open */
};

static void check_many(void *p)
{
    struct many_state *m = p;
    ls_snapshot s;
    snap(&s, 0);
    m->seen = s.nconns;
    for (size_t i = 0; i < s.nconns; i++)
        m->bad |= s.conns[i].locallen == 0;
    ls_registry_snapshot_free(&s);
    /* every duplicate is closed: this table holds the pidfd and nothing else */
    for (int fd = 0; fd < 1024; fd++)
        if (fd != ls_self_pidfd && fcntl(fd, F_GETFD) >= 0)
            m->bad = 1;
}

/* More sockets than a batch of duplicates, and a file limit below them (in a child, the limit is
 * the process's): batches flush when full and when the table is full, nothing is missed, no
 * duplicate is left open. */
static void duplicates_are_batched_and_closed(void **state)
{
    (void)state;
    enum { N = LS_HOSTFDS_BATCH + 44 };
    static int fds[N];
    ls_snapshot s0;
    assert_int_equal(ls_registry_snapshot(&s0, 0), 0);
    size_t before = s0.nconns;
    ls_registry_snapshot_free(&s0);
    for (int i = 0; i < N; i++)
        fds[i] = unit_connect(unit_port);
    struct many_state m = {N, 0, 0};
    if (!on_private_table(check_many, &m)) {
        for (int i = 0; i < N; i++)
            unit_close(fds[i]);
        skip();
    }
    assert_int_equal(m.seen, before + N);
    assert_false(m.bad);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = 40; /* the host's fds above it stay open; new numbers stop at 39 */
        setrlimit(RLIMIT_NOFILE, &rl);
        struct many_state c = {N, 0, 0};
        if (!on_private_table(check_many, &c))
            _exit(77);
        _exit(c.seen == before + N && !c.bad ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    for (int i = 0; i < N; i++)
        unit_close(fds[i]);
    assert_true(WIFEXITED(status));
    assert_true(WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 77);
}

/* ================================================================== while sockets come and go */

static int churning;

static void *churn(void *arg)
{
    (void)arg;
    while (__atomic_load_n(&churning, __ATOMIC_RELAXED)) {
        int a = unit_connect(unit_port);
        int b = dup(a);
        ls_on_dup(a, b);
        unit_close(a);
        unit_close(b);
    }
    return NULL;
}

/* Snapshots taken while other threads connect and close tracked sockets (step 2 lets them in
 * between batches): the sockets that stay open are in every snapshot, checked, with their local
 * address; nothing crashes or leaks (the ASan build runs this too). */
static void snapshots_while_sockets_come_and_go(void **state)
{
    (void)state;
    enum { STABLE = LS_HOSTFDS_BATCH + 20, THREADS = 3 };
    static int fds[STABLE];
    for (int i = 0; i < STABLE; i++)
        fds[i] = unit_connect(unit_port);
    pthread_t t[THREADS];
    __atomic_store_n(&churning, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, NULL), 0);
    for (int round = 0; round < 12; round++) {
        ls_snapshot s;
        snap(&s, round & 1);
        int seen = 0;
        for (size_t i = 0; i < s.nconns; i++)
            for (int k = 0; k < STABLE; k++)
                if (s.conns[i].fd == fds[k]) {
                    seen++;
                    assert_int_equal(s.conns[i].ino, ino_of(fds[k]));
                    assert_true(s.conns[i].locallen > 0);
                    assert_true(s.conns[i].idle >= 0);
                }
        assert_int_equal(seen, STABLE);
        ls_registry_snapshot_free(&s);
    }
    __atomic_store_n(&churning, 0, __ATOMIC_RELAXED);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < STABLE; i++)
        unit_close(fds[i]);
}

/* ================================================================== formatting */

/* What the renderers wrote with snprintf and inet_ntop. */
static void reference_addr(const struct sockaddr_storage *ss, socklen_t len, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    if (len == 0) {
        snprintf(out, cap, "?");
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, cap, "%s:%d", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
        snprintf(out, cap, "[%s]:%d", host, ntohs(in->sin6_port));
    } else if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
        size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n > sizeof un->sun_path)
            n = sizeof un->sun_path;
        if (n && !un->sun_path[0])
            snprintf(out, cap, "@%.*s", (int)(n - 1), un->sun_path + 1);
        else
            snprintf(out, cap, "%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
    } else {
        snprintf(out, cap, "family %d", ss->ss_family);
    }
}

static void check_addr(const struct sockaddr_storage *ss, socklen_t len)
{
    char want[160], got[160];
    for (size_t cap = 1; cap <= sizeof want; cap = cap < 8 ? cap + 1 : cap * 3) {
        memset(got, 'x', sizeof got);
        reference_addr(ss, len, want, cap);
        size_t n = ls_addr_format(got, cap, ss, len);
        assert_string_equal(got, want);
        assert_int_equal(n, strlen(want));
    }
    reference_addr(ss, len, want, sizeof want);
    ls_buf b = {0};
    ls_buf_addr(&b, ss, len);
    assert_string_equal(b.data, want);
    ls_buf_free(&b);
}

static unsigned rnd(void)
{
    static uint64_t x = 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return (unsigned)x;
}

static void addresses_format_as_inet_ntop(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    memset(&ss, 0, sizeof ss);
    check_addr(&ss, 0);
    for (int i = 0; i < 2000; i++) {
        memset(&ss, 0, sizeof ss);
        in->sin_family = AF_INET;
        in->sin_port = (in_port_t)rnd();
        in->sin_addr.s_addr = i < 4 ? (i == 1 ? 0xffffffffU : 0) : rnd();
        check_addr(&ss, sizeof *in);
    }
    static const char *const special[] = {"::",
                                          "::1",
                                          "1::",
                                          "::ffff:1.2.3.4",
                                          "::1.2.3.4",
                                          "fe80::1",
                                          "1:0:0:1:0:0:0:1",
                                          "0:0:1::",
                                          "1:0:0:2::3",
                                          "::ffff:0:0",
                                          "ffff::",
                                          "2001:db8::ff00:42:8329",
                                          "0:1:0:0:0:0:0:0",
                                          "1:2:3:4:5:6:7:8",
                                          "::ffff:ffff:1.2.3.4",
                                          "0:0:0:0:0:1:1.2.3.4"};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
        memset(&ss, 0, sizeof ss);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(5432);
        assert_int_equal(inet_pton(AF_INET6, special[i], &in6->sin6_addr), 1);
        check_addr(&ss, sizeof *in6);
    }
    for (int i = 0; i < 20000; i++) { /* random groups, many of them zero: every run shape */
        memset(&ss, 0, sizeof ss);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = (in_port_t)rnd();
        for (int g = 0; g < 8; g++) {
            unsigned r = rnd(), w = r % 3 == 0 ? 0 : r % 3 == 1 ? (r >> 8) & 0xf : (r >> 8) & 0xffff;
            if (g == 5 && r % 7 == 0)
                w = 0xffff;
            in6->sin6_addr.s6_addr[2 * g] = (unsigned char)(w >> 8);
            in6->sin6_addr.s6_addr[2 * g + 1] = (unsigned char)w;
        }
        check_addr(&ss, sizeof *in6);
    }
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    memset(&ss, 0, sizeof ss);
    un->sun_family = AF_UNIX;
    check_addr(&ss, sizeof(sa_family_t)); /* unbound */
    strcpy(un->sun_path, "/run/postgresql/.s.PGSQL.5432");
    check_addr(&ss, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(un->sun_path) + 1));
    memset(un->sun_path, 'p', sizeof un->sun_path); /* a full path without its NUL */
    check_addr(&ss, sizeof *un);
    memset(un->sun_path, 0, sizeof un->sun_path);
    memcpy(un->sun_path, "\0abstract\0rest", 14); /* abstract, with a NUL inside */
    check_addr(&ss, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 14));
    check_addr(&ss, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1));
    ss.ss_family = AF_APPLETALK;
    check_addr(&ss, 16);
}

static void numbers_format_as_printf(void **state)
{
    (void)state;
    uint64_t edges[] = {0,         1, 9, 10, 99, 100, 4294967295ULL, 4294967296ULL, INT64_MAX, (uint64_t)INT64_MAX + 1,
                        UINT64_MAX};
    for (int i = 0; i < 2000 + (int)(sizeof edges / sizeof edges[0]); i++) {
        uint64_t v =
            i < (int)(sizeof edges / sizeof edges[0]) ? edges[i] : ((uint64_t)rnd() << 32 | rnd()) >> (rnd() % 64);
        char want[64];
        ls_buf b = {0};
        ls_buf_u64(&b, v);
        snprintf(want, sizeof want, "%llu", (unsigned long long)v);
        assert_string_equal(b.data, want);
        b.len = 0;
        ls_buf_i64(&b, (int64_t)v);
        snprintf(want, sizeof want, "%lld", (long long)(int64_t)v);
        assert_string_equal(b.data, want);
        b.len = 0;
        ls_buf_hex(&b, v);
        snprintf(want, sizeof want, "%#llx", (unsigned long long)v);
        assert_string_equal(b.data, want);
        b.len = 0;
        ls_buf_put(&b, want, 3);
        assert_int_equal(b.len, 3);
        assert_memory_equal(b.data, want, 3);
        ls_buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tcp_table_matches_the_socket_calls),
        cmocka_unit_test(many_peer_ports_need_no_filter),
        cmocka_unit_test(unix_table_matches_the_socket_calls),
        cmocka_unit_test(snapshot_paths_agree),
        cmocka_unit_test(reporter_thread_agrees),
        cmocka_unit_test(netlink_refused_falls_back),
        cmocka_unit_test(reused_number_is_dropped),
        cmocka_unit_test(duplicates_are_batched_and_closed),
        cmocka_unit_test(snapshots_while_sockets_come_and_go),
        cmocka_unit_test(addresses_format_as_inet_ntop),
        cmocka_unit_test(numbers_format_as_printf),
    };
    return cmocka_run_group_tests(tests, unit_group_setup, unit_group_teardown);
}

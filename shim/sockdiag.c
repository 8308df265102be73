/* The kernel's facts about many sockets at once (NETLINK_SOCK_DIAG), for snapshots.
 *
 * A snapshot of N tracked sockets used to ask the kernel N times for each fact (getsockname for the
 * local address, getsockopt(TCP_INFO) for the idle time): two system calls per socket, and on the
 * reporter thread (its own fd table) a pidfd_getfd and a close around each. One sock_diag dump per
 * family answers for every socket of the network namespace in a few dozen recvmsg calls: inet_diag
 * for TCP over IPv4 and IPv6 (with INET_DIAG_INFO, the same tcp_info TCP_INFO returns), unix_diag
 * for AF_UNIX (name and peer inode).
 *
 * The dump lists the sockets of the whole namespace, other processes' included, and nothing in it
 * says which fd holds which socket: it answers "what is socket inode I", never "is inode I still
 * open under our fd N" (the registry's kernel check does that, per fd). So the table is keyed by
 * inode and keeps only the inodes the caller asked for: memory grows with the tracked sockets, not
 * with the host's. TCP dumps carry a filter on the peer ports the caller saw (when there are few),
 * so the kernel does not even format the other sockets.
 *
 * Measured on this project's VM the dump is not cheaper than asking each socket on the fd the
 * kernel check has just verified: the kernel does the same per-socket work inside the dump and
 * also walks every TCP socket of the namespace (registry.c has the numbers). So snapshots use it
 * only when ls_snapshot_sockdiag is set; `make bench` measures both ways on the machine at hand.
 *
 * The netlink socket is opened on the calling thread (the reporter thread's own fd table, or the
 * host's thread at exit) with raw system calls (no hook, ours or another preload's, sees it) and
 * closed before returning. Where netlink is refused (seccomp, no sock_diag module, another network
 * namespace) the lookups simply find nothing and callers ask per socket. Never in a signal handler
 * (malloc). */
#include "ls_internal.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* Fibonacci hashing: socket inodes are a counter, so their low bits alone would cluster. */
static size_t slot_of(const ls_sockdiag *t, uint64_t ino)
{
    return (size_t)((ino * 0x9e3779b97f4a7c15ULL) >> (64 - t->bits));
}

int ls_sockdiag_init(ls_sockdiag *t, size_t cap)
{
    memset(t, 0, sizeof *t);
    t->bits = 4;
    while (((size_t)1 << t->bits) < cap * 2)
        t->bits++;
    /* Entries are set up one by one as they are asked for (ls_sockdiag_want): no need to zero
     * a few hundred bytes per socket here. */
    t->ents = malloc((cap ? cap : 1) * sizeof *t->ents);
    t->slots = calloc((size_t)1 << t->bits, sizeof *t->slots);
    if (!t->ents || !t->slots) {
        ls_sockdiag_free(t);
        return -1;
    }
    t->cap = cap;
    t->tcp_ports_ok = 1;
    return 0;
}

void ls_sockdiag_free(ls_sockdiag *t)
{
    free(t->ents);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static ls_sockdiag_ent *lookup(const ls_sockdiag *t, uint64_t ino)
{
    if (!t->slots || !ino)
        return NULL;
    size_t mask = ((size_t)1 << t->bits) - 1;
    for (size_t i = slot_of(t, ino);; i = (i + 1) & mask) {
        uint32_t k = t->slots[i];
        if (!k)
            return NULL;
        if (t->ents[k - 1].ino == ino)
            return &t->ents[k - 1];
    }
}

/* The peer the registry recorded tells which dump the socket is in, and (TCP) its peer port. */
static void want_peer(ls_sockdiag *t, const struct sockaddr *peer, socklen_t len)
{
    int port = -1;
    if (peer && len >= sizeof(struct sockaddr_in) && peer->sa_family == AF_INET) {
        t->what |= LS_SD_TCP4;
        port = ntohs(((const struct sockaddr_in *)peer)->sin_port);
    } else if (peer && len >= sizeof(struct sockaddr_in6) && peer->sa_family == AF_INET6) {
        t->what |= LS_SD_TCP6;
        port = ntohs(((const struct sockaddr_in6 *)peer)->sin6_port);
    } else if (peer && len >= sizeof(sa_family_t) && peer->sa_family == AF_UNIX) {
        t->what |= LS_SD_UNIX;
        return;
    } else { /* unknown: look everywhere, without a port filter */
        t->what |= LS_SD_TCP4 | LS_SD_TCP6 | LS_SD_UNIX;
        t->tcp_ports_ok = 0;
        return;
    }
    for (int i = 0; i < t->nports; i++)
        if (t->ports[i] == port)
            return;
    if (t->nports < LS_SD_MAX_PORTS)
        t->ports[t->nports++] = (uint16_t)port;
    else
        t->tcp_ports_ok = 0; /* many peer ports: dump every TCP socket */
}

int ls_sockdiag_want(ls_sockdiag *t, uint64_t ino, const struct sockaddr *peer, socklen_t peerlen)
{
    if (!ino || !t->slots)
        return -1;
    if (lookup(t, ino))
        return 0;
    if (t->n == t->cap)
        return -1;
    size_t mask = ((size_t)1 << t->bits) - 1, i = slot_of(t, ino);
    while (t->slots[i])
        i = (i + 1) & mask;
    ls_sockdiag_ent *e = &t->ents[t->n++];
    e->ino = ino;
    e->family = e->state = e->found = 0;
    e->locallen = e->peerlen = 0;
    e->peer_ino = 0;
    e->idle = -1;
    t->slots[i] = (uint32_t)t->n;
    want_peer(t, peer, peerlen);
    return 0;
}

long ls_sockdiag_index(const ls_sockdiag *t, uint64_t ino)
{
    const ls_sockdiag_ent *e = lookup(t, ino);
    return e ? (long)(e - t->ents) : -1;
}

const ls_sockdiag_ent *ls_sockdiag_find(const ls_sockdiag *t, uint64_t ino)
{
    const ls_sockdiag_ent *e = lookup(t, ino);
    return e && e->found ? e : NULL;
}

/* ------------------------------------------------------------------ parsing */

struct attr {
    const unsigned char *data;
    size_t len;
    int type;
};

/* Netlink attributes (struct nlattr and the older struct rtattr share this layout). */
static int next_attr(const unsigned char **p, const unsigned char *end, struct attr *a)
{
    struct nlattr na;
    if ((size_t)(end - *p) < sizeof na)
        return 0;
    memcpy(&na, *p, sizeof na);
    if (na.nla_len < sizeof na || na.nla_len > (size_t)(end - *p))
        return 0;
    a->data = *p + NLA_HDRLEN;
    a->len = na.nla_len - NLA_HDRLEN;
    a->type = na.nla_type & NLA_TYPE_MASK;
    size_t step = NLA_ALIGN(na.nla_len);
    *p = step > (size_t)(end - *p) ? end : *p + step;
    return 1;
}

/* getsockname's IPv6 scope id: the bound interface, for addresses that need one (link-local
 * unicast, interface- and link-local multicast), else 0. */
static uint32_t scope_id(const unsigned char a[16], uint32_t ifindex)
{
    int linklocal = a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
    int mcast_local = a[0] == 0xff && ((a[1] & 0x0f) == 1 || (a[1] & 0x0f) == 2);
    return linklocal || mcast_local ? ifindex : 0;
}

static socklen_t inet_addr(struct sockaddr_storage *ss, int family, const __be32 addr[4], __be16 port, uint32_t ifindex)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = port;
        memcpy(&in->sin_addr, addr, 4);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = port;
    memcpy(&in6->sin6_addr, addr, 16);
    in6->sin6_scope_id = scope_id(in6->sin6_addr.s6_addr, ifindex);
    return sizeof *in6;
}

static void parse_inet(ls_sockdiag *t, const struct nlmsghdr *h)
{
    struct inet_diag_msg m;
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof m))
        return;
    memcpy(&m, NLMSG_DATA(h), sizeof m);
    ls_sockdiag_ent *e = lookup(t, m.idiag_inode);
    if (!e || (m.idiag_family != AF_INET && m.idiag_family != AF_INET6))
        return;
    e->family = m.idiag_family;
    e->state = m.idiag_state;
    e->locallen = inet_addr(&e->local, m.idiag_family, m.id.idiag_src, m.id.idiag_sport, m.id.idiag_if);
    e->peerlen = inet_addr(&e->peer, m.idiag_family, m.id.idiag_dst, m.id.idiag_dport, m.id.idiag_if);
    e->peer_ino = 0;
    e->idle = -1;
    const unsigned char *p = (const unsigned char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof m);
    const unsigned char *end = (const unsigned char *)h + h->nlmsg_len;
    struct attr a;
    while (next_attr(&p, end, &a)) {
        size_t need = offsetof(struct tcp_info, tcpi_last_data_recv) + sizeof(uint32_t);
        if (a.type == INET_DIAG_INFO && a.len >= need) {
            struct tcp_info ti;
            memcpy(&ti, a.data, need);
            unsigned ms =
                ti.tcpi_last_data_sent < ti.tcpi_last_data_recv ? ti.tcpi_last_data_sent : ti.tcpi_last_data_recv;
            e->idle = ms / 1000.0;
        }
    }
    if (!e->found)
        t->found++;
    e->found = 1;
}

static void parse_unix(ls_sockdiag *t, const struct nlmsghdr *h)
{
    struct unix_diag_msg m;
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof m))
        return;
    memcpy(&m, NLMSG_DATA(h), sizeof m);
    ls_sockdiag_ent *e = lookup(t, m.udiag_ino);
    if (!e)
        return;
    e->family = AF_UNIX;
    e->state = m.udiag_state;
    e->idle = -1;
    e->peerlen = 0;
    e->peer_ino = 0;
    struct sockaddr_un *un = (struct sockaddr_un *)&e->local;
    memset(&e->local, 0, sizeof e->local);
    un->sun_family = AF_UNIX;
    e->locallen = sizeof(sa_family_t); /* unbound: what getsockname says */
    const unsigned char *p = (const unsigned char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof m);
    const unsigned char *end = (const unsigned char *)h + h->nlmsg_len;
    struct attr a;
    while (next_attr(&p, end, &a)) {
        if (a.type == UNIX_DIAG_NAME && a.len <= sizeof un->sun_path) {
            /* the name as bound, with the length getsockname reports (a path's NUL included) */
            memcpy(un->sun_path, a.data, a.len);
            e->locallen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + a.len);
        } else if (a.type == UNIX_DIAG_PEER && a.len >= sizeof(uint32_t)) {
            uint32_t peer;
            memcpy(&peer, a.data, sizeof peer);
            e->peer_ino = peer;
        }
    }
    if (!e->found)
        t->found++;
    e->found = 1;
}

/* ------------------------------------------------------------------ the dumps */

#define LS_TCP_CONN_STATES                                                                                             \
    ((1U << TCP_ESTABLISHED) | (1U << TCP_SYN_SENT) | (1U << TCP_SYN_RECV) | (1U << TCP_FIN_WAIT1) |                   \
     (1U << TCP_FIN_WAIT2) | (1U << TCP_CLOSE_WAIT) | (1U << TCP_LAST_ACK) | (1U << TCP_CLOSING))

/* inet_diag bytecode for "peer port is one of t->ports", built as ss builds `dport = A or dport = B`:
 *     [D_EQ A yes:next no:+12][A] [JMP no:end] [D_EQ B yes:next no:+12][B] ...
 * A true test falls through to a JMP to the end (accept); a false one skips its JMP to the next
 * test; the last one's false jumps 4 bytes past the end (reject). The kernel's audit wants every
 * "no" target on the chain of "yes" jumps, which this layout keeps. */
static size_t port_filter(const ls_sockdiag *t, unsigned char *out)
{
    const size_t test = 2 * sizeof(struct inet_diag_bc_op), jmp = sizeof(struct inet_diag_bc_op);
    size_t len = (size_t)t->nports * (test + jmp) - jmp, at = 0;
    for (int i = 0; i < t->nports; i++) {
        struct inet_diag_bc_op op[2] = {{INET_DIAG_BC_D_EQ, (unsigned char)test, (unsigned short)(test + jmp)},
                                        {0, 0, t->ports[i]}};
        memcpy(out + at, op, sizeof op);
        at += test;
        if (i + 1 < t->nports) {
            struct inet_diag_bc_op j = {INET_DIAG_BC_JMP, (unsigned char)jmp, (unsigned short)(len - at)};
            memcpy(out + at, &j, sizeof j);
            at += jmp;
        }
    }
    return len;
}

static int send_request(int nl, int family, unsigned ext, const ls_sockdiag *t)
{
    struct {
        struct nlmsghdr h;
        union {
            struct inet_diag_req_v2 inet;
            struct unix_diag_req unix_;
        } r;
        struct nlattr bc_hdr;
        unsigned char bc[LS_SD_MAX_PORTS * 3 * sizeof(struct inet_diag_bc_op)];
    } req;
    memset(&req, 0, sizeof req);
    size_t len;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = (uint32_t)family;
    if (family == AF_UNIX) {
        req.r.unix_.sdiag_family = AF_UNIX;
        req.r.unix_.udiag_states = ~0U;
        req.r.unix_.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER;
        len = NLMSG_LENGTH(sizeof req.r.unix_);
    } else {
        req.r.inet.sdiag_family = (uint8_t)family;
        req.r.inet.sdiag_protocol = IPPROTO_TCP;
        req.r.inet.idiag_ext = (uint8_t)ext;
        /* The states a connection is in, from SYN_SENT to LAST_ACK; not listeners, not TIME_WAIT or
         * request minisockets (no inode), and not CLOSE: asking for it makes the kernel walk its
         * whole bind table too (bound-but-inactive sockets), which doubled the cost of a dump. A
         * closed socket still tracked is asked per socket. */
        req.r.inet.idiag_states = LS_TCP_CONN_STATES;
        len = NLMSG_LENGTH(sizeof req.r.inet);
        if (t->tcp_ports_ok && t->nports > 0) {
            size_t bl = port_filter(t, req.bc);
            req.bc_hdr.nla_type = INET_DIAG_REQ_BYTECODE;
            req.bc_hdr.nla_len = (uint16_t)(NLA_HDRLEN + bl);
            len = NLMSG_ALIGN(len) + NLA_HDRLEN + bl;
        }
    }
    req.h.nlmsg_len = (uint32_t)len;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    for (;;) {
        long r = syscall(SYS_sendto, nl, &req, len, 0, &kernel, sizeof kernel);
        if (r == (long)len)
            return 0;
        if (r < 0 && errno == EINTR)
            continue;
        return -1;
    }
}

/* One dump: 0 when the kernel said NLMSG_DONE, -1 when it refused or the answer was cut. */
static int dump(int nl, int family, unsigned ext, ls_sockdiag *t, unsigned char *buf, size_t cap)
{
    if (send_request(nl, family, ext, t) != 0)
        return -1;
    for (;;) {
        long n = syscall(SYS_recvfrom, nl, buf, cap, MSG_TRUNC, NULL, NULL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (size_t)n > cap) /* error, or a message larger than the buffer (cut) */
            return -1;
        const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
        size_t left = (size_t)n;
        for (; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
            if (h->nlmsg_seq != (uint32_t)family)
                continue;
            if (h->nlmsg_type == NLMSG_DONE)
                return 0;
            if (h->nlmsg_type == NLMSG_ERROR)
                return -1;
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY)
                continue;
            if (family == AF_UNIX)
                parse_unix(t, h);
            else
                parse_inet(t, h);
        }
    }
}

int ls_sockdiag_fill(ls_sockdiag *t, unsigned flags)
{
    if (!t->slots)
        return -1;
    unsigned what = t->what & flags;
    if (!what || !t->n)
        return 0;
    /* A dump message is at most 32 KiB (the kernel's cap); twice that, so a cut shows as MSG_TRUNC. */
    size_t cap = 64 * 1024;
    unsigned char *buf = malloc(cap);
    if (!buf)
        return -1;
    unsigned ext = flags & LS_SD_INFO ? 1U << (INET_DIAG_INFO - 1) : 0;
    static const struct {
        unsigned bit;
        int family;
    } dumps[] = {{LS_SD_TCP4, AF_INET}, {LS_SD_TCP6, AF_INET6}, {LS_SD_UNIX, AF_UNIX}};
    int answered = 0;
    for (size_t i = 0; i < sizeof dumps / sizeof dumps[0]; i++) {
        if (!(what & dumps[i].bit))
            continue;
        /* A socket per dump: one left half-read by a failure would refuse the next (EBUSY). */
        int nl = (int)syscall(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (nl < 0)
            break;
        answered += dump(nl, dumps[i].family, ext, t, buf, cap) == 0;
        ls_sys_close(nl);
    }
    free(buf);
    return answered ? answered : -1;
}

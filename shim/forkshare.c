/* Database sockets shared across fork(): a socket created before fork() and used by a child (a
 * pre-fork server's workers using the connection the master opened at import) carries one
 * protocol session for several processes, whose answers get mixed up. Reported as a bug class of
 * its own, with the socket's creation stack, in the child that uses it (from its first use) and in
 * the process that created it.
 *
 * How use is seen cheaply: only a process that inherited tracked sockets watches (ls_fs_watch);
 * there the send/write hooks ask, for a tracked fd only, whether it is an inherited socket not
 * yet seen used here. Every other process pays one load of ls_fs_watch per send or write.
 *
 * How the creator learns it: at the first fork() with tracked sockets the forking process maps a
 * small table shared with all its descendants (MAP_SHARED | MAP_ANONYMOUS), with one slot per
 * tracked socket (its inode); a child that uses one adds its pid to the slot. The creator's
 * snapshots and exit report read the slot. */
#include "ls_report.h"
#include "registry_int.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FS_SLOTS 4096 /* sockets followed across forks; more are simply not followed */
#define FS_PIDS 8     /* processes named per socket; more are counted */

typedef struct fs_slot {
    uint64_t ino;   /* 0: free (claimed with a compare-and-swap) */
    int32_t owner;  /* the process that registered it (forked with it open) */
    uint32_t users; /* processes other than the owner that used it */
    int32_t pids[FS_PIDS];
} fs_slot;

static fs_slot *fs_tab;
int ls_fs_watch;       /* this process inherited tracked sockets: send/write hooks look at tracked fds */
static int fs_pending; /* inherited sockets not yet seen used here; watching stops at 0 */

static size_t slot_hash(uint64_t ino)
{
    ino ^= ino >> 29;
    ino *= 0xbf58476d1ce4e5b9ull;
    ino ^= ino >> 32;
    return (size_t)ino & (FS_SLOTS - 1);
}

/* The slot of ino, claimed if create; -1 if none (or the table is full). */
static int slot_of(uint64_t ino, int create, int32_t me)
{
    if (!fs_tab || !ino)
        return -1;
    size_t j = slot_hash(ino);
    for (int n = 0; n < FS_SLOTS; n++, j = (j + 1) & (FS_SLOTS - 1)) {
        uint64_t cur = __atomic_load_n(&fs_tab[j].ino, __ATOMIC_ACQUIRE);
        if (cur == ino)
            return (int)j;
        if (cur)
            continue;
        if (!create)
            return -1;
        uint64_t zero = 0;
        if (__atomic_compare_exchange_n(&fs_tab[j].ino, &zero, ino, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&fs_tab[j].owner, me, __ATOMIC_RELEASE);
            return (int)j;
        }
        if (zero == ino)
            return (int)j;
    }
    return -1;
}

/* fork() hook, parent, normal context, before the real fork: every tracked socket gets a slot. */
void ls_forkshare_prepare(void)
{
    if (!__atomic_load_n(&ls_reg_conns, __ATOMIC_RELAXED))
        return;
    if (!fs_tab) {
        void *p = mmap(NULL, FS_SLOTS * sizeof(fs_slot), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return;
        fs_tab = p;
    }
    int32_t me = (int32_t)syscall(SYS_getpid);
    pthread_mutex_lock(&ls_reg_lock);
    conn *c, *tmp;
    HASH_ITER(hh, ls_reg_conns, c, tmp)
    {
        if (!c->fs_slot) {
            int s = slot_of(c->ino, 1, me);
            c->fs_slot = s + 1;
        }
    }
    pthread_mutex_unlock(&ls_reg_lock);
}

/* atfork child (single thread, no malloc): what is inherited has not been used here yet. */
void ls_forkshare_child(void)
{
    int n = 0;
    conn *c, *tmp;
    HASH_ITER(hh, ls_reg_conns, c, tmp)
    {
        c->fs_used = 0;
        n += c->fs_slot != 0;
    }
    fs_pending = n;
    __atomic_store_n(&ls_fs_watch, n > 0, __ATOMIC_RELEASE);
}

/* How many processes other than the one that registered the socket used it after a fork. */
int ls_forkshare_users(const conn *c)
{
    if (!fs_tab || !c->fs_slot)
        return 0;
    return (int)__atomic_load_n(&fs_tab[c->fs_slot - 1].users, __ATOMIC_ACQUIRE);
}

static void add_user(int slot, int32_t me)
{
    fs_slot *s = &fs_tab[slot];
    if (__atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) == me)
        return;
    for (int i = 0; i < FS_PIDS; i++) {
        int32_t cur = __atomic_load_n(&s->pids[i], __ATOMIC_ACQUIRE);
        if (cur == me)
            return;
        if (!cur) {
            int32_t zero = 0;
            if (__atomic_compare_exchange_n(&s->pids[i], &zero, me, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                break;
            if (zero == me)
                return;
        }
    }
    __atomic_fetch_add(&s->users, 1, __ATOMIC_ACQ_REL);
}

/* The first user frame of a Python stack ("app.py:12 in <module>"), or "" */
static void user_line(ls_stack_id id, char *out, size_t cap)
{
    const ls_stack *st = ls_stack_get(id);
    out[0] = 0;
    for (int i = 0; st && st->is_py && i < st->n; i++) {
        char lib[32];
        if (ls_classify_pyframe(st->pyframes[i].file, lib, sizeof lib) == LS_FC_USER) {
            snprintf(out, cap, ", created at %s:%d in %s", st->pyframes[i].file, st->pyframes[i].line,
                     st->pyframes[i].func);
            return;
        }
    }
}

static void note_use(void *arg)
{
    int fd = *(const int *)arg;
    pthread_mutex_lock(&ls_reg_lock);
    conn *c = ls_reg_fd_get(fd);
    if (!c || !c->inherited || c->fs_used) {
        pthread_mutex_unlock(&ls_reg_lock);
        return;
    }
    c->fs_used = 1;
    if (--fs_pending <= 0)
        __atomic_store_n(&ls_fs_watch, 0, __ATOMIC_RELEASE);
    int slot = c->fs_slot - 1, driver = c->driver;
    handle *h = c->handle ? ls_reg_handle_get(c->handle) : NULL;
    if (h && driver == LS_DRV_NONE)
        driver = h->driver;
    ls_stack_id py = h && h->pystack ? h->pystack : c->pystack;
    struct sockaddr_storage peer = c->peer;
    socklen_t peerlen = c->peerlen;
    pthread_mutex_unlock(&ls_reg_lock);
    int32_t me = (int32_t)syscall(SYS_getpid);
    if (slot >= 0)
        add_user(slot, me);
    char addr[160], where[LS_PATH_LEN + 160];
    ls_addr_format(addr, sizeof addr, &peer, peerlen);
    user_line(py, where, sizeof where);
    const char *svc = ls_service_name(driver, (const struct sockaddr *)&peer, peerlen);
    ls_warn("pid %d uses a %s connection to %s (%s) opened before fork() by pid %d%s: shared across fork, its "
            "answers can reach the wrong process",
            (int)me, svc ? svc : "database", addr, ls_driver_name(driver), (int)getppid(), where);
}

/* send/write hooks, ls_fs_watch set: fd is about to be used by this process. */
void ls_forkshare_use(int fd)
{
    if (LS_LIKELY(!ls_fd_tracked(fd)) || !ls_registry_owner())
        return;
    ls_on_private_stack(note_use, &fd);
}

/* Shared by the registry's files only (registry.c: the tables and their events; snapshot.c: the
 * kernel-checked copies reports read). Not part of the core API (ls_internal.h). */
#ifndef LS_REGISTRY_INT_H
#define LS_REGISTRY_INT_H

#include "ls_internal.h"
#include "ls_uthash.h"

#include <pthread.h>

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
    int before_attach;    /* found open at attach time */
    uint64_t attr, seq;   /* attribution at creation, creation number (attrib.c) */
    int fs_slot, fs_used; /* forkshare.c: its slot + 1 in the table shared across fork; used here */
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
    uint64_t attr, seq, co_attr, co_seq;
    UT_hash_handle hh;
} handle;

typedef struct fd_over { /* fds beyond FDTAB_MAX */
    int fd;
    conn *c;
    UT_hash_handle hh;
} fd_over;

/* The tables (registry.c), all under ls_reg_lock. */
extern conn *ls_reg_conns;     /* by socket inode */
extern handle *ls_reg_handles; /* by handle address */
extern pthread_mutex_t ls_reg_lock;
extern uint64_t ls_reg_closed_behind; /* entries dropped because the kernel said the fd was gone */

conn *ls_reg_fd_get(int fd);                         /* the socket tracked under fd, lock-free for fds < FDTAB_MAX */
handle *ls_reg_handle_get(uintptr_t h);              /* caller holds ls_reg_lock */
void ls_reg_unmap_fd(int fd);                        /* caller holds ls_reg_lock: fd no longer holds its socket */
int ls_reg_state_of(const conn *c, const handle *h); /* enum ls_state; caller holds ls_reg_lock */
/* Sockets forgotten (closed, or found closed) per driver, whole run; under ls_reg_lock. Read by
 * timeline.c, which counts live sockets in one pass under the lock instead of copying them. */
extern uint64_t ls_reg_closed_by_driver[LS_DRV_COUNT];

/* Sockets shared across fork (forkshare.c). */
void ls_forkshare_child(void);         /* atfork child, after ls_on_fork_child */
int ls_forkshare_users(const conn *c); /* processes other than its creator that used it */

#endif

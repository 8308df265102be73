/*
 * MariaDB Connector/C and MySQL client hooks: tie each MYSQL handle to its socket.
 *
 *   mysql_real_connect   mysql_init allocated the handle; this connects it. The socket is made
 *                        inside and adopted by the handle when the call succeeds.
 *   mysql_close          the handle is forgotten before the driver closes and frees it.
 *
 * Auto-reconnect (MYSQL_OPT_RECONNECT): when a command finds the connection gone, the driver's
 * own mariadb_reconnect() (libmysqlclient's mysql_reconnect) connects a private MYSQL on its stack
 * with mysql_real_connect(&tmp, ..., flags | CLIENT_REMEMBER_OPTIONS), then mysql_close()s the
 * user's handle and copies tmp over it. Both calls go through the PLT and reach our hooks, called
 * from inside the driver. Registering &tmp would leave a "leaked" handle at a stack address and
 * mark the user's live handle freed; instead the private connect leaves its socket pending, and
 * the internal mysql_close of the user's handle that follows adopts it into that handle, which
 * stays live.
 *
 * mysql_change_user re-authenticates on the same socket: nothing to hook.
 */
#include "hook_driver.h"

typedef struct st_mysql MYSQL; /* opaque: the shim needs no client header */

#define LS_CLIENT_REMEMBER_OPTIONS (1UL << 31)

static MYSQL *(*real_mysql_real_connect)(MYSQL *, const char *, const char *, const char *, const char *, unsigned int,
                                         const char *, unsigned long);
static void (*real_mysql_close)(MYSQL *);

static LS_TLS int my_depth;
/* The private MYSQL a reconnect inside the driver just connected on this thread, 0 if none. */
static LS_TLS uintptr_t tls_reconnect_tmp;

/* Is this return address inside the client library itself (a call the driver makes to its own
 * exported entry point), rather than in the program or another library? */
static int called_from_driver(void *ret)
{
    static uintptr_t driver_base; /* load address of the object defining the real functions */
    int e = errno;
    Dl_info info;
    if (!driver_base && real_mysql_real_connect && dladdr((void *)real_mysql_real_connect, &info))
        driver_base = (uintptr_t)info.dli_fbase;
    int inside = driver_base && dladdr(ret, &info) && (uintptr_t)info.dli_fbase == driver_base;
    errno = e;
    return inside;
}

static MYSQL *ls_hook_mysql_real_connect(MYSQL *mysql, const char *host, const char *user, const char *passwd,
                                         const char *db, unsigned int port, const char *unix_socket,
                                         unsigned long clientflag)
{
    DRV_RESOLVE(mysql_real_connect);
    if (LS_UNLIKELY(!real_mysql_real_connect))
        return NULL; /* the driver is not loaded: its failure value */
    if (ls_in_shim || my_depth)
        return real_mysql_real_connect(mysql, host, user, passwd, db, port, unix_socket, clientflag);
    int reconnect = (clientflag & LS_CLIENT_REMEMBER_OPTIONS) && called_from_driver(__builtin_return_address(0));
    my_depth++;
    ls_ctx prev = drv_enter(LS_DRV_MYSQL, 0, 0, 0);
    MYSQL *r = real_mysql_real_connect(mysql, host, user, passwd, db, port, unix_socket, clientflag);
    drv_leave(prev);
    my_depth--;
    if (reconnect) {
        /* Its socket stays pending for the user's handle: see mysql_close. */
        tls_reconnect_tmp = r ? (uintptr_t)mysql : 0;
        return r;
    }
    drv_opened(LS_DRV_MYSQL, LS_HK_CLIENT, (uintptr_t)r, 0);
    return r;
}

static void ls_hook_mysql_close(MYSQL *mysql)
{
    DRV_RESOLVE(mysql_close);
    if (LS_UNLIKELY(!real_mysql_close))
        return;
    if (ls_in_shim || !mysql) {
        real_mysql_close(mysql);
        return;
    }
    uintptr_t tmp = tls_reconnect_tmp;
    tls_reconnect_tmp = 0;
    if (tmp && called_from_driver(__builtin_return_address(0))) {
        if ((uintptr_t)mysql != tmp) {
            /* The reconnect swap: the user's handle gets the new socket and stays live; the old
             * socket (if the driver had not closed it already) closes under it now. */
            LS_RECORD(ls_handle_adopt_pending((uintptr_t)mysql));
        }
        /* else: the reconnect failed after connecting (character set); its socket just closes */
        real_mysql_close(mysql);
        return;
    }
    drv_closing((uintptr_t)mysql);
    real_mysql_close(mysql);
}

/* Patched into every loaded object's import slots by hook_dl.c. */
const ls_got_hook ls_mysql_hooks[] = {
    DRV_HOOK(mysql_real_connect),
    DRV_HOOK(mysql_close),
};
const size_t ls_mysql_nhooks = sizeof ls_mysql_hooks / sizeof ls_mysql_hooks[0];

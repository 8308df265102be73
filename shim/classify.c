/* Which sockets are databases' (by port, Unix socket path, or the driver that opened them) and the
 * names reports give drivers, services, handle types and states: all from drivers.def. */
#include "ls_internal.h"

#include <fnmatch.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

/* ------------------------------------------------------------------ classification */

/* The basename of a Unix socket's path (abstract names: the name after the NUL) into buf, which
 * has room for sun_path + 1 bytes; returns a pointer into buf, or NULL if sa is not AF_UNIX. */
static const char *unix_base(const struct sockaddr *sa, socklen_t len, char *buf)
{
    if (!sa || sa->sa_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path))
        return NULL;
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t n = len - offsetof(struct sockaddr_un, sun_path);
    if (n > sizeof un->sun_path)
        n = sizeof un->sun_path;
    memcpy(buf, un->sun_path, n);
    buf[n] = 0;
    if (!buf[0]) /* abstract socket: match the name after the NUL */
        memmove(buf, buf + 1, n);
    const char *base = strrchr(buf, '/');
    return base ? base + 1 : buf;
}

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
    char path[sizeof((struct sockaddr_un *)0)->sun_path + 1];
    const char *base = unix_base(sa, len, path);
    if (base) {
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
    char path[sizeof((struct sockaddr_un *)0)->sun_path + 1];
    const char *base = unix_base(sa, len, path);
    if (base) {
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

/* Which sockets are databases' (by port, Unix socket path, or the driver that opened them) and the
 * names reports give drivers, services, handle types and states: all from drivers.def. */
#include "ls_internal.h"

#include <fnmatch.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

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

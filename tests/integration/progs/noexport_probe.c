/* Probes for database drivers the way optional-support code does: dlsym(RTLD_DEFAULT) and weak
 * references. Built without any driver, every probe must say "absent", with or without the shim
 * (the shim hooks the drivers without exporting their names). Built with -lpq, the probes find
 * libpq itself, and argv[1] (if given) is a conninfo to connect to and leak. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr */
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef struct pg_conn PGconn; /* opaque: no driver header */

extern PGconn *PQconnectdb(const char *conninfo) __attribute__((weak));
extern int PQstatus(const PGconn *conn) __attribute__((weak));
extern void *redisConnect(const char *ip, int port) __attribute__((weak));
extern void *mongoc_client_new(const char *uri) __attribute__((weak));
extern void *mysql_real_connect(void *mysql, const char *host, const char *user, const char *passwd, const char *db,
                                unsigned int port, const char *unix_socket, unsigned long flags) __attribute__((weak));

/* The file name of the object defining p (dladdr), or "absent". */
static const char *where(void *p)
{
    Dl_info info;
    if (!p)
        return "absent";
    if (!dladdr(p, &info) || !info.dli_fname)
        return "present";
    const char *slash = strrchr(info.dli_fname, '/');
    return slash ? slash + 1 : info.dli_fname;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"PQconnectdb",
                                        "PQconnectStart",
                                        "PQfinish",
                                        "redisConnect",
                                        "redisFree",
                                        "mongoc_client_new",
                                        "mongoc_client_default_stream_initiator",
                                        "mysql_real_connect",
                                        "mysql_close"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        printf("dlsym %s: %s\n", names[i], where(dlsym(RTLD_DEFAULT, names[i])));
    /* Weak references: only present or absent (a patched address-of is the hook's, by design). */
    printf("weak PQconnectdb: %s\n", PQconnectdb ? "present" : "absent");
    printf("weak redisConnect: %s\n", redisConnect ? "present" : "absent");
    printf("weak mongoc_client_new: %s\n", mongoc_client_new ? "present" : "absent");
    printf("weak mysql_real_connect: %s\n", mysql_real_connect ? "present" : "absent");
    if (PQconnectdb && PQstatus && argc > 1) {
        PGconn *conn = PQconnectdb(argv[1]); /* kept open: the leak */
        printf("PQconnectdb: %s\n", PQstatus(conn) == 0 ? "connected" : "failed");
    }
    return 0;
}

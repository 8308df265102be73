/* Loads a plugin at run time, RTLD_LOCAL as Python loads extension modules, and calls its
 * plugin_connect(conninfo); the plugin links libpq, which comes in with it.
 *
 *   noexport_dlhost PLUGIN CONNINFO [ROUNDS]   ROUNDS > 1: dlclose and dlopen the plugin again
 *                                             between calls (libpq is kept loaded meanwhile)
 *   noexport_dlhost --dlsym CONNINFO [finish]  PQconnectdb (and PQfinish) through pointers from
 *                                             dlsym() on a libpq handle
 *
 * PLUGIN may be a bare name: dlopen then searches the host's RUNPATH, as the loader does. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr */
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pg_conn PGconn; /* opaque: no driver header */

static int via_dlsym(const char *conninfo, int finish)
{
    void *pq = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (!pq) {
        printf("dlopen failed: %s\n", dlerror());
        return 3;
    }
    PGconn *(*connectdb)(const char *) = (PGconn * (*)(const char *)) dlsym(pq, "PQconnectdb");
    int (*status)(const PGconn *) = (int (*)(const PGconn *))dlsym(pq, "PQstatus");
    void (*pqfinish)(PGconn *) = (void (*)(PGconn *))dlsym(pq, "PQfinish");
    PGconn *conn = connectdb(conninfo); /* kept open unless `finish`: the leak */
    printf("PQconnectdb via dlsym: %s\n", status(conn) == 0 ? "connected" : "failed");
    if (finish) {
        pqfinish(conn);
        printf("PQfinish via dlsym\n");
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PLUGIN|--dlsym CONNINFO [ROUNDS|finish]\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "--dlsym"))
        return via_dlsym(argv[2], argc > 3 && !strcmp(argv[3], "finish"));
    int rounds = argc > 3 ? atoi(argv[3]) : 1;
    if (rounds > 1 && !dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL)) {
        printf("dlopen failed: %s\n", dlerror());
        return 3;
    }
    for (int i = 0; i < rounds; i++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            printf("dlopen failed: %s\n", dlerror());
            return 3;
        }
        int (*plugin_connect)(const char *) = (int (*)(const char *))dlsym(h, "plugin_connect");
        if (!plugin_connect) {
            printf("dlsym failed: %s\n", dlerror());
            return 4;
        }
        printf("round %d: %s\n", i, plugin_connect(argv[2]) == 0 ? "connected" : "failed");
        if (i + 1 < rounds) {
            dlclose(h);
            void *again = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD); /* no reference left behind */
            printf("round %d: %s after dlclose\n", i, again ? "still loaded" : "unloaded");
            if (again)
                dlclose(again);
        }
    }
    return 0;
}

/* `leakshim attach` and `leakshim detach` (tools/attach.c), called from the command table in
 * tools/leakshim.c, which lends them what it already has: finding the shim and checking options. */
#ifndef LS_TOOL_ATTACH_H
#define LS_TOOL_ATTACH_H

#include <stddef.h>

typedef struct ls_attach_env {
    int (*find_shim)(char *out, size_t cap);         /* 0 and the path, or -1 */
    int (*check_options)(const char *opts, int pid); /* problems found (each printed as one line) */
} ls_attach_env;

/* argv: the command's own arguments. Return the exit status: 0 done, 1 refused or failed
 * (nothing changed in the process), 2 usage error or invalid options. */
int ls_tool_attach(int argc, char **argv, const ls_attach_env *env);
int ls_tool_detach(int argc, char **argv, const ls_attach_env *env);

#endif

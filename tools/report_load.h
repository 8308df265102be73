/* Saved JSON reports read back for `leakshim report` and `leakshim diff` (tools/report_load.c).
 * Parsed with cJSON (Debian's libcjson-dev): a well-kept parser, not one of our own, reads files
 * that may come from anywhere. The loader only reads what the report says (the shim's report model
 * computed every number); what it adds is the key that matches a group across processes. */
#ifndef LS_REPORT_LOAD_H
#define LS_REPORT_LOAD_H

#include <cjson/cJSON.h>
#include <stdio.h>

typedef struct rp_frame {
    char *text;      /* "func (file:line)", "symbol (module+0xoff)" */
    char *key;       /* what matches it across processes: the text, or module+offset without a line */
    int user;        /* the user's own code */
    const char *lib; /* the library's name, or NULL */
} rp_frame;

typedef struct rp_stack { /* a stack as a person reads it: the user's frame first */
    rp_frame *f;          /* f[0]: the frame a person looks at first, then its callers */
    int n;
    int inner; /* frames inside libraries before it (innermost first), listed after: f[n .. n+inner) */
} rp_stack;

typedef struct rp_group {
    const cJSON *j; /* the group's object in its report */
    int index;      /* in the report's "groups" */
    const char *category, *title, *driver, *service;
    int leak, suppressed, count, sockets;
    char *key; /* category, driver and the frames from the user's line out: equal across processes */
    rp_stack stack;
} rp_group;

typedef struct rp_file {
    const char *path;
    cJSON *root;
    int pid;
    const char *program, *kind;
    double time;
    int leaks;
    rp_group *groups;
    int ngroups;
} rp_file;

/* Reads the report in path (one JSON document; of a file with several, the last). 0, or -1 with
 * a one-line reason written to err. */
int rp_load(rp_file *f, const char *path, FILE *err);
void rp_free(rp_file *f);
/* The readable form of the stack at `where` ({stack, frame}) of f, or of stack id `id` (frame -1:
 * its user frame). */
void rp_stack_of(const rp_file *f, const cJSON *where_or_null, int id, rp_stack *out);
void rp_stack_free(rp_stack *s);
/* The key of a stack: its frames from the user's line out, as text (for matching). */
char *rp_stack_key(const rp_stack *s);
const cJSON *rp_get(const cJSON *o, const char *k); /* object member, NULL if absent */
const char *rp_str(const cJSON *o, const char *k);  /* string member or NULL */
double rp_num(const cJSON *o, const char *k, double def);
char *rp_strdup(const char *s);

/* The commands (leakshim.c's table calls them). */
int ls_tool_report(int argc, char **argv);
int ls_tool_diff(int argc, char **argv);

/* Groups of several reports merged by key (report_cmd.c): "leaked in 6 of 8 processes, 41 in all". */
typedef struct rp_merged {
    const char *key;
    const rp_group *first; /* as the first report holding it has it */
    int procs;             /* reports holding it */
    long total;            /* its count summed over them */
    int leak;
} rp_merged;
/* The merged groups, leaks first, then by total (most first). Free with free(). */
rp_merged *rp_merge(const rp_file *files, int n, int *count);
/* The merged group's one-line heading: the title itself for one report. */
char *rp_merged_title(const rp_merged *m, int nfiles);
/* The HTML page (tools/html.c). */
void html_render(FILE *out, const rp_file *files, int n);

#endif

/* `leakshim diff OLD.json NEW.json`: what grew between two snapshots of one process, or two runs
 * (a baseline and a candidate), by group (matched by the stack a person would fix, as `report`
 * merges them): new groups, groups that grew and by how much, with their stacks.
 *
 * Exit status, for CI: 0 nothing grew, 1 a group is new or grew, 2 a usage error or a file that
 * is not a report. --min N ignores growth smaller than N (the saw-tooth of a busy pool). */
#include "report_load.h"

#include <stdlib.h>
#include <string.h>

static long count_of(const rp_file *f, const char *key)
{
    long c = 0;
    for (int j = 0; j < f->ngroups; j++)
        if (!strcmp(f->groups[j].key, key))
            c += f->groups[j].count;
    return c;
}

static void show_stack(const rp_stack *s)
{
    for (int i = 0; i < s->n; i++)
        printf("    %s %s\n", i == 0 ? "at" : "  ", s->f[i].text);
    if (!s->n)
        printf("    (no stack)\n");
}

int ls_tool_diff(int argc, char **argv)
{
    long min = 1;
    const char *paths[2];
    int np = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--min") && i + 1 < argc) {
            char *end;
            min = strtol(argv[++i], &end, 10);
            if (*end || min < 1) {
                fprintf(stderr, "leakshim diff: --min takes a whole number of at least 1, not '%s'\n", argv[i]);
                return 2;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "leakshim diff: unknown flag '%s'\nusage: leakshim diff [--min N] OLD.json NEW.json\n",
                    argv[i]);
            return 2;
        } else if (np < 2)
            paths[np++] = argv[i];
        else
            np = 3;
    }
    if (np != 2) {
        fprintf(stderr, "leakshim diff: expected two reports\nusage: leakshim diff [--min N] OLD.json NEW.json\n");
        return 2;
    }
    rp_file f[2];
    if (rp_load(&f[0], paths[0], stderr) < 0)
        return 2;
    if (rp_load(&f[1], paths[1], stderr) < 0) {
        rp_free(&f[0]);
        return 2;
    }
    int nm, grew = 0, gone = 0;
    rp_merged *m = rp_merge(&f[1], 1, &nm); /* NEW's groups, one entry per key */
    for (int i = 0; i < nm; i++) {
        long before = count_of(&f[0], m[i].key), after = m[i].total;
        if (after - before < min)
            continue;
        const rp_group *g = m[i].first;
        if (!grew++)
            printf("leakshim diff: %s -> %s\n", paths[0], paths[1]);
        if (before == 0)
            printf("NEW   +%ld %s %s (%s): %ld now\n", after, g->service ? g->service : "?",
                   g->driver ? g->driver : "?", g->category ? g->category : "?", after);
        else
            printf("GREW  +%ld %s %s (%s): %ld -> %ld\n", after - before, g->service ? g->service : "?",
                   g->driver ? g->driver : "?", g->category ? g->category : "?", before, after);
        show_stack(&g->stack);
    }
    free(m);
    m = rp_merge(&f[0], 1, &nm); /* OLD's groups that shrank or went: one line each */
    for (int i = 0; i < nm; i++) {
        long after = count_of(&f[1], m[i].key);
        if (after < m[i].total)
            gone++;
    }
    free(m);
    if (grew)
        printf("leakshim diff: %d group%s new or grown", grew, grew == 1 ? "" : "s");
    else
        printf("leakshim diff: nothing grew between %s and %s", paths[0], paths[1]);
    printf("%s\n", gone ? "; some shrank or went" : "");
    rp_free(&f[0]);
    rp_free(&f[1]);
    return grew ? 1 : 0;
}

/* leakshim: the command-line tool. Runs a program under the shim, takes a snapshot of a running
 * one, prints and checks LEAKSHIM_OPTIONS. Every command, flag and exit status is described once,
 * in the commands[] table below: `--help`, the usage lines and the man page's SYNOPSIS, COMMANDS
 * and EXIT STATUS sections are all printed from it (the man page's OPTIONS section comes from the
 * options table in shim/options.c), so none of them can drift from what the code accepts.
 *
 *   leakshim run [--options OPTS] [--] CMD [ARGS...]
 *   leakshim dump [--json] [--sockets] [--timeout SECONDS] PID
 *   leakshim attach [--options OPTS] [--timeout SECONDS] [--verbose] PID   (tools/attach.c)
 *   leakshim detach [--timeout SECONDS] [--verbose] PID
 *   leakshim options [--markdown | --scdoc]
 *   leakshim check-options OPTS
 *   leakshim version | --version
 *   leakshim help [COMMAND] | --help
 */
#include "../shim/ls_internal.h"
#include "../shim/ls_outfile.h"
#include "../shim/ls_suggest.h"
#include "../shim/ls_version.h"
#include "report_load.h"
#include "attach.h"

#include <ctype.h>
#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Where `make install` puts the shim: LIBDIR, and LIBDIR relative to BINDIR (set by the Makefile
 * from the same variables install uses). */
#ifndef LEAKSHIM_LIBDIR
#define LEAKSHIM_LIBDIR "/usr/local/lib"
#endif
#ifndef LEAKSHIM_LIB_REL
#define LEAKSHIM_LIB_REL "../lib"
#endif

/* ------------------------------------------------------------------ the commands, documented */

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_CANNOT_EXEC = 126, EXIT_NOT_FOUND = 127 };

typedef struct {
    const char *names; /* "-h, --help" */
    const char *arg;   /* "OPTS", or NULL */
    const char *help;  /* one sentence */
} flag_doc;

typedef struct {
    const char *code; /* "0", "127", "N" */
    const char *meaning;
} exit_doc;

typedef struct command {
    const char *name;
    const char *args;    /* the synopsis after the name */
    const char *summary; /* one line, for the list of commands */
    const char *about;   /* what it does, a paragraph */
    int (*fn)(const struct command *c, int argc, char **argv);
    flag_doc flags[5];
    exit_doc exits[6];
} command;

static int cmd_run(const command *c, int argc, char **argv);
static int cmd_dump_(const command *c, int argc, char **argv);
static int cmd_options(const command *c, int argc, char **argv);
static int cmd_check_options(const command *c, int argc, char **argv);
static int cmd_version(const command *c, int argc, char **argv);
static int cmd_help(const command *c, int argc, char **argv);
static int cmd_report(const command *c, int argc, char **argv); /* tools/report_cmd.c */
static int cmd_diff(const command *c, int argc, char **argv);   /* tools/diff.c */
static int cmd_attach(const command *c, int argc, char **argv);
static int cmd_detach(const command *c, int argc, char **argv);

#define HELP_FLAG                                                                                                      \
    {                                                                                                                  \
        "-h, --help", NULL, "Print this help and exit."                                                                \
    }
#define EXIT_USAGE_DOC                                                                                                 \
    {                                                                                                                  \
        "2", "Usage error: an unknown flag, a bad flag value, a missing or extra argument."                            \
    }

static const command commands[] = {
    {"run",
     "[--options OPTS] [--] CMD [ARGS...]",
     "Run a program with the shim preloaded, after checking its options.",
     "Checks the options (those already in LEAKSHIM_OPTIONS, then those given with --options) as check-options "
     "does, report file included, and starts nothing if any is wrong. Then runs CMD in place of this tool (same "
     "process, same pid) with libleakshim.so added to LD_PRELOAD and the options in LEAKSHIM_OPTIONS. The library "
     "is taken from LEAKSHIM_LIB when that is set, else looked for beside this tool (" LEAKSHIM_LIB_REL
     "/libleakshim.so relative to the tool's directory, or the build tree's shim/libleakshim.so), else "
     "in " LEAKSHIM_LIBDIR ".",
     cmd_run,
     {{"--options", "OPTS",
       "LEAKSHIM_OPTIONS items (key=value:key=value...) to add after those already in the environment; a later "
       "item wins, and the flag may be given more than once."},
      {"--", NULL, "End of leakshim's flags: what follows is the command, even if it starts with '-'."},
      HELP_FLAG},
     {{"1", "libleakshim.so cannot be found: nothing was started."},
      {"2", "Invalid options or a usage error: nothing was started."},
      {"126", "CMD was found but could not be executed."},
      {"127", "CMD was not found."},
      {"N", "Otherwise, the program's own exit status (exitcode=N's status when it leaked database connections)."}}},
    {"dump",
     "[--json] [--sockets] [--timeout SECONDS] PID",
     "Print a snapshot of the database connections a running, shimmed process holds.",
     "Asks process PID, which must run under the shim, for a snapshot of its live database connections, grouped "
     "by the stack that created them, suspects first, and prints it. The request goes to the shim's own thread "
     "over a private socket: nothing is written to the program's output or files, and no signal is sent.",
     cmd_dump_,
     {{"--json", NULL, "Print the snapshot as one JSON document instead of text."},
      {"--sockets", NULL, "In text, also list every socket under its group, one line each (JSON always has them all)."},
      {"--timeout", "SECONDS", "Give up after this many seconds (default 10, at most 86400)."},
      HELP_FLAG},
     {{"0", "The snapshot was printed, or the process has tracked no database connection yet."},
      {"1", "No such process, it does not run the shim, or it sent no snapshot in time."},
      EXIT_USAGE_DOC}},
    {"attach",
     "[--options OPTS] [--timeout SECONDS] [--verbose] PID",
     "Load the shim into a running process and start tracking its database connections.",
     "For a process that was not started under the shim: gdb stops it, loads libleakshim.so into it at a safe "
     "point (a thread blocked in a harmless libc call), starts tracking and detaches, within a second or so. "
     "Connections open at that moment are listed as opened before attach, without a stack; driver handles and "
     "pools created before are not known. New ones are tracked with their stacks, Python ones too in CPython. "
     "leakshim dump, the dump signal and the exit report then work as under leakshim run. Needs gdb, the right "
     "to trace the process (same user, or CAP_SYS_PTRACE; see kernel.yama.ptrace_scope) and a dynamically "
     "linked glibc program in this tool's PID, network and mount namespaces; otherwise one line says why and "
     "nothing is done.",
     cmd_attach,
     {{"--options", "OPTS",
       "LEAKSHIM_OPTIONS items for the process (its environment cannot change), checked first as check-options "
       "does. Taken at the first attach only."},
      {"--timeout", "SECONDS", "How long to wait for a thread to reach a safe point (default 20, at most 3600)."},
      {"--verbose", NULL, "Print gdb's output."},
      HELP_FLAG},
     {{"0", "Attached (or re-attached after detach)."},
      {"1", "Refused or failed, with one line saying why: the process was left as it was."},
      EXIT_USAGE_DOC}},
    {"detach",
     "[--timeout SECONDS] [--verbose] PID",
     "Stop tracking in a process leakshim attach loaded the shim into.",
     "Pauses the shim in process PID: its hooks pass every call through, nothing new is recorded and no exit "
     "report is written. The library stays loaded (a thread may be inside a hook); leakshim attach resumes.",
     cmd_detach,
     {{"--timeout", "SECONDS", "How long to wait for a thread to reach a safe point (default 20, at most 3600)."},
      {"--verbose", NULL, "Print gdb's output."},
      HELP_FLAG},
     {{"0", "Detached."},
      {"1", "Refused or failed (not attached, for one), with one line saying why."},
      EXIT_USAGE_DOC}},
    {"options",
     "[--markdown | --scdoc]",
     "Print the LEAKSHIM_OPTIONS keys with their defaults, values and meaning.",
     "Prints the table of LEAKSHIM_OPTIONS keys the shim reads: a colon-separated key=value list, as ASAN_OPTIONS.",
     cmd_options,
     {{"--markdown", NULL, "Print the table in Markdown (the README's table)."},
      {"--scdoc", NULL, "Print the table in scdoc(5), for the man page's OPTIONS section."},
      HELP_FLAG},
     {{"0", "The table was printed."}, EXIT_USAGE_DOC}},
    {"check-options",
     "OPTS",
     "Check a LEAKSHIM_OPTIONS string, and the report file it names, without running anything.",
     "Reads OPTS as the shim would and prints each problem in the line the shim would print: malformed items, "
     "unknown keys (with the key probably meant), bad values. Then checks that the report file (report=PATH, "
     "with %p as this tool's pid; also PATH.json when format=both) could be written under the shim's rules: its "
     "directory exists, this user may create or write the file there, neither that directory nor any above it is "
     "writable by others without the sticky bit, and an existing file is not a symbolic link and is a private "
     "file of this user. Nothing is created. A relative PATH is taken from the current directory.",
     cmd_check_options,
     {HELP_FLAG},
     {{"0", "The options are valid and the report file can be written."},
      {"2", "A problem was found (printed), or a usage error."}}},
    {"report",
     "[--format text|json|html] [-o OUT] FILE.json...",
     "Render saved JSON reports as text, JSON or one self-contained HTML page; several are merged.",
     "Reads leakshim JSON reports (format=json files, `leakshim dump --json` output; of a file holding several, "
     "the last) and renders them. html is one file with inline CSS and SVG and nothing fetched from elsewhere: "
     "the timeline chart (live connections per group over time, leak groups in red, pools' highest counts as "
     "dashed lines), then the leak groups and suspects with their stacks (the user's frame first), pools and the "
     "churn table. Several reports (the workers of one service, several pods) are merged by the stack a person "
     "would fix: \"leaked in 6 of 8 processes, 41 in all\".",
     cmd_report,
     {{"--format", "FORMAT", "text (default), json (the merged groups) or html."},
      {"-o", "OUT", "Write to OUT instead of standard output."},
      HELP_FLAG},
     {{"0", "The report was written."},
      {"1", "A file could not be read or is not a leakshim JSON report, or OUT could not be written."},
      EXIT_USAGE_DOC}},
    {"diff",
     "[--min N] OLD.json NEW.json",
     "Show what grew between two reports, by group; exits 1 when something grew (a CI check).",
     "Matches the groups of two JSON reports (two snapshots of one process, or a baseline run and a candidate) "
     "by the stack a person would fix and prints each group that is new or grew, by how much, with its stack.",
     cmd_diff,
     {{"--min", "N", "Ignore growth smaller than N (default 1)."}, HELP_FLAG},
     {{"0", "Nothing grew."},
      {"1", "A group is new or grew by at least N."},
      {"2", "A usage error, or a file that is not a leakshim JSON report."}}},
    {"version",
     "",
     "Print the version.",
     "Prints \"leakshim\" and the version, as --version does.",
     cmd_version,
     {HELP_FLAG},
     {{"0", "The version was printed."}, EXIT_USAGE_DOC}},
    {"help",
     "[COMMAND]",
     "Print the help of leakshim or of one command.",
     "Prints the help of COMMAND, as leakshim COMMAND --help does; without COMMAND, leakshim's own help.",
     cmd_help,
     {{"--scdoc", "[SECTION]",
       "Print the man page's sections made from this help in scdoc(5): SECTION is synopsis, commands or "
       "exit-status; all three without it."},
      HELP_FLAG},
     {{"0", "The help was printed."}, EXIT_USAGE_DOC}},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const flag_doc top_flags[] = {
    {"-h, --help", NULL, "Print this help and exit."},
    {"--version", NULL, "Print the version and exit."},
};

static const exit_doc top_exits[] = {
    {"0", "Success."},
    {"1", "Failure: e.g. the process to dump does not exist or does not run the shim, or libleakshim.so cannot be "
          "found; for diff: a group is new or grew."},
    {"2", "Usage error or invalid options: nothing was run."},
    {"126", "run: the command was found but could not be executed."},
    {"127", "run: the command was not found."},
    {"N", "run: otherwise the program's own exit status (or exitcode=N's status when it leaked)."},
};

/* The command running now: usage() describes it. */
static const command *current;

/* ------------------------------------------------------------------ help as text */

#define WIDTH 80

/* Writes text wrapped at WIDTH columns; the cursor is at column col; continuation lines start at
 * column indent. Ends with a newline. */
static void wrap(FILE *f, const char *text, int col, int indent)
{
    const char *p = text;
    int first = 1;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (!n)
            break;
        if (!first && col + 1 + (int)n > WIDTH) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (!first) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, n, f);
        col += (int)n;
        p += n;
        first = 0;
    }
    fputc('\n', f);
}

/* "  NAME  text": a two-column row, the text wrapped in its column. */
static void row(FILE *f, const char *name, const char *arg, int namecol, const char *text)
{
    int n = fprintf(f, "  %s%s%s", name, arg ? " " : "", arg ? arg : "");
    if (n > namecol - 1) /* too wide for its column: the text starts on the next line */
        fprintf(f, "\n%*s", namecol, "");
    else
        fprintf(f, "%*s", namecol - n, "");
    wrap(f, text, namecol, namecol);
}

static size_t nflags(const command *c)
{
    size_t n = 0;
    while (n < sizeof c->flags / sizeof c->flags[0] && c->flags[n].names)
        n++;
    return n;
}

static size_t nexits(const command *c)
{
    size_t n = 0;
    while (n < sizeof c->exits / sizeof c->exits[0] && c->exits[n].code)
        n++;
    return n;
}

static void synopsis(FILE *f, const command *c, const char *lead)
{
    fprintf(f, "%sleakshim %s%s%s\n", lead, c->name, c->args[0] ? " " : "", c->args);
}

/* Short usage, for usage errors: the synopsis of the command running (or of all), and where to
 * read more. */
static void usage(FILE *f)
{
    if (current) {
        synopsis(f, current, "usage: ");
        fprintf(f, "Run 'leakshim %s --help' for more.\n", current->name);
        return;
    }
    for (size_t i = 0; i < NCOMMANDS; i++)
        synopsis(f, &commands[i], i ? "       " : "usage: ");
    fputs("       leakshim --version | --help\nRun 'leakshim --help' for more.\n", f);
}

static void command_help(FILE *f, const command *c)
{
    synopsis(f, c, "usage: ");
    fputc('\n', f);
    wrap(f, c->about, 0, 0);
    fputs("\nFlags:\n", f);
    for (size_t i = 0; i < nflags(c); i++)
        row(f, c->flags[i].names, c->flags[i].arg, 20, c->flags[i].help);
    fputs("\nExit status:\n", f);
    for (size_t i = 0; i < nexits(c); i++)
        row(f, c->exits[i].code, NULL, 8, c->exits[i].meaning);
}

static void top_help(FILE *f)
{
    fputs("usage: leakshim COMMAND [ARGS...]\n"
          "       leakshim --version | --help\n\n",
          f);
    wrap(f,
         "Finds the code that leaks database connections: runs a program under the shim (libleakshim.so, "
         "LD_PRELOAD), which tracks every database connection it opens and reports those never closed at exit, "
         "or asks a program already running under the shim for a snapshot.",
         0, 0);
    fputs("\nCommands:\n", f);
    for (size_t i = 0; i < NCOMMANDS; i++)
        row(f, commands[i].name, NULL, 17, commands[i].summary);
    fputs("\nFlags:\n", f);
    for (size_t i = 0; i < sizeof top_flags / sizeof top_flags[0]; i++)
        row(f, top_flags[i].names, top_flags[i].arg, 17, top_flags[i].help);
    fputs("\nExit status:\n", f);
    for (size_t i = 0; i < sizeof top_exits / sizeof top_exits[0]; i++)
        row(f, top_exits[i].code, NULL, 8, top_exits[i].meaning);
    fputc('\n', f);
    wrap(f,
         "Run 'leakshim COMMAND --help' for a command's flags, 'leakshim options' for the LEAKSHIM_OPTIONS keys, "
         "and 'man leakshim' for the whole story.",
         0, 0);
}

static int is_help(const char *a)
{
    return !strcmp(a, "-h") || !strcmp(a, "--help");
}

/* ------------------------------------------------------------------ help as scdoc(5) */

/* Text with scdoc's markup characters escaped. */
static void scd_text(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n && s[i]; i++) {
        if (s[i] == '*' || s[i] == '_' || s[i] == '\\')
            fputc('\\', f);
        fputc(s[i], f);
    }
}

/* A synopsis or flag: flags bold, METAVARIABLES underlined, the rest as is. */
static void scd_syntax(FILE *f, const char *s)
{
    while (*s) {
        size_t n;
        if (*s == '-' && (s[1] == '-' || isalpha((unsigned char)s[1]))) {
            n = strspn(s, "-abcdefghijklmnopqrstuvwxyz");
            fputc('*', f);
            scd_text(f, s, n);
            fputc('*', f);
        } else if (isupper((unsigned char)*s)) {
            n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
            fputc('_', f);
            scd_text(f, s, n);
            fputc('_', f);
        } else {
            n = 1;
            scd_text(f, s, 1);
        }
        s += n;
    }
}

static void scd_flag(FILE *f, const flag_doc *fl, const char *indent)
{
    fprintf(f, "%s", indent);
    scd_syntax(f, fl->names);
    if (fl->arg) {
        fputc(' ', f);
        scd_syntax(f, fl->arg);
    }
    fprintf(f, "\n%s\t", indent);
    scd_text(f, fl->help, strlen(fl->help));
    fputs("\n\n", f);
}

static void scd_synopsis(FILE *f, const command *c)
{
    fprintf(f, "*leakshim %s*", c->name);
    if (c->args[0]) {
        fputc(' ', f);
        scd_syntax(f, c->args);
    }
}

/* The man page's sections that come from commands[]: "synopsis", "commands" (with the top
 * level's flags) or "exit-status"; NULL for all three. 0, or -1 for an unknown section. */
static int help_scdoc(FILE *f, const char *section)
{
    int all = !section, done = 0;
    if (all || !strcmp(section, "synopsis")) {
        fputs("# SYNOPSIS\n\n", f);
        for (size_t i = 0; i < NCOMMANDS; i++) {
            scd_synopsis(f, &commands[i]);
            fputs("\n\n", f);
        }
        fputs("*leakshim* *--version* | *--help*\n\n", f);
        done = 1;
    }
    if (all || !strcmp(section, "commands")) {
        fputs("# COMMANDS\n\n", f);
        for (size_t i = 0; i < NCOMMANDS; i++) {
            const command *c = &commands[i];
            scd_synopsis(f, c);
            fputs("\n\t", f);
            scd_text(f, c->about, strlen(c->about));
            fputs("\n\n", f);
            for (size_t k = 0; k < nflags(c); k++)
                scd_flag(f, &c->flags[k], "\t");
            fputs("\tExit status:\n\n", f);
            for (size_t k = 0; k < nexits(c); k++) {
                fprintf(f, "\t- *%s*: ", c->exits[k].code);
                scd_text(f, c->exits[k].meaning, strlen(c->exits[k].meaning));
                fputc('\n', f);
            }
            fputc('\n', f);
        }
        fputs("# FLAGS\n\n", f);
        for (size_t i = 0; i < sizeof top_flags / sizeof top_flags[0]; i++)
            scd_flag(f, &top_flags[i], "");
        done = 1;
    }
    if (all || !strcmp(section, "exit-status")) {
        fputs("# EXIT STATUS\n\n", f);
        for (size_t i = 0; i < sizeof top_exits / sizeof top_exits[0]; i++) {
            fprintf(f, "*%s*\n\t", top_exits[i].code);
            scd_text(f, top_exits[i].meaning, strlen(top_exits[i].meaning));
            fputs("\n\n", f);
        }
        done = 1;
    }
    return done ? 0 : -1;
}

/* The options table in scdoc(5), rebuilt from its Markdown rendering (ls_options_help), so that
 * the man page lists exactly the keys, defaults and values the shim parses with. A row is
 * "| `name` | `default` | `values` | meaning |", pipes in the meaning escaped as "\|". */
static int options_scdoc(FILE *f)
{
    ls_buf b = {0};
    ls_options_help(&b, 1);
    int bad = !b.data;
    for (char *line = b.data, *next; !bad && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        if (!strncmp(line, "| option |", 10) || !strncmp(line, "| --- |", 7))
            continue;
        const char *field[4];
        size_t flen[4];
        const char *p = line, *seps[4] = {"| `", "` | `", "` | `", "` | "};
        for (int k = 0; k < 4 && !bad; k++) {
            bad = strncmp(p, seps[k], strlen(seps[k])) != 0;
            p += strlen(seps[k]);
            field[k] = p;
            const char *end = k < 3 ? strstr(p, k < 2 ? "` | `" : "` | ") : p + strlen(p) - 2;
            bad = bad || !end || end < p || (k == 3 && strcmp(end, " |"));
            flen[k] = bad ? 0 : (size_t)(end - p);
            p = bad ? p : end;
        }
        if (bad) {
            fprintf(stderr, "leakshim options: cannot read this row of the options table: '%s'\n", line);
            break;
        }
        fputc('*', f);
        scd_text(f, field[0], flen[0]);
        fputs("*=_", f);
        scd_text(f, field[2], flen[2]);
        fputs("_\n\t", f);
        /* the meaning: `code` spans in bold, "\|" a pipe */
        int code = 0;
        for (size_t i = 0; i < flen[3]; i++) {
            char ch = field[3][i];
            if (ch == '`')
                fputc('*', f), code = !code;
            else if (ch == '\\' && i + 1 < flen[3] && field[3][i + 1] == '|')
                ;
            else
                scd_text(f, &ch, 1);
        }
        if (code)
            fputc('*', f);
        fputs(". Default: ", f);
        if (!flen[1])
            fputs("empty", f);
        /* a list as words, so that it can be filled: "5432, 6432, ..." */
        for (size_t i = 0; i < flen[1];) {
            size_t n = strcspn(field[1] + i, ",");
            n = n < flen[1] - i ? n : flen[1] - i;
            fputs(i ? ", *" : "*", f);
            scd_text(f, field[1] + i, n);
            fputc('*', f);
            i += n + 1;
        }
        fputs(".\n\n", f);
    }
    ls_buf_free(&b);
    return bad ? EXIT_FAIL : EXIT_OK;
}

/* ------------------------------------------------------------------ errors, did you mean */

/* "'--option'; did you mean '--options'?" suffix for an unknown flag of c (or of the top level). */
static const char *flag_suggestion(const command *c, const char *a)
{
    const char *names[16];
    static char buf[16][24];
    size_t n = 0;
    const flag_doc *fl = c ? c->flags : top_flags;
    size_t nf = c ? nflags(c) : sizeof top_flags / sizeof top_flags[0];
    for (size_t i = 0; i < nf; i++)
        for (const char *p = fl[i].names; *p && n < 16;) {
            size_t len = strcspn(p, ", ");
            if (len && len < sizeof buf[n]) {
                memcpy(buf[n], p, len);
                buf[n][len] = 0;
                names[n] = buf[n];
                n++;
            }
            p += len;
            p += strspn(p, ", ");
        }
    const char *eq = strchr(a, '=');
    return ls_suggest(a, eq ? (size_t)(eq - a) : strlen(a), names, n);
}

static int unknown_flag(const command *c, const char *a)
{
    const char *meant = flag_suggestion(c, a);
    fprintf(stderr, "leakshim%s%s: unknown flag '%s'", c ? " " : "", c ? c->name : "", a);
    if (meant)
        fprintf(stderr, "; did you mean '%s'?", meant);
    fputc('\n', stderr);
    usage(stderr);
    return EXIT_USAGE;
}

static int unknown_command(const char *name)
{
    const char *names[NCOMMANDS];
    for (size_t i = 0; i < NCOMMANDS; i++)
        names[i] = commands[i].name;
    const char *meant = ls_suggest(name, strlen(name), names, NCOMMANDS);
    fprintf(stderr, "leakshim: unknown command '%s'", name);
    if (meant)
        fprintf(stderr, "; did you mean '%s'?", meant);
    fputs("\nRun 'leakshim --help' for the commands.\n", stderr);
    return EXIT_USAGE;
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(name, commands[i].name))
            return &commands[i];
    return NULL;
}

/* ------------------------------------------------------------------ checking options */

typedef struct {
    const char *prefix; /* "leakshim" or "leakshim run" */
    int cut;            /* drop what the shim would do about it (nothing will run) */
    int problems;
} check_ctx;

/* The shim's option lines end with what it does about the problem ("; using the default 'x'",
 * "; exitcode is not set: ..."). Where nothing will run, that part is not true: it is cut. */
static void print_problem(const char *msg, void *arg)
{
    check_ctx *cx = arg;
    static const char *const what_next[] = {"; using the default '",
                                            "; exitcode is not set:", "; the shim would write it to stderr"};
    size_t len = strlen(msg);
    for (size_t i = 0; cx->cut && i < sizeof what_next / sizeof what_next[0]; i++)
        for (const char *p = strstr(msg, what_next[i]); p; p = strstr(p + 1, what_next[i]))
            if ((size_t)(p - msg) < len)
                len = (size_t)(p - msg);
    cx->problems++;
    fprintf(stderr, "%s: %.*s\n", cx->prefix, (int)len, msg);
}

/* A report destination as the shim will name it: %p expanded to pid, suffix appended. */
static void expand_report(const char *pat, int pid, const char *suffix, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = pat; *p && o + 1 < cap; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            int n = snprintf(out + o, cap - o, "%d", pid);
            o = n < 0 ? o : o + (size_t)n < cap ? o + (size_t)n : cap - 1;
            p++;
        } else
            out[o++] = *p;
    }
    out[o] = 0;
    snprintf(out + o, cap - o, "%s", suffix);
}

/* Checks opts as the shim will read them, and that the report file could be written (%p as pid).
 * Prints each problem; returns their number. */
static int check_options(const char *opts, int pid, check_ctx *cx)
{
    ls_options o;
    ls_options_defaults(&o);
    ls_options_parse(&o, opts, print_problem, cx);
    if (strcmp(o.report, "stderr") != 0) {
        int two = o.format == LS_FMT_BOTH && ls_out_fd_of(o.report) < 0;
        for (int k = 0; k <= two; k++) {
            char path[PATH_MAX], why[256], msg[PATH_MAX + 512], shown[128];
            expand_report(o.report, pid, k ? ".json" : "", path, sizeof path);
            if (ls_out_check(path, why, sizeof why) == 0)
                continue;
            ls_escape(shown, sizeof shown, path, strlen(path));
            snprintf(msg, sizeof msg,
                     "LEAKSHIM_OPTIONS: cannot write report to '%s': %s; the shim would write it to stderr instead",
                     shown, why);
            print_problem(msg, cx);
        }
    }
    return cx->problems;
}

/* ------------------------------------------------------------------ run */

/* The shim: LEAKSHIM_LIB if set; else beside this tool (installed: BINDIR/LIB_REL; build tree:
 * tools/../shim; build/asan/../../shim); else LIBDIR. 0 and the path in out, or -1. */
static int find_shim(char *out, size_t cap)
{
    const char *env = getenv("LEAKSHIM_LIB");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return access(out, R_OK);
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            const char *rel[] = {"/" LEAKSHIM_LIB_REL "/libleakshim.so", "/../shim/libleakshim.so",
                                 "/../../shim/libleakshim.so"};
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
                char cand[PATH_MAX + 64];
                snprintf(cand, sizeof cand, "%s%s", self, rel[i]);
                if (access(cand, R_OK) == 0 && realpath(cand, out))
                    return 0;
            }
        }
    }
    snprintf(out, cap, "%s/libleakshim.so", LEAKSHIM_LIBDIR);
    return access(out, R_OK);
}

/* "a" + ":" + "b", either may be NULL or empty; malloc'ed (no fixed limit: options are never cut). */
static char *join_opts(const char *a, const char *b)
{
    size_t la = a ? strlen(a) : 0, lb = b ? strlen(b) : 0;
    char *s = malloc(la + lb + 2);
    if (s)
        snprintf(s, la + lb + 2, "%s%s%s", a ? a : "", la && lb ? ":" : "", b ? b : "");
    return s;
}

static int cmd_run(const command *c, int argc, char **argv)
{
    char *opts = NULL;
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (is_help(a)) {
            free(opts);
            command_help(stdout, c);
            return EXIT_OK;
        }
        if (!strcmp(a, "--options") || !strncmp(a, "--options=", 10)) {
            const char *v = a[9] == '=' ? a + 10 : i + 1 < argc ? argv[++i] : NULL;
            if (!v) {
                free(opts);
                fprintf(stderr, "leakshim run: --options needs a value (key=value:key=value...)\n");
                usage(stderr);
                return EXIT_USAGE;
            }
            char *more = join_opts(opts, v);
            free(opts);
            if (!(opts = more)) {
                fprintf(stderr, "leakshim run: out of memory\n");
                return EXIT_FAIL;
            }
        } else if (a[0] == '-') {
            free(opts);
            return unknown_flag(c, a);
        } else
            break;
    }
    if (i >= argc) {
        free(opts);
        fprintf(stderr, "leakshim run: no command given\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    /* Options already in the environment come first; --options after them (a later item wins). */
    char *merged = join_opts(getenv("LEAKSHIM_OPTIONS"), opts);
    free(opts);
    if (!merged) {
        fprintf(stderr, "leakshim run: out of memory\n");
        return EXIT_FAIL;
    }
    check_ctx cx = {"leakshim run", 1, 0};
    if (check_options(merged, (int)getpid(), &cx)) { /* exec keeps the pid: %p is exact */
        fprintf(stderr, "leakshim run: %d problem%s in the options; nothing was started\n", cx.problems,
                cx.problems == 1 ? "" : "s");
        free(merged);
        return EXIT_USAGE;
    }
    char shim[PATH_MAX];
    if (find_shim(shim, sizeof shim) != 0) {
        const char *env = getenv("LEAKSHIM_LIB");
        if (env && *env)
            fprintf(stderr, "leakshim run: cannot read LEAKSHIM_LIB '%s': %s; nothing was started\n", env,
                    strerror(errno));
        else
            fprintf(stderr,
                    "leakshim run: cannot find libleakshim.so (looked beside this tool and in %s; set "
                    "LEAKSHIM_LIB); nothing was started\n",
                    LEAKSHIM_LIBDIR);
        free(merged);
        return EXIT_FAIL;
    }
    char *preload = join_opts(shim, getenv("LD_PRELOAD"));
    if (!preload) {
        fprintf(stderr, "leakshim run: out of memory\n");
        free(merged);
        return EXIT_FAIL;
    }
    setenv("LD_PRELOAD", preload, 1); /* setenv copies: ours are freed either way */
    setenv("LEAKSHIM_OPTIONS", merged, 1);
    free(preload);
    free(merged);
    execvp(argv[i], argv + i);
    int e = errno;
    fprintf(stderr, "leakshim run: cannot run '%s': %s\n", argv[i], strerror(e));
    return e == ENOENT || e == ENOTDIR ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
}

/* ------------------------------------------------------------------ dump */

static int has_shim(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, "libleakshim") != NULL;
    fclose(f);
    return found;
}

/* Does the process have the shim's reporter thread (named "leakshim")? */
static int has_reporter(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char cpath[320], comm[32] = "";
        snprintf(cpath, sizeof cpath, "/proc/%d/task/%s/comm", pid, e->d_name);
        FILE *f = fopen(cpath, "re");
        if (f) {
            found = fgets(comm, sizeof comm, f) && !strcmp(comm, "leakshim\n");
            fclose(f);
        }
    }
    closedir(d);
    return found;
}

/* Connects to the target's private channel, "@leakshim.PID" (or ".1".."8" when the name was
 * squatted), accepting only a socket whose owner is PID itself (SO_PEERCRED): a socket planted
 * under that name by another process is never read. Returns the fd, or -1. */
static int channel_connect(int pid)
{
    for (int k = 0; k <= 8; k++) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            return -1;
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        int n = k ? snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "leakshim.%d.%d", pid, k)
                  : snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "leakshim.%d", pid);
        socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
        struct ucred cr;
        socklen_t crlen = sizeof cr;
        if (connect(s, (struct sockaddr *)&a, len) == 0 && getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0 &&
            cr.pid == pid)
            return s;
        close(s);
    }
    return -1;
}

/* A timeout: a finite number of seconds, > 0. */
static int parse_timeout(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x > 0) || x > 86400 || !isdigit((unsigned char)v[0]))
        return -1;
    *out = x;
    return 0;
}

static int cmd_dump(int argc, char **argv)
{
    int json = 0, sockets = 0;
    double timeout = 10;
    const char *pidarg = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--sockets"))
            sockets = 1; /* text: one line per socket under its group (JSON always has them all) */
        else if (!strcmp(argv[i], "--timeout") || !strncmp(argv[i], "--timeout=", 10)) {
            const char *v = argv[i][9] == '=' ? argv[i] + 10 : (i + 1 < argc ? argv[++i] : "");
            if (parse_timeout(v, &timeout) != 0) {
                fprintf(stderr, "leakshim dump: --timeout takes a number of seconds (0 < N <= 86400), not '%s'\n", v);
                return 2;
            }
        } else if (argv[i][0] != '-' && !pidarg)
            pidarg = argv[i];
        else {
            fprintf(stderr, "leakshim dump: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char *end;
    errno = 0;
    long pid = pidarg ? strtol(pidarg, &end, 10) : 0;
    if (!pidarg || !isdigit((unsigned char)pidarg[0]) || *end || errno || pid <= 0 || pid > INT_MAX) {
        fprintf(stderr, "leakshim dump: expected a PID\n");
        usage(stderr);
        return 2;
    }
    int shimmed = has_shim((int)pid);
    if (shimmed < 0) {
        fprintf(stderr, "leakshim dump: no process %ld (or not allowed to read it)\n", pid);
        return 1;
    }
    if (!shimmed) {
        fprintf(stderr,
                "leakshim dump: process %ld is not running under leakshim (libleakshim.so is not loaded; "
                "`leakshim attach %ld` loads it)\n",
                pid, pid);
        return 1;
    }
    /* The channel opens with the reporter thread (named "leakshim"), which starts when the first
     * connection is tracked: while that thread exists, its channel is coming. */
    int s = channel_connect((int)pid);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (s < 0 && has_reporter((int)pid)) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 > timeout)
            break;
        struct timespec step = {0, 5 * 1000 * 1000};
        nanosleep(&step, NULL); /* polling the target's state, bounded by --timeout */
        s = channel_connect((int)pid);
    }
    if (s < 0) {
        if (has_reporter((int)pid))
            fprintf(stderr,
                    "leakshim dump: process %ld offers no dump channel (its kernel refuses pidfd_getfd?); "
                    "`kill -USR2 %ld` writes a snapshot to its report destination\n",
                    pid, pid);
        else
            fprintf(stderr, "leakshim dump: process %ld runs leakshim but has tracked no database connection yet\n",
                    pid);
        return has_reporter((int)pid) ? 1 : 0;
    }
    struct timeval tv = {.tv_sec = (time_t)timeout,
                         .tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const char *req =
        json ? (sockets ? "dump json sockets\n" : "dump json\n") : (sockets ? "dump text sockets\n" : "dump text\n");
    if (send(s, req, strlen(req), MSG_NOSIGNAL) < 0) {
        fprintf(stderr, "leakshim dump: cannot ask process %ld for a snapshot: %s\n", pid, strerror(errno));
        close(s);
        return 1;
    }
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "leakshim dump: no complete snapshot from process %ld in %gs: %s\n", pid, timeout,
                    strerror(errno == EAGAIN ? ETIMEDOUT : errno));
            close(s);
            return 1;
        }
        if (n == 0)
            break;
        fwrite(buf, 1, (size_t)n, stdout);
        total += (size_t)n;
    }
    close(s);
    if (!total) {
        fprintf(stderr, "leakshim dump: process %ld closed the channel without a snapshot\n", pid);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_dump_(const command *c, int argc, char **argv)
{
    (void)c;
    return cmd_dump(argc, argv);
}

/* ------------------------------------------------------------------ attach, detach (tools/attach.c) */

static int attach_check_options(const char *opts, int pid)
{
    check_ctx cx = {"leakshim attach", 1, 0};
    return check_options(opts, pid, &cx);
}

static const ls_attach_env attach_env = {find_shim, attach_check_options};

static int cmd_attach(const command *c, int argc, char **argv)
{
    (void)c;
    return ls_tool_attach(argc, argv, &attach_env);
}

static int cmd_detach(const command *c, int argc, char **argv)
{
    (void)c;
    return ls_tool_detach(argc, argv, &attach_env);
}

/* ------------------------------------------------------------------ options, check-options */

static int cmd_options(const command *c, int argc, char **argv)
{
    int format = 0; /* 0 text, 1 markdown, 2 scdoc */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--markdown"))
            format = 1;
        else if (!strcmp(argv[i], "--scdoc"))
            format = 2;
        else if (argv[i][0] == '-')
            return unknown_flag(c, argv[i]);
        else {
            fprintf(stderr, "leakshim options: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (format == 2)
        return options_scdoc(stdout);
    ls_buf b = {0};
    ls_options_help(&b, format);
    if (b.data)
        fputs(b.data, stdout);
    ls_buf_free(&b);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
}

static int cmd_check_options(const command *c, int argc, char **argv)
{
    (void)c;
    if (argc > 0 && !strcmp(argv[0], "--"))
        argc--, argv++;
    if (argc != 1) {
        fprintf(stderr, "leakshim check-options: %s\n",
                argc ? "expected one option string (quote it if it has spaces)" : "no option string given");
        usage(stderr);
        return EXIT_USAGE;
    }
    check_ctx cx = {"leakshim", 0, 0};
    if (check_options(argv[0], (int)getpid(), &cx)) {
        fprintf(stderr, "leakshim check-options: %d problem%s\n", cx.problems, cx.problems == 1 ? "" : "s");
        return EXIT_USAGE;
    }
    ls_options o;
    ls_options_defaults(&o);
    ls_options_parse(&o, argv[0], NULL, NULL);
    if (o.exitcode)
        printf("leakshim check-options: ok; leaked database connections make the program exit with status %d\n",
               o.exitcode);
    else
        printf("leakshim check-options: ok; leaks are reported but do not change the exit status (exitcode=0)\n");
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
}

/* ------------------------------------------------------------------ report, diff (tools/report_cmd.c, diff.c) */

static int cmd_report(const command *c, int argc, char **argv)
{
    (void)c;
    return ls_tool_report(argc, argv);
}

static int cmd_diff(const command *c, int argc, char **argv)
{
    (void)c;
    return ls_tool_diff(argc, argv);
}

/* ------------------------------------------------------------------ version, help */

static int cmd_version(const command *c, int argc, char **argv)
{
    if (argc > 0 && argv[0][0] == '-')
        return unknown_flag(c, argv[0]);
    if (argc > 0) {
        fprintf(stderr, "leakshim version: unexpected argument '%s'\n", argv[0]);
        usage(stderr);
        return EXIT_USAGE;
    }
    puts("leakshim " LEAKSHIM_VERSION);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
}

static int cmd_help(const command *c, int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "--scdoc")) {
        if (argc > 2 || help_scdoc(stdout, argc == 2 ? argv[1] : NULL) < 0) {
            fprintf(stderr, "leakshim help: --scdoc takes one of synopsis, commands, exit-status\n");
            usage(stderr);
            return EXIT_USAGE;
        }
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
    }
    if (argc == 1 && argv[0][0] == '-')
        return unknown_flag(c, argv[0]);
    if (argc > 1) {
        fprintf(stderr, "leakshim help: expected at most one command\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (argc == 0) {
        top_help(stdout);
    } else {
        const command *of = find_command(argv[0]);
        if (!of)
            return unknown_command(argv[0]);
        command_help(stdout, of);
    }
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (is_help(name)) {
        top_help(stdout);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
    }
    if (!strcmp(name, "--version"))
        return cmd_version(find_command("version"), 0, NULL);
    if (name[0] == '-')
        return unknown_flag(NULL, name);
    const command *c = find_command(name);
    if (!c)
        return unknown_command(name);
    current = c;
    /* -h/--help anywhere asks for help (run reads its own flags: after CMD they are CMD's). */
    for (int i = 2; c->fn != cmd_run && i < argc; i++)
        if (is_help(argv[i])) {
            command_help(stdout, c);
            return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
        }
    return c->fn(c, argc - 2, argv + 2);
}

/* Suppressions: the file parser (lines of any length, empty patterns refused, one warning per
 * file however wrong the file is), LSan's anchoring, and matching a stack's frames. */
#include "unit.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* stderr (where ls_warn writes) captured into a file while fn runs. */
static char warned[8192];
static int nwarn; /* lines written */

static void capture_begin(int *saved, int *fd)
{
    char path[] = "/tmp/leakshim-unit-XXXXXX";
    *fd = mkstemp(path);
    assert_true(*fd >= 0);
    unlink(path);
    fflush(stderr);
    *saved = dup(2);
    assert_true(*saved >= 0);
    assert_int_equal(dup2(*fd, 2), 2);
}

static void capture_end(int saved, int fd)
{
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, warned, sizeof warned - 1, 0);
    close(fd);
    warned[n > 0 ? n : 0] = 0;
    nwarn = 0;
    for (const char *p = warned; *p; p++)
        nwarn += *p == '\n';
}

static int parse_buf(const char *data, size_t len)
{
    int saved, fd;
    capture_begin(&saved, &fd);
    int r = ls_suppressions_parse(data, len, "test.supp");
    capture_end(saved, fd);
    return r;
}

static int parse_str(const char *s)
{
    return parse_buf(s, strlen(s));
}

static int load(const char *path)
{
    int saved, fd;
    capture_begin(&saved, &fd);
    int r = ls_suppressions_load(path);
    capture_end(saved, fd);
    return r;
}

static char tmpdir[64];

static const char *write_file(const char *name, const char *data, size_t len)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    return path;
}

/* Every warning is one printable line. */
static void assert_printable_lines(void)
{
    for (const char *p = warned; *p; p++)
        assert_true(*p == '\n' || (*p >= 0x20 && *p < 0x7f));
}

static int setup(void **state)
{
    (void)state;
    ls_suppressions_clear();
    return 0;
}

static void good_file(void **state)
{
    (void)state;
    const char *s = "# known leaks\n"
                    "\n"
                    "   \t\n"
                    "leak:remember_connection\n"
                    "  leak:^libpq.so$\r\n"
                    "leak: spaced_after_colon   \n"
                    "leak:^exact_name$\n"
                    "leak:/site-packages/redis/*";
    assert_int_equal(parse_str(s), 5);
    assert_int_equal(nwarn, 0);
    assert_int_equal(ls_suppressions_count(), 5);
    assert_string_equal(ls_suppressions_pattern(0), "remember_connection");
    assert_string_equal(ls_suppressions_pattern(1), "^libpq.so$");
    assert_string_equal(ls_suppressions_pattern(2), "spaced_after_colon");
    assert_null(ls_suppressions_pattern(5));
    assert_null(ls_suppressions_pattern(-1));
    /* unanchored: anywhere; ^ and $ anchor */
    assert_true(ls_suppressions_match("x_remember_connection_y"));
    assert_true(ls_suppressions_match("libpq.so"));
    assert_false(ls_suppressions_match("/usr/lib/libpq.so"));
    assert_false(ls_suppressions_match("libpq.so.5"));
    assert_true(ls_suppressions_match("exact_name"));
    assert_false(ls_suppressions_match("exact_names"));
    assert_false(ls_suppressions_match("an_exact_name"));
    assert_true(ls_suppressions_match("/usr/lib/python3/site-packages/redis/connection.py"));
    assert_true(ls_suppressions_match("spaced_after_colon"));
    assert_false(ls_suppressions_match("main"));
    assert_false(ls_suppressions_match(""));
    assert_false(ls_suppressions_match(NULL));
    /* patterns add up across files; clear forgets them */
    assert_int_equal(parse_str("leak:main\n"), 1);
    assert_int_equal(ls_suppressions_count(), 6);
    ls_suppressions_clear();
    assert_int_equal(ls_suppressions_count(), 0);
    assert_false(ls_suppressions_match("remember_connection"));
}

/* A 600-byte line was cut at 511 bytes and its tail, "main", became a pattern of its own. */
static void long_lines_are_not_split(void **state)
{
    (void)state;
    char line[700];
    memset(line, 0, sizeof line);
    strcpy(line, "leak:");
    memset(line + 5, 'a', 600);
    strcat(line, "main\nleak:other\n");
    const char *path = write_file("long.supp", line, strlen(line));
    assert_int_equal(load(path), 2);
    assert_int_equal(nwarn, 0);
    assert_int_equal(ls_suppressions_count(), 2);
    assert_false(ls_suppressions_match("main"));
    assert_int_equal(strlen(ls_suppressions_pattern(0)), 604);
    assert_true(ls_suppressions_match(ls_suppressions_pattern(0)));
    ls_suppressions_clear();

    /* longer than a pattern may be: refused as a whole, with one warning, never in pieces */
    char *big = malloc(5000);
    assert_non_null(big);
    memset(big, 0, 5000);
    strcpy(big, "leak:");
    memset(big + 5, 'b', 3000);
    strcat(big, "main\n");
    assert_int_equal(parse_str(big), 0);
    assert_int_equal(nwarn, 1);
    assert_non_null(strstr(warned, "longer than 1024 bytes"));
    assert_non_null(strstr(warned, "line 1 "));
    assert_true(strlen(warned) < 512);
    assert_int_equal(ls_suppressions_count(), 0);
    assert_false(ls_suppressions_match("main"));
    free(big);
}

/* The 129th pattern was dropped silently. */
static void many_patterns_are_kept(void **state)
{
    (void)state;
    ls_buf b = {0};
    for (int i = 0; i < 1000; i++)
        ls_buf_printf(&b, "leak:^pattern_%d$\n", i);
    assert_int_equal(parse_buf(b.data, b.len), 1000);
    assert_int_equal(nwarn, 0);
    assert_int_equal(ls_suppressions_count(), 1000);
    assert_true(ls_suppressions_match("pattern_128"));
    assert_true(ls_suppressions_match("pattern_999"));
    assert_false(ls_suppressions_match("pattern_1000"));
    ls_buf_free(&b);
    for (int i = 0; i < 300; i++)
        assert_int_equal(ls_suppressions_add("more"), 0);
    assert_int_equal(ls_suppressions_count(), 1300);
}

/* `leak:^` (and `leak:`, `leak:$`, `leak:^$`) suppressed every leak. */
static void empty_patterns_are_refused(void **state)
{
    (void)state;
    assert_int_equal(parse_str("leak:^\nleak:\nleak:$\nleak:^$\nleak:   \nleak:^main$\n"), 1);
    assert_int_equal(nwarn, 1);
    assert_printable_lines();
    assert_non_null(strstr(warned, "test.supp"));
    assert_non_null(strstr(warned, "5 bad lines"));
    assert_non_null(strstr(warned, "line 1 (empty pattern"));
    assert_non_null(strstr(warned, "'leak:^'"));
    assert_int_equal(ls_suppressions_count(), 1);
    assert_false(ls_suppressions_match("some_other_function"));
    assert_true(ls_suppressions_match("main"));
    assert_int_equal(ls_suppressions_add(""), -1);
    assert_int_equal(ls_suppressions_add("^"), -1);
    assert_int_equal(ls_suppressions_add("$"), -1);
    assert_int_equal(ls_suppressions_add("^$"), -1);
    assert_int_equal(ls_suppressions_count(), 1);
    /* a literal ^ or $ inside a pattern is still a pattern */
    assert_int_equal(ls_suppressions_add("^^"), 0);
    assert_int_equal(ls_suppressions_add("$$"), 0);
    assert_true(ls_suppressions_match("^x"));
    assert_true(ls_suppressions_match("x$"));
    assert_false(ls_suppressions_match("x^"));
}

static void directory_and_missing_files(void **state)
{
    (void)state;
    assert_int_equal(load(tmpdir), -1);
    assert_int_equal(nwarn, 1);
    assert_non_null(strstr(warned, "is a directory"));
    assert_non_null(strstr(warned, tmpdir));

    char path[128];
    snprintf(path, sizeof path, "%s/missing.supp", tmpdir);
    assert_int_equal(load(path), -1);
    assert_int_equal(nwarn, 1);
    assert_non_null(strstr(warned, "cannot read suppressions file"));
    assert_non_null(strstr(warned, "No such file"));

    /* a control character in the path is escaped: still one line */
    snprintf(path, sizeof path, "%s/new\nline.supp", tmpdir);
    assert_int_equal(load(path), -1);
    assert_int_equal(nwarn, 1);
    assert_printable_lines();
    assert_non_null(strstr(warned, "new\\nline.supp"));

    /* /dev/zero never ends: refused at the size cap, not read forever */
    assert_int_equal(load("/dev/zero"), -1);
    assert_int_equal(nwarn, 1);
    assert_non_null(strstr(warned, "larger than"));
    assert_int_equal(ls_suppressions_count(), 0);

    /* an empty file is no patterns and no warning */
    assert_int_equal(load(write_file("empty.supp", "", 0)), 0);
    assert_int_equal(nwarn, 0);
}

/* A wrong file gave one warning per line. */
static void wrong_files_warn_once(void **state)
{
    (void)state;
    /* a text file that is not a suppressions file */
    ls_buf b = {0};
    ls_buf_puts(&b, "#!/bin/sh\n");
    for (int i = 0; i < 200; i++)
        ls_buf_printf(&b, "echo \"step %d: done\"\n", i);
    assert_int_equal(parse_buf(b.data, b.len), 0);
    assert_int_equal(nwarn, 1);
    assert_non_null(strstr(warned, "200 bad lines"));
    assert_non_null(strstr(warned, "line 2 (not leak:PATTERN): 'echo \"step 0: done\"'"));
    ls_buf_free(&b);

    /* other LSan types, a type without leak:, bare words: not ours, refused, one warning */
    assert_int_equal(parse_str("called_from_lib:libfoo.so\nLEAK:main\nleak\nmain\nleak:ok\n"), 1);
    assert_int_equal(nwarn, 1);
    assert_non_null(strstr(warned, "4 bad lines"));
    assert_int_equal(ls_suppressions_count(), 1);
    ls_suppressions_clear();

    /* a binary file (the start of an ELF executable): refused as a whole, one line */
    static const char elf[] = "\x7f"
                              "ELF\2\1\1\0\0\0\0\0\0\0\0\0\3\0>\0\1\0\0\0\nleak:main\n";
    assert_int_equal(load(write_file("elf.supp", elf, sizeof elf - 1)), -1);
    assert_int_equal(nwarn, 1);
    assert_non_null(strstr(warned, "is not a text file"));
    assert_int_equal(ls_suppressions_count(), 0);

    /* binary without NUL bytes: control characters, high bytes, escaped in the one warning */
    char bin[4096];
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (char)(1 + (i * 7919) % 255);
    assert_int_equal(parse_buf(bin, sizeof bin), 0);
    assert_int_equal(nwarn, 1);
    assert_printable_lines();
    assert_true(strlen(warned) < 512);

    /* a control character or a lone trailing backslash in a pattern: a bad line */
    assert_int_equal(parse_str("leak:ma\x01in\nleak:foo\\\nleak:foo\\\\\n"), 1);
    assert_int_equal(nwarn, 1);
    assert_non_null(strstr(warned, "2 bad lines"));
    assert_non_null(strstr(warned, "'leak:ma\\x01in'"));
    assert_true(ls_suppressions_match("foo\\"));
}

/* Big enough that pc + 1 is inside it, whatever the optimiser does. */
__attribute__((noinline)) static void victim_function(void)
{
    static volatile int x;
    x++;
    x++;
}

static void stacks_are_matched_frame_by_frame(void **state)
{
    (void)state;
    void *frames[2] = {(char *)victim_function + 1, (char *)&tmpdir};
    ls_stack_id id = ls_stack_intern(frames, 2);
    assert_true(id != 0);
    assert_false(ls_stack_suppressed(id)); /* no patterns */
    assert_int_equal(ls_suppressions_add("other_function"), 0);
    assert_false(ls_stack_suppressed(id));
    assert_int_equal(ls_suppressions_add("^victim_function$"), 0);
    assert_true(ls_stack_suppressed(id));
    assert_false(ls_stack_suppressed(0));
    ls_suppressions_clear();
    assert_false(ls_stack_suppressed(id));
    /* by module: the test binary's own path */
    assert_int_equal(ls_suppressions_add("/test_suppress$"), 0);
    assert_true(ls_stack_suppressed(id));
    ls_suppressions_clear();

    ls_pyframe py[2] = {{"/srv/app/handlers.py", "handle_report", 10}, {"/srv/app/main.py", "<module>", 3}};
    ls_stack_id pid = ls_pystack_intern(py, 2);
    assert_int_equal(ls_suppressions_add("handlers.py"), 0);
    assert_true(ls_stack_suppressed(pid));
    ls_suppressions_clear();
    assert_int_equal(ls_suppressions_add("^handle_report$"), 0);
    assert_true(ls_stack_suppressed(pid));
    ls_suppressions_clear();
    assert_int_equal(ls_suppressions_add("^handle$"), 0);
    assert_false(ls_stack_suppressed(pid));
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/leakshim-supp-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(good_file, setup),
        cmocka_unit_test_setup(long_lines_are_not_split, setup),
        cmocka_unit_test_setup(many_patterns_are_kept, setup),
        cmocka_unit_test_setup(empty_patterns_are_refused, setup),
        cmocka_unit_test_setup(directory_and_missing_files, setup),
        cmocka_unit_test_setup(wrong_files_warn_once, setup),
        cmocka_unit_test_setup(stacks_are_matched_frame_by_frame, setup),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        r = r ? r : 1;
    return r;
}

/* Report files (outfile.c): what a planted name can and cannot make the shim write to. The tests
 * run as root (as the shim in a root service would), so the owner checks are real. */
#include "unit.h"

#include "ls_outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOBODY 65534

static char top[64]; /* a private temp dir per test */
static char why[256];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    (void)state;
    snprintf(top, sizeof top, "/tmp/ls-outfile-XXXXXX");
    assert_non_null(mkdtemp(top));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    chmod(top, 0700);
    nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static const char *at(const char *name)
{
    static char p[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", top, name);
    return p[i];
}

static void put(const char *path, const char *s, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
    close(fd);
    chmod(path, mode);
}

static const char *slurp(const char *path)
{
    static char buf[256];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

/* ls_out_open must refuse path; the reason must mention want. */
static void refused(const char *path, const char *want)
{
    int owned = 7;
    why[0] = 0;
    int fd = ls_out_open(path, &owned, why, sizeof why);
    if (fd >= 0)
        ls_sys_close(fd);
    assert_int_equal(fd, -1);
    assert_int_equal(owned, 0);
    if (!strstr(why, want))
        fail_msg("reason for '%s' is '%s', expected it to mention '%s'", path, why, want);
}

/* ls_out_open must accept path (a file it opens itself); writes s to it. */
static void accepted(const char *path, const char *s)
{
    int owned = 0;
    int fd = ls_out_open(path, &owned, why, sizeof why);
    if (fd < 0)
        fail_msg("'%s' refused: %s", path, why);
    assert_int_equal(owned, 1);
    assert_int_equal(ls_write_all(fd, s, strlen(s)), 0);
    ls_sys_close(fd);
}

static void new_file_is_private_whatever_the_umask(void **state)
{
    (void)state;
    mode_t old = umask(0);
    accepted(at("r.txt"), "x");
    umask(0277); /* would take the owner's write bit away */
    accepted(at("r2.txt"), "y");
    umask(old);
    struct stat st;
    assert_int_equal(stat(at("r.txt"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(stat(at("r2.txt"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
}

static void own_file_is_appended_to(void **state)
{
    (void)state;
    accepted(at("r.txt"), "warning\n");
    accepted(at("r.txt"), "report\n");
    assert_string_equal(slurp(at("r.txt")), "warning\nreport\n");
    /* an existing file of ours that others can read but not write (an older run's 0644) */
    put(at("old.txt"), "old\n", 0644);
    accepted(at("old.txt"), "new\n");
    assert_string_equal(slurp(at("old.txt")), "old\nnew\n");
}

static void planted_symlink_to_a_file_is_refused(void **state)
{
    (void)state;
    put(at("victim"), "victim\n", 0600);
    assert_int_equal(symlink(at("victim"), at("x.123.txt")), 0);
    refused(at("x.123.txt"), "symbolic link");
    assert_string_equal(slurp(at("victim")), "victim\n");
}

static void dangling_symlink_is_refused_and_nothing_created(void **state)
{
    (void)state;
    assert_int_equal(symlink(at("target"), at("x.123.txt")), 0);
    refused(at("x.123.txt"), "symbolic link");
    assert_int_equal(access(at("target"), F_OK), -1);
}

static void file_of_another_user_is_refused(void **state)
{
    (void)state;
    put(at("theirs"), "theirs\n", 0600);
    assert_int_equal(chown(at("theirs"), NOBODY, NOBODY), 0);
    refused(at("theirs"), "uid 65534");
    assert_string_equal(slurp(at("theirs")), "theirs\n");
}

static void hard_link_is_refused(void **state)
{
    (void)state;
    put(at("precious"), "precious\n", 0600);
    assert_int_equal(link(at("precious"), at("x.txt")), 0);
    refused(at("x.txt"), "2 hard links");
    assert_string_equal(slurp(at("precious")), "precious\n");
}

static void group_or_world_writable_file_is_refused(void **state)
{
    (void)state;
    put(at("g"), "", 0620);
    refused(at("g"), "writable by group or others");
    put(at("o"), "", 0602);
    refused(at("o"), "writable by group or others");
}

static void world_writable_directory_without_sticky_bit_is_refused(void **state)
{
    (void)state;
    assert_int_equal(mkdir(at("open"), 0777), 0);
    assert_int_equal(chmod(at("open"), 0777), 0);
    refused(at("open/r.txt"), "not sticky");
    assert_int_equal(access(at("open/r.txt"), F_OK), -1);
    /* below it too: anyone could rename the subdirectory away and put their own there */
    assert_int_equal(mkdir(at("open/sub"), 0755), 0);
    refused(at("open/sub/r.txt"), "1 level above");
    /* reached through a symlink: the directory actually opened is checked */
    assert_int_equal(symlink(at("open"), at("link")), 0);
    refused(at("link/r.txt"), "not sticky");
}

static void sticky_directory_is_fine_for_our_own_file(void **state)
{
    (void)state;
    assert_int_equal(mkdir(at("tmp"), 01777), 0);
    assert_int_equal(chmod(at("tmp"), 01777), 0);
    accepted(at("tmp/x.1.txt"), "a");
    accepted(at("tmp/x.1.txt"), "b");
    assert_string_equal(slurp(at("tmp/x.1.txt")), "ab");
    /* ... but not for one someone else put there */
    put(at("tmp/x.2.txt"), "", 0600);
    assert_int_equal(chown(at("tmp/x.2.txt"), NOBODY, NOBODY), 0);
    refused(at("tmp/x.2.txt"), "uid 65534");
}

static void fd_paths_are_the_process_fds(void **state)
{
    (void)state;
    int owned = 7;
    assert_int_equal(ls_out_open("/dev/stderr", &owned, why, sizeof why), 2);
    assert_int_equal(owned, 0);
    assert_int_equal(ls_out_open("/dev/stdout", &owned, why, sizeof why), 1);
    assert_int_equal(owned, 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", p[1]);
    assert_int_equal(ls_out_open(path, &owned, why, sizeof why), p[1]);
    assert_int_equal(owned, 0);
    snprintf(path, sizeof path, "/dev/fd/%d", p[1]);
    assert_int_equal(ls_out_open(path, &owned, why, sizeof why), p[1]);
    assert_int_equal(ls_write_all(p[1], "hi", 2), 0);
    char got[3] = {0};
    assert_int_equal(read(p[0], got, 2), 2);
    assert_string_equal(got, "hi");
    /* the read end is not writable; a closed fd is not open */
    snprintf(path, sizeof path, "/dev/fd/%d", p[0]);
    refused(path, "not open for writing");
    close(p[0]);
    close(p[1]);
    snprintf(path, sizeof path, "/proc/self/fd/%d", p[1]);
    refused(path, "is not open");
    /* not an fd path: a file name that only looks like one */
    assert_int_equal(ls_out_fd_of("/dev/fd/"), -1);
    assert_int_equal(ls_out_fd_of("/dev/fd/2x"), -1);
    assert_int_equal(ls_out_fd_of("/dev/stderr2"), -1);
    assert_int_equal(ls_out_fd_of("/proc/self/fd/12"), 12);
}

static void character_devices_are_opened_without_creating(void **state)
{
    (void)state;
    accepted("/dev/null", "discarded");
    struct stat st;
    assert_int_equal(stat("/dev/null", &st), 0);
    assert_true(S_ISCHR(st.st_mode));
}

static void *fifo_reader(void *arg)
{
    int fd = open(arg, O_RDONLY);
    static char buf[64];
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    buf[n > 0 ? n : 0] = 0;
    if (fd >= 0)
        close(fd);
    return buf;
}

static void fifo_needs_a_reader_and_never_blocks(void **state)
{
    (void)state;
    assert_int_equal(mkfifo(at("fifo"), 0600), 0);
    double t0 = ls_mono();
    refused(at("fifo"), "no reader");
    assert_true(ls_mono() - t0 < 1.0);
    /* with a reader it takes the report */
    pthread_t th;
    char *path = strdup(at("fifo"));
    assert_int_equal(pthread_create(&th, NULL, fifo_reader, path), 0);
    int owned = 0, fd = -1;
    for (int i = 0; i < 200 && fd < 0; i++, usleep(10000))
        fd = ls_out_open(path, &owned, why, sizeof why);
    assert_true(fd >= 0);
    assert_int_equal(ls_write_all(fd, "report", 6), 0);
    ls_sys_close(fd);
    void *got;
    pthread_join(th, &got);
    assert_string_equal(got, "report");
    free(path);
    /* someone else's FIFO would hand them the report */
    assert_int_equal(mkfifo(at("their-fifo"), 0666), 0);
    assert_int_equal(chown(at("their-fifo"), NOBODY, NOBODY), 0);
    int rd = open(at("their-fifo"), O_RDONLY | O_NONBLOCK); /* they are listening */
    assert_true(rd >= 0);
    refused(at("their-fifo"), "FIFO belonging to uid 65534");
    char b[8];
    assert_true(read(rd, b, sizeof b) <= 0); /* and got nothing */
    close(rd);
}

static void missing_directory_and_directories_give_a_reason(void **state)
{
    (void)state;
    refused("/nonexistent-dir/r.1", "directory '/nonexistent-dir': No such file or directory");
    refused(top, "Is a directory");
    refused(at(""), "names a directory");
    refused("", "empty path");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(new_file_is_private_whatever_the_umask, setup, teardown),
        cmocka_unit_test_setup_teardown(own_file_is_appended_to, setup, teardown),
        cmocka_unit_test_setup_teardown(planted_symlink_to_a_file_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(dangling_symlink_is_refused_and_nothing_created, setup, teardown),
        cmocka_unit_test_setup_teardown(file_of_another_user_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(hard_link_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(group_or_world_writable_file_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(world_writable_directory_without_sticky_bit_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(sticky_directory_is_fine_for_our_own_file, setup, teardown),
        cmocka_unit_test_setup_teardown(fd_paths_are_the_process_fds, setup, teardown),
        cmocka_unit_test_setup_teardown(character_devices_are_opened_without_creating, setup, teardown),
        cmocka_unit_test_setup_teardown(fifo_needs_a_reader_and_never_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_directory_and_directories_give_a_reason, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

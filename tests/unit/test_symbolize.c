/* File:line and inlined frames (shim/symbolize.c), on return addresses taken in this test binary,
 * which the Makefile builds with -O2 -g: the DWARF is the compiler's real output for optimised
 * code. The expected lines are recorded with __LINE__ on the line of each call. */
#include "unit.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern const char *ls_libdw_soname; /* symbolize.c's test hook */

/* Under ASan (make unit-asan): GCC 12's LeakSanitizer misreads the dynamic TLS blocks of dlopen'ed
 * libraries (libdw, libelf) and its tracer crashes at exit (google/sanitizers#1322, #1342). Not
 * intercepting __tls_get_addr skips those blocks only; static TLS, stacks and globals are still
 * scanned. Unused without ASan. */
const char *__asan_default_options(void);
__attribute__((used, visibility("default"))) const char *__asan_default_options(void)
{
    return "intercept_tls_get_addr=0";
}

static int plain_line, inner_line, outer_line, caller_line;

/* The return address into its caller: a pc on the caller's call line. */
static void *__attribute__((noipa)) ret_addr(void)
{
    return __builtin_return_address(0);
}

static void *__attribute__((noipa)) plain_caller(void)
{
    void *pc = (plain_line = __LINE__, ret_addr()); /* the call and __LINE__ on one line */
    __asm__ volatile("" ::: "memory");              /* not a tail call */
    return pc;
}

static inline __attribute__((always_inline)) void *inl_inner(void)
{
    void *pc = (inner_line = __LINE__, ret_addr()); /* the call and __LINE__ on one line */
    __asm__ volatile("" ::: "memory");
    return pc;
}

static inline __attribute__((always_inline)) void *inl_outer(void)
{
    void *pc = (outer_line = __LINE__, inl_inner()); /* the call and __LINE__ on one line */
    __asm__ volatile("" ::: "memory");
    return pc;
}

static void *__attribute__((noipa)) inl_caller(void)
{
    void *pc = (caller_line = __LINE__, inl_outer()); /* the call and __LINE__ on one line */
    __asm__ volatile("" ::: "memory");
    return pc;
}

static const char *base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void assert_at(const ls_sym *s, const char *func, int line, int inlined)
{
    assert_string_equal(s->symbol, func);
    assert_string_equal(base(s->src_file), "test_symbolize.c");
    assert_int_equal(s->src_line, line);
    assert_int_equal(s->inlined, inlined);
}

static void plain_frame_has_file_and_line(void **state)
{
    (void)state;
    void *pc = plain_caller();
    ls_sym out[8];
    int n = ls_symbolize_frames(pc, out, 8);
    assert_int_equal(n, 1);
    assert_at(&out[0], "plain_caller", plain_line, 0);
    /* what ls_symbolize alone says is kept: module, offset, build-id, symbol offset */
    ls_sym elf;
    ls_symbolize(pc, &elf);
    assert_string_equal(out[0].module, elf.module);
    assert_int_equal(out[0].offset, elf.offset);
    assert_string_equal(out[0].build_id, elf.build_id);
    assert_int_equal(out[0].sym_off, elf.sym_off);
    assert_true(elf.build_id[0] != 0);
}

static void inlined_functions_become_frames(void **state)
{
    (void)state;
    void *pc = inl_caller();
    ls_sym out[8];
    int n = ls_symbolize_frames(pc, out, 8);
    assert_int_equal(n, 3);
    assert_at(&out[0], "inl_inner", inner_line, 1);   /* where the inlined body is */
    assert_at(&out[1], "inl_outer", outer_line, 1);   /* where inl_outer called inl_inner */
    assert_at(&out[2], "inl_caller", caller_line, 0); /* where the real function called inl_outer */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out[i].offset, out[2].offset); /* one physical frame */
        assert_string_equal(out[i].module, out[2].module);
    }
    assert_true(out[2].sym_off > 0);
}

static void max_keeps_the_outermost_frames(void **state)
{
    (void)state;
    void *pc = inl_caller();
    ls_sym out[2];
    assert_int_equal(ls_symbolize_frames(pc, out, 1), 1);
    assert_at(&out[0], "inl_caller", caller_line, 0);
    assert_int_equal(ls_symbolize_frames(pc, out, 2), 2);
    assert_at(&out[0], "inl_outer", outer_line, 1);
    assert_at(&out[1], "inl_caller", caller_line, 0);
    assert_int_equal(ls_symbolize_frames(pc, out, 0), 0);
}

static int cmp_capture(const void *a, const void *b);
static void *libc_pc;
static int cmp_capture(const void *a, const void *b)
{
    libc_pc = __builtin_return_address(0);
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static void frames_without_dwarf_keep_the_elf_name(void **state)
{
    (void)state;
    int v[3] = {3, 1, 2};
    qsort(v, 3, sizeof v[0], cmp_capture); /* libc calls us back: a return address inside libc */
    ls_sym out[8], elf;
    int n = ls_symbolize_frames(libc_pc, out, 8);
    ls_symbolize(libc_pc, &elf);
    assert_true(n >= 1);
    assert_non_null(strstr(out[n - 1].module, "libc.so"));
    assert_true(out[n - 1].symbol[0] != 0);
    if (elf.symbol[0]) /* .dynsym names it: kept; else libc6-dbg's table or DWARF named it */
        assert_string_equal(out[n - 1].symbol, elf.symbol);
    /* an address in no module: the fallback's "?" and nothing else */
    assert_int_equal(ls_symbolize_frames((void *)0x10, out, 8), 1);
    assert_string_equal(out[0].module, "?");
    assert_int_equal(out[0].src_line, 0);
}

/* ---- no debuginfod: a module with a build-id and no debug file anywhere (libcmocka) is where
 * dwfl_standard_find_debuginfo would ask the servers in DEBUGINFOD_URLS. Ours must not. */

static int mapped(const char *needle)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        found |= strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return found;
}

static void debuginfod_is_never_asked(void **state)
{
    (void)state;
    int lfd, port = unit_listen(&lfd);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    setenv("DEBUGINFOD_URLS", url, 1);
    setenv("DEBUGINFOD_TIMEOUT", "2", 1); /* a regression then fails in seconds, not 90 s */
    void *fn = dlsym(RTLD_DEFAULT, "_assert_true");
    assert_non_null(fn);
    ls_sym out[8];
    int n = ls_symbolize_frames((char *)fn + 1, out, 8); /* pc - 1 is the function's first byte */
    unsetenv("DEBUGINFOD_URLS");
    unsetenv("DEBUGINFOD_TIMEOUT");
    assert_int_equal(n, 1);
    assert_non_null(strstr(out[0].module, "libcmocka"));
    assert_string_equal(out[0].symbol, "_assert_true");
    assert_int_equal(out[0].src_line, 0);
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    int c = accept(lfd, NULL, NULL);
    assert_int_equal(c, -1); /* nobody connected */
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    close(lfd);
    assert_false(mapped("libdebuginfod"));
    assert_true(mapped("libdw")); /* loaded by the first symbolization, not before */
}

/* ---- threads: one lock, same answers; the reporter thread's own fd table gets its own session */

static void *sym_thread(void *arg)
{
    if (arg)
        ls_fds_private = 1; /* as on the reporter thread */
    void *pcs[2] = {plain_caller(), inl_caller()};
    for (int k = 0; k < 200; k++) {
        ls_sym out[8];
        if (ls_symbolize_frames(pcs[k & 1], out, 8) != (k & 1 ? 3 : 1))
            return (void *)1;
        if (strcmp(out[0].symbol, k & 1 ? "inl_inner" : "plain_caller") ||
            out[0].src_line != (k & 1 ? inner_line : plain_line))
            return (void *)1;
    }
    return NULL;
}

static void threads_get_the_same_frames(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, sym_thread, (void *)(uintptr_t)(i & 1)), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
}

/* ---- fork: a child forked while another thread symbolizes can still symbolize */

static volatile int spin_stop;
static void *spin_symbolize(void *arg)
{
    (void)arg;
    void *pc = inl_caller();
    while (!spin_stop) {
        ls_sym out[8];
        ls_symbolize_frames(pc, out, 8);
    }
    return NULL;
}

static void stack_parent(void)
{
    ls_stack_unlock_all(0);
}
static void stack_child(void)
{
    ls_stack_unlock_all(1);
}
static void register_stack_atfork(void)
{
    pthread_atfork(ls_stack_lock_all, stack_parent, stack_child);
}

static void fork_while_symbolizing(void **state)
{
    (void)state;
    /* as init.c does in the shim: stack.c's symbol-table lock (ls_symbolize) across fork */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_stack_atfork);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, spin_symbolize, NULL), 0);
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            alarm(10); /* a lock inherited held would hang here */
            ls_sym out[8];
            int n = ls_symbolize_frames(inl_caller(), out, 8);
            _exit(n == 3 && out[2].src_line == caller_line ? 0 : 1);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (!WIFEXITED(st))
            fprintf(stderr, "child: signal %d\n", WTERMSIG(st));
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    spin_stop = 1;
    pthread_join(t, NULL);
}

/* ---- without libdw: the name from the ELF symbol table, src_line 0. Run in a fresh process (the
 * library is loaded once per process), this binary re-executed with --no-libdw. */

static int no_libdw_child(void)
{
    ls_libdw_soname = "libdw-not-installed.so.1";
    void *pc = inl_caller();
    ls_sym out[8];
    int n = ls_symbolize_frames(pc, out, 8);
    if (n != 1 || strcmp(out[0].symbol, "inl_caller") || out[0].src_line != 0 || out[0].src_file[0] || out[0].inlined ||
        out[0].sym_off == 0)
        return 1;
    n = ls_symbolize_frames(plain_caller(), out, 8);
    return n == 1 && !strcmp(out[0].symbol, "plain_caller") && out[0].src_line == 0 ? 0 : 1;
}

static void without_libdw_names_from_elf(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "test_symbolize", "--no-libdw", (char *)NULL);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--no-libdw"))
        return no_libdw_child();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_frame_has_file_and_line),  cmocka_unit_test(inlined_functions_become_frames),
        cmocka_unit_test(max_keeps_the_outermost_frames), cmocka_unit_test(frames_without_dwarf_keep_the_elf_name),
        cmocka_unit_test(threads_get_the_same_frames),    cmocka_unit_test(fork_while_symbolizing),
        cmocka_unit_test(without_libdw_names_from_elf),   cmocka_unit_test(debuginfod_is_never_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

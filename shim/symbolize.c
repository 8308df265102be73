/*
 * Report-time file:line and inlined frames for native return addresses, from DWARF, with elfutils'
 * libdw (libdwfl + libdw).
 *
 * Why libdw and not our own DWARF reader: line programs (DWARF 2-5), abbreviations, DW_FORM_*
 * encodings, .debug_rnglists/.debug_addr, compressed sections, separate debug files found by
 * build-id or .gnu_debuglink, dwz's .gnu_debugaltlink and the inlined-subroutine tree are each
 * easy to get subtly wrong and tedious to keep current with compilers; libdw is what eu-stack,
 * eu-addr2line, systemd-coredump and perf use, it follows new DWARF versions and compilers, and
 * Debian already installs it wherever gdb, perf or GStreamer is (libdw1).
 *
 * Why dlopen: libdw is needed only when a report names frames. A process that never reports never
 * maps it, and the shim starts (and reports function+offset from the ELF symbol table, see
 * ls_symbolize in stack.c) where libdw.so.1 is not installed. Nothing links against it.
 *
 * No network, ever: debuginfod is reached only through dwfl_standard_find_debuginfo and
 * dwfl_build_id_find_elf, and neither is used here. The find_elf callback refuses (every module is
 * reported with its file) and the find_debuginfo callback looks only at local files: the build-id
 * tree (/usr/lib/debug/.build-id, dwfl_build_id_find_debuginfo, which validates the build-id) and
 * the .gnu_debuglink places (next to the file, .debug/, /usr/lib/debug/DIR), CRC-checked.
 * DEBUGINFOD_URLS is therefore irrelevant, and libdebuginfod (and libcurl) is never loaded.
 *
 * File descriptors: libdw keeps each file it reads open (and mmapped) for the life of its Dwfl.
 * Reports run on the host's threads (exit) and on the reporter thread, which has an fd table of
 * its own (reporter.c); so there is one Dwfl per fd table, each only ever used from threads of that
 * table, and no Dwfl is ever ended (dwfl_end would close numbers that, after a fork or a daemon's
 * close-every-fd loop, may be the host's). Every fd libdw keeps is close-on-exec: we open the files
 * (O_CLOEXEC) or set it on what dwfl_build_id_find_debuginfo opened for us.
 *
 * Thread and fork safety: one mutex around every libdw call, a leaf lock (nothing else is taken
 * under it). Fork takes no lock (so no lock order with the shim's own atfork handlers, and a fork
 * never waits for a report): a child handler, registered when libdw is first loaded, re-initialises
 * the mutex, drops the reporter table's session (its fds do not exist in the child) and, when the
 * fork caught another thread inside libdw, the host table's too (half-updated). Dropped sessions are
 * leaked, not ended. Never in a signal handler (malloc, a mutex, file I/O).
 */
#include "ls_internal.h"
#include "ls_uthash.h"

#include <dlfcn.h>
#include <dwarf.h>
#include <elfutils/libdwfl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Test hook: the library to load. A unit test points it at a missing name to check the fallback. */
const char *ls_libdw_soname = "libdw.so.1";

/* ------------------------------------------------------------------ libdw, resolved at run time */

#define DW_FUNCS(X)                                                                                                    \
    X(dwfl_begin)                                                                                                      \
    X(dwfl_report_begin_add)                                                                                           \
    X(dwfl_report_elf)                                                                                                 \
    X(dwfl_report_end)                                                                                                 \
    X(dwfl_build_id_find_debuginfo)                                                                                    \
    X(dwfl_module_getsrc)                                                                                              \
    X(dwfl_lineinfo)                                                                                                   \
    X(dwfl_module_addrdie)                                                                                             \
    X(dwfl_module_addrinfo)                                                                                            \
    X(dwarf_getscopes)                                                                                                 \
    X(dwarf_getscopes_die)                                                                                             \
    X(dwarf_tag)                                                                                                       \
    X(dwarf_attr)                                                                                                      \
    X(dwarf_attr_integrate)                                                                                            \
    X(dwarf_formstring)                                                                                                \
    X(dwarf_formudata)                                                                                                 \
    X(dwarf_diecu)                                                                                                     \
    X(dwarf_getsrcfiles)                                                                                               \
    X(dwarf_filesrc)

static struct {
#define X(f) __typeof__(f) *f;
    DW_FUNCS(X)
#undef X
} dw;
static int dw_ok; /* every function above resolved */
static pthread_once_t dw_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t dw_lock = PTHREAD_MUTEX_INITIALIZER;

/* One source-level frame; the strings belong to the Dwfl (never ended, so they stay valid). */
typedef struct dw_frame {
    const char *func; /* NULL: unknown (no DWARF scope) */
    const char *file;
    int line;
    int inlined;
} dw_frame;

/* What one return address resolved to, cached: reports name the same frames again and again, and a
 * lookup in a large CU walks its DIE tree. */
typedef struct pc_ent {
    uintptr_t pc;         /* key */
    const char *tabsym;   /* from libdw's symbol tables (a separate debug file's .symtab); NULL: none */
    uintptr_t tabsym_off; /* pc - that symbol's address */
    int n;
    UT_hash_handle hh;
    dw_frame fr[]; /* innermost first */
} pc_ent;

/* One Dwfl per fd table: [0] the host's, [1] the reporter thread's private one. */
typedef struct dw_mod {
    uintptr_t base; /* key: load bias */
    char path[LS_PATH_LEN];
    Dwfl_Module *mod; /* NULL: the file could not be reported (missing, not ELF) */
    pc_ent *pcs;
    UT_hash_handle hh;
} dw_mod;
static struct dw_ctx {
    Dwfl *dwfl;
    dw_mod *mods;
} ctx[2];

static uint32_t crc_table[256];

static int dw_busy; /* a thread holds dw_lock and may be changing a session */

static void dw_enter(void)
{
    pthread_mutex_lock(&dw_lock);
    __atomic_store_n(&dw_busy, 1, __ATOMIC_SEQ_CST);
}
static void dw_leave(void)
{
    __atomic_store_n(&dw_busy, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&dw_lock);
}

/* atfork child: stores and a mutex init, no malloc. Sessions are forgotten, not ended: ending one
 * would close fds the child does not have, or that are now the host's. */
static void dw_child(void)
{
    if (__atomic_load_n(&dw_busy, __ATOMIC_SEQ_CST)) {
        ctx[0].dwfl = NULL;
        ctx[0].mods = NULL;
    }
    ctx[1].dwfl = NULL;
    ctx[1].mods = NULL;
    dw_busy = 0;
    pthread_mutex_init(&dw_lock, NULL);
}

/* Runs once, at the first report that names a native frame. */
static void dw_load(void)
{
    void *h = ls_libdw_soname && ls_libdw_soname[0] ? dlopen(ls_libdw_soname, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!h) {
        if (ls_opt.verbosity >= 1)
            ls_warn("%s cannot be loaded: native frames are named without file:line (install libdw1)",
                    ls_libdw_soname ? ls_libdw_soname : "libdw");
        return;
    }
    int ok = 1;
#define X(f) ok &= (dw.f = (__typeof__(f) *)dlsym(h, #f)) != NULL;
    DW_FUNCS(X)
#undef X
    if (!ok) {
        ls_warn("%s lacks a function leakshim needs: native frames are named without file:line", ls_libdw_soname);
        return;
    }
    for (uint32_t i = 0; i < 256; i++) { /* CRC-32 (IEEE), the .gnu_debuglink checksum */
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    pthread_atfork(NULL, NULL, dw_child);
    dw_ok = 1;
}

/* ------------------------------------------------------------------ callbacks: local files only */

/* Every module is reported with its own file: nothing to find (and no debuginfod). */
static int find_elf_none(Dwfl_Module *mod, void **userdata, const char *modname, Dwarf_Addr base, char **file_name,
                         Elf **elfp)
{
    (void)mod, (void)userdata, (void)modname, (void)base, (void)file_name;
    *elfp = NULL;
    return -1;
}

/* Reads the whole candidate (as libdwfl's own check does), 64 KiB at a time from the heap: reports
 * may run on a host thread with a small stack. */
static int crc_matches(int fd, uint32_t want)
{
    enum { CHUNK = 65536 };
    unsigned char *buf = malloc(CHUNK);
    uint32_t c = 0xffffffffu;
    ssize_t n = -1;
    while (buf && ((n = read(fd, buf, CHUNK)) > 0 || (n < 0 && errno == EINTR)))
        for (ssize_t i = 0; i < n; i++)
            c = crc_table[(c ^ buf[i]) & 0xff] ^ (c >> 8);
    free(buf);
    return n == 0 && (c ^ 0xffffffffu) == want && lseek(fd, 0, SEEK_SET) == 0;
}

/* The .gnu_debuglink places dwfl_standard_find_debuginfo searches by default. */
static int find_debuglink(const char *file_name, const char *link, uint32_t crc, char **out)
{
    char dir[LS_PATH_LEN], cand[3][2 * LS_PATH_LEN];
    const char *slash = strrchr(file_name, '/');
    int ndir = slash ? (int)(slash - file_name) : 0;
    if (!slash || ndir >= (int)sizeof dir)
        return -1;
    memcpy(dir, file_name, (size_t)ndir);
    dir[ndir] = 0;
    int ncand = 0;
    if (link[0] == '/')
        snprintf(cand[ncand++], sizeof cand[0], "%s", link);
    else {
        snprintf(cand[ncand++], sizeof cand[0], "%s/%s", dir, link);
        snprintf(cand[ncand++], sizeof cand[0], "%s/.debug/%s", dir, link);
        snprintf(cand[ncand++], sizeof cand[0], "/usr/lib/debug%s/%s", dir, link);
    }
    for (int i = 0; i < ncand; i++) {
        if (!strcmp(cand[i], file_name)) /* a debuglink naming the file itself */
            continue;
        int fd = open(cand[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (crc == 0 || crc_matches(fd, crc)) {
            *out = strdup(cand[i]);
            return fd;
        }
        ls_sys_close(fd);
    }
    return -1;
}

/* dwfl_standard_find_debuginfo without its last resort, debuginfod. */
static int find_debuginfo_local(Dwfl_Module *mod, void **userdata, const char *modname, Dwarf_Addr base,
                                const char *file_name, const char *debuglink, GElf_Word crc, char **out)
{
    int fd = dw.dwfl_build_id_find_debuginfo(mod, userdata, modname, base, file_name, debuglink, crc, out);
    if (fd >= 0) { /* libdw keeps it open: not into the host's children */
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        return fd;
    }
    if (!file_name || !debuglink || !debuglink[0])
        return fd;
    return find_debuglink(file_name, debuglink, crc, out);
}

static char *debuginfo_path; /* NULL: libdwfl's default, /usr/lib/debug */
static const Dwfl_Callbacks callbacks = {
    .find_elf = find_elf_none,
    .find_debuginfo = find_debuginfo_local,
    .debuginfo_path = &debuginfo_path,
};

/* ------------------------------------------------------------------ per-module cache */

static void free_mod(dw_mod *m)
{
    pc_ent *e, *tmp;
    HASH_ITER(hh, m->pcs, e, tmp)
    {
        HASH_DEL(m->pcs, e);
        free(e);
    }
    free(m);
}

/* The module loaded at base from path, reported on first use (NULL only when out of memory). Under
 * dw_lock. */
static dw_mod *module_for(struct dw_ctx *c, const char *path, uintptr_t base)
{
    if (!c->dwfl && !(c->dwfl = dw.dwfl_begin(&callbacks)))
        return NULL;
    dw_mod *m;
    HASH_FIND(hh, c->mods, &base, sizeof base, m);
    if (m && !strcmp(m->path, path))
        return m;
    if (m) { /* unloaded, something else loaded at the same address: report the new file */
        HASH_DEL(c->mods, m);
        free_mod(m); /* its Dwfl_Module stays in the Dwfl, unused */
    }
    if (!(m = calloc(1, sizeof *m)))
        return NULL;
    m->base = base;
    snprintf(m->path, sizeof m->path, "%s", path);
    int fd = path[0] == '/' ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        dw.dwfl_report_begin_add(c->dwfl);
        /* add_p_vaddr: base is the load bias, as in the link map; libdw keeps fd on success. */
        m->mod = dw.dwfl_report_elf(c->dwfl, path, path, fd, base, true);
        dw.dwfl_report_end(c->dwfl, NULL, NULL);
        if (!m->mod)
            ls_sys_close(fd);
    }
    ls_hash_oom = 0;
    HASH_ADD(hh, c->mods, base, sizeof m->base, m);
    if (ls_hash_oom) { /* this frame goes without DWARF; the next one tries again */
        ls_hash_oom = 0;
        free_mod(m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------------ DWARF: lines and inlines */

#define DW_MAX_DEPTH LS_MAX_FRAMES

static const char *die_name(Dwarf_Die *die)
{
    Dwarf_Attribute a;
    /* integrate: an inlined instance or an out-of-line copy names its function via abstract_origin */
    return dw.dwarf_formstring(dw.dwarf_attr_integrate(die, DW_AT_name, &a));
}

/* Where die (an inlined_subroutine) was called from. */
static void call_site(Dwarf_Die *die, const char **file, int *line)
{
    Dwarf_Attribute a;
    Dwarf_Word v;
    Dwarf_Die cu;
    Dwarf_Files *files;
    *file = NULL;
    *line = 0;
    if (dw.dwarf_formudata(dw.dwarf_attr(die, DW_AT_call_file, &a), &v) == 0 && dw.dwarf_diecu(die, &cu, NULL, NULL) &&
        dw.dwarf_getsrcfiles(&cu, &files, NULL) == 0)
        *file = dw.dwarf_filesrc(files, v, NULL, NULL);
    if (dw.dwarf_formudata(dw.dwarf_attr(die, DW_AT_call_line, &a), &v) == 0)
        *line = (int)v;
}

/* The frames at addr, innermost first, as eu-addr2line -i finds them: the line table gives the
 * innermost location; the scope chain of the innermost DIE (dwarf_getscopes_die: the lexical nesting
 * of concrete DIEs, not the abstract origins dwarf_getscopes follows) lists each inlined_subroutine
 * up to the subprogram, and each inlined_subroutine's call_file/call_line is its caller's location.
 * Keeps the outermost DW_MAX_DEPTH frames. Strings live as long as the Dwfl. Under dw_lock. */
static int dwarf_frames(Dwfl_Module *mod, Dwarf_Addr addr, dw_frame *fr)
{
    const char *file = NULL;
    int line = 0, n = 0;
    Dwfl_Line *ln = dw.dwfl_module_getsrc(mod, addr);
    if (ln)
        file = dw.dwfl_lineinfo(ln, NULL, &line, NULL, NULL, NULL);
    Dwarf_Addr bias = 0;
    Dwarf_Die *cudie = dw.dwfl_module_addrdie(mod, addr, &bias), *scopes = NULL;
    int nscopes = cudie ? dw.dwarf_getscopes(cudie, addr - bias, &scopes) : 0;
    if (nscopes > 0) {
        Dwarf_Die inner = scopes[0];
        free(scopes);
        scopes = NULL;
        nscopes = dw.dwarf_getscopes_die(&inner, &scopes);
    }
    for (int i = 0; i < nscopes; i++) {
        int tag = dw.dwarf_tag(&scopes[i]);
        if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram)
            continue;
        if (n == DW_MAX_DEPTH) { /* absurdly deep: drop the innermost */
            memmove(fr, fr + 1, (DW_MAX_DEPTH - 1) * sizeof *fr);
            n--;
        }
        fr[n++] = (dw_frame){die_name(&scopes[i]), file, line, tag == DW_TAG_inlined_subroutine};
        if (tag == DW_TAG_subprogram)
            break;
        call_site(&scopes[i], &file, &line);
    }
    free(scopes);
    if (n == 0 && file)
        fr[n++] = (dw_frame){NULL, file, line, 0};
    return n;
}

/* Full path when it fits, else its tail (the file name is the part a reader needs). */
static void set_file(ls_sym *s, const char *file)
{
    size_t len = strlen(file), cap = sizeof s->src_file;
    if (len < cap)
        memcpy(s->src_file, file, len + 1);
    else
        snprintf(s->src_file, cap, "...%s", file + len - (cap - 4));
}

/* The frames at pc (a return address) in m, cached. NULL when out of memory. Under dw_lock. */
static const pc_ent *lookup(dw_mod *m, uintptr_t pc, int want_tabsym)
{
    pc_ent *e;
    HASH_FIND(hh, m->pcs, &pc, sizeof pc, e);
    if (e)
        return e;
    dw_frame fr[DW_MAX_DEPTH];
    /* pc is a return address: the call instruction ends just before it. */
    int n = m->mod ? dwarf_frames(m->mod, (Dwarf_Addr)(pc - 1), fr) : 0;
    if (!(e = calloc(1, sizeof *e + (size_t)n * sizeof e->fr[0])))
        return NULL;
    e->pc = pc;
    e->n = n;
    memcpy(e->fr, fr, (size_t)n * sizeof fr[0]);
    if (m->mod && want_tabsym) { /* no name in the ELF .symtab (stripped): a separate debug file's */
        GElf_Off off = 0;
        GElf_Sym sym;
        e->tabsym = dw.dwfl_module_addrinfo(m->mod, (GElf_Addr)(pc - 1), &off, &sym, NULL, NULL, NULL);
        e->tabsym_off = (uintptr_t)off + 1;
    }
    ls_hash_oom = 0;
    HASH_ADD(hh, m->pcs, pc, sizeof e->pc, e);
    if (ls_hash_oom) {
        ls_hash_oom = 0;
        free(e);
        return NULL;
    }
    return e;
}

/* ------------------------------------------------------------------ the entry point */

int ls_symbolize_frames(void *pc, ls_sym *out, int max)
{
    if (max < 1)
        return 0;
    ls_symbolize(pc, &out[0]); /* module, offset, build-id, ELF symbol: the fallback and the JSON */
    if (out[0].module[0] != '/' || out[0].offset == 0)
        return 1;
    pthread_once(&dw_once, dw_load);
    if (!dw_ok)
        return 1;
    uintptr_t a = (uintptr_t)pc;
    ls_sym phys = out[0];
    int n = 0;
    dw_enter();
    dw_mod *m = module_for(&ctx[ls_fds_private ? 1 : 0], phys.module, a - phys.offset);
    const pc_ent *e = m ? lookup(m, a, !phys.symbol[0]) : NULL;
    if (e) {
        /* Too many for max: keep the outermost, so every location shown stays true. */
        int skip = e->n > max ? e->n - max : 0;
        for (int i = skip; i < e->n; i++) { /* each entry is the one physical frame, renamed and located */
            ls_sym *s = &out[n++];
            *s = phys;
            s->inlined = e->fr[i].inlined;
            if (e->fr[i].inlined) {
                snprintf(s->symbol, sizeof s->symbol, "%s", e->fr[i].func ? e->fr[i].func : "??");
                s->sym_off = 0;
            }
            if (e->fr[i].file)
                set_file(s, e->fr[i].file);
            s->src_line = e->fr[i].line;
        }
        ls_sym *outer = &out[n ? n - 1 : 0];
        if (!outer->symbol[0] && e->tabsym) {
            snprintf(outer->symbol, sizeof outer->symbol, "%s", e->tabsym);
            outer->sym_off = e->tabsym_off;
        } else if (!outer->symbol[0] && e->n && e->fr[e->n - 1].func) {
            snprintf(outer->symbol, sizeof outer->symbol, "%s", e->fr[e->n - 1].func);
        }
    }
    dw_leave();
    return n ? n : 1;
}

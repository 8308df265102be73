/* Stack capture (libunwind, raw addresses only on the hot path), interning by hash so identical
 * stacks share one record, and report-time symbolization (dladdr + the module's own ELF .symtab,
 * so static functions of a program built without -rdynamic are still named).
 *
 * libunwind is loaded on the first capture (a process that never opens a database socket never
 * loads it), and it owns no file descriptor: to check that memory is readable it keeps a pipe
 * open on the lowest free fds (3 and 4) and reads and writes it while unwinding, so a daemon that
 * closes every fd and reuses 3 and 4 got its own files read and written. Its imports of pipe2,
 * read, write, close and syscall are redirected (GOT patch of libunwind alone) to stand-ins: the
 * "pipe" is two numbers no fd can have, and "write one byte of addr into it" becomes a
 * process_vm_readv of that byte from our own memory, which says EFAULT for unreadable memory
 * without any fd. Every other call goes to libc unchanged. */
#include "ls_internal.h"
#include "ls_got.h"
#include "ls_uthash.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

int ls_hash_oom;
ls_stack_id (*ls_pystack_hook)(void);

typedef struct stack_ent {
    uint32_t hash; /* key */
    ls_stack s;
    struct stack_ent *next; /* same hash, different frames */
    UT_hash_handle hh;
} stack_ent;

static pthread_mutex_t stack_lock = PTHREAD_MUTEX_INITIALIZER;
static stack_ent *stacks_by_hash;
/* id -> stack in chunks that never move once published, so lookups and creation counts are
 * lock-free (the reporter reads while hooks intern). */
#define CHUNK_BITS 12
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define MAX_CHUNKS 4096
static ls_stack **chunks[MAX_CHUNKS];
static size_t nstacks; /* published with release ordering after the slot is written */
static uintptr_t self_lo, self_hi;

/* Word-at-a-time multiplicative mix: a 32-frame stack is 32 rounds, not 256. */
static uint32_t hash_words(const void *p, size_t n, uint64_t h)
{
    const unsigned char *c = p;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, c + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    for (size_t i = n & ~(size_t)7; i < n; i++)
        h = (h ^ c[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

static int self_phdr_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t pc = (uintptr_t)arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (pc >= lo && pc < hi) {
            self_lo = lo;
            self_hi = hi;
            return 1;
        }
    }
    return 0;
}

/* Called once from the shim's constructor: frames inside libleakshim are dropped from stacks. In
 * unit tests (core linked into the test) it is not called, so nothing is dropped. */
void ls_stack_init_self(void)
{
    dl_iterate_phdr(self_phdr_cb, (void *)(uintptr_t)&ls_stack_init_self);
}

/* ------------------------------------------------------------------ libunwind without fds */

enum { UNW_FAKE_RD = -1000, UNW_FAKE_WR = -1001 }; /* numbers no fd can have */

static int unw_pipe2(int fds[2], int flags)
{
    (void)flags;
    fds[0] = UNW_FAKE_RD;
    fds[1] = UNW_FAKE_WR;
    return 0;
}

/* Is the byte at addr readable? Without an fd and without faulting. */
static int readable(const void *addr)
{
    char byte;
    struct iovec local = {&byte, 1}, remote = {(void *)addr, 1};
    ssize_t n = syscall(SYS_process_vm_readv, (pid_t)syscall(SYS_getpid), &local, 1UL, &remote, 1UL, 0UL);
    if (n == 1)
        return 1;
    if (errno == EFAULT)
        return 0;
    /* process_vm_readv refused (seccomp): rt_sigprocmask copies the set in before it checks `how`,
     * so an invalid `how` answers EFAULT for unreadable memory and EINVAL, changing nothing, for
     * readable memory. */
    return syscall(SYS_rt_sigprocmask, 0x7fff, addr, NULL, (size_t)8) != 0 && errno != EFAULT;
}

static ssize_t unw_read(int fd, void *buf, size_t n)
{
    if (fd == UNW_FAKE_RD) {
        errno = EAGAIN; /* "the pipe is empty": libunwind keeps it */
        return -1;
    }
    return read(fd, buf, n);
}

static ssize_t validate_write(const void *addr)
{
    if (readable(addr)) {
        errno = EAGAIN; /* not EINTR: libunwind loops while errno == EINTR */
        return 1;
    }
    errno = EFAULT;
    return -1;
}

static ssize_t unw_write(int fd, const void *buf, size_t n)
{
    if (fd == UNW_FAKE_WR)
        return validate_write(buf);
    return write(fd, buf, n);
}

static int unw_close(int fd)
{
    if (fd == UNW_FAKE_RD || fd == UNW_FAKE_WR)
        return 0;
    return close(fd);
}

static long unw_syscall(long nr, ...)
{
    va_list ap;
    va_start(ap, nr);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    /* libunwind writes with syscall(SYS_write, int fd, ...): the fd is an int in a long's slot */
    if (nr == SYS_write && (int)a[0] == UNW_FAKE_WR)
        return validate_write((const void *)a[1]);
    return syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

static const ls_got_hook unw_imports[] = {
    {"pipe2", (void *)unw_pipe2}, {"read", (void *)unw_read},       {"write", (void *)unw_write},
    {"close", (void *)unw_close}, {"syscall", (void *)unw_syscall},
};

static int (*unw_backtrace_fn)(void **, int);
static pthread_once_t unw_once = PTHREAD_ONCE_INIT;
static char unw_path[LS_PATH_LEN];

static int is_libunwind(const char *objname, void *arg)
{
    (void)arg;
    return unw_path[0] && !strcmp(objname, unw_path);
}

#define LS_STR2(x) #x
#define LS_STR(x) LS_STR2(x) /* the arch-prefixed name behind libunwind's macros */

/* Runs once, on a private stack (capture runs there). */
static void unw_load(void)
{
    void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    void *bt = h ? dlsym(h, "unw_backtrace") : NULL;
    Dl_info info;
    if (!bt || !dladdr(bt, &info) || !info.dli_fname) {
        ls_warn("libunwind.so.8 cannot be loaded (%s): native stacks are off", h ? "no unw_backtrace" : dlerror());
        return;
    }
    snprintf(unw_path, sizeof unw_path, "%s", info.dli_fname);
    ls_got_patch(is_libunwind, NULL, unw_imports, sizeof unw_imports / sizeof unw_imports[0]);
    int (*policy)(unw_addr_space_t, unw_caching_policy_t) =
        (int (*)(unw_addr_space_t, unw_caching_policy_t))dlsym(h, LS_STR(unw_set_caching_policy));
    unw_addr_space_t *as = (unw_addr_space_t *)dlsym(h, LS_STR(unw_local_addr_space));
    if (policy && as)
        policy(*as, UNW_CACHE_PER_THREAD);
    __atomic_store_n(&unw_backtrace_fn, (int (*)(void **, int))bt, __ATOMIC_RELEASE);
}

int ls_frame_is_self(void *pc)
{
    uintptr_t a = (uintptr_t)pc;
    return a >= self_lo && a < self_hi;
}

static ls_stack_id add_stack(uint32_t h, int is_py, const void *frames, int n, size_t elsz)
{
    stack_ent *e, *head;
    pthread_mutex_lock(&stack_lock);
    HASH_FIND(hh, stacks_by_hash, &h, sizeof h, head);
    for (e = head; e; e = e->next) {
        if (e->s.n == n && e->s.is_py == is_py &&
            !memcmp(is_py ? (const void *)e->s.pyframes : (const void *)e->s.frames, frames, (size_t)n * elsz)) {
            ls_stack_id id = e->s.id;
            pthread_mutex_unlock(&stack_lock);
            return id;
        }
    }
    ls_stack_id id = 0;
    size_t next = nstacks + 1, ci = next >> CHUNK_BITS;
    if (ci >= MAX_CHUNKS)
        goto out;
    if (!chunks[ci] && !(chunks[ci] = calloc(CHUNK_SIZE, sizeof(ls_stack *))))
        goto out;
    e = calloc(1, sizeof *e);
    void *copy = malloc((size_t)(n ? n : 1) * elsz);
    if (!e || !copy) {
        free(e);
        free(copy);
        goto out;
    }
    memcpy(copy, frames, (size_t)n * elsz);
    e->hash = h;
    e->s.hash = h;
    e->s.n = n;
    e->s.is_py = is_py;
    if (is_py)
        e->s.pyframes = copy;
    else
        e->s.frames = copy;
    e->s.id = (ls_stack_id)next;
    chunks[ci][next & (CHUNK_SIZE - 1)] = &e->s;
    __atomic_store_n(&nstacks, next, __ATOMIC_RELEASE);
    if (head) {
        e->next = head->next;
        head->next = e;
    } else {
        ls_hash_oom = 0;
        HASH_ADD(hh, stacks_by_hash, hash, sizeof e->hash, e);
        if (ls_hash_oom) { /* not findable again, but its id stays valid */
            ls_hash_oom = 0;
        }
    }
    id = e->s.id;
out:
    pthread_mutex_unlock(&stack_lock);
    return id;
}

/* Per-thread direct-mapped cache of recently interned stacks: a hit costs a compare against the
 * immutable published record, no lock. */
static LS_TLS struct {
    uint32_t hash;
    ls_stack_id id;
} tls_cache[64];

ls_stack_id ls_stack_intern(void *const *frames, int n)
{
    uint32_t h = hash_words(frames, (size_t)n * sizeof(void *), 0x243f6a8885a308d3ull);
    unsigned slot = h & 63;
    if (tls_cache[slot].hash == h && tls_cache[slot].id) {
        const ls_stack *s = ls_stack_get(tls_cache[slot].id);
        if (s && !s->is_py && s->n == n && !memcmp(s->frames, frames, (size_t)n * sizeof(void *)))
            return s->id;
    }
    ls_stack_id id = add_stack(h, 0, frames, n, sizeof(void *));
    tls_cache[slot].hash = h;
    tls_cache[slot].id = id;
    return id;
}

ls_stack_id ls_pystack_intern(const ls_pyframe *in, int n)
{
    if (n <= 0)
        return 0;
    /* Hash and compare a copy with zeroed padding: callers' arrays may carry garbage in it. */
    ls_pyframe frames[LS_MAX_FRAMES * 2];
    if (n > (int)(sizeof frames / sizeof frames[0]))
        n = (int)(sizeof frames / sizeof frames[0]);
    memset(frames, 0, (size_t)n * sizeof frames[0]);
    for (int i = 0; i < n; i++) {
        frames[i].file = in[i].file;
        frames[i].func = in[i].func;
        frames[i].line = in[i].line;
    }
    return add_stack(hash_words(frames, (size_t)n * sizeof *frames, 0x13198a2e03707344ull), 1, frames, n,
                     sizeof *frames);
}

ls_stack_id ls_stack_capture(void)
{
    void *raw[LS_MAX_FRAMES + 16];
    int want = ls_opt.frames > 0 ? ls_opt.frames : 32;
    pthread_once(&unw_once, unw_load);
    int got = unw_backtrace_fn ? unw_backtrace_fn(raw, want + 16) : 0, n = 0;
    /* Drop the shim's own frames wherever they are: a driver hook sits mid-stack. */
    for (int i = 0; i < got && n < want; i++)
        if (!ls_frame_is_self(raw[i]))
            raw[n++] = raw[i];
    if (n <= 0)
        return 0;
    return ls_stack_intern(raw, n);
}

ls_stack_id ls_pystack_capture(void)
{
    return ls_pystack_hook ? ls_pystack_hook() : 0;
}

/* Lock-free: ids up to the published count have their slot written. */
const ls_stack *ls_stack_get(ls_stack_id id)
{
    if (id == 0 || id > __atomic_load_n(&nstacks, __ATOMIC_ACQUIRE))
        return NULL;
    return chunks[id >> CHUNK_BITS][id & (CHUNK_SIZE - 1)];
}

void ls_stack_count(ls_stack_id id)
{
    ls_stack *s = (ls_stack *)ls_stack_get(id);
    if (s)
        __atomic_fetch_add(&s->created, 1, __ATOMIC_RELAXED);
}

size_t ls_stack_total(void)
{
    return __atomic_load_n(&nstacks, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------------ symbolization (report time) */

typedef struct module {
    char path[LS_PATH_LEN]; /* key */
    void *map;
    size_t size;
    const ElfW(Sym) * syms;
    size_t nsyms;
    const char *strtab;
    char build_id[41];
    UT_hash_handle hh;
} module;
static module *modules;
static pthread_mutex_t sym_lock = PTHREAD_MUTEX_INITIALIZER;

static void load_elf(module *m)
{
    int fd = open(m->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > (off_t)sizeof(ElfW(Ehdr))) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            m->map = p;
            m->size = (size_t)st.st_size;
        }
    }
    ls_sys_close(fd);
    if (!m->map)
        return;
    const ElfW(Ehdr) *eh = m->map;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_shoff == 0 ||
        eh->e_shoff + (size_t)eh->e_shnum * sizeof(ElfW(Shdr)) > m->size)
        return;
    const ElfW(Shdr) *sh = (const ElfW(Shdr) *)((const char *)m->map + eh->e_shoff);
    const ElfW(Shdr) *best = NULL;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type == SHT_SYMTAB || (sh[i].sh_type == SHT_DYNSYM && !best))
            best = &sh[i];
        if (sh[i].sh_type == SHT_NOTE && sh[i].sh_offset + sh[i].sh_size <= m->size) {
            const char *p = (const char *)m->map + sh[i].sh_offset, *end = p + sh[i].sh_size;
            while (p + sizeof(ElfW(Nhdr)) <= end) {
                const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
                const char *name = p + sizeof *nh;
                const unsigned char *desc = (const unsigned char *)name + ((nh->n_namesz + 3) & ~3u);
                if ((const char *)desc + nh->n_descsz > end)
                    break;
                if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4)) {
                    for (unsigned j = 0; j < nh->n_descsz && j < 20; j++)
                        snprintf(m->build_id + 2 * j, 3, "%02x", desc[j]);
                }
                p = (const char *)desc + ((nh->n_descsz + 3) & ~3u);
            }
        }
    }
    if (best && best->sh_link < eh->e_shnum && best->sh_offset + best->sh_size <= m->size) {
        const ElfW(Shdr) *str = &sh[best->sh_link];
        if (str->sh_offset + str->sh_size <= m->size) {
            m->syms = (const ElfW(Sym) *)((const char *)m->map + best->sh_offset);
            m->nsyms = best->sh_size / sizeof(ElfW(Sym));
            m->strtab = (const char *)m->map + str->sh_offset;
        }
    }
}

static module *get_module(const char *path)
{
    module *m;
    HASH_FIND_STR(modules, path, m);
    if (m)
        return m;
    m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    snprintf(m->path, sizeof m->path, "%s", path);
    load_elf(m);
    ls_hash_oom = 0;
    HASH_ADD_STR(modules, path, m);
    if (ls_hash_oom) {
        ls_hash_oom = 0;
        return m; /* leaks one small record; symbolization still works for this frame */
    }
    return m;
}

void ls_symbolize(void *pc, ls_sym *out)
{
    memset(out, 0, sizeof *out);
    Dl_info info;
    struct link_map *lm = NULL;
    uintptr_t a = (uintptr_t)pc;
    if (!dladdr1(pc, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm) {
        snprintf(out->module, sizeof out->module, "?");
        out->offset = a;
        return;
    }
    if (lm->l_name && lm->l_name[0])
        snprintf(out->module, sizeof out->module, "%s", lm->l_name);
    else {
        ssize_t n = readlink("/proc/self/exe", out->module, sizeof out->module - 1);
        out->module[n > 0 ? n : 0] = 0;
    }
    out->offset = a - lm->l_addr;
    pthread_mutex_lock(&sym_lock);
    module *m = get_module(out->module);
    if (m) {
        memcpy(out->build_id, m->build_id, sizeof out->build_id);
        /* Look for the function containing pc-1 (pc is a return address). */
        uintptr_t want = out->offset ? out->offset - 1 : 0;
        const ElfW(Sym) *best = NULL;
        for (size_t i = 0; i < m->nsyms; i++) {
            const ElfW(Sym) *s = &m->syms[i];
            if (ELF64_ST_TYPE(s->st_info) != STT_FUNC || s->st_value == 0)
                continue;
            if (want >= s->st_value && want < s->st_value + (s->st_size ? s->st_size : 1)) {
                best = s;
                break;
            }
        }
        if (best && (size_t)(m->strtab - (const char *)m->map) + best->st_name < m->size) {
            snprintf(out->symbol, sizeof out->symbol, "%s", m->strtab + best->st_name);
            out->sym_off = out->offset - best->st_value;
        }
    }
    pthread_mutex_unlock(&sym_lock);
    if (!out->symbol[0] && info.dli_sname) {
        snprintf(out->symbol, sizeof out->symbol, "%s", info.dli_sname);
        out->sym_off = a - (uintptr_t)info.dli_saddr;
    }
}

/* atfork prepare/parent/child (no malloc): the stack tables are consistent in the child. */
void ls_stack_lock_all(void)
{
    pthread_mutex_lock(&stack_lock);
    pthread_mutex_lock(&sym_lock);
}

void ls_stack_unlock_all(int child)
{
    if (child) {
        LS_MUTEX_REINIT(sym_lock);
        LS_MUTEX_REINIT(stack_lock);
    } else {
        pthread_mutex_unlock(&sym_lock);
        pthread_mutex_unlock(&stack_lock);
    }
}

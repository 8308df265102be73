/*
 * GOT/PLT patcher (API and contract in ls_got.h).
 *
 * Why patch slots instead of exporting the hooked names: an LD_PRELOAD export is seen by every
 * lookup in the process, including `dlsym(RTLD_DEFAULT, "PQconnectdb")` and weak references, so a
 * program without libpq would believe libpq is there. Rewriting the slots through which loaded
 * objects actually call (or take the address of) a function reaches the same call sites without
 * creating a definition anyone can find.
 *
 * How: dl_iterate_phdr gives each object's program headers; its PT_DYNAMIC gives the symbol and
 * string tables and the two relocation tables (DT_RELA for GLOB_DAT, DT_JMPREL for JUMP_SLOT).
 * Each import relocation whose symbol name is hooked names a slot at base + r_offset; the loader
 * already filled it, we overwrite it. Slots under PT_GNU_RELRO were made read-only by the loader:
 * the page range is made writable for the write and put back to the RELRO segment's flags.
 *
 * Constraints: this runs from constructors, after dlopen (possibly nested inside a dlopen'ed
 * object's constructor, with the loader's dl_load_lock held by this thread), and inside a
 * dl_iterate_phdr callback (dl_load_write_lock held). So: no malloc, no stdio, no dladdr/dlsym
 * (they take dl_load_lock, which another thread could hold while waiting for our mutex).
 */
#include "ls_got.h"
#include "ls_bind.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>

#if defined(__x86_64__)
#define GOT_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define GOT_R_GLOB_DAT R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define GOT_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define GOT_R_GLOB_DAT R_AARCH64_GLOB_DAT
#endif

#if defined(__LP64__)
#define GOT_R_SYM(i) ELF64_R_SYM(i)
#define GOT_R_TYPE(i) ELF64_R_TYPE(i)
#define GOT_ST_BIND(i) ELF64_ST_BIND(i)
#define GOT_ST_TYPE(i) ELF64_ST_TYPE(i)
#else
#define GOT_R_SYM(i) ELF32_R_SYM(i)
#define GOT_R_TYPE(i) ELF32_R_TYPE(i)
#define GOT_ST_BIND(i) ELF32_ST_BIND(i)
#define GOT_ST_TYPE(i) ELF32_ST_TYPE(i)
#endif

/* ------------------------------------------------------------------ memo
 * One record per distinct (want, arg, hooks, n): the loader's generation counters (dlpi_adds,
 * dlpi_subs) at its last walk, and how many leading objects of the link-map list that walk had
 * fully scanned. The loader appends each new object at the end of its namespace's list and never
 * reorders it, so after `adds` grew by A and `subs` by S (S objects unloaded, anywhere in the
 * process), the first (scanned - S) objects of the list are survivors already scanned, and only
 * the rest needs a scan. Keys such as load addresses would not do: an object unloaded and loaded
 * again at the same address is freshly relocated and must be patched again. */
#define GOT_MAX_CLIENTS 8

typedef struct got_client {
    const ls_got_hook *hooks;
    size_t n;
    int (*want)(const char *, void *);
    void *arg;
    int walked;   /* the fields below describe the last walk */
    int complete; /* ... which scanned every object it saw */
    unsigned long long adds, subs;
    size_t scanned; /* leading objects of the list that walk scanned */
} got_client;

static got_client clients[GOT_MAX_CLIENTS];
static size_t nclients;
static got_client overflow_client; /* no memo: used when the table is full */
static pthread_mutex_t got_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t got_atfork_once = PTHREAD_ONCE_INIT;

/* atfork handlers: only the mutex. A fork while another thread patches waits for it to finish, so
 * the child never inherits a half-written memo or a page left writable. */
static void got_prepare(void)
{
    pthread_mutex_lock(&got_mu);
}
static void got_parent(void)
{
    pthread_mutex_unlock(&got_mu);
}
static void got_child(void)
{
    got_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER; /* in fork: no call */
}
static void got_register_atfork(void)
{
    pthread_atfork(got_prepare, got_parent, got_child);
}

static got_client *client_for(int (*want)(const char *, void *), void *arg, const ls_got_hook *hooks, size_t n)
{
    for (size_t i = 0; i < nclients; i++)
        if (clients[i].hooks == hooks && clients[i].n == n && clients[i].want == want && clients[i].arg == arg)
            return &clients[i];
    /* A new caller; past the table's size, one with no memo (every call walks every object). */
    got_client *c = nclients < GOT_MAX_CLIENTS ? &clients[nclients++] : &overflow_client;
    memset(c, 0, sizeof *c);
    c->hooks = hooks, c->n = n, c->want = want, c->arg = arg;
    return c;
}

/* ------------------------------------------------------------------ name filter
 * Most imports are not hooked, and many share a first letter or two with a hook (read, realloc vs
 * redis*): the first byte goes through a 256-bit filter, then the first four bytes, as one word,
 * through a 4096-bit one, and are compared with each hook's before any strcmp. */
#define GOT_FAST_MAX 128 /* hooks whose prefix words are kept; more are still found, by strcmp */

typedef struct got_filter {
    uint64_t first[4]; /* first bytes of the hooks' names: rejects most imports in one load */
    uint64_t bits[64];
    uint32_t pre[GOT_FAST_MAX];
} got_filter;

static uint32_t prefix_word(const char *s)
{
    uint32_t w = 0;
    for (int i = 0; i < 4 && s[i]; i++)
        w |= (uint32_t)(unsigned char)s[i] << (8 * i);
    return w;
}

static unsigned prefix_bit(uint32_t w)
{
    return (unsigned)((w * 0x9E3779B1u) >> 20); /* 12 bits */
}

static void filter_build(got_filter *f, const ls_got_hook *hooks, size_t n)
{
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < n; i++) {
        uint32_t w = prefix_word(hooks[i].name);
        unsigned b = prefix_bit(w), c = w & 0xff;
        f->first[c >> 6] |= 1ull << (c & 63);
        f->bits[b >> 6] |= 1ull << (b & 63);
        if (i < GOT_FAST_MAX)
            f->pre[i] = w;
    }
}

static const ls_got_hook *hook_lookup(const got_filter *f, const ls_got_hook *hooks, size_t n, const char *name)
{
    unsigned c = (unsigned char)name[0];
    if (!(f->first[c >> 6] & (1ull << (c & 63))))
        return NULL;
    uint32_t w = prefix_word(name);
    unsigned b = prefix_bit(w);
    if (!(f->bits[b >> 6] & (1ull << (b & 63))))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((i >= GOT_FAST_MAX || f->pre[i] == w) && ls_same_str(hooks[i].name, name))
            return &hooks[i];
    return NULL;
}

/* ------------------------------------------------------------------ one object */

typedef struct got_obj {
    uintptr_t base;
    const ElfW(Phdr) * phdr;
    size_t phnum;
    uintptr_t relro_lo, relro_hi; /* what the loader made read-only: page-aligned, may be empty */
    int relro_prot;
    uintptr_t page;
} got_obj;

static int flags_to_prot(ElfW(Word) f)
{
    return (f & PF_R ? PROT_READ : 0) | (f & PF_W ? PROT_WRITE : 0) | (f & PF_X ? PROT_EXEC : 0);
}

/* The protection the slot's page has now, as the loader left it; -1 if not in a PT_LOAD. */
static int slot_prot(const got_obj *o, uintptr_t a)
{
    if (a >= o->relro_lo && a < o->relro_hi)
        return o->relro_prot;
    for (size_t i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *ph = &o->phdr[i];
        if (ph->p_type == PT_LOAD && a >= o->base + ph->p_vaddr && a - (o->base + ph->p_vaddr) < ph->p_memsz)
            return flags_to_prot(ph->p_flags);
    }
    return -1;
}

/* The loader rewrites d_ptr in place for most objects but not where .dynamic is read-only (the
 * vDSO, some architectures): an address below the load base is still an offset. */
static uintptr_t dyn_ptr(const got_obj *o, ElfW(Addr) p)
{
    return p >= o->base ? (uintptr_t)p : o->base + (uintptr_t)p;
}

#define GOT_PENDING 64
#define GOT_WEAK_ZERO 32

typedef struct got_scan {
    const got_obj *o;
    const ls_got_hook *hooks;
    size_t n;
    const got_filter *f;
    const ElfW(Sym) * symtab;
    const char *strtab;
    size_t strsz;
    void **pending[GOT_PENDING]; /* read-only slots, written together under one mprotect */
    void *pending_val[GOT_PENDING];
    size_t npending;
    size_t weak_zero[GOT_WEAK_ZERO]; /* weak imports the loader left at 0 (GLOB_DAT) */
    size_t nweak_zero;
    int written;
} got_scan;

static void store(void **slot, void *val)
{
    __atomic_store_n(slot, val, __ATOMIC_RELAXED); /* aligned: a racing caller sees old or new */
}

/* Writes the queued RELRO slots: one writable window over their pages, then the RELRO flags back.
 * Read-only slots outside RELRO (no common linker puts the GOT there) get a window each. */
static void flush(got_scan *s)
{
    const got_obj *o = s->o;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (size_t i = 0; i < s->npending; i++) {
        uintptr_t a = (uintptr_t)s->pending[i];
        if (a >= o->relro_lo && a < o->relro_hi) {
            lo = a < lo ? a : lo;
            hi = a + sizeof(void *) > hi ? a + sizeof(void *) : hi;
            continue;
        }
        int prot = slot_prot(o, a);
        uintptr_t pg = a & ~(o->page - 1);
        if (prot >= 0 && !mprotect((void *)pg, o->page, prot | PROT_WRITE)) {
            store(s->pending[i], s->pending_val[i]);
            s->written++;
            mprotect((void *)pg, o->page, prot);
        }
    }
    if (lo < hi) {
        uintptr_t pg_lo = lo & ~(o->page - 1), pg_hi = (hi + o->page - 1) & ~(o->page - 1);
        if (!mprotect((void *)pg_lo, pg_hi - pg_lo, o->relro_prot | PROT_WRITE)) {
            for (size_t i = 0; i < s->npending; i++) {
                uintptr_t a = (uintptr_t)s->pending[i];
                if (a >= o->relro_lo && a < o->relro_hi) {
                    store(s->pending[i], s->pending_val[i]);
                    s->written++;
                }
            }
            mprotect((void *)pg_lo, pg_hi - pg_lo, o->relro_prot);
        }
    }
    s->npending = 0;
}

static int weak_was_zero(const got_scan *s, size_t symidx)
{
    for (size_t i = 0; i < s->nweak_zero; i++)
        if (s->weak_zero[i] == symidx)
            return 1;
    return 0;
}

static void scan_relocs(got_scan *s, const ElfW(Rela) * rel, size_t count)
{
#ifdef GOT_R_JUMP_SLOT
    for (size_t i = 0; i < count; i++) {
        unsigned long type = GOT_R_TYPE(rel[i].r_info);
        size_t symidx = GOT_R_SYM(rel[i].r_info);
        if ((type != GOT_R_JUMP_SLOT && type != GOT_R_GLOB_DAT) || !symidx)
            continue;
        const ElfW(Sym) *sym = &s->symtab[symidx];
        if (sym->st_name >= s->strsz)
            continue;
        const ls_got_hook *h = hook_lookup(s->f, s->hooks, s->n, s->strtab + sym->st_name);
        if (!h)
            continue;
        void **slot = (void **)(s->o->base + rel[i].r_offset);
        void *cur = __atomic_load_n(slot, __ATOMIC_RELAXED);
        int weak_undef = GOT_ST_BIND(sym->st_info) == STB_WEAK && sym->st_shndx == SHN_UNDEF;
        if (!cur) {
            /* Unresolved (a weak reference to an absent library): stays absent. */
            if (weak_undef && type == GOT_R_GLOB_DAT && s->nweak_zero < GOT_WEAK_ZERO)
                s->weak_zero[s->nweak_zero++] = symidx;
            continue;
        }
        /* A lazily bound PLT slot points at its stub, resolved or not; if this object's own
         * address-of for the same weak import says "absent", leave the call absent too. */
        if (cur == h->hook || (weak_undef && type == GOT_R_JUMP_SLOT && weak_was_zero(s, symidx)))
            continue;
        int prot = slot_prot(s->o, (uintptr_t)slot);
        if (prot < 0)
            continue;
        if (prot & PROT_WRITE) {
            store(slot, h->hook);
            s->written++;
            continue;
        }
        if (s->npending == GOT_PENDING)
            flush(s);
        s->pending[s->npending] = slot;
        s->pending_val[s->npending++] = h->hook;
    }
#else
    (void)s, (void)rel, (void)count; /* an architecture we do not know the relocations of */
#endif
}

/* Scans one object's dynamic section and patches its import slots; returns slots written. */
static int patch_object(const got_obj *o, const ElfW(Dyn) * dyn, const ls_got_hook *hooks, size_t n,
                        const got_filter *f)
{
    got_scan s = {.o = o, .hooks = hooks, .n = n, .f = f};
    uintptr_t rela = 0, jmprel = 0;
    size_t relasz = 0, relaent = sizeof(ElfW(Rela)), pltrelsz = 0, relacount = 0;
    long pltrel = DT_RELA;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: s.symtab = (const ElfW(Sym) *)dyn_ptr(o, d->d_un.d_ptr); break;
        case DT_STRTAB: s.strtab = (const char *)dyn_ptr(o, d->d_un.d_ptr); break;
        case DT_STRSZ: s.strsz = d->d_un.d_val; break;
        case DT_RELA: rela = dyn_ptr(o, d->d_un.d_ptr); break;
        case DT_RELASZ: relasz = d->d_un.d_val; break;
        case DT_RELAENT: relaent = d->d_un.d_val; break;
        case DT_RELACOUNT: relacount = d->d_un.d_val; break;
        case DT_JMPREL: jmprel = dyn_ptr(o, d->d_un.d_ptr); break;
        case DT_PLTRELSZ: pltrelsz = d->d_un.d_val; break;
        case DT_PLTREL: pltrel = (long)d->d_un.d_val; break;
        }
    }
    if (!s.symtab || !s.strtab || relaent != sizeof(ElfW(Rela)))
        return 0;
    /* GLOB_DAT first: the weak "absent" answers it records are consulted for JUMP_SLOT. The first
     * DT_RELACOUNT entries are R_*_RELATIVE (the linker sorts them first; glibc relies on it):
     * most of a large library's table (libcrypto, libpython), and never an import. */
    size_t nrela = rela ? relasz / sizeof(ElfW(Rela)) : 0;
    if (relacount < nrela)
        scan_relocs(&s, (const ElfW(Rela) *)rela + relacount, nrela - relacount);
    if (jmprel && pltrelsz && pltrel == DT_RELA)
        scan_relocs(&s, (const ElfW(Rela) *)jmprel, pltrelsz / sizeof(ElfW(Rela)));
    if (s.npending)
        flush(&s);
    return s.written;
}

/* ------------------------------------------------------------------ the walk */

typedef struct got_walk {
    got_client *c;
    const got_filter *f;
    uintptr_t self, ldso, vdso;
    size_t page;
    int written;
    size_t idx;     /* position of the current object in the list */
    size_t keep;    /* objects before this position were scanned by an earlier walk */
    size_t scanned; /* objects before this position are scanned now */
    int incomplete; /* an object was left for later (still loading) */
    unsigned long long adds, subs;
} got_walk;

/* A loaded object that is not fully relocated yet (another thread is inside dlopen): its slots
 * are about to be written by the loader. _dl_find_object (glibc 2.35) only knows objects whose
 * relocation is complete. */
static int still_loading(uintptr_t addr_in_object)
{
#if defined(DLFO_STRUCT_HAS_EH_DBASE)
    struct dl_find_object r;
    return _dl_find_object((void *)addr_in_object, &r) != 0;
#else
    (void)addr_in_object;
    return 0;
#endif
}

/* glibc's libc.so.6 calls its own functions directly and imports no driver's: its few hundred
 * import slots are not worth a scan in every process. */
static int is_libc(const char *name)
{
    const char *base = name;
    for (const char *p = name; *p; p++)
        if (*p == '/')
            base = p + 1;
    return ls_same_str(base, "libc.so.6");
}

/* dl_iterate_phdr callback: the loader's write lock is held (the list cannot change under us). */
static int walk_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    got_walk *w = arg;
    got_client *c = w->c;
    (void)size;
    if (w->idx == 0) {
        /* Decided here, under the loader's lock, so no load or unload slips in between. */
        w->adds = info->dlpi_adds, w->subs = info->dlpi_subs;
        unsigned long long gone = c->walked ? w->subs - c->subs : 0;
        w->keep = c->walked && c->scanned > gone ? c->scanned - (size_t)gone : 0;
    }
    size_t idx = w->idx++;
    if (idx < w->keep) {
        w->scanned = idx + 1;
        return 0;
    }
    got_obj o = {.base = info->dlpi_addr, .phdr = info->dlpi_phdr, .phnum = info->dlpi_phnum, .page = w->page};
    const ElfW(Dyn) *dyn = NULL;
    uintptr_t lo = UINTPTR_MAX, hi = 0; /* the span of its PT_LOAD segments */
    for (size_t i = 0; i < o.phnum; i++) {
        const ElfW(Phdr) *ph = &o.phdr[i];
        if (ph->p_type == PT_LOAD) {
            lo = o.base + ph->p_vaddr < lo ? o.base + ph->p_vaddr : lo;
            hi = o.base + ph->p_vaddr + ph->p_memsz > hi ? o.base + ph->p_vaddr + ph->p_memsz : hi;
        } else if (ph->p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(o.base + ph->p_vaddr);
        else if (ph->p_type == PT_GNU_RELRO) {
            o.relro_lo = (o.base + ph->p_vaddr) & ~(w->page - 1);
            o.relro_hi = (o.base + ph->p_vaddr + ph->p_memsz) & ~(w->page - 1);
            o.relro_prot = flags_to_prot(ph->p_flags);
        }
    }
#define IN_SPAN(a) ((a) >= lo && (a) < hi) /* objects do not overlap: the span tells them apart */
    if (dyn && !(w->vdso && IN_SPAN(w->vdso))) {
        const char *name = info->dlpi_name ? info->dlpi_name : "";
        int wanted =
            c->want ? c->want(name, c->arg) : !IN_SPAN(w->self) && !(w->ldso && IN_SPAN(w->ldso)) && !is_libc(name);
        if (wanted && still_loading((uintptr_t)dyn)) {
            w->incomplete = 1; /* and `scanned` stops growing: the next walk starts here */
            return 0;
        }
        if (wanted)
            w->written += patch_object(&o, dyn, c->hooks, c->n, w->f);
    }
#undef IN_SPAN
    if (!w->incomplete)
        w->scanned = idx + 1;
    return 0;
}

/* Stops at the first object: only the loader's generation counters are wanted. */
static int read_generation(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    unsigned long long *g = arg;
    g[0] = info->dlpi_adds, g[1] = info->dlpi_subs;
    return 1;
}

int ls_got_patch(int (*want)(const char *objname, void *arg), void *arg, const ls_got_hook *hooks, size_t n)
{
    if (!hooks || !n)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!hooks[i].name || !hooks[i].name[0] || !hooks[i].hook)
            return -1;
    int saved_errno = errno;                             /* mprotect may set it; callers are hooks */
    pthread_once(&got_atfork_once, got_register_atfork); /* not under got_mu: fork's prepare takes it */
    pthread_mutex_lock(&got_mu);
    got_client *c = client_for(want, arg, hooks, n);
    unsigned long long gen[2] = {0, 0};
    dl_iterate_phdr(read_generation, gen);
    int written = 0;
    if (!(c->walked && c->complete && c->adds == gen[0] && c->subs == gen[1])) {
        got_filter f;
        filter_build(&f, hooks, n);
        got_walk w = {.c = c, .f = &f, .page = (size_t)getauxval(AT_PAGESZ)};
        if (!w.page)
            w.page = 4096;
        w.self = (uintptr_t)&ls_got_patch;
        w.ldso = (uintptr_t)getauxval(AT_BASE);
        w.vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
        dl_iterate_phdr(walk_one, &w);
        written = w.written;
        if (c != &overflow_client) {
            c->walked = 1;
            c->complete = !w.incomplete;
            c->adds = w.adds, c->subs = w.subs;
            c->scanned = w.scanned;
        }
    }
    pthread_mutex_unlock(&got_mu);
    errno = saved_errno;
    return written;
}

/* ------------------------------------------------------------------ lookups without the loader
 * The loader's own lookup (dlsym, or binding an import) costs 700-900 instructions a name, paid by
 * every process the shim is preloaded into, most of which never open a socket. These read the
 * objects' GNU hash tables directly (100-200 instructions a name) and answer only when the answer
 * is certain; otherwise the caller asks dlsym. */

typedef struct gnu_tab {
    uintptr_t base;
    const ElfW(Sym) * symtab;
    const char *strtab;
    const ElfW(Half) * versym;
    const uint32_t *buckets, *chain;
    const ElfW(Addr) * bloom;
    uint32_t nbuckets, symoffset, bloom_words, bloom_shift;
} gnu_tab;

static uint32_t gnu_hash(const char *s)
{
    uint32_t h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h;
}

/* 0 and t filled; -1 when the object has no GNU hash table (or no dynamic section). */
static int gnu_tab_of(const struct dl_phdr_info *info, gnu_tab *t)
{
    got_obj o = {.base = info->dlpi_addr, .phdr = info->dlpi_phdr, .phnum = info->dlpi_phnum};
    const ElfW(Dyn) *dyn = NULL;
    for (size_t i = 0; i < o.phnum; i++)
        if (o.phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(o.base + o.phdr[i].p_vaddr);
    if (!dyn)
        return -1;
    memset(t, 0, sizeof *t);
    t->base = o.base;
    const uint32_t *h = NULL;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_GNU_HASH: h = (const uint32_t *)dyn_ptr(&o, d->d_un.d_ptr); break;
        case DT_SYMTAB: t->symtab = (const ElfW(Sym) *)dyn_ptr(&o, d->d_un.d_ptr); break;
        case DT_STRTAB: t->strtab = (const char *)dyn_ptr(&o, d->d_un.d_ptr); break;
        case DT_VERSYM: t->versym = (const ElfW(Half) *)dyn_ptr(&o, d->d_un.d_ptr); break;
        }
    }
    if (!h || !t->symtab || !t->strtab || !h[0] || !h[2] || (h[2] & (h[2] - 1)))
        return -1;
    t->nbuckets = h[0], t->symoffset = h[1], t->bloom_words = h[2], t->bloom_shift = h[3];
    t->bloom = (const ElfW(Addr) *)(h + 4);
    t->buckets = (const uint32_t *)(t->bloom + t->bloom_words);
    t->chain = t->buckets + t->nbuckets;
    return 0;
}

/* The object's definition of name that an unversioned lookup takes (the default version, never
 * a hidden old one), or NULL. */
static const ElfW(Sym) * gnu_find(const gnu_tab *t, const char *name, uint32_t h)
{
    const unsigned bits = sizeof(ElfW(Addr)) * 8;
    ElfW(Addr) word = t->bloom[(h / bits) & (t->bloom_words - 1)];
    ElfW(Addr) mask = ((ElfW(Addr))1 << (h % bits)) | ((ElfW(Addr))1 << ((h >> t->bloom_shift) % bits));
    if ((word & mask) != mask)
        return NULL;
    uint32_t i = t->buckets[h % t->nbuckets];
    if (i < t->symoffset)
        return NULL;
    for (;; i++) {
        uint32_t ch = t->chain[i - t->symoffset];
        if (((ch ^ h) >> 1) == 0) {
            const ElfW(Sym) *s = &t->symtab[i];
            int bind = GOT_ST_BIND(s->st_info);
            if (s->st_shndx != SHN_UNDEF && (bind == STB_GLOBAL || bind == STB_WEAK) &&
                !(t->versym && ((t->versym[i] & 0x8000) || (t->versym[i] & 0x7fff) == 0)) &&
                ls_same_str(t->strtab + s->st_name, name))
                return s;
        }
        if (ch & 1)
            return NULL;
    }
}

/* The hash tables of the objects after the shim, kept while no object is loaded or unloaded (the
 * loader's generation counters): the constructors of several hook files ask in turn. Under got_mu. */
/* The loaded objects as the last walk saw them, kept while the loader's generation counters say
 * no object was loaded or unloaded since (the constructors of several hook files ask in turn), and
 * each one's hash table once something needed it. Under got_mu. */
#define GOT_KNOWN_MAX 32
enum { KNOWN_OTHER, KNOWN_SELF, KNOWN_LIBC, KNOWN_LDSO, KNOWN_VDSO };

typedef struct got_known {
    struct dl_phdr_info info;
    unsigned char kind;
    signed char tab_state; /* 0 not read yet, 1 tab holds it, -1 no GNU hash table */
    gnu_tab tab;
} got_known;

static struct {
    int valid, overflow; /* overflow: more objects than GOT_KNOWN_MAX (the rest unknown) */
    int last_is_self;    /* seen for every object, listed or not */
    unsigned long long adds, subs;
    size_t n, self; /* self == n: the shim was not seen */
    got_known o[GOT_KNOWN_MAX];
} known;

typedef struct known_walk {
    uintptr_t self, ldso, vdso;
} known_walk;

static int known_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    known_walk *w = arg;
    (void)size;
    uintptr_t lo = UINTPTR_MAX, hi = 0; /* the span of its PT_LOAD segments */
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD) {
            lo = info->dlpi_addr + ph->p_vaddr < lo ? info->dlpi_addr + ph->p_vaddr : lo;
            hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz > hi ? info->dlpi_addr + ph->p_vaddr + ph->p_memsz : hi;
        }
    }
    known.last_is_self = w->self >= lo && w->self < hi;
    if (known.n == GOT_KNOWN_MAX) {
        known.overflow = 1;
        return 0; /* not listed; still walked for last_is_self */
    }
    got_known *k = &known.o[known.n];
    memset(k, 0, sizeof *k);
    k->info = *info; /* its pointers are the loader's: valid while the object stays loaded */
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (known.self == GOT_KNOWN_MAX && w->self >= lo && w->self < hi)
        k->kind = KNOWN_SELF, known.self = known.n;
    else if (w->vdso && w->vdso >= lo && w->vdso < hi)
        k->kind = KNOWN_VDSO;
    else if (w->ldso && w->ldso >= lo && w->ldso < hi)
        k->kind = KNOWN_LDSO;
    else if (is_libc(name))
        k->kind = KNOWN_LIBC;
    known.n++;
    return 0;
}

/* Brings `known` up to date: one cheap dl_iterate_phdr call when nothing changed. */
static void known_refresh(void)
{
    unsigned long long gen[2] = {0, 0};
    dl_iterate_phdr(read_generation, gen);
    if (known.valid && known.adds == gen[0] && known.subs == gen[1])
        return;
    known.valid = known.overflow = known.last_is_self = 0;
    known.n = 0;
    known.self = GOT_KNOWN_MAX;
    known_walk w = {.self = (uintptr_t)&known_refresh,
                    .ldso = (uintptr_t)getauxval(AT_BASE),
                    .vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR)};
    dl_iterate_phdr(known_one, &w);
    if (known.self == GOT_KNOWN_MAX)
        known.self = known.n;
    known.valid = 1;
    known.adds = gen[0], known.subs = gen[1];
}

static const gnu_tab *known_tab(got_known *k)
{
    if (!k->tab_state)
        k->tab_state = gnu_tab_of(&k->info, &k->tab) == 0 ? 1 : -1;
    return k->tab_state > 0 ? &k->tab : NULL;
}

size_t ls_got_next_symbols(const char *const *names, void **addrs, size_t n)
{
    pthread_once(&got_atfork_once, got_register_atfork); /* not under got_mu: fork's prepare takes it */
    pthread_mutex_lock(&got_mu);
    known_refresh();
    /* Every object after the shim must be readable (and listed), or the first definition of a
     * name could be in one we cannot see: then every name is left to dlsym. */
    int blind = known.overflow || known.self >= known.n;
    for (size_t k = known.self + 1; !blind && k < known.n; k++)
        blind = known.o[k].kind != KNOWN_VDSO && !known_tab(&known.o[k]);
    size_t open = 0;
    for (size_t i = 0; i < n; i++) {
        if (!addrs[i] && !blind) {
            uint32_t h = gnu_hash(names[i]);
            for (size_t k = known.self + 1; k < known.n; k++) {
                if (known.o[k].kind == KNOWN_VDSO) /* not in the search scope */
                    continue;
                const ElfW(Sym) *s = gnu_find(&known.o[k].tab, names[i], h);
                if (!s)
                    continue;
                /* The first definition is RTLD_NEXT's answer; an IFUNC's address is its resolver's
                 * result, which only the loader knows: left to dlsym. */
                if (GOT_ST_TYPE(s->st_info) == STT_FUNC)
                    addrs[i] = (void *)(known.o[k].tab.base + s->st_value);
                break;
            }
        }
        open += addrs[i] == NULL;
    }
    pthread_mutex_unlock(&got_mu);
    return open;
}

int ls_got_defined(const char *name)
{
    pthread_once(&got_atfork_once, got_register_atfork);
    pthread_mutex_lock(&got_mu);
    known_refresh();
    uint32_t h = gnu_hash(name);
    int found = 0, unknown = known.overflow;
    for (size_t k = 0; k < known.n && !found; k++) {
        /* glibc's own objects and the shim define no name this is asked about */
        if (known.o[k].kind != KNOWN_OTHER)
            continue;
        const gnu_tab *t = known_tab(&known.o[k]);
        if (!t)
            unknown = 1;
        else if (gnu_find(t, name, h))
            found = 1;
    }
    pthread_mutex_unlock(&got_mu);
    return found ? 1 : unknown ? -1 : 0;
}

int ls_got_self_is_last(void)
{
    pthread_once(&got_atfork_once, got_register_atfork);
    pthread_mutex_lock(&got_mu);
    known_refresh();
    int last = known.last_is_self;
    pthread_mutex_unlock(&got_mu);
    return last;
}

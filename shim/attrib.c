/* Attribution contexts (issue 11): a label (a test id, a request route such as "POST /webhooks/{id}")
 * and a phase ("setup", "call", "teardown", "request"), interned once into a small id that every
 * tracked socket, handle and checkout records at creation. An attribution value is 64 bits: the
 * id in the low half and an instance number in the high half (which request: reports count
 * requests per route), 0 = none.
 *
 * Where the current value comes from, first found wins: the Python side (a contextvars.ContextVar
 * read by hook_python.c while it holds the GIL for the stack walk, so it follows asyncio tasks),
 * this thread's value (the public C API, leakshim_set_context), the process-wide value.
 *
 * Labels are never freed (a suite has as many labels as tests): readers index a two-level table
 * without a lock, the writer publishes an entry before its id. The creation sequence numbers every
 * creation and checkout, so "what was created since this point" is a comparison. */
#include "ls_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_BITS 8
#define CHUNK (1u << CHUNK_BITS)
#define MAX_CHUNKS 4096 /* 1M labels */

typedef struct attr_ent {
    const char *label, *phase;
} attr_ent;

static attr_ent *chunks[MAX_CHUNKS];
static uint32_t nattr;  /* ids 1..nattr are valid */
static uint32_t *slots; /* open addressing on (label, phase): id, 0 empty */
static size_t nslots;
static pthread_mutex_t attr_lock = PTHREAD_MUTEX_INITIALIZER;

static LS_TLS uint64_t tls_attr;
static uint64_t process_attr;
static uint64_t seq;
uint64_t (*ls_attr_py_hook)(void);

static uint32_t hash2(const char *a, const char *b)
{
    uint32_t h = 2166136261u;
    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (; *b; b++)
        h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

static attr_ent *ent(uint32_t id)
{
    if (!id || id > __atomic_load_n(&nattr, __ATOMIC_ACQUIRE))
        return NULL;
    attr_ent *c = __atomic_load_n(&chunks[(id - 1) >> CHUNK_BITS], __ATOMIC_ACQUIRE);
    return c ? &c[(id - 1) & (CHUNK - 1)] : NULL;
}

/* Caller holds attr_lock. */
static int grow_slots(void)
{
    size_t nc = nslots ? nslots * 2 : 1024;
    uint32_t *n = calloc(nc, sizeof *n);
    if (!n)
        return -1;
    for (uint32_t id = 1; id <= nattr; id++) {
        attr_ent *e = ent(id);
        size_t j = hash2(e->label, e->phase) & (nc - 1);
        while (n[j])
            j = (j + 1) & (nc - 1);
        n[j] = id;
    }
    free(slots);
    slots = n;
    nslots = nc;
    return 0;
}

uint32_t ls_attr_intern(const char *label, const char *phase)
{
    if (!label || !*label)
        return 0;
    if (!phase)
        phase = "";
    uint32_t id = 0;
    pthread_mutex_lock(&attr_lock);
    if ((nattr + 1) * 2 > nslots && grow_slots() != 0)
        goto out;
    size_t j = hash2(label, phase) & (nslots - 1);
    while (slots[j]) {
        attr_ent *e = ent(slots[j]);
        if (!strcmp(e->label, label) && !strcmp(e->phase, phase)) {
            id = slots[j];
            goto out;
        }
        j = (j + 1) & (nslots - 1);
    }
    if (nattr >= (uint32_t)MAX_CHUNKS * CHUNK)
        goto out;
    uint32_t c = nattr >> CHUNK_BITS;
    if (!chunks[c]) {
        attr_ent *n = calloc(CHUNK, sizeof *n);
        if (!n)
            goto out;
        __atomic_store_n(&chunks[c], n, __ATOMIC_RELEASE);
    }
    char *l = strdup(label), *p = strdup(phase);
    if (!l || !p) {
        free(l);
        free(p);
        goto out;
    }
    chunks[c][nattr & (CHUNK - 1)] = (attr_ent){l, p};
    __atomic_store_n(&nattr, nattr + 1, __ATOMIC_RELEASE); /* the entry is visible before its id */
    id = nattr;
    slots[j] = id;
out:
    pthread_mutex_unlock(&attr_lock);
    return id;
}

const char *ls_attr_label(uint64_t a)
{
    attr_ent *e = ent((uint32_t)a);
    return e ? e->label : NULL;
}

const char *ls_attr_phase(uint64_t a)
{
    attr_ent *e = ent((uint32_t)a);
    return e ? e->phase : NULL;
}

void ls_attr_set_thread(uint64_t a)
{
    tls_attr = a;
}

uint64_t ls_attr_thread(void)
{
    return tls_attr;
}

void ls_attr_set_process(uint64_t a)
{
    __atomic_store_n(&process_attr, a, __ATOMIC_RELAXED);
}

uint64_t ls_attr_current(void)
{
    if (ls_attr_py_hook) {
        uint64_t a = ls_attr_py_hook();
        if (a)
            return a;
    }
    if (tls_attr)
        return tls_attr;
    return __atomic_load_n(&process_attr, __ATOMIC_RELAXED);
}

uint64_t ls_seq_next(void)
{
    return __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
}

uint64_t ls_seq_now(void)
{
    return __atomic_load_n(&seq, __ATOMIC_RELAXED);
}

void ls_attr_atfork(int phase)
{
    ls_mutex_atfork(&attr_lock, phase);
}

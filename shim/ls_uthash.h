/* The one place uthash is included: its allocations go through the shim's allocator and an
 * out-of-memory condition never exits the host (uthash's default uthash_fatal calls exit()). */
#ifndef LS_UTHASH_H
#define LS_UTHASH_H
#include <stdlib.h>

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) malloc(sz)
#define uthash_free(ptr, sz) free(ptr)
/* On OOM uthash leaves the table consistent and the item unadded; we remember it happened. */
extern int ls_hash_oom;
#define uthash_nonfatal_oom(obj) (ls_hash_oom = 1)
#include <uthash.h>
#endif

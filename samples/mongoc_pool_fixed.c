/* The fixed mongoc_pool sample: every path pushes the client back. */
#define FIXED 1
#include "mongoc_pool_leak.c"

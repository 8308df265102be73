/* The fixed mongoc_per_request sample: one client for the whole process, destroyed at exit. */
#define FIXED 1
#include "mongoc_per_request_leak.c"

/* The fixed pq_service: every path calls PQfinish. */
#define FIXED 1
#include "pq_service.c"

/*
 * "Did you mean": the closest of a list of names to a word someone typed (options.c). Used for
 * unknown LEAKSHIM_OPTIONS keys (by the shim and by `leakshim check-options`) and by tools/leakshim
 * for unknown commands and flags.
 */
#ifndef LS_SUGGEST_H
#define LS_SUGGEST_H

#include <stddef.h>

/* The name in names[0..n) closest to word[0..len), or NULL when none is close enough to be a
 * likely typo. Close: a case-insensitive edit distance (insert, delete, substitute, swap two
 * neighbours) of at most 1 for names up to 5 letters, 2 up to 8, 3 beyond; or word is the start
 * (3 letters or more) of exactly one name. Ties go to the earlier name. */
const char *ls_suggest(const char *word, size_t len, const char *const *names, size_t n);

#endif

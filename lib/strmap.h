/* A map from strings to pointers (chained hashing), for lookups on hot paths. */
#ifndef SW_STRMAP_H
#define SW_STRMAP_H

#include <stddef.h>

struct sw_strmap;

struct sw_strmap *sw_strmap_new(void);
/* Frees the map, not the values. NULL is a no-op. */
void sw_strmap_free(struct sw_strmap *m);
/* Sets `key` (copied) to `value`; returns 0 or SW_ENOMEM. */
int sw_strmap_set(struct sw_strmap *m, const char *key, void *value);
void *sw_strmap_get(const struct sw_strmap *m, const char *key);
/* Removes `key`; returns its value, or NULL. */
void *sw_strmap_del(struct sw_strmap *m, const char *key);
size_t sw_strmap_count(const struct sw_strmap *m);
/* Calls fn for every entry, in no particular order; the map must not change meanwhile. */
void sw_strmap_each(const struct sw_strmap *m, void (*fn)(const char *key, void *value, void *arg),
		    void *arg);

#endif

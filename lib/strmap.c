#include "strmap.h"

#include "error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct node {
	struct node *next;
	void *value;
	char key[];
};

struct sw_strmap {
	struct node **buckets;
	size_t nbuckets, count;
};

static size_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return (size_t)h;
}

struct sw_strmap *sw_strmap_new(void)
{
	struct sw_strmap *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->nbuckets = 64;
	m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
	if (!m->buckets) {
		free(m);
		return NULL;
	}
	return m;
}

void sw_strmap_free(struct sw_strmap *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct node *n = m->buckets[i], *next;
		for (; n; n = next) {
			next = n->next;
			free(n);
		}
	}
	free(m->buckets);
	free(m);
}

static void grow(struct sw_strmap *m)
{
	size_t nb = m->nbuckets * 2;
	struct node **b = calloc(nb, sizeof(*b));

	if (!b)
		return; /* keep working with longer chains */
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct node *n = m->buckets[i], *next;
		for (; n; n = next) {
			size_t h = hash(n->key) & (nb - 1);
			next = n->next;
			n->next = b[h];
			b[h] = n;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = nb;
}

int sw_strmap_set(struct sw_strmap *m, const char *key, void *value)
{
	size_t h = hash(key) & (m->nbuckets - 1), len;
	struct node *n;

	for (n = m->buckets[h]; n; n = n->next)
		if (strcmp(n->key, key) == 0) {
			n->value = value;
			return 0;
		}
	len = strlen(key);
	n = malloc(sizeof(*n) + len + 1);
	if (!n)
		return SW_ENOMEM;
	memcpy(n->key, key, len + 1);
	n->value = value;
	n->next = m->buckets[h];
	m->buckets[h] = n;
	if (++m->count > m->nbuckets)
		grow(m);
	return 0;
}

void *sw_strmap_get(const struct sw_strmap *m, const char *key)
{
	struct node *n = m->buckets[hash(key) & (m->nbuckets - 1)];

	for (; n; n = n->next)
		if (strcmp(n->key, key) == 0)
			return n->value;
	return NULL;
}

void *sw_strmap_del(struct sw_strmap *m, const char *key)
{
	struct node **p = &m->buckets[hash(key) & (m->nbuckets - 1)], *n;
	void *v;

	for (; (n = *p); p = &n->next)
		if (strcmp(n->key, key) == 0) {
			*p = n->next;
			v = n->value;
			free(n);
			m->count--;
			return v;
		}
	return NULL;
}

size_t sw_strmap_count(const struct sw_strmap *m)
{
	return m->count;
}

void sw_strmap_each(const struct sw_strmap *m, void (*fn)(const char *key, void *value, void *arg),
		    void *arg)
{
	for (size_t i = 0; i < m->nbuckets; i++)
		for (struct node *n = m->buckets[i]; n; n = n->next)
			fn(n->key, n->value, arg);
}

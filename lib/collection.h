/*
 * The language a collection's members are chosen by (siteward collection add --where):
 * conditions on a system's facts and inventory, joined with and, or, not and brackets.
 *
 *   package:libssl3                      the package is installed
 *   package:libssl3 < 3.0.15-1~deb12u1   ... at a version before that, in Debian's order
 *   os.codename = bookworm               os.id, os.version, kernel, arch, name: = != ~glob
 *   memory >= 8G   cpus > 2              memory, disk_free (K M G T: powers of 1024), cpus
 *   role = software-metering             the system has the role (!= : has it not)
 *   not (name ~ "lab-*" or role = test)
 *
 * A condition on a fact a system has not reported (no inventory yet) is false, whichever
 * its operator. Words are letters, digits and . _ - + : ~ * ?; anything else goes in
 * double quotes. At most SW_COLL_TEXT_MAX bytes, SW_COLL_NODES_MAX conditions and
 * operators, nested at most SW_COLL_DEPTH_MAX deep.
 */
#ifndef SW_COLLECTION_H
#define SW_COLLECTION_H

#include <jansson.h>
#include <stddef.h>

#define SW_COLL_TEXT_MAX  4096
#define SW_COLL_NODES_MAX 256
#define SW_COLL_DEPTH_MAX 32

struct sw_coll_expr;

/* What one system is judged by. */
struct sw_coll_facts {
	const char *name;
	const json_t *roles;	/* array of role names */
	const json_t *facts;	/* its heartbeat's facts (os, kernel, arch, cpus, memory_total,
				   disk_free), or NULL */
	const json_t *hardware; /* its inventory's hardware, or NULL */
	/* The installed version of package `name` there, or NULL. */
	const char *(*package)(void *arg, const char *name);
	void *arg;
};

/* Parses `text`; SW_EINVAL with where and why for a person ("at 14: a version follows
 * '<'"). Free with sw_coll_free(). */
int sw_coll_parse(const char *text, struct sw_coll_expr **out, char *err, size_t errlen);
void sw_coll_free(struct sw_coll_expr *e);

/* 1 if the system fits, 0 if not. */
int sw_coll_match(const struct sw_coll_expr *e, const struct sw_coll_facts *f);

/* The packages the expression asks about, each once, into `out` (pointers into `e`);
 * returns how many (at most `max`). */
size_t sw_coll_packages(const struct sw_coll_expr *e, const char **out, size_t max);

/* A size as people write it: 8G, 512M, 1024 (bytes). 0, or SW_EINVAL. */
int sw_coll_size_parse(const char *s, long long *out);

#endif

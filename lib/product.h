/*
 * A product of the site: which program it is (executable name or ELF build ID, then a
 * version pattern), its licenses and its policy (allowed hours, denied users and
 * hosts). The site server stores products, and the license servers and the agents'
 * passive metering receive them as JSON; all three read them with sw_product_parse(),
 * check them with sw_product_validate() and choose a program's product with
 * sw_product_match(), so they cannot disagree about what a product is or which one a
 * program runs as.
 */
#ifndef SW_PRODUCT_H
#define SW_PRODUCT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SW_PRODUCT_NAME_MAX	63
#define SW_PRODUCT_EXE_MAX	255
#define SW_PRODUCT_VERSION_MAX	64
#define SW_PRODUCT_BUILD_ID_MAX 128
#define SW_PRODUCT_HOURS_MAX	15
#define SW_PRODUCT_NAMES_MAX	64   /* names in a deny list */
#define SW_PRODUCT_LIST_LEN	1024 /* a deny list's text, with its NUL */
#define SW_PRODUCT_LICENSES_MAX 100000000
#define SW_PRODUCT_MAX		1000   /* in one table */
#define SW_PRODUCT_IDLE_MIN	10     /* seconds */
#define SW_PRODUCT_IDLE_MAX	604800 /* seconds: a week */
#define SW_PRODUCT_SIGNAL_MAX	7
#define SW_PRODUCT_PACKAGE_MAX	100

/* What becomes of a program whose license an administrator or its idleness took back:
 * it is told with `reclaim_signal` (a signal it can catch), then stopped, or left to
 * run unlicensed with its use recorded. */
enum sw_reclaim_policy { SW_RECLAIM_STOP, SW_RECLAIM_RUN };

/* A product's rule: licenses reserved for a group's members (`reserve`), or the most a
 * group, a user or a host may hold at once (`max`). Each is a pool of its own count,
 * shared among the license servers as the product's licenses are; `allotment` is one
 * license server's share of it (-1 where none was given). A reservation comes out of
 * the product's count: the rest is the pool everyone draws from. A product may be
 * borrowed (siteward-run borrow) only under its `borrow` rule: the most licenses lent out
 * at once, and the longest loan (`max_s`); a borrow rule names no target. */
#define SW_PRODUCT_RULES_MAX 32
#define SW_RULE_NAME_MAX     64
#define SW_RULE_KEY_MAX	     (SW_PRODUCT_NAME_MAX + SW_RULE_NAME_MAX + 24)
enum sw_rule_kind { SW_RULE_RESERVE, SW_RULE_MAX, SW_RULE_BORROW };
enum sw_rule_target { SW_TARGET_GROUP, SW_TARGET_USER, SW_TARGET_HOST };

struct sw_product_rule {
	enum sw_rule_kind kind;
	enum sw_rule_target target;
	char name[SW_RULE_NAME_MAX + 1];
	int64_t count;
	int64_t allotment;
	int64_t max_s; /* borrow: the longest loan, seconds */
};
#define SW_BORROW_DEFAULT_S (7 * 86400LL)  /* a borrow rule's longest loan when not given */
#define SW_BORROW_LIMIT_S   (90 * 86400LL) /* the longest any product allows */
#define SW_BORROW_MIN_S	    60		   /* the shortest */

struct sw_product {
	char name[SW_PRODUCT_NAME_MAX + 1];
	char exe[SW_PRODUCT_EXE_MAX + 1];	    /* file name, no path */
	char version[SW_PRODUCT_VERSION_MAX + 1];   /* glob over package versions; "" any */
	char build_id[SW_PRODUCT_BUILD_ID_MAX + 1]; /* lowercase hex; "" not known by one */
	char package[SW_PRODUCT_PACKAGE_MAX + 1];   /* the Debian package it comes in, for the
						       report of installs; "" not known */
	char hours[SW_PRODUCT_HOURS_MAX + 1];	    /* "HH:MM-HH:MM" as given; "" any time */
	int hours_from, hours_to;		    /* minutes after midnight; -1: any time */
	char deny_users[SW_PRODUCT_LIST_LEN];	    /* "a,b": names, comma-separated */
	char deny_hosts[SW_PRODUCT_LIST_LEN];
	int64_t licenses;  /* the site's count */
	int64_t allotment; /* one license server's share; -1 where none was given */
	int enforce;
	enum sw_reclaim_policy on_reclaim;
	char reclaim_signal[SW_PRODUCT_SIGNAL_MAX + 1]; /* "TERM", "USR1", …, "none"; "":
							   TERM to stop, none to run */
	int64_t idle_s; /* a license whose program used no CPU this long is reclaimed; 0:
			   never */
	size_t nrules;
	struct sw_product_rule rules[SW_PRODUCT_RULES_MAX];
};

/* "reserve", "max" or "borrow"; "group", "user" or "host". */
const char *sw_rule_kind_name(enum sw_rule_kind k);
const char *sw_rule_target_name(enum sw_rule_target t);
/* The pool's key among the product's pools: "PRODUCT/KIND:TARGET:NAME", what the site
 * server's shares and a license server's reports name it by. */
void sw_product_rule_key(const struct sw_product *p, const struct sw_product_rule *r, char *out,
			 size_t outlen);
/* The licenses of the pool everyone draws from: the count less every reservation. */
int64_t sw_product_open_count(const struct sw_product *p);
/* A rule for a person: "reserve 2 for group eng", "max 1 for user alice", "borrow 3 for
 * up to 14d". */
void sw_product_rule_text(const struct sw_product_rule *r, char *out, size_t outlen);
/* Reads one rule ({kind, count, group|user|host, allotment}, or {kind: borrow, count,
 * max_s, allotment}). 0, or SW_EINVAL. */
int sw_product_rule_parse(const json_t *j, struct sw_product_rule *r, char *err, size_t errlen);
/* Adds `r` to the product's rules, or replaces the rule of its kind and target; a count
 * of 0 removes it. A borrow rule without max_s keeps the one it replaces, or takes
 * SW_BORROW_DEFAULT_S. Then the product is validated. 0, or SW_EINVAL / SW_ETOOBIG. */
int sw_product_rule_set(struct sw_product *p, const struct sw_product_rule *r, char *err,
			size_t errlen);
json_t *sw_product_rules_json(const struct sw_product *p);
/* The product's borrow rule, or NULL: it may not be borrowed. */
const struct sw_product_rule *sw_product_borrow_rule(const struct sw_product *p);

/* "stop" or "run"; NULL for anything else. */
const char *sw_reclaim_policy_name(enum sw_reclaim_policy p);
int sw_reclaim_policy_parse(const char *s, enum sw_reclaim_policy *out);
/* The signal number a product's reclaim_signal names into *signo (0: none). 0, or
 * SW_EINVAL if it names none that siteward sends. */
int sw_product_reclaim_signo(const struct sw_product *p, int *signo);

/* A program seen running or asking for a license. */
struct sw_program {
	const char *exe;      /* file name */
	const char *build_id; /* "" none; NULL not read yet */
	const char *version;  /* its package's, "" none; NULL not looked up yet */
};

/* What sw_product_match() would need to decide. */
#define SW_PRODUCT_NEED_BUILD_ID 1u
#define SW_PRODUCT_NEED_VERSION	 2u

/* 1 if `exe` can be a program's file name: not empty, no path, not "." or "..". */
int sw_product_exe_valid(const char *exe);

/* An empty product: no pattern, no policy, no allotment. */
void sw_product_init(struct sw_product *p);

/* Reads one product as the site server sends it ({name, exe, version, build_id, hours,
 * deny_users, deny_hosts, licenses, enforce, allotment, on_reclaim, reclaim_signal,
 * idle_s, rules}; name, exe and licenses required) and validates it. 0, or SW_EINVAL with a
 * sentence in `err`. */
int sw_product_parse(const json_t *j, struct sw_product *p, char *err, size_t errlen);

/* Checks every field and derives hours_from/hours_to from `hours`: the one rule for
 * what a product may be, used on what an administrator asks for and on what a license
 * server or an agent receives. 0, or SW_EINVAL with a sentence in `err`. */
int sw_product_validate(struct sw_product *p, char *err, size_t errlen);

/* Reads a JSON list of names (an absent one is empty) into the "a,b" form of a deny
 * list, each a name as sw_name_valid() has it. 0, or SW_EINVAL. */
int sw_product_names_parse(const json_t *arr, const char *what, char *out, size_t len, char *err,
			   size_t errlen);

/* 1 if `name` is in the deny list `list` ("a,b"), 0 if not. */
int sw_product_list_has(const char *list, const char *name);

/* 1 if the hours window allows use at `minute` after midnight (any time when the
 * product has none); a window may run past midnight, like 22:00-06:00. */
int sw_product_hours_allow(const struct sw_product *p, int minute);

/* The product as the site server sends it; allotment only when it has one. NULL when
 * out of memory. */
json_t *sw_product_json(const struct sw_product *p);

/* The product `prog` runs as among `n` products: those naming its executable, or its
 * build ID, which a renamed copy keeps; of those the most specific version pattern
 * that fits its version wins (a product without one takes the rest), and of equally
 * specific ones the first by name, so the order of the table does not matter. NULL
 * when none fits, or when something not known yet would decide: *need then says
 * what (SW_PRODUCT_NEED_*), and the caller asks again with it. */
const struct sw_product *sw_product_match(const struct sw_product *const *v, size_t n,
					  const struct sw_program *prog, unsigned *need);

/* A JSON array of products (at most SW_PRODUCT_MAX, no name twice) into `*out`, `*n`
 * products each allocated on its own; the caller frees with sw_product_array_free().
 * On failure nothing is left to free. */
int sw_product_array_parse(const json_t *arr, struct sw_product ***out, size_t *n, char *err,
			   size_t errlen);
void sw_product_array_free(struct sw_product **v, size_t n);

#endif

/* A product of the site: its one reading, its one check and its one matching rule. */
#include "product.h"

#include "dpkgdb.h"
#include "error.h"
#include "group.h"
#include "json.h"
#include "progver.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const policy_names[] = {[SW_RECLAIM_STOP] = "stop", [SW_RECLAIM_RUN] = "run"};

const char *sw_reclaim_policy_name(enum sw_reclaim_policy p)
{
	return (unsigned)p < sizeof(policy_names) / sizeof(*policy_names) ? policy_names[p] : NULL;
}

int sw_reclaim_policy_parse(const char *s, enum sw_reclaim_policy *out)
{
	for (size_t i = 0; i < sizeof(policy_names) / sizeof(*policy_names); i++)
		if (strcmp(s, policy_names[i]) == 0) {
			*out = (enum sw_reclaim_policy)i;
			return 0;
		}
	return SW_EINVAL;
}

/* The signals a reclaim may warn with: each one a program can catch. */
static const struct {
	const char *name;
	int signo;
} reclaim_signals[] = {{"none", 0},	{"TERM", SIGTERM}, {"INT", SIGINT},
		       {"HUP", SIGHUP}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}};

int sw_product_reclaim_signo(const struct sw_product *p, int *signo)
{
	if (!p->reclaim_signal[0]) {
		*signo = p->on_reclaim == SW_RECLAIM_STOP ? SIGTERM : 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(reclaim_signals) / sizeof(*reclaim_signals); i++)
		if (strcmp(p->reclaim_signal, reclaim_signals[i].name) == 0) {
			*signo = reclaim_signals[i].signo;
			return 0;
		}
	return SW_EINVAL;
}

void sw_product_init(struct sw_product *p)
{
	memset(p, 0, sizeof(*p));
	p->hours_from = p->hours_to = -1;
	p->allotment = -1;
}

/* --- rules --- */

static const char *const rule_kinds[] = {
    [SW_RULE_RESERVE] = "reserve", [SW_RULE_MAX] = "max", [SW_RULE_BORROW] = "borrow"};
static const char *const rule_targets[] = {
    [SW_TARGET_GROUP] = "group", [SW_TARGET_USER] = "user", [SW_TARGET_HOST] = "host"};

const char *sw_rule_kind_name(enum sw_rule_kind k)
{
	return (unsigned)k < SW_ARRAY_LEN(rule_kinds) ? rule_kinds[k] : "?";
}

const char *sw_rule_target_name(enum sw_rule_target t)
{
	return (unsigned)t < SW_ARRAY_LEN(rule_targets) ? rule_targets[t] : "?";
}

void sw_product_rule_key(const struct sw_product *p, const struct sw_product_rule *r, char *out,
			 size_t outlen)
{
	if (r->kind == SW_RULE_BORROW)
		snprintf(out, outlen, "%s/borrow", p->name);
	else
		snprintf(out, outlen, "%s/%s:%s:%s", p->name, sw_rule_kind_name(r->kind),
			 sw_rule_target_name(r->target), r->name);
}

void sw_product_rule_text(const struct sw_product_rule *r, char *out, size_t outlen)
{
	char span[48];

	if (r->kind == SW_RULE_BORROW) {
		sw_duration_text(r->max_s, span, sizeof(span));
		snprintf(out, outlen, "borrow %lld for up to %s", (long long)r->count, span);
		return;
	}
	snprintf(out, outlen, "%s %lld for %s %s", sw_rule_kind_name(r->kind), (long long)r->count,
		 sw_rule_target_name(r->target), r->name);
}

const struct sw_product_rule *sw_product_borrow_rule(const struct sw_product *p)
{
	for (size_t i = 0; i < p->nrules; i++)
		if (p->rules[i].kind == SW_RULE_BORROW)
			return &p->rules[i];
	return NULL;
}

int64_t sw_product_open_count(const struct sw_product *p)
{
	int64_t n = p->licenses;

	for (size_t i = 0; i < p->nrules; i++)
		if (p->rules[i].kind == SW_RULE_RESERVE)
			n -= p->rules[i].count;
	return n < 0 ? 0 : n;
}

int sw_product_rule_parse(const json_t *j, struct sw_product_rule *r, char *err, size_t errlen)
{
	const char *kind = NULL, *name = NULL;
	size_t targets = 0;
	int rc;

	memset(r, 0, sizeof(*r));
	r->allotment = -1;
	if (!json_is_object(j)) {
		sw_seterr(err, errlen, "a rule must be an object");
		return SW_EINVAL;
	}
	if ((rc = sw_json_str(j, "kind", 8, 1, &kind, err, errlen)) ||
	    (rc = sw_json_int(j, "count", 0, SW_PRODUCT_LICENSES_MAX, 1, &r->count, err, errlen)) ||
	    (rc = sw_json_int(j, "allotment", 0, SW_PRODUCT_LICENSES_MAX, 0, &r->allotment, err,
			      errlen)))
		return rc;
	if (strcmp(kind, "reserve") == 0)
		r->kind = SW_RULE_RESERVE;
	else if (strcmp(kind, "max") == 0)
		r->kind = SW_RULE_MAX;
	else if (strcmp(kind, "borrow") == 0)
		r->kind = SW_RULE_BORROW;
	else {
		sw_seterr(err, errlen, "a rule's kind must be reserve, max or borrow");
		return SW_EINVAL;
	}
	if (r->kind == SW_RULE_BORROW) {
		/* lent to whoever asks within the product's policy: no target */
		for (size_t t = 0; t < SW_ARRAY_LEN(rule_targets); t++)
			if (json_object_get(j, rule_targets[t])) {
				sw_seterr(err, errlen,
					  "a borrow rule names no group, user or host");
				return SW_EINVAL;
			}
		return sw_json_int(j, "max_s", 1, SW_BORROW_LIMIT_S, 0, &r->max_s, err, errlen);
	}
	for (size_t t = 0; t < SW_ARRAY_LEN(rule_targets); t++) {
		const char *s = NULL;

		if ((rc = sw_json_str(j, rule_targets[t], SW_RULE_NAME_MAX, 0, &s, err, errlen)))
			return rc;
		if (s) {
			targets++;
			r->target = (enum sw_rule_target)t;
			name = s;
		}
	}
	if (targets != 1) {
		sw_seterr(err, errlen, "a rule names one group, user or host");
		return SW_EINVAL;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	return 0;
}

/* One rule's own check: its name by its target's rule, a reservation for a group. */
static int rule_valid(const struct sw_product_rule *r, char *err, size_t errlen)
{
	int ok = r->kind == SW_RULE_BORROW     ? !r->name[0]
		 : r->target == SW_TARGET_USER ? sw_group_user_valid(r->name)
					       : sw_name_valid(r->name);

	if (r->kind == SW_RULE_BORROW &&
	    (r->max_s < SW_BORROW_MIN_S || r->max_s > SW_BORROW_LIMIT_S)) {
		sw_seterr(err, errlen, "a borrow rule's longest loan must be 1 minute to 90 days");
		return SW_EINVAL;
	}
	if (!ok) {
		sw_seterr(err, errlen, "a rule's %s '%.64s' is not a valid name",
			  sw_rule_target_name(r->target), r->name);
		return SW_EINVAL;
	}
	if (r->kind == SW_RULE_RESERVE && r->target != SW_TARGET_GROUP) {
		sw_seterr(err, errlen, "licenses are reserved for a group (siteward group add)");
		return SW_EINVAL;
	}
	if (r->count < 1) {
		sw_seterr(err, errlen, "a rule's count must be at least 1");
		return SW_EINVAL;
	}
	return 0;
}

static int rules_valid(const struct sw_product *p, char *err, size_t errlen)
{
	int64_t reserved = 0;
	int rc;

	if (p->nrules > SW_PRODUCT_RULES_MAX) {
		sw_seterr(err, errlen, "a product has at most %d rules", SW_PRODUCT_RULES_MAX);
		return SW_ETOOBIG;
	}
	for (size_t i = 0; i < p->nrules; i++) {
		const struct sw_product_rule *r = &p->rules[i];

		if ((rc = rule_valid(r, err, errlen)))
			return rc;
		for (size_t k = 0; k < i; k++)
			if (p->rules[k].kind == r->kind && p->rules[k].target == r->target &&
			    strcmp(p->rules[k].name, r->name) == 0) {
				sw_seterr(err, errlen, "two rules '%s %s %s'",
					  sw_rule_kind_name(r->kind),
					  sw_rule_target_name(r->target), r->name);
				return SW_EINVAL;
			}
		if (r->kind == SW_RULE_RESERVE)
			reserved += r->count;
	}
	if (reserved > p->licenses) {
		sw_seterr(err, errlen,
			  "the reservations (%lld) are more than the product's %lld licenses",
			  (long long)reserved, (long long)p->licenses);
		return SW_EINVAL;
	}
	return 0;
}

int sw_product_rule_set(struct sw_product *p, const struct sw_product_rule *r, char *err,
			size_t errlen)
{
	struct sw_product_rule rule;
	size_t i;
	int rc;

	for (i = 0; i < p->nrules; i++)
		if (p->rules[i].kind == r->kind && p->rules[i].target == r->target &&
		    strcmp(p->rules[i].name, r->name) == 0)
			break;
	if (r->count == 0) {
		if (i == p->nrules) {
			sw_seterr(err, errlen, "product %s has no rule '%s for %s %s'", p->name,
				  sw_rule_kind_name(r->kind), sw_rule_target_name(r->target),
				  r->name);
			return SW_ENOTFOUND;
		}
		memmove(&p->rules[i], &p->rules[i + 1], (p->nrules - i - 1) * sizeof(*p->rules));
		p->nrules--;
		return 0;
	}
	rule = *r;
	if (rule.kind == SW_RULE_BORROW && !rule.max_s)
		rule.max_s = i < p->nrules ? p->rules[i].max_s : SW_BORROW_DEFAULT_S;
	if ((rc = rule_valid(&rule, err, errlen)))
		return rc;
	if (i == p->nrules) {
		if (p->nrules == SW_PRODUCT_RULES_MAX) {
			sw_seterr(err, errlen, "a product has at most %d rules",
				  SW_PRODUCT_RULES_MAX);
			return SW_ETOOBIG;
		}
		p->nrules++;
	}
	p->rules[i] = rule;
	p->rules[i].allotment = -1;
	return rules_valid(p, err, errlen);
}

json_t *sw_product_rules_json(const struct sw_product *p)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < p->nrules; i++) {
		const struct sw_product_rule *r = &p->rules[i];
		json_t *o =
		    r->kind == SW_RULE_BORROW
			? json_pack("{ss sI sI}", "kind", "borrow", "count", (json_int_t)r->count,
				    "max_s", (json_int_t)r->max_s)
			: json_pack("{ss sI ss}", "kind", sw_rule_kind_name(r->kind), "count",
				    (json_int_t)r->count, sw_rule_target_name(r->target), r->name);

		if (o && r->allotment >= 0)
			json_object_set_new(o, "allotment", json_integer(r->allotment));
		if (!o || json_array_append_new(arr, o)) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

int sw_product_exe_valid(const char *exe)
{
	return *exe && strlen(exe) <= SW_PRODUCT_EXE_MAX && !strchr(exe, '/') &&
	       strcmp(exe, ".") != 0 && strcmp(exe, "..") != 0;
}

static int hex_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < 2 || n > SW_PRODUCT_BUILD_ID_MAX || n % 2)
		return 0;
	return strspn(s, "0123456789abcdef") == n;
}

/* "HH:MM-HH:MM" into minutes after midnight. A window that starts where it ends would
 * allow no time at all: the site server always refused it, and a license server took it
 * to mean never; it is refused everywhere now. */
static int hours_parse(const char *h, int *from, int *to)
{
	int a, b, c, d, n = 0;

	if (sscanf(h, "%2d:%2d-%2d:%2d%n", &a, &b, &c, &d, &n) != 4 || h[n] != '\0' || a < 0 ||
	    a > 24 || c < 0 || c > 24 || b < 0 || b > 59 || d < 0 || d > 59 ||
	    a * 60 + b == c * 60 + d)
		return SW_EINVAL;
	*from = a * 60 + b;
	*to = c * 60 + d;
	return 0;
}

/* Each name of "a,b" valid, at most SW_PRODUCT_NAMES_MAX of them. */
static int list_valid(const char *list)
{
	char name[SW_PRODUCT_NAME_MAX + 1];
	size_t count = 0;

	for (const char *s = list; *s;) {
		size_t n = strcspn(s, ",");

		if (n == 0 || n > SW_PRODUCT_NAME_MAX || ++count > SW_PRODUCT_NAMES_MAX)
			return 0;
		memcpy(name, s, n);
		name[n] = '\0';
		if (!sw_name_valid(name))
			return 0;
		s += n;
		if (*s == ',' && !*++s)
			return 0; /* a trailing comma */
	}
	return 1;
}

int sw_product_validate(struct sw_product *p, char *err, size_t errlen)
{
	int signo, rc;

	if (!sw_name_valid(p->name)) {
		sw_seterr(err, errlen, "product name must be 1-63 letters, digits, '.', '_', '-'");
		return SW_EINVAL;
	}
	if (!sw_product_exe_valid(p->exe)) {
		sw_seterr(err, errlen, "exe must be a file name, not a path");
		return SW_EINVAL;
	}
	if (strspn(p->version, "0123456789abcdefghijklmnopqrstuvwxyz"
			       "ABCDEFGHIJKLMNOPQRSTUVWXYZ.+~:_-*?[]!") != strlen(p->version)) {
		sw_seterr(err, errlen,
			  "version must be a pattern of a package version, like 9.* or 2.1-*");
		return SW_EINVAL;
	}
	if (p->build_id[0] && !hex_valid(p->build_id)) {
		sw_seterr(err, errlen, "build_id must be lowercase hex, as readelf -n shows it");
		return SW_EINVAL;
	}
	p->hours_from = p->hours_to = -1;
	if (p->hours[0] && hours_parse(p->hours, &p->hours_from, &p->hours_to)) {
		sw_seterr(err, errlen, "hours must be HH:MM-HH:MM, like 08:00-18:00");
		return SW_EINVAL;
	}
	if (!list_valid(p->deny_users) || !list_valid(p->deny_hosts)) {
		sw_seterr(err, errlen, "a deny list must be at most %d names",
			  SW_PRODUCT_NAMES_MAX);
		return SW_EINVAL;
	}
	if (p->licenses < 0 || p->licenses > SW_PRODUCT_LICENSES_MAX || p->allotment < -1 ||
	    p->allotment > SW_PRODUCT_LICENSES_MAX) {
		sw_seterr(err, errlen, "licenses must be 0 to %d", SW_PRODUCT_LICENSES_MAX);
		return SW_EINVAL;
	}
	p->enforce = p->enforce != 0;
	if (!sw_reclaim_policy_name(p->on_reclaim)) {
		sw_seterr(err, errlen, "on_reclaim must be stop or run");
		return SW_EINVAL;
	}
	if (sw_product_reclaim_signo(p, &signo)) {
		sw_seterr(err, errlen, "reclaim_signal must be TERM, INT, HUP, USR1, USR2 or none");
		return SW_EINVAL;
	}
	if ((rc = rules_valid(p, err, errlen)))
		return rc;
	if (p->package[0] && !sw_dpkg_name_valid(p->package)) {
		sw_seterr(err, errlen, "package must be a Debian package name, like cad-suite");
		return SW_EINVAL;
	}
	if (p->idle_s != 0 &&
	    (p->idle_s < SW_PRODUCT_IDLE_MIN || p->idle_s > SW_PRODUCT_IDLE_MAX)) {
		sw_seterr(err, errlen, "idle_s must be 0 (never) or %d s to %d s (a week)",
			  SW_PRODUCT_IDLE_MIN, SW_PRODUCT_IDLE_MAX);
		return SW_EINVAL;
	}
	return 0;
}

int sw_product_names_parse(const json_t *arr, const char *what, char *out, size_t len, char *err,
			   size_t errlen)
{
	const json_t *v;
	size_t i, used = 0;

	out[0] = '\0';
	if (!arr)
		return 0;
	if (!json_is_array(arr) || json_array_size(arr) > SW_PRODUCT_NAMES_MAX) {
		sw_seterr(err, errlen, "%s must be a list of at most %d names", what,
			  SW_PRODUCT_NAMES_MAX);
		return SW_EINVAL;
	}
	json_array_foreach(arr, i, v)
	{
		const char *name = json_string_value(v);

		if (!name || strlen(name) != json_string_length(v) || !sw_name_valid(name) ||
		    used + strlen(name) + 2 > len) {
			out[0] = '\0';
			sw_seterr(err, errlen, "%s: '%.63s' is not a name", what,
				  name ? name : "?");
			return SW_EINVAL;
		}
		used += (size_t)snprintf(out + used, len - used, "%s%s", used ? "," : "", name);
	}
	return 0;
}

static int copy_str(const json_t *j, const char *key, size_t max, int required, char *out,
		    char *err, size_t errlen)
{
	const char *s;
	int rc;

	if ((rc = sw_json_str(j, key, max, required, &s, err, errlen)))
		return rc;
	if (s)
		memcpy(out, s, strlen(s) + 1);
	return 0;
}

int sw_product_parse(const json_t *j, struct sw_product *p, char *err, size_t errlen)
{
	char why[200];
	const json_t *enforce, *rules;
	const char *policy = NULL;
	int rc;

	sw_product_init(p);
	if (!json_is_object(j)) {
		sw_seterr(err, errlen, "a product must be an object");
		return SW_EINVAL;
	}
	if ((rc = copy_str(j, "name", SW_PRODUCT_NAME_MAX, 1, p->name, err, errlen)))
		return rc;
	if ((rc = copy_str(j, "exe", SW_PRODUCT_EXE_MAX, 1, p->exe, why, sizeof(why))) ||
	    (rc =
		 copy_str(j, "version", SW_PRODUCT_VERSION_MAX, 0, p->version, why, sizeof(why))) ||
	    (rc = copy_str(j, "build_id", SW_PRODUCT_BUILD_ID_MAX, 0, p->build_id, why,
			   sizeof(why))) ||
	    (rc = copy_str(j, "hours", SW_PRODUCT_HOURS_MAX, 0, p->hours, why, sizeof(why))) ||
	    (rc =
		 copy_str(j, "package", SW_PRODUCT_PACKAGE_MAX, 0, p->package, why, sizeof(why))) ||
	    (rc = sw_json_int(j, "licenses", 0, SW_PRODUCT_LICENSES_MAX, 1, &p->licenses, why,
			      sizeof(why))) ||
	    (rc = sw_json_int(j, "allotment", 0, SW_PRODUCT_LICENSES_MAX, 0, &p->allotment, why,
			      sizeof(why))) ||
	    (rc = sw_product_names_parse(json_object_get(j, "deny_users"), "deny_users",
					 p->deny_users, sizeof(p->deny_users), why, sizeof(why))) ||
	    (rc = sw_product_names_parse(json_object_get(j, "deny_hosts"), "deny_hosts",
					 p->deny_hosts, sizeof(p->deny_hosts), why, sizeof(why))) ||
	    (rc = sw_json_str(j, "on_reclaim", 8, 0, &policy, why, sizeof(why))) ||
	    (rc = copy_str(j, "reclaim_signal", SW_PRODUCT_SIGNAL_MAX, 0, p->reclaim_signal, why,
			   sizeof(why))) ||
	    (rc =
		 sw_json_int(j, "idle_s", 0, SW_PRODUCT_IDLE_MAX, 0, &p->idle_s, why, sizeof(why))))
		goto fail;
	rules = json_object_get(j, "rules");
	if (rules && (!json_is_array(rules) || json_array_size(rules) > SW_PRODUCT_RULES_MAX)) {
		snprintf(why, sizeof(why), "rules must be a list of at most %d rules",
			 SW_PRODUCT_RULES_MAX);
		rc = SW_EINVAL;
		goto fail;
	}
	for (size_t i = 0; i < json_array_size(rules); i++)
		if ((rc = sw_product_rule_parse(json_array_get(rules, i), &p->rules[p->nrules++],
						why, sizeof(why))))
			goto fail;
	if (policy && sw_reclaim_policy_parse(policy, &p->on_reclaim)) {
		snprintf(why, sizeof(why), "on_reclaim must be stop or run");
		rc = SW_EINVAL;
		goto fail;
	}
	enforce = json_object_get(j, "enforce");
	if (enforce && !json_is_boolean(enforce)) {
		snprintf(why, sizeof(why), "'enforce' must be true or false");
		rc = SW_EINVAL;
		goto fail;
	}
	p->enforce = json_is_true(enforce);
	if ((rc = sw_product_validate(p, why, sizeof(why))))
		goto fail;
	return 0;
fail:
	sw_seterr(err, errlen, "product %.63s: %s", p->name[0] ? p->name : "?", why);
	return rc;
}

int sw_product_list_has(const char *list, const char *name)
{
	size_t n = strlen(name);

	if (!n)
		return 0;
	for (const char *s = list; *s;) {
		size_t len = strcspn(s, ",");

		if (len == n && memcmp(s, name, n) == 0)
			return 1;
		s += len;
		if (*s)
			s++;
	}
	return 0;
}

int sw_product_hours_allow(const struct sw_product *p, int minute)
{
	if (p->hours_from < 0)
		return 1;
	if (p->hours_from <= p->hours_to)
		return minute >= p->hours_from && minute < p->hours_to;
	return minute >= p->hours_from || minute < p->hours_to;
}

static json_t *list_json(const char *list)
{
	json_t *arr = json_array();

	for (const char *s = list; arr && *s;) {
		size_t len = strcspn(s, ",");

		if (len && json_array_append_new(arr, json_stringn(s, len))) {
			json_decref(arr);
			return NULL;
		}
		s += len;
		if (*s)
			s++;
	}
	return arr;
}

json_t *sw_product_json(const struct sw_product *p)
{
	json_t *j = json_pack(
	    "{ss ss ss sI sb ss ss so so ss ss sI}", "name", p->name, "exe", p->exe, "version",
	    p->version, "licenses", (json_int_t)p->licenses, "enforce", p->enforce, "build_id",
	    p->build_id, "hours", p->hours, "deny_users", list_json(p->deny_users), "deny_hosts",
	    list_json(p->deny_hosts), "on_reclaim", sw_reclaim_policy_name(p->on_reclaim),
	    "reclaim_signal", p->reclaim_signal, "idle_s", (json_int_t)p->idle_s);

	if (j && ((p->package[0] && json_object_set_new(j, "package", json_string(p->package))) ||
		  (p->allotment >= 0 &&
		   json_object_set_new(j, "allotment", json_integer(p->allotment))) ||
		  (p->nrules && json_object_set_new(j, "rules", sw_product_rules_json(p))))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

const struct sw_product *sw_product_match(const struct sw_product *const *v, size_t n,
					  const struct sw_program *prog, unsigned *need)
{
	const struct sw_product *best = NULL;
	int best_fit = -1;

	*need = 0;
	for (size_t i = 0; i < n; i++) {
		const struct sw_product *p = v[i];
		int fit;

		if (strcmp(p->exe, prog->exe) != 0) {
			/* a renamed copy still carries the build ID */
			if (!p->build_id[0])
				continue;
			if (!prog->build_id) {
				*need |= SW_PRODUCT_NEED_BUILD_ID;
				continue;
			}
			if (strcmp(p->build_id, prog->build_id) != 0)
				continue;
		}
		/* looking a version up costs a query of dpkg's database: only when a
		 * pattern would decide */
		if (p->version[0] && !prog->version) {
			*need |= SW_PRODUCT_NEED_VERSION;
			continue;
		}
		fit = sw_version_match(p->version, prog->version);
		if (fit > best_fit ||
		    (fit == best_fit && fit >= 0 && strcmp(p->name, best->name) < 0)) {
			best = p;
			best_fit = fit;
		}
	}
	return *need ? NULL : best;
}

void sw_product_array_free(struct sw_product **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int sw_product_array_parse(const json_t *arr, struct sw_product ***out, size_t *n, char *err,
			   size_t errlen)
{
	struct sw_product **v = NULL;
	const json_t *e;
	size_t i, k = 0;
	int rc = 0;

	*out = NULL;
	*n = 0;
	if (!json_is_array(arr)) {
		sw_seterr(err, errlen, "'products' must be an array");
		return SW_EINVAL;
	}
	if (json_array_size(arr) > SW_PRODUCT_MAX) {
		sw_seterr(err, errlen, "more than %d products", SW_PRODUCT_MAX);
		return SW_ETOOBIG;
	}
	if (json_array_size(arr) && !(v = calloc(json_array_size(arr), sizeof(*v))))
		return SW_ENOMEM;
	json_array_foreach(arr, i, e)
	{
		if (!(v[k] = malloc(sizeof(*v[k])))) {
			rc = SW_ENOMEM;
			goto fail;
		}
		k++;
		if ((rc = sw_product_parse(e, v[k - 1], err, errlen)))
			goto fail;
		for (size_t m = 0; m + 1 < k; m++) {
			if (strcmp(v[m]->name, v[k - 1]->name) == 0) {
				sw_seterr(err, errlen, "product %s is named twice", v[m]->name);
				rc = SW_EINVAL;
				goto fail;
			}
		}
	}
	*out = v;
	*n = k;
	return 0;
fail:
	sw_product_array_free(v, k);
	return rc;
}

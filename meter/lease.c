/*
 * Products, leases, the FIFO queue of waiting checkouts and pending usage. Everything
 * here runs on the loop thread; a change that must survive a crash (a grant, a release,
 * a denial, an upload) is appended to the journal as it happens, in the order it
 * happens, so a reply that waits for its own record is never ahead of the records it
 * depends on. Renewals are not journaled: a restart gives every lease a fresh ttl.
 *
 * The records (each line also has "seq" and "t", the type):
 *   grant     a lease: lease, client, product, exe, user, host, pid, granted_at, wait_ms
 *   release   a check-in or expiry: lease, and usage (its run record, id = lease id)
 *   usage     a pending record on its own (a denial, or a snapshot's pending usage)
 *   uploaded  ids: records the site server has accepted
 * A snapshot is grant and usage records only.
 */
#include "meter.h"

#include "clock.h"
#include "error.h"
#include "group.h"
#include "json.h"
#include "log.h"
#include "progver.h"
#include "strmap.h"
#include "util.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TTL_MIN_MS 1000
#define TTL_MAX_MS 3600000

static void groups_free(struct sw_strmap *groups);

static void copy(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

struct lease_table *lease_table_new(void)
{
	struct lease_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->ttl_ms = METER_DEFAULT_TTL_MS;
	t->leases = sw_strmap_new();
	t->usage = sw_strmap_new();
	t->reclaimed = sw_strmap_new();
	if (!t->leases || !t->usage || !t->reclaimed) {
		lease_table_free(t);
		return NULL;
	}
	return t;
}

void lease_table_free(struct lease_table *t)
{
	if (!t)
		return;
	for (struct lease *l = t->lhead, *n; l; l = n) {
		n = l->next;
		jtext_unref(l->text);
		free(l);
	}
	for (struct usage *u = t->uhead, *n; u; u = n) {
		n = u->next;
		jtext_unref(u->text);
		free(u);
	}
	for (struct reclaimed *r = t->rhead, *n; r; r = n) {
		n = r->next;
		jtext_unref(r->text);
		free(r);
	}
	for (struct product *p = t->products, *n; p; p = n) {
		n = p->next;
		free(p);
	}
	free(t->match);
	sw_strmap_free(t->reclaimed);
	sw_strmap_free(t->leases);
	sw_strmap_free(t->usage);
	sw_strmap_free(t->revoked);
	groups_free(t->groups);
	free(t);
}

static void reclaimed_del(struct lease_table *t, struct reclaimed *r);

static struct product *product_by_name(const struct lease_table *t, const char *name)
{
	for (struct product *p = t->products; p; p = p->next)
		if (strcmp(p->def.name, name) == 0)
			return p;
	return NULL;
}

struct product *lease_product_for(const struct lease_table *t, const struct checkout_req *r,
				  int *need_version)
{
	/* the client's build ID is "" when it has none; its version is looked up only when
	 * asked, because that costs it a query of dpkg's database */
	struct sw_program prog = {r->exe, r->build_id, r->has_version ? r->version : NULL};
	const struct sw_product *d;
	unsigned need;

	d = sw_product_match(t->match, t->nmatch, &prog, &need);
	*need_version = (need & SW_PRODUCT_NEED_VERSION) != 0;
	return d ? (struct product *)((char *)d - offsetof(struct product, def)) : NULL;
}

const char *const deny_reason_names[DENY_N] = {
    "user", "host", "hours", "no_license", "queue_full", "server_full", "wait_timeout", "rule",
};

/* --- groups and rules --- */

static void mgroup_free(const char *key, void *value, void *arg)
{
	struct mgroup *g = value;

	(void)key;
	(void)arg;
	sw_strmap_free(g->users);
	sw_strmap_free(g->hosts);
	free(g);
}

static void groups_free(struct sw_strmap *groups)
{
	if (groups) {
		sw_strmap_each(groups, mgroup_free, NULL);
		sw_strmap_free(groups);
	}
}

/* The configuration's "groups": [{name, users, hosts}]; names as the site server
 * checked them (lib/group.c), checked again. */
static int groups_parse(const json_t *arr, struct sw_strmap **out, char *err, size_t errlen)
{
	const json_t *g;
	size_t i;

	*out = NULL;
	if (!arr)
		return 0;
	if (!json_is_array(arr) || json_array_size(arr) > SW_GROUPS_MAX) {
		sw_seterr(err, errlen, "'groups' must be a list of at most %d groups",
			  SW_GROUPS_MAX);
		return SW_EINVAL;
	}
	if (!(*out = sw_strmap_new()))
		return SW_ENOMEM;
	json_array_foreach(arr, i, g)
	{
		const char *name = json_string_value(json_object_get(g, "name"));
		const json_t *users = NULL, *hosts = NULL, *v;
		struct mgroup *m;
		size_t k;
		int rc;

		if (!name || !sw_name_valid(name) || sw_strmap_get(*out, name)) {
			sw_seterr(err, errlen,
				  "groups[%zu]: a group's name is missing, invalid or "
				  "given twice",
				  i);
			return SW_EINVAL;
		}
		json_t *members = json_pack("{sO* sO*}", "users", json_object_get(g, "users"),
					    "hosts", json_object_get(g, "hosts"));
		rc = members ? sw_group_members_check(members, &users, &hosts, err, errlen)
			     : SW_ENOMEM;
		if (rc || !(m = calloc(1, sizeof(*m)))) {
			json_decref(members);
			return rc ? rc : SW_ENOMEM;
		}
		m->users = sw_strmap_new();
		m->hosts = sw_strmap_new();
		if (!m->users || !m->hosts || sw_strmap_set(*out, name, m)) {
			mgroup_free(NULL, m, NULL);
			json_decref(members);
			return SW_ENOMEM;
		}
		json_array_foreach(users, k, v) rc =
		    rc ? rc : sw_strmap_set(m->users, json_string_value(v), m);
		json_array_foreach(hosts, k, v) rc =
		    rc ? rc : sw_strmap_set(m->hosts, json_string_value(v), m);
		json_decref(members);
		if (rc)
			return SW_ENOMEM;
	}
	return 0;
}

static int in_group(const struct lease_table *t, const char *group, const char *user,
		    const char *host)
{
	const struct mgroup *g = t->groups ? sw_strmap_get(t->groups, group) : NULL;

	return g && (sw_strmap_get(g->users, user) || sw_strmap_get(g->hosts, host));
}

static int rule_matches(const struct lease_table *t, const struct sw_product_rule *r,
			const char *user, const char *host)
{
	switch (r->target) {
	case SW_TARGET_GROUP: return in_group(t, r->name, user, host);
	case SW_TARGET_USER: return strcmp(r->name, user) == 0;
	case SW_TARGET_HOST: return strcmp(r->name, host) == 0;
	}
	return 0;
}

/* A rule's licenses at this server: its share, or its count where none was given. */
static int64_t rule_allot(const struct sw_product_rule *r)
{
	return r->allotment >= 0 ? r->allotment : r->count;
}

/* The reservation a lease of `user` on `host` may draw from: the first, in the rules'
 * order, whose group holds them and whose share here has room; -1 for none. */
static int reserve_for(const struct lease_table *t, const struct product *p, const char *user,
		       const char *host)
{
	for (size_t i = 0; i < p->def.nrules; i++) {
		const struct sw_product_rule *r = &p->def.rules[i];

		if (r->kind == SW_RULE_RESERVE && p->rule_in_use[i] < rule_allot(r) &&
		    rule_matches(t, r, user, host))
			return (int)i;
	}
	return -1;
}

/* Counts a lease into its product's pools (dir 1), or out of them (-1). */
static void account(const struct lease_table *t, struct product *p, const struct lease *l, int dir)
{
	int reserved = 0;

	for (size_t i = 0; i < p->def.nrules; i++) {
		const struct sw_product_rule *r = &p->def.rules[i];
		int counts = r->kind == SW_RULE_BORROW ? l->borrow_until > 0
			     : r->kind == SW_RULE_MAX
				 ? rule_matches(t, r, l->user, l->host)
				 : (l->reserve[0] && !reserved && strcmp(r->name, l->reserve) == 0);

		if (!counts)
			continue;
		if (r->kind == SW_RULE_RESERVE)
			reserved = 1;
		if (dir > 0)
			p->rule_in_use[i]++;
		else if (p->rule_in_use[i])
			p->rule_in_use[i]--;
	}
	if (reserved)
		return;
	if (dir > 0)
		p->open_in_use++;
	else if (p->open_in_use)
		p->open_in_use--;
}

/* Counts every lease of `p` again, after its rules or the groups changed; a product
 * without rules has every lease in its open pool, with no walk. */
static void recount(const struct lease_table *t, struct product *p)
{
	p->open_in_use = p->def.nrules ? 0 : p->in_use;
	memset(p->rule_in_use, 0, sizeof(p->rule_in_use));
	if (!p->def.nrules)
		return;
	for (const struct lease *l = t->lhead; l; l = l->next)
		if (strcmp(l->product, p->def.name) == 0)
			account(t, p, l, 1);
}

/* Whether `user` on `host` may have a license of `p` now: 1, with the reservation it
 * comes from in *reserve (-1: the open pool); 0, with the reason and *why. */
static int may_take(const struct lease_table *t, const struct product *p, const char *user,
		    const char *host, int borrow, int *reserve, char *reason, size_t len,
		    enum deny_reason *why)
{
	char rule[160];

	*reserve = -1;
	if (t->nleases >= METER_MAX_LEASES) {
		*why = DENY_SERVER_FULL;
		snprintf(reason, len, "this license server holds the most leases it can (%d)",
			 METER_MAX_LEASES);
		return 0;
	}
	for (size_t i = 0; i < p->def.nrules; i++) {
		const struct sw_product_rule *r = &p->def.rules[i];

		/* what may be lent out holds whether the product is enforced or not: a lost
		 * machine holds a bounded share either way */
		if (r->kind == SW_RULE_BORROW
			? !borrow || p->rule_in_use[i] < rule_allot(r)
			: !p->def.enforce || p->removed || r->kind != SW_RULE_MAX ||
			      p->rule_in_use[i] < rule_allot(r) || !rule_matches(t, r, user, host))
			continue;
		sw_product_rule_text(r, rule, sizeof(rule));
		*why = DENY_RULE;
		if (rule_allot(r) < r->count)
			snprintf(reason, len,
				 "%s: the rule '%s' allows no more here (this license server's "
				 "share of it is %lld, in use)",
				 p->def.name, rule, (long long)rule_allot(r));
		else
			snprintf(reason, len, "%s: the rule '%s' allows no more at once",
				 p->def.name, rule);
		return 0;
	}
	if ((*reserve = reserve_for(t, p, user, host)) >= 0 || !p->def.enforce || p->removed)
		return 1;
	if (p->open_in_use < (uint64_t)p->def.allotment)
		return 1;
	*why = DENY_NO_LICENSE;
	reason[0] = '\0';
	for (size_t i = 0; i < p->def.nrules; i++) {
		const struct sw_product_rule *r = &p->def.rules[i];

		if (r->kind == SW_RULE_RESERVE && p->rule_in_use[i] < rule_allot(r)) {
			sw_product_rule_text(r, rule, sizeof(rule));
			*why = DENY_RULE;
			snprintf(reason, len,
				 "the free licenses of %s are reserved for others (rule '%s')",
				 p->def.name, rule);
			break;
		}
	}
	return 0;
}

/* Why a product's policy refuses this use now (and *why), or NULL. */
static const char *policy_refusal(const struct product *p, const struct checkout_req *r,
				  const char *host, int64_t wall, char *buf, size_t len,
				  enum deny_reason *why)
{
	const struct sw_product *d = &p->def;
	time_t now = (time_t)(wall / 1000);
	struct tm tm;

	if (sw_product_list_has(d->deny_users, r->user)) {
		*why = DENY_USER;
		snprintf(buf, len, "user %s may not use %s", r->user, d->name);
		return buf;
	}
	if (sw_product_list_has(d->deny_hosts, host)) {
		*why = DENY_HOST;
		snprintf(buf, len, "%s may not be used on %s", d->name, host);
		return buf;
	}
	if (d->hours_from < 0)
		return NULL;
	localtime_r(&now, &tm);
	if (sw_product_hours_allow(d, tm.tm_hour * 60 + tm.tm_min))
		return NULL;
	*why = DENY_HOURS;
	snprintf(buf, len, "%s may be used from %02d:%02d to %02d:%02d", d->name,
		 d->hours_from / 60, d->hours_from % 60, d->hours_to / 60, d->hours_to % 60);
	return buf;
}

/* A lease recovered for a product the configuration no longer (or not yet) names. */
static struct product *product_placeholder(struct lease_table *t, const char *name)
{
	struct product *p = product_by_name(t, name);

	if (p)
		return p;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	sw_product_init(&p->def);
	copy(p->def.name, sizeof(p->def.name), name);
	p->removed = 1;
	p->next = t->products;
	t->products = p;
	t->nproducts++;
	return p;
}

static void product_drop_if_unused(struct lease_table *t, struct product *p)
{
	if (!p->removed || p->in_use || p->nwait)
		return;
	for (struct product **pp = &t->products; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			t->nproducts--;
			free(p);
			return;
		}
	}
}

/* Appends to the journal when there is one (see journal_append_text); returns the
 * record's sequence number. */
static uint64_t journal_rec(struct lease_table *t, const char *type, const char *members,
			    const char *key, const struct jtext *text)
{
	uint64_t seq = 0;

	if (!t->journal)
		return 0;
	if (journal_append_text(t->journal, type, members, key, text, &seq))
		sw_err("journal: cannot append a %s record", type);
	return seq;
}

/* Usage */

static json_t *usage_json(const struct usage *u)
{
	return json_pack("{ss ss ss ss ss sI sI ss sI ss}", "id", u->id, "product", u->product,
			 "exe", u->exe, "user", u->user, "host", u->host, "start",
			 (json_int_t)u->start, "end", (json_int_t)u->end, "kind", u->kind,
			 "wait_ms", (json_int_t)u->wait_ms, "source", "meter");
}

static struct jtext *usage_text(const struct usage *u)
{
	return jtext_dump(usage_json(u));
}

static int usage_parse(const json_t *j, struct usage *u, char *err, size_t errlen)
{
	const char *id, *product, *exe, *user, *host, *kind;
	int rc;

	memset(u, 0, sizeof(*u));
	if (!json_is_object(j)) {
		sw_seterr(err, errlen, "usage must be an object");
		return SW_EINVAL;
	}
	if ((rc = sw_json_str(j, "id", METER_ID_LEN, 1, &id, err, errlen)) ||
	    (rc = sw_json_str(j, "product", METER_NAME_MAX, 1, &product, err, errlen)) ||
	    (rc = sw_json_str(j, "exe", METER_EXE_MAX, 1, &exe, err, errlen)) ||
	    (rc = sw_json_str(j, "user", METER_USER_MAX, 1, &user, err, errlen)) ||
	    (rc = sw_json_str(j, "host", METER_HOST_MAX, 1, &host, err, errlen)) ||
	    (rc = sw_json_str(j, "kind", 7, 1, &kind, err, errlen)) ||
	    (rc = sw_json_int(j, "start", 0, INT64_MAX, 1, &u->start, err, errlen)) ||
	    (rc = sw_json_int(j, "end", 0, INT64_MAX, 1, &u->end, err, errlen)) ||
	    (rc = sw_json_int(j, "wait_ms", 0, INT64_MAX, 0, &u->wait_ms, err, errlen)))
		return rc;
	if (!proto_id_valid(id)) {
		sw_seterr(err, errlen, "usage id must be 32 lowercase hex digits");
		return SW_EINVAL;
	}
	if (strcmp(kind, "run") != 0 && strcmp(kind, "denied") != 0) {
		sw_seterr(err, errlen, "usage kind must be run or denied");
		return SW_EINVAL;
	}
	copy(u->id, sizeof(u->id), id);
	copy(u->product, sizeof(u->product), product);
	copy(u->exe, sizeof(u->exe), exe);
	copy(u->user, sizeof(u->user), user);
	copy(u->host, sizeof(u->host), host);
	copy(u->kind, sizeof(u->kind), kind);
	return 0;
}

/* Keeps a copy of `src` as pending, unless a record with its id is pending already. */
static struct usage *usage_add(struct lease_table *t, const struct usage *src)
{
	struct usage *u;

	if (sw_strmap_get(t->usage, src->id))
		return NULL;
	u = malloc(sizeof(*u));
	if (!u)
		goto oom;
	*u = *src;
	u->next = NULL;
	u->prev = t->utail;
	u->uploading = 0;
	/* Made once: the journal, its snapshots and the uploads all use this text. */
	if (!(u->text = usage_text(u))) {
		free(u);
		goto oom;
	}
	if (sw_strmap_set(t->usage, u->id, u)) {
		jtext_unref(u->text);
		free(u);
		goto oom;
	}
	if (t->utail)
		t->utail->next = u;
	else
		t->uhead = u;
	t->utail = u;
	t->nusage++;
	return u;
oom:
	sw_err("out of memory keeping usage record %s", src->id);
	return NULL;
}

static void usage_del(struct lease_table *t, struct usage *u)
{
	sw_strmap_del(t->usage, u->id);
	if (u->prev)
		u->prev->next = u->next;
	else
		t->uhead = u->next;
	if (u->next)
		u->next->prev = u->prev;
	else
		t->utail = u->prev;
	t->nusage--;
	jtext_unref(u->text);
	free(u);
}

/* Leases */

static json_t *lease_record(const struct lease *l)
{
	json_t *j = json_pack("{ss ss ss ss ss ss sI sI sI}", "lease", l->id, "client", l->client,
			      "product", l->product, "exe", l->exe, "user", l->user, "host",
			      l->host, "pid", (json_int_t)l->pid, "granted_at",
			      (json_int_t)l->granted_at, "wait_ms", (json_int_t)l->wait_ms);

	if (j && ((l->reserve[0] && json_object_set_new(j, "reserve", json_string(l->reserve))) ||
		  (l->borrow_until &&
		   json_object_set_new(j, "borrow_until", json_integer(l->borrow_until))))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static void lease_free(struct lease *l)
{
	jtext_unref(l->text);
	free(l);
}

static struct lease *lease_insert(struct lease_table *t, struct product *p, struct lease *src)
{
	struct lease *l = malloc(sizeof(*l));

	if (!l)
		return NULL;
	*l = *src;
	/* Made once: the grant record and every snapshot while the lease lives. */
	if (!(l->text = jtext_dump(lease_record(l)))) {
		free(l);
		return NULL;
	}
	if (sw_strmap_set(t->leases, l->id, l)) {
		lease_free(l);
		return NULL;
	}
	l->next = NULL;
	l->prev = t->ltail;
	if (t->ltail)
		t->ltail->next = l;
	else
		t->lhead = l;
	t->ltail = l;
	t->nleases++;
	p->in_use++;
	account(t, p, l, 1);
	return l;
}

static void lease_unlink(struct lease_table *t, struct lease *l)
{
	struct product *p = product_by_name(t, l->product);

	sw_strmap_del(t->leases, l->id);
	if (l->prev)
		l->prev->next = l->next;
	else
		t->lhead = l->next;
	if (l->next)
		l->next->prev = l->prev;
	else
		t->ltail = l->prev;
	t->nleases--;
	if (p && p->in_use)
		p->in_use--;
	if (p)
		account(t, p, l, -1);
}

/* A new lease, journaled. */
static struct lease *grant(struct lease_table *t, struct product *p, const struct checkout_req *r,
			   const char *host, int reserve, int64_t wall, int64_t mono,
			   int64_t wait_ms, int64_t borrow_until)
{
	struct lease tmp, *l;

	memset(&tmp, 0, sizeof(tmp));
	if (sw_random_hex(tmp.id, METER_ID_LEN / 2))
		return NULL;
	copy(tmp.client, sizeof(tmp.client), r->client);
	copy(tmp.product, sizeof(tmp.product), p->def.name);
	copy(tmp.exe, sizeof(tmp.exe), r->exe);
	copy(tmp.user, sizeof(tmp.user), r->user);
	copy(tmp.host, sizeof(tmp.host), host);
	tmp.pid = r->pid;
	tmp.granted_at = tmp.renewed_at = wall;
	tmp.deadline = borrow_until ? mono + (borrow_until - wall) : mono + t->ttl_ms;
	tmp.wait_ms = wait_ms;
	tmp.borrow_until = borrow_until;
	if (reserve >= 0)
		copy(tmp.reserve, sizeof(tmp.reserve), p->def.rules[reserve].name);
	l = lease_insert(t, p, &tmp);
	if (!l)
		return NULL;
	journal_rec(t, "grant", NULL, NULL, l->text);
	return l;
}

static void record_denial(struct lease_table *t, const struct product *p,
			  const struct checkout_req *r, const char *host, int64_t start,
			  int64_t end, int64_t wait_ms, enum deny_reason why)
{
	struct usage u, *pu;

	sw_counter_inc(t->mx_denied[why]);
	memset(&u, 0, sizeof(u));
	if (sw_random_hex(u.id, METER_ID_LEN / 2))
		return;
	copy(u.product, sizeof(u.product), p->def.name);
	copy(u.exe, sizeof(u.exe), r->exe);
	copy(u.user, sizeof(u.user), r->user);
	copy(u.host, sizeof(u.host), host);
	copy(u.kind, sizeof(u.kind), "denied");
	u.start = start;
	u.end = end;
	u.wait_ms = wait_ms;
	pu = usage_add(t, &u);
	if (pu)
		pu->seq = journal_rec(t, "usage", NULL, "usage", pu->text);
}

static void waiter_unlink(struct lease_table *t, struct waiter *w)
{
	struct product *p = w->product;

	if (w->prev)
		w->prev->next = w->next;
	else
		p->qhead = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		p->qtail = w->prev;
	w->prev = w->next = NULL;
	p->nwait--;
	t->nwaiting--;
}

/* Gives free licenses of `p` to its queue, first come first served among those the
 * rules let have one (a member of a group may take its reservation past others who may
 * not). */
static void grant_waiters(struct lease_table *t, struct product *p, int64_t wall, int64_t mono)
{
	char reason[METER_REASON_MAX];
	enum deny_reason why;

	for (struct waiter *w = p->qhead, *next; w; w = next) {
		struct lease *l;
		int reserve;

		next = w->next;
		if (!may_take(t, p, w->req.user, w->host, 0, &reserve, reason, sizeof(reason),
			      &why)) {
			if (why == DENY_SERVER_FULL || !p->def.nrules)
				return;
			continue;
		}
		l = grant(t, p, &w->req, w->host, reserve, wall, mono, mono - w->since_mono, 0);
		if (!l) {
			sw_err("cannot grant a lease of %s to a waiter", p->def.name);
			return;
		}
		waiter_unlink(t, w);
		w->granted(w, l);
	}
}

/* Ends a lease: it becomes a run record (journaled with the release, and with the note
 * for its client when it was taken back) and its license goes to the queue. */
static void release(struct lease_table *t, struct lease *l, int64_t end, int64_t wall, int64_t mono,
		    const struct jtext *note)
{
	struct product *p = product_by_name(t, l->product);
	struct usage u, *pu;
	struct jtext *text;
	char *members = NULL;

	memset(&u, 0, sizeof(u));
	copy(u.id, sizeof(u.id), l->id);
	copy(u.product, sizeof(u.product), l->product);
	copy(u.exe, sizeof(u.exe), l->exe);
	copy(u.user, sizeof(u.user), l->user);
	copy(u.host, sizeof(u.host), l->host);
	copy(u.kind, sizeof(u.kind), "run");
	u.start = l->granted_at;
	u.end = end < l->granted_at ? l->granted_at : end;
	u.wait_ms = l->wait_ms;
	lease_unlink(t, l);
	pu = usage_add(t, &u);
	/* A record of this id already pending is the same run: the release still says so. */
	text = pu ? jtext_ref(pu->text) : usage_text(&u);
	if (text) {
		uint64_t seq;

		if (note ? asprintf(&members, "\"lease\":\"%s\",\"reclaimed\":%.*s", l->id,
				    (int)note->len, note->s) < 0
			 : asprintf(&members, "\"lease\":\"%s\"", l->id) < 0)
			members = NULL;
		seq = members ? journal_rec(t, "release", members, "usage", text) : 0;
		if (!members)
			sw_err("journal: out of memory building a release record");
		if (pu)
			pu->seq = seq;
		free(members);
		jtext_unref(text);
	} else {
		sw_err("journal: out of memory building a release record");
	}
	lease_free(l);
	if (p) {
		grant_waiters(t, p, wall, mono);
		product_drop_if_unused(t, p);
	}
}

int lease_checkout(struct lease_table *t, const struct checkout_req *req, const char *host,
		   int64_t wall, int64_t mono, struct waiter *w, struct checkout_out *out)
{
	int need_version;
	struct product *p = lease_product_for(t, req, &need_version);
	enum deny_reason why = DENY_NO_LICENSE;
	int reserve, ok;

	memset(out, 0, sizeof(*out));
	if (!p) {
		out->result = need_version ? CHECKOUT_NEED_VERSION : CHECKOUT_UNMETERED;
		return 0;
	}
	out->product = p;
	if (policy_refusal(p, req, host, wall, out->reason, sizeof(out->reason), &why)) {
		record_denial(t, p, req, host, wall, wall, 0, why);
		out->result = CHECKOUT_DENIED;
		return 0;
	}
	/* With others queued, a newcomer waits behind them even if the queue is being
	 * served right now; under rules, the queue holds only those the rules keep out, and
	 * one they let in goes first. */
	ok = may_take(t, p, req->user, host, 0, &reserve, out->reason, sizeof(out->reason), &why);
	if (ok && (!p->qhead || p->def.nrules)) {
		out->lease = grant(t, p, req, host, reserve, wall, mono, 0, 0);
		if (!out->lease)
			return SW_ENOMEM;
		out->result = CHECKOUT_GRANTED;
		return 0;
	}
	if (out->reason[0] && why != DENY_NO_LICENSE) {
		/* a rule's, or a full server's, reason */
	} else if (p->def.allotment == 0)
		snprintf(out->reason, sizeof(out->reason),
			 "no license of %s is allotted to this license server", p->def.name);
	else if (p->def.allotment < p->def.licenses)
		/* one server's share: the count the user knows is the site's */
		snprintf(out->reason, sizeof(out->reason),
			 "the %lld of %s's %lld licenses this license server holds are in use",
			 (long long)p->def.allotment, p->def.name, (long long)p->def.licenses);
	else if (p->def.allotment == 1)
		snprintf(out->reason, sizeof(out->reason), "the one license of %s is in use",
			 p->def.name);
	else
		snprintf(out->reason, sizeof(out->reason), "all %lld licenses of %s are in use",
			 (long long)p->def.allotment, p->def.name);
	if (req->wait_ms > 0 && t->nleases < METER_MAX_LEASES) {
		if (p->nwait >= METER_MAX_WAITERS) {
			why = DENY_QUEUE_FULL;
			snprintf(out->reason, sizeof(out->reason),
				 "all %lld licenses of %s are in use and %u checkouts are "
				 "already waiting",
				 (long long)p->def.allotment, p->def.name, p->nwait);
		} else {
			void (*cb)(struct waiter *, struct lease *) = w->granted;
			void *arg = w->arg;

			memset(w, 0, sizeof(*w));
			w->granted = cb;
			w->arg = arg;
			w->product = p;
			w->req = *req;
			copy(w->host, sizeof(w->host), host);
			w->since_wall = wall;
			w->since_mono = mono;
			w->prev = p->qtail;
			if (p->qtail)
				p->qtail->next = w;
			else
				p->qhead = w;
			p->qtail = w;
			p->nwait++;
			t->nwaiting++;
			out->result = CHECKOUT_QUEUED;
			return 0;
		}
	}
	/* A checkout that may wait is told where it would stand in the queue. */
	if (t->nleases < METER_MAX_LEASES && p->def.allotment > 0 && p->nwait < METER_MAX_WAITERS)
		out->queue_position = p->nwait + 1;
	record_denial(t, p, req, host, wall, wall, 0, why);
	out->result = CHECKOUT_DENIED;
	return 0;
}

int lease_borrow(struct lease_table *t, const struct borrow_req *req, const char *host,
		 int64_t wall, int64_t mono, struct checkout_out *out)
{
	struct product *p = product_by_name(t, req->product);
	const struct sw_product_rule *rule;
	struct checkout_req creq;
	enum deny_reason why = DENY_RULE;
	char span[48];
	int reserve;

	memset(out, 0, sizeof(*out));
	memset(&creq, 0, sizeof(creq));
	if (!p || p->removed) {
		out->result = CHECKOUT_UNMETERED;
		return 0;
	}
	out->product = p;
	copy(creq.exe, sizeof(creq.exe), p->def.exe);
	copy(creq.user, sizeof(creq.user), req->user);
	copy(creq.client, sizeof(creq.client), req->client);
	out->result = CHECKOUT_DENIED;
	if (!(rule = sw_product_borrow_rule(&p->def))) {
		snprintf(out->reason, sizeof(out->reason),
			 "%s may not be borrowed (an administrator allows it: siteward product "
			 "set %s --borrow N)",
			 p->def.name, p->def.name);
		return 0; /* asked for what the product does not offer: not a denial to count */
	}
	if (req->for_s > rule->max_s) {
		sw_duration_text(rule->max_s, span, sizeof(span));
		snprintf(out->reason, sizeof(out->reason), "%s may be borrowed for at most %s",
			 p->def.name, span);
		return 0;
	}
	if (!policy_refusal(p, &creq, host, wall, out->reason, sizeof(out->reason), &why) &&
	    may_take(t, p, req->user, host, 1, &reserve, out->reason, sizeof(out->reason), &why)) {
		out->lease =
		    grant(t, p, &creq, host, reserve, wall, mono, 0, wall + req->for_s * 1000);
		if (!out->lease)
			return SW_ENOMEM;
		out->result = CHECKOUT_GRANTED;
		return 0;
	}
	if (!out->reason[0])
		snprintf(out->reason, sizeof(out->reason),
			 "no license of %s is free on this license server", p->def.name);
	record_denial(t, p, &creq, host, wall, wall, 0, why);
	return 0;
}

enum borrow_state lease_borrow_state(const struct lease_table *t, const char *id,
				     const char *client, const char *host, json_t **note)
{
	const struct lease *l = lease_find(t, id);

	*note = NULL;
	if (l)
		return l->borrow_until && strcmp(l->client, client) == 0 &&
			       strcmp(l->host, host) == 0
			   ? BORROW_HELD
			   : BORROW_GONE;
	return (*note = lease_reclaimed_json(t, id, client)) ? BORROW_WRITTEN_OFF : BORROW_GONE;
}

void lease_waiter_cancel(struct lease_table *t, struct waiter *w, int deny, int64_t wall,
			 char *reason, size_t reasonlen)
{
	struct product *p = w->product;
	int64_t waited = wall - w->since_wall;

	waiter_unlink(t, w);
	if (deny) {
		record_denial(t, p, &w->req, w->host, w->since_wall, wall, waited < 0 ? 0 : waited,
			      DENY_WAIT_TIMEOUT);
		if (reason)
			snprintf(reason, reasonlen, "no license of %s freed within %lld s",
				 p->def.name, (long long)((w->req.wait_ms + 999) / 1000));
	}
	product_drop_if_unused(t, p);
}

struct lease *lease_find(const struct lease_table *t, const char *id)
{
	return sw_strmap_get(t->leases, id);
}

int lease_revoked(const struct lease_table *t, const char *serial)
{
	return t->revoked && sw_strmap_get(t->revoked, serial) != NULL;
}

static struct lease *owned(struct lease_table *t, const char *id, const char *client,
			   const char *host, int *rc)
{
	struct lease *l = lease_find(t, id);

	*rc = 0;
	if (!l)
		*rc = SW_ENOTFOUND;
	else if (strcmp(l->client, client) != 0 || strcmp(l->host, host) != 0)
		*rc = SW_EDENIED;
	return *rc ? NULL : l;
}

int lease_renew(struct lease_table *t, const char *id, const char *client, const char *host,
		int64_t wall, int64_t mono)
{
	struct lease *l;
	int rc;

	/* a borrowed license needs no heartbeat, and one does not shorten it */
	if ((l = owned(t, id, client, host, &rc)) && !l->borrow_until) {
		l->renewed_at = wall;
		l->deadline = mono + t->ttl_ms;
	}
	return rc;
}

int lease_checkin(struct lease_table *t, const char *id, const char *client, const char *host,
		  int64_t wall, int64_t mono)
{
	struct lease *l;
	int rc;

	if ((l = owned(t, id, client, host, &rc)))
		release(t, l, wall, wall, mono, NULL);
	return rc;
}

size_t lease_expire_due(struct lease_table *t, int64_t wall, int64_t mono)
{
	size_t n = 0;

	for (struct lease *l = t->lhead, *next; l; l = next) {
		next = l->next;
		if (l->deadline > mono)
			continue;
		sw_debug("lease %s of %s (%s@%s) expired unrenewed", l->id, l->product, l->user,
			 l->host);
		/* Releasing may grant waiters, which appends leases at the tail: they are
		 * fresh, so walking on over them does no harm. */
		release(t, l, l->borrow_until ? l->borrow_until : l->renewed_at, wall, mono, NULL);
		n++;
	}
	for (struct reclaimed *r = t->rhead, *next; r; r = next) {
		next = r->next;
		if (r->until <= mono)
			reclaimed_del(t, r);
	}
	return n;
}

json_t *lease_list_json(const struct lease_table *t, const char *product, int64_t wall,
			int64_t mono)
{
	json_t *leases = json_array(), *queue = json_array();

	if (!leases || !queue)
		goto fail;
	for (const struct lease *l = t->lhead; l; l = l->next) {
		if (product && strcmp(l->product, product) != 0)
			continue;
		json_t *o =
		    json_pack("{ss ss ss ss ss sI ss sI sI sI}", "lease", l->id, "product",
			      l->product, "exe", l->exe, "user", l->user, "host", l->host, "pid",
			      (json_int_t)l->pid, "client", l->client, "granted_at",
			      (json_int_t)l->granted_at, "renewed_at", (json_int_t)l->renewed_at,
			      "expires_at", (json_int_t)(wall + l->deadline - mono));
		if (o && l->borrow_until)
			json_object_set_new(o, "borrowed_until", json_integer(l->borrow_until));
		if (!o || json_array_append_new(leases, o))
			goto fail;
	}
	for (const struct product *p = t->products; p; p = p->next) {
		unsigned pos = 0;

		if (product && strcmp(p->def.name, product) != 0)
			continue;
		for (const struct waiter *w = p->qhead; w; w = w->next) {
			json_t *o = json_pack(
			    "{ss ss ss ss sI sI sI}", "product", p->def.name, "exe", w->req.exe,
			    "user", w->req.user, "host", w->host, "pid", (json_int_t)w->req.pid,
			    "since", (json_int_t)w->since_wall, "position", (json_int_t)++pos);
			if (!o || json_array_append_new(queue, o))
				goto fail;
		}
	}
	return json_pack("{so so}", "leases", leases, "queue", queue);
fail:
	json_decref(leases);
	json_decref(queue);
	return NULL;
}

/* Reclaimed leases */

static void reclaimed_del(struct lease_table *t, struct reclaimed *r)
{
	sw_strmap_del(t->reclaimed, r->id);
	if (r->prev)
		r->prev->next = r->next;
	else
		t->rhead = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		t->rtail = r->prev;
	t->nreclaimed--;
	jtext_unref(r->text);
	free(r);
}

/* Keeps a note (its text taken), in place of one of the same lease; the oldest goes
 * when there are as many as leases may be. */
static void reclaimed_add(struct lease_table *t, const char *id, const char *client, int64_t until,
			  struct jtext *text)
{
	struct reclaimed *r = sw_strmap_get(t->reclaimed, id);

	if (r)
		reclaimed_del(t, r);
	if (t->nreclaimed >= METER_MAX_LEASES)
		reclaimed_del(t, t->rhead);
	if (!(r = calloc(1, sizeof(*r))))
		goto fail;
	copy(r->id, sizeof(r->id), id);
	copy(r->client, sizeof(r->client), client);
	r->until = until;
	r->text = text;
	if (sw_strmap_set(t->reclaimed, r->id, r)) {
		free(r);
		goto fail;
	}
	r->prev = t->rtail;
	if (t->rtail)
		t->rtail->next = r;
	else
		t->rhead = r;
	t->rtail = r;
	t->nreclaimed++;
	return;
fail:
	sw_err("out of memory keeping the note of reclaimed lease %s", id);
	jtext_unref(text);
}

/* A note as journaled, kept again unless it is past. */
static int reclaimed_apply(struct lease_table *t, const json_t *j, int64_t wall, int64_t mono,
			   char *err, size_t errlen)
{
	const char *id, *client, *product, *reason, *policy, *sig;
	int64_t until;
	struct jtext *text;
	int rc;

	if ((rc = sw_json_str(j, "lease", METER_ID_LEN, 1, &id, err, errlen)) ||
	    (rc = sw_json_str(j, "client", METER_ID_LEN, 1, &client, err, errlen)) ||
	    (rc = sw_json_str(j, "product", METER_NAME_MAX, 1, &product, err, errlen)) ||
	    (rc = sw_json_str(j, "reason", METER_REASON_MAX - 1, 1, &reason, err, errlen)) ||
	    (rc = sw_json_str(j, "on_reclaim", 8, 1, &policy, err, errlen)) ||
	    (rc = sw_json_str(j, "signal", SW_PRODUCT_SIGNAL_MAX, 1, &sig, err, errlen)) ||
	    (rc = sw_json_int(j, "until", 0, INT64_MAX, 1, &until, err, errlen)))
		return rc;
	if (!proto_id_valid(id) || !proto_id_valid(client)) {
		sw_seterr(err, errlen, "reclaimed record with a malformed lease or client id");
		return SW_EINVAL;
	}
	if (until <= wall)
		return 0;
	text = jtext_dump(json_pack("{ss ss ss ss ss ss sI}", "lease", id, "client", client,
				    "product", product, "reason", reason, "on_reclaim", policy,
				    "signal", sig, "until", (json_int_t)until));
	if (!text)
		return SW_ENOMEM;
	reclaimed_add(t, id, client, mono + (until - wall), text);
	return 0;
}

/* Takes one lease back: the note for its client first, then the release. */
static void reclaim_one(struct lease_table *t, struct lease *l, const char *reason, int64_t wall,
			int64_t mono)
{
	const struct product *p = product_by_name(t, l->product);
	int64_t until = wall + (l->deadline - mono) +
			(t->ttl_ms > METER_RECLAIM_NOTE_MS ? t->ttl_ms : METER_RECLAIM_NOTE_MS);
	struct jtext *text;

	text = jtext_dump(json_pack("{ss ss ss ss ss ss sI}", "lease", l->id, "client", l->client,
				    "product", l->product, "reason", reason, "on_reclaim",
				    sw_reclaim_policy_name(p ? p->def.on_reclaim : SW_RECLAIM_STOP),
				    "signal", p ? p->def.reclaim_signal : "", "until",
				    (json_int_t)until));
	sw_info("lease %s of %s (%s@%s, pid %lld) taken back: %s", l->id, l->product, l->user,
		l->host, (long long)l->pid, reason);
	if (text)
		reclaimed_add(t, l->id, l->client, mono + (until - wall), jtext_ref(text));
	else
		sw_err("out of memory noting reclaimed lease %s: its client learns it as lost",
		       l->id);
	release(t, l, wall, wall, mono, text);
	jtext_unref(text);
}

size_t lease_reclaim(struct lease_table *t, const struct reclaim_req *r, int64_t wall, int64_t mono,
		     json_t *out)
{
	struct lease *last = t->ltail;
	char reason[METER_REASON_MAX];
	size_t n = 0;

	if (r->by[0])
		snprintf(reason, sizeof(reason), "reclaimed by %s", r->by);
	else
		snprintf(reason, sizeof(reason), "reclaimed");
	/* Releasing may grant waiters, whose fresh leases are appended: they are not
	 * taken back, the walk ends at the last lease there was. */
	for (struct lease *l = t->lhead, *next; l; l = next) {
		int end = l == last;

		next = l->next;
		if ((!r->lease[0] || strcmp(l->id, r->lease) == 0) &&
		    (!r->user[0] || strcmp(l->user, r->user) == 0) &&
		    (!r->host[0] || strcmp(l->host, r->host) == 0) &&
		    (!r->product[0] || strcmp(l->product, r->product) == 0)) {
			json_t *o = out ? json_pack("{ss ss ss ss sI}", "lease", l->id, "product",
						    l->product, "user", l->user, "host", l->host,
						    "pid", (json_int_t)l->pid)
					: NULL;

			/* a loan: the site server tells its machine it is written off */
			if (o && l->borrow_until)
				json_object_set_new(o, "borrowed_until",
						    json_integer(l->borrow_until));
			if (o)
				json_array_append_new(out, o);
			reclaim_one(t, l, reason, wall, mono);
			n++;
		}
		if (end)
			break;
	}
	return n;
}

json_t *lease_reclaimed_json(const struct lease_table *t, const char *id, const char *client)
{
	const struct reclaimed *r = sw_strmap_get(t->reclaimed, id);
	json_t *j;

	if (!r || strcmp(r->client, client) != 0 ||
	    !(j = json_loadb(r->text->s, r->text->len, 0, NULL)))
		return NULL;
	json_object_del(j, "client");
	json_object_del(j, "until");
	return j;
}

int64_t lease_idle_limit(const struct lease_table *t, const char *id)
{
	const struct lease *l = lease_find(t, id);
	const struct product *p = l ? product_by_name(t, l->product) : NULL;

	return p ? p->def.idle_s : 0;
}

int lease_idle_check(struct lease_table *t, const char *id, int64_t idle_s, int64_t wall,
		     int64_t mono)
{
	struct lease *l = lease_find(t, id);
	int64_t limit = lease_idle_limit(t, id);
	char reason[METER_REASON_MAX];

	if (!l || limit <= 0 || idle_s < limit)
		return 0;
	snprintf(reason, sizeof(reason), "idle for %lld s (the product's limit is %lld s)",
		 (long long)idle_s, (long long)limit);
	reclaim_one(t, l, reason, wall, mono);
	return 1;
}

size_t lease_usage_take(struct lease_table *t, uint64_t durable_seq, size_t max,
			struct usage_batch *out)
{
	struct journal_buf b = {0};
	size_t n = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	for (struct usage *u = t->uhead; u && n < max && !rc; u = u->next) {
		if (u->uploading || u->seq > durable_seq)
			continue;
		if (!out->ids && !(out->ids = calloc(max, sizeof(*out->ids))))
			break;
		/* The array is the records' own texts, joined: nothing to build. Room for
		 * the comma, the text, and the closing bracket and NUL. */
		if (b.cap - b.len < u->text->len + 3) {
			size_t cap = b.cap ? b.cap : 64 * 1024;
			char *d;

			while (cap - b.len < u->text->len + 3)
				cap *= 2;
			if (!(d = realloc(b.data, cap))) {
				rc = SW_ENOMEM;
				break;
			}
			b.data = d;
			b.cap = cap;
		}
		b.data[b.len++] = n ? ',' : '[';
		memcpy(b.data + b.len, u->text->s, u->text->len);
		b.len += u->text->len;
		memcpy(out->ids[n], u->id, sizeof(out->ids[n]));
		u->uploading = 1;
		n++;
	}
	if (n == 0 || rc) {
		out->n = n;
		if (n)
			lease_usage_done(t, out, 0);
		free(b.data);
		usage_batch_cleanup(out);
		return 0;
	}
	b.data[b.len++] = ']';
	b.data[b.len] = '\0';
	out->n = n;
	out->json = b.data;
	out->len = b.len;
	return n;
}

void lease_usage_done(struct lease_table *t, const struct usage_batch *b, int ok)
{
	struct journal_buf ids = {0};
	size_t n = 0;

	/* "ids":["...","..."]: 35 bytes an id, 9 more */
	if (ok && b->n && !(ids.data = malloc(16 + b->n * (METER_ID_LEN + 3))))
		ok = -1;
	if (ids.data)
		ids.len = (size_t)sprintf(ids.data, "\"ids\":[");
	for (size_t i = 0; i < b->n; i++) {
		struct usage *u = sw_strmap_get(t->usage, b->ids[i]);

		if (!u)
			continue;
		if (ok > 0) {
			ids.len +=
			    (size_t)sprintf(ids.data + ids.len, "%s\"%s\"", n ? "," : "", u->id);
			n++;
			usage_del(t, u);
		} else {
			u->uploading = 0;
		}
	}
	if (ok < 0)
		sw_err("out of memory noting %zu uploaded usage records; they will be sent "
		       "again",
		       b->n);
	if (n) {
		ids.len += (size_t)sprintf(ids.data + ids.len, "]");
		journal_rec(t, "uploaded", ids.data, NULL, NULL);
	}
	free(ids.data);
}

void usage_batch_cleanup(struct usage_batch *b)
{
	free(b->ids);
	free(b->json);
	memset(b, 0, sizeof(*b));
}

/* Configuration */

int lease_config_parse(const char *text, size_t len, struct meter_config *out, char *err,
		       size_t errlen)
{
	struct product **tail = &out->products, *p;
	struct sw_product **v = NULL;
	json_t *j = NULL;
	size_t i, n = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	out->ttl_ms = METER_DEFAULT_TTL_MS;
	if ((rc = sw_json_parse_object(text, len, &j, err, errlen)))
		return rc;
	if ((rc = sw_json_int(j, "poll_ms", 500, 3600000, 0, &out->poll_ms, err, errlen)) ||
	    (rc = sw_json_int(j, "lease_ttl_ms", TTL_MIN_MS, TTL_MAX_MS, 0, &out->ttl_ms, err,
			      errlen)))
		goto out;
	if ((rc = sw_proto_revoked_parse(json_object_get(j, "revoked"), &out->revoked, err,
					 errlen)) ||
	    (rc = groups_parse(json_object_get(j, "groups"), &out->groups, err, errlen)))
		goto out;
	if ((rc = sw_product_array_parse(json_object_get(j, "products"), &v, &n, err, errlen)))
		goto out;
	for (i = 0; i < n; i++) {
		/* the site server gives each license server its share */
		if (v[i]->allotment < 0) {
			sw_seterr(err, errlen, "product %s: missing field 'allotment'", v[i]->name);
			rc = SW_EINVAL;
			goto out;
		}
		if (!(p = calloc(1, sizeof(*p)))) {
			rc = SW_ENOMEM;
			goto out;
		}
		p->def = *v[i];
		*tail = p;
		tail = &p->next;
		out->nproducts++;
	}
	rc = 0;
out:
	if (rc)
		lease_config_cleanup(out);
	sw_product_array_free(v, n);
	json_decref(j);
	return rc;
}

void lease_config_cleanup(struct meter_config *conf)
{
	for (struct product *p = conf->products, *n; p; p = n) {
		n = p->next;
		free(p);
	}
	conf->products = NULL;
	conf->nproducts = 0;
	sw_strmap_free(conf->revoked);
	conf->revoked = NULL;
	groups_free(conf->groups);
	conf->groups = NULL;
}

void lease_pools_report(const struct lease_table *t, const struct product *p, json_t *out)
{
	char key[SW_RULE_KEY_MAX];

	json_object_set_new(out, p->def.name,
			    json_pack("{sI sI sI}", "allotment",
				      (json_int_t)(p->def.allotment < 0 ? 0 : p->def.allotment),
				      "in_use", (json_int_t)p->open_in_use, "waiting",
				      (json_int_t)p->nwait));
	for (size_t i = 0; i < p->def.nrules; i++) {
		const struct sw_product_rule *r = &p->def.rules[i];
		unsigned waiting = 0;

		/* demand for a pool: those queued whom it would serve */
		for (const struct waiter *w = p->qhead; w; w = w->next)
			waiting += rule_matches(t, r, w->req.user, w->host) ? 1u : 0u;
		sw_product_rule_key(&p->def, r, key, sizeof(key));
		json_object_set_new(out, key,
				    json_pack("{sI sI sI}", "allotment",
					      (json_int_t)(r->allotment < 0 ? 0 : r->allotment),
					      "in_use", (json_int_t)p->rule_in_use[i], "waiting",
					      (json_int_t)waiting));
	}
}

/* The configured products, which sw_product_match() chooses among; removed ones and
 * placeholders for recovered leases are not. */
static void match_index(struct lease_table *t)
{
	const struct sw_product **v = realloc(t->match, (t->nproducts + 1) * sizeof(*v));
	size_t n = 0;

	if (!v) {
		/* the old index may point at products about to go: match nothing */
		sw_err("out of memory indexing %u products; none is metered", t->nproducts);
		t->nmatch = 0;
		return;
	}
	for (struct product *p = t->products; p; p = p->next)
		if (!p->removed)
			v[n++] = &p->def;
	t->match = v;
	t->nmatch = n;
}

void lease_configure(struct lease_table *t, struct meter_config *conf, int64_t wall, int64_t mono)
{
	struct product *p, *np, *next, **tail;

	t->ttl_ms = conf->ttl_ms;
	for (p = t->products; p; p = p->next)
		p->removed = 1;
	for (np = conf->products; np; np = next) {
		next = np->next;
		p = product_by_name(t, np->def.name);
		if (p) {
			p->def = np->def;
			p->removed = 0;
			free(np);
			continue;
		}
		np->next = NULL;
		for (tail = &t->products; *tail; tail = &(*tail)->next)
			;
		*tail = np;
		t->nproducts++;
	}
	conf->products = NULL;
	conf->nproducts = 0;
	sw_strmap_free(t->revoked);
	t->revoked = conf->revoked;
	conf->revoked = NULL;
	groups_free(t->groups);
	t->groups = conf->groups;
	conf->groups = NULL;
	match_index(t);
	/* the rules or their groups may have changed: each lease counted again */
	for (p = t->products; p; p = p->next)
		recount(t, p);
	/* A larger allotment, an enforcement turned off or a product dropped frees room
	 * for those waiting. */
	for (p = t->products; p; p = next) {
		next = p->next;
		grant_waiters(t, p, wall, mono);
		product_drop_if_unused(t, p);
	}
}

/* Replay */

static int apply_grant(struct lease_table *t, const json_t *rec, int64_t wall, int64_t mono,
		       char *err, size_t errlen)
{
	const char *id, *client, *product, *exe, *user, *host, *reserve = NULL;
	struct lease tmp;
	struct product *p;
	int rc;

	memset(&tmp, 0, sizeof(tmp));
	if ((rc = sw_json_str(rec, "lease", METER_ID_LEN, 1, &id, err, errlen)) ||
	    (rc = sw_json_str(rec, "client", METER_ID_LEN, 1, &client, err, errlen)) ||
	    (rc = sw_json_str(rec, "product", METER_NAME_MAX, 1, &product, err, errlen)) ||
	    (rc = sw_json_str(rec, "exe", METER_EXE_MAX, 1, &exe, err, errlen)) ||
	    (rc = sw_json_str(rec, "user", METER_USER_MAX, 1, &user, err, errlen)) ||
	    (rc = sw_json_str(rec, "host", METER_HOST_MAX, 1, &host, err, errlen)) ||
	    (rc = sw_json_int(rec, "pid", 0, INT32_MAX, 1, &tmp.pid, err, errlen)) ||
	    (rc = sw_json_int(rec, "granted_at", 0, INT64_MAX, 1, &tmp.granted_at, err, errlen)) ||
	    (rc = sw_json_int(rec, "wait_ms", 0, INT64_MAX, 0, &tmp.wait_ms, err, errlen)) ||
	    (rc = sw_json_str(rec, "reserve", SW_RULE_NAME_MAX, 0, &reserve, err, errlen)) ||
	    (rc = sw_json_int(rec, "borrow_until", 1, INT64_MAX / 2, 0, &tmp.borrow_until, err,
			      errlen)))
		return rc;
	if (reserve)
		copy(tmp.reserve, sizeof(tmp.reserve), reserve);
	if (!proto_id_valid(id) || !proto_id_valid(client) || !*product) {
		sw_seterr(err, errlen, "grant record with a malformed lease or client id");
		return SW_EINVAL;
	}
	if (lease_find(t, id))
		return 0;
	if (t->nleases >= METER_MAX_LEASES) {
		sw_seterr(err, errlen, "more than %d leases", METER_MAX_LEASES);
		return SW_ETOOBIG;
	}
	copy(tmp.id, sizeof(tmp.id), id);
	copy(tmp.client, sizeof(tmp.client), client);
	copy(tmp.product, sizeof(tmp.product), product);
	copy(tmp.exe, sizeof(tmp.exe), exe);
	copy(tmp.user, sizeof(tmp.user), user);
	copy(tmp.host, sizeof(tmp.host), host);
	/* Renewals are not journaled: the restart counts as one, so a client that is
	 * still alive keeps its lease by heartbeating within a ttl. */
	tmp.renewed_at = wall;
	tmp.deadline = mono + t->ttl_ms;
	/* a borrowed license lasts until its end, whatever happened here meanwhile */
	if (tmp.borrow_until)
		tmp.deadline = mono + (tmp.borrow_until - wall);
	if (!(p = product_placeholder(t, product)) || !lease_insert(t, p, &tmp))
		return SW_ENOMEM;
	return 0;
}

static int apply_usage(struct lease_table *t, const json_t *rec, uint64_t seq, char *err,
		       size_t errlen)
{
	struct usage u, *pu;
	int rc;

	if ((rc = usage_parse(json_object_get(rec, "usage"), &u, err, errlen)))
		return rc;
	pu = usage_add(t, &u);
	if (pu)
		pu->seq = seq;
	return 0;
}

int lease_apply(struct lease_table *t, const json_t *rec, int64_t wall, int64_t mono, char *err,
		size_t errlen)
{
	const char *type = json_string_value(json_object_get(rec, "t"));
	json_int_t seq = json_integer_value(json_object_get(rec, "seq"));

	if (!type) {
		sw_seterr(err, errlen, "record without a type");
		return SW_EINVAL;
	}
	if (strcmp(type, "grant") == 0)
		return apply_grant(t, rec, wall, mono, err, errlen);
	if (strcmp(type, "usage") == 0)
		return apply_usage(t, rec, (uint64_t)seq, err, errlen);
	if (strcmp(type, "release") == 0) {
		const char *id;
		struct lease *l;
		int rc;

		if ((rc = sw_json_str(rec, "lease", METER_ID_LEN, 1, &id, err, errlen)))
			return rc;
		if ((rc = apply_usage(t, rec, (uint64_t)seq, err, errlen)))
			return rc;
		if (json_object_get(rec, "reclaimed") &&
		    (rc = reclaimed_apply(t, json_object_get(rec, "reclaimed"), wall, mono, err,
					  errlen)))
			return rc;
		if ((l = lease_find(t, id))) {
			struct product *p = product_by_name(t, l->product);

			lease_unlink(t, l);
			lease_free(l);
			if (p)
				product_drop_if_unused(t, p);
		}
		return 0;
	}
	if (strcmp(type, "reclaimed") == 0)
		return reclaimed_apply(t, rec, wall, mono, err, errlen);
	if (strcmp(type, "uploaded") == 0) {
		json_t *ids = json_object_get(rec, "ids"), *v;
		size_t i;

		if (!json_is_array(ids)) {
			sw_seterr(err, errlen, "uploaded record without ids");
			return SW_EINVAL;
		}
		json_array_foreach(ids, i, v)
		{
			struct usage *u;

			if (json_is_string(v) &&
			    (u = sw_strmap_get(t->usage, json_string_value(v))))
				usage_del(t, u);
		}
		return 0;
	}
	sw_seterr(err, errlen, "unknown record type '%.32s'", type);
	return SW_EINVAL;
}

int lease_snapshot(void *arg, struct journal *j, struct journal_snap *s)
{
	struct lease_table *t = arg;
	int rc;

	/* References only: the journal's thread makes the lines. */
	for (const struct lease *l = t->lhead; l; l = l->next)
		if ((rc = journal_snap_add(j, s, "grant", NULL, l->text, NULL)))
			return rc;
	for (struct usage *u = t->uhead; u; u = u->next) {
		uint64_t seq;

		if ((rc = journal_snap_add(j, s, "usage", "usage", u->text, &seq)))
			return rc;
		/* Its record is now the snapshot's: uploadable once the snapshot is durable. */
		u->seq = seq;
	}
	for (struct reclaimed *r = t->rhead; r; r = r->next)
		if ((rc = journal_snap_add(j, s, "reclaimed", NULL, r->text, NULL)))
			return rc;
	return 0;
}

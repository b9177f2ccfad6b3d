/* The site's systems, enrollment tokens and revoked certificates: the database is the
 * record, memory the working copy that heartbeats update. */
#include "server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The columns of a system registry_load() selects, and an enrollment makes. */
#define SYSTEM_COLUMNS 14

/* `row`: the SYSTEM_COLUMNS columns registry_load() selects, in its order. */
static struct system *system_new(const struct sw_db_val *row)
{
	struct system *sys = calloc(1, sizeof(*sys));
	json_error_t je;

	if (!sys)
		return NULL;
	snprintf(sys->name, sizeof(sys->name), "%s", row[0].s);
	snprintf(sys->address, sizeof(sys->address), "%s", row[1].s);
	snprintf(sys->serial, sizeof(sys->serial), "%s", row[2].s);
	sys->enrolled_at = row[3].i;
	sys->last_seen = row[4].i;
	snprintf(sys->version, sizeof(sys->version), "%s", row[5].s ? row[5].s : "");
	sys->facts = row[6].s ? json_loads(row[6].s, 0, &je) : NULL;
	if (!sys->facts)
		sys->facts = json_object();
	sys->roles = json_array();
	sys->services = json_array();
	if (row[7].type == SW_DB_TEXT)
		snprintf(sys->meter_address, sizeof(sys->meter_address), "%s", row[7].s);
	if (row[8].type == SW_DB_TEXT)
		snprintf(sys->client_serial, sizeof(sys->client_serial), "%s", row[8].s);
	if (row[9].type == SW_DB_INT)
		sys->clock_skew_ms = row[9].i;
	if (row[10].type == SW_DB_TEXT)
		snprintf(sys->prev_serial, sizeof(sys->prev_serial), "%s", row[10].s);
	if (row[11].type == SW_DB_INT)
		sys->cert_not_after = row[11].i;
	if (row[12].type == SW_DB_TEXT)
		snprintf(sys->cert_ca, sizeof(sys->cert_ca), "%s", row[12].s);
	if (row[13].type == SW_DB_TEXT)
		snprintf(sys->trust, sizeof(sys->trust), "%s", row[13].s);
	return sys;
}

static void system_free(struct system *sys)
{
	if (!sys)
		return;
	json_decref(sys->facts);
	json_decref(sys->roles);
	json_decref(sys->services);
	free(sys);
}

static int load_system(void *arg, int ncols, const struct sw_db_val *row)
{
	struct server *s = arg;
	struct system *sys;

	if (ncols != SYSTEM_COLUMNS)
		return SW_EINVAL;
	sys = system_new(row);

	if (!sys || sw_strmap_set(s->systems, sys->name, sys)) {
		system_free(sys);
		return SW_ENOMEM;
	}
	return 0;
}

static int load_role(void *arg, int ncols, const struct sw_db_val *row)
{
	struct server *s = arg;
	struct system *sys = sw_strmap_get(s->systems, row[0].s);

	if (sys)
		json_array_append_new(sys->roles, json_string(row[1].s));
	return 0;
}

static int load_revoked(void *arg, int ncols, const struct sw_db_val *row)
{
	struct server *s = arg;

	return sw_strmap_set(s->revoked, row[0].s, (void *)1);
}

int registry_load(struct server *s, char *err, size_t errlen)
{
	int rc;

	s->systems = sw_strmap_new();
	s->revoked = sw_strmap_new();
	if (!s->systems || !s->revoked)
		return SW_ENOMEM;
	rc =
	    sw_db_exec(s->db,
		       "SELECT name, address, cert_serial, enrolled_at, last_seen, version, facts, "
		       "meter_address, client_serial, clock_skew_ms, prev_serial, cert_not_after, "
		       "cert_ca, trust "
		       "FROM systems",
		       NULL, 0, load_system, s, NULL, err, errlen);
	if (!rc)
		rc =
		    sw_db_exec(s->db, "SELECT system, role FROM system_roles ORDER BY system, role",
			       NULL, 0, load_role, s, NULL, err, errlen);
	if (!rc)
		rc = sw_db_exec(s->db, "SELECT serial FROM revoked", NULL, 0, load_revoked, s, NULL,
				err, errlen);
	return rc;
}

static void free_system(const char *key, void *value, void *arg)
{
	system_free(value);
}

void registry_free(struct server *s)
{
	if (s->systems)
		sw_strmap_each(s->systems, free_system, NULL);
	sw_strmap_free(s->systems);
	sw_strmap_free(s->revoked);
	free(s->dirty);
}

static void touch(struct server *s, struct system *sys)
{
	if (sys->dirty)
		return;
	if (s->ndirty == s->dirty_cap) {
		size_t cap = s->dirty_cap ? s->dirty_cap * 2 : 256;
		struct system **d = realloc(s->dirty, cap * sizeof(*d));
		if (!d)
			return; /* written at a later touch; memory stays right */
		s->dirty = d;
		s->dirty_cap = cap;
	}
	s->dirty[s->ndirty++] = sys;
	sys->dirty = 1;
}

/* A system's heartbeat state as it is written, copied off the loop's memory. */
struct flush_row {
	char name[64], version[65], address[300], meter_address[300];
	char cert_ca[41], trust[SW_PKI_BUNDLE_ID_LEN + 1];
	int64_t last_seen, clock_skew_ms;
	char *facts;
};

struct flush {
	struct flush_row *rows;
	size_t n;
	int rc;
	char err[256];
};

static int flush_write(struct sw_db *db, const struct flush_row *rows, size_t n, char *err,
		       size_t errlen)
{
	int rc = sw_db_begin(db, err, errlen);

	for (size_t i = 0; i < n && !rc; i++) {
		const struct flush_row *r = &rows[i];
		struct sw_db_val p[] = {SW_DB_INT(r->last_seen),
					SW_DB_TEXT(r->version),
					SW_DB_TEXT(r->facts ? r->facts : "{}"),
					SW_DB_TEXT(r->address),
					SW_DB_TEXT(r->meter_address),
					SW_DB_INT(r->clock_skew_ms),
					SW_DB_TEXT(r->cert_ca),
					SW_DB_TEXT(r->trust),
					SW_DB_TEXT(r->name)};

		rc = sw_db_exec(db,
				"UPDATE systems SET last_seen = ?, version = ?, facts = ?, "
				"address = ?, meter_address = ?, clock_skew_ms = ?, cert_ca = ?, "
				"trust = ? WHERE name = ?",
				p, 9, NULL, NULL, NULL, err, errlen);
	}
	if (!rc)
		rc = sw_db_commit(db, err, errlen);
	if (rc)
		sw_db_rollback(db);
	return rc;
}

/* The dirty systems, copied, and marked clean: a heartbeat meanwhile marks one again. */
static struct flush *flush_collect(struct server *s)
{
	struct flush *f = calloc(1, sizeof(*f));

	if (!f || !(f->rows = calloc(s->ndirty, sizeof(*f->rows)))) {
		free(f);
		return NULL;
	}
	for (size_t i = 0; i < s->ndirty; i++) {
		struct system *sys = s->dirty[i];
		struct flush_row *r = &f->rows[f->n++];

		snprintf(r->name, sizeof(r->name), "%s", sys->name);
		snprintf(r->version, sizeof(r->version), "%s", sys->version);
		snprintf(r->address, sizeof(r->address), "%s", sys->address);
		snprintf(r->meter_address, sizeof(r->meter_address), "%s", sys->meter_address);
		snprintf(r->cert_ca, sizeof(r->cert_ca), "%s", sys->cert_ca);
		snprintf(r->trust, sizeof(r->trust), "%s", sys->trust);
		r->last_seen = sys->last_seen;
		r->clock_skew_ms = sys->clock_skew_ms;
		r->facts = sw_json_dump(sys->facts);
		sys->dirty = 0;
	}
	s->ndirty = 0;
	return f;
}

static void flush_run(struct sw_db *db, void *arg)
{
	struct flush *f = arg;

	f->rc = flush_write(db, f->rows, f->n, f->err, sizeof(f->err));
}

/* Rows that were not written are dirty again, for the next flush. */
static void flush_done(struct server *s, void *arg)
{
	struct flush *f = arg;

	s->flush_busy = 0;
	if (f->rc)
		sw_warn("cannot record heartbeats (will retry): %s", f->err);
	for (size_t i = 0; i < f->n; i++) {
		struct system *sys = f->rc ? sw_strmap_get(s->systems, f->rows[i].name) : NULL;
		if (sys)
			touch(s, sys);
		free(f->rows[i].facts);
	}
	free(f->rows);
	free(f);
}

/* Writes every system changed since the last flush in one transaction, so the cost of
 * a commit is shared by all the heartbeats of the interval; through the write queue,
 * so a slow database delays no heartbeat and no request. One flush at a time: the next
 * waits for the one in flight. */
int registry_flush(struct server *s)
{
	struct flush *f;

	if (s->ndirty == 0 || s->flush_busy)
		return 0;
	if (!(f = flush_collect(s)))
		return SW_ENOMEM;
	s->flush_busy = 1;
	if (dbq_push(s, DBQ_SLOW_MS, flush_run, flush_done, f)) {
		f->rc = SW_ENOMEM;
		snprintf(f->err, sizeof(f->err), "out of memory");
		flush_done(s, f);
		return SW_ENOMEM;
	}
	return 0;
}

const char *registry_health(const struct server *s, const struct system *sys, int64_t now)
{
	int64_t seen = sys->last_seen ? sys->last_seen : sys->enrolled_at;
	int64_t interval = (int64_t)s->heartbeat_s * 1000;

	if (now - seen > 10 * interval)
		return "offline";
	if (now - seen > 3 * interval)
		return "late";
	return sys->last_seen ? "ok" : "enrolled";
}

enum sw_clock_state registry_clock(const struct server *s, const struct system *sys, int64_t now,
				   char *note, size_t len)
{
	/* a certificate the site issues now starts this far back: a clock further behind
	 * cannot verify it, whatever the older certificates allow */
	int64_t from = now - (int64_t)SW_PKI_BACKDATE_S * 1000;
	enum sw_clock_state st;
	char how[64];

	if (s->tls_not_before > from)
		from = s->tls_not_before;
	st = sw_clock_judge(now, sys->clock_skew_ms, from, s->tls_not_after);
	sw_clock_describe(sys->clock_skew_ms, how, sizeof(how));
	if (st == SW_CLOCK_BREAKS_TLS)
		snprintf(note, len,
			 "clock %s the site server's: the site's certificates are %s by it, so "
			 "TLS fails; set its time (timedatectl / chrony)",
			 how, sys->clock_skew_ms < 0 ? "not yet valid" : "expired");
	else if (st == SW_CLOCK_SKEWED)
		snprintf(note, len,
			 "clock %s the site server's; set its time (timedatectl / chrony)", how);
	else if (len)
		note[0] = '\0';
	return st;
}

/* A new clock reading: logged when its state changes. */
static void clock_heard(struct server *s, struct system *sys, int64_t now)
{
	char note[256];
	enum sw_clock_state st = registry_clock(s, sys, now, note, sizeof(note));

	if (st == sys->clock_state)
		return;
	if (st == SW_CLOCK_OK)
		sw_info("system %s: clock within %ds of the site server's again", sys->name,
			SW_CLOCK_WARN_MS / 1000);
	else
		sw_warn("system %s: %s", sys->name, note);
	sys->clock_state = st;
}

void registry_heard(struct server *s, struct system *sys, struct sw_heartbeat *hb,
		    const char *address, const char *meter_address, const char *cert_ca)
{
	snprintf(sys->cert_ca, sizeof(sys->cert_ca), "%s", cert_ca);
	if (hb->ca_id)
		snprintf(sys->trust, sizeof(sys->trust), "%s", hb->ca_id);
	json_decref(sys->facts);
	sys->facts = hb->facts;
	if (hb->now) {
		int64_t now = sw_now_ms();
		sys->clock_skew_ms = hb->now - now;
		clock_heard(s, sys, now);
	}
	if (hb->services) {
		json_decref(sys->services);
		sys->services = hb->services;
	}
	if (strcmp(sys->meter_address, meter_address) != 0) {
		snprintf(sys->meter_address, sizeof(sys->meter_address), "%s", meter_address);
		s->registry_gen++;
	}
	if (hb->roles && !json_equal(hb->roles, sys->roles))
		sw_info("%s runs other roles than it should; the reply tells it which", sys->name);
	json_decref(hb->roles);
	snprintf(sys->version, sizeof(sys->version), "%s", hb->version);
	memset(hb, 0, sizeof(*hb)); /* what it owned is the system's now */
	snprintf(sys->address, sizeof(sys->address), "%s", address);
	sys->last_seen = sw_now_ms();
	touch(s, sys);
}

static void collect_key(const char *key, void *value, void *arg)
{
	(void)value;
	json_array_append_new(arg, json_string(key));
}

json_t *registry_revoked_list(const struct server *s)
{
	json_t *out = json_array();

	if (out)
		sw_strmap_each(s->revoked, collect_key, out);
	return out;
}

int registry_has_role(const struct system *sys, const char *role)
{
	size_t i;
	json_t *r;

	json_array_foreach(sys->roles, i, r) if (strcmp(json_string_value(r), role) == 0) return 1;
	return 0;
}

uint64_t registry_generation(const struct server *s)
{
	return s->registry_gen;
}

/* --- changes, through the write queue --- */

static int token_create_write(struct sw_db *db, struct reg_op *op)
{
	char hash[65];
	int64_t now = sw_now_ms();

	sw_sha256_hex(op->secret, strlen(op->secret), hash);
	snprintf(op->token_id, sizeof(op->token_id), "%.*s", REG_TOKEN_ID_HEX, hash);
	op->expires_at = now + op->ttl_s * 1000;
	struct sw_db_val p[] = {SW_DB_TEXT(hash), SW_DB_INT(now), SW_DB_INT(op->expires_at),
				SW_DB_INT(op->uses)};
	return sw_db_exec(db,
			  "INSERT INTO tokens (hash, created_at, expires_at, uses, used) VALUES "
			  "(?, ?, ?, ?, 0)",
			  p, 4, NULL, NULL, NULL, op->err, sizeof(op->err));
}

/* What a token is now, in the order the reasons it cannot enroll are told. */
enum token_state { TOKEN_USABLE, TOKEN_REVOKED, TOKEN_USED_UP, TOKEN_EXPIRED };
static const char *const token_state_names[] = {
    [TOKEN_USABLE] = "usable",
    [TOKEN_REVOKED] = "revoked",
    [TOKEN_USED_UP] = "used up",
    [TOKEN_EXPIRED] = "expired",
};

struct token_row {
	int found;
	char hash[65];
	int64_t created_at, expires_at, uses, used, revoked_at;
};

/* `row`: hash, created_at, expires_at, uses, used, revoked_at. */
static void token_row_read(struct token_row *t, const struct sw_db_val *row)
{
	t->found = 1;
	snprintf(t->hash, sizeof(t->hash), "%s", row[0].s ? row[0].s : "");
	t->created_at = row[1].i;
	t->expires_at = row[2].i;
	t->uses = row[3].i;
	t->used = row[4].i;
	t->revoked_at = row[5].type == SW_DB_NULL ? 0 : row[5].i;
}

static int read_token(void *arg, int ncols, const struct sw_db_val *row)
{
	token_row_read(arg, row);
	return 0;
}

static enum token_state token_state(const struct token_row *t, int64_t now)
{
	if (t->revoked_at)
		return TOKEN_REVOKED;
	if (t->used >= t->uses)
		return TOKEN_USED_UP;
	if (t->expires_at <= now)
		return TOKEN_EXPIRED;
	return TOKEN_USABLE;
}

#define TOKEN_COLUMNS "hash, created_at, expires_at, uses, used, revoked_at"

/* Whether a token may enroll, without using it. */
static int token_check(struct sw_db *db, struct reg_op *op)
{
	char hash[65];
	struct token_row t = {0};
	char *err = op->err;
	size_t errlen = sizeof(op->err);
	int rc;

	sw_sha256_hex(op->secret, strlen(op->secret), hash);
	struct sw_db_val q[] = {SW_DB_TEXT(hash)};
	rc = sw_db_exec(db, "SELECT " TOKEN_COLUMNS " FROM tokens WHERE hash = ?", q, 1, read_token,
			&t, NULL, err, errlen);
	if (rc)
		return rc;
	if (!t.found) {
		sw_seterr(err, errlen, "unknown token; create one with 'siteward token create'");
		return SW_EDENIED;
	}
	switch (token_state(&t, sw_now_ms())) {
	case TOKEN_USABLE: return 0;
	case TOKEN_REVOKED:
		sw_seterr(err, errlen,
			  "token %.*s was revoked; create a new one with 'siteward token create'",
			  REG_TOKEN_ID_HEX, hash);
		return SW_EDENIED;
	case TOKEN_USED_UP:
		if (t.uses == 1)
			sw_seterr(err, errlen,
				  "token already used; create a new one with 'siteward token "
				  "create'");
		else
			sw_seterr(err, errlen,
				  "token used up: all %lld of its uses are taken; create a new "
				  "one with 'siteward token create --uses N'",
				  (long long)t.uses);
		return SW_EDENIED;
	case TOKEN_EXPIRED:
		sw_seterr(err, errlen,
			  "token expired; create a new one with 'siteward token create'");
		return SW_EDENIED;
	}
	return SW_EDENIED;
}

/* Each certificate just issued to the system, kept until it is removed, when every one is
 * revoked. */
static int certs_write(struct sw_db *db, struct reg_op *op, int64_t now)
{
	const struct {
		const char *serial, *role;
	} certs[] = {{op->serial, SW_PKI_ROLE_AGENT},
		     {op->client_serial, SW_PKI_ROLE_CLIENT},
		     {op->meter_serial, SW_PKI_ROLE_METER}};
	int rc = 0;

	for (size_t i = 0; i < SW_ARRAY_LEN(certs) && !rc; i++) {
		struct sw_db_val v[] = {SW_DB_TEXT(certs[i].serial), SW_DB_TEXT(op->name),
					SW_DB_TEXT(certs[i].role), SW_DB_INT(now),
					SW_DB_INT(op->not_after)};
		if (!certs[i].serial[0])
			continue;
		rc = sw_db_exec(db,
				"INSERT INTO system_certs (serial, system, role, issued_at, "
				"not_after) VALUES (?, ?, ?, ?, ?)",
				v, 5, NULL, NULL, NULL, op->err, sizeof(op->err));
	}
	return rc;
}

/* A renewal: the new certificates are the system's from now on, and the one it asked
 * with stays its agent's until it renews again (the answer may be lost on its way). Only
 * for the enrollment it was asked by: a removal meanwhile leaves nothing to renew. */
static int renew_write(struct sw_db *db, struct reg_op *op)
{
	char *err = op->err;
	size_t errlen = sizeof(op->err);
	int64_t changes = 0, now = sw_now_ms();
	int rc;

	if ((rc = sw_db_begin(db, err, errlen)))
		return rc;
	struct sw_db_val u[] = {SW_DB_TEXT(op->serial),	     SW_DB_TEXT(op->client_serial),
				SW_DB_TEXT(op->prev_serial), SW_DB_INT(op->not_after),
				SW_DB_TEXT(op->name),	     SW_DB_TEXT(op->prev_serial),
				SW_DB_TEXT(op->prev_serial)};
	rc =
	    sw_db_exec(db,
		       "UPDATE systems SET cert_serial = ?, client_serial = ?, prev_serial = ?, "
		       "cert_not_after = ? WHERE name = ? AND (cert_serial = ? OR prev_serial = ?)",
		       u, 7, NULL, NULL, &changes, err, errlen);
	if (!rc && changes != 1) {
		sw_seterr(err, errlen, "%s is no longer enrolled; it was removed", op->name);
		rc = SW_ENOTFOUND;
	}
	if (!rc)
		rc = certs_write(db, op, now);
	if (!rc)
		rc = sw_db_commit(db, err, errlen);
	if (rc)
		sw_db_rollback(db);
	return rc;
}

/* Adds a serial to the list once: system_certs and the systems table name the same
 * certificates. */
static int add_serial(void *arg, int ncols, const struct sw_db_val *row)
{
	json_t *v;
	size_t i;

	json_array_foreach((json_t *)arg, i, v)
	{
		if (strcmp(json_string_value(v), row[0].s) == 0)
			return 0;
	}
	return json_array_append_new(arg, json_string(row[0].s)) ? SW_ENOMEM : 0;
}

/* Takes one use of the token and records the system in one transaction: a refused
 * enrollment writes nothing, and the use is taken only while one is left, so of two
 * enrollments racing for a token's last use exactly one is recorded. */
static int enroll_write(struct sw_db *db, struct reg_op *op)
{
	char hash[65];
	char *err = op->err;
	size_t errlen = sizeof(op->err);
	int64_t changes = 0;
	int rc;

	op->enrolled_at = sw_now_ms();
	sw_sha256_hex(op->secret, strlen(op->secret), hash);
	if ((rc = sw_db_begin(db, err, errlen)))
		return rc;
	struct sw_db_val u[] = {SW_DB_INT(op->enrolled_at), SW_DB_TEXT(op->name), SW_DB_TEXT(hash),
				SW_DB_INT(op->enrolled_at)};
	rc =
	    sw_db_exec(db,
		       "UPDATE tokens SET used = used + 1, used_at = ?, used_by = ? WHERE hash = ? "
		       "AND used < uses AND expires_at > ? AND revoked_at IS NULL",
		       u, 4, NULL, NULL, &changes, err, errlen);
	if (!rc && changes != 1) {
		/* why not, told as a check before any use would tell it */
		if (!(rc = token_check(db, op))) {
			sw_seterr(err, errlen,
				  "token already used; create a new one with 'siteward token "
				  "create'");
			rc = SW_EDENIED;
		}
	}
	if (!rc) {
		struct sw_db_val w[] = {SW_DB_TEXT(hash), SW_DB_TEXT(op->name),
					SW_DB_INT(op->enrolled_at)};
		rc = sw_db_exec(db,
				"INSERT INTO token_uses (token, system, used_at) VALUES (?, ?, ?)",
				w, 3, NULL, NULL, NULL, err, errlen);
	}
	if (!rc) {
		struct sw_db_val p[] = {SW_DB_TEXT(op->name),	       SW_DB_TEXT(op->address),
					SW_DB_TEXT(op->serial),	       SW_DB_INT(op->enrolled_at),
					SW_DB_TEXT(op->client_serial), SW_DB_INT(op->not_after)};
		rc = sw_db_exec(db,
				"INSERT INTO systems (name, address, cert_serial, enrolled_at, "
				"client_serial, cert_not_after) VALUES (?, ?, ?, ?, ?, ?)",
				p, 6, NULL, NULL, NULL, err, errlen);
		if (rc == SW_EEXIST)
			sw_seterr(err, errlen,
				  "a system named '%s' is already enrolled; remove it first",
				  op->name);
	}
	if (!rc)
		rc = certs_write(db, op, op->enrolled_at);
	if (!rc)
		rc = sw_db_commit(db, err, errlen);
	if (rc)
		sw_db_rollback(db);
	return rc;
}

/* How many tokens a list shows, newest first, and how many of a token's systems. */
#define TOKEN_LIST_MAX	  1000
#define TOKEN_USED_BY_MAX 100

struct token_list {
	json_t *arr, *byhash; /* byhash: hash → the token's object in arr (borrowed) */
	int64_t now;
};

static int list_token(void *arg, int ncols, const struct sw_db_val *row)
{
	struct token_list *l = arg;
	struct token_row t = {0};
	enum token_state st;
	json_t *o;

	token_row_read(&t, row);
	st = token_state(&t, l->now);
	o = json_pack(
	    "{ss# sI sI sI sI sI ss so s[]}", "id", t.hash, (int)REG_TOKEN_ID_HEX, "created_at",
	    (json_int_t)t.created_at, "expires_at", (json_int_t)t.expires_at, "uses",
	    (json_int_t)t.uses, "used", (json_int_t)t.used, "left",
	    (json_int_t)(st == TOKEN_USABLE ? t.uses - t.used : 0), "state", token_state_names[st],
	    "revoked_at", t.revoked_at ? json_integer(t.revoked_at) : json_null(), "used_by");
	if (!o || json_array_append_new(l->arr, o) || json_object_set(l->byhash, t.hash, o))
		return SW_ENOMEM;
	return 0;
}

static int list_use(void *arg, int ncols, const struct sw_db_val *row)
{
	struct token_list *l = arg;
	json_t *o = json_object_get(l->byhash, row[0].s ? row[0].s : "");
	json_t *by = json_object_get(o, "used_by");

	if (!by || json_array_size(by) >= TOKEN_USED_BY_MAX)
		return 0;
	return json_array_append_new(by, json_pack("{ss sI}", "system", row[1].s ? row[1].s : "",
						   "used_at", (json_int_t)row[2].i))
		   ? SW_ENOMEM
		   : 0;
}

static int token_list(struct sw_db *db, struct reg_op *op)
{
	struct token_list l = {json_array(), json_object(), sw_now_ms()};
	struct sw_db_val lim[] = {SW_DB_INT(TOKEN_LIST_MAX)};
	int rc = SW_ENOMEM;

	if (l.arr && l.byhash)
		rc = sw_db_exec(db,
				"SELECT " TOKEN_COLUMNS " FROM tokens ORDER BY created_at DESC, "
				"hash LIMIT ?",
				lim, 1, list_token, &l, NULL, op->err, sizeof(op->err));
	if (!rc)
		rc = sw_db_exec(db,
				"SELECT token, system, used_at FROM token_uses WHERE token IN "
				"(SELECT hash FROM tokens ORDER BY created_at DESC, hash LIMIT ?) "
				"ORDER BY used_at, system",
				lim, 1, list_use, &l, NULL, op->err, sizeof(op->err));
	json_decref(l.byhash);
	if (rc) {
		json_decref(l.arr);
		if (rc == SW_ENOMEM)
			sw_seterr(op->err, sizeof(op->err), "out of memory");
		return rc;
	}
	op->list = l.arr;
	return 0;
}

_Static_assert(REG_TOKEN_ID_HEX == 12, "token_revoke() names a token by substr(hash, 1, 12)");

/* A revoked token keeps its row: an enrollment with it is told it was revoked. Revoking
 * one already revoked changes nothing and is no error. */
static int token_revoke(struct sw_db *db, struct reg_op *op)
{
	char *err = op->err;
	size_t errlen = sizeof(op->err);
	int64_t count = 0, now = sw_now_ms();
	int rc;

	if ((rc = sw_db_begin(db, err, errlen)))
		return rc;
	struct sw_db_val q[] = {SW_DB_TEXT(op->token_id)};
	struct sw_db_val u[] = {SW_DB_INT(now), SW_DB_TEXT(op->token_id)};
	rc = sw_db_exec(db, "SELECT COUNT(*) FROM tokens WHERE substr(hash, 1, 12) = ?", q, 1,
			sw_db_int_row, &count, NULL, err, errlen);
	if (!rc && count == 0) {
		sw_seterr(err, errlen, "no token with id %s; 'siteward token list' shows them",
			  op->token_id);
		rc = SW_ENOTFOUND;
	} else if (!rc && count > 1) {
		sw_seterr(err, errlen, "id %s names %lld tokens", op->token_id, (long long)count);
		rc = SW_EEXIST;
	}
	if (!rc)
		rc =
		    sw_db_exec(db,
			       "UPDATE tokens SET revoked_at = ? WHERE substr(hash, 1, 12) = ? AND "
			       "revoked_at IS NULL",
			       u, 2, NULL, NULL, NULL, err, errlen);
	if (!rc)
		rc = sw_db_commit(db, err, errlen);
	if (rc)
		sw_db_rollback(db);
	return rc;
}

/* The system's row goes only if it is still the enrollment this removal was asked for:
 * a second removal meanwhile finds nothing. Its certificates are revoked with it. */
static int remove_write(struct sw_db *db, struct reg_op *op)
{
	char *err = op->err;
	size_t errlen = sizeof(op->err);
	int64_t changes = 0, now = sw_now_ms();
	int rc;

	if ((rc = sw_db_begin(db, err, errlen)))
		return rc;
	struct sw_db_val d[] = {SW_DB_TEXT(op->name), SW_DB_TEXT(op->serial)};
	json_t *v;
	size_t i;

	json_array_clear(op->list);
	rc = sw_db_exec(db, "SELECT serial FROM system_certs WHERE system = ? ORDER BY serial", d,
			1, add_serial, op->list, NULL, err, errlen);
	/* those of the systems table too: written before system_certs, or by an older
	 * version that did not keep them there */
	if (!rc)
		rc = sw_db_exec(db,
				"SELECT cert_serial FROM systems WHERE name = ? UNION SELECT "
				"client_serial FROM systems WHERE name = ? AND client_serial IS "
				"NOT NULL AND client_serial <> ''",
				(struct sw_db_val[]){d[0], d[0]}, 2, add_serial, op->list, NULL,
				err, errlen);
	if (!rc)
		rc = sw_db_exec(db, "DELETE FROM systems WHERE name = ? AND cert_serial = ?", d, 2,
				NULL, NULL, &changes, err, errlen);
	if (!rc && changes != 1) {
		sw_seterr(err, errlen, "no system named '%s'", op->name);
		rc = SW_ENOTFOUND;
	}
	if (!rc)
		rc = sw_db_exec(db, "DELETE FROM system_roles WHERE system = ?", d, 1, NULL, NULL,
				NULL, err, errlen);
	/* its inventory goes with it; its package history stays, as its usage does */
	if (!rc)
		rc = sw_db_exec(db, "DELETE FROM packages WHERE system = ?", d, 1, NULL, NULL, NULL,
				err, errlen);
	if (!rc)
		rc = sw_db_exec(db, "DELETE FROM inventory WHERE system = ?", d, 1, NULL, NULL,
				NULL, err, errlen);
	json_array_foreach(op->list, i, v)
	{
		struct sw_db_val r[] = {SW_DB_TEXT(json_string_value(v)), SW_DB_TEXT(op->name),
					SW_DB_INT(now)};
		if (rc)
			break;
		rc = sw_db_exec(db,
				"INSERT INTO revoked (serial, name, revoked_at) VALUES (?, ?, ?) "
				"ON CONFLICT DO NOTHING",
				r, 3, NULL, NULL, NULL, err, errlen);
	}
	if (!rc)
		rc = sw_db_exec(db, "DELETE FROM system_certs WHERE system = ?", d, 1, NULL, NULL,
				NULL, err, errlen);
	if (!rc)
		rc = sw_db_commit(db, err, errlen);
	if (rc)
		sw_db_rollback(db);
	return rc;
}

/* Wanted roles, added or removed; only for the enrollment they were asked for, so a
 * removal (or a new enrollment under the name) meanwhile leaves no stray row. Adding
 * one already there, or removing one that is not, changes nothing. */
static int roles_write(struct sw_db *db, struct reg_op *op)
{
	char *err = op->err;
	size_t errlen = sizeof(op->err);
	int64_t count = 0, now = sw_now_ms();
	json_t *r;
	size_t i;
	int rc;

	if ((rc = sw_db_begin(db, err, errlen)))
		return rc;
	struct sw_db_val q[] = {SW_DB_TEXT(op->name), SW_DB_TEXT(op->serial)};
	rc = sw_db_exec(db, "SELECT COUNT(*) FROM systems WHERE name = ? AND cert_serial = ?", q, 2,
			sw_db_int_row, &count, NULL, err, errlen);
	if (!rc && count == 0) {
		sw_seterr(err, errlen, "no system named '%s'", op->name);
		rc = SW_ENOTFOUND;
	}
	json_array_foreach(op->roles, i, r)
	{
		struct sw_db_val p[] = {SW_DB_TEXT(op->name), SW_DB_TEXT(json_string_value(r)),
					SW_DB_INT(now)};
		if (rc)
			break;
		if (op->add)
			rc = sw_db_exec(db,
					"INSERT INTO system_roles (system, role, added_at) SELECT "
					"name, CAST(? AS TEXT), CAST(? AS BIGINT) FROM systems "
					"WHERE name = ? AND cert_serial = ? "
					"ON CONFLICT DO NOTHING",
					(struct sw_db_val[]){p[1], p[2], q[0], q[1]}, 4, NULL, NULL,
					NULL, err, errlen);
		else
			rc =
			    sw_db_exec(db, "DELETE FROM system_roles WHERE system = ? AND role = ?",
				       p, 2, NULL, NULL, NULL, err, errlen);
	}
	if (!rc)
		rc = sw_db_commit(db, err, errlen);
	if (rc)
		sw_db_rollback(db);
	return rc;
}

static void op_run(struct sw_db *db, void *arg)
{
	struct reg_op *op = arg;

	switch (op->kind) {
	case REG_TOKEN_CREATE: op->rc = token_create_write(db, op); break;
	case REG_TOKEN_CHECK: op->rc = token_check(db, op); break;
	case REG_TOKEN_LIST: op->rc = token_list(db, op); break;
	case REG_TOKEN_REVOKE: op->rc = token_revoke(db, op); break;
	case REG_ENROLL: op->rc = enroll_write(db, op); break;
	case REG_REMOVE: op->rc = remove_write(db, op); break;
	case REG_RENEW: op->rc = renew_write(db, op); break;
	case REG_ROLES: op->rc = roles_write(db, op); break;
	}
}

/* The system as `op` knew it: the same name and certificate, not a later enrollment. */
static struct system *op_system(struct server *s, const struct reg_op *op)
{
	struct system *sys = sw_strmap_get(s->systems, op->name);

	return sys && strcmp(sys->serial, op->serial) == 0 ? sys : NULL;
}

static int enrolled(struct server *s, struct reg_op *op)
{
	struct sw_db_val row[SYSTEM_COLUMNS] = {SW_DB_TEXT(op->name),
						SW_DB_TEXT(op->address),
						SW_DB_TEXT(op->serial),
						SW_DB_INT(op->enrolled_at),
						SW_DB_INT(0),
						SW_DB_TEXT(""),
						SW_DB_NULLV,
						SW_DB_NULLV,
						SW_DB_TEXT(op->client_serial),
						SW_DB_INT(0),
						SW_DB_NULLV,
						SW_DB_INT(op->not_after),
						SW_DB_NULLV,
						SW_DB_NULLV};
	struct system *sys = system_new(row);

	if (!sys || sw_strmap_set(s->systems, op->name, sys)) {
		system_free(sys);
		snprintf(op->err, sizeof(op->err), "out of memory");
		return SW_ENOMEM;
	}
	return 0;
}

/* A removal stored: its certificates are refused from now on, in memory too, so the next
 * request on any open connection is refused. */
static int removed(struct server *s, struct reg_op *op)
{
	json_t *v;
	size_t i;

	json_array_foreach(op->list, i, v)
	{
		if (sw_strmap_set(s->revoked, json_string_value(v), (void *)1)) {
			snprintf(op->err, sizeof(op->err), "out of memory");
			return SW_ENOMEM;
		}
	}
	return 0;
}

/* A renewal stored: the system's agent answers to its new certificate, and to the one it
 * asked with until it renews again. */
static int renewed(struct server *s, struct reg_op *op)
{
	struct system *sys = sw_strmap_get(s->systems, op->name);

	if (!sys) {
		snprintf(op->err, sizeof(op->err), "%s was removed meanwhile", op->name);
		return SW_ENOTFOUND;
	}
	snprintf(sys->serial, sizeof(sys->serial), "%s", op->serial);
	snprintf(sys->prev_serial, sizeof(sys->prev_serial), "%s", op->prev_serial);
	snprintf(sys->client_serial, sizeof(sys->client_serial), "%s", op->client_serial);
	sys->cert_not_after = op->not_after;
	return 0;
}

/* The removed system leaves memory: its channel is closed, and it is not written again. */
static void system_drop(struct server *s, struct system *sys)
{
	if (sys->dirty) {
		for (size_t i = 0; i < s->ndirty; i++)
			if (s->dirty[i] == sys)
				s->dirty[i] = s->dirty[--s->ndirty];
	}
	sw_info("system %s removed; certificate %s revoked", sys->name, sys->serial);
	channel_forget(s, sys);
	sw_strmap_del(s->systems, sys->name);
	s->registry_gen++;
	system_free(sys);
}

static void roles_applied(struct server *s, struct reg_op *op)
{
	struct system *sys = op_system(s, op);
	json_t *r, *have;
	size_t i, j;

	if (!sys)
		return;
	json_array_foreach(op->roles, i, r)
	{
		const char *role = json_string_value(r);
		size_t at = SIZE_MAX;

		json_array_foreach(sys->roles, j, have)
		{
			if (strcmp(json_string_value(have), role) == 0)
				at = j;
		}
		if ((at != SIZE_MAX) == op->add)
			continue;
		s->registry_gen++;
		if (op->add)
			json_array_append_new(sys->roles, json_string(role));
		else
			json_array_remove(sys->roles, at);
	}
}

/* Memory follows what was stored, then the caller hears of it. */
static void op_done(struct server *s, void *arg)
{
	struct reg_op *op = arg;
	struct system *gone = NULL;

	if (!op->rc) {
		switch (op->kind) {
		case REG_TOKEN_CREATE:
			snprintf(op->token, sizeof(op->token), "%s.%.*s", op->secret,
				 SW_TOKEN_PIN_HEX, op->pin);
			break;
		case REG_TOKEN_CHECK:
		case REG_TOKEN_LIST:
		case REG_TOKEN_REVOKE: break;
		case REG_ENROLL: op->rc = enrolled(s, op); break;
		case REG_REMOVE:
			if (!(op->rc = removed(s, op)))
				gone = op_system(s, op);
			break;
		case REG_RENEW: op->rc = renewed(s, op); break;
		case REG_ROLES: roles_applied(s, op); break;
		}
	}
	if (op->kind == REG_ROLES && !op->rc && !op_system(s, op)) {
		snprintf(op->err, sizeof(op->err), "%s was removed meanwhile", op->name);
		op->rc = SW_ENOTFOUND;
	}
	op->done(s, op);
	/* A removed system leaves memory once its caller has heard, so that the metering
	 * servers the caller tells of the removal are those of the site it was part of,
	 * its own among them. */
	if (gone)
		system_drop(s, gone);
}

int registry_submit(struct server *s, struct reg_op *op)
{
	struct system *sys;

	op->rc = 0;
	op->err[0] = '\0';
	switch (op->kind) {
	case REG_TOKEN_CREATE:
		if (sw_random_hex(op->secret, SW_TOKEN_SECRET_HEX / 2))
			op->rc = SW_ECRYPTO;
		else
			op->rc = sw_pki_ca_fingerprint(s->ca, op->pin, op->err, sizeof(op->err));
		break;
	case REG_ENROLL:
		if (sw_strmap_get(s->systems, op->name)) {
			snprintf(op->err, sizeof(op->err),
				 "a system named '%s' is already enrolled; remove it first",
				 op->name);
			op->rc = SW_EEXIST;
		}
		break;
	case REG_REMOVE:
		if (!(sys = sw_strmap_get(s->systems, op->name))) {
			snprintf(op->err, sizeof(op->err), "no system named '%s'", op->name);
			op->rc = SW_ENOTFOUND;
			break;
		}
		snprintf(op->serial, sizeof(op->serial), "%s", sys->serial);
		snprintf(op->client_serial, sizeof(op->client_serial), "%s", sys->client_serial);
		if (!op->list && !(op->list = json_array())) {
			snprintf(op->err, sizeof(op->err), "out of memory");
			op->rc = SW_ENOMEM;
		}
		break;
	case REG_RENEW:
		sys = sw_strmap_get(s->systems, op->name);
		if (!sys || (strcmp(sys->serial, op->prev_serial) != 0 &&
			     strcmp(sys->prev_serial, op->prev_serial) != 0)) {
			snprintf(op->err, sizeof(op->err), "%s is not an enrolled system",
				 op->name);
			op->rc = SW_EDENIED;
		}
		break;
	case REG_ROLES:
		if (!(sys = sw_strmap_get(s->systems, op->name))) {
			snprintf(op->err, sizeof(op->err), "no system named '%s'", op->name);
			op->rc = SW_ENOTFOUND;
			break;
		}
		snprintf(op->serial, sizeof(op->serial), "%s", sys->serial);
		break;
	default: break;
	}
	if (op->rc)
		return op->rc;
	if (dbq_push(s, DBQ_SLOW_MS, op_run, op_done, op)) {
		snprintf(op->err, sizeof(op->err), "out of memory");
		return op->rc = SW_ENOMEM;
	}
	return 0;
}

int registry_is_revoked(void *arg, const char *serial)
{
	struct server *s = arg;

	return sw_strmap_get(s->revoked, serial) != NULL;
}

/* The meter's license table: grants, denials, ownership, expiry and the FIFO queue. */
#include "error.h"
#include "meter/meter.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define CLIENT_A "0123456789abcdef0123456789abcdef"
#define CLIENT_B "fedcba9876543210fedcba9876543210"
#define WALL	 1700000000000LL

static struct lease_table *table_with(const char *config)
{
	struct lease_table *t = lease_table_new();
	struct meter_config conf;
	char err[256];

	assert_non_null(t);
	assert_int_equal(lease_config_parse(config, strlen(config), &conf, err, sizeof(err)), 0);
	lease_configure(t, &conf, WALL, 0);
	lease_config_cleanup(&conf);
	return t;
}

static const char cad_config[] =
    "{\"products\":[{\"name\":\"cad\",\"exe\":\"cad\",\"version\":\"\",\"licenses\":2,"
    "\"allotment\":2,\"enforce\":true},{\"name\":\"notes\",\"exe\":\"notes\",\"licenses\":1,"
    "\"allotment\":1,\"enforce\":false}],\"lease_ttl_ms\":30000}";

static struct checkout_req req_for(const char *exe, const char *user, const char *client,
				   int64_t wait_ms)
{
	struct checkout_req r;

	memset(&r, 0, sizeof(r));
	strcpy(r.exe, exe);
	strcpy(r.user, user);
	strcpy(r.client, client);
	r.pid = 42;
	r.wait_ms = wait_ms;
	return r;
}

static void test_grant_then_deny(void **state)
{
	struct lease_table *t = table_with(cad_config);
	struct checkout_req r = req_for("cad", "alice", CLIENT_A, 0);
	struct checkout_out out;
	struct waiter w = {0};

	for (int i = 0; i < 2; i++) {
		assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
		assert_int_equal(out.result, CHECKOUT_GRANTED);
		assert_non_null(out.lease);
		assert_int_equal(strlen(out.lease->id), 32);
		assert_string_equal(out.lease->host, "web1");
	}
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_string_equal(out.reason, "all 2 licenses of cad are in use");
	assert_int_equal(out.queue_position, 1); /* had it asked to wait */
	assert_int_equal(t->nleases, 2);
	/* The denial is a usage record. */
	assert_int_equal(t->nusage, 1);
	assert_string_equal(t->uhead->kind, "denied");
	assert_string_equal(t->uhead->user, "alice");

	r = req_for("vim", "alice", CLIENT_A, 0);
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_UNMETERED);
	lease_table_free(t);
}

/* A server holding a share of the licenses names the site's count too. */
static void test_denial_names_the_share(void **state)
{
	struct lease_table *t =
	    table_with("{\"products\":[{\"name\":\"cad\",\"exe\":\"cad\",\"licenses\":5,"
		       "\"allotment\":2,\"enforce\":true}],\"lease_ttl_ms\":30000}");
	struct checkout_req r = req_for("cad", "alice", CLIENT_A, 0);
	struct checkout_out out;
	struct waiter w = {0};

	for (int i = 0; i < 3; i++)
		assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_string_equal(out.reason,
			    "the 2 of cad's 5 licenses this license server holds are in use");
	lease_table_free(t);
}

/* Two editions of one program, told apart by version; a third product takes the rest. */
static void test_version_patterns(void **state)
{
	struct lease_table *t =
	    table_with("{\"products\":[{\"name\":\"cad9\",\"exe\":\"cad\",\"version\":\"9.*\","
		       "\"licenses\":1,\"allotment\":1,\"enforce\":true},"
		       "{\"name\":\"cad91\",\"exe\":\"cad\",\"version\":\"9.1*\",\"licenses\":1,"
		       "\"allotment\":1,\"enforce\":true},"
		       "{\"name\":\"cad-any\",\"exe\":\"cad\",\"version\":\"\",\"licenses\":1,"
		       "\"allotment\":1,\"enforce\":true}],\"lease_ttl_ms\":30000}");
	struct checkout_req r = req_for("cad", "alice", CLIENT_A, 0);
	struct checkout_out out;
	struct waiter w = {0};

	/* the client has not said its version: it is asked to, nothing is granted */
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_NEED_VERSION);
	assert_int_equal(t->nleases, 0);
	r.has_version = 1;
	strcpy(r.version, "9.1-2");
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_GRANTED);
	assert_string_equal(out.lease->product, "cad91"); /* the most specific fit */
	strcpy(r.version, "9.0-1");
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_GRANTED);
	assert_string_equal(out.lease->product, "cad9");
	strcpy(r.version, "8.4-1");
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_GRANTED);
	assert_string_equal(out.lease->product, "cad-any");
	/* no package owns it: only the product without a pattern can be it */
	strcpy(r.version, "");
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_string_equal(out.product->def.name, "cad-any");
	lease_table_free(t);

	/* with only a versioned product, another version is not metered */
	t = table_with("{\"products\":[{\"name\":\"cad9\",\"exe\":\"cad\",\"version\":"
		       "\"9.*\",\"licenses\":1,\"allotment\":1,\"enforce\":true}],"
		       "\"lease_ttl_ms\":30000}");
	strcpy(r.version, "10.0-1");
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_UNMETERED);
	lease_table_free(t);
}

static void test_unenforced_never_denies(void **state)
{
	struct lease_table *t = table_with(cad_config);
	struct checkout_req r = req_for("notes", "bob", CLIENT_A, 0);
	struct checkout_out out;
	struct waiter w = {0};

	for (int i = 0; i < 10; i++) {
		assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
		assert_int_equal(out.result, CHECKOUT_GRANTED);
	}
	assert_int_equal(t->nleases, 10);
	assert_int_equal(t->nusage, 0);
	lease_table_free(t);
}

static void test_checkin_ownership(void **state)
{
	struct lease_table *t = table_with(cad_config);
	struct checkout_req r = req_for("cad", "alice", CLIENT_A, 0);
	struct checkout_out out;
	struct waiter w = {0};
	char id[33];

	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w, &out), 0);
	strcpy(id, out.lease->id);
	assert_int_equal(lease_checkin(t, id, CLIENT_B, "web1", WALL + 5, 5), SW_EDENIED);
	assert_int_equal(lease_checkin(t, id, CLIENT_A, "web2", WALL + 5, 5), SW_EDENIED);
	assert_int_equal(lease_renew(t, id, CLIENT_B, "web1", WALL + 5, 5), SW_EDENIED);
	assert_int_equal(
	    lease_checkin(t, "00000000000000000000000000000000", CLIENT_A, "web1", WALL + 5, 5),
	    SW_ENOTFOUND);
	assert_int_equal(t->nleases, 1);
	assert_int_equal(lease_checkin(t, id, CLIENT_A, "web1", WALL + 1000, 1000), 0);
	assert_int_equal(t->nleases, 0);
	/* The run is a usage record named after its lease. */
	assert_int_equal(t->nusage, 1);
	assert_string_equal(t->uhead->id, id);
	assert_string_equal(t->uhead->kind, "run");
	assert_int_equal(t->uhead->start, WALL);
	assert_int_equal(t->uhead->end, WALL + 1000);
	assert_int_equal(lease_checkin(t, id, CLIENT_A, "web1", WALL + 5, 5), SW_ENOTFOUND);
	lease_table_free(t);
}

struct grants {
	int n;
	struct waiter *order[8];
	char lease[8][33];
};

static struct grants granted_log;

static void on_granted(struct waiter *w, struct lease *l)
{
	granted_log.order[granted_log.n] = w;
	strcpy(granted_log.lease[granted_log.n], l->id);
	granted_log.n++;
}

static void test_expiry_grants_fifo(void **state)
{
	struct lease_table *t = table_with(cad_config);
	struct checkout_req r = req_for("cad", "alice", CLIENT_A, 0);
	struct checkout_out out;
	struct waiter w0 = {0}, w[3];
	char first[2][33];

	memset(&granted_log, 0, sizeof(granted_log));
	for (int i = 0; i < 2; i++) {
		assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w0, &out), 0);
		strcpy(first[i], out.lease->id);
	}
	for (int i = 0; i < 3; i++) {
		struct checkout_req q = req_for("cad", "carol", CLIENT_B, 60000);

		memset(&w[i], 0, sizeof(w[i]));
		w[i].granted = on_granted;
		assert_int_equal(
		    lease_checkout(t, &q, "web2", WALL + 100 + i, 100 + i, &w[i], &out), 0);
		assert_int_equal(out.result, CHECKOUT_QUEUED);
	}
	assert_int_equal(t->nwaiting, 3);
	/* The first lease is renewed, the second not: only the second expires. */
	assert_int_equal(lease_renew(t, first[0], CLIENT_A, "web1", WALL + 20000, 20000), 0);
	assert_int_equal(lease_expire_due(t, WALL + 29999, 29999), 0);
	assert_int_equal(lease_expire_due(t, WALL + 30000, 30000), 1);
	assert_null(lease_find(t, first[1]));
	assert_int_equal(granted_log.n, 1);
	assert_ptr_equal(granted_log.order[0], &w[0]);
	/* The expired run ends at its last renewal, here its grant. */
	assert_string_equal(t->uhead->id, first[1]);
	assert_int_equal(t->uhead->end, WALL);
	/* Then the renewed one: the queue is served in order. */
	assert_int_equal(lease_expire_due(t, WALL + 50000, 50000), 1);
	assert_int_equal(granted_log.n, 2);
	assert_ptr_equal(granted_log.order[1], &w[1]);
	assert_non_null(lease_find(t, granted_log.lease[1]));
	assert_int_equal(lease_find(t, granted_log.lease[1])->wait_ms, 50000 - 101);
	assert_int_equal(t->nwaiting, 1);
	/* The last waiter gives up: a denial with its reason. */
	{
		char reason[160];
		size_t before = t->nusage;

		lease_waiter_cancel(t, &w[2], 1, WALL + 60102, reason, sizeof(reason));
		assert_string_equal(reason, "no license of cad freed within 60 s");
		assert_int_equal(t->nusage, before + 1);
		assert_string_equal(t->utail->kind, "denied");
		assert_int_equal(t->utail->wait_ms, 60000);
	}
	assert_int_equal(t->nwaiting, 0);
	lease_table_free(t);
}

static void test_queue_bound(void **state)
{
	struct lease_table *t = table_with(cad_config);
	struct checkout_req r = req_for("cad", "alice", CLIENT_A, 1000);
	struct checkout_out out;
	struct waiter *w = calloc(METER_MAX_WAITERS + 3, sizeof(*w));

	assert_non_null(w);
	for (int i = 0; i < METER_MAX_WAITERS + 2; i++) {
		w[i].granted = on_granted;
		assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w[i], &out), 0);
		assert_int_equal(out.result, i < 2 ? CHECKOUT_GRANTED : CHECKOUT_QUEUED);
		if (i == 3) {
			/* one that does not wait hears where it would stand */
			struct checkout_req now = req_for("cad", "bob", CLIENT_B, 0);

			assert_int_equal(lease_checkout(t, &now, "web1", WALL, 0, NULL, &out), 0);
			assert_int_equal(out.result, CHECKOUT_DENIED);
			assert_int_equal(out.queue_position, 3);
		}
	}
	assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w[METER_MAX_WAITERS + 2], &out),
			 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_non_null(strstr(out.reason, "already waiting"));
	assert_int_equal(out.queue_position, 0); /* the queue is full */
	for (int i = 2; i < METER_MAX_WAITERS + 2; i++)
		lease_waiter_cancel(t, &w[i], 0, WALL, NULL, 0);
	assert_int_equal(t->nwaiting, 0);
	lease_table_free(t);
	free(w);
}

static void test_config_refused(void **state)
{
	static const char *bad[] = {
	    "[]",
	    "{\"products\":{}}",
	    "{\"products\":[{\"name\":\"a\",\"exe\":\"a\",\"licenses\":-1,\"allotment\":1}]}",
	    "{\"products\":[{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1}]}",
	    /* one long literal: the same product twice */
	    ("{\"products\":[{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"allotment\":1},"
	     "{\"name\":\"a\",\"exe\":\"b\",\"licenses\":1,\"allotment\":1}]}"),
	    "{\"products\":[],\"lease_ttl_ms\":5}",
	};
	struct meter_config conf;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_not_equal(
		    lease_config_parse(bad[i], strlen(bad[i]), &conf, err, sizeof(err)), 0);
}

static void test_allotment_raised_serves_queue(void **state)
{
	struct lease_table *t = table_with(cad_config);
	struct checkout_req r = req_for("cad", "alice", CLIENT_A, 5000);
	struct checkout_out out;
	struct waiter w[3];
	struct meter_config conf;
	const char more[] = "{\"products\":[{\"name\":\"cad\",\"exe\":\"cad\",\"licenses\":3,"
			    "\"allotment\":3,\"enforce\":true}]}";

	memset(w, 0, sizeof(w));
	memset(&granted_log, 0, sizeof(granted_log));
	for (int i = 0; i < 3; i++) {
		w[i].granted = on_granted;
		assert_int_equal(lease_checkout(t, &r, "web1", WALL, 0, &w[i], &out), 0);
	}
	assert_int_equal(out.result, CHECKOUT_QUEUED);
	assert_int_equal(lease_config_parse(more, strlen(more), &conf, NULL, 0), 0);
	lease_configure(t, &conf, WALL, 10);
	assert_int_equal(granted_log.n, 1);
	assert_int_equal(t->nleases, 3);
	lease_table_free(t);
}

static void test_request_bodies(void **state)
{
	static const char *bad_checkout[] = {
	    "{\"exe\":\"cad\",\"user\":\"a\",\"pid\":1}",
	    "{\"exe\":\"cad\",\"user\":\"a\",\"pid\":1,\"client\":\"ABCDEF\"}",
	    "{\"exe\":\"cad\",\"user\":\"a\",\"pid\":1,\"client\":\"" CLIENT_A
	    "\",\"host\":\"evil\"}",
	    "{\"exe\":\"cad\",\"user\":\"a\",\"pid\":1,\"client\":\"" CLIENT_A
	    "\",\"wait_ms\":3600001}",
	    "{\"exe\":\"\",\"user\":\"a\",\"pid\":1,\"client\":\"" CLIENT_A "\"}",
	    "{\"exe\":\"c\\nd\",\"user\":\"a\",\"pid\":1,\"client\":\"" CLIENT_A "\"}",
	    "{\"exe\":\"cad\",\"user\":\"a\",\"pid\":-1,\"client\":\"" CLIENT_A "\"}",
	    "{\"exe\":\"cad\",\"user\":\"a\",\"pid\":1,\"client\":\"" CLIENT_A
	    "\",\"version\":\"9.* \"}",
	    "{\"exe\":\"cad\",\"user\":\"a\",\"pid\":1,\"client\":\"" CLIENT_A "\",\"version\":9}",
	};
	const char good[] = "{\"exe\":\"cad\",\"user\":\"alice\",\"pid\":123,\"client\":\"" CLIENT_A
			    "\",\"wait_ms\":5000}";
	const char hb[] = "{\"client\":\"" CLIENT_A "\",\"leases\":[\"" CLIENT_B "\"]}";
	struct checkout_req co;
	struct heartbeat_req *h = malloc(sizeof(*h));
	struct checkin_req ci;
	char err[256];
	json_t *j;

	assert_non_null(h);
	for (size_t i = 0; i < sizeof(bad_checkout) / sizeof(bad_checkout[0]); i++) {
		assert_non_null(j = json_loads(bad_checkout[i], 0, NULL));
		assert_int_not_equal(proto_checkout_parse(j, &co, err, sizeof(err)), 0);
		json_decref(j);
	}
	assert_non_null(j = json_loads(good, 0, NULL));
	assert_int_equal(proto_checkout_parse(j, &co, err, sizeof(err)), 0);
	assert_string_equal(co.exe, "cad");
	assert_int_equal(co.pid, 123);
	assert_int_equal(co.wait_ms, 5000);
	assert_false(co.has_version);
	json_decref(j);
	assert_non_null(j = json_loads("{\"exe\":\"cad\",\"user\":\"a\",\"pid\":1,\"client\":"
				       "\"" CLIENT_A "\",\"version\":\"1:9.1~rc1-2\"}",
				       0, NULL));
	assert_int_equal(proto_checkout_parse(j, &co, err, sizeof(err)), 0);
	assert_true(co.has_version);
	assert_string_equal(co.version, "1:9.1~rc1-2");
	/* A checkout body is not a check-in body. */
	assert_int_not_equal(proto_checkin_parse(j, &ci, err, sizeof(err)), 0);
	json_decref(j);
	assert_non_null(j = json_loads(hb, 0, NULL));
	assert_int_equal(proto_heartbeat_parse(j, h, err, sizeof(err)), 0);
	assert_int_equal(h->nleases, 1);
	assert_string_equal(h->leases[0], CLIENT_B);
	json_decref(j);
	free(h);
}

/* An administrator's reclaim frees the license at once for the queue, leaves a note its
 * client reads at its next heartbeat (its own client only), and a lease granted by the
 * release is not taken back with it. */
static void test_reclaim(void **state)
{
	static const char config[] =
	    "{\"products\":[{\"name\":\"cad\",\"exe\":\"cad\",\"licenses\":1,\"allotment\":1,"
	    "\"enforce\":true,\"on_reclaim\":\"run\",\"reclaim_signal\":\"USR1\","
	    "\"idle_s\":300}],\"lease_ttl_ms\":30000}";
	struct lease_table *t = table_with(config);
	struct checkout_req a = req_for("cad", "alice", CLIENT_A, 0);
	struct checkout_req b = req_for("cad", "alice", CLIENT_B, 60000);
	struct checkout_out out;
	struct waiter wa = {0}, wb = {.granted = on_granted};
	struct reclaim_req r;
	char id[33];
	json_t *got, *note;

	granted_log.n = 0;
	assert_int_equal(lease_checkout(t, &a, "web1", WALL, 0, &wa, &out), 0);
	assert_int_equal(out.result, CHECKOUT_GRANTED);
	strcpy(id, out.lease->id);
	assert_int_equal(lease_checkout(t, &b, "web2", WALL, 0, &wb, &out), 0);
	assert_int_equal(out.result, CHECKOUT_QUEUED);
	assert_int_equal(lease_idle_limit(t, id), 300);
	/* idle, but not for long enough */
	assert_int_equal(lease_idle_check(t, id, 299, WALL + 10, 10), 0);

	memset(&r, 0, sizeof(r));
	strcpy(r.user, "alice");
	strcpy(r.by, "op1");
	assert_non_null(got = json_array());
	assert_int_equal(lease_reclaim(t, &r, WALL + 20, 20, got), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(got, 0), "lease")),
			    id);
	json_decref(got);
	/* the waiter (also alice's) got the license, and keeps it */
	assert_int_equal(granted_log.n, 1);
	assert_int_equal(t->nleases, 1);
	assert_string_equal(t->lhead->client, CLIENT_B);
	/* the run is recorded up to the reclaim */
	assert_string_equal(t->utail->id, id);
	assert_int_equal(t->utail->end, WALL + 20);
	assert_int_equal(lease_renew(t, id, CLIENT_A, "web1", WALL + 30, 30), SW_ENOTFOUND);
	assert_null(lease_reclaimed_json(t, id, CLIENT_B));
	assert_non_null(note = lease_reclaimed_json(t, id, CLIENT_A));
	assert_string_equal(json_string_value(json_object_get(note, "reason")), "reclaimed by op1");
	assert_string_equal(json_string_value(json_object_get(note, "on_reclaim")), "run");
	assert_string_equal(json_string_value(json_object_get(note, "signal")), "USR1");
	json_decref(note);

	/* the waiter's program idles past the limit: taken back with the reason */
	strcpy(id, t->lhead->id);
	assert_int_equal(lease_idle_check(t, id, 301, WALL + 40, 40), 1);
	assert_int_equal(t->nleases, 0);
	assert_non_null(note = lease_reclaimed_json(t, id, CLIENT_B));
	assert_non_null(
	    strstr(json_string_value(json_object_get(note, "reason")), "idle for 301 s"));
	json_decref(note);
	/* the notes last a minute past the leases' expiry, then go */
	lease_expire_due(t, WALL + 80000, 80000);
	assert_non_null(note = lease_reclaimed_json(t, id, CLIENT_B));
	json_decref(note);
	lease_expire_due(t, WALL + 120000, 120000);
	assert_null(lease_reclaimed_json(t, id, CLIENT_B));
	lease_table_free(t);
}

/* A note read back from the journal after a crash: kept while it lasts, a past one
 * dropped, a malformed one refused. */
static void test_reclaim_replayed(void **state)
{
	struct lease_table *t = table_with(cad_config);
	char err[256];
	json_t *rec, *note;

	assert_non_null(rec =
			    json_pack("{sI ss ss ss ss ss ss ss sI}", "seq", (json_int_t)1, "t",
				      "reclaimed", "lease", CLIENT_B, "client", CLIENT_A, "product",
				      "cad", "reason", "reclaimed by op1", "on_reclaim", "stop",
				      "signal", "", "until", (json_int_t)(WALL + 5000)));
	assert_int_equal(lease_apply(t, rec, WALL, 0, err, sizeof(err)), 0);
	assert_non_null(note = lease_reclaimed_json(t, CLIENT_B, CLIENT_A));
	assert_string_equal(json_string_value(json_object_get(note, "reason")), "reclaimed by op1");
	json_decref(note);
	/* the note's end is on the wall clock in the journal, on the monotonic one here */
	lease_expire_due(t, WALL + 6000, 6000);
	assert_null(lease_reclaimed_json(t, CLIENT_B, CLIENT_A));
	/* one already past when it is read is not kept */
	assert_int_equal(lease_apply(t, rec, WALL + 6000, 0, err, sizeof(err)), 0);
	assert_null(lease_reclaimed_json(t, CLIENT_B, CLIENT_A));
	json_object_set_new(rec, "client", json_string("not-an-id"));
	assert_int_not_equal(lease_apply(t, rec, WALL, 0, err, sizeof(err)), 0);
	json_decref(rec);
	lease_table_free(t);
}

/* A product's rules at one license server: a cap on a user, a reservation for a group,
 * each denial naming its rule, and the queue served by what the rules allow. */
static void test_rules(void **state)
{
	static const char config[] =
	    "{\"products\":[{\"name\":\"cad\",\"exe\":\"cad\",\"licenses\":5,\"allotment\":3,"
	    "\"enforce\":true,\"rules\":[{\"kind\":\"reserve\",\"count\":2,\"group\":\"eng\","
	    "\"allotment\":2},{\"kind\":\"max\",\"count\":1,\"user\":\"bob\",\"allotment\":1}]}],"
	    "\"groups\":[{\"name\":\"eng\",\"users\":[\"alice\",\"carol\"],\"hosts\":[]}],"
	    "\"lease_ttl_ms\":30000}";
	struct lease_table *t = table_with(config);
	struct checkout_req r;
	struct checkout_out out;
	struct waiter w = {0}, we = {.granted = on_granted};
	const char *open_users[] = {"dave", "frank"};
	char bob_lease[33];
	json_t *rep;

	granted_log.n = 0;
	r = req_for("cad", "bob", CLIENT_A, 0);
	assert_int_equal(lease_checkout(t, &r, "ws1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_GRANTED);
	strcpy(bob_lease, out.lease->id);
	/* bob's cap */
	assert_int_equal(lease_checkout(t, &r, "ws1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_non_null(strstr(out.reason, "max 1 for user bob"));
	/* the open pool (5 less 2 reserved: this server's share is 3) */
	for (int i = 0; i < 2; i++) {
		r = req_for("cad", open_users[i], CLIENT_A, 0);
		assert_int_equal(lease_checkout(t, &r, "ws2", WALL, 0, &w, &out), 0);
		assert_int_equal(out.result, CHECKOUT_GRANTED);
		assert_string_equal(out.lease->reserve, "");
	}
	/* erin is no member: what is free is eng's, and she waits */
	r = req_for("cad", "erin", CLIENT_B, 60000);
	assert_int_equal(lease_checkout(t, &r, "ws3", WALL, 0, &we, &out), 0);
	assert_int_equal(out.result, CHECKOUT_QUEUED);
	r.wait_ms = 0;
	assert_int_equal(lease_checkout(t, &r, "ws3", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_non_null(strstr(out.reason, "reserved for others (rule 'reserve 2 for group eng')"));
	/* eng's members take their reservation past her */
	for (int i = 0; i < 2; i++) {
		r = req_for("cad", i ? "carol" : "alice", CLIENT_A, 0);
		assert_int_equal(lease_checkout(t, &r, "ws4", WALL, 0, &w, &out), 0);
		assert_int_equal(out.result, CHECKOUT_GRANTED);
		assert_string_equal(out.lease->reserve, "eng");
	}
	r = req_for("cad", "alice", CLIENT_A, 0);
	assert_int_equal(lease_checkout(t, &r, "ws4", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_int_equal(t->nleases, 5);
	/* what each pool holds, as the poll reports it */
	assert_non_null(rep = json_object());
	lease_pools_report(t, t->products, rep);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(rep, "cad"), "in_use")),
			 3);
	assert_int_equal(json_integer_value(json_object_get(
			     json_object_get(rep, "cad/reserve:group:eng"), "in_use")),
			 2);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(rep, "cad/max:user:bob"), "in_use")),
	    1);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(rep, "cad"), "waiting")), 1);
	json_decref(rep);
	/* bob's license back: erin, waiting, gets it from the open pool */
	assert_int_equal(lease_checkin(t, bob_lease, CLIENT_A, "ws1", WALL + 10, 10), 0);
	assert_int_equal(granted_log.n, 1);
	assert_int_equal(t->nleases, 5);
	lease_table_free(t);
}

/* Loans: only under a borrow rule, no longer than it allows, no more at once than its
 * count; a loan needs no heartbeat, survives a replay by its end on the wall clock, and
 * its holder learns whether it stands. */
static void test_borrow(void **state)
{
	static const char config[] =
	    "{\"products\":[{\"name\":\"cad\",\"exe\":\"cad\",\"licenses\":3,\"allotment\":3,"
	    "\"enforce\":true,\"rules\":[{\"kind\":\"borrow\",\"count\":1,\"max_s\":3600,"
	    "\"allotment\":1}]},{\"name\":\"notes\",\"exe\":\"notes\",\"licenses\":1,"
	    "\"allotment\":1,\"enforce\":true}],\"lease_ttl_ms\":30000}";
	struct lease_table *t = table_with(config), *t2;
	struct borrow_req b = {.for_s = 1800, .uid = 1000};
	struct checkout_req r;
	struct checkout_out out;
	struct waiter w = {0};
	char id[33], err[256];
	json_t *rec, *note;

	strcpy(b.product, "notes");
	strcpy(b.client, CLIENT_A);
	strcpy(b.user, "alice");
	assert_int_equal(lease_borrow(t, &b, "laptop", WALL, 0, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_non_null(strstr(out.reason, "may not be borrowed"));
	strcpy(b.product, "cad");
	b.for_s = 7200;
	assert_int_equal(lease_borrow(t, &b, "laptop", WALL, 0, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_non_null(strstr(out.reason, "at most 1h"));
	b.for_s = 1800;
	assert_int_equal(lease_borrow(t, &b, "laptop", WALL, 0, &out), 0);
	assert_int_equal(out.result, CHECKOUT_GRANTED);
	assert_int_equal(out.lease->borrow_until, WALL + 1800000);
	strcpy(id, out.lease->id);
	/* the rule's count: one lent at once */
	strcpy(b.client, CLIENT_B);
	assert_int_equal(lease_borrow(t, &b, "desk", WALL, 0, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	assert_non_null(strstr(out.reason, "'borrow 1 for up to 1h'"));
	/* a loan is a license in use: two more for everyone */
	for (int i = 0; i < 2; i++) {
		r = req_for("cad", "bob", CLIENT_B, 0);
		assert_int_equal(lease_checkout(t, &r, "ws1", WALL, 0, &w, &out), 0);
		assert_int_equal(out.result, CHECKOUT_GRANTED);
	}
	assert_int_equal(lease_checkout(t, &r, "ws1", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	/* no heartbeat: past many ttls it stands, and a renewal does not shorten it */
	assert_int_equal(lease_renew(t, id, CLIENT_A, "laptop", WALL + 1000, 1000), 0);
	lease_expire_due(t, WALL + 600000, 600000);
	assert_non_null(lease_find(t, id));
	assert_int_equal(lease_borrow_state(t, id, CLIENT_A, "laptop", &note), BORROW_HELD);
	assert_int_equal(lease_borrow_state(t, id, CLIENT_A, "desk", &note), BORROW_GONE);
	/* replayed later, it ends when it ends by the wall clock */
	assert_non_null(
	    rec = json_loadb(lease_find(t, id)->text->s, lease_find(t, id)->text->len, 0, NULL));
	json_object_set_new(rec, "seq", json_integer(1));
	json_object_set_new(rec, "t", json_string("grant"));
	t2 = table_with(config);
	assert_int_equal(lease_apply(t2, rec, WALL + 1000000, 5, err, sizeof(err)), 0);
	assert_int_equal(lease_find(t2, id)->borrow_until, WALL + 1800000);
	assert_int_equal(lease_find(t2, id)->deadline, 5 + 800000);
	lease_table_free(t2);
	json_decref(rec);
	/* written off: its holder is told so until it would have ended */
	{
		struct reclaim_req rr = {0};

		strcpy(rr.lease, id);
		strcpy(rr.by, "op1");
		assert_non_null(rec = json_array());
		assert_int_equal(lease_reclaim(t, &rr, WALL + 2000, 2000, rec), 1);
		assert_int_equal(
		    json_integer_value(json_object_get(json_array_get(rec, 0), "borrowed_until")),
		    WALL + 1800000);
		json_decref(rec);
	}
	assert_int_equal(lease_borrow_state(t, id, CLIENT_A, "laptop", &note), BORROW_WRITTEN_OFF);
	assert_non_null(note);
	json_decref(note);
	lease_expire_due(t, WALL + 1900000, 1900000);
	assert_int_equal(lease_borrow_state(t, id, CLIENT_A, "laptop", &note), BORROW_GONE);
	lease_table_free(t);
	/* a product that is not enforced still lends no more than its rule allows */
	{
		static const char open_config[] =
		    "{\"products\":[{\"name\":\"cad\",\"exe\":\"cad\",\"licenses\":3,"
		    "\"allotment\":3,\"enforce\":false,\"rules\":[{\"kind\":\"borrow\","
		    "\"count\":1,\"max_s\":3600,\"allotment\":1}]}],\"lease_ttl_ms\":30000}";

		t = table_with(open_config);
		assert_int_equal(lease_borrow(t, &b, "laptop", WALL, 0, &out), 0);
		assert_int_equal(out.result, CHECKOUT_GRANTED);
		assert_int_equal(lease_borrow(t, &b, "desk", WALL, 0, &out), 0);
		assert_int_equal(out.result, CHECKOUT_DENIED);
		/* and ordinary runs of it are never denied */
		for (int i = 0; i < 5; i++) {
			r = req_for("cad", "bob", CLIENT_B, 0);
			assert_int_equal(lease_checkout(t, &r, "ws1", WALL, 0, &w, &out), 0);
			assert_int_equal(out.result, CHECKOUT_GRANTED);
		}
		lease_table_free(t);
	}
}

static void test_reclaim_bodies(void **state)
{
	static const char *bad[] = {
	    "{}",
	    "{\"product\":\"cad\"}",
	    "{\"lease\":\"ABC\"}",
	    "{\"user\":\"\"}",
	    "{\"user\":\"a\\nb\"}",
	    "{\"user\":\"a\",\"extra\":1}",
	    "{\"user\":7}",
	    "[]",
	};
	struct reclaim_req r;
	char err[256];
	json_t *j;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_non_null(j = json_loads(bad[i], JSON_DECODE_ANY, NULL));
		assert_int_not_equal(proto_reclaim_parse(j, &r, err, sizeof(err)), 0);
		json_decref(j);
	}
	assert_non_null(
	    j = json_loads("{\"host\":\"ws1\",\"product\":\"cad\",\"by\":\"op1\"}", 0, NULL));
	assert_int_equal(proto_reclaim_parse(j, &r, err, sizeof(err)), 0);
	assert_string_equal(r.host, "ws1");
	assert_string_equal(r.product, "cad");
	assert_string_equal(r.lease, "");
	json_decref(j);
}

static void test_revoked_serials(void **state)
{
	const char text[] = "{\"products\":[],\"lease_ttl_ms\":30000,\"revoked\":[\"0a1b2c\"]}";
	const char bad[] = "{\"products\":[],\"revoked\":[\"0A1B\"]}";
	struct lease_table *t = table_with(text);
	struct meter_config conf;

	assert_true(lease_revoked(t, "0a1b2c"));
	assert_false(lease_revoked(t, "0a1b2d"));
	assert_int_not_equal(lease_config_parse(bad, strlen(bad), &conf, NULL, 0), 0);
	/* A configuration without the list forgives nobody it does not name. */
	assert_int_equal(lease_config_parse(cad_config, strlen(cad_config), &conf, NULL, 0), 0);
	lease_configure(t, &conf, WALL, 0);
	lease_config_cleanup(&conf);
	assert_false(lease_revoked(t, "0a1b2c"));
	lease_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grant_then_deny),
	    cmocka_unit_test(test_version_patterns),
	    cmocka_unit_test(test_denial_names_the_share),
	    cmocka_unit_test(test_unenforced_never_denies),
	    cmocka_unit_test(test_checkin_ownership),
	    cmocka_unit_test(test_expiry_grants_fifo),
	    cmocka_unit_test(test_queue_bound),
	    cmocka_unit_test(test_config_refused),
	    cmocka_unit_test(test_allotment_raised_serves_queue),
	    cmocka_unit_test(test_request_bodies),
	    cmocka_unit_test(test_revoked_serials),
	    cmocka_unit_test(test_reclaim),
	    cmocka_unit_test(test_reclaim_bodies),
	    cmocka_unit_test(test_reclaim_replayed),
	    cmocka_unit_test(test_rules),
	    cmocka_unit_test(test_borrow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

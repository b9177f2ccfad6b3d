/* lib/product: the parser's refusals, the matching rule, and that the license server,
 * passive metering and the site server choose the same product for every program. */
#include "error.h"
#include "json.h"
#include "meter/meter.h"
#include "product.h"
#include "server/server.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* tests/unit/product_agent.c */
const char *test_passive_choose(const struct sw_product *const *v, size_t n, const char *exe,
				const char *build_id, const char *version, int *lookups);

/* server/metering.c's callers on the server that the choice does not use */
int dbq_push(struct server *s, unsigned bound_ms, dbq_run_fn run, dbq_done_fn done, void *arg)
{
	return SW_EINVAL;
}

uint64_t registry_generation(const struct server *s)
{
	return 0;
}

int registry_has_role(const struct system *sys, const char *role)
{
	return 0;
}

json_t *registry_revoked_list(const struct server *s)
{
	return json_array();
}

json_t *groups_read(struct sw_db *db, const char *name, int full, char *err, size_t errlen)
{
	return NULL;
}

static int parse_text(const char *text, struct sw_product *p, char *err, size_t errlen)
{
	json_t *j = json_loads(text, 0, NULL);
	int rc;

	assert_non_null(j);
	rc = sw_product_parse(j, p, err, errlen);
	json_decref(j);
	return rc;
}

static void test_parse_good(void **state)
{
	struct sw_product p;
	char err[256] = "";

	assert_int_equal(parse_text("{\"name\":\"cad9\",\"exe\":\"cad\",\"version\":\"9.*\","
				    "\"build_id\":\"0a1b\",\"hours\":\"22:00-06:00\","
				    "\"deny_users\":[\"eve\",\"mallory\"],\"deny_hosts\":[],"
				    "\"licenses\":5,\"allotment\":2,\"enforce\":true}",
				    &p, err, sizeof(err)),
			 0);
	assert_string_equal(p.name, "cad9");
	assert_string_equal(p.version, "9.*");
	assert_int_equal(p.hours_from, 22 * 60);
	assert_int_equal(p.hours_to, 6 * 60);
	assert_string_equal(p.deny_users, "eve,mallory");
	assert_string_equal(p.deny_hosts, "");
	assert_int_equal(p.licenses, 5);
	assert_int_equal(p.allotment, 2);
	assert_true(p.enforce);
	/* the least a product may say */
	assert_int_equal(
	    parse_text("{\"name\":\"a\",\"exe\":\"a\",\"licenses\":0}", &p, err, sizeof(err)), 0);
	assert_int_equal(p.hours_from, -1);
	assert_int_equal(p.allotment, -1);
	assert_false(p.enforce);
}

/* Each refusal with the text that must be refused and a word its sentence says. */
static const struct {
	const char *text, *why;
} refusals[] = {
    {"[]", "object"},
    {"{\"exe\":\"a\",\"licenses\":1}", "name"},
    {"{\"name\":\"a b\",\"exe\":\"a\",\"licenses\":1}", "name"},
    {"{\"name\":\"\",\"exe\":\"a\",\"licenses\":1}", "name"},
    {"{\"name\":\"a\",\"licenses\":1}", "exe"},
    {"{\"name\":\"a\",\"exe\":\"/usr/bin/a\",\"licenses\":1}", "exe"},
    {"{\"name\":\"a\",\"exe\":\"..\",\"licenses\":1}", "exe"},
    {"{\"name\":\"a\",\"exe\":\"\",\"licenses\":1}", "exe"},
    {"{\"name\":\"a\",\"exe\":3,\"licenses\":1}", "exe"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"version\":\"9 1\",\"licenses\":1}", "version"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"build_id\":\"XYZ\",\"licenses\":1}", "build_id"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"build_id\":\"abc\",\"licenses\":1}", "build_id"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"hours\":\"8-18\",\"licenses\":1}", "hours"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"hours\":\"25:00-26:00\",\"licenses\":1}", "hours"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"hours\":\"08:60-09:00\",\"licenses\":1}", "hours"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"hours\":\"08:00-09:00x\",\"licenses\":1}", "hours"},
    /* a window that starts where it ends: refused by the server, now by all */
    {"{\"name\":\"a\",\"exe\":\"a\",\"hours\":\"08:00-08:00\",\"licenses\":1}", "hours"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"deny_users\":\"eve\",\"licenses\":1}", "deny_users"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"deny_users\":[\"a b\"],\"licenses\":1}", "deny_users"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"deny_users\":[\"a,b\"],\"licenses\":1}", "deny_users"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"deny_users\":[1],\"licenses\":1}", "deny_users"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"deny_hosts\":[\"\"],\"licenses\":1}", "deny_hosts"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"deny_hosts\":null,\"licenses\":1}", "deny_hosts"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"on_reclaim\":\"pause\"}", "on_reclaim"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"reclaim_signal\":\"KILL\"}", "reclaim_signal"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"idle_s\":5}", "idle_s"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"rules\":[{\"kind\":\"reserve\","
     "\"count\":1,\"user\":\"u\"}]}",
     "reserved for a group"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"rules\":[{\"kind\":\"reserve\","
     "\"count\":2,\"group\":\"g\"}]}",
     "more than the product's"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":3,\"rules\":[{\"kind\":\"max\",\"count\":1,"
     "\"group\":\"g\"},{\"kind\":\"max\",\"count\":2,\"group\":\"g\"}]}",
     "two rules"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":3,\"rules\":[{\"kind\":\"limit\",\"count\":1,"
     "\"group\":\"g\"}]}",
     "reserve, max or borrow"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":3,\"rules\":[{\"kind\":\"max\",\"count\":1,"
     "\"group\":\"g\",\"user\":\"u\"}]}",
     "one group, user or host"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":3,\"rules\":[{\"kind\":\"max\",\"count\":0,"
     "\"host\":\"h\"}]}",
     "at least 1"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":3,\"rules\":[{\"kind\":\"max\",\"count\":1,"
     "\"user\":\"a b\"}]}",
     "not a valid name"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":3,\"rules\":[{\"kind\":\"borrow\",\"count\":1,"
     "\"max_s\":3600,\"group\":\"g\"}]}",
     "names no group"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":3,\"rules\":[{\"kind\":\"borrow\",\"count\":1,"
     "\"max_s\":30}]}",
     "longest loan"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":3,\"rules\":[{\"kind\":\"borrow\",\"count\":1}]}",
     "longest loan"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"idle_s\":604801}", "idle_s"},
    {"{\"name\":\"a\",\"exe\":\"a\"}", "licenses"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":-1}", "licenses"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":100000001}", "licenses"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":\"1\"}", "licenses"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"allotment\":-1}", "allotment"},
    {"{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1,\"enforce\":1}", "enforce"},
};

static void test_parse_refusals(void **state)
{
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		struct sw_product p;
		char err[256] = "";

		if (parse_text(refusals[i].text, &p, err, sizeof(err)) == 0)
			fail_msg("accepted %s", refusals[i].text);
		if (!strstr(err, refusals[i].why))
			fail_msg("%s: '%s' does not say %s", refusals[i].text, err,
				 refusals[i].why);
	}
}

static void test_parse_too_long(void **state)
{
	char text[2048], exe[300], err[256];
	struct sw_product p;

	memset(exe, 'x', 256);
	exe[256] = '\0';
	snprintf(text, sizeof(text), "{\"name\":\"a\",\"exe\":\"%s\",\"licenses\":1}", exe);
	assert_int_equal(parse_text(text, &p, err, sizeof(err)), SW_ETOOBIG);
	snprintf(text, sizeof(text),
		 "{\"name\":\"a\",\"exe\":\"a\",\"version\":\"%.65s\",\"licenses\":1}", exe);
	assert_int_equal(parse_text(text, &p, err, sizeof(err)), SW_ETOOBIG);
}

static void test_deny_list_bounds(void **state)
{
	json_t *j = json_pack("{ss ss si}", "name", "a", "exe", "a", "licenses", 1);
	json_t *names = json_array();
	struct sw_product p;
	char err[256], name[16];

	for (int i = 0; i < 65; i++) {
		snprintf(name, sizeof(name), "user%d", i);
		json_array_append_new(names, json_string(name));
	}
	json_object_set_new(j, "deny_users", names);
	assert_int_equal(sw_product_parse(j, &p, err, sizeof(err)), SW_EINVAL);
	assert_non_null(strstr(err, "at most 64"));
	json_array_remove(names, 64);
	assert_int_equal(sw_product_parse(j, &p, err, sizeof(err)), 0);
	assert_true(sw_product_list_has(p.deny_users, "user63"));
	json_decref(j);
}

static void test_validate(void **state)
{
	struct sw_product p;
	char err[256];

	sw_product_init(&p);
	strcpy(p.name, "cad");
	strcpy(p.exe, "cad");
	assert_int_equal(sw_product_validate(&p, err, sizeof(err)), 0);
	strcpy(p.hours, "08:00-18:00");
	assert_int_equal(sw_product_validate(&p, err, sizeof(err)), 0);
	assert_int_equal(p.hours_from, 480);
	assert_int_equal(p.hours_to, 1080);
	strcpy(p.deny_users, "a,,b");
	assert_int_equal(sw_product_validate(&p, err, sizeof(err)), SW_EINVAL);
	strcpy(p.deny_users, "a,b,");
	assert_int_equal(sw_product_validate(&p, err, sizeof(err)), SW_EINVAL);
	strcpy(p.deny_users, "a,b");
	assert_int_equal(sw_product_validate(&p, err, sizeof(err)), 0);
	strcpy(p.hours, "10:00-10:00");
	assert_int_equal(sw_product_validate(&p, err, sizeof(err)), SW_EINVAL);
}

static void test_list_and_hours(void **state)
{
	struct sw_product p;

	assert_true(sw_product_list_has("eve,mallory", "eve"));
	assert_true(sw_product_list_has("eve,mallory", "mallory"));
	assert_false(sw_product_list_has("eve,mallory", "mall"));
	assert_false(sw_product_list_has("eve,mallory", "eve,mallory"));
	assert_false(sw_product_list_has("eve,mallory", ""));
	assert_false(sw_product_list_has("", "eve"));
	sw_product_init(&p);
	assert_true(sw_product_hours_allow(&p, 0));
	p.hours_from = 22 * 60;
	p.hours_to = 6 * 60;
	assert_true(sw_product_hours_allow(&p, 23 * 60));
	assert_true(sw_product_hours_allow(&p, 5 * 60 + 59));
	assert_false(sw_product_hours_allow(&p, 6 * 60));
	assert_false(sw_product_hours_allow(&p, 12 * 60));
	p.hours_from = 8 * 60;
	p.hours_to = 18 * 60;
	assert_true(sw_product_hours_allow(&p, 8 * 60));
	assert_false(sw_product_hours_allow(&p, 18 * 60));
}

static void test_json_round_trip(void **state)
{
	struct sw_product p, q;
	char err[256];
	json_t *j;

	assert_int_equal(parse_text("{\"name\":\"cad\",\"exe\":\"cad\",\"version\":\"9.*\","
				    "\"hours\":\"8:00-18:00\",\"deny_hosts\":[\"kiosk1\"],"
				    "\"licenses\":5,\"enforce\":true}",
				    &p, err, sizeof(err)),
			 0);
	j = sw_product_json(&p);
	assert_non_null(j);
	/* the hours as given, the lists as lists, no allotment where none was given */
	assert_string_equal(json_string_value(json_object_get(j, "hours")), "8:00-18:00");
	assert_int_equal(json_array_size(json_object_get(j, "deny_users")), 0);
	assert_null(json_object_get(j, "allotment"));
	assert_int_equal(sw_product_parse(j, &q, err, sizeof(err)), 0);
	assert_memory_equal(&p, &q, sizeof(p));
	json_decref(j);
}

static void test_array_parse(void **state)
{
	struct sw_product **v;
	size_t n;
	char err[256];
	json_t *arr = json_loads("[{\"name\":\"a\",\"exe\":\"a\",\"licenses\":1},"
				 "{\"name\":\"a\",\"exe\":\"b\",\"licenses\":1}]",
				 0, NULL);

	assert_int_equal(sw_product_array_parse(arr, &v, &n, err, sizeof(err)), SW_EINVAL);
	assert_non_null(strstr(err, "named twice"));
	json_array_remove(arr, 1);
	assert_int_equal(sw_product_array_parse(arr, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	sw_product_array_free(v, n);
	json_decref(arr);
	arr = json_object();
	assert_int_equal(sw_product_array_parse(arr, &v, &n, err, sizeof(err)), SW_EINVAL);
	json_decref(arr);
	arr = json_array();
	for (int i = 0; i <= SW_PRODUCT_MAX; i++)
		json_array_append_new(
		    arr, json_pack("{ss ss si}", "name", "a", "exe", "a", "licenses", 1));
	assert_int_equal(sw_product_array_parse(arr, &v, &n, err, sizeof(err)), SW_ETOOBIG);
	json_decref(arr);
}

static struct sw_product mk(const char *name, const char *exe, const char *bid, const char *version)
{
	struct sw_product p;
	char err[256];

	sw_product_init(&p);
	snprintf(p.name, sizeof(p.name), "%s", name);
	snprintf(p.exe, sizeof(p.exe), "%s", exe);
	snprintf(p.build_id, sizeof(p.build_id), "%s", bid);
	snprintf(p.version, sizeof(p.version), "%s", version);
	assert_int_equal(sw_product_validate(&p, err, sizeof(err)), 0);
	return p;
}

static const char *choose(const struct sw_product *const *v, size_t n, const char *exe,
			  const char *bid, const char *version, unsigned *need)
{
	struct sw_program prog = {exe, bid, version};
	const struct sw_product *p = sw_product_match(v, n, &prog, need);

	return p ? p->name : NULL;
}

static void test_match_rules(void **state)
{
	struct sw_product ps[] = {mk("cad9", "cad", "", "9.*"), mk("cad91", "cad", "", "9.1*"),
				  mk("cad-any", "cad", "", ""), mk("notes", "notes", "0a0b", ""),
				  mk("zed", "zed", "", "")};
	const struct sw_product *v[] = {&ps[0], &ps[1], &ps[2], &ps[3], &ps[4]};
	unsigned need;

	assert_string_equal(choose(v, 5, "cad", "", "9.1-1", &need), "cad91");
	assert_string_equal(choose(v, 5, "cad", "", "9.0", &need), "cad9");
	assert_string_equal(choose(v, 5, "cad", "", "8.0", &need), "cad-any");
	/* no package owns it: only a product without a pattern can be it */
	assert_string_equal(choose(v, 5, "cad", "", "", &need), "cad-any");
	/* not looked up: a pattern would decide */
	assert_null(choose(v, 5, "cad", "", NULL, &need));
	assert_int_equal(need, SW_PRODUCT_NEED_VERSION);
	/* a renamed copy, by its build ID */
	assert_string_equal(choose(v, 5, "notes-old", "0a0b", "", &need), "notes");
	assert_null(choose(v, 5, "notes-old", "0c0d", "", &need));
	assert_int_equal(need, 0);
	assert_null(choose(v, 5, "notes-old", NULL, "", &need));
	assert_int_equal(need, SW_PRODUCT_NEED_BUILD_ID);
	/* named, but another product could be it by its build ID: that decides */
	assert_null(choose(v, 5, "zed", NULL, NULL, &need));
	assert_int_equal(need, SW_PRODUCT_NEED_BUILD_ID);
	assert_string_equal(choose(v, 5, "zed", "", NULL, &need), "zed");
	assert_null(choose(v, 5, "other", "", "1", &need));
	assert_int_equal(need, 0);
}

/* Equally specific products: the first by name, in whatever order the table is. */
static void test_match_tie_by_name(void **state)
{
	struct sw_product a = mk("alpha", "bar", "0a0a", ""), b = mk("beta", "foo", "", "");
	const struct sw_product *ab[] = {&a, &b}, *ba[] = {&b, &a};
	unsigned need;

	assert_string_equal(choose(ab, 2, "foo", "0a0a", "", &need), "alpha");
	assert_string_equal(choose(ba, 2, "foo", "0a0a", "", &need), "alpha");
}

/* Agreement: the meter, the agent's passive metering and the site server. */

static uint64_t rng = 0x5eed5eed12345678ULL;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

static const char *const exes[] = {"cad", "notes", "ed"};
static const char *const bids[] = {"", "0a0a", "0b0b", "abcd"};
static const char *const patterns[] = {"",  "",	     "9.*",   "9.1*",	"2.?",
				       "*", "1.0-1", "9.1-?", "[12].*", "?.1"};
static const char *const prog_exes[] = {"cad", "notes", "ed", "other"};
static const char *const prog_versions[] = {"", "9.1-1", "9.10", "2.1", "1.0-1", "3", "9.1"};

/* Configures the meter's table with products[idx[0..m)], as the server's JSON. */
static void meter_configure(struct lease_table *t, struct sw_product *const *v, const size_t *idx,
			    size_t m)
{
	json_t *arr = json_array(), *msg;
	struct meter_config conf;
	char err[256], *text;

	for (size_t i = 0; i < m; i++) {
		json_t *j = sw_product_json(v[idx[i]]);

		json_object_set_new(j, "allotment", json_integer(1));
		json_array_append_new(arr, j);
	}
	msg = json_pack("{so}", "products", arr);
	text = sw_json_dump(msg);
	json_decref(msg);
	if (lease_config_parse(text, strlen(text), &conf, err, sizeof(err)))
		fail_msg("%s: %s", text, err);
	free(text);
	lease_configure(t, &conf, 0, 0);
	lease_config_cleanup(&conf);
}

static void shuffle(size_t *order, size_t n)
{
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	for (size_t i = n; i > 1; i--) {
		size_t k = rnd((unsigned)i), x = order[i - 1];

		order[i - 1] = order[k];
		order[k] = x;
	}
}

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void test_all_three_agree(void **state)
{
	size_t cases = 0, matched = 0;

	for (int table = 0; table < 400; table++) {
		struct sw_product ps[8], *v[8];
		const struct sw_product *byname[8], *shuffled[8];
		size_t n = 1 + rnd(8), order[8];
		struct lease_table *t;

		/* named p0..p7, as the server holds and sends them: by name */
		for (size_t i = 0; i < n; i++) {
			char name[8];

			snprintf(name, sizeof(name), "p%zu", i);
			ps[i] = mk(name, exes[rnd(3)], bids[rnd(4)], patterns[rnd(10)]);
			v[i] = &ps[i];
			byname[i] = &ps[i];
		}
		shuffle(order, n);
		for (size_t i = 0; i < n; i++)
			shuffled[i] = &ps[order[i]];
		/* The meter is configured twice: the products it knew first keep their
		 * place, so its table is in another order than the server's. */
		t = lease_table_new();
		assert_non_null(t);
		meter_configure(t, v, order, 1 + rnd((unsigned)n));
		{
			size_t all[8];

			for (size_t i = 0; i < n; i++)
				all[i] = i;
			meter_configure(t, v, all, n);
		}
		for (int k = 0; k < 10; k++, cases++) {
			const char *exe = prog_exes[rnd(4)], *bid = bids[rnd(4)];
			const char *version = prog_versions[rnd(7)];
			struct checkout_req r;
			struct product *mp;
			const char *lib, *meter, *agent, *server;
			unsigned need;
			int need_version, lookups = 0;
			json_t *rec;

			lib = choose(byname, n, exe, bid, version, &need);
			assert_int_equal(need, 0);
			memset(&r, 0, sizeof(r));
			snprintf(r.exe, sizeof(r.exe), "%s", exe);
			snprintf(r.build_id, sizeof(r.build_id), "%s", bid);
			snprintf(r.version, sizeof(r.version), "%s", version);
			r.has_version = 1;
			mp = lease_product_for(t, &r, &need_version);
			meter = mp ? mp->def.name : NULL;
			assert_false(need_version);
			agent = test_passive_choose(shuffled, n, exe, bid, version, &lookups);
			rec = json_pack("{ss ss ss}", "exe", exe, "build_id", bid, "version",
					version);
			server = metering_attribute(byname, n, rec);
			json_decref(rec);
			if (!same(lib, meter) || !same(lib, agent) || !same(lib, server))
				fail_msg("table %d program %s/%s/%s: lib %s meter %s agent %s "
					 "server %s",
					 table, exe, bid, version, lib ? lib : "-",
					 meter ? meter : "-", agent ? agent : "-",
					 server ? server : "-");
			matched += lib != NULL;
			/* a meter's client that has not said its version is asked for it
			 * exactly when the library would need it */
			r.has_version = 0;
			r.version[0] = '\0';
			mp = lease_product_for(t, &r, &need_version);
			choose(byname, n, exe, bid, NULL, &need);
			assert_int_equal(need_version, (need & SW_PRODUCT_NEED_VERSION) != 0);
			assert_true(mp == NULL || !need_version);
			assert_true(lookups <= 2);
		}
		lease_table_free(t);
	}
	assert_int_equal(cases, 4000);
	/* the programs were not all strangers */
	assert_true(matched > cases / 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_good),	    cmocka_unit_test(test_parse_refusals),
	    cmocka_unit_test(test_parse_too_long),  cmocka_unit_test(test_deny_list_bounds),
	    cmocka_unit_test(test_validate),	    cmocka_unit_test(test_list_and_hours),
	    cmocka_unit_test(test_json_round_trip), cmocka_unit_test(test_array_parse),
	    cmocka_unit_test(test_match_rules),	    cmocka_unit_test(test_match_tie_by_name),
	    cmocka_unit_test(test_all_three_agree),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Message parsers: valid messages pass, every malformed field is refused. */
#include "error.h"
#include "json.h"
#include "proto.h"
#include "strmap.h"
#include "util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static json_t *parse(const char *text)
{
	json_t *j = NULL;

	assert_int_equal(sw_json_parse_object(text, strlen(text), &j, NULL, 0), 0);
	return j;
}

static void test_token_split(void **state)
{
	char secret[SW_TOKEN_SECRET_HEX + 1], pin[SW_TOKEN_PIN_HEX + 1];
	const char *good = "0123456789abcdef0123456789abcdef.fedcba9876543210fedcba9876543210";

	assert_int_equal(sw_proto_token_split(good, secret, pin), 0);
	assert_string_equal(secret, "0123456789abcdef0123456789abcdef");
	assert_string_equal(pin, "fedcba9876543210fedcba9876543210");
	assert_int_equal(sw_proto_token_split("", secret, pin), SW_EINVAL);
	assert_int_equal(sw_proto_token_split("0123456789abcdef0123456789abcdef-fedcba9876543210"
					      "fedcba9876543210",
					      secret, pin),
			 SW_EINVAL);
	assert_int_equal(sw_proto_token_split("0123456789ABCDEF0123456789abcdef.fedcba9876543210"
					      "fedcba9876543210",
					      secret, pin),
			 SW_EINVAL);
	assert_int_equal(sw_proto_token_split("0123456789abcdef0123456789abcdef.fedcba9876543210"
					      "fedcba98765432100",
					      secret, pin),
			 SW_EINVAL);
}

static void test_enroll(void **state)
{
	struct sw_enroll_req e;
	char err[200];
	json_t *j;

	j = parse("{\"token\":\"t\",\"name\":\"web-1.example\",\"csr\":\"c\","
		  "\"address\":\"[::1]:9001\"}");
	assert_int_equal(sw_proto_enroll_parse(j, &e, err, sizeof(err)), 0);
	assert_string_equal(e.name, "web-1.example");
	json_decref(j);

	const char *bad[] = {
	    "{\"name\":\"a\",\"csr\":\"c\",\"address\":\"h:1\"}",
	    "{\"token\":1,\"name\":\"a\",\"csr\":\"c\",\"address\":\"h:1\"}",
	    "{\"token\":\"t\",\"name\":\"../a\",\"csr\":\"c\",\"address\":\"h:1\"}",
	    "{\"token\":\"t\",\"name\":\"\",\"csr\":\"c\",\"address\":\"h:1\"}",
	    "{\"token\":\"t\",\"name\":\"a\",\"csr\":\"c\",\"address\":\"h\"}",
	    "{\"token\":\"t\",\"name\":\"a\",\"csr\":\"c\",\"address\":\"h:99999\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = parse(bad[i]);
		assert_int_not_equal(sw_proto_enroll_parse(j, &e, err, sizeof(err)), 0);
		assert_true(strlen(err) > 0);
		json_decref(j);
	}
}

static void test_heartbeat_keeps_only_known_facts(void **state)
{
	struct sw_heartbeat hb;
	char err[200];
	json_t *j;

	j = parse("{\"version\":\"1.0\",\"address\":\"127.0.0.1:9\",\"facts\":{\"cpus\":4,"
		  "\"hostname\":\"h\",\"evil\":\"x\"}}");
	assert_int_equal(sw_proto_heartbeat_parse(j, &hb, err, sizeof(err)), 0);
	assert_int_equal(json_integer_value(json_object_get(hb.facts, "cpus")), 4);
	assert_null(json_object_get(hb.facts, "evil"));
	json_decref(hb.facts);
	json_decref(j);

	const char *bad[] = {
	    "{\"version\":\"1\",\"address\":\"a:1\"}",
	    "{\"version\":\"1\",\"address\":\"a:1\",\"facts\":[]}",
	    "{\"version\":\"1\",\"address\":\"a:1\",\"facts\":{\"cpus\":\"4\"}}",
	    "{\"version\":\"1\",\"address\":\"a:1\",\"facts\":{\"cpus\":-4}}",
	    "{\"version\":2,\"address\":\"a:1\",\"facts\":{}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = parse(bad[i]);
		assert_int_not_equal(sw_proto_heartbeat_parse(j, &hb, err, sizeof(err)), 0);
		assert_null(hb.facts);
		json_decref(j);
	}
}

/* A poll may carry the heartbeat; one with no address (the agent listens nowhere) is
 * whole, and a bad one refuses the poll. */
static void test_poll_heartbeat(void **state)
{
	struct sw_poll p;
	char err[200];
	json_t *j;

	j = parse("{\"hold_ms\":500,\"heartbeat\":{\"version\":\"1.0\",\"facts\":{\"cpus\":2}}}");
	assert_int_equal(sw_proto_poll_parse(j, &p, err, sizeof(err)), 0);
	assert_true(p.has_heartbeat);
	assert_null(p.heartbeat.address);
	assert_int_equal(json_integer_value(json_object_get(p.heartbeat.facts, "cpus")), 2);
	sw_proto_heartbeat_clear(&p.heartbeat);
	json_decref(j);

	j = parse("{\"hold_ms\":500}");
	assert_int_equal(sw_proto_poll_parse(j, &p, err, sizeof(err)), 0);
	assert_false(p.has_heartbeat);
	json_decref(j);

	const char *bad[] = {
	    "{\"heartbeat\":[]}",
	    "{\"heartbeat\":{\"version\":\"1\",\"facts\":[]}}",
	    "{\"heartbeat\":{\"version\":\"1\",\"address\":\"nowhere\",\"facts\":{}}}",
	    "{\"hold_ms\":-1,\"heartbeat\":{\"version\":\"1\",\"facts\":{}}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = parse(bad[i]);
		assert_int_not_equal(sw_proto_poll_parse(j, &p, err, sizeof(err)), 0);
		assert_false(p.has_heartbeat);
		assert_null(p.heartbeat.facts);
		json_decref(j);
	}
}

static void test_token_request(void **state)
{
	struct sw_token_req t;
	json_t *j = parse("{}");

	assert_int_equal(sw_proto_token_req_parse(j, &t, NULL, 0), 0);
	assert_int_equal(t.ttl_s, 3600);
	assert_int_equal(t.uses, 1);
	json_decref(j);
	j = parse("{\"ttl\":0}");
	assert_int_equal(sw_proto_token_req_parse(j, &t, NULL, 0), SW_EINVAL);
	json_decref(j);
	j = parse("{\"ttl\":99999999999}");
	assert_int_equal(sw_proto_token_req_parse(j, &t, NULL, 0), SW_EINVAL);
	json_decref(j);
	j = parse("{\"ttl\":600,\"uses\":100000}");
	assert_int_equal(sw_proto_token_req_parse(j, &t, NULL, 0), 0);
	assert_int_equal(t.ttl_s, 600);
	assert_int_equal(t.uses, 100000);
	json_decref(j);
	/* none, more than the cap, not a whole number, not a number */
	for (const char **b = (const char *[]){"{\"uses\":0}", "{\"uses\":-1}", "{\"uses\":100001}",
					       "{\"uses\":2.5}", "{\"uses\":\"3\"}", NULL};
	     *b; b++) {
		j = parse(*b);
		assert_int_equal(sw_proto_token_req_parse(j, &t, NULL, 0), SW_EINVAL);
		json_decref(j);
	}
}

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_upgrade_requests(void **state)
{
	struct sw_upgrade_req u;
	struct sw_stage_req st;
	char err[200];
	json_t *j = parse(
	    "{\"package\":\"7d26d1161fbe49f4ba3d46aa6aaf91558fff9db87501ba12f3924b98de4dc34b\"}");

	assert_int_equal(sw_proto_upgrade_req_parse(j, &u, err, sizeof(err)), 0);
	assert_int_equal(u.parallel, 5);
	assert_int_equal(u.stop_timeout_ms, 30000);
	assert_int_equal(u.max_failures, -1);
	assert_string_equal(u.on_stuck, "defer");
	json_decref(j);
	static const char *const bad_runs[] = {
	    "{}",
	    "{\"package\":\"p.pkg\"}",
	    /* a path on the server's disk, absolute or not, is never a package */
	    "{\"package\":\"/tmp/p.pkg\"}",
	    "{\"package\":\"/etc/shadow\"}",
	    "{\"package\":\"../7d26d1161fbe49f4ba3d46aa6aaf91558fff9db87501ba12f3924b98de4dc34b\"}",
	    "{\"package\":\"7D26D1161FBE49F4BA3D46AA6AAF91558FFF9DB87501BA12F3924B98DE4DC34B\"}",
	    "{\"package\":\"7d26d1161fbe49f4ba3d46aa6aaf91558fff9db87501ba12f3924b98de4dc34b."
	    "pkg\"}",
	    "{\"package\":\"7d26d1161fbe49f4ba3d46aa6aaf91558fff9db87501ba12f3924b98de4dc34b\","
	    "\"parallel\":0}",
	    "{\"package\":\"7d26d1161fbe49f4ba3d46aa6aaf91558fff9db87501ba12f3924b98de4dc34b\","
	    "\"stop_timeout_ms\":5}",
	    "{\"package\":\"7d26d1161fbe49f4ba3d46aa6aaf91558fff9db87501ba12f3924b98de4dc34b\","
	    "\"on_stuck\":\"ignore\"}",
	    "{\"package\":\"7d26d1161fbe49f4ba3d46aa6aaf91558fff9db87501ba12f3924b98de4dc34b\","
	    "\"max_failures\":-2}",
	    "{\"package\":\"7d26d1161fbe49f4ba3d46aa6aaf91558fff9db87501ba12f3924b98de4dc34b\","
	    "\"strict\":1}",
	};
	for (size_t i = 0; i < sizeof(bad_runs) / sizeof(bad_runs[0]); i++) {
		j = parse(bad_runs[i]);
		assert_int_not_equal(sw_proto_upgrade_req_parse(j, &u, err, sizeof(err)), 0);
		json_decref(j);
	}
	j = parse("{\"version\":\"9.0.0\",\"sha256\":\"" HEX64 "\",\"size\":10,"
		  "\"url\":\"https://h:1/v1/packages/x\"}");
	assert_int_equal(sw_proto_stage_req_parse(j, &st, err, sizeof(err)), 0);
	assert_int_equal(st.size, 10);
	json_decref(j);
	static const char *const bad_stages[] = {
	    "{\"version\":\"../x\",\"sha256\":\"" HEX64 "\",\"size\":1,\"url\":\"https://h\"}",
	    "{\"version\":\"1\",\"sha256\":\"ABC\",\"size\":1,\"url\":\"https://h\"}",
	    "{\"version\":\"1\",\"sha256\":\"" HEX64 "\",\"size\":0,\"url\":\"https://h\"}",
	    "{\"version\":\"1\",\"sha256\":\"" HEX64 "\",\"size\":1,\"url\":\"http://h\"}",
	};
	for (size_t i = 0; i < sizeof(bad_stages) / sizeof(bad_stages[0]); i++) {
		j = parse(bad_stages[i]);
		assert_int_equal(sw_proto_stage_req_parse(j, &st, err, sizeof(err)), SW_EINVAL);
		json_decref(j);
	}
}

static void test_json_object_only(void **state)
{
	json_t *j;
	char err[200];

	assert_int_equal(sw_json_parse_object("[]", 2, &j, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_json_parse_object("{\"a\":1,\"a\":2}", 13, &j, err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(sw_json_parse_object("", 0, &j, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_json_parse_object("{\"a\":\"\\u0000\"}", 13, &j, err, sizeof(err)),
			 SW_EINVAL);
	assert_null(j);
}

static void test_util(void **state)
{
	char host[64];
	unsigned port;

	assert_int_equal(sw_hostport_parse("[::1]:80", host, sizeof(host), &port, 0, NULL, 0), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 80);
	assert_int_equal(sw_hostport_parse("::1:80", host, sizeof(host), &port, 0, NULL, 0),
			 SW_EINVAL);
	assert_int_equal(sw_hostport_parse("h:0", host, sizeof(host), &port, 0, NULL, 0),
			 SW_EINVAL);
	assert_int_equal(sw_hostport_parse("h:0", host, sizeof(host), &port, 1, NULL, 0), 0);
	assert_true(sw_name_valid("web1.example-2_x"));
	assert_false(sw_name_valid("-x"));
	assert_false(sw_name_valid("a/b"));
	assert_true(sw_consttime_eq("abc", "abc"));
	assert_false(sw_consttime_eq("abc", "abd"));
	assert_false(sw_consttime_eq("abc", "ab"));
}

/* Every state's name reads back as that state; anything else, and NULL, is unknown. */
static void test_revoked(void **state)
{
	static const char *bad[] = {
	    "{}",  "[\"ABCD\"]",     "[\"\"]",
	    "[7]", "[\"a1\", null]", "[\"0123456789abcdef0123456789abcdef012345678\"]"};
	struct sw_strmap *m = NULL;
	json_t *j;

	(void)state;
	assert_int_equal(sw_proto_revoked_parse(NULL, &m, NULL, 0), 0);
	assert_null(m);
	j = json_loads("[\"0a1b\", \"ff\"]", 0, NULL);
	assert_int_equal(sw_proto_revoked_parse(j, &m, NULL, 0), 0);
	assert_non_null(sw_strmap_get(m, "0a1b"));
	assert_null(sw_strmap_get(m, "0a1c"));
	sw_strmap_free(m);
	json_decref(j);
	for (size_t i = 0; i < SW_ARRAY_LEN(bad); i++) {
		char err[200] = "";

		j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		assert_non_null(j);
		assert_int_not_equal(sw_proto_revoked_parse(j, &m, err, sizeof(err)), 0);
		assert_true(err[0]);
		sw_strmap_free(m);
		json_decref(j);
	}
}

static void test_states(void **state)
{
	(void)state;
	for (int i = SW_SVC_STOPPED; i < SW_SVC_UNKNOWN; i++)
		assert_int_equal(sw_svc_state_parse(sw_svc_state_name((enum sw_svc_state)i)), i);
	for (int i = SW_RUN_RUNNING; i < SW_RUN_UNKNOWN; i++)
		assert_int_equal(sw_run_state_parse(sw_run_state_name((enum sw_run_state)i)), i);
	for (int i = SW_SYS_PENDING; i < SW_SYS_UNKNOWN; i++)
		assert_int_equal(sw_sys_state_parse(sw_sys_state_name((enum sw_sys_state)i)), i);
	assert_string_equal(sw_svc_state_name(SW_SVC_RUNNING), "running");
	assert_string_equal(sw_run_state_name(SW_RUN_ROLLED_BACK), "rolled-back");
	assert_string_equal(sw_sys_state_name(SW_SYS_REMOVED), "removed");
	assert_int_equal(sw_svc_state_parse("Running"), SW_SVC_UNKNOWN);
	assert_int_equal(sw_svc_state_parse("unknown"), SW_SVC_UNKNOWN);
	assert_int_equal(sw_svc_state_parse(NULL), SW_SVC_UNKNOWN);
	assert_int_equal(sw_run_state_parse("pending"), SW_RUN_UNKNOWN);
	assert_int_equal(sw_sys_state_parse(""), SW_SYS_UNKNOWN);
	assert_string_equal(sw_svc_state_name((enum sw_svc_state)99), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_token_split),
	    cmocka_unit_test(test_enroll),
	    cmocka_unit_test(test_heartbeat_keeps_only_known_facts),
	    cmocka_unit_test(test_poll_heartbeat),
	    cmocka_unit_test(test_token_request),
	    cmocka_unit_test(test_upgrade_requests),
	    cmocka_unit_test(test_json_object_only),
	    cmocka_unit_test(test_util),
	    cmocka_unit_test(test_states),
	    cmocka_unit_test(test_revoked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

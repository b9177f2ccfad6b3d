/* lib/group: which user and host names a group takes, the members a request names
 * checked whole, and every refusal saying what to do. */
#include "error.h"
#include "group.h"
#include "json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_user_names(void **state)
{
	static const char *const good[] = {
	    "alice",
	    "bob.smith",
	    "j\xc3\xb6rg",
	    "DOMAIN\\user",
	    "user@example.org",
	    "_svc",
	    "-x",
	    "0123456789012345678901234567890123456789012345678901234567890123", /* 64 */
	};
	static const char *const bad[] = {
	    "",
	    "a b",
	    "a,b",
	    "a/b",
	    "a\tb",
	    "a\nb",
	    "\x1b[31m",
	    "a\x7f",
	    "a\xc2\x85" /* NEL, C1 */,
	    "a\xc2\xa0" /* no-break space */,
	    "a\xe2\x80\xa8" /* line separator */,
	    "a\xff",
	    "a\xc3",
	    "\xed\xa0\x80" /* a surrogate */,
	    "\xc0\xaf" /* overlong '/' */,
	    "01234567890123456789012345678901234567890123456789012345678901234", /* 65 */
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(sw_group_user_valid(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(sw_group_user_valid(bad[i]));
}

static int check(const char *text, const json_t **users, const json_t **hosts, char *err,
		 size_t errlen, json_t **j)
{
	assert_int_equal(sw_json_parse_object(text, strlen(text), j, err, errlen), 0);
	return sw_group_members_check(*j, users, hosts, err, errlen);
}

static void test_members(void **state)
{
	const json_t *users, *hosts;
	char err[256];
	json_t *j;

	assert_int_equal(check("{}", &users, &hosts, err, sizeof(err), &j), 0);
	assert_null(users);
	assert_null(hosts);
	json_decref(j);
	assert_int_equal(check("{\"users\": [\"a\", \"b\"], \"hosts\": [\"ws1\"]}", &users, &hosts,
			       err, sizeof(err), &j),
			 0);
	assert_int_equal(json_array_size(users), 2);
	assert_int_equal(json_array_size(hosts), 1);
	json_decref(j);
}

/* Each refusal: its code, the sentence, and nothing handed back. */
static void refused(const char *text, const char *sentence)
{
	const json_t *users = (const json_t *)1, *hosts = (const json_t *)1;
	char err[256] = "";
	json_t *j;

	assert_int_equal(check(text, &users, &hosts, err, sizeof(err), &j), SW_EINVAL);
	if (!strstr(err, sentence))
		fail_msg("%s: '%s' does not say '%s'", text, err, sentence);
	assert_null(users);
	assert_null(hosts);
	json_decref(j);
}

static void test_refusals(void **state)
{
	refused("{\"users\": [\"a b\"]}", "user name 'a b' must be 1-64 characters without "
					  "spaces, commas, slashes or control characters");
	refused("{\"users\": [\"\\u001b[2J\"]}", "user name '\\x1b[2J'");
	refused("{\"hosts\": [\"-ws\"]}", "host name '-ws' must be a system's name");
	refused("{\"users\": [\"ok\"], \"hosts\": [\"a/b\"]}", "host name 'a/b'");
	refused("{\"users\": \"alice\"}", "'users' must be a list of user names");
	refused("{\"hosts\": [1]}", "'hosts' must hold only names in quotes; item 1 is not");
	refused("{\"users\": [], \"owner\": \"x\"}",
		"unknown field 'owner': give a group's members as \"users\" and \"hosts\"");
}

static void test_bounds(void **state)
{
	json_t *j = json_object(), *u = json_array(), *h = json_array();
	const json_t *users, *hosts;
	char err[256], name[16];

	for (int i = 0; i < SW_GROUP_MEMBERS_MAX; i++) {
		snprintf(name, sizeof(name), "u%d", i);
		json_array_append_new(u, json_string(name));
	}
	json_object_set_new(j, "users", u);
	assert_int_equal(sw_group_members_check(j, &users, &hosts, err, sizeof(err)), 0);
	/* one more member, of either kind, is past what a group holds */
	json_array_append_new(h, json_string("ws1"));
	json_object_set_new(j, "hosts", h);
	assert_int_equal(sw_group_members_check(j, &users, &hosts, err, sizeof(err)), SW_EINVAL);
	assert_non_null(strstr(err, "a group holds at most 10000 members"));
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_user_names),
	    cmocka_unit_test(test_members),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

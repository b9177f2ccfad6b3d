/* Configuration parsing: lookups, bounds, unknown keys, bad files. */
#include "conf.h"
#include "error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static const char *const known[] = {"site.code", "server.listen", "server.heartbeat_interval",
				    NULL};

static void test_lookup(void **state)
{
	const char text[] = "# comment\n[site]\ncode = ABC\n\n[server]\nlisten = 127.0.0.1:1\n"
			    "heartbeat_interval = 15\n";
	struct sw_conf *c;
	unsigned v;

	assert_int_equal(sw_conf_parse(text, strlen(text), &c, NULL, 0), 0);
	assert_int_equal(sw_conf_check(c, known, NULL, 0), 0);
	assert_string_equal(sw_conf_get(c, "site", "code", "x"), "ABC");
	assert_string_equal(sw_conf_get(c, "site", "missing", "def"), "def");
	assert_int_equal(sw_conf_get_uint(c, "server", "heartbeat_interval", 1, 1, 60, &v, NULL, 0),
			 0);
	assert_int_equal(v, 15);
	assert_int_equal(sw_conf_get_uint(c, "server", "absent", 7, 1, 60, &v, NULL, 0), 0);
	assert_int_equal(v, 7);
	sw_conf_free(c);
}

static void test_bounds_and_unknown(void **state)
{
	const char text[] = "[server]\nheartbeat_interval = 99999\nlistne = x\n";
	struct sw_conf *c;
	char err[200];
	unsigned v;

	assert_int_equal(sw_conf_parse(text, strlen(text), &c, NULL, 0), 0);
	assert_int_equal(
	    sw_conf_get_uint(c, "server", "heartbeat_interval", 1, 1, 3600, &v, err, sizeof(err)),
	    SW_EINVAL);
	assert_non_null(strstr(err, "1 to 3600"));
	assert_int_equal(sw_conf_check(c, known, err, sizeof(err)), SW_EINVAL);
	assert_non_null(strstr(err, "listne"));
	sw_conf_free(c);
}

static void test_bad_text(void **state)
{
	const char *bad[] = {"[server\nx = 1\n", "just words\n", "[a]\nx = 1\nx = 2\n"};
	const char nul[] = "[a]\nx = 1\0\n";
	struct sw_conf *c = (struct sw_conf *)1;
	char err[200];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(sw_conf_parse(bad[i], strlen(bad[i]), &c, err, sizeof(err)),
				 SW_EINVAL);
		assert_null(c);
		assert_true(strlen(err) > 0);
	}
	assert_int_equal(sw_conf_parse(nul, sizeof(nul) - 1, &c, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_conf_parse("x", SW_CONF_MAX + 1, &c, err, sizeof(err)), SW_ETOOBIG);
	assert_int_equal(sw_conf_load("/nonexistent/siteward.conf", &c, err, sizeof(err)),
			 SW_ENOTFOUND);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lookup),
	    cmocka_unit_test(test_bounds_and_unknown),
	    cmocka_unit_test(test_bad_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

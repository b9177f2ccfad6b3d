/* The collection language: what it reads, how it judges a system, and what it refuses
 * with where and why. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collection.h"
#include "error.h"

/* A system: web1, bookworm, 16 GiB, 4 processors, libssl3 3.0.11-1~deb12u2, the test
 * role; and one with nothing reported but its name. */
static const char *pkg(void *arg, const char *name)
{
	(void)arg;
	if (strcmp(name, "libssl3") == 0)
		return "3.0.11-1~deb12u2";
	if (strcmp(name, "openssh-server") == 0)
		return "1:9.2p1-2+deb12u3";
	return NULL;
}

static int fits(const char *text, int bare)
{
	json_t *hw = json_pack("{s{ss ss ss} s{sI} s{sI} s{ss ss}}", "os", "id", "debian",
			       "version", "12", "codename", "bookworm", "memory", "total",
			       (json_int_t)16 * 1024 * 1024 * 1024, "cpu", "count", (json_int_t)4,
			       "kernel", "release", "6.1.0-28-amd64", "machine", "x86_64");
	json_t *roles = json_pack("[s]", "test"),
	       *facts = json_pack("{sI}", "disk_free", (json_int_t)5000000000);
	struct sw_coll_facts f = {bare ? "lab-3" : "web1", roles, facts, hw, pkg, NULL};
	struct sw_coll_facts none = {"lab-3", NULL, NULL, NULL, NULL, NULL};
	struct sw_coll_expr *e = NULL;
	char err[256];
	int r;

	if (sw_coll_parse(text, &e, err, sizeof(err)))
		fail_msg("%s: %s", text, err);
	r = sw_coll_match(e, bare ? &none : &f);
	sw_coll_free(e);
	json_decref(hw);
	json_decref(roles);
	json_decref(facts);
	return r;
}

static void test_judged(void **state)
{
	(void)state;
	assert_true(fits("package:libssl3", 0));
	assert_true(fits("package:libssl3 < 3.0.15-1~deb12u1", 0));
	assert_false(fits("package:libssl3 >= 3.0.15-1~deb12u1", 0));
	assert_true(fits("package:openssh-server > 9.9", 0)); /* the epoch decides */
	assert_false(fits("package:libfoo", 0));
	assert_false(fits("package:libfoo < 1", 0));
	assert_true(fits("os.codename = bookworm and memory >= 8G and cpus > 2", 0));
	assert_false(fits("memory > 16G", 0));
	assert_true(fits("memory = 16384M", 0));
	assert_true(fits("role = test and not role = software-metering", 0));
	assert_true(fits("role != software-metering", 0));
	assert_true(fits("name ~ \"web*\" or name = other", 0));
	assert_true(fits("(os.id = ubuntu or os.id = debian) and kernel ~ 6.1.*", 0));
	assert_true(fits("arch = x86_64 and disk_free >= 4G", 0));
	assert_true(fits("NOT (os.version != 12)", 0));
	/* a system that reported nothing: no condition on a fact holds, = or != */
	assert_false(fits("os.codename = bookworm", 1));
	assert_false(fits("os.codename != bookworm", 1));
	assert_false(fits("memory < 1G", 1));
	assert_true(fits("not os.codename = bookworm", 1));
	assert_true(fits("name = lab-3", 1));
	assert_false(fits("role = test", 1));
}

static void refused(const char *text, const char *why)
{
	struct sw_coll_expr *e = NULL;
	char err[256] = "";

	if (sw_coll_parse(text, &e, err, sizeof(err)) == 0)
		fail_msg("accepted %s", text);
	if (!strstr(err, why))
		fail_msg("%s: '%s' does not say %s", text, err, why);
}

static void test_refused(void **state)
{
	char deep[200], many[SW_COLL_TEXT_MAX + 10];
	size_t n = 0;

	(void)state;
	refused("", "1 to 4096 bytes");
	refused("colour = red", "at 1: no such field");
	refused("memory >= lots", "at 11: a number");
	refused("package:libssl3 ~ 3*", "compared with = != <");
	refused("package:Bad", "names a Debian package");
	refused("os.id < debian", "text is compared with");
	refused("role ~ soft*", "a role is compared");
	refused("(role = test", "')' is missing");
	refused("role = test)", "without its '('");
	refused("role = test role = x", "joins two conditions");
	refused("role =", "a value follows");
	refused("name = \"open", "closing");
	refused("name = a;b", "unexpected character");
	for (int i = 0; i < 40; i++)
		deep[n++] = '(';
	snprintf(deep + n, sizeof(deep) - n, "role = x");
	refused(deep, "nested too deep");
	n = 0;
	while (n + 16 < SW_COLL_TEXT_MAX - 16)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "cpus > 1 and ");
	snprintf(many + n, sizeof(many) - n, "cpus > 1");
	refused(many, "more than 256");
}

static void test_packages_asked(void **state)
{
	struct sw_coll_expr *e;
	const char *names[4];
	char err[256];

	(void)state;
	assert_int_equal(sw_coll_parse("package:a1 or (package:b2 > 1 and not package:a1 = 2)", &e,
				       err, sizeof(err)),
			 0);
	assert_int_equal(sw_coll_packages(e, names, 4), 2);
	assert_string_equal(names[0], "a1");
	assert_string_equal(names[1], "b2");
	sw_coll_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_judged),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_packages_asked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

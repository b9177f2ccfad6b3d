/* dpkg's database read by siteward's own parser: it agrees with dpkg-query on this
 * machine, and reads what a damaged or hostile file holds without trusting it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dpkgdb.h"
#include "error.h"

static void test_agrees_with_dpkg_query(void **state)
{
	struct sw_dpkg_list l = {0};
	char err[256], line[512];
	size_t seen = 0;
	FILE *p;

	(void)state;
	assert_int_equal(sw_dpkg_read("/var/lib/dpkg/status", &l, err, sizeof(err)), 0);
	assert_true(l.n > 10);
	p = popen("dpkg-query -W -f='${db:Status-Status} ${Package} ${Architecture} ${Version}\\n'",
		  "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p)) {
		char status[32], name[128], arch[64], version[128];
		const struct sw_dpkg_pkg *got;

		if (sscanf(line, "%31s %127s %63s %127s", status, name, arch, version) != 4 ||
		    strcmp(status, "installed") != 0)
			continue;
		seen++;
		got = sw_dpkg_find(&l, name, arch);
		if (!got)
			fail_msg("%s:%s is installed, the parser does not list it", name, arch);
		assert_string_equal(got->version, version);
	}
	pclose(p);
	assert_int_equal(seen, l.n);
	sw_dpkg_list_free(&l);
}

static const char crafted[] = "Package: zeta\n"
			      "Status: install ok installed\n"
			      "Architecture: amd64\n"
			      "Version: 1:2.0-1+deb12u1\n"
			      "Description: a package\n"
			      " with: a continuation that looks like a field\n"
			      " Package: not-a-field-either\n"
			      "\n"
			      "Package: alpha\r\n"
			      "Status: hold ok installed\r\n"
			      "Architecture: all\r\n"
			      "Version: 3.1\r\n"
			      "\r\n"
			      "Package: gone\n"
			      "Status: deinstall ok config-files\n"
			      "Architecture: amd64\n"
			      "Version: 1.0\n"
			      "\n"
			      "Package: Bad_Name\n"
			      "Status: install ok installed\n"
			      "Architecture: amd64\n"
			      "Version: 1.0\n"
			      "\n"
			      "Package: noversion\n"
			      "Status: install ok installed\n"
			      "Architecture: amd64\n"
			      "\n"
			      "Package: alpha\n"
			      "Status: install ok installed\n"
			      "Architecture: all\n"
			      "Version: 9.9\n"
			      "\n"
			      "package: lib32z\n"
			      "status: install ok installed\n"
			      "architecture: i386\n"
			      "version: 0.1";

static void test_crafted(void **state)
{
	struct sw_dpkg_list l = {0};
	char err[256];

	(void)state;
	assert_int_equal(sw_dpkg_parse(crafted, strlen(crafted), &l, err, sizeof(err)), 0);
	/* sorted; "zeta" is good however its description goes on */
	assert_int_equal(l.n, 3);
	assert_string_equal(l.v[0].name, "alpha");
	assert_string_equal(l.v[0].version, "3.1"); /* held counts; the first of two wins */
	assert_string_equal(l.v[1].name, "lib32z");
	assert_string_equal(l.v[1].arch, "i386");
	assert_string_equal(l.v[2].name, "zeta");
	assert_string_equal(l.v[2].version, "1:2.0-1+deb12u1");
	assert_null(sw_dpkg_find(&l, "gone", "amd64"));
	assert_non_null(sw_dpkg_find(&l, "zeta", "amd64"));
	/* the bad name, the one without a version, the second alpha */
	assert_int_equal(l.skipped, 3);
	sw_dpkg_list_free(&l);
	/* two packages in one stanza: the file is damaged there, and neither is taken */
	assert_int_equal(sw_dpkg_parse("Package: aa\nPackage: bb\nStatus: install ok "
				       "installed\nVersion: 1\nArchitecture: all\n",
				       82, &l, err, sizeof(err)),
			 0);
	assert_int_equal(l.n, 0);
	sw_dpkg_list_free(&l);
}

static void test_bounds(void **state)
{
	struct sw_dpkg_list l = {0};
	char err[256], *big;
	size_t n = 300;

	(void)state;
	big = malloc(n + 200);
	assert_non_null(big);
	memset(big, 'a', n + 200);
	memcpy(big, "Package: ", 9);
	memcpy(big + n, "\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n", 58);
	assert_int_equal(sw_dpkg_parse(big, n + 58, &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(l.skipped, 1);
	sw_dpkg_list_free(&l);
	free(big);
	assert_int_equal(sw_dpkg_parse("", 0, &l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(sw_dpkg_read("/nonexistent/status", &l, err, sizeof(err)), SW_ENOTFOUND);
	assert_true(sw_dpkg_name_valid("libssl3"));
	assert_false(sw_dpkg_name_valid("a"));
	assert_false(sw_dpkg_name_valid("-x"));
}

/* The order dpkg --compare-versions gives, checked against dpkg itself. */
static void test_version_order(void **state)
{
	static const char *const v[][2] = {
	    {"1.0", "1.0"},	      {"1.0", "1.1"},
	    {"1.0~rc1", "1.0"},	      {"1.0", "1.0-1"},
	    {"2:1.0", "1:9.9"},	      {"3.0.15-1~deb12u1", "3.0.15-1"},
	    {"3.0.11-1", "3.0.15-1"}, {"1.10", "1.9"},
	    {"1.0a", "1.0"},	      {"1.0+b1", "1.0"},
	    {"0:1.0", "1.0"},	      {"1.0-1", "1.0-1.1"},
	    {"1.001", "1.1"},	      {"1.0~~", "1.0~"},
	    {"9.0", "10.0"},	      {"1.2.3-4+deb12u5", "1.2.3-4+deb12u10"},
	};
	char cmd[256];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(*v); i++) {
		int ours = sw_dpkg_version_cmp(v[i][0], v[i][1]), lt, eq;

		snprintf(cmd, sizeof(cmd), "dpkg --compare-versions '%s' lt '%s'", v[i][0],
			 v[i][1]);
		lt = system(cmd) == 0;
		snprintf(cmd, sizeof(cmd), "dpkg --compare-versions '%s' eq '%s'", v[i][0],
			 v[i][1]);
		eq = system(cmd) == 0;
		if ((ours < 0) != lt || (ours == 0) != eq)
			fail_msg("%s vs %s: ours %d, dpkg says %s", v[i][0], v[i][1], ours,
				 lt   ? "lt"
				 : eq ? "eq"
				      : "gt");
		assert_int_equal(sw_dpkg_version_cmp(v[i][1], v[i][0]) < 0, !lt && !eq);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_agrees_with_dpkg_query),
	    cmocka_unit_test(test_crafted),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_version_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

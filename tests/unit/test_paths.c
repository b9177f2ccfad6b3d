/* Default folders and configuration files, and which program runs when a package and a
 * service pack are both installed. */
#include "error.h"
#include "install.h"
#include "paths.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <getopt.h>

static void test_dir(void **state)
{
	unsetenv("SW_TEST_DIR");
	assert_string_equal(sw_path_dir("/x", "SW_TEST_DIR", SW_PATH_AGENT_DIR), "/x");
	assert_string_equal(sw_path_dir(NULL, "SW_TEST_DIR", SW_PATH_AGENT_DIR),
			    "/var/lib/siteward/agent");
	setenv("SW_TEST_DIR", "/y", 1);
	assert_string_equal(sw_path_dir(NULL, "SW_TEST_DIR", SW_PATH_AGENT_DIR), "/y");
	/* an option wins over the environment */
	assert_string_equal(sw_path_dir("/x", "SW_TEST_DIR", SW_PATH_AGENT_DIR), "/x");
	setenv("SW_TEST_DIR", "", 1);
	assert_string_equal(sw_path_dir(NULL, "SW_TEST_DIR", SW_PATH_AGENT_DIR),
			    "/var/lib/siteward/agent");
}

static void test_conf(void **state)
{
	char out[PATH_MAX];

	assert_int_equal(
	    sw_path_conf("/tmp/site", SW_PATH_SERVER_DIR, "siteward.conf", out, sizeof(out)), 0);
	assert_string_equal(out, "/tmp/site/siteward.conf");
	assert_int_equal(
	    sw_path_conf(SW_PATH_SERVER_DIR, SW_PATH_SERVER_DIR, "siteward.conf", out, sizeof(out)),
	    0);
	assert_string_equal(out, "/etc/siteward/siteward.conf");
	assert_int_not_equal(sw_path_conf("/tmp/site", "/d", "siteward.conf", out, 8), 0);
	/* the agent's: configuration in /etc, its socket in /run; a --dir keeps both */
	assert_int_equal(
	    sw_path_conf(SW_PATH_AGENT_DIR, SW_PATH_AGENT_DIR, "agent.conf", out, sizeof(out)), 0);
	assert_string_equal(out, "/etc/siteward/agent.conf");
	assert_int_equal(
	    sw_path_runtime(SW_PATH_AGENT_DIR, SW_PATH_AGENT_DIR, "agent.sock", out, sizeof(out)),
	    0);
	assert_string_equal(out, "/run/siteward/agent.sock");
	assert_int_equal(
	    sw_path_runtime("/tmp/agent", SW_PATH_AGENT_DIR, "agent.sock", out, sizeof(out)), 0);
	assert_string_equal(out, "/tmp/agent/agent.sock");
	assert_true(sw_path_is_default(SW_PATH_AGENT_DIR, SW_PATH_AGENT_DIR));
	assert_false(sw_path_is_default("/tmp/agent", SW_PATH_AGENT_DIR));
}

static char tmp[64];

static void put(const char *version)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/versions/%s", tmp, version);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/versions/%s/bin", tmp, version);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/versions/%s/bin/siteward-agent", tmp, version);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
}

static void point(const char *version)
{
	char path[PATH_MAX], target[64];

	snprintf(path, sizeof(path), "%s/current", tmp);
	unlink(path);
	snprintf(target, sizeof(target), "versions/%s", version);
	assert_int_equal(symlink(target, path), 0);
}

static void test_prefer(void **state)
{
	char out[PATH_MAX], real[PATH_MAX], path[PATH_MAX];
	const char *pkg = "/usr/bin/siteward-agent";

	snprintf(tmp, sizeof(tmp), "/tmp/sw-paths-XXXXXX");
	assert_non_null(mkdtemp(tmp));
	snprintf(path, sizeof(path), "%s/versions", tmp);
	mkdir(path, 0755);
	/* no service pack: the package runs */
	assert_int_equal(sw_install_prefer(tmp, "siteward-agent", pkg, "0.2.0", out, sizeof(out)),
			 0);
	put("0.3.0");
	put("0.1.0");
	/* a newer service pack runs instead of the package */
	point("0.3.0");
	assert_int_equal(sw_install_prefer(tmp, "siteward-agent", pkg, "0.2.0", out, sizeof(out)),
			 1);
	snprintf(path, sizeof(path), "%s/current/bin/siteward-agent", tmp);
	assert_string_equal(out, path);
	/* ... once: the service pack's program is not executed again */
	assert_non_null(realpath(path, real));
	assert_int_equal(sw_install_prefer(tmp, "siteward-agent", real, "0.3.0", out, sizeof(out)),
			 0);
	/* a package upgrade newer than the service pack wins; as old, the package too */
	assert_int_equal(sw_install_prefer(tmp, "siteward-agent", pkg, "0.4.0", out, sizeof(out)),
			 0);
	assert_int_equal(sw_install_prefer(tmp, "siteward-agent", pkg, "0.3.0", out, sizeof(out)),
			 0);
	point("0.1.0");
	assert_int_equal(sw_install_prefer(tmp, "siteward-agent", pkg, "0.2.0", out, sizeof(out)),
			 0);
	/* a version whose program is missing is not chosen */
	point("0.9.0");
	assert_int_equal(sw_install_prefer(tmp, "siteward-agent", pkg, "0.2.0", out, sizeof(out)),
			 0);
	snprintf(path, sizeof(path), "rm -rf '%s'", tmp);
	assert_int_equal(system(path), 0);
}

static int usages;

static void count_usage(FILE *f)
{
	(void)f;
	usages++;
}

/* The daemons' options: the folder given, from the environment, or the default; -n only
 * where a check is offered; --version and --help end the program; anything else is a
 * usage error, told once. */
static void test_daemon_options(void **state)
{
	const char *dir;
	int check = 0;
	char *given[] = {"p", "--dir", "/x", "-n", NULL};
	char *none[] = {"p", NULL};
	char *version[] = {"p", "--version", NULL};
	char *stray[] = {"p", "extra", NULL};
	char *n_only[] = {"p", "-n", NULL};
	char *bogus[] = {"p", "--bogus", NULL};

	(void)state;
	opterr = 0;
	assert_int_equal(
	    sw_daemon_options(4, given, "p", count_usage, "SW_TEST_DIR", "/dflt", &dir, &check), 0);
	assert_string_equal(dir, "/x");
	assert_int_equal(check, 1);
	unsetenv("SW_TEST_DIR");
	assert_int_equal(
	    sw_daemon_options(1, none, "p", count_usage, "SW_TEST_DIR", "/dflt", &dir, NULL), 0);
	assert_string_equal(dir, "/dflt");
	setenv("SW_TEST_DIR", "/env", 1);
	assert_int_equal(
	    sw_daemon_options(1, none, "p", count_usage, "SW_TEST_DIR", "/dflt", &dir, NULL), 0);
	assert_string_equal(dir, "/env");
	unsetenv("SW_TEST_DIR");
	assert_int_equal(
	    sw_daemon_options(2, version, "p", count_usage, "SW_TEST_DIR", "/dflt", &dir, NULL), 0);
	assert_null(dir);
	usages = 0;
	assert_int_equal(
	    sw_daemon_options(2, stray, "p", count_usage, "SW_TEST_DIR", "/dflt", &dir, &check),
	    SW_EINVAL);
	assert_int_equal(
	    sw_daemon_options(2, n_only, "p", count_usage, "SW_TEST_DIR", "/dflt", &dir, NULL),
	    SW_EINVAL);
	assert_int_equal(
	    sw_daemon_options(2, bogus, "p", count_usage, "SW_TEST_DIR", "/dflt", &dir, &check),
	    SW_EINVAL);
	assert_int_equal(usages, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_dir),
	    cmocka_unit_test(test_conf),
	    cmocka_unit_test(test_prefer),
	    cmocka_unit_test(test_daemon_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

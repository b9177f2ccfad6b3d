/* Program versions: dpkg's answer parsed, a real lookup, patterns, and the bounded
 * command runner beneath. */
#include "error.h"
#include "progver.h"
#include "util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static void test_owner_parse(void **state)
{
	const char *one[] = {"/usr/bin/sleep", "/bin/sleep"};
	char pkg[64];
	const char *out = "diversion by foo from: /bin/sleep\n"
			  "diversion by foo to: /bin/sleep.real\n"
			  "coreutils: /bin/sleep\n";

	assert_int_equal(sw_dpkg_owner_parse(out, strlen(out), one, 2, pkg, sizeof(pkg)), 0);
	assert_string_equal(pkg, "coreutils");
	out = "libc6:amd64, libc6:i386: /usr/bin/sleep";
	assert_int_equal(sw_dpkg_owner_parse(out, strlen(out), one, 2, pkg, sizeof(pkg)), 0);
	assert_string_equal(pkg, "libc6:amd64");
	/* another path, a bad name, a prefix of the path, nothing at all */
	out = "coreutils: /bin/sleeper\nBad Name: /bin/sleep\nx: /usr/bin/sleep/more\n";
	assert_int_equal(sw_dpkg_owner_parse(out, strlen(out), one, 2, pkg, sizeof(pkg)),
			 SW_ENOTFOUND);
	assert_int_equal(sw_dpkg_owner_parse("", 0, one, 2, pkg, sizeof(pkg)), SW_ENOTFOUND);
	assert_int_equal(sw_dpkg_owner_parse(": /bin/sleep", 12, one, 2, pkg, sizeof(pkg)),
			 SW_ENOTFOUND);
	/* a name longer than the room for it */
	out = "coreutils: /bin/sleep";
	assert_int_equal(sw_dpkg_owner_parse(out, strlen(out), one, 2, pkg, 5), SW_ENOTFOUND);
}

static void test_match(void **state)
{
	assert_int_equal(sw_version_match("", "9.1-1"), 0);
	assert_int_equal(sw_version_match("", NULL), 0);
	assert_int_equal(sw_version_match("9.*", "9.1-1"), 4);
	assert_int_equal(sw_version_match("9.1*", "9.1-1"), 5);
	assert_int_equal(sw_version_match("8.*", "9.1-1"), -1);
	assert_int_equal(sw_version_match("9.*", NULL), -1);
	assert_int_equal(sw_version_match("9.*", ""), -1);
	assert_true(sw_prog_version_valid("1:2.3~rc1+dfsg-4"));
	assert_false(sw_prog_version_valid(""));
	assert_false(sw_prog_version_valid("9.1 -1"));
	assert_false(sw_prog_version_valid("9.1\n"));
}

/* What dpkg-query itself says of coreutils, for comparison. */
static void coreutils_version(char *out, size_t len)
{
	FILE *f = popen("dpkg-query --show --showformat='${Version}' coreutils", "r");

	assert_non_null(f);
	assert_non_null(fgets(out, (int)len, f));
	pclose(f);
}

static void test_lookup(void **state)
{
	char v[SW_PROG_VERSION_MAX + 1], want[128], err[256], copy[] = "/tmp/sw-ver-XXXXXX";
	int fd;

	coreutils_version(want, sizeof(want));
	/* by either name merged /usr gives it */
	assert_int_equal(sw_program_version("/usr/bin/sleep", v, sizeof(v), err, sizeof(err)), 0);
	assert_string_equal(v, want);
	assert_int_equal(sw_program_version("/bin/sleep", v, sizeof(v), err, sizeof(err)), 0);
	assert_string_equal(v, want);
	/* a file no package installed */
	fd = mkstemp(copy);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(sw_program_version(copy, v, sizeof(v), err, sizeof(err)), SW_ENOTFOUND);
	assert_string_equal(v, "");
	unlink(copy);
	assert_int_equal(sw_program_version("/nonexistent/x", v, sizeof(v), err, sizeof(err)),
			 SW_ENOTFOUND);
}

static void test_command_output(void **state)
{
	char out[8], err[256];
	char *echo[] = {"/bin/echo", "hello world", NULL};
	char *slow[] = {"/bin/sleep", "10", NULL};
	char *none[] = {"/nonexistent/tool", NULL};
	int status;
	int64_t t0;

	/* output cut to the room for it, status kept */
	assert_int_equal(sw_command_output(echo, 2000, out, sizeof(out), &status, err, sizeof(err)),
			 0);
	assert_string_equal(out, "hello w");
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* a tool that does not finish is killed at its deadline */
	t0 = sw_mono_ms();
	assert_int_equal(sw_command_output(slow, 200, out, sizeof(out), &status, err, sizeof(err)),
			 SW_ETIMEDOUT);
	assert_true(sw_mono_ms() - t0 < 5000);
	assert_true(WIFSIGNALED(status));
	assert_non_null(strstr(err, "within 200 ms"));
	assert_int_equal(sw_command_output(none, 2000, out, sizeof(out), &status, err, sizeof(err)),
			 SW_ENOTFOUND);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_owner_parse),
	    cmocka_unit_test(test_match),
	    cmocka_unit_test(test_lookup),
	    cmocka_unit_test(test_command_output),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Parsing numbers strictly, and showing text from other machines on a terminal. */
#include "error.h"
#include "util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void test_number_parse(void **state)
{
	static const char *const bad[] = {
	    "",	     "nan", "NaN",  "-nan", "inf",   "-inf", "infinity", "0x10", " 5",	"5 ",  "5s",
	    "1e400", "-1",  "3601", "1e4",  "0.001", ".",    "e5",	 "--1",	 "5\n", "1,5",
	};
	double v = -7;

	assert_int_equal(sw_number_parse("30", 0.01, 3600, &v), 0);
	assert_true(v == 30);
	assert_int_equal(sw_number_parse("0.5", 0.01, 3600, &v), 0);
	assert_true(v == 0.5);
	assert_int_equal(sw_number_parse("1e3", 0.01, 3600, &v), 0);
	assert_true(v == 1000);
	assert_int_equal(sw_number_parse("3600", 0.01, 3600, &v), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = -7;
		if (sw_number_parse(bad[i], 0.01, 3600, &v) != SW_EINVAL)
			fail_msg("'%s' was taken", bad[i]);
		assert_true(v == -7);
	}
	assert_int_equal(sw_number_parse(NULL, 0, 1, &v), SW_EINVAL);
}

static void test_int_parse(void **state)
{
	static const char *const bad[] = {
	    "",
	    "-",
	    "+5",
	    "5.0",
	    "1e3",
	    " 5",
	    "5 ",
	    "nan",
	    "0x10",
	    "10001",
	    "0",
	    "-1",
	    "18446744073709551617",
	    "-18446744073709551615",
	    "99999999999999999999",
	};
	int64_t v = -7;

	assert_int_equal(sw_int_parse("50", 1, 10000, &v), 0);
	assert_int_equal(v, 50);
	assert_int_equal(sw_int_parse("10000", 1, 10000, &v), 0);
	assert_int_equal(sw_int_parse("-5", -10, 10, &v), 0);
	assert_int_equal(v, -5);
	assert_int_equal(sw_int_parse("9223372036854775807", 0, INT64_MAX, &v), 0);
	assert_int_equal(v, INT64_MAX);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = -7;
		if (sw_int_parse(bad[i], 1, 10000, &v) != SW_EINVAL)
			fail_msg("'%s' was taken", bad[i]);
		assert_int_equal(v, -7);
	}
}

/* The temporary file is always new: a link or a file someone put at its name in a
 * folder others may write to is neither written through nor taken over. */
static void test_write_atomic_makes_its_own_file(void **state)
{
	char dir[] = "/tmp/sw-test-util-XXXXXX", path[128], tmp[160], victim[128], buf[64];
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/record.json", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	f = fopen(victim, "w");
	assert_non_null(f);
	fputs("untouched", f);
	fclose(f);
	assert_int_equal(symlink(victim, tmp), 0);
	assert_int_equal(sw_file_write_atomic(path, "new", 3, 0600, NULL, 0), 0);
	f = fopen(victim, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "untouched");
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "new");
	unlink(path);
	unlink(victim);
	rmdir(dir);
}

static void test_printable(void **state)
{
	char out[256];

	assert_int_equal(sw_printable(out, sizeof(out), "web-1.example"), 13);
	assert_string_equal(out, "web-1.example");
	sw_printable(out, sizeof(out), "a\x1b[2Jb\tc\r\n\x7f\x01");
	assert_string_equal(out, "a\\x1b[2Jb\\x09c\\x0d\\x0a\\x7f\\x01");
	/* UTF-8 stays, C1 controls (U+009B, CSI) and bidi overrides do not */
	sw_printable(out, sizeof(out),
		     "caf\xc3\xa9 \xc2\x9b"
		     "31m \xe2\x80\xae"
		     "x");
	assert_string_equal(out, "caf\xc3\xa9 \\u009b31m \\u202ex");
	/* bytes that are not UTF-8: a lone 0x9b, a cut sequence, an overlong '/' */
	sw_printable(out, sizeof(out),
		     "\x9b"
		     "1m \xe2\x80 \xc0\xaf");
	assert_string_equal(out, "\\x9b1m \\xe2\\x80 \\xc0\\xaf");
	/* cut before an escape or a character that does not fit, never inside one */
	assert_int_equal(sw_printable(out, 5, "ab\x1b"), 2);
	assert_string_equal(out, "ab");
	assert_int_equal(sw_printable(out, 4, "ab\xc3\xa9"), 2);
	assert_string_equal(out, "ab");
	assert_int_equal(sw_printable(out, 1, "abc"), 0);
	assert_string_equal(out, "");
	/* the bound the header promises */
	{
		char in[33], big[4 * 32 + 1];
		memset(in, 0x1b, 32);
		in[32] = '\0';
		assert_int_equal(sw_printable(big, sizeof(big), in), 4 * 32);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_number_parse),
	    cmocka_unit_test(test_int_parse),
	    cmocka_unit_test(test_printable),
	    cmocka_unit_test(test_write_atomic_makes_its_own_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

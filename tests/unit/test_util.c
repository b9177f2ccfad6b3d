/* Parsing numbers strictly, and showing text from other machines on a terminal. */
#include "error.h"
#include "loop.h"
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

/* A file's hash read in pieces is the hash of its bytes at once, past one piece. */
static void test_file_sha256(void **state)
{
	char dir[] = "/tmp/sw-test-util-XXXXXX", path[128], want[65], got[65], err[200];
	size_t n = 200000;
	unsigned char *data = malloc(n);
	uint64_t size = 0;
	FILE *f;

	(void)state;
	assert_non_null(data);
	for (size_t i = 0; i < n; i++)
		data[i] = (unsigned char)(i * 131 + i / 7);
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/blob", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, n, f), n);
	fclose(f);
	sw_sha256_hex(data, n, want);
	assert_int_equal(sw_file_sha256(path, got, &size, err, sizeof(err)), 0);
	assert_string_equal(got, want);
	assert_int_equal(size, n);
	/* a folder, and a file that is not there: refused with the reason */
	assert_int_equal(sw_file_sha256(dir, got, NULL, err, sizeof(err)), SW_EIO);
	assert_non_null(strstr(err, "not a regular file"));
	unlink(path);
	assert_int_equal(sw_file_sha256(path, got, NULL, err, sizeof(err)), SW_EIO);
	assert_non_null(strstr(err, "No such file"));
	rmdir(dir);
	free(data);
}

static void test_addr_common_bits(void **state)
{
	(void)state;
	assert_int_equal(sw_addr_common_bits("10.1.2.3", "10.1.2.3:8472"), 32);
	assert_int_equal(sw_addr_common_bits("10.1.2.3", "10.1.2.200"), 24);
	assert_int_equal(sw_addr_common_bits("10.1.2.3", "10.1.3.3"), 23);
	assert_int_equal(sw_addr_common_bits("192.168.0.1", "10.0.0.1"), 0);
	assert_int_equal(sw_addr_common_bits("[2001:db8::1]:443", "2001:db8::ffff"), 112);
	assert_int_equal(sw_addr_common_bits("2001:db8::1", "10.0.0.1"), SW_EINVAL);
	assert_int_equal(sw_addr_common_bits("web1.example", "10.0.0.1"), SW_EINVAL);
}

static void test_pem_read(void **state)
{
	char dir[] = "/tmp/sw-test-pem-XXXXXX", path[128], err[256], *pem = NULL;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\n", f);
	fclose(f);
	assert_int_equal(sw_pem_read(dir, "ca.crt", &pem, err, sizeof(err)), 0);
	assert_string_equal(pem, "-----BEGIN CERTIFICATE-----\n");
	free(pem);
	/* a missing file is named in the error */
	assert_int_equal(sw_pem_read(dir, "agent.key", &pem, err, sizeof(err)), SW_ENOTFOUND);
	assert_null(pem);
	assert_non_null(strstr(err, "agent.key"));
	/* and so is one past the bound */
	assert_int_equal(truncate(path, SW_PEM_MAX + 1), 0);
	assert_int_equal(sw_pem_read(dir, "ca.crt", &pem, err, sizeof(err)), SW_ETOOBIG);
	assert_non_null(strstr(err, "ca.crt"));
	unlink(path);
	rmdir(dir);
}

static void on_never(uv_timer_t *t)
{
	(void)t;
	fail();
}

static void work_sleep(uv_work_t *w)
{
	(void)w;
	usleep(300 * 1000);
}

static void work_done(uv_work_t *w, int status)
{
	(void)status;
	*(int *)w->data = 1;
}

static void test_loop_drain(void **state)
{
	uv_loop_t loop;
	uv_timer_t t1, t2;
	uv_work_t w;
	int done = 0;

	(void)state;
	/* active handles are closed, and the run ends without waiting for their timers */
	assert_int_equal(uv_loop_init(&loop), 0);
	uv_timer_init(&loop, &t1);
	uv_timer_init(&loop, &t2);
	uv_timer_start(&t1, on_never, 60000, 0);
	uv_timer_start(&t2, on_never, 60000, 60000);
	assert_int_equal(sw_loop_drain(&loop, 1000), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	/* a request still pending at the deadline ends the wait all the same */
	assert_int_equal(uv_loop_init(&loop), 0);
	w.data = &done;
	assert_int_equal(uv_queue_work(&loop, &w, work_sleep, work_done), 0);
	assert_int_equal(sw_loop_drain(&loop, 20), SW_ETIMEDOUT);
	assert_int_equal(done, 0);
	/* given the time, it finishes */
	assert_int_equal(sw_loop_drain(&loop, 5000), 0);
	assert_int_equal(done, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
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

static void test_duration_parse(void **state)
{
	int64_t v;

	assert_int_equal(sw_duration_parse("90", 1, 86400, &v), 0);
	assert_int_equal(v, 90);
	assert_int_equal(sw_duration_parse("30m", 1, 86400, &v), 0);
	assert_int_equal(v, 1800);
	assert_int_equal(sw_duration_parse("7d", 1, 7 * 86400, &v), 0);
	assert_int_equal(v, 7 * 86400);
	assert_int_equal(sw_duration_parse("0", 0, 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_not_equal(sw_duration_parse("8d", 1, 7 * 86400, &v), 0);
	assert_int_not_equal(sw_duration_parse("0", 1, 10, &v), 0);
	assert_int_not_equal(sw_duration_parse("-5m", 0, 86400, &v), 0);
	assert_int_not_equal(sw_duration_parse("5x", 0, 86400, &v), 0);
	assert_int_not_equal(sw_duration_parse("m", 0, 86400, &v), 0);
	assert_int_not_equal(sw_duration_parse("", 0, 86400, &v), 0);
	assert_int_not_equal(sw_duration_parse("99999999999999999d", 0, INT64_MAX, &v), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_duration_parse),
	    cmocka_unit_test(test_number_parse),
	    cmocka_unit_test(test_int_parse),
	    cmocka_unit_test(test_printable),
	    cmocka_unit_test(test_pem_read),
	    cmocka_unit_test(test_file_sha256),
	    cmocka_unit_test(test_addr_common_bits),
	    cmocka_unit_test(test_loop_drain),
	    cmocka_unit_test(test_write_atomic_makes_its_own_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

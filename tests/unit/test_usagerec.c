/* The checked reading of uploaded usage records (server/usagerec.c): the bounds that keep
 * a forged record from storing times no clock can mean or sums that overflow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../server/usagerec.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1800000000000LL /* 2027-01-15 */

static json_t *rec(int64_t start, int64_t end)
{
	return json_pack("{ss ss ss ss sI sI ss sI ss}", "id", "r1", "exe", "cad", "user", "alice",
			 "host", "h1", "start", (json_int_t)start, "end", (json_int_t)end, "kind",
			 "run", "wait_ms", (json_int_t)0, "source", "offline");
}

static int read_one(json_t *r, int64_t skew, struct usage_rec *u, char *err)
{
	int rc = usagerec_read(r, NOW, skew, u, err, 256);

	json_decref(r);
	return rc;
}

static void test_good_record_moved_by_skew(void **state)
{
	(void)state;
	struct usage_rec u;
	char err[256];

	json_t *r = rec(NOW - 60000 + 5000, NOW + 5000);

	/* the strings are the record's: it stays alive while they are read */
	assert_int_equal(usagerec_read(r, NOW, -5000, &u, err, sizeof(err)), 0);
	assert_int_equal(u.start, NOW - 60000);
	assert_int_equal(u.end, NOW);
	assert_string_equal(u.user, "alice");
	assert_string_equal(u.host, "h1");
	assert_null(u.product);
	json_decref(r);
}

static void test_times_bounded(void **state)
{
	(void)state;
	struct usage_rec u;
	char err[256];

	/* before 2000, more than a day ahead, ending before starting */
	assert_int_equal(read_one(rec(1000, 2000), 0, &u, err), SW_EINVAL);
	assert_non_null(strstr(err, "before 2000"));
	assert_int_equal(read_one(rec(NOW, NOW + USAGE_DAY_MS + 1), 0, &u, err), SW_EINVAL);
	assert_int_equal(read_one(rec(NOW, NOW + USAGE_DAY_MS), 0, &u, err), 0);
	assert_int_equal(read_one(rec(NOW, NOW - 1), 0, &u, err), SW_EINVAL);
	assert_non_null(strstr(err, "ends before it starts"));
	/* a run of more than 366 days */
	assert_int_equal(read_one(rec(NOW - 367 * USAGE_DAY_MS, NOW), 0, &u, err), SW_EINVAL);
	assert_non_null(strstr(err, "366 days"));
	assert_int_equal(read_one(rec(NOW - 366 * USAGE_DAY_MS, NOW), 0, &u, err), 0);
}

/* Numbers that would overflow once the skew is added, or summed, are refused. */
static void test_no_overflow(void **state)
{
	(void)state;
	struct usage_rec u;
	char err[256];

	assert_int_equal(read_one(rec(INT64_MAX, INT64_MAX), 0, &u, err), SW_EINVAL);
	assert_int_equal(read_one(rec(NOW, NOW), INT64_MIN, &u, err), SW_EINVAL);
	assert_int_equal(read_one(rec(NOW, NOW), INT64_MAX, &u, err), SW_EINVAL);
	assert_int_equal(read_one(rec(0, USAGE_MAX_MS), NOW - USAGE_MAX_MS, &u, err), SW_EINVAL);
	json_t *r = rec(NOW - 1000, NOW);
	json_object_set_new(r, "wait_ms", json_integer(INT64_MAX));
	assert_int_equal(read_one(r, 0, &u, err), SW_EINVAL);
	r = rec(NOW - 1000, NOW);
	json_object_set_new(r, "wait_ms", json_integer(-1));
	assert_int_equal(read_one(r, 0, &u, err), SW_EINVAL);
	r = rec(NOW - 1000, NOW);
	json_object_set_new(r, "start", json_real(1.8e12));
	assert_int_equal(read_one(r, 0, &u, err), SW_EINVAL);
}

static void test_names_checked(void **state)
{
	(void)state;
	struct usage_rec u;
	char err[256];
	const char *bad[][2] = {{"user", "al\nice"}, {"exe", "c\x1b[2Jad"}, {"id", ""},
				{"user", ""},	     {"kind", "stolen"},    {"host", "h\x7f"}};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *r = rec(NOW - 1000, NOW);
		json_object_set_new(r, bad[i][0], json_string(bad[i][1]));
		assert_int_equal(read_one(r, 0, &u, err), SW_EINVAL);
	}
	/* a NUL inside a string, which jansson takes only when asked */
	json_t *r = rec(NOW - 1000, NOW);
	json_object_set_new(r, "user", json_stringn("a\0b", 3));
	assert_int_equal(read_one(r, 0, &u, err), SW_EINVAL);
	assert_null(json_loads("{\"user\": \"a\\u0000b\"}", 0, NULL));
	/* no host is fine: the server names it */
	r = rec(NOW - 1000, NOW);
	json_object_del(r, "host");
	assert_int_equal(read_one(r, 0, &u, err), 0);
	assert_null(u.host);
	assert_int_equal(read_one(json_integer(1), 0, &u, err), SW_EINVAL);
}

static void test_skew(void **state)
{
	(void)state;
	assert_int_equal(usagerec_skew(NOW, NOW - 1999), 0);
	assert_int_equal(usagerec_skew(NOW, NOW + 1999), 0);
	assert_int_equal(usagerec_skew(NOW, NOW - 3600000), 3600000);
}

/* The most runs at once: touching ends and starts do not overlap; a run that ends when
 * another starts leaves room for it. Enough runs for the radix sort, and a few for qsort. */
static void test_peak(void **state)
{
	int64_t s1[] = {10, 0, 5, 20}, e1[] = {30, 10, 15, 25};
	int64_t *s2 = malloc(1000 * sizeof(*s2)), *e2 = malloc(1000 * sizeof(*e2));

	(void)state;
	/* 0-10 ends as 10-30 starts; 5-15 is over by 20: two at once, never three */
	assert_int_equal(usagerec_peak(s1, e1, 4), 2);
	assert_int_equal(usagerec_peak(s1, e1, 0), 0);
	assert_non_null(s2);
	assert_non_null(e2);
	for (int i = 0; i < 1000; i++) {
		/* one after another, then 7 at once in the middle */
		s2[i] = 1700000000000LL + (i < 993 ? i * 100 : 50000);
		e2[i] = s2[i] + (i < 993 ? 100 : 10);
	}
	assert_int_equal(usagerec_peak(s2, e2, 1000), 8); /* the 7 and the run they fall in */
	free(s2);
	free(e2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_record_moved_by_skew),
	    cmocka_unit_test(test_times_bounded),
	    cmocka_unit_test(test_no_overflow),
	    cmocka_unit_test(test_peak),
	    cmocka_unit_test(test_names_checked),
	    cmocka_unit_test(test_skew),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

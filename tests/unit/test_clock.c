/* Clock errors: how they are told, and when they matter. */
#include "clock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define S   1000LL
#define MIN (60 * S)
#define H   (60 * MIN)
#define DAY (24 * H)

static void test_span(void **state)
{
	char buf[48];

	sw_clock_span(0, buf, sizeof(buf));
	assert_string_equal(buf, "0s");
	sw_clock_span(-59 * S - 499, buf, sizeof(buf));
	assert_string_equal(buf, "59s");
	/* to the nearest of the last unit shown: a reading a few ms, or seconds, late is
	 * still a round figure */
	sw_clock_span(3 * H - 3, buf, sizeof(buf));
	assert_string_equal(buf, "3h 0m");
	sw_clock_span(3 * H - 2 * S, buf, sizeof(buf));
	assert_string_equal(buf, "3h 0m");
	sw_clock_span(3 * H - 31 * S, buf, sizeof(buf));
	assert_string_equal(buf, "2h 59m");
	sw_clock_span(-59 * S - 500, buf, sizeof(buf));
	assert_string_equal(buf, "1m 0s");
	sw_clock_span(2 * MIN + 5 * S, buf, sizeof(buf));
	assert_string_equal(buf, "2m 5s");
	sw_clock_span(-(3 * H + 2 * MIN + 20 * S), buf, sizeof(buf));
	assert_string_equal(buf, "3h 2m");
	sw_clock_span(-(3 * H + 2 * MIN + 40 * S), buf, sizeof(buf));
	assert_string_equal(buf, "3h 3m");
	sw_clock_span(3 * H, buf, sizeof(buf));
	assert_string_equal(buf, "3h 0m");
	sw_clock_span(8 * DAY + 2 * H + 29 * MIN, buf, sizeof(buf));
	assert_string_equal(buf, "8d 2h");
	sw_clock_span(8 * DAY + 2 * H + 59 * MIN, buf, sizeof(buf));
	assert_string_equal(buf, "8d 3h");
	sw_clock_span(3650 * DAY, buf, sizeof(buf));
	assert_string_equal(buf, "3650d 0h");
	/* cut to the buffer, never past it */
	sw_clock_span(3 * H, buf, 3);
	assert_string_equal(buf, "3h");
}

static void test_describe(void **state)
{
	char buf[64];

	sw_clock_describe(-(3 * H + 2 * MIN), buf, sizeof(buf));
	assert_string_equal(buf, "3h 2m behind");
	sw_clock_describe(45 * S, buf, sizeof(buf));
	assert_string_equal(buf, "45s ahead of");
}

static void test_judge(void **state)
{
	int64_t now = 1700000000000LL, nb = now - 7 * DAY, na = now + 825 * DAY;

	assert_int_equal(sw_clock_judge(now, 0, nb, na), SW_CLOCK_OK);
	assert_int_equal(sw_clock_judge(now, -59 * S, nb, na), SW_CLOCK_OK);
	assert_int_equal(sw_clock_judge(now, 59 * S, nb, na), SW_CLOCK_OK);
	assert_int_equal(sw_clock_judge(now, -MIN, nb, na), SW_CLOCK_SKEWED);
	assert_int_equal(sw_clock_judge(now, 3 * H, nb, na), SW_CLOCK_SKEWED);
	assert_int_equal(sw_clock_judge(now, -3 * H, nb, na), SW_CLOCK_SKEWED);
	/* a week behind is the edge of what a fresh certificate allows */
	assert_int_equal(sw_clock_judge(now, -7 * DAY, nb, na), SW_CLOCK_SKEWED);
	assert_int_equal(sw_clock_judge(now, -7 * DAY - 1, nb, na), SW_CLOCK_BREAKS_TLS);
	assert_int_equal(sw_clock_judge(now, 825 * DAY, nb, na), SW_CLOCK_SKEWED);
	assert_int_equal(sw_clock_judge(now, 825 * DAY + 1, nb, na), SW_CLOCK_BREAKS_TLS);
	/* an unknown end is no limit */
	assert_int_equal(sw_clock_judge(now, -3650 * DAY, 0, 0), SW_CLOCK_SKEWED);
	assert_int_equal(sw_clock_judge(now, 3650 * DAY, nb, 0), SW_CLOCK_SKEWED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_span),
	    cmocka_unit_test(test_describe),
	    cmocka_unit_test(test_judge),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

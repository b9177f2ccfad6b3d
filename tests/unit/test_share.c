/* How metering servers share a product's licenses (server/share.c): the cases the
 * site meets, and for random standings the promise that no share ever takes the site
 * over its count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../server/share.h"

#include <stdlib.h>

#define LIVE(in_use, waiting)                                                                      \
	{                                                                                          \
		0, in_use, waiting, 0, 1                                                           \
	}

static void shares(const struct share *sh, size_t n, int64_t total, int64_t *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = share_of(sh, n, NULL, 0, i, total);
}

/* Idle servers that hold nothing split the count evenly, the first ones first. */
static void test_even_split(void **state)
{
	(void)state;
	struct share sh[3] = {LIVE(0, 0), LIVE(0, 0), LIVE(0, 0)};
	int64_t out[3];

	shares(sh, 3, 7, out);
	assert_int_equal(out[0], 3);
	assert_int_equal(out[1], 2);
	assert_int_equal(out[2], 2);
}

/* A grant on one server moves no free license to it from another: the odd license
 * stays where it is free now. Left where it was, it is held by no server on its way,
 * and a client asking there meanwhile is denied with a license free. */
static void test_free_licenses_stay_put(void **state)
{
	(void)state;
	/* two licenses, one each; the first server lends its own */
	struct share sh[2] = {{1, 1, 0, 1, 1}, {1, 0, 0, 1, 1}};
	int64_t out[3];

	shares(sh, 2, 2, out);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[1], 1);
	/* the second lends its own too: nothing moves */
	struct share both[2] = {{1, 1, 0, 1, 1}, {1, 1, 0, 1, 1}};
	shares(both, 2, 2, out);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[1], 1);
	/* three free on one, none on two others: shares even out, the odd one stays */
	struct share lop[3] = {{3, 0, 0, 3, 1}, {0, 0, 0, 0, 1}, {0, 0, 0, 0, 1}};
	shares(lop, 3, 4, out);
	assert_int_equal(out[0], 2);
	assert_int_equal(out[1], 1);
	assert_int_equal(out[2], 1);
}

/* In use stays where it is, then waiting clients, then the rest. */
static void test_demand_first(void **state)
{
	(void)state;
	struct share sh[3] = {LIVE(1, 0), LIVE(0, 3), LIVE(0, 1)};
	int64_t out[3];

	shares(sh, 3, 6, out);
	/* 5 free: waiting 3 and 1 take 4 in rounds, the last goes evenly from the first */
	assert_int_equal(out[0], 1 + 1);
	assert_int_equal(out[1], 3);
	assert_int_equal(out[2], 1);
	/* too few for every waiting client: one round each, the partial one in order */
	struct share tight[3] = {LIVE(0, 2), LIVE(0, 2), LIVE(0, 2)};
	shares(tight, 3, 4, out);
	assert_int_equal(out[0], 2);
	assert_int_equal(out[1], 1);
	assert_int_equal(out[2], 1);
}

/* A server that has stopped reporting keeps what it had in use, and the free licenses
 * go to the servers clients can reach; its waiting clients count for nothing. */
static void test_stale_server_gets_no_free_licenses(void **state)
{
	(void)state;
	/* it reported one in use and one applied, then stopped */
	struct share sh[2] = {{1, 1, 3, 1, 0}, {1, 0, 0, 1, 1}};

	assert_int_equal(share_of(sh, 2, NULL, 0, 1, 2), 1);
	/* idle when it stopped: the live one may have everything it does not hold */
	struct share idle[2] = {{1, 0, 0, 1, 0}, {1, 0, 0, 1, 1}};
	assert_int_equal(share_of(idle, 2, NULL, 0, 1, 3), 2);
	/* and more once the stopped one gives its share up (applies 0) */
	idle[0].applied = idle[0].assigned = 0;
	assert_int_equal(share_of(idle, 2, NULL, 0, 1, 3), 3);
}

/* A share grows only from licenses no other server holds or may still hold. */
static void test_never_from_what_others_hold(void **state)
{
	(void)state;
	struct share sh[2] = {{2, 0, 0, 0, 1}, LIVE(0, 5)};
	struct share former[1] = {{1, 0, 0, 1, 0}};

	/* the first applied 2 though assigned 0 now; the former server holds 1 */
	assert_int_equal(share_of(sh, 2, former, 1, 1, 4), 1);
	assert_int_equal(share_of(sh, 2, former, 1, 1, 3), 0);
	/* fewer licenses than are in use: nothing, never below zero */
	struct share over[2] = {{3, 3, 0, 3, 1}, LIVE(2, 0)};
	assert_int_equal(share_of(over, 2, NULL, 0, 1, 2), 0);
}

/* For random standings: every server's share, added to what every other server holds
 * or may hold, stays within the count; with nothing held anywhere the live servers'
 * shares add up to the count exactly. */
static void test_random_standings_stay_within_the_count(void **state)
{
	(void)state;
	srand(20261206);
	for (int round = 0; round < 20000; round++) {
		size_t n = 1 + (size_t)(rand() % 5), nf = (size_t)(rand() % 3);
		int64_t total = rand() % 12;
		struct share sh[5], former[2];
		int fresh = rand() % 2, any_live = 0;

		for (size_t i = 0; i < n + nf; i++) {
			struct share *x = i < n ? &sh[i] : &former[i - n];
			x->applied = fresh ? 0 : rand() % 5;
			x->assigned = fresh ? 0 : rand() % 5;
			x->in_use = rand() % 4;
			x->waiting = rand() % 4;
			x->live = i < n && rand() % 3 != 0;
			any_live |= x->live;
		}
		int64_t sum = 0, in_use = 0;
		for (size_t me = 0; me < n; me++) {
			int64_t others = 0, out = share_of(sh, n, former, nf, me, total);
			for (size_t i = 0; i < n; i++)
				others += i == me
					      ? 0
					      : (sh[i].applied > sh[i].assigned ? sh[i].applied
										: sh[i].assigned);
			for (size_t i = 0; i < nf; i++)
				others += former[i].applied > former[i].assigned
					      ? former[i].applied
					      : former[i].assigned;
			assert_true(out >= 0);
			assert_true(out + others <= total || out == 0);
			sum += out;
			in_use += sh[me].in_use;
		}
		if (fresh && nf == 0 && any_live && in_use <= total)
			assert_int_equal(sum, total);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_even_split),
	    cmocka_unit_test(test_demand_first),
	    cmocka_unit_test(test_free_licenses_stay_put),
	    cmocka_unit_test(test_stale_server_gets_no_free_licenses),
	    cmocka_unit_test(test_never_from_what_others_hold),
	    cmocka_unit_test(test_random_standings_stay_within_the_count),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

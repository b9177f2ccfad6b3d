/*
 * Clock errors between machines: how large one is for a person, and whether it is
 * large enough to matter — to be worth setting right, or to break TLS because one
 * side's certificates are not yet valid, or no longer valid, by the other's clock.
 * Pure functions of the times passed in.
 */
#ifndef SW_CLOCK_H
#define SW_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Below this a measured difference is network delay or ordinary drift: not shown. */
#define SW_CLOCK_NOTABLE_MS 5000
/* From this on a clock is wrong enough to be worth setting right. */
#define SW_CLOCK_WARN_MS 60000

enum sw_clock_state {
	SW_CLOCK_OK,	     /* within SW_CLOCK_WARN_MS */
	SW_CLOCK_SKEWED,     /* off, but certificates still verify there */
	SW_CLOCK_BREAKS_TLS, /* certificates are outside their validity by that clock */
};

/* A difference for a person, to the second and without its sign: "45s", "2m 5s",
 * "3h 2m", "8d 2h". */
void sw_clock_span(int64_t ms, char *out, size_t len);

/* "3h 2m behind" or "45s ahead of", to go before "the server's", for a clock `skew_ms` ahead of the
 * reference. */
void sw_clock_describe(int64_t skew_ms, char *out, size_t len);

/* How a machine whose clock reads `skew_ms` ahead of ours (at our `now`) fares with
 * certificates it must verify, valid from `not_before` to `not_after` by our clock
 * (ms since the epoch; 0 for an unknown end). */
enum sw_clock_state sw_clock_judge(int64_t now, int64_t skew_ms, int64_t not_before,
				   int64_t not_after);

#endif

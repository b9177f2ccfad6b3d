/* The checked reading of an uploaded usage record: pure, tested on its own
 * (tests/unit/test_usagerec.c) and fuzzed (tests/fuzz/fuzz_usage.c). */
#ifndef USAGEREC_H
#define USAGEREC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define USAGE_DAY_MS	   86400000LL
#define USAGE_MIN_MS	   946684800000LL	/* 2000-01-01: nothing metered happened before */
#define USAGE_MAX_MS	   253402300799999LL	/* 9999-12-31: the widest a clock may claim */
#define USAGE_MAX_RUN_MS   (366 * USAGE_DAY_MS) /* one run, one queue wait */
#define USAGE_MAX_AHEAD_MS USAGE_DAY_MS		/* how far past the server's clock */

/* One record, its strings borrowed from the JSON object it was read from. */
struct usage_rec {
	const char *id, *product, *exe, *user, *host, *kind, *source, *build_id, *version;
	int64_t start, end, wait_ms; /* on the server's clock */
};

/*
 * The uploader's clock minus the server's, from the "now" of an upload: 0 within the
 * network's delay. `their_now` must already be within USAGE_MIN_MS..USAGE_MAX_MS.
 */
int64_t usagerec_skew(int64_t now, int64_t their_now);

/* The most runs at once among `n` runs from starts[i] to ends[i] (each end at or after
 * its start): both sorted in place, then swept. */
int64_t usagerec_peak(int64_t *starts, int64_t *ends, size_t n);

/*
 * Reads record `r` of an upload whose sender's clock is `skew` ms ahead of the server's,
 * whose clock reads `now`. Times are moved onto the server's clock and must then fall
 * between 2000 and a day past `now`, end no earlier than start, a run and a wait at most
 * 366 days; strings have bounded lengths and no control characters. `host` and
 * `product` may be NULL. Returns 0, or SW_EINVAL with a sentence naming the record.
 */
int usagerec_read(const json_t *r, int64_t now, int64_t skew, struct usage_rec *out, char *err,
		  size_t errlen);

#endif

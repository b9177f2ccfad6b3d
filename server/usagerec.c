/*
 * An uploaded usage record, checked before anything of it is stored. Records come from
 * files any local user can write (the agent's usage cache), so every number is bounded
 * where it is read: a time outside what a clock can mean, or a run or wait longer than
 * a year, is refused rather than stored, and no sum the report makes of stored rows can
 * overflow.
 */
#include "usagerec.h"

#include "error.h"
#include "json.h"
#include "progver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t usagerec_skew(int64_t now, int64_t their_now)
{
	int64_t skew = now - their_now;

	return skew > -2000 && skew < 2000 ? 0 : skew; /* network delay, not a clock error */
}

/* Control characters would reach logs and terminals through the report. */
static int printable(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

int usagerec_read(const json_t *r, int64_t now, int64_t skew, struct usage_rec *out, char *err,
		  size_t errlen)
{
	struct usage_rec u = {0};
	char why[200] = "";
	const char *id = "?";

	if (!json_is_object(r)) {
		sw_seterr(err, errlen, "a usage record must be an object");
		return SW_EINVAL;
	}
	if (sw_json_str(r, "id", 64, 1, &u.id, why, sizeof(why)))
		goto bad;
	id = u.id;
	/* Each time is bounded before the skew is added, so the sum cannot overflow. */
	if (sw_json_str(r, "product", 63, 0, &u.product, why, sizeof(why)) ||
	    sw_json_str(r, "exe", 255, 1, &u.exe, why, sizeof(why)) ||
	    sw_json_str(r, "user", 64, 1, &u.user, why, sizeof(why)) ||
	    sw_json_str(r, "host", 63, 0, &u.host, why, sizeof(why)) ||
	    sw_json_str(r, "kind", 16, 1, &u.kind, why, sizeof(why)) ||
	    sw_json_str(r, "source", 16, 1, &u.source, why, sizeof(why)) ||
	    sw_json_str(r, "build_id", 128, 0, &u.build_id, why, sizeof(why)) ||
	    sw_json_str(r, "version", SW_PROG_VERSION_MAX, 0, &u.version, why, sizeof(why)) ||
	    sw_json_int(r, "start", 0, USAGE_MAX_MS, 1, &u.start, why, sizeof(why)) ||
	    sw_json_int(r, "end", 0, USAGE_MAX_MS, 1, &u.end, why, sizeof(why)) ||
	    sw_json_int(r, "wait_ms", 0, USAGE_MAX_RUN_MS, 0, &u.wait_ms, why, sizeof(why)))
		goto bad;
	if (!printable(u.id) || !printable(u.product) || !printable(u.exe) || !printable(u.user) ||
	    !printable(u.host) || !printable(u.kind) || !printable(u.source) ||
	    !printable(u.build_id) || !printable(u.version) || !*u.id || !*u.user || !*u.exe) {
		snprintf(why, sizeof(why), "empty names, or control characters in one");
		goto bad;
	}
	if (strcmp(u.kind, "run") != 0 && strcmp(u.kind, "denied") != 0) {
		snprintf(why, sizeof(why), "kind must be run or denied");
		goto bad;
	}
	if (skew < -USAGE_MAX_MS || skew > USAGE_MAX_MS) {
		snprintf(why, sizeof(why), "the uploader's clock is out of range");
		goto bad;
	}
	u.start += skew;
	u.end += skew;
	if (u.end < u.start) {
		snprintf(why, sizeof(why), "it ends before it starts");
		goto bad;
	}
	if (u.start < USAGE_MIN_MS || u.end > now + USAGE_MAX_AHEAD_MS) {
		snprintf(why, sizeof(why),
			 "its times are before 2000 or more than a day ahead of the site server "
			 "(after its clock error of %lld ms)",
			 (long long)skew);
		goto bad;
	}
	if (u.end - u.start > USAGE_MAX_RUN_MS) {
		snprintf(why, sizeof(why), "a run of more than 366 days");
		goto bad;
	}
	*out = u;
	return 0;
bad:
	sw_seterr(err, errlen, "record %.64s: %s", id, why);
	return SW_EINVAL;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Sorts by radix, 11 bits a pass over the span of the values (3 passes for a day's
 * starts): a year's report sorts millions of times, and qsort's call per comparison
 * was a fifth of it. */
static void sort64(int64_t *v, size_t n)
{
	int64_t *tmp, *src = v, *dst;
	uint64_t min = 0, span = 0;

	if (n < 64 || !(tmp = malloc(n * sizeof(*tmp)))) {
		qsort(v, n, sizeof(*v), cmp64);
		return;
	}
	int64_t lo = v[0], hi = v[0];
	for (size_t i = 1; i < n; i++) {
		lo = v[i] < lo ? v[i] : lo;
		hi = v[i] > hi ? v[i] : hi;
	}
	min = (uint64_t)lo;
	span = (uint64_t)hi - min;
	dst = tmp;
	for (unsigned shift = 0; shift < 64 && (span >> shift); shift += 11) {
		size_t count[2048] = {0}, at = 0;

		for (size_t i = 0; i < n; i++)
			count[(((uint64_t)src[i] - min) >> shift) & 2047]++;
		for (size_t b = 0; b < 2048; b++) {
			size_t c = count[b];
			count[b] = at;
			at += c;
		}
		for (size_t i = 0; i < n; i++)
			dst[count[(((uint64_t)src[i] - min) >> shift) & 2047]++] = src[i];
		int64_t *t = src;
		src = dst;
		dst = t;
	}
	if (src != v)
		memcpy(v, src, n * sizeof(*v));
	free(tmp);
}

int64_t usagerec_peak(int64_t *starts, int64_t *ends, size_t n)
{
	size_t i = 0, k = 0;
	int64_t cur = 0, best = 0;

	sort64(starts, n);
	sort64(ends, n);
	while (i < n) {
		if (starts[i] < ends[k]) {
			if (++cur > best)
				best = cur;
			i++;
		} else {
			cur--;
			k++;
		}
	}
	return best;
}

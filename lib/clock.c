#include "clock.h"

#include <stdio.h>

void sw_clock_span(int64_t ms, char *out, size_t len)
{
	/* to the nearest of the last unit shown: a reading taken a few seconds late (the
	 * time the heartbeat travelled) is still "3h 0m" */
	long long a = (long long)(ms < 0 ? -ms : ms), s = (a + 500) / 1000;

	if (s < 60) {
		snprintf(out, len, "%llds", s);
	} else if (s < 3600) {
		snprintf(out, len, "%lldm %llds", s / 60, s % 60);
	} else if (s < 86400) {
		long long m = (a + 30000) / 60000;

		snprintf(out, len, "%lldh %lldm", m / 60, m % 60);
	} else {
		long long h = (a + 1800000) / 3600000;

		snprintf(out, len, "%lldd %lldh", h / 24, h % 24);
	}
}

void sw_clock_describe(int64_t skew_ms, char *out, size_t len)
{
	char span[48];

	sw_clock_span(skew_ms, span, sizeof(span));
	snprintf(out, len, "%s %s", span, skew_ms < 0 ? "behind" : "ahead of");
}

enum sw_clock_state sw_clock_judge(int64_t now, int64_t skew_ms, int64_t not_before,
				   int64_t not_after)
{
	int64_t theirs = now + skew_ms;

	if ((not_before && theirs < not_before) || (not_after && theirs > not_after))
		return SW_CLOCK_BREAKS_TLS;
	if (skew_ms <= -SW_CLOCK_WARN_MS || skew_ms >= SW_CLOCK_WARN_MS)
		return SW_CLOCK_SKEWED;
	return SW_CLOCK_OK;
}

/* POST /v1/usage bodies, as the site server reads each record (server/usagerec.c): from
 * an agent's usage cache, which any local user can write to. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "json.h"
#include "usagerec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const int64_t now = 1800000000000LL;
	struct usage_rec u;
	char err[256];
	int64_t their_now = now;
	json_t *j, *r;
	size_t i;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	if (sw_json_int(j, "now", 0, USAGE_MAX_MS, 0, &their_now, err, sizeof(err)) == 0) {
		int64_t skew = usagerec_skew(now, their_now);

		json_array_foreach(json_object_get(j, "records"), i, r)
		{
			if (usagerec_read(r, now, skew, &u, err, sizeof(err)))
				continue;
			/* what the report later sums and subtracts stays in range */
			if (u.start < USAGE_MIN_MS || u.end < u.start ||
			    u.end > now + USAGE_MAX_AHEAD_MS ||
			    u.end - u.start > USAGE_MAX_RUN_MS || u.wait_ms < 0 ||
			    u.wait_ms > USAGE_MAX_RUN_MS || !u.id || !u.user || !u.exe || !u.kind ||
			    !u.source)
				abort();
		}
	}
	json_decref(j);
	return 0;
}

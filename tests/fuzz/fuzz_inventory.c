/* An inventory or a delta as the site server reads it from an agent: any bytes are
 * refused or pass the one check; what passes has only valid packages. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dpkgdb.h"
#include "inventory.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const lists[] = {"packages", "added", "changed", "removed"};
	char err[256];
	json_t *j;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	for (int delta = 0; delta < 2; delta++) {
		const json_t *p;
		size_t i;

		if (sw_inv_check(j, delta, err, sizeof(err)))
			continue;
		for (size_t l = 0; l < sizeof(lists) / sizeof(*lists); l++)
			json_array_foreach(
			    json_object_get(j, lists[l]), i,
			    p) if (!sw_dpkg_name_valid(json_string_value(json_object_get(p, "n"))))
			    abort();
	}
	/* a delta between it and itself is no change */
	if (sw_inv_check(j, 0, err, sizeof(err)) == 0) {
		int same = 0;
		json_t *d = sw_inv_delta(j, j, &same);

		if (d || !same)
			abort();
	}
	json_decref(j);
	return 0;
}

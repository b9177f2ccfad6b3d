/* POST /v1/heartbeat bodies, as the server reads them from an enrolled agent, and the
 * services an agent reports in its answers. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "json.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	struct sw_heartbeat hb;
	json_t *j;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	if (sw_proto_heartbeat_parse(j, &hb, err, sizeof(err)) == 0) {
		/* The registry stores the facts serialised; make sure they still are. */
		char *s = sw_json_dump(hb.facts);

		if (s == NULL)
			abort();
		free(s);
		sw_proto_heartbeat_clear(&hb);
	}
	/* A list of services alone, as an agent answers a change of its roles. */
	json_decref(sw_proto_services_parse(json_object_get(j, "services"), err, sizeof(err)));
	json_decref(j);
	return 0;
}

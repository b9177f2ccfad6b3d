/* POST /v1/agent/poll bodies, as the server reads them from an enrolled agent, and its
 * replies, as the agent reads them. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	struct sw_poll p;
	json_t *j, *v;
	size_t i;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	if (sw_proto_poll_parse(j, &p, err, sizeof(err)) == 0) {
		/* what the server then reads without checking again */
		json_array_foreach(p.answers, i, v)
		{
			const char *id = json_string_value(json_object_get(v, "id"));
			json_int_t st = json_integer_value(json_object_get(v, "status"));
			if (!id || strlen(id) > SW_COMMAND_ID_MAX || st < 100 || st > 599)
				abort();
		}
		json_array_foreach(p.running, i, v)
		{
			if (!json_is_string(v))
				abort();
		}
		if (p.hold_ms < 0 || p.hold_ms > SW_POLL_HOLD_MAX_MS)
			abort();
		if (p.has_heartbeat) {
			if (!p.heartbeat.version || !json_is_object(p.heartbeat.facts))
				abort();
			sw_proto_heartbeat_clear(&p.heartbeat);
		}
	} else if (!err[0]) {
		abort(); /* a refusal says why */
	}
	err[0] = '\0';
	if (sw_proto_commands_check(j, err, sizeof(err)) == 0) {
		json_array_foreach(json_object_get(j, "commands"), i, v)
		{
			if (!json_string_value(json_object_get(v, "path")) ||
			    !json_string_value(json_object_get(v, "method")))
				abort();
		}
	} else if (!err[0]) {
		abort();
	}
	json_decref(j);
	return 0;
}

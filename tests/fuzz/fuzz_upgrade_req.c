/* The bodies of an upgrade: POST /v1/upgrades and /v1/upgrades/check on the server, and
 * POST /v1/upgrade/stage on an agent. Whatever a parse accepts must hold its promises. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "pkg.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_upgrade_req u;
	struct sw_stage_req st;
	char err[256];
	json_t *j;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	if (sw_proto_upgrade_req_parse(j, &u, err, sizeof(err)) == 0) {
		if (strlen(u.package) != 64 || strspn(u.package, "0123456789abcdef") != 64 ||
		    u.parallel < 1 || u.parallel > 1000 || u.stop_timeout_ms < 100 ||
		    u.stop_timeout_ms > 3600000 || u.max_failures < -1 ||
		    (strcmp(u.on_stuck, "defer") && strcmp(u.on_stuck, "kill") &&
		     strcmp(u.on_stuck, "remove-role") && strcmp(u.on_stuck, "fail")))
			abort();
	}
	if (sw_proto_stage_req_parse(j, &st, err, sizeof(err)) == 0) {
		if (!sw_version_valid(st.version) || strlen(st.sha256) != 64 ||
		    strncmp(st.url, "https://", 8) != 0 || strlen(st.url) > SW_STAGE_URL_MAX ||
		    st.size < 1 || st.size > SW_STAGE_PACKAGE_MAX || st.deadline_ms < 0)
			abort();
	}
	json_decref(j);
	return 0;
}

/* Configuration files, then the look-ups the server and the agent make on them. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const known[] = {
    "site.code",
    "server.listen",
    "server.heartbeat_interval",
    "server.handshake_timeout",
    "server.idle_timeout",
    "server.flush_interval_ms",
    "database.url",
    "database.busy_timeout_ms",
    "database.connect_timeout",
    "agent.name",
    "agent.server",
    "agent.listen",
    "agent.request_timeout_ms",
    "agent.connect_timeout_ms",
    "log.level",
    NULL,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	struct sw_conf *conf;
	unsigned u;

	if (sw_conf_parse((const char *)data, size, &conf, err, sizeof(err)))
		return 0;
	sw_conf_check(conf, known, err, sizeof(err));
	for (const char *const *k = known; *k; k++) {
		const char *dot = strchr(*k, '.');
		char section[32];

		snprintf(section, sizeof(section), "%.*s", (int)(dot - *k), *k);
		sw_conf_get(conf, section, dot + 1, "");
		sw_conf_get_uint(conf, section, dot + 1, 10, 1, 600000, &u, err, sizeof(err));
	}
	/* Keys can be empty and sections absent: look those up as well. */
	sw_conf_get(conf, "", "", NULL);
	sw_conf_get_uint(conf, "", "", 0, 0, 0xffffffffu, &u, err, sizeof(err));
	sw_conf_free(conf);
	return 0;
}

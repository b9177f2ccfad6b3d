#include "proto.h"

#include "error.h"
#include "json.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

#define ERR(...)                                                                                   \
	do {                                                                                       \
		if (err)                                                                           \
			snprintf(err, errlen, __VA_ARGS__);                                        \
	} while (0)

static int is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int sw_proto_token_split(const char *token, char secret[SW_TOKEN_SECRET_HEX + 1],
			 char pin[SW_TOKEN_PIN_HEX + 1])
{
	if (strlen(token) != SW_TOKEN_LEN || token[SW_TOKEN_SECRET_HEX] != '.' ||
	    !is_hex(token, SW_TOKEN_SECRET_HEX) ||
	    !is_hex(token + SW_TOKEN_SECRET_HEX + 1, SW_TOKEN_PIN_HEX))
		return SW_EINVAL;
	memcpy(secret, token, SW_TOKEN_SECRET_HEX);
	secret[SW_TOKEN_SECRET_HEX] = '\0';
	memcpy(pin, token + SW_TOKEN_SECRET_HEX + 1, SW_TOKEN_PIN_HEX);
	pin[SW_TOKEN_PIN_HEX] = '\0';
	return 0;
}

static int address_valid(const char *address, char *err, size_t errlen)
{
	char host[256];
	unsigned port;

	return sw_hostport_parse(address, host, sizeof(host), &port, 0, err, errlen);
}

int sw_proto_enroll_parse(const json_t *j, struct sw_enroll_req *out, char *err, size_t errlen)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = sw_json_str(j, "token", 128, 1, &out->token, err, errlen)) ||
	    (rc = sw_json_str(j, "name", 63, 1, &out->name, err, errlen)) ||
	    (rc = sw_json_str(j, "csr", 16384, 1, &out->csr, err, errlen)) ||
	    (rc = sw_json_str(j, "address", 300, 1, &out->address, err, errlen)))
		return rc;
	if (!sw_name_valid(out->name)) {
		ERR("name '%s' must be 1-63 letters, digits, '.', '_' or '-'", out->name);
		return SW_EINVAL;
	}
	return address_valid(out->address, err, errlen);
}

/* Facts an agent reports, each with its type and bound. */
static const struct {
	const char *key;
	int is_int;
	int64_t max;
} facts_known[] = {
    {"hostname", 0, 255},
    {"os", 0, 255},
    {"kernel", 0, 255},
    {"arch", 0, 64},
    {"cpus", 1, 65536},
    {"memory_total", 1, INT64_MAX},
    {"memory_available", 1, INT64_MAX},
    {"disk_free", 1, INT64_MAX},
    {"uptime", 1, INT64_MAX},
    {"agent_uptime", 1, INT64_MAX},
};

int sw_proto_heartbeat_parse(const json_t *j, struct sw_heartbeat *out, char *err, size_t errlen)
{
	json_t *facts, *clean = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = sw_json_str(j, "version", 64, 1, &out->version, err, errlen)) ||
	    (rc = sw_json_str(j, "address", 300, 1, &out->address, err, errlen)) ||
	    (rc = address_valid(out->address, err, errlen)))
		return rc;
	facts = json_object_get(j, "facts");
	if (!json_is_object(facts)) {
		ERR("field 'facts' must be an object");
		return SW_EINVAL;
	}
	clean = json_object();
	if (!clean)
		return SW_ENOMEM;
	for (size_t i = 0; i < SW_ARRAY_LEN(facts_known); i++) {
		const char *key = facts_known[i].key;
		if (!json_object_get(facts, key))
			continue;
		if (facts_known[i].is_int) {
			int64_t v = 0;
			rc = sw_json_int(facts, key, 0, facts_known[i].max, 1, &v, err, errlen);
			if (!rc)
				json_object_set_new(clean, key, json_integer(v));
		} else {
			const char *s;
			rc =
			    sw_json_str(facts, key, (size_t)facts_known[i].max, 1, &s, err, errlen);
			if (!rc)
				json_object_set_new(clean, key, json_string(s));
		}
		if (rc) {
			json_decref(clean);
			return rc;
		}
	}
	out->facts = clean;
	return 0;
}

int sw_proto_token_req_parse(const json_t *j, int64_t *ttl_s, char *err, size_t errlen)
{
	*ttl_s = 3600;
	return sw_json_int(j, "ttl", 1, 30 * 24 * 3600, 0, ttl_s, err, errlen);
}

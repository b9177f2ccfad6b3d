/* The bodies of the meter's API: every field typed and bounded, unknown fields refused. */
#include "meter.h"

#include "error.h"
#include "json.h"
#include "progver.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

int proto_id_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return i == METER_ID_LEN;
}

/* Refuses a member not in the NULL-terminated `known` list. */
static int only_known(const json_t *j, const char *const *known, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)j, key, v)
	{
		size_t i;

		for (i = 0; known[i]; i++)
			if (strcmp(key, known[i]) == 0)
				break;
		if (!known[i]) {
			sw_seterr(err, errlen, "unknown field '%.64s'", key);
			return SW_EINVAL;
		}
	}
	return 0;
}

static int get_id(const json_t *j, const char *key, char out[METER_ID_LEN + 1], char *err,
		  size_t errlen)
{
	const char *s;
	int rc;

	if ((rc = sw_json_str(j, key, METER_ID_LEN, 1, &s, err, errlen)))
		return rc;
	if (!proto_id_valid(s)) {
		sw_seterr(err, errlen, "field '%s' must be 32 lowercase hex digits", key);
		return SW_EINVAL;
	}
	memcpy(out, s, METER_ID_LEN + 1);
	return 0;
}

static int get_text(const json_t *j, const char *key, size_t max, char *out, char *err,
		    size_t errlen)
{
	const char *s;
	int rc;

	if ((rc = sw_json_str(j, key, max, 1, &s, err, errlen)))
		return rc;
	if (!*s) {
		sw_seterr(err, errlen, "field '%s' must not be empty", key);
		return SW_EINVAL;
	}
	for (const char *p = s; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			sw_seterr(err, errlen, "field '%s' contains a control character", key);
			return SW_EINVAL;
		}
	}
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

int proto_checkout_parse(const json_t *j, struct checkout_req *out, char *err, size_t errlen)
{
	static const char *const known[] = {"exe",     "user",	   "pid",     "client",
					    "wait_ms", "build_id", "version", NULL};
	const char *bid = NULL, *version = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = only_known(j, known, err, errlen)) ||
	    (rc = get_text(j, "exe", METER_EXE_MAX, out->exe, err, errlen)) ||
	    (rc = get_text(j, "user", METER_USER_MAX, out->user, err, errlen)) ||
	    (rc = sw_json_int(j, "pid", 0, INT32_MAX, 1, &out->pid, err, errlen)) ||
	    (rc = get_id(j, "client", out->client, err, errlen)) ||
	    (rc = sw_json_int(j, "wait_ms", 0, METER_MAX_WAIT_MS, 0, &out->wait_ms, err, errlen)) ||
	    (rc = sw_json_str(j, "build_id", METER_BUILD_ID_MAX, 0, &bid, err, errlen)) ||
	    (rc = sw_json_str(j, "version", METER_VERSION_MAX, 0, &version, err, errlen)))
		return rc;
	/* "" says the client looked and no package owns the program */
	if (version) {
		if (*version && !sw_prog_version_valid(version)) {
			sw_seterr(err, errlen,
				  "field 'version' must be a package version, like 9.1-1");
			return SW_EINVAL;
		}
		memcpy(out->version, version, strlen(version) + 1);
		out->has_version = 1;
	}
	if (bid) {
		if (!*bid || strspn(bid, "0123456789abcdef") != strlen(bid)) {
			sw_seterr(err, errlen, "field 'build_id' must be lowercase hex");
			return SW_EINVAL;
		}
		memcpy(out->build_id, bid, strlen(bid) + 1);
	}
	return 0;
}

int proto_heartbeat_parse(const json_t *j, struct heartbeat_req *out, char *err, size_t errlen)
{
	static const char *const known[] = {"client", "leases", "idle_s", NULL};
	json_t *arr, *v, *idle;
	size_t i;
	int rc;

	out->nleases = 0;
	if ((rc = only_known(j, known, err, errlen)) ||
	    (rc = get_id(j, "client", out->client, err, errlen)))
		return rc;
	arr = json_object_get(j, "leases");
	if (!json_is_array(arr)) {
		sw_seterr(err, errlen, "field 'leases' must be an array");
		return SW_EINVAL;
	}
	if (json_array_size(arr) > METER_HB_MAX_LEASES) {
		sw_seterr(err, errlen, "field 'leases' holds more than %d ids",
			  METER_HB_MAX_LEASES);
		return SW_ETOOBIG;
	}
	json_array_foreach(arr, i, v)
	{
		const char *s = json_string_value(v);

		if (!s || json_string_length(v) != METER_ID_LEN || !proto_id_valid(s)) {
			sw_seterr(err, errlen, "leases[%zu] must be 32 lowercase hex digits", i);
			return SW_EINVAL;
		}
		out->idle_s[out->nleases] = -1;
		memcpy(out->leases[out->nleases++], s, METER_ID_LEN + 1);
	}
	/* {lease: seconds its program has used no CPU}, for leases the answer asked it of */
	idle = json_object_get(j, "idle_s");
	if (idle && !json_is_object(idle)) {
		sw_seterr(err, errlen, "field 'idle_s' must be an object");
		return SW_EINVAL;
	}
	for (i = 0; idle && i < out->nleases; i++) {
		json_t *n = json_object_get(idle, out->leases[i]);

		if (!n)
			continue;
		if (!json_is_integer(n) || json_integer_value(n) < 0 ||
		    json_integer_value(n) > 100LL * 365 * 86400) {
			sw_seterr(err, errlen, "idle_s of lease %s must be a count of seconds",
				  out->leases[i]);
			return SW_EINVAL;
		}
		out->idle_s[i] = json_integer_value(n);
	}
	return 0;
}

int proto_checkin_parse(const json_t *j, struct checkin_req *out, char *err, size_t errlen)
{
	static const char *const known[] = {"client", "lease", NULL};
	int rc;

	if ((rc = only_known(j, known, err, errlen)) ||
	    (rc = get_id(j, "client", out->client, err, errlen)) ||
	    (rc = get_id(j, "lease", out->lease, err, errlen)))
		return rc;
	return 0;
}

/* Like get_text, but an absent field is "any". */
static int opt_text(const json_t *j, const char *key, size_t max, char *out, char *err,
		    size_t errlen)
{
	out[0] = '\0';
	if (!json_object_get(j, key))
		return 0;
	return get_text(j, key, max, out, err, errlen);
}

int proto_reclaim_parse(const json_t *j, struct reclaim_req *out, char *err, size_t errlen)
{
	static const char *const known[] = {"lease", "user", "host", "product", "by", NULL};
	int rc;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(j)) {
		sw_seterr(err, errlen, "a reclaim must be an object");
		return SW_EINVAL;
	}
	if ((rc = only_known(j, known, err, errlen)) ||
	    (json_object_get(j, "lease") && (rc = get_id(j, "lease", out->lease, err, errlen))) ||
	    (rc = opt_text(j, "user", METER_USER_MAX, out->user, err, errlen)) ||
	    (rc = opt_text(j, "host", METER_HOST_MAX, out->host, err, errlen)) ||
	    (rc = opt_text(j, "product", METER_NAME_MAX, out->product, err, errlen)) ||
	    (rc = opt_text(j, "by", METER_NAME_MAX, out->by, err, errlen)))
		return rc;
	if (!out->lease[0] && !out->user[0] && !out->host[0]) {
		sw_seterr(err, errlen, "a reclaim names a lease, a user or a host");
		return SW_EINVAL;
	}
	return 0;
}

int proto_borrow_parse(const json_t *j, struct borrow_req *out, char *err, size_t errlen)
{
	static const char *const known[] = {"product", "for_s", "client", "machine",
					    "user",    "uid",	NULL};
	int64_t uid = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(j)) {
		sw_seterr(err, errlen, "a borrow must be an object");
		return SW_EINVAL;
	}
	if ((rc = only_known(j, known, err, errlen)) ||
	    (rc = get_id(j, "client", out->client, err, errlen)) ||
	    (rc = opt_text(j, "product", METER_NAME_MAX, out->product, err, errlen)) ||
	    (rc = opt_text(j, "machine", 64, out->machine, err, errlen)) ||
	    (rc = opt_text(j, "user", METER_USER_MAX, out->user, err, errlen)) ||
	    (rc = sw_json_int(j, "uid", 0, UINT32_MAX, 0, &uid, err, errlen)) ||
	    (rc = sw_json_int(j, "for_s", SW_BORROW_MIN_S, SW_BORROW_LIMIT_S, 1, &out->for_s, err,
			      errlen)))
		return rc;
	if (!sw_name_valid(out->product)) {
		sw_seterr(err, errlen, "a borrow names a product");
		return SW_EINVAL;
	}
	if (out->machine[0] && strspn(out->machine, "0123456789abcdef") != strlen(out->machine)) {
		sw_seterr(err, errlen, "machine must be lowercase hex");
		return SW_EINVAL;
	}
	out->uid = (uint32_t)uid;
	return 0;
}

#include "json.h"

#include "error.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int sw_json_parse_object(const char *buf, size_t len, json_t **out, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j;

	*out = NULL;
	if (len == 0) {
		sw_seterr(err, errlen, "empty body: expected a JSON object");
		return SW_EINVAL;
	}
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		sw_seterr(err, errlen, "malformed JSON at byte %d: %s", je.position, je.text);
		return SW_EINVAL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		sw_seterr(err, errlen, "expected a JSON object");
		return SW_EINVAL;
	}
	*out = j;
	return 0;
}

int sw_json_str(const json_t *obj, const char *key, size_t maxlen, int required, const char **out,
		char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	size_t n;

	*out = NULL;
	if (!v || json_is_null(v)) {
		if (!required)
			return 0;
		sw_seterr(err, errlen, "missing field '%s'", key);
		return SW_EINVAL;
	}
	if (!json_is_string(v)) {
		sw_seterr(err, errlen, "field '%s' must be a string", key);
		return SW_EINVAL;
	}
	n = json_string_length(v);
	if (n > maxlen) {
		sw_seterr(err, errlen, "field '%s' is longer than %zu bytes", key, maxlen);
		return SW_ETOOBIG;
	}
	if (strlen(json_string_value(v)) != n) {
		sw_seterr(err, errlen, "field '%s' contains a NUL byte", key);
		return SW_EINVAL;
	}
	*out = json_string_value(v);
	return 0;
}

int sw_json_int(const json_t *obj, const char *key, int64_t min, int64_t max, int required,
		int64_t *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	json_int_t i;

	if (!v || json_is_null(v)) {
		if (!required)
			return 0;
		sw_seterr(err, errlen, "missing field '%s'", key);
		return SW_EINVAL;
	}
	if (!json_is_integer(v)) {
		sw_seterr(err, errlen, "field '%s' must be an integer", key);
		return SW_EINVAL;
	}
	i = json_integer_value(v);
	if (i < min || i > max) {
		sw_seterr(err, errlen, "field '%s' must be between %" PRId64 " and %" PRId64, key,
			  min, max);
		return SW_EINVAL;
	}
	*out = i;
	return 0;
}

char *sw_json_dump(const json_t *j)
{
	return json_dumps(j, JSON_COMPACT);
}

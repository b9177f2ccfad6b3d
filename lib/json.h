/* Checked access to JSON messages (jansson): every field is typed and bounded. */
#ifndef SW_JSON_H
#define SW_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Parses `len` bytes that must hold one JSON object (duplicate keys refused). */
int sw_json_parse_object(const char *buf, size_t len, json_t **out, char *err, size_t errlen);

/* A string member of at most `maxlen` bytes with no NUL. A missing member is an error
 * when `required`, otherwise *out is NULL. The string belongs to `obj`. */
int sw_json_str(const json_t *obj, const char *key, size_t maxlen, int required, const char **out,
		char *err, size_t errlen);

/* An integer member within [min, max]; a missing one leaves *out as it was unless
 * `required`. */
int sw_json_int(const json_t *obj, const char *key, int64_t min, int64_t max, int required,
		int64_t *out, char *err, size_t errlen);

/* A compact serialisation the caller frees, or NULL when out of memory. */
char *sw_json_dump(const json_t *j);

#endif

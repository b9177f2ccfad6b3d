/* The rules of a group's members (group.h). */
#include "group.h"

#include "error.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The next character of UTF-8 `s` into *cp; its length, or 0 where `s` is not UTF-8
 * (a stray byte, a sequence cut short, too long or a surrogate). */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
	size_t n, i;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, *cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, *cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, *cp = s[0] & 0x07;
	else
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		*cp = *cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && *cp < 0x800) || (n == 4 && (*cp < 0x10000 || *cp > 0x10ffff)) ||
	    (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return n;
}

/* Unicode's White_Space characters past ASCII's. */
static int wide_space(uint32_t cp)
{
	return cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

int sw_group_user_valid(const char *name)
{
	const unsigned char *s = (const unsigned char *)name;
	size_t len = strlen(name), i = 0, n;
	uint32_t cp;

	if (len == 0 || len > SW_GROUP_USER_MAX)
		return 0;
	while (i < len) {
		if (!(n = utf8_next(s + i, &cp)))
			return 0;
		if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == ' ' || cp == ',' ||
		    cp == '/' || wide_space(cp))
			return 0;
		i += n;
	}
	return 1;
}

/* One list of names: "users" or "hosts". */
static int list_check(const json_t *arr, const char *key, int users, char *err, size_t errlen)
{
	char shown[80];
	const json_t *v;
	size_t i;

	if (!json_is_array(arr)) {
		sw_seterr(err, errlen, "'%s' must be a list of %s names", key,
			  users ? "user" : "host");
		return SW_EINVAL;
	}
	json_array_foreach(arr, i, v)
	{
		const char *name = json_string_value(v);
		int ok;

		if (!name) {
			sw_seterr(err, errlen,
				  "'%s' must hold only names in quotes; item %zu is not", key,
				  i + 1);
			return SW_EINVAL;
		}
		/* a NUL inside would cut the name short of what was asked */
		ok = strlen(name) == json_string_length(v) &&
		     (users ? sw_group_user_valid(name) : sw_name_valid(name));
		if (ok)
			continue;
		sw_printable(shown, sizeof(shown), name);
		if (users)
			sw_seterr(err, errlen,
				  "user name '%s' must be 1-%d characters without spaces, commas, "
				  "slashes or control characters",
				  shown, SW_GROUP_USER_MAX);
		else
			sw_seterr(err, errlen,
				  "host name '%s' must be a system's name: 1-63 letters, digits, "
				  "'.', '_' or '-', not starting with '.' or '-'",
				  shown);
		return SW_EINVAL;
	}
	return 0;
}

int sw_group_members_check(const json_t *body, const json_t **users, const json_t **hosts,
			   char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	size_t n;
	int rc;

	*users = *hosts = NULL;
	if (!json_is_object(body)) {
		sw_seterr(err, errlen,
			  "the members must be an object with \"users\" and \"hosts\"");
		return SW_EINVAL;
	}
	json_object_foreach((json_t *)body, key, v)
	{
		if (strcmp(key, "users") != 0 && strcmp(key, "hosts") != 0) {
			char shown[80];

			sw_printable(shown, sizeof(shown), key);
			sw_seterr(err, errlen,
				  "unknown field '%s': give a group's members as \"users\" and "
				  "\"hosts\"",
				  shown);
			return SW_EINVAL;
		}
	}
	*users = json_object_get(body, "users");
	*hosts = json_object_get(body, "hosts");
	/* bounded before a name is looked at: each list alone, then both */
	n = json_array_size(*users) + json_array_size(*hosts);
	if (json_array_size(*users) > SW_GROUP_MEMBERS_MAX ||
	    json_array_size(*hosts) > SW_GROUP_MEMBERS_MAX || n > SW_GROUP_MEMBERS_MAX) {
		sw_seterr(err, errlen,
			  "a group holds at most %d members; name fewer users and hosts at once",
			  SW_GROUP_MEMBERS_MAX);
		rc = SW_EINVAL;
		goto fail;
	}
	if ((*users && (rc = list_check(*users, "users", 1, err, errlen))) ||
	    (*hosts && (rc = list_check(*hosts, "hosts", 0, err, errlen))))
		goto fail;
	return 0;
fail:
	*users = *hosts = NULL;
	return rc;
}

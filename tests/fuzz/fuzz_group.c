/* POST /v1/groups/NAME and /v1/groups/NAME/remove bodies, as the site server checks a
 * group's members (lib/group.c) before anything is stored. Whatever it accepts must
 * hold its promises. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "group.h"
#include "json.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void names_hold(const json_t *arr, int users)
{
	const json_t *v;
	size_t i;

	if (!arr)
		return;
	if (!json_is_array(arr) || json_array_size(arr) > SW_GROUP_MEMBERS_MAX)
		abort();
	json_array_foreach(arr, i, v)
	{
		const char *s = json_string_value(v);

		if (!s || strlen(s) != json_string_length(v) || strlen(s) > SW_GROUP_USER_MAX ||
		    strpbrk(s, " ,/\t\n\r") ||
		    (users ? !sw_group_user_valid(s) : !sw_name_valid(s)))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const json_t *users, *hosts;
	char err[256];
	json_t *j;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	if (sw_group_members_check(j, &users, &hosts, err, sizeof(err)) == 0) {
		if (json_object_size(j) > 2 ||
		    json_array_size(users) + json_array_size(hosts) > SW_GROUP_MEMBERS_MAX ||
		    users != json_object_get(j, "users") || hosts != json_object_get(j, "hosts"))
			abort();
		names_hold(users, 1);
		names_hold(hosts, 0);
	} else if (users || hosts || !err[0] || strlen(err) >= sizeof(err)) {
		abort();
	}
	json_decref(j);
	return 0;
}

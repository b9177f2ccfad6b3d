/* The collection language, as an administrator's --where reaches the site server: any
 * bytes are refused or parse, and what parses can judge a system. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collection.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *pkg(void *arg, const char *name)
{
	(void)arg;
	return name[0] == 'l' ? "1:2.0-1~b1" : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char text[SW_COLL_TEXT_MAX + 2], err[256];
	struct sw_coll_expr *e;
	const char *names[16];
	json_t *roles, *hw;

	if (size > SW_COLL_TEXT_MAX + 1)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (sw_coll_parse(text, &e, err, sizeof(err)))
		return 0;
	roles = json_pack("[s]", "test");
	hw = json_pack("{s{ss} s{sI}}", "os", "codename", "bookworm", "memory", "total",
		       (json_int_t)1 << 33);
	struct sw_coll_facts f = {"web1", roles, NULL, hw, pkg, NULL};
	sw_coll_match(e, &f);
	if (sw_coll_packages(e, names, 16) > 16)
		abort();
	sw_coll_free(e);
	json_decref(roles);
	json_decref(hw);
	return 0;
}

/* Products as the site server sends them to license servers and agents (lib/product.c):
 * one product, or a table {"products": [...]} with a program to match. What is accepted
 * must check again, write and read back the same, and match without harm. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "product.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(struct sw_product *p)
{
	struct sw_product q = *p, r;
	char err[256];
	json_t *j;

	if (sw_product_validate(&q, err, sizeof(err)) || memcmp(p, &q, sizeof(q)) != 0)
		abort();
	if ((p->hours_from < 0) != (p->hours_to < 0) || p->hours_from >= 25 * 60 ||
	    p->hours_to >= 25 * 60 || (p->hours_from >= 0 && p->hours_from == p->hours_to))
		abort();
	if (!(j = sw_product_json(p)))
		return;
	if (sw_product_parse(j, &r, err, sizeof(err)) || memcmp(p, &r, sizeof(r)) != 0)
		abort();
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_product p, **v;
	const json_t *prog;
	char err[256];
	json_t *j;
	size_t n;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	if (!json_object_get(j, "products")) {
		if (sw_product_parse(j, &p, err, sizeof(err)) == 0)
			check(&p);
		json_decref(j);
		return 0;
	}
	if (sw_product_array_parse(json_object_get(j, "products"), &v, &n, err, sizeof(err)) == 0) {
		struct sw_program pr = {"", NULL, NULL};
		const struct sw_product *m;
		unsigned need;

		for (size_t i = 0; i < n; i++)
			check(v[i]);
		prog = json_object_get(j, "program");
		if (json_string_value(json_object_get(prog, "exe")))
			pr.exe = json_string_value(json_object_get(prog, "exe"));
		pr.build_id = json_string_value(json_object_get(prog, "build_id"));
		pr.version = json_string_value(json_object_get(prog, "version"));
		m = sw_product_match((const struct sw_product *const *)v, n, &pr, &need);
		/* undecided answers nothing; a choice names the program or its build ID */
		if (m && (need || (strcmp(m->exe, pr.exe) != 0 &&
				   (!pr.build_id || strcmp(m->build_id, pr.build_id) != 0))))
			abort();
		sw_product_array_free(v, n);
	}
	json_decref(j);
	return 0;
}

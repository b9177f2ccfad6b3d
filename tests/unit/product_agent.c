/* The agent's side of test_product.c: agent.h cannot share a file with server.h. */
#include "agent/agent.h"

#include "product.h"

const char *test_passive_choose(const struct sw_product *const *v, size_t n, const char *exe,
				const char *build_id, const char *version, int *lookups);

struct answers {
	const char *build_id, *version;
	int *lookups;
};

static const char *bid(void *arg)
{
	struct answers *a = arg;

	++*a->lookups;
	return a->build_id;
}

static const char *ver(void *arg)
{
	struct answers *a = arg;

	++*a->lookups;
	return a->version;
}

/* passive_product_for() with a process whose build ID and version are given; counts
 * how often they were read. */
const char *test_passive_choose(const struct sw_product *const *v, size_t n, const char *exe,
				const char *build_id, const char *version, int *lookups)
{
	struct answers a = {build_id, version, lookups};
	struct passive_lookup look = {bid, ver, &a};
	json_t *excluded = json_array();
	const char *name = passive_product_for(v, n, excluded, exe, &look);

	json_decref(excluded);
	return name;
}

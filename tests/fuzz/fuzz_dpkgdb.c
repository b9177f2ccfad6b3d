/* dpkg's status file as siteward reads it: any bytes give a sorted list of valid
 * entries, each once. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dpkgdb.h"
#include "progver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_dpkg_list l = {0};
	char err[256];

	if (sw_dpkg_parse((const char *)data, size, &l, err, sizeof(err)) == 0)
		for (size_t i = 0; i < l.n; i++) {
			const struct sw_dpkg_pkg *p = &l.v[i];

			if (!sw_dpkg_name_valid(p->name) || !sw_prog_version_valid(p->version) ||
			    !p->arch[0] ||
			    (i > 0 && (strcmp(l.v[i - 1].name, p->name) > 0 ||
				       (strcmp(l.v[i - 1].name, p->name) == 0 &&
					strcmp(l.v[i - 1].arch, p->arch) >= 0))))
				abort();
		}
	sw_dpkg_list_free(&l);
	return 0;
}

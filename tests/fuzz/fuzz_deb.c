/* .deb files as the site server receives them: any bytes give a package whose name,
 * version and architecture are valid, or a refusal with its reason. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "deb.h"
#include "dpkgdb.h"
#include "error.h"
#include "progver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_deb_info info;
	char err[512] = "";
	int rc = sw_deb_read_mem(data, size, &info, err, sizeof(err));

	if (rc != 0) {
		if ((rc != SW_EINVAL && rc != SW_ENOMEM) || err[0] == '\0' || info.pkg.name[0])
			abort();
		return 0;
	}
	if (!sw_dpkg_name_valid(info.pkg.name) || !sw_prog_version_valid(info.pkg.version) ||
	    !info.pkg.arch[0] || (info.has_scripts != 0 && info.has_scripts != 1))
		abort();
	return 0;
}

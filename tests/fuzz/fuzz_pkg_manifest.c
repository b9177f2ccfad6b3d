/* manifest.json of a service pack, as an agent reads it from a package. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pkg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_pkg_manifest *m = NULL;
	uint64_t total = 0;
	char err[512];

	if (sw_pkg_manifest_parse((const char *)data, size, &m, err, sizeof(err)) != 0) {
		if (m != NULL)
			abort();
		return 0;
	}
	/* What the parser promises its callers. */
	if (m->format != SW_PKG_FORMAT || !sw_version_valid(m->version) ||
	    !sw_version_valid(m->min_version) || sw_version_cmp(m->min_version, m->version) > 0 ||
	    m->nfiles > SW_PKG_FILES_MAX)
		abort();
	for (size_t i = 0; i < m->nfiles; i++) {
		const struct sw_pkg_file *f = &m->files[i];
		if (!sw_pkg_path_valid(f->path, NULL) || f->size > SW_PKG_FILE_MAX ||
		    (f->mode & ~0755u) || strlen(f->sha256) != 64 ||
		    sw_pkg_manifest_find(m, f->path) != f)
			abort();
		if (i > 0 && strcmp(m->files[i - 1].path, f->path) >= 0)
			abort();
		total += f->size;
	}
	if (total != m->total_size || total > SW_PKG_TOTAL_MAX)
		abort();
	for (size_t i = 0; i < m->nmigrations; i++)
		if (strchr(m->migrations[i], '/') != NULL)
			abort();
	sw_pkg_manifest_free(m);
	return 0;
}

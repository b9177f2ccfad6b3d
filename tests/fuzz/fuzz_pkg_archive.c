/* Service packs as an agent receives them: any bytes, read as a package and checked
 * against a site key. The seeds in corpus/fuzz_pkg_archive/ are signed by a throw-away
 * key whose public half is below, so mutations of their payload get past the signature;
 * the private half was not kept. To make new seeds: a site folder holding a new
 * signing.key and signing.pub, `siteward --site DIR package build`, gunzip (the reader
 * takes plain tar too, which a fuzzer mutates better), and replace the key below. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "pkg.h"

static const char site_pub[] = "-----BEGIN PUBLIC KEY-----\n"
			       "MCowBQYDK2VwAyEAEOQPboY7+YZacj8u1J9NhtRAGDymPf3WnCXtcWkoKQY=\n"
			       "-----END PUBLIC KEY-----\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_pkg_manifest *m = NULL;
	char err[512] = "";
	int rc;

	rc = sw_pkg_verify_mem(data, size, site_pub, &m, err, sizeof(err));
	if (rc != 0) {
		if (m != NULL || err[0] == '\0')
			abort();
		return 0;
	}
	if (m->package_size != size || strlen(m->package_sha256) != 64)
		abort();
	sw_pkg_manifest_free(m);
	return 0;
}

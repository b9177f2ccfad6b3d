/* dpkg-query's answer naming a file's package is read from another program's output:
 * any bytes must give a valid package name or none. */
#include "progver.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *paths[] = {"/usr/bin/sleep", "/bin/sleep"};
	char pkg[64];

	if (sw_dpkg_owner_parse((const char *)data, size, paths, 2, pkg, sizeof(pkg)) == 0 &&
	    (strlen(pkg) == 0 || strlen(pkg) >= sizeof(pkg)))
		__builtin_trap();
	return 0;
}

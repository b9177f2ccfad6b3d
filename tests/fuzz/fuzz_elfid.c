/* The ELF build-ID reader takes a file's bytes: any image must be refused cleanly. */
#include "elfid.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char hex[2 * SW_BUILD_ID_MAX + 1];

	sw_elf_build_id_mem(data, size, hex, sizeof(hex));
	return 0;
}

/* The GNU build ID of an ELF executable (libelf), which a renamed copy keeps. */
#ifndef SW_ELFID_H
#define SW_ELFID_H

#include <stddef.h>

/* Largest build ID read, in bytes (GNU tools write 20). */
#define SW_BUILD_ID_MAX 64

/* The build ID of the file at `path` as lowercase hex in `hex` (2*SW_BUILD_ID_MAX+1).
 * SW_ENOTFOUND if the file has none, SW_EINVAL if it is not ELF. */
int sw_elf_build_id(const char *path, char *hex, size_t hexlen);
/* The same for an image in memory (for tests and fuzzing). */
int sw_elf_build_id_mem(const void *data, size_t len, char *hex, size_t hexlen);

#endif

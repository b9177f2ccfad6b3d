/* ELF build IDs: read from a real executable, kept by a renamed copy, refused for
 * files that are not ELF. */
#include "elfid.h"
#include "error.h"
#include "util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void test_real_and_renamed(void **state)
{
	char hex[2 * SW_BUILD_ID_MAX + 1], hex2[sizeof(hex)], copy[] = "/tmp/sw-elf-XXXXXX";
	char *data;
	size_t len;
	int fd;

	assert_int_equal(sw_elf_build_id("/bin/sleep", hex, sizeof(hex)), 0);
	assert_int_equal(strlen(hex), 40);
	assert_int_equal(sw_file_read("/bin/sleep", 64 * 1024 * 1024, &data, &len, NULL, 0), 0);
	fd = mkstemp(copy);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	assert_int_equal(sw_elf_build_id(copy, hex2, sizeof(hex2)), 0);
	assert_string_equal(hex, hex2);
	assert_int_equal(sw_elf_build_id_mem(data, len, hex2, sizeof(hex2)), 0);
	assert_string_equal(hex, hex2);
	/* a cut-off image is refused or has no ID, never read past its end */
	assert_int_not_equal(sw_elf_build_id_mem(data, 100, hex2, sizeof(hex2)), 0);
	/* too small a buffer for the ID */
	assert_int_equal(sw_elf_build_id_mem(data, len, hex2, 8), SW_EINVAL);
	unlink(copy);
	free(data);
}

static void test_not_elf(void **state)
{
	char hex[2 * SW_BUILD_ID_MAX + 1];

	assert_int_equal(sw_elf_build_id_mem("#!/bin/sh\necho hi\n", 18, hex, sizeof(hex)),
			 SW_EINVAL);
	assert_int_equal(sw_elf_build_id_mem("", 0, hex, sizeof(hex)), SW_EINVAL);
	assert_int_equal(sw_elf_build_id("/nonexistent", hex, sizeof(hex)), SW_ENOTFOUND);
	assert_int_equal(sw_elf_build_id("/etc/passwd", hex, sizeof(hex)), SW_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_real_and_renamed),
	    cmocka_unit_test(test_not_elf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

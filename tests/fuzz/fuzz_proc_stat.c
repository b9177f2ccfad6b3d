/* /proc/PID/stat as a process can shape it (its command name is its own): any text is
 * read or refused cleanly, and a field read is one that was there. */
#include "procstat.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_proc_stat st;

	if (sw_proc_stat_parse((const char *)data, size, &st) == 0 && !st.state)
		abort();
	return 0;
}

/* Process-event datagrams come from a netlink socket: any bytes must give sane events
 * or none. */
#include "procev.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(void *arg, const struct sw_procev *ev)
{
	(void)arg;
	if (ev->pid <= 0 || (ev->kind != SW_PROCEV_EXEC && ev->kind != SW_PROCEV_EXIT))
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (sw_procev_parse(data, size, check, NULL) < 0)
		__builtin_trap();
	return 0;
}

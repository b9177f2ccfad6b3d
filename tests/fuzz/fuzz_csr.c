/* Certificate requests, as the server reads them from an enrolling agent. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pki.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Made once: creating a CA key costs more than a thousand runs of the parser. */
static struct sw_pki_ca *ca;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256], *cert = NULL, *key = NULL;

	if (sw_pki_ca_create("FUZZ", 1, &cert, &key, err, sizeof(err)) ||
	    sw_pki_ca_load(cert, key, &ca, err, sizeof(err)))
		abort();
	free(cert);
	free(key);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const sans[] = {"127.0.0.1", NULL};
	const struct sw_pki_issue what = {
	    .cn = "web1",
	    .role = SW_PKI_ROLE_AGENT,
	    .sans = sans,
	    .days = 1,
	    .purposes = SW_PKI_TLS_SERVER | SW_PKI_TLS_CLIENT,
	};
	char err[256], serial[41], *cert = NULL;

	/* The bytes are passed with their length and no NUL after them on purpose. */
	if (sw_pki_ca_issue(ca, (const char *)data, size, &what, &cert, serial, err, sizeof(err)) ==
	    0)
		free(cert);
	return 0;
}

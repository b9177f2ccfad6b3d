/* The site's CAs as a PEM bundle: what an agent takes from the server's reply during a
 * rotation (renew_trust()) and what every program reads from ca.crt. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pki.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[SW_PKI_BUNDLE_ID_LEN + 1], err[256], *pem = malloc(size + 1);
	struct sw_pki_ca_info cas[4];
	struct sw_pki_verifier *v = NULL;
	size_t n = 0;

	if (!pem)
		return 0;
	memcpy(pem, data, size);
	pem[size] = '\0';
	sw_pki_bundle_id(pem, id, err, sizeof(err));
	if (sw_pki_bundle_read(pem, cas, 4, &n, err, sizeof(err)) == 0)
		sw_pki_bundle_free(cas, n);
	if (sw_pki_verifier_new(pem, &v, err, sizeof(err)) == 0)
		sw_pki_verifier_free(v);
	free(pem);
	return 0;
}

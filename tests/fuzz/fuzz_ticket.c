/* User tickets as a metering server reads them from a Siteward-Ticket header. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pki.h"
#include "ticket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sw_pki_verifier *v;
	struct sw_identity signer;
	struct sw_ticket t;
	char err[256];

	if (!v) {
		char *cert = NULL, *key = NULL;

		if (sw_pki_ca_create("FUZ", 30, &cert, &key, err, sizeof(err)) ||
		    sw_pki_verifier_new(cert, &v, err, sizeof(err)))
			abort();
		free(cert);
		free(key);
	}
	if (sw_ticket_parse((const char *)data, size, &t, err, sizeof(err)) == 0 &&
	    (!t.host[0] || !sw_ticket_user_valid(t.user) || t.expires_ms <= t.issued_ms))
		abort();
	/* nothing this CA did not sign may pass */
	if (sw_ticket_verify(v, (const char *)data, size, 0, &t, &signer, err, sizeof(err)) == 0)
		abort();
	return 0;
}

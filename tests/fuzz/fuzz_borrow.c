/* Borrowed licenses as siteward-run reads them from a file the user can write, and the
 * agent's clock mark it reads them by. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "borrow.h"
#include "clockmark.h"
#include "pki.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sw_pki_verifier *v;
	struct sw_identity signer;
	struct sw_borrow b;
	struct sw_clockmark m;
	char err[256];

	if (!v) {
		char *cert = NULL, *key = NULL;

		if (sw_pki_ca_create("FUZ", 30, &cert, &key, err, sizeof(err)) ||
		    sw_pki_verifier_new(cert, &v, err, sizeof(err)))
			abort();
		free(cert);
		free(key);
	}
	if (sw_borrow_parse((const char *)data, size, &b, err, sizeof(err)) == 0 &&
	    (strlen(b.lease) != 32 || !sw_name_valid(b.host) || !sw_name_valid(b.meter) ||
	     b.expires_ms <= b.issued_ms || !b.product.name[0] || !b.product.exe[0]))
		abort();
	if (sw_clockmark_parse((const char *)data, size, &m) == 0 &&
	    (m.wall_ms < 1 || m.boot_ms < 0 || strlen(m.boot_id) >= sizeof(m.boot_id)))
		abort();
	/* nothing this CA did not sign may pass */
	if (sw_borrow_verify(v, (const char *)data, size, &b, &signer, err, sizeof(err)) == 0)
		abort();
	return 0;
}

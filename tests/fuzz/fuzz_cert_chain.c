/* Peer certificates as a TLS handshake hands them to the server: one DER certificate. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pki.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed CA (site FUZZ, valid until 2126) rather than a fresh one, so that the seed
 * certificates in corpus/fuzz_cert_chain, which it issued, pass verification and the
 * fuzzer reaches the checks made after it. Its key is not kept: new seeds need a new CA. */
static const char ca_pem[] = "-----BEGIN CERTIFICATE-----\n"
			     "MIIBuzCCAWKgAwIBAgIQU7vt/LbmG/w8J6mfFnyVxDAKBggqhkjOPQQDAjA9MRsw\n"
			     "GQYDVQQKExJzaXRld2FyZCBzaXRlIEZVWloxHjAcBgNVBAMTFXNpdGV3YXJkIHNp\n"
			     "dGUgRlVaWiBDQTAgFw0yNjExMjUwMDIyNDZaGA8yMTI2MTEwMTAxMjI0NlowPTEb\n"
			     "MBkGA1UEChMSc2l0ZXdhcmQgc2l0ZSBGVVpaMR4wHAYDVQQDExVzaXRld2FyZCBz\n"
			     "aXRlIEZVWlogQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARmO03igtwB0PEi\n"
			     "IC5mh34Ux14yhpIshxHHpXWQOwhdoZIu7f2aK6/j5f/uBQ3U31J/6ZrMPLfwD5gg\n"
			     "ZkuSodqIo0IwQDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAdBgNV\n"
			     "HQ4EFgQU1Ju+mEWGfCxfpsYwtnwieqQrIEwwCgYIKoZIzj0EAwIDRwAwRAIgazsS\n"
			     "0xZMZRgXByPgM+J1siu0+BrQNk0b48hRESVbaUMCIFij24rxq2euWl2CQDazr/eL\n"
			     "dR2MfPplQyHH4DKtwcaH\n"
			     "-----END CERTIFICATE-----\n";

static struct sw_pki_verifier *verifier;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256];

	if (sw_pki_verifier_new(ca_pem, &verifier, err, sizeof(err)))
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gnutls_datum_t cert = {(unsigned char *)data, (unsigned)size};
	struct sw_identity id;
	char err[256];

	if (size > UINT32_MAX)
		return 0;
	sw_pki_verify_chain(verifier, &cert, 1, &id, err, sizeof(err));
	return 0;
}

/*
 * Signed text: a payload a site certificate vouches for, that travels as one line and is
 * checked without asking anyone. User tickets (ticket.h) and borrowed licenses
 * (borrow.h) are made of it.
 *
 * Text: PREFIX "." base64(payload JSON) "." base64(signature) "." base64(certificate,
 * DER). The signature is ECDSA P-256/SHA-256 over the bytes before the second dot, by the
 * key of the certificate, which must chain to the verifier's CA.
 */
#ifndef SW_SIGNED_H
#define SW_SIGNED_H

#include "pki.h"

#include <jansson.h>
#include <stddef.h>

/* The parts of signed text, each NUL-terminated in `buf`. */
struct sw_signed {
	char *buf;
	const char *payload, *sig, *cert; /* base64 */
	size_t signed_len;		  /* PREFIX "." payload */
};

/* Splits `len` bytes of `text` (at most `max`) that begin with PREFIX "."; SW_EINVAL with
 * a reason naming `what` ("a ticket") when they are not signed text of that kind. Free
 * with sw_signed_free(), also after a failure. */
int sw_signed_split(const char *prefix, const char *what, const char *text, size_t len, size_t max,
		    struct sw_signed *s, char *err, size_t errlen);
void sw_signed_free(struct sw_signed *s);

/* The payload as a JSON object of at most `max` bytes. Not yet checked: what a holder may
 * read of its own text, and what fuzz targets drive. */
int sw_signed_payload(const struct sw_signed *s, const char *what, size_t max, json_t **out,
		      char *err, size_t errlen);

/* 0 if the signature is by the key of the text's certificate and that certificate chains
 * to `v`'s CAs; `signer` gets its subject. SW_EDENIED with the reason otherwise. */
int sw_signed_check(struct sw_pki_verifier *v, const struct sw_signed *s,
		    struct sw_identity *signer, char *err, size_t errlen);

/* Signs `payload` with the key and certificate (PEM); *out is the text (caller frees). */
int sw_signed_make(const char *prefix, const json_t *payload, const char *key_pem,
		   const char *cert_pem, char **out, char *err, size_t errlen);

#endif

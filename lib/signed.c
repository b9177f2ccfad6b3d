/* Signed text: see signed.h. */
#include "signed.h"

#include "error.h"
#include "json.h"

#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sw_signed_free(struct sw_signed *s)
{
	free(s->buf);
	memset(s, 0, sizeof(*s));
}

int sw_signed_split(const char *prefix, const char *what, const char *text, size_t len, size_t max,
		    struct sw_signed *s, char *err, size_t errlen)
{
	size_t plen = strlen(prefix);
	char *d1, *d2, *d3;

	memset(s, 0, sizeof(*s));
	if (len == 0 || len > max || memchr(text, '\0', len)) {
		sw_seterr(err, errlen, "%s is 1 to %zu bytes of text", what, max);
		return SW_EINVAL;
	}
	if (len <= plen || memcmp(text, prefix, plen) != 0 || text[plen] != '.') {
		sw_seterr(err, errlen, "not %s (it does not begin with '%s.')", what, prefix);
		return SW_EINVAL;
	}
	if (!(s->buf = strndup(text, len)))
		return SW_ENOMEM;
	d1 = s->buf + plen;
	d2 = strchr(d1 + 1, '.');
	d3 = d2 ? strchr(d2 + 1, '.') : NULL;
	if (!d2 || !d3 || strchr(d3 + 1, '.')) {
		sw_signed_free(s);
		sw_seterr(err, errlen, "%s has four parts separated by dots", what);
		return SW_EINVAL;
	}
	s->signed_len = (size_t)(d2 - s->buf);
	*d2 = *d3 = '\0';
	s->payload = d1 + 1;
	s->sig = d2 + 1;
	s->cert = d3 + 1;
	return 0;
}

int sw_signed_payload(const struct sw_signed *s, const char *what, size_t max, json_t **out,
		      char *err, size_t errlen)
{
	gnutls_datum_t in = {(unsigned char *)s->payload, (unsigned)strlen(s->payload)};
	gnutls_datum_t raw = {NULL, 0};
	int rc;

	*out = NULL;
	if (in.size == 0 || in.size > (max / 3 + 1) * 4 || gnutls_base64_decode2(&in, &raw) < 0) {
		sw_seterr(err, errlen, "the payload of %s is not base64 of at most %zu bytes", what,
			  max);
		return SW_EINVAL;
	}
	rc = sw_json_parse_object((const char *)raw.data, raw.size, out, err, errlen);
	gnutls_free(raw.data);
	return rc;
}

int sw_signed_check(struct sw_pki_verifier *v, const struct sw_signed *s,
		    struct sw_identity *signer, char *err, size_t errlen)
{
	/* split() cut the text at the second dot: what was signed is still in one piece */
	return sw_pki_verify_signed(v, s->cert, s->buf, s->signed_len, s->sig, signer, err, errlen);
}

int sw_signed_make(const char *prefix, const json_t *payload, const char *key_pem,
		   const char *cert_pem, char **out, char *err, size_t errlen)
{
	gnutls_datum_t raw, b64 = {NULL, 0};
	char *text = NULL, *sig = NULL, *cert = NULL, *head = NULL;
	int rc = SW_ENOMEM;

	*out = NULL;
	if (!(text = sw_json_dump(payload)))
		goto out;
	raw.data = (unsigned char *)text;
	raw.size = (unsigned)strlen(text);
	if (gnutls_base64_encode2(&raw, &b64) < 0) {
		b64.data = NULL;
		goto out;
	}
	if (asprintf(&head, "%s.%.*s", prefix, (int)b64.size, (const char *)b64.data) < 0) {
		head = NULL;
		goto out;
	}
	if ((rc = sw_pki_key_sign(key_pem, head, strlen(head), &sig, err, errlen)) ||
	    (rc = sw_pki_cert_b64(cert_pem, &cert, err, errlen)))
		goto out;
	rc = asprintf(out, "%s.%s.%s", head, sig, cert) < 0 ? SW_ENOMEM : 0;
	if (rc)
		*out = NULL;
out:
	if (rc == SW_ENOMEM)
		sw_seterr(err, errlen, "out of memory");
	gnutls_free(b64.data);
	free(text);
	free(head);
	free(sig);
	free(cert);
	return rc;
}

/* User tickets: see ticket.h. */
#include "ticket.h"

#include "error.h"
#include "json.h"

#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAYLOAD_MAX 512 /* bytes of payload JSON */

int sw_ticket_user_valid(const char *s)
{
	size_t n = 0;

	for (; s && s[n]; n++)
		if (n >= 64 || (unsigned char)s[n] <= ' ' || (unsigned char)s[n] >= 0x7f)
			return 0;
	return n > 0;
}

static int host_valid(const char *s)
{
	size_t n = 0;

	for (; s && s[n]; n++)
		if (n >= 63 || !((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
				 (s[n] >= '0' && s[n] <= '9') || strchr("-._", s[n])))
			return 0;
	return n > 0;
}

/* The ticket's three dots: where the payload, the signature and the certificate are. */
struct parts {
	const char *payload, *sig, *cert; /* each NUL-terminated in `buf` */
	char *buf;
	size_t signed_len; /* "v1." + payload */
};

static int split(const char *text, size_t len, struct parts *p, char *err, size_t errlen)
{
	char *d1, *d2, *d3;

	memset(p, 0, sizeof(*p));
	if (len == 0 || len > SW_TICKET_MAX || memchr(text, '\0', len)) {
		sw_seterr(err, errlen, "a ticket is 1 to %d bytes of text", SW_TICKET_MAX);
		return SW_EINVAL;
	}
	if (len < 3 || memcmp(text, "v1.", 3) != 0) {
		sw_seterr(err, errlen, "not a ticket of version 1");
		return SW_EINVAL;
	}
	if (!(p->buf = strndup(text, len)))
		return SW_ENOMEM;
	d1 = p->buf + 2;
	d2 = strchr(d1 + 1, '.');
	d3 = d2 ? strchr(d2 + 1, '.') : NULL;
	if (!d2 || !d3 || strchr(d3 + 1, '.')) {
		free(p->buf);
		p->buf = NULL;
		sw_seterr(err, errlen, "a ticket has four parts separated by dots");
		return SW_EINVAL;
	}
	p->signed_len = (size_t)(d2 - p->buf);
	*d2 = *d3 = '\0';
	p->payload = d1 + 1;
	p->sig = d2 + 1;
	p->cert = d3 + 1;
	return 0;
}

static int payload_read(const char *b64, struct sw_ticket *t, char *err, size_t errlen)
{
	gnutls_datum_t in = {(unsigned char *)b64, (unsigned)strlen(b64)}, raw = {NULL, 0};
	json_t *j = NULL;
	const char *host = NULL, *user = NULL;
	int64_t uid = 0, issued = 0, expires = 0;
	int rc = SW_EINVAL;

	memset(t, 0, sizeof(*t));
	if (in.size == 0 || in.size > (PAYLOAD_MAX / 3 + 1) * 4 ||
	    gnutls_base64_decode2(&in, &raw) < 0) {
		raw.data = NULL;
		sw_seterr(err, errlen, "the ticket's payload is not base64 of at most %d bytes",
			  PAYLOAD_MAX);
		goto out;
	}
	if (sw_json_parse_object((const char *)raw.data, raw.size, &j, err, errlen))
		goto out;
	if (sw_json_str(j, "host", 63, 1, &host, err, errlen) ||
	    sw_json_str(j, "user", 64, 1, &user, err, errlen) ||
	    sw_json_int(j, "uid", 0, UINT32_MAX, 1, &uid, err, errlen) ||
	    sw_json_int(j, "issued_ms", 0, INT64_MAX / 2, 1, &issued, err, errlen) ||
	    sw_json_int(j, "expires_ms", 0, INT64_MAX / 2, 1, &expires, err, errlen))
		goto out;
	if (!host_valid(host) || !sw_ticket_user_valid(user)) {
		sw_seterr(err, errlen, "the ticket's host or user is not a valid name");
		goto out;
	}
	if (expires <= issued || expires - issued > SW_TICKET_MAX_LIFE_MS) {
		sw_seterr(err, errlen, "the ticket's lifetime is not between 0 and 7 days");
		goto out;
	}
	snprintf(t->host, sizeof(t->host), "%s", host);
	snprintf(t->user, sizeof(t->user), "%s", user);
	t->uid = (uint32_t)uid;
	t->issued_ms = issued;
	t->expires_ms = expires;
	rc = 0;
out:
	json_decref(j);
	gnutls_free(raw.data);
	return rc;
}

int sw_ticket_parse(const char *text, size_t len, struct sw_ticket *t, char *err, size_t errlen)
{
	struct parts p;
	int rc;

	memset(t, 0, sizeof(*t));
	if ((rc = split(text, len, &p, err, errlen)))
		return rc;
	rc = payload_read(p.payload, t, err, errlen);
	free(p.buf);
	return rc;
}

int sw_ticket_verify(struct sw_pki_verifier *v, const char *text, size_t len, int64_t now_ms,
		     struct sw_ticket *t, struct sw_identity *signer, char *err, size_t errlen)
{
	struct parts p;
	char why[200];
	int rc;

	memset(signer, 0, sizeof(*signer));
	if ((rc = split(text, len, &p, err, errlen)))
		return rc;
	if ((rc = payload_read(p.payload, t, err, errlen)))
		goto out;
	/* split() cut the text at the second dot: what was signed is still in one piece */
	rc = sw_pki_verify_signed(v, p.cert, p.buf, p.signed_len, p.sig, signer, why, sizeof(why));
	if (rc) {
		sw_seterr(err, errlen, "the ticket's signature is refused: %s", why);
		rc = SW_EDENIED;
		goto out;
	}
	rc = SW_EDENIED;
	if (strcmp(signer->role, SW_PKI_ROLE_AGENT) != 0 || strcmp(signer->cn, t->host) != 0) {
		sw_seterr(err, errlen, "the ticket for %s is signed by %s %s, not by its agent",
			  t->host, signer->role, signer->cn);
		goto out;
	}
	if (t->issued_ms > now_ms + SW_TICKET_LEEWAY_MS) {
		sw_seterr(err, errlen, "the ticket was issued %lld s in the future",
			  (long long)((t->issued_ms - now_ms) / 1000));
		goto out;
	}
	if (t->expires_ms <= now_ms) {
		sw_seterr(err, errlen, "the ticket expired %lld s ago",
			  (long long)((now_ms - t->expires_ms) / 1000));
		goto out;
	}
	rc = 0;
out:
	if (rc)
		memset(signer, 0, sizeof(*signer));
	free(p.buf);
	return rc;
}

int sw_ticket_make(const char *key_pem, const char *cert_pem, const struct sw_ticket *t, char **out,
		   char *err, size_t errlen)
{
	gnutls_datum_t raw, b64 = {NULL, 0};
	char *payload = NULL, *sig = NULL, *cert = NULL, *head = NULL;
	json_t *j;
	int rc = SW_ENOMEM;

	*out = NULL;
	if (!host_valid(t->host) || !sw_ticket_user_valid(t->user)) {
		sw_seterr(err, errlen, "not a valid host or user name");
		return SW_EINVAL;
	}
	j = json_pack("{ss sI ss sI sI}", "host", t->host, "uid", (json_int_t)t->uid, "user",
		      t->user, "issued_ms", (json_int_t)t->issued_ms, "expires_ms",
		      (json_int_t)t->expires_ms);
	payload = j ? sw_json_dump(j) : NULL;
	json_decref(j);
	if (!payload)
		goto out;
	raw.data = (unsigned char *)payload;
	raw.size = (unsigned)strlen(payload);
	if (gnutls_base64_encode2(&raw, &b64) < 0) {
		b64.data = NULL;
		goto out;
	}
	if (asprintf(&head, "v1.%.*s", (int)b64.size, (const char *)b64.data) < 0) {
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
	free(payload);
	free(head);
	free(sig);
	free(cert);
	return rc;
}

/* User tickets: see ticket.h. */
#include "ticket.h"

#include "error.h"
#include "json.h"
#include "signed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAYLOAD_MAX   512 /* bytes of payload JSON */
#define TICKET_PREFIX "v1"

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

static int payload_read(const struct sw_signed *sg, struct sw_ticket *t, char *err, size_t errlen)
{
	json_t *j = NULL;
	const char *host = NULL, *user = NULL;
	int64_t uid = 0, issued = 0, expires = 0;
	int rc = SW_EINVAL;

	memset(t, 0, sizeof(*t));
	if (sw_signed_payload(sg, "a ticket", PAYLOAD_MAX, &j, err, errlen))
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
	return rc;
}

int sw_ticket_parse(const char *text, size_t len, struct sw_ticket *t, char *err, size_t errlen)
{
	struct sw_signed sg;
	int rc;

	memset(t, 0, sizeof(*t));
	if (!(rc = sw_signed_split(TICKET_PREFIX, "a ticket", text, len, SW_TICKET_MAX, &sg, err,
				   errlen)))
		rc = payload_read(&sg, t, err, errlen);
	sw_signed_free(&sg);
	return rc;
}

int sw_ticket_verify(struct sw_pki_verifier *v, const char *text, size_t len, int64_t now_ms,
		     struct sw_ticket *t, struct sw_identity *signer, char *err, size_t errlen)
{
	struct sw_signed sg;
	char why[200];
	int rc;

	memset(signer, 0, sizeof(*signer));
	if ((rc = sw_signed_split(TICKET_PREFIX, "a ticket", text, len, SW_TICKET_MAX, &sg, err,
				  errlen)) ||
	    (rc = payload_read(&sg, t, err, errlen)))
		goto out;
	if ((rc = sw_signed_check(v, &sg, signer, why, sizeof(why)))) {
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
	sw_signed_free(&sg);
	return rc;
}

int sw_ticket_make(const char *key_pem, const char *cert_pem, const struct sw_ticket *t, char **out,
		   char *err, size_t errlen)
{
	json_t *j;
	int rc;

	*out = NULL;
	if (!host_valid(t->host) || !sw_ticket_user_valid(t->user)) {
		sw_seterr(err, errlen, "not a valid host or user name");
		return SW_EINVAL;
	}
	j = json_pack("{ss sI ss sI sI}", "host", t->host, "uid", (json_int_t)t->uid, "user",
		      t->user, "issued_ms", (json_int_t)t->issued_ms, "expires_ms",
		      (json_int_t)t->expires_ms);
	if (!j) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	rc = sw_signed_make(TICKET_PREFIX, j, key_pem, cert_pem, out, err, errlen);
	json_decref(j);
	return rc;
}

/* Borrowed licenses: see borrow.h. */
#include "borrow.h"

#include "clock.h"
#include "error.h"
#include "json.h"
#include "signed.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX	    "b1"
#define WHAT	    "a borrowed license"
#define PAYLOAD_MAX 2048

static int hex_id(const char *s)
{
	return s && strlen(s) == 32 && strspn(s, "0123456789abcdef") == 32;
}

static int copy_name(const json_t *j, const char *key, char *out, size_t size, char *err,
		     size_t errlen)
{
	const char *s = NULL;
	int rc;

	if ((rc = sw_json_str(j, key, size - 1, 1, &s, err, errlen)))
		return rc;
	snprintf(out, size, "%s", s);
	return 0;
}

static int product_read(const json_t *j, struct sw_product *p, char *err, size_t errlen)
{
	const char *s;
	int rc;

	sw_product_init(p);
	if (!json_is_object(j)) {
		sw_seterr(err, errlen, "the borrowed license names no product");
		return SW_EINVAL;
	}
	if ((rc = copy_name(j, "name", p->name, sizeof(p->name), err, errlen)) ||
	    (rc = copy_name(j, "exe", p->exe, sizeof(p->exe), err, errlen)))
		return rc;
	if ((rc = sw_json_str(j, "build_id", SW_PRODUCT_BUILD_ID_MAX, 0, &s, err, errlen)))
		return rc;
	snprintf(p->build_id, sizeof(p->build_id), "%s", s ? s : "");
	if ((rc = sw_json_str(j, "version", SW_PRODUCT_VERSION_MAX, 0, &s, err, errlen)))
		return rc;
	snprintf(p->version, sizeof(p->version), "%s", s ? s : "");
	return sw_product_validate(p, err, errlen);
}

static int payload_read(const struct sw_signed *sg, struct sw_borrow *b, char *err, size_t errlen)
{
	json_t *j = NULL;
	const char *machine = NULL;
	int64_t uid = 0;
	int rc;

	memset(b, 0, sizeof(*b));
	if ((rc = sw_signed_payload(sg, WHAT, PAYLOAD_MAX, &j, err, errlen)))
		return rc;
	if ((rc = copy_name(j, "lease", b->lease, sizeof(b->lease), err, errlen)) ||
	    (rc = copy_name(j, "client", b->client, sizeof(b->client), err, errlen)) ||
	    (rc = copy_name(j, "meter", b->meter, sizeof(b->meter), err, errlen)) ||
	    (rc = copy_name(j, "host", b->host, sizeof(b->host), err, errlen)) ||
	    (rc = copy_name(j, "user", b->user, sizeof(b->user), err, errlen)) ||
	    (rc = sw_json_str(j, "machine", SW_BORROW_MACHINE_LEN, 0, &machine, err, errlen)) ||
	    (rc = sw_json_int(j, "uid", 0, UINT32_MAX, 1, &uid, err, errlen)) ||
	    (rc = sw_json_int(j, "issued_ms", 0, INT64_MAX / 2, 1, &b->issued_ms, err, errlen)) ||
	    (rc = sw_json_int(j, "expires_ms", 0, INT64_MAX / 2, 1, &b->expires_ms, err, errlen)) ||
	    (rc = product_read(json_object_get(j, "product"), &b->product, err, errlen)))
		goto out;
	rc = SW_EINVAL;
	if (!hex_id(b->lease) || !hex_id(b->client) || !sw_name_valid(b->meter) ||
	    !sw_name_valid(b->host)) {
		sw_seterr(err, errlen, "the borrowed license's lease, meter or host is malformed");
		goto out;
	}
	if (b->expires_ms <= b->issued_ms ||
	    b->expires_ms - b->issued_ms > SW_BORROW_LIMIT_S * 1000 + SW_BORROW_LEEWAY_MS) {
		sw_seterr(err, errlen,
			  "the borrowed license's lifetime is not between 0 and %lld days",
			  (long long)(SW_BORROW_LIMIT_S / 86400));
		goto out;
	}
	snprintf(b->machine, sizeof(b->machine), "%s", machine ? machine : "");
	b->uid = (uint32_t)uid;
	rc = 0;
out:
	json_decref(j);
	return rc;
}

int sw_borrow_parse(const char *text, size_t len, struct sw_borrow *b, char *err, size_t errlen)
{
	struct sw_signed sg;
	int rc;

	memset(b, 0, sizeof(*b));
	if (!(rc = sw_signed_split(PREFIX, WHAT, text, len, SW_BORROW_MAX, &sg, err, errlen)))
		rc = payload_read(&sg, b, err, errlen);
	sw_signed_free(&sg);
	return rc;
}

int sw_borrow_verify(struct sw_pki_verifier *v, const char *text, size_t len, struct sw_borrow *b,
		     struct sw_identity *signer, char *err, size_t errlen)
{
	struct sw_signed sg;
	char why[200];
	int rc;

	memset(signer, 0, sizeof(*signer));
	if ((rc = sw_signed_split(PREFIX, WHAT, text, len, SW_BORROW_MAX, &sg, err, errlen)) ||
	    (rc = payload_read(&sg, b, err, errlen)))
		goto out;
	if ((rc = sw_signed_check(v, &sg, signer, why, sizeof(why)))) {
		sw_seterr(err, errlen, "its signature is refused: %s", why);
		rc = SW_EDENIED;
		goto out;
	}
	/* a machine's own client key is readable by every user there: only a license
	 * server's signature lends a license */
	if (strcmp(signer->role, SW_PKI_ROLE_METER) != 0 || strcmp(signer->cn, b->meter) != 0) {
		sw_seterr(err, errlen, "it says license server %s lent it, but %s %s signed it",
			  b->meter, signer->role, signer->cn);
		rc = SW_EDENIED;
	}
out:
	if (rc)
		memset(signer, 0, sizeof(*signer));
	sw_signed_free(&sg);
	return rc;
}

int sw_borrow_valid(const struct sw_borrow *b, const char *host, uint32_t uid, const char *machine,
		    int64_t now_ms, char *err, size_t errlen)
{
	char span[48];

	if (strcmp(b->host, host) != 0 || (b->machine[0] && strcmp(b->machine, machine) != 0)) {
		sw_seterr(err, errlen, "it was lent to %s, another machine", b->host);
		return SW_EDENIED;
	}
	if (b->uid != uid) {
		sw_seterr(err, errlen, "it was lent to user %s (uid %u), not to uid %u", b->user,
			  (unsigned)b->uid, (unsigned)uid);
		return SW_EDENIED;
	}
	if (b->issued_ms > now_ms + SW_BORROW_LEEWAY_MS) {
		sw_clock_span(b->issued_ms - now_ms, span, sizeof(span));
		sw_seterr(err, errlen,
			  "it was lent %s after this machine's time: the clock is behind; set the "
			  "time",
			  span);
		return SW_EDENIED;
	}
	if (b->expires_ms <= now_ms) {
		sw_clock_span(now_ms - b->expires_ms, span, sizeof(span));
		sw_seterr(err, errlen, "it expired %s ago", span);
		return SW_EDENIED;
	}
	return 0;
}

void sw_borrow_machine(char out[SW_BORROW_MACHINE_LEN + 1])
{
	char *text = NULL, tagged[128];
	size_t len = 0;

	out[0] = '\0';
	if (sw_file_read("/etc/machine-id", 64, &text, &len, NULL, 0) == 0) {
		while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
			len--;
		/* not the id itself, which is meant to stay on the machine */
		if (len > 0) {
			int n = snprintf(tagged, sizeof(tagged), "siteward-borrow:%.*s", (int)len,
					 text);
			sw_sha256_hex(tagged, (size_t)n, out);
		}
	}
	free(text);
}

int sw_borrow_make(const char *key_pem, const char *cert_pem, const struct sw_borrow *b, char **out,
		   char *err, size_t errlen)
{
	const struct sw_product *p = &b->product;
	json_t *j =
	    json_pack("{ss ss ss ss sI ss ss sI sI s{ss ss ss ss}}", "lease", b->lease, "client",
		      b->client, "meter", b->meter, "host", b->host, "uid", (json_int_t)b->uid,
		      "user", b->user, "machine", b->machine, "issued_ms", (json_int_t)b->issued_ms,
		      "expires_ms", (json_int_t)b->expires_ms, "product", "name", p->name, "exe",
		      p->exe, "build_id", p->build_id, "version", p->version);
	int rc;

	*out = NULL;
	if (!j) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	rc = sw_signed_make(PREFIX, j, key_pem, cert_pem, out, err, errlen);
	json_decref(j);
	return rc;
}

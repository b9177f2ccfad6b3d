#include "pki.h"

#include <arpa/inet.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/pkcs12.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

#define CSR_MAX	      (16 * 1024)
#define CERT_MAX      (16 * 1024)
#define CHAIN_MAX     8
#define SANS_MAX      64
#define SAN_MAX	      253
#define NAME_LEN_MAX  63
#define SITE_CODE_MAX 32
#define DAYS_MAX      36500
#define SERIAL_LEN    16
#define SERIAL_MAX    20
#define ED25519_SIG   64
#define SIG_B64_MAX   128
#define SITE_PREFIX   "siteward site "

struct sw_pki_ca {
	gnutls_x509_crt_t crt;
	gnutls_x509_privkey_t key;
	char site_code[SITE_CODE_MAX + 1];
	char id[41]; /* its subject key identifier: what the certificates it issues name */
};

struct sw_pki_verifier {
	gnutls_x509_trust_list_t tl;
};

/* Out of memory is worth telling apart; everything else GnuTLS reports maps to `code`. */
static int map_gnutls(int ret, int code)
{
	return ret == GNUTLS_E_MEMORY_ERROR ? SW_ENOMEM : code;
}

/* Names end up in certificate subjects, file names and logs, so keep them plain. */
static int valid_name(const char *s, size_t max)
{
	size_t n;

	if (s == NULL)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		char c = s[n];

		if (n >= max)
			return 0;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return n > 0;
}

static int valid_dns_name(const char *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	for (n = 0; s[n] != '\0'; n++) {
		char c = s[n];

		if (n >= SAN_MAX)
			return 0;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-'))
			return 0;
	}
	return n > 0;
}

static int is_role(const char *s)
{
	return s != NULL &&
	       (strcmp(s, SW_PKI_ROLE_SERVER) == 0 || strcmp(s, SW_PKI_ROLE_ADMIN) == 0 ||
		strcmp(s, SW_PKI_ROLE_AGENT) == 0 || strcmp(s, SW_PKI_ROLE_CLIENT) == 0 ||
		strcmp(s, SW_PKI_ROLE_METER) == 0 || strcmp(s, SW_PKI_ROLE_SCRAPE) == 0);
}

static void hex_encode(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

/* GnuTLS allocates with gnutls_malloc; callers of this module free() what they get. */
static char *datum_strdup(const gnutls_datum_t *d)
{
	char *s = malloc((size_t)d->size + 1);

	if (s == NULL)
		return NULL;
	memcpy(s, d->data, d->size);
	s[d->size] = '\0';
	return s;
}

/* Wipes an exported private key before handing the memory back. */
static void datum_wipe_free(gnutls_datum_t *d)
{
	if (d->data != NULL) {
		explicit_bzero(d->data, d->size);
		gnutls_free(d->data);
	}
	d->data = NULL;
	d->size = 0;
}

static int pem_datum(const char *pem, gnutls_datum_t *d)
{
	size_t len;

	if (pem == NULL)
		return -1;
	len = strlen(pem);
	if (len == 0 || len > UINT_MAX)
		return -1;
	d->data = (unsigned char *)pem;
	d->size = (unsigned)len;
	return 0;
}

static int generate_key(gnutls_pk_algorithm_t pk, unsigned bits, gnutls_x509_privkey_t *out,
			char *err, size_t errlen)
{
	gnutls_x509_privkey_t key = NULL;
	int ret, rc = 0;

	ret = gnutls_x509_privkey_init(&key);
	if (ret < 0) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "could not allocate a private key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	ret = gnutls_x509_privkey_generate2(key, pk, bits, 0, NULL, 0);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not generate a private key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	*out = key;
	key = NULL;
out:
	gnutls_x509_privkey_deinit(key);
	return rc;
}

static int export_key(gnutls_x509_privkey_t key, char **key_pem, char *err, size_t errlen)
{
	gnutls_datum_t d = {NULL, 0};
	int ret, rc = 0;

	ret = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN,
						&d);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not export the private key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	*key_pem = datum_strdup(&d);
	if (*key_pem == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory exporting the private key");
	}
out:
	datum_wipe_free(&d);
	return rc;
}

static int export_crt(gnutls_x509_crt_t crt, char **cert_pem, char *err, size_t errlen)
{
	gnutls_datum_t d = {NULL, 0};
	int ret, rc = 0;

	ret = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &d);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not export the certificate: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	*cert_pem = datum_strdup(&d);
	if (*cert_pem == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory exporting the certificate");
	}
out:
	gnutls_free(d.data);
	return rc;
}

static void crt_list_free(gnutls_x509_crt_t *crts, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	gnutls_free(crts);
}

/* A key identifier (subject or authority), lowercase hex; "" when it has none. */
static void key_id_hex(gnutls_x509_crt_t crt, int authority, char out[41])
{
	unsigned char id[64];
	size_t size = sizeof(id);
	unsigned critical;
	int ret = authority ? gnutls_x509_crt_get_authority_key_id(crt, id, &size, &critical)
			    : gnutls_x509_crt_get_subject_key_id(crt, id, &size, &critical);

	out[0] = '\0';
	if (ret >= 0 && size > 0)
		hex_encode(id, size > 20 ? 20 : size, out);
}

static int import_crt_pem(const char *pem, gnutls_x509_crt_t *out, char *err, size_t errlen)
{
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t d;
	int ret, rc = 0;

	if (pem_datum(pem, &d) < 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "no certificate given");
		goto out;
	}
	ret = gnutls_x509_crt_init(&crt);
	if (ret < 0) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "could not allocate a certificate: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	ret = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_EINVAL);
		sw_seterr(err, errlen, "certificate is not a valid PEM certificate: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	*out = crt;
	crt = NULL;
out:
	gnutls_x509_crt_deinit(crt);
	return rc;
}

/* Every certificate of a PEM bundle (a site's CAs: one, or two during a rotation). */
#define BUNDLE_MAX 8
static int import_crt_list(const char *pem, gnutls_x509_crt_t **out, unsigned *n, char *err,
			   size_t errlen)
{
	gnutls_datum_t d;
	int ret;

	*out = NULL;
	*n = 0;
	if (pem_datum(pem, &d) < 0) {
		sw_seterr(err, errlen, "no certificate given");
		return SW_EINVAL;
	}
	ret = gnutls_x509_crt_list_import2(out, n, &d, GNUTLS_X509_FMT_PEM, 0);
	if (ret < 0) {
		sw_seterr(err, errlen, "certificates are not valid PEM certificates: %s",
			  gnutls_strerror(ret));
		return map_gnutls(ret, SW_EINVAL);
	}
	if (*n == 0 || *n > BUNDLE_MAX) {
		crt_list_free(*out, *n);
		*out = NULL;
		*n = 0;
		sw_seterr(err, errlen, "a CA bundle holds 1 to %d certificates", BUNDLE_MAX);
		return SW_EINVAL;
	}
	return 0;
}

static int import_key_pem(const char *pem, gnutls_x509_privkey_t *out, char *err, size_t errlen)
{
	gnutls_x509_privkey_t key = NULL;
	gnutls_datum_t d;
	int ret, rc = 0;

	if (pem_datum(pem, &d) < 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "no private key given");
		goto out;
	}
	ret = gnutls_x509_privkey_init(&key);
	if (ret < 0) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "could not allocate a private key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	ret = gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_EINVAL);
		sw_seterr(err, errlen, "private key is not a valid unencrypted PEM key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	*out = key;
	key = NULL;
out:
	gnutls_x509_privkey_deinit(key);
	return rc;
}

/* A random positive serial of SERIAL_LEN bytes: the top bit is cleared so the INTEGER is
 * positive, and a zero first byte is redrawn so the encoding keeps its full length. */
static int set_random_serial(gnutls_x509_crt_t crt)
{
	unsigned char serial[SERIAL_LEN];
	int ret;

	do {
		ret = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
		if (ret < 0)
			return ret;
		serial[0] &= 0x7f;
	} while (serial[0] == 0);
	return gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
}

/* Starts a week back so a machine whose clock is days behind accepts it at once. */
static int set_validity(gnutls_x509_crt_t crt, unsigned days)
{
	time_t now = time(NULL);
	int ret;

	ret = gnutls_x509_crt_set_activation_time(crt, now - SW_PKI_BACKDATE_S);
	if (ret < 0)
		return ret;
	return gnutls_x509_crt_set_expiration_time(crt, now + (time_t)days * 86400);
}

/* A certificate ends no later than the CA that issues it: past that, nothing verifies it. */
static int clamp_to_ca(gnutls_x509_crt_t crt, gnutls_x509_crt_t ca)
{
	time_t end = gnutls_x509_crt_get_expiration_time(ca);

	if (end != (time_t)-1 && gnutls_x509_crt_get_expiration_time(crt) > end)
		return gnutls_x509_crt_set_expiration_time(crt, end);
	return 0;
}

static int set_subject_key_id(gnutls_x509_crt_t crt)
{
	unsigned char id[64];
	size_t size = sizeof(id);
	int ret;

	ret = gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, id, &size);
	if (ret < 0)
		return ret;
	return gnutls_x509_crt_set_subject_key_id(crt, id, size);
}

static int set_authority_key_id(gnutls_x509_crt_t crt, gnutls_x509_crt_t ca)
{
	unsigned char id[64];
	size_t size = sizeof(id);
	unsigned critical;
	int ret;

	ret = gnutls_x509_crt_get_subject_key_id(ca, id, &size, &critical);
	if (ret == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
		size = sizeof(id);
		ret = gnutls_x509_crt_get_key_id(ca, GNUTLS_KEYID_USE_SHA1, id, &size);
	}
	if (ret < 0)
		return ret;
	return gnutls_x509_crt_set_authority_key_id(crt, id, size);
}

static int read_serial_hex(gnutls_x509_crt_t crt, char out[41])
{
	unsigned char serial[SERIAL_MAX];
	size_t size = sizeof(serial);
	int ret;

	ret = gnutls_x509_crt_get_serial(crt, serial, &size);
	if (ret < 0)
		return ret;
	if (size == 0)
		return GNUTLS_E_ASN1_DER_ERROR;
	hex_encode(serial, size, out);
	return 0;
}

/* Reads the one attribute `oid` of the subject into `buf`. A second attribute of the same
 * type, an embedded NUL or an oversized value make the field unusable. */
static int dn_field(gnutls_x509_crt_t crt, const char *oid, char *buf, size_t bufsize)
{
	char extra[8];
	size_t size = bufsize;
	int ret;

	ret = gnutls_x509_crt_get_dn_by_oid(crt, oid, 0, 0, buf, &size);
	if (ret < 0)
		return ret;
	if (size >= bufsize || strlen(buf) != size)
		return GNUTLS_E_ASN1_DER_ERROR;
	size = sizeof(extra);
	ret = gnutls_x509_crt_get_dn_by_oid(crt, oid, 1, 0, extra, &size);
	if (ret != GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
		return GNUTLS_E_ASN1_DER_ERROR;
	return 0;
}

/* Fills `id` from a certificate's subject and serial; refusals carry `code`. */
static int crt_identity(gnutls_x509_crt_t crt, struct sw_identity *id, int code, char *err,
			size_t errlen)
{
	struct sw_identity tmp;
	int ret;

	memset(&tmp, 0, sizeof(tmp));
	if (dn_field(crt, GNUTLS_OID_X520_COMMON_NAME, tmp.cn, sizeof(tmp.cn)) < 0 ||
	    !valid_name(tmp.cn, NAME_LEN_MAX)) {
		sw_seterr(err, errlen, "certificate has no valid common name");
		return code;
	}
	if (dn_field(crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, tmp.role, sizeof(tmp.role)) <
		0 ||
	    !is_role(tmp.role)) {
		sw_seterr(err, errlen, "certificate carries no siteward role");
		return code;
	}
	ret = read_serial_hex(crt, tmp.serial);
	if (ret < 0) {
		sw_seterr(err, errlen, "certificate has no usable serial number");
		return map_gnutls(ret, code);
	}
	key_id_hex(crt, 1, tmp.ca);
	*id = tmp;
	return 0;
}

int sw_pki_key_generate(char **key_pem, char *err, size_t errlen)
{
	gnutls_x509_privkey_t key = NULL;
	int rc;

	if (key_pem == NULL) {
		sw_seterr(err, errlen, "no place given for the key");
		return SW_EINVAL;
	}
	*key_pem = NULL;
	rc = generate_key(GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), &key,
			  err, errlen);
	if (rc < 0)
		goto out;
	rc = export_key(key, key_pem, err, errlen);
out:
	gnutls_x509_privkey_deinit(key);
	return rc;
}

int sw_pki_ca_create(const char *site_code, unsigned days, char **cert_pem, char **key_pem,
		     char *err, size_t errlen)
{
	gnutls_x509_privkey_t key = NULL;
	gnutls_x509_crt_t crt = NULL;
	char cn[sizeof(SITE_PREFIX) + SITE_CODE_MAX + 24];
	char org[sizeof(SITE_PREFIX) + SITE_CODE_MAX];
	char *cert = NULL, *keyp = NULL, made[20];
	time_t now = time(NULL);
	struct tm tm;
	int ret, rc = 0;

	if (cert_pem == NULL || key_pem == NULL) {
		sw_seterr(err, errlen, "no place given for the CA certificate and key");
		return SW_EINVAL;
	}
	*cert_pem = NULL;
	*key_pem = NULL;
	if (!valid_name(site_code, SITE_CODE_MAX)) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "site code must be 1 to %d letters, digits, '.', '_' or '-'",
			  SITE_CODE_MAX);
		goto out;
	}
	if (days == 0 || days > DAYS_MAX) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "CA validity must be 1 to %d days", DAYS_MAX);
		goto out;
	}
	/* named by when it was made, so a CA that follows in a rotation has a name of its own */
	gmtime_r(&now, &tm);
	strftime(made, sizeof(made), "%Y%m%d%H%M%S", &tm);
	snprintf(cn, sizeof(cn), SITE_PREFIX "%s CA %s", site_code, made);
	snprintf(org, sizeof(org), SITE_PREFIX "%s", site_code);

	rc = generate_key(GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), &key,
			  err, errlen);
	if (rc < 0)
		goto out;
	ret = gnutls_x509_crt_init(&crt);
	if (ret < 0)
		goto fail;
	if ((ret = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
	    (ret = gnutls_x509_crt_set_key(crt, key)) < 0 || (ret = set_random_serial(crt)) < 0 ||
	    (ret = set_validity(crt, days)) < 0 ||
	    (ret = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, org,
						 strlen(org))) < 0 ||
	    (ret = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
						 strlen(cn))) < 0 ||
	    (ret = gnutls_x509_crt_set_basic_constraints(crt, 1, -1)) < 0 ||
	    (ret = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_KEY_CERT_SIGN |
							  GNUTLS_KEY_CRL_SIGN)) < 0 ||
	    (ret = set_subject_key_id(crt)) < 0 ||
	    (ret = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0)) < 0)
		goto fail;

	rc = export_crt(crt, &cert, err, errlen);
	if (rc < 0)
		goto out;
	rc = export_key(key, &keyp, err, errlen);
	if (rc < 0)
		goto out;
	*cert_pem = cert;
	*key_pem = keyp;
	cert = NULL;
	keyp = NULL;
	goto out;
fail:
	rc = map_gnutls(ret, SW_ECRYPTO);
	sw_seterr(err, errlen, "could not build the CA certificate: %s", gnutls_strerror(ret));
out:
	free(cert);
	if (keyp != NULL) {
		explicit_bzero(keyp, strlen(keyp));
		free(keyp);
	}
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
	return rc;
}

int sw_pki_csr_create(const char *key_pem, const char *cn, char **csr_pem, char *err, size_t errlen)
{
	gnutls_x509_privkey_t key = NULL;
	gnutls_x509_crq_t crq = NULL;
	gnutls_datum_t d = {NULL, 0};
	gnutls_digest_algorithm_t dig;
	int ret, rc = 0;

	if (csr_pem == NULL) {
		sw_seterr(err, errlen, "no place given for the certificate request");
		return SW_EINVAL;
	}
	*csr_pem = NULL;
	if (!valid_name(cn, NAME_LEN_MAX)) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen,
			  "common name must be 1 to %d letters, digits, '.', '_' or '-'",
			  NAME_LEN_MAX);
		goto out;
	}
	rc = import_key_pem(key_pem, &key, err, errlen);
	if (rc < 0)
		goto out;
	/* EdDSA hashes internally and takes no separate digest. */
	dig = gnutls_x509_privkey_get_pk_algorithm(key) == GNUTLS_PK_EDDSA_ED25519
		  ? GNUTLS_DIG_UNKNOWN
		  : GNUTLS_DIG_SHA256;
	ret = gnutls_x509_crq_init(&crq);
	if (ret < 0)
		goto fail;
	if ((ret = gnutls_x509_crq_set_version(crq, 1)) < 0 ||
	    (ret = gnutls_x509_crq_set_dn_by_oid(crq, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
						 strlen(cn))) < 0 ||
	    (ret = gnutls_x509_crq_set_key(crq, key)) < 0 ||
	    (ret = gnutls_x509_crq_sign2(crq, key, dig, 0)) < 0 ||
	    (ret = gnutls_x509_crq_export2(crq, GNUTLS_X509_FMT_PEM, &d)) < 0)
		goto fail;
	*csr_pem = datum_strdup(&d);
	if (*csr_pem == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory exporting the certificate request");
	}
	goto out;
fail:
	rc = map_gnutls(ret, SW_ECRYPTO);
	sw_seterr(err, errlen, "could not build the certificate request: %s", gnutls_strerror(ret));
out:
	gnutls_free(d.data);
	gnutls_x509_crq_deinit(crq);
	gnutls_x509_privkey_deinit(key);
	return rc;
}

int sw_pki_ca_load(const char *cert_pem, const char *key_pem, struct sw_pki_ca **out, char *err,
		   size_t errlen)
{
	gnutls_x509_crt_t crt = NULL, *crts = NULL;
	gnutls_x509_privkey_t key = NULL;
	unsigned n = 0, i;
	struct sw_pki_ca *ca = NULL;
	unsigned char crt_id[64], key_id[64];
	size_t crt_id_size = sizeof(crt_id), key_id_size = sizeof(key_id);
	char org[128];
	unsigned critical;
	int ret, rc = 0;

	if (out == NULL) {
		sw_seterr(err, errlen, "no place given for the CA");
		return SW_EINVAL;
	}
	*out = NULL;
	rc = import_crt_list(cert_pem, &crts, &n, err, errlen);
	if (rc < 0)
		goto out;
	rc = import_key_pem(key_pem, &key, err, errlen);
	if (rc < 0)
		goto out;
	if (gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, key_id, &key_id_size) <
	    0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "cannot read the CA key's identifier");
		goto out;
	}
	/* of the site's CAs, the one whose key this is issues */
	for (i = 0; i < n && !crt; i++) {
		crt_id_size = sizeof(crt_id);
		if (gnutls_x509_crt_get_key_id(crts[i], GNUTLS_KEYID_USE_SHA256, crt_id,
					       &crt_id_size) == 0 &&
		    crt_id_size == key_id_size && memcmp(crt_id, key_id, crt_id_size) == 0) {
			crt = crts[i];
			crts[i] = NULL;
		}
	}
	if (!crt) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "CA key does not belong to the CA certificate");
		goto out;
	}
	if (gnutls_x509_crt_get_basic_constraints(crt, &critical, NULL, NULL) <= 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "certificate is not a CA certificate");
		goto out;
	}
	ret = dn_field(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, org, sizeof(org));
	if (ret < 0 || strncmp(org, SITE_PREFIX, strlen(SITE_PREFIX)) != 0 ||
	    !valid_name(org + strlen(SITE_PREFIX), SITE_CODE_MAX)) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "CA certificate's organization is not \"%s<site code>\"",
			  SITE_PREFIX);
		goto out;
	}
	ca = calloc(1, sizeof(*ca));
	if (ca == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory loading the CA");
		goto out;
	}
	/* valid_name() above bounds the code to SITE_CODE_MAX. */
	memcpy(ca->site_code, org + strlen(SITE_PREFIX), strlen(org + strlen(SITE_PREFIX)) + 1);
	key_id_hex(crt, 0, ca->id);
	ca->crt = crt;
	ca->key = key;
	crt = NULL;
	key = NULL;
	*out = ca;
out:
	crt_list_free(crts, n);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
	return rc;
}

void sw_pki_ca_free(struct sw_pki_ca *ca)
{
	if (ca == NULL)
		return;
	gnutls_x509_crt_deinit(ca->crt);
	gnutls_x509_privkey_deinit(ca->key);
	free(ca);
}

/* Only the key types the site issues for: ECDSA P-256 and Ed25519. */
static int acceptable_key(gnutls_pubkey_t pub)
{
	gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
	gnutls_datum_t x = {NULL, 0}, y = {NULL, 0};
	int pk, ok = 0;

	pk = gnutls_pubkey_get_pk_algorithm(pub, NULL);
	if (pk == GNUTLS_PK_EDDSA_ED25519)
		return 1;
	if (pk != GNUTLS_PK_ECDSA)
		return 0;
	if (gnutls_pubkey_export_ecc_raw2(pub, &curve, &x, &y, 0) == 0)
		ok = curve == GNUTLS_ECC_CURVE_SECP256R1;
	gnutls_free(x.data);
	gnutls_free(y.data);
	return ok;
}

static int add_san(gnutls_x509_crt_t crt, const char *san)
{
	unsigned char ip[16];

	if (inet_pton(AF_INET, san, ip) == 1)
		return gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 4,
							    GNUTLS_FSAN_APPEND);
	if (inet_pton(AF_INET6, san, ip) == 1)
		return gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 16,
							    GNUTLS_FSAN_APPEND);
	return gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, san, strlen(san),
						    GNUTLS_FSAN_APPEND);
}

static int check_issue(const struct sw_pki_issue *what, char *err, size_t errlen)
{
	size_t i;

	if (!valid_name(what->cn, NAME_LEN_MAX)) {
		sw_seterr(err, errlen,
			  "common name must be 1 to %d letters, digits, '.', '_' or '-'",
			  NAME_LEN_MAX);
		return SW_EINVAL;
	}
	if (!is_role(what->role)) {
		sw_seterr(err, errlen, "role must be %s, %s, %s, %s, %s or %s", SW_PKI_ROLE_SERVER,
			  SW_PKI_ROLE_ADMIN, SW_PKI_ROLE_AGENT, SW_PKI_ROLE_CLIENT,
			  SW_PKI_ROLE_METER, SW_PKI_ROLE_SCRAPE);
		return SW_EINVAL;
	}
	if (what->days == 0 || what->days > DAYS_MAX) {
		sw_seterr(err, errlen, "certificate validity must be 1 to %d days", DAYS_MAX);
		return SW_EINVAL;
	}
	for (i = 0; what->sans != NULL && what->sans[i] != NULL; i++) {
		unsigned char ip[16];

		if (i >= SANS_MAX) {
			sw_seterr(err, errlen, "more than %d subject alternative names", SANS_MAX);
			return SW_EINVAL;
		}
		if (inet_pton(AF_INET, what->sans[i], ip) != 1 &&
		    inet_pton(AF_INET6, what->sans[i], ip) != 1 && !valid_dns_name(what->sans[i])) {
			sw_seterr(err, errlen,
				  "subject alternative name %zu is neither an IP address nor a DNS "
				  "name",
				  i + 1);
			return SW_EINVAL;
		}
	}
	return 0;
}

int sw_pki_ca_issue(struct sw_pki_ca *ca, const char *csr_pem, size_t csr_len,
		    const struct sw_pki_issue *what, char **cert_pem, char serial_hex[41],
		    char *err, size_t errlen)
{
	gnutls_x509_crq_t crq = NULL;
	gnutls_pubkey_t pub = NULL;
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t d;
	char org[sizeof(SITE_PREFIX) + SITE_CODE_MAX];
	char serial[41];
	char *cert = NULL;
	size_t i;
	int ret, rc = 0;

	if (ca == NULL || what == NULL || cert_pem == NULL || serial_hex == NULL) {
		sw_seterr(err, errlen, "missing argument to issue a certificate");
		return SW_EINVAL;
	}
	*cert_pem = NULL;
	serial_hex[0] = '\0';
	rc = check_issue(what, err, errlen);
	if (rc < 0)
		goto out;
	if (csr_pem == NULL || csr_len == 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "certificate request is empty");
		goto out;
	}
	if (csr_len > CSR_MAX) {
		rc = SW_ETOOBIG;
		sw_seterr(err, errlen, "certificate request is larger than %d bytes", CSR_MAX);
		goto out;
	}

	ret = gnutls_x509_crq_init(&crq);
	if (ret < 0)
		goto fail;
	d.data = (unsigned char *)csr_pem;
	d.size = (unsigned)csr_len;
	ret = gnutls_x509_crq_import(crq, &d, GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_EINVAL);
		sw_seterr(err, errlen, "certificate request is malformed: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	ret = gnutls_x509_crq_verify(crq, 0);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_EDENIED);
		sw_seterr(err, errlen, "certificate request is not signed by its own key");
		goto out;
	}
	ret = gnutls_pubkey_init(&pub);
	if (ret < 0)
		goto fail;
	ret = gnutls_pubkey_import_x509_crq(pub, crq, 0);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_EINVAL);
		sw_seterr(err, errlen, "certificate request has no usable public key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	if (!acceptable_key(pub)) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "certificate request key is not ECDSA P-256 or Ed25519");
		goto out;
	}

	snprintf(org, sizeof(org), SITE_PREFIX "%s", ca->site_code);
	ret = gnutls_x509_crt_init(&crt);
	if (ret < 0)
		goto fail;
	if ((ret = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
	    (ret = gnutls_x509_crt_set_pubkey(crt, pub)) < 0 ||
	    (ret = set_random_serial(crt)) < 0 || (ret = set_validity(crt, what->days)) < 0 ||
	    (ret = clamp_to_ca(crt, ca->crt)) < 0 ||
	    (ret = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, org,
						 strlen(org))) < 0 ||
	    (ret = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, 0,
						 what->role, strlen(what->role))) < 0 ||
	    (ret = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, what->cn,
						 strlen(what->cn))) < 0 ||
	    (ret = gnutls_x509_crt_set_basic_constraints(crt, 0, -1)) < 0 ||
	    (ret = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) < 0)
		goto fail;
	/* only the uses the holder has: a certificate that cannot serve cannot pose as a
	 * server to a client that checks less than siteward's own do */
	if ((what->purposes & SW_PKI_TLS_CLIENT || !what->purposes) &&
	    (ret = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0)) < 0)
		goto fail;
	if (what->purposes & SW_PKI_TLS_SERVER &&
	    (ret = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0)
		goto fail;
	for (i = 0; what->sans != NULL && what->sans[i] != NULL; i++) {
		ret = add_san(crt, what->sans[i]);
		if (ret < 0)
			goto fail;
	}
	if ((ret = set_subject_key_id(crt)) < 0 || (ret = set_authority_key_id(crt, ca->crt)) < 0 ||
	    (ret = gnutls_x509_crt_sign2(crt, ca->crt, ca->key, GNUTLS_DIG_SHA256, 0)) < 0 ||
	    (ret = read_serial_hex(crt, serial)) < 0)
		goto fail;

	rc = export_crt(crt, &cert, err, errlen);
	if (rc < 0)
		goto out;
	memcpy(serial_hex, serial, sizeof(serial));
	*cert_pem = cert;
	cert = NULL;
	goto out;
fail:
	rc = map_gnutls(ret, SW_ECRYPTO);
	sw_seterr(err, errlen, "could not issue the certificate: %s", gnutls_strerror(ret));
out:
	free(cert);
	gnutls_x509_crt_deinit(crt);
	gnutls_pubkey_deinit(pub);
	gnutls_x509_crq_deinit(crq);
	return rc;
}

int sw_pki_verifier_new(const char *ca_pem, struct sw_pki_verifier **out, char *err, size_t errlen)
{
	gnutls_x509_crt_t *crts = NULL;
	gnutls_x509_trust_list_t tl = NULL;
	struct sw_pki_verifier *v = NULL;
	unsigned critical, n = 0, i;
	int ret, rc = 0;

	if (out == NULL) {
		sw_seterr(err, errlen, "no place given for the verifier");
		return SW_EINVAL;
	}
	*out = NULL;
	rc = import_crt_list(ca_pem, &crts, &n, err, errlen);
	if (rc < 0)
		goto out;
	for (i = 0; i < n; i++)
		if (gnutls_x509_crt_get_basic_constraints(crts[i], &critical, NULL, NULL) <= 0) {
			rc = SW_EINVAL;
			sw_seterr(err, errlen, "certificate %u is not a CA certificate", i + 1);
			goto out;
		}
	v = calloc(1, sizeof(*v));
	if (v == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory creating the verifier");
		goto out;
	}
	ret = gnutls_x509_trust_list_init(&tl, 0);
	if (ret < 0) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "could not allocate a trust list: %s", gnutls_strerror(ret));
		goto out;
	}
	/* The trust list owns the certificates once added (each of the site's CAs: two
	 * while one follows another). */
	ret = gnutls_x509_trust_list_add_cas(tl, crts, n, 0);
	if (ret != (int)n) {
		rc = ret < 0 ? map_gnutls(ret, SW_ETLS) : SW_ETLS;
		sw_seterr(err, errlen, "could not add the CAs to the trust list");
		goto out;
	}
	gnutls_free(crts);
	crts = NULL;
	n = 0;
	v->tl = tl;
	tl = NULL;
	*out = v;
	v = NULL;
out:
	free(v);
	gnutls_x509_trust_list_deinit(tl, 1);
	crt_list_free(crts, n);
	return rc;
}

void sw_pki_verifier_free(struct sw_pki_verifier *v)
{
	if (v == NULL)
		return;
	gnutls_x509_trust_list_deinit(v->tl, 1);
	free(v);
}

static const char *status_reason(unsigned status)
{
	if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA |
		      GNUTLS_CERT_SIGNATURE_FAILURE | GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE))
		return "certificate not issued by this site";
	if (status & GNUTLS_CERT_REVOKED)
		return "certificate revoked";
	if (status & GNUTLS_CERT_EXPIRED)
		return "certificate expired";
	if (status & GNUTLS_CERT_NOT_ACTIVATED)
		return "certificate not yet valid";
	if (status & GNUTLS_CERT_INSECURE_ALGORITHM)
		return "certificate signed with an insecure algorithm";
	return "certificate refused";
}

/* Our certificates always name their use; one without TLS client or server is refused. */
static int tls_purpose(gnutls_x509_crt_t crt)
{
	char oid[128];
	unsigned i;

	for (i = 0;; i++) {
		size_t size = sizeof(oid);
		int ret = gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &size, NULL);

		if (ret == GNUTLS_E_SHORT_MEMORY_BUFFER)
			continue;
		if (ret < 0)
			return 0;
		if (strcmp(oid, GNUTLS_KP_TLS_WWW_CLIENT) == 0 ||
		    strcmp(oid, GNUTLS_KP_TLS_WWW_SERVER) == 0)
			return 1;
	}
}

int sw_pki_verify_chain(struct sw_pki_verifier *v, const gnutls_datum_t *chain, unsigned nchain,
			struct sw_identity *id, char *err, size_t errlen)
{
	gnutls_x509_crt_t crts[CHAIN_MAX] = {NULL};
	unsigned i, n, status = 0;
	int ret, rc = 0;

	if (v == NULL || id == NULL) {
		sw_seterr(err, errlen, "missing argument to verify a chain");
		return SW_EINVAL;
	}
	memset(id, 0, sizeof(*id));
	if (chain == NULL || nchain == 0) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "no client certificate");
		goto out;
	}
	if (nchain > CHAIN_MAX) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "certificate chain longer than %d", CHAIN_MAX);
		goto out;
	}
	for (n = 0; n < nchain; n++) {
		if (chain[n].data == NULL || chain[n].size == 0 || chain[n].size > CERT_MAX) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "certificate %u of the chain is empty or too large",
				  n + 1);
			goto out;
		}
		ret = gnutls_x509_crt_init(&crts[n]);
		if (ret < 0) {
			rc = SW_ENOMEM;
			sw_seterr(err, errlen, "could not allocate a certificate: %s",
				  gnutls_strerror(ret));
			goto out;
		}
		ret = gnutls_x509_crt_import(crts[n], &chain[n], GNUTLS_X509_FMT_DER);
		if (ret < 0) {
			rc = map_gnutls(ret, SW_EDENIED);
			sw_seterr(err, errlen, "certificate %u of the chain is malformed", n + 1);
			goto out;
		}
	}
	ret = gnutls_x509_trust_list_verify_crt2(v->tl, crts, n, NULL, 0, 0, &status, NULL);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_ETLS);
		sw_seterr(err, errlen, "could not verify the certificate: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	if (status != 0) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "%s", status_reason(status));
		goto out;
	}
	if (gnutls_x509_crt_get_basic_constraints(crts[0], NULL, NULL, NULL) > 0) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "a CA certificate cannot identify a peer");
		goto out;
	}
	if (!tls_purpose(crts[0])) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "certificate is not for TLS client or server use");
		goto out;
	}
	rc = crt_identity(crts[0], id, SW_EDENIED, err, errlen);
out:
	for (i = 0; i < CHAIN_MAX; i++)
		gnutls_x509_crt_deinit(crts[i]);
	return rc;
}

int sw_pki_cert_identity(const char *cert_pem, struct sw_identity *id, char *err, size_t errlen)
{
	gnutls_x509_crt_t crt = NULL;
	int rc;

	if (id == NULL) {
		sw_seterr(err, errlen, "no place given for the identity");
		return SW_EINVAL;
	}
	memset(id, 0, sizeof(*id));
	rc = import_crt_pem(cert_pem, &crt, err, errlen);
	if (rc < 0)
		goto out;
	rc = crt_identity(crt, id, SW_EINVAL, err, errlen);
out:
	gnutls_x509_crt_deinit(crt);
	return rc;
}

int sw_pki_cert_validity(const char *cert_pem, int64_t *not_before, int64_t *not_after, char *err,
			 size_t errlen)
{
	gnutls_x509_crt_t crt = NULL;
	time_t nb, na;
	int rc;

	rc = import_crt_pem(cert_pem, &crt, err, errlen);
	if (rc < 0)
		goto out;
	nb = gnutls_x509_crt_get_activation_time(crt);
	na = gnutls_x509_crt_get_expiration_time(crt);
	if (nb == (time_t)-1 || na == (time_t)-1) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "certificate has no readable validity");
		goto out;
	}
	if (not_before)
		*not_before = (int64_t)nb * 1000;
	if (not_after)
		*not_after = (int64_t)na * 1000;
out:
	gnutls_x509_crt_deinit(crt);
	return rc;
}

int sw_pki_cert_fingerprint(const char *cert_pem, char hex[65], char *err, size_t errlen)
{
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t der = {NULL, 0};
	unsigned char digest[32];
	int ret, rc;

	if (hex == NULL) {
		sw_seterr(err, errlen, "no place given for the fingerprint");
		return SW_EINVAL;
	}
	hex[0] = '\0';
	rc = import_crt_pem(cert_pem, &crt, err, errlen);
	if (rc < 0)
		goto out;
	ret = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not encode the certificate: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	ret = gnutls_hash_fast(GNUTLS_DIG_SHA256, der.data, der.size, digest);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not hash the certificate: %s", gnutls_strerror(ret));
		goto out;
	}
	hex_encode(digest, sizeof(digest), hex);
out:
	gnutls_free(der.data);
	gnutls_x509_crt_deinit(crt);
	return rc;
}

int sw_pki_sign_key_generate(char **key_pem, char **pub_pem, char *err, size_t errlen)
{
	gnutls_x509_privkey_t key = NULL;
	gnutls_privkey_t priv = NULL;
	gnutls_pubkey_t pub = NULL;
	gnutls_datum_t d = {NULL, 0};
	char *keyp = NULL, *pubp = NULL;
	int ret, rc = 0;

	if (key_pem == NULL || pub_pem == NULL) {
		sw_seterr(err, errlen, "no place given for the signing keys");
		return SW_EINVAL;
	}
	*key_pem = NULL;
	*pub_pem = NULL;
	rc = generate_key(GNUTLS_PK_EDDSA_ED25519, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED25519),
			  &key, err, errlen);
	if (rc < 0)
		goto out;
	if ((ret = gnutls_privkey_init(&priv)) < 0 ||
	    (ret = gnutls_privkey_import_x509(priv, key, 0)) < 0 ||
	    (ret = gnutls_pubkey_init(&pub)) < 0 ||
	    (ret = gnutls_pubkey_import_privkey(pub, priv, 0, 0)) < 0 ||
	    (ret = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_PEM, &d)) < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not derive the public key: %s", gnutls_strerror(ret));
		goto out;
	}
	pubp = datum_strdup(&d);
	if (pubp == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory exporting the public key");
		goto out;
	}
	rc = export_key(key, &keyp, err, errlen);
	if (rc < 0)
		goto out;
	*key_pem = keyp;
	*pub_pem = pubp;
	pubp = NULL;
out:
	free(pubp);
	gnutls_free(d.data);
	gnutls_pubkey_deinit(pub);
	gnutls_privkey_deinit(priv);
	gnutls_x509_privkey_deinit(key);
	return rc;
}

/* A detached signature over `data` by `key_pem`, which must be a key of `pk` (named
 * `kind` for people), made with `alg`; base64. */
static int sign_b64(const char *key_pem, gnutls_pk_algorithm_t pk, gnutls_sign_algorithm_t alg,
		    const char *kind, const void *data, size_t len, char **sig_b64, char *err,
		    size_t errlen)
{
	static const unsigned char empty[1];
	gnutls_privkey_t key = NULL;
	gnutls_datum_t kd, msg, sig = {NULL, 0}, b64 = {NULL, 0};
	int ret, rc = 0;

	if (sig_b64 == NULL) {
		sw_seterr(err, errlen, "no place given for the signature");
		return SW_EINVAL;
	}
	*sig_b64 = NULL;
	if (data == NULL && len > 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "no data to sign");
		goto out;
	}
	if (len > UINT_MAX) {
		rc = SW_ETOOBIG;
		sw_seterr(err, errlen, "data to sign is larger than %u bytes", UINT_MAX);
		goto out;
	}
	if (pem_datum(key_pem, &kd) < 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "no signing key given");
		goto out;
	}
	ret = gnutls_privkey_init(&key);
	if (ret < 0) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "could not allocate a private key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	ret = gnutls_privkey_import_x509_raw(key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_EINVAL);
		sw_seterr(err, errlen, "signing key is not a valid unencrypted PEM key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	if (gnutls_privkey_get_pk_algorithm(key, NULL) != (int)pk) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "signing key is not an %s key", kind);
		goto out;
	}
	msg.data = (unsigned char *)(len > 0 ? data : empty);
	msg.size = (unsigned)len;
	ret = gnutls_privkey_sign_data2(key, alg, 0, &msg, &sig);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not sign: %s", gnutls_strerror(ret));
		goto out;
	}
	ret = gnutls_base64_encode2(&sig, &b64);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not encode the signature: %s", gnutls_strerror(ret));
		goto out;
	}
	*sig_b64 = datum_strdup(&b64);
	if (*sig_b64 == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory encoding the signature");
	}
out:
	gnutls_free(b64.data);
	gnutls_free(sig.data);
	gnutls_privkey_deinit(key);
	return rc;
}

int sw_pki_sign(const char *key_pem, const void *data, size_t len, char **sig_b64, char *err,
		size_t errlen)
{
	return sign_b64(key_pem, GNUTLS_PK_EDDSA_ED25519, GNUTLS_SIGN_EDDSA_ED25519, "Ed25519",
			data, len, sig_b64, err, errlen);
}

int sw_pki_verify_signature(const char *pub_pem, const void *data, size_t len, const char *sig_b64,
			    char *err, size_t errlen)
{
	static const unsigned char empty[1];
	gnutls_pubkey_t pub = NULL;
	gnutls_datum_t pd, msg, b64, sig = {NULL, 0};
	size_t b64_len;
	int ret, rc = 0;

	if (data == NULL && len > 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "no data to verify");
		goto out;
	}
	if (len > UINT_MAX) {
		rc = SW_ETOOBIG;
		sw_seterr(err, errlen, "signed data is larger than %u bytes", UINT_MAX);
		goto out;
	}
	if (pem_datum(pub_pem, &pd) < 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "no public key given");
		goto out;
	}
	ret = gnutls_pubkey_init(&pub);
	if (ret < 0) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "could not allocate a public key: %s", gnutls_strerror(ret));
		goto out;
	}
	ret = gnutls_pubkey_import(pub, &pd, GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_EINVAL);
		sw_seterr(err, errlen, "public key is not a valid PEM key: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	if (gnutls_pubkey_get_pk_algorithm(pub, NULL) != GNUTLS_PK_EDDSA_ED25519) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "public key is not an Ed25519 key");
		goto out;
	}
	b64_len = sig_b64 == NULL ? 0 : strlen(sig_b64);
	if (b64_len == 0 || b64_len > SIG_B64_MAX) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "signature is missing or malformed");
		goto out;
	}
	b64.data = (unsigned char *)sig_b64;
	b64.size = (unsigned)b64_len;
	ret = gnutls_base64_decode2(&b64, &sig);
	if (ret < 0 || sig.size != ED25519_SIG) {
		rc = map_gnutls(ret, SW_EDENIED);
		sw_seterr(err, errlen, "signature is not a base64 Ed25519 signature");
		goto out;
	}
	msg.data = (unsigned char *)(len > 0 ? data : empty);
	msg.size = (unsigned)len;
	ret = gnutls_pubkey_verify_data2(pub, GNUTLS_SIGN_EDDSA_ED25519, 0, &msg, &sig);
	if (ret < 0) {
		rc = map_gnutls(ret, SW_EDENIED);
		sw_seterr(err, errlen, "signature does not match the data and key");
		goto out;
	}
out:
	gnutls_free(sig.data);
	gnutls_pubkey_deinit(pub);
	return rc;
}

int sw_pki_key_sign(const char *key_pem, const void *data, size_t len, char **sig_b64, char *err,
		    size_t errlen)
{
	return sign_b64(key_pem, GNUTLS_PK_ECDSA, GNUTLS_SIGN_ECDSA_SHA256, "ECDSA", data, len,
			sig_b64, err, errlen);
}

int sw_pki_cert_b64(const char *cert_pem, char **out, char *err, size_t errlen)
{
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t der = {NULL, 0}, b64 = {NULL, 0};
	int ret, rc;

	*out = NULL;
	if ((rc = import_crt_pem(cert_pem, &crt, err, errlen)) < 0)
		goto out;
	if ((ret = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der)) < 0 ||
	    (ret = gnutls_base64_encode2(&der, &b64)) < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not encode the certificate: %s",
			  gnutls_strerror(ret));
		goto out;
	}
	if (!(*out = datum_strdup(&b64))) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
	}
out:
	gnutls_free(b64.data);
	gnutls_free(der.data);
	gnutls_x509_crt_deinit(crt);
	return rc;
}

/* base64 text of at most `max` decoded bytes into `out` (gnutls_free it). */
static int b64_datum(const char *b64, size_t max, gnutls_datum_t *out)
{
	gnutls_datum_t in;
	size_t n = b64 ? strlen(b64) : 0;

	out->data = NULL;
	out->size = 0;
	if (n == 0 || n > (max / 3 + 1) * 4)
		return -1;
	in.data = (unsigned char *)b64;
	in.size = (unsigned)n;
	if (gnutls_base64_decode2(&in, out) < 0) {
		out->data = NULL;
		return -1;
	}
	return 0;
}

int sw_pki_verify_signed(struct sw_pki_verifier *v, const char *cert_b64, const void *data,
			 size_t len, const char *sig_b64, struct sw_identity *id, char *err,
			 size_t errlen)
{
	gnutls_datum_t der = {NULL, 0}, sig = {NULL, 0}, msg;
	gnutls_pubkey_t pub = NULL;
	gnutls_x509_crt_t crt = NULL;
	int ret, rc;

	memset(id, 0, sizeof(*id));
	if (data == NULL || len == 0 || len > UINT_MAX) {
		sw_seterr(err, errlen, "nothing signed");
		return SW_EINVAL;
	}
	if (b64_datum(cert_b64, CERT_MAX, &der) < 0) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "the signer's certificate is not base64 of at most %d bytes",
			  CERT_MAX);
		goto out;
	}
	if ((rc = sw_pki_verify_chain(v, &der, 1, id, err, errlen)))
		goto out;
	if (b64_datum(sig_b64, 512, &sig) < 0) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "the signature is not base64 of at most 512 bytes");
		goto out;
	}
	if ((ret = gnutls_x509_crt_init(&crt)) < 0 || (ret = gnutls_pubkey_init(&pub)) < 0 ||
	    (ret = gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER)) < 0 ||
	    (ret = gnutls_pubkey_import_x509(pub, crt, 0)) < 0) {
		rc = map_gnutls(ret, SW_EDENIED);
		sw_seterr(err, errlen, "the signer's key is unreadable: %s", gnutls_strerror(ret));
		goto out;
	}
	msg.data = (unsigned char *)data;
	msg.size = (unsigned)len;
	if (gnutls_pubkey_verify_data2(pub, GNUTLS_SIGN_ECDSA_SHA256, 0, &msg, &sig) < 0) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "the signature does not match");
		goto out;
	}
	rc = 0;
out:
	if (rc)
		memset(id, 0, sizeof(*id));
	gnutls_pubkey_deinit(pub);
	gnutls_x509_crt_deinit(crt);
	gnutls_free(der.data);
	gnutls_free(sig.data);
	return rc;
}

int64_t sw_pki_renew_at(int64_t not_before, int64_t not_after)
{
	if (not_after <= not_before)
		return not_before;
	return not_before + (not_after - not_before) / 3 * 2;
}

int sw_pki_cert_sans(const char *cert_pem, char (*out)[SW_PKI_SAN_LEN], size_t max, size_t *n,
		     char *err, size_t errlen)
{
	gnutls_x509_crt_t crt = NULL;
	int rc;

	*n = 0;
	if ((rc = import_crt_pem(cert_pem, &crt, err, errlen)) < 0)
		goto out;
	rc = 0;
	for (unsigned i = 0; *n < max; i++) {
		unsigned char buf[SW_PKI_SAN_LEN];
		size_t len = sizeof(buf) - 1;
		int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &len, NULL);

		if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
			break;
		if (type == GNUTLS_SAN_DNSNAME) {
			buf[len] = '\0';
			snprintf(out[(*n)++], SW_PKI_SAN_LEN, "%s", (char *)buf);
		} else if (type == GNUTLS_SAN_IPADDRESS && (len == 4 || len == 16)) {
			if (inet_ntop(len == 4 ? AF_INET : AF_INET6, buf, out[*n], SW_PKI_SAN_LEN))
				(*n)++;
		} else if (type < 0) {
			sw_seterr(err, errlen, "cannot read the certificate's names: %s",
				  gnutls_strerror(type));
			rc = SW_ECRYPTO;
			break;
		}
	}
out:
	gnutls_x509_crt_deinit(crt);
	return rc;
}

int sw_pki_ca_fingerprint(const struct sw_pki_ca *ca, char hex[65], char *err, size_t errlen)
{
	char *pem = NULL;
	int rc;

	if ((rc = export_crt(ca->crt, &pem, err, errlen)))
		return rc;
	rc = sw_pki_cert_fingerprint(pem, hex, err, errlen);
	free(pem);
	return rc;
}

const char *sw_pki_ca_id(const struct sw_pki_ca *ca)
{
	return ca ? ca->id : "";
}

int sw_pki_bundle_id(const char *pem, char out[SW_PKI_BUNDLE_ID_LEN + 1], char *err, size_t errlen)
{
	gnutls_x509_crt_t *crts = NULL;
	gnutls_hash_hd_t h = NULL;
	unsigned char digest[32];
	unsigned n = 0;
	int rc, ret;

	out[0] = '\0';
	if ((rc = import_crt_list(pem, &crts, &n, err, errlen)))
		return rc;
	if ((ret = gnutls_hash_init(&h, GNUTLS_DIG_SHA256)) < 0) {
		rc = map_gnutls(ret, SW_ECRYPTO);
		sw_seterr(err, errlen, "could not hash the bundle: %s", gnutls_strerror(ret));
		goto out;
	}
	/* the certificates as they are encoded, in order: text around them is no part */
	for (unsigned i = 0; i < n; i++) {
		gnutls_datum_t der = {NULL, 0};

		if ((ret = gnutls_x509_crt_export2(crts[i], GNUTLS_X509_FMT_DER, &der)) < 0 ||
		    (ret = gnutls_hash(h, der.data, der.size)) < 0) {
			gnutls_free(der.data);
			rc = map_gnutls(ret, SW_ECRYPTO);
			sw_seterr(err, errlen, "could not hash the bundle: %s",
				  gnutls_strerror(ret));
			goto out;
		}
		gnutls_free(der.data);
	}
	gnutls_hash_deinit(h, digest);
	h = NULL;
	hex_encode(digest, SW_PKI_BUNDLE_ID_LEN / 2, out);
out:
	if (h)
		gnutls_hash_deinit(h, NULL);
	crt_list_free(crts, n);
	return rc;
}

int sw_pki_bundle_read(const char *pem, struct sw_pki_ca_info *out, size_t max, size_t *count,
		       char *err, size_t errlen)
{
	gnutls_x509_crt_t *crts = NULL;
	unsigned n = 0, critical;
	int rc;

	*count = 0;
	if ((rc = import_crt_list(pem, &crts, &n, err, errlen)))
		return rc;
	for (unsigned i = 0; i < n && *count < max; i++) {
		struct sw_pki_ca_info *c = &out[*count];
		size_t size = sizeof(c->name);

		memset(c, 0, sizeof(*c));
		if (gnutls_x509_crt_get_basic_constraints(crts[i], &critical, NULL, NULL) <= 0) {
			rc = SW_EINVAL;
			sw_seterr(err, errlen, "certificate %u is not a CA certificate", i + 1);
			break;
		}
		key_id_hex(crts[i], 0, c->id);
		if (gnutls_x509_crt_get_dn_by_oid(crts[i], GNUTLS_OID_X520_COMMON_NAME, 0, 0,
						  c->name, &size) < 0)
			c->name[0] = '\0';
		c->not_before = (int64_t)gnutls_x509_crt_get_activation_time(crts[i]) * 1000;
		c->not_after = (int64_t)gnutls_x509_crt_get_expiration_time(crts[i]) * 1000;
		if ((rc = export_crt(crts[i], &c->pem, err, errlen)))
			break;
		(*count)++;
	}
	if (rc) {
		sw_pki_bundle_free(out, *count);
		*count = 0;
	}
	crt_list_free(crts, n);
	return rc;
}

void sw_pki_bundle_free(struct sw_pki_ca_info *cas, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(cas[i].pem);
		cas[i].pem = NULL;
	}
}

int sw_pki_pkcs12(const char *key_pem, const char *cert_pem, const char *name, const char *password,
		  unsigned char **der, size_t *len, char *err, size_t errlen)
{
	gnutls_x509_crt_t crt = NULL;
	gnutls_x509_privkey_t key = NULL;
	gnutls_pkcs12_bag_t cbag = NULL, kbag = NULL;
	gnutls_pkcs12_t p12 = NULL;
	gnutls_datum_t out = {NULL, 0};
	unsigned char id[64];
	size_t idlen = sizeof(id);
	int ret = 0, rc, ci, ki;
	/* PBES2 with AES-256 and a SHA-256 MAC: what browsers and NSS import today */
	const unsigned enc = GNUTLS_PKCS_PBES2_AES_256;

	*der = NULL;
	*len = 0;
	if ((rc = import_crt_pem(cert_pem, &crt, err, errlen)) ||
	    (rc = import_key_pem(key_pem, &key, err, errlen)))
		goto out;
	gnutls_datum_t kid = {id, 0};
	if ((ret = gnutls_x509_crt_get_key_id(crt, 0, id, &idlen)) < 0 ||
	    (ret = gnutls_pkcs12_bag_init(&cbag)) < 0 ||
	    (ret = gnutls_pkcs12_bag_init(&kbag)) < 0 ||
	    (ci = ret = gnutls_pkcs12_bag_set_crt(cbag, crt)) < 0 ||
	    (ret = gnutls_pkcs12_bag_set_friendly_name(cbag, (unsigned)ci, name)) < 0)
		goto fail;
	kid.size = (unsigned)idlen;
	if ((ret = gnutls_pkcs12_bag_set_key_id(cbag, (unsigned)ci, &kid)) < 0 ||
	    (ret = gnutls_pkcs12_bag_encrypt(cbag, password, enc)) < 0 ||
	    (ki = ret = gnutls_pkcs12_bag_set_privkey(kbag, key, password, enc)) < 0 ||
	    (ret = gnutls_pkcs12_bag_set_friendly_name(kbag, (unsigned)ki, name)) < 0 ||
	    (ret = gnutls_pkcs12_bag_set_key_id(kbag, (unsigned)ki, &kid)) < 0 ||
	    (ret = gnutls_pkcs12_init(&p12)) < 0 || (ret = gnutls_pkcs12_set_bag(p12, cbag)) < 0 ||
	    (ret = gnutls_pkcs12_set_bag(p12, kbag)) < 0 ||
	    (ret = gnutls_pkcs12_generate_mac2(p12, GNUTLS_MAC_SHA256, password)) < 0 ||
	    (ret = gnutls_pkcs12_export2(p12, GNUTLS_X509_FMT_DER, &out)) < 0)
		goto fail;
	if (!(*der = malloc(out.size))) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	memcpy(*der, out.data, out.size);
	*len = out.size;
	goto out;
fail:
	rc = map_gnutls(ret, SW_ECRYPTO);
	sw_seterr(err, errlen, "could not make the PKCS#12 file: %s", gnutls_strerror(ret));
out:
	gnutls_free(out.data);
	gnutls_pkcs12_deinit(p12);
	gnutls_pkcs12_bag_deinit(cbag);
	gnutls_pkcs12_bag_deinit(kbag);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
	return rc;
}

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "pki.h"

#define DAY 86400

/* One site CA and one foreign CA, shared by the tests: generating them is the slow part. */
struct fixture {
	char *ca_cert;
	char *ca_key;
	struct sw_pki_ca *ca;
	struct sw_pki_verifier *v;
	char *other_cert;
	char *other_key;
	struct sw_pki_ca *other;
	char *key;
	char *csr;
};

static int group_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256] = "";

	if (f == NULL)
		return -1;
	if (sw_pki_ca_create("TEST", 3650, &f->ca_cert, &f->ca_key, err, sizeof(err)) != 0 ||
	    sw_pki_ca_load(f->ca_cert, f->ca_key, &f->ca, err, sizeof(err)) != 0 ||
	    sw_pki_verifier_new(f->ca_cert, &f->v, err, sizeof(err)) != 0 ||
	    sw_pki_ca_create("OTHER", 3650, &f->other_cert, &f->other_key, err, sizeof(err)) != 0 ||
	    sw_pki_ca_load(f->other_cert, f->other_key, &f->other, err, sizeof(err)) != 0 ||
	    sw_pki_key_generate(&f->key, err, sizeof(err)) != 0 ||
	    sw_pki_csr_create(f->key, "web01", &f->csr, err, sizeof(err)) != 0) {
		print_error("fixture: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static int group_teardown(void **state)
{
	struct fixture *f = *state;

	if (f == NULL)
		return 0;
	sw_pki_ca_free(f->ca);
	sw_pki_ca_free(f->other);
	sw_pki_verifier_free(f->v);
	free(f->ca_cert);
	free(f->ca_key);
	free(f->other_cert);
	free(f->other_key);
	free(f->key);
	free(f->csr);
	free(f);
	return 0;
}

static int issue(struct sw_pki_ca *ca, const char *csr, const char *cn, const char *role,
		 const char *const *sans, int server_auth, char **cert, char serial[41], char *err,
		 size_t errlen)
{
	struct sw_pki_issue what = {
	    .cn = cn,
	    .role = role,
	    .sans = sans,
	    .days = 30,
	    .purposes = server_auth ? SW_PKI_TLS_SERVER | SW_PKI_TLS_CLIENT : 0,
	};

	return sw_pki_ca_issue(ca, csr, strlen(csr), &what, cert, serial, err, errlen);
}

static gnutls_x509_crt_t crt_from_pem(const char *pem)
{
	gnutls_x509_crt_t crt;
	gnutls_datum_t d = {(unsigned char *)pem, (unsigned)strlen(pem)};

	assert_int_equal(gnutls_x509_crt_init(&crt), 0);
	assert_int_equal(gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM), 0);
	return crt;
}

/* The DER a TLS peer would present; free der->data with gnutls_free. */
static void pem_to_der(const char *pem, gnutls_datum_t *der)
{
	gnutls_x509_crt_t crt = crt_from_pem(pem);

	assert_int_equal(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, der), 0);
	gnutls_x509_crt_deinit(crt);
}

static char *datum_to_str(gnutls_datum_t *d)
{
	char *s = malloc(d->size + 1);

	assert_non_null(s);
	memcpy(s, d->data, d->size);
	s[d->size] = '\0';
	gnutls_free(d->data);
	return s;
}

static void dn_get(gnutls_x509_crt_t crt, const char *oid, unsigned idx, char *buf, size_t size)
{
	assert_int_equal(gnutls_x509_crt_get_dn_by_oid(crt, oid, idx, 0, buf, &size), 0);
}

static int has_purpose(gnutls_x509_crt_t crt, const char *want)
{
	char oid[128];
	unsigned i;

	for (i = 0;; i++) {
		size_t size = sizeof(oid);

		if (gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &size, NULL) < 0)
			return 0;
		if (strcmp(oid, want) == 0)
			return 1;
	}
}

static int is_lower_hex(const char *s, size_t len)
{
	size_t i;

	if (strlen(s) != len)
		return 0;
	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* A key outside the site's policy, or a shape the library will not build. */
static char *gen_key_pem(gnutls_pk_algorithm_t pk, unsigned bits)
{
	gnutls_x509_privkey_t key;
	gnutls_datum_t d;

	assert_int_equal(gnutls_x509_privkey_init(&key), 0);
	assert_int_equal(gnutls_x509_privkey_generate2(key, pk, bits, 0, NULL, 0), 0);
	assert_int_equal(gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL,
							   GNUTLS_PKCS_PLAIN, &d),
			 0);
	gnutls_x509_privkey_deinit(key);
	return datum_to_str(&d);
}

/* A certificate signed by the fixture's CA with any validity, OU, purpose and CA flag, to reach
 * the verifier's refusals that sw_pki_ca_issue() will not produce. */
static char *make_cert(const struct fixture *f, const char *ou, time_t not_before, time_t not_after,
		       const char *purpose, int ca_flag)
{
	gnutls_x509_crt_t ca = crt_from_pem(f->ca_cert), crt;
	gnutls_x509_privkey_t cakey, key;
	gnutls_datum_t d = {(unsigned char *)f->ca_key, (unsigned)strlen(f->ca_key)};
	unsigned char serial[16];

	assert_int_equal(gnutls_x509_privkey_init(&cakey), 0);
	assert_int_equal(gnutls_x509_privkey_import2(cakey, &d, GNUTLS_X509_FMT_PEM, NULL, 0), 0);
	assert_int_equal(gnutls_x509_privkey_init(&key), 0);
	assert_int_equal(
	    gnutls_x509_privkey_generate2(
		key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0, NULL, 0),
	    0);
	assert_int_equal(gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial)), 0);
	serial[0] = 0x11;
	assert_int_equal(gnutls_x509_crt_init(&crt), 0);
	assert_int_equal(gnutls_x509_crt_set_version(crt, 3), 0);
	assert_int_equal(gnutls_x509_crt_set_key(crt, key), 0);
	assert_int_equal(gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)), 0);
	assert_int_equal(gnutls_x509_crt_set_activation_time(crt, not_before), 0);
	assert_int_equal(gnutls_x509_crt_set_expiration_time(crt, not_after), 0);
	assert_int_equal(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0,
						       "siteward site TEST", 18),
			 0);
	assert_int_equal(gnutls_x509_crt_set_dn_by_oid(
			     crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, 0, ou, strlen(ou)),
			 0);
	assert_int_equal(
	    gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "handmade", 8), 0);
	assert_int_equal(gnutls_x509_crt_set_basic_constraints(crt, ca_flag, -1), 0);
	assert_int_equal(gnutls_x509_crt_set_key_purpose_oid(crt, purpose, 0), 0);
	assert_int_equal(gnutls_x509_crt_sign2(crt, ca, cakey, GNUTLS_DIG_SHA256, 0), 0);
	assert_int_equal(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &d), 0);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_crt_deinit(ca);
	gnutls_x509_privkey_deinit(key);
	gnutls_x509_privkey_deinit(cakey);
	return datum_to_str(&d);
}

static int verify_pem(const struct fixture *f, const char *pem, struct sw_identity *id, char *err,
		      size_t errlen)
{
	gnutls_datum_t der;
	int rc;

	pem_to_der(pem, &der);
	rc = sw_pki_verify_chain(f->v, &der, 1, id, err, errlen);
	gnutls_free(der.data);
	return rc;
}

static void test_ca_create_load(void **state)
{
	struct fixture *f = *state;
	char *cert = NULL, *key = NULL, *leaf = NULL, serial[41];
	struct sw_pki_ca *ca = NULL;
	struct sw_identity id;
	gnutls_x509_crt_t crt;
	unsigned char ser[32];
	size_t size = sizeof(ser);
	char buf[128], err[256];
	unsigned ca_flag = 0;
	time_t now = time(NULL);

	assert_int_equal(sw_pki_ca_create("PAR-1", 365, &cert, &key, err, sizeof(err)), 0);
	assert_non_null(strstr(cert, "-----BEGIN CERTIFICATE-----"));
	assert_non_null(strstr(key, "-----BEGIN PRIVATE KEY-----"));
	assert_int_equal(sw_pki_ca_load(cert, key, &ca, err, sizeof(err)), 0);
	assert_non_null(ca);
	sw_pki_ca_free(ca);
	ca = NULL;

	crt = crt_from_pem(cert);
	dn_get(crt, GNUTLS_OID_X520_COMMON_NAME, 0, buf, sizeof(buf));
	/* named by when it was made: one that follows in a rotation has a name of its own */
	assert_int_equal(strncmp(buf, "siteward site PAR-1 CA ", 23), 0);
	assert_int_equal(strlen(buf), 23 + 14);
	assert_int_equal(strspn(buf + 23, "0123456789"), 14);
	dn_get(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, buf, sizeof(buf));
	assert_string_equal(buf, "siteward site PAR-1");
	assert_true(gnutls_x509_crt_get_basic_constraints(crt, NULL, &ca_flag, NULL) > 0);
	assert_int_equal(ca_flag, 1);
	assert_int_equal(gnutls_x509_crt_get_serial(crt, ser, &size), 0);
	assert_int_equal(size, 16);
	assert_int_equal(ser[0] & 0x80, 0);
	/* a week back, for machines whose clock is days behind */
	assert_true(gnutls_x509_crt_get_activation_time(crt) <= now - 7 * DAY + 5);
	assert_true(gnutls_x509_crt_get_activation_time(crt) >= now - 7 * DAY - 5);
	assert_true(gnutls_x509_crt_get_expiration_time(crt) >= now + 365 * DAY - 5);
	assert_true(gnutls_x509_crt_get_expiration_time(crt) <= now + 365 * DAY + 5);
	gnutls_x509_crt_deinit(crt);

	/* A CA has no role, so it is no identity. */
	assert_int_equal(sw_pki_cert_identity(cert, &id, err, sizeof(err)), SW_EINVAL);

	/* The other site's key does not belong to this certificate. */
	assert_int_equal(sw_pki_ca_load(cert, f->other_key, &ca, err, sizeof(err)), SW_EINVAL);
	assert_null(ca);
	assert_int_equal(sw_pki_ca_load("garbage", key, &ca, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_pki_ca_load(cert, "garbage", &ca, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_pki_ca_load(NULL, key, &ca, NULL, 0), SW_EINVAL);

	/* A leaf and its own key load as a pair but are not a CA. */
	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &leaf, serial,
			       err, sizeof(err)),
			 0);
	assert_int_equal(sw_pki_ca_load(leaf, f->key, &ca, err, sizeof(err)), SW_EINVAL);
	assert_non_null(strstr(err, "not a CA"));
	assert_null(ca);
	free(leaf);
	sw_pki_ca_free(NULL);

	free(cert);
	free(key);
}

static void test_ca_create_refusals(void **state)
{
	char *cert = (char *)1, *key = (char *)1;
	char err[256] = "";
	char long_code[40];

	memset(long_code, 'a', 33);
	long_code[33] = '\0';
	assert_int_equal(sw_pki_ca_create("", 365, &cert, &key, err, sizeof(err)), SW_EINVAL);
	assert_null(cert);
	assert_null(key);
	assert_non_null(strstr(err, "site code"));
	assert_int_equal(sw_pki_ca_create(NULL, 365, &cert, &key, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_pki_ca_create("a b", 365, &cert, &key, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_pki_ca_create("a,O=x", 365, &cert, &key, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_pki_ca_create(long_code, 365, &cert, &key, err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(sw_pki_ca_create("OK", 0, &cert, &key, err, sizeof(err)), SW_EINVAL);
	assert_non_null(strstr(err, "days"));
	assert_int_equal(sw_pki_ca_create("OK", 36501, &cert, &key, NULL, 0), SW_EINVAL);
	assert_int_equal(sw_pki_ca_create("OK", 365, NULL, &key, err, sizeof(err)), SW_EINVAL);
}

static void test_issue_roundtrip(void **state)
{
	struct fixture *f = *state;
	char *cert = NULL, serial[41], err[256] = "", buf[128];
	struct sw_identity id;
	gnutls_x509_crt_t crt, ca;
	unsigned char a[64], b[64];
	size_t asize = sizeof(a), bsize = sizeof(b);
	unsigned usage = 0, critical = 0, ca_flag = 1;
	gnutls_x509_privkey_t key;
	gnutls_datum_t kd = {(unsigned char *)f->key, (unsigned)strlen(f->key)};

	assert_non_null(strstr(f->key, "-----BEGIN PRIVATE KEY-----"));
	assert_non_null(strstr(f->csr, "CERTIFICATE REQUEST-----"));
	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial,
			       err, sizeof(err)),
			 0);
	assert_true(is_lower_hex(serial, 32));

	assert_int_equal(sw_pki_cert_identity(cert, &id, err, sizeof(err)), 0);
	assert_string_equal(id.cn, "web01");
	assert_string_equal(id.role, "agent");
	assert_string_equal(id.serial, serial);

	crt = crt_from_pem(cert);
	dn_get(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, buf, sizeof(buf));
	assert_string_equal(buf, "siteward site TEST");
	assert_int_equal(gnutls_x509_crt_get_basic_constraints(crt, NULL, &ca_flag, NULL), 0);
	assert_int_equal(ca_flag, 0);
	assert_true(gnutls_x509_crt_get_key_usage(crt, &usage, &critical) >= 0);
	assert_int_equal(usage, GNUTLS_KEY_DIGITAL_SIGNATURE);
	assert_true(has_purpose(crt, GNUTLS_KP_TLS_WWW_CLIENT));
	assert_false(has_purpose(crt, GNUTLS_KP_TLS_WWW_SERVER));
	assert_int_equal(gnutls_x509_crt_get_signature_algorithm(crt), GNUTLS_SIGN_ECDSA_SHA256);

	/* The authority key id names the CA's subject key id. */
	ca = crt_from_pem(f->ca_cert);
	assert_int_equal(gnutls_x509_crt_get_authority_key_id(crt, a, &asize, NULL), 0);
	assert_int_equal(gnutls_x509_crt_get_subject_key_id(ca, b, &bsize, NULL), 0);
	assert_int_equal(asize, bsize);
	assert_memory_equal(a, b, asize);
	assert_int_equal(gnutls_x509_crt_check_issuer(crt, ca), 1);
	gnutls_x509_crt_deinit(ca);

	/* The certificate carries the key the request was made with. */
	asize = sizeof(a);
	bsize = sizeof(b);
	assert_int_equal(gnutls_x509_privkey_init(&key), 0);
	assert_int_equal(gnutls_x509_privkey_import2(key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0), 0);
	assert_int_equal(gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, a, &asize),
			 0);
	assert_int_equal(gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA256, b, &bsize), 0);
	assert_memory_equal(a, b, asize);
	gnutls_x509_privkey_deinit(key);

	asize = sizeof(a);
	assert_int_equal(gnutls_x509_crt_get_subject_alt_name(crt, 0, a, &asize, NULL),
			 GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE);
	gnutls_x509_crt_deinit(crt);

	/* Two issues from one request get different serials. */
	{
		char *cert2 = NULL, serial2[41];

		assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &cert2,
				       serial2, err, sizeof(err)),
				 0);
		assert_string_not_equal(serial, serial2);
		free(cert2);
	}
	free(cert);
}

static void test_issue_sans_server(void **state)
{
	struct fixture *f = *state;
	static const char *const sans[] = {"192.0.2.7", "2001:db8::1", "web01.example.org", NULL};
	static const unsigned char v4[4] = {192, 0, 2, 7};
	static const unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
					     0,	   0,	 0,    0,    0, 0, 0, 1};
	char *cert = NULL, serial[41], err[256] = "";
	unsigned char san[256];
	size_t size;
	gnutls_x509_crt_t crt;
	struct sw_identity id;

	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_SERVER, sans, 1, &cert, serial,
			       err, sizeof(err)),
			 0);
	crt = crt_from_pem(cert);
	size = sizeof(san);
	assert_int_equal(gnutls_x509_crt_get_subject_alt_name(crt, 0, san, &size, NULL),
			 GNUTLS_SAN_IPADDRESS);
	assert_int_equal(size, 4);
	assert_memory_equal(san, v4, 4);
	size = sizeof(san);
	assert_int_equal(gnutls_x509_crt_get_subject_alt_name(crt, 1, san, &size, NULL),
			 GNUTLS_SAN_IPADDRESS);
	assert_int_equal(size, 16);
	assert_memory_equal(san, v6, 16);
	size = sizeof(san);
	assert_int_equal(gnutls_x509_crt_get_subject_alt_name(crt, 2, san, &size, NULL),
			 GNUTLS_SAN_DNSNAME);
	assert_string_equal((char *)san, "web01.example.org");
	size = sizeof(san);
	assert_int_equal(gnutls_x509_crt_get_subject_alt_name(crt, 3, san, &size, NULL),
			 GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE);
	assert_true(has_purpose(crt, GNUTLS_KP_TLS_WWW_CLIENT));
	assert_true(has_purpose(crt, GNUTLS_KP_TLS_WWW_SERVER));
	assert_int_equal(gnutls_x509_crt_check_hostname(crt, "web01.example.org"), 1);
	assert_int_equal(gnutls_x509_crt_check_ip(crt, v4, 4, 0), 1);
	gnutls_x509_crt_deinit(crt);

	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), 0);
	assert_string_equal(id.role, "server");
	free(cert);
}

/* Whatever a request asks for, only its key reaches the certificate. */
static void test_issue_ignores_request_subject(void **state)
{
	struct fixture *f = *state;
	gnutls_x509_privkey_t key;
	gnutls_x509_crq_t crq;
	gnutls_x509_crt_t crt;
	gnutls_datum_t d;
	char *csr, *cert = NULL, serial[41], err[256] = "", buf[128];
	unsigned ca_flag = 1;
	struct sw_identity id;
	size_t size;

	assert_int_equal(gnutls_x509_privkey_init(&key), 0);
	assert_int_equal(
	    gnutls_x509_privkey_generate2(
		key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0, NULL, 0),
	    0);
	assert_int_equal(gnutls_x509_crq_init(&crq), 0);
	assert_int_equal(gnutls_x509_crq_set_version(crq, 1), 0);
	assert_int_equal(
	    gnutls_x509_crq_set_dn_by_oid(crq, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "evil", 4), 0);
	assert_int_equal(gnutls_x509_crq_set_dn_by_oid(
			     crq, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, 0, "admin", 5),
			 0);
	assert_int_equal(
	    gnutls_x509_crq_set_dn_by_oid(crq, GNUTLS_OID_X520_COMMON_NAME, 0, "root", 4), 0);
	assert_int_equal(gnutls_x509_crq_set_basic_constraints(crq, 1, -1), 0);
	assert_int_equal(gnutls_x509_crq_set_subject_alt_name(
			     crq, GNUTLS_SAN_DNSNAME, "evil.example", 12, GNUTLS_FSAN_APPEND),
			 0);
	assert_int_equal(gnutls_x509_crq_set_key(crq, key), 0);
	assert_int_equal(gnutls_x509_crq_sign2(crq, key, GNUTLS_DIG_SHA256, 0), 0);
	assert_int_equal(gnutls_x509_crq_export2(crq, GNUTLS_X509_FMT_PEM, &d), 0);
	csr = datum_to_str(&d);
	gnutls_x509_crq_deinit(crq);
	gnutls_x509_privkey_deinit(key);

	assert_int_equal(
	    issue(f->ca, csr, "db02", SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial, err, sizeof(err)),
	    0);
	assert_int_equal(sw_pki_cert_identity(cert, &id, err, sizeof(err)), 0);
	assert_string_equal(id.cn, "db02");
	assert_string_equal(id.role, "agent");

	crt = crt_from_pem(cert);
	dn_get(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, buf, sizeof(buf));
	assert_string_equal(buf, "siteward site TEST");
	size = sizeof(buf);
	assert_int_equal(gnutls_x509_crt_get_dn_by_oid(
			     crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, 1, 0, buf, &size),
			 GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE);
	assert_int_equal(gnutls_x509_crt_get_basic_constraints(crt, NULL, &ca_flag, NULL), 0);
	assert_int_equal(ca_flag, 0);
	size = sizeof(buf);
	assert_int_equal(gnutls_x509_crt_get_subject_alt_name(crt, 0, buf, &size, NULL),
			 GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE);
	gnutls_x509_crt_deinit(crt);
	free(cert);
	free(csr);
}

/* Changes one byte of the signed subject: the request still parses, its signature fails. */
static void test_issue_bad_signature(void **state)
{
	struct fixture *f = *state;
	gnutls_x509_crq_t crq;
	gnutls_datum_t pem, der, out;
	unsigned char *p;
	char *csr = NULL, *bad, *cert = (char *)1, serial[41], err[256] = "";

	assert_int_equal(sw_pki_csr_create(f->key, "tamperme", &csr, err, sizeof(err)), 0);
	pem.data = (unsigned char *)csr;
	pem.size = (unsigned)strlen(csr);
	assert_int_equal(gnutls_x509_crq_init(&crq), 0);
	assert_int_equal(gnutls_x509_crq_import(crq, &pem, GNUTLS_X509_FMT_PEM), 0);
	assert_int_equal(gnutls_x509_crq_export2(crq, GNUTLS_X509_FMT_DER, &der), 0);
	gnutls_x509_crq_deinit(crq);
	p = memmem(der.data, der.size, "tamperme", 8);
	assert_non_null(p);
	p[6] = 'M';
	assert_int_equal(gnutls_pem_base64_encode2("NEW CERTIFICATE REQUEST", &der, &out), 0);
	gnutls_free(der.data);
	bad = datum_to_str(&out);

	assert_int_equal(
	    issue(f->ca, bad, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial, err, sizeof(err)),
	    SW_EDENIED);
	assert_null(cert);
	assert_string_equal(serial, "");
	assert_non_null(strstr(err, "not signed"));
	free(bad);
	free(csr);
}

static void test_issue_malformed_request(void **state)
{
	struct fixture *f = *state;
	struct sw_pki_issue what = {.cn = "web01", .role = SW_PKI_ROLE_AGENT, .days = 30};
	char *cert = NULL, serial[41], err[256] = "";
	size_t len = strlen(f->csr);
	char *exact, *big;

	assert_int_equal(
	    sw_pki_ca_issue(f->ca, "garbage", 7, &what, &cert, serial, err, sizeof(err)),
	    SW_EINVAL);
	assert_non_null(strstr(err, "malformed"));
	assert_int_equal(sw_pki_ca_issue(f->ca, "", 0, &what, &cert, serial, err, sizeof(err)),
			 SW_EINVAL);
	assert_non_null(strstr(err, "empty"));
	assert_int_equal(sw_pki_ca_issue(f->ca, NULL, 10, &what, &cert, serial, NULL, 0),
			 SW_EINVAL);
	assert_int_equal(
	    sw_pki_ca_issue(f->ca, f->csr, len / 2, &what, &cert, serial, err, sizeof(err)),
	    SW_EINVAL);
	assert_null(cert);

	/* The request need not be NUL-terminated: an exact-size copy is read by length. */
	exact = malloc(len);
	assert_non_null(exact);
	memcpy(exact, f->csr, len);
	assert_int_equal(sw_pki_ca_issue(f->ca, exact, len, &what, &cert, serial, err, sizeof(err)),
			 0);
	free(cert);
	cert = NULL;
	free(exact);

	/* 16 KiB is the limit, inclusive. */
	big = malloc(16 * 1024 + 1);
	assert_non_null(big);
	memset(big, '\n', 16 * 1024 + 1);
	memcpy(big, f->csr, len);
	assert_int_equal(
	    sw_pki_ca_issue(f->ca, big, 16 * 1024, &what, &cert, serial, err, sizeof(err)), 0);
	free(cert);
	cert = NULL;
	assert_int_equal(
	    sw_pki_ca_issue(f->ca, big, 16 * 1024 + 1, &what, &cert, serial, err, sizeof(err)),
	    SW_ETOOBIG);
	assert_null(cert);
	free(big);
}

static void test_issue_invalid_args(void **state)
{
	struct fixture *f = *state;
	static const char *const bad_cns[] = {"", "has space", "a/b", "x,OU=admin", "caf\xc3\xa9"};
	static const char *const bad_san[] = {"bad name!", NULL};
	static const char *const empty_san[] = {"", NULL};
	const char *many[66];
	char *cert = NULL, serial[41], err[256] = "", cn64[65];
	struct sw_pki_issue what = {.cn = "web01", .role = SW_PKI_ROLE_AGENT, .days = 30};
	char *csr = (char *)1;
	size_t i;

	for (i = 0; i < sizeof(bad_cns) / sizeof(bad_cns[0]); i++) {
		err[0] = '\0';
		assert_int_equal(issue(f->ca, f->csr, bad_cns[i], SW_PKI_ROLE_AGENT, NULL, 0, &cert,
				       serial, err, sizeof(err)),
				 SW_EINVAL);
		assert_non_null(strstr(err, "common name"));
		assert_null(cert);
	}
	assert_int_equal(
	    issue(f->ca, f->csr, NULL, SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial, err, sizeof(err)),
	    SW_EINVAL);
	memset(cn64, 'a', 64);
	cn64[64] = '\0';
	assert_int_equal(
	    issue(f->ca, f->csr, cn64, SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial, err, sizeof(err)),
	    SW_EINVAL);
	cn64[63] = '\0';
	assert_int_equal(
	    issue(f->ca, f->csr, cn64, SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial, err, sizeof(err)),
	    0);
	free(cert);
	cert = NULL;

	assert_int_equal(
	    issue(f->ca, f->csr, "web01", "root", NULL, 0, &cert, serial, err, sizeof(err)),
	    SW_EINVAL);
	assert_non_null(strstr(err, "role"));
	assert_int_equal(
	    issue(f->ca, f->csr, "web01", NULL, NULL, 0, &cert, serial, err, sizeof(err)),
	    SW_EINVAL);
	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, bad_san, 0, &cert, serial,
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_non_null(strstr(err, "alternative name"));
	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, empty_san, 0, &cert,
			       serial, err, sizeof(err)),
			 SW_EINVAL);
	for (i = 0; i < 65; i++)
		many[i] = "10.0.0.1";
	many[65] = NULL;
	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, many, 0, &cert, serial,
			       err, sizeof(err)),
			 SW_EINVAL);

	assert_int_equal(
	    sw_pki_ca_issue(f->ca, f->csr, strlen(f->csr), &what, &cert, NULL, err, sizeof(err)),
	    SW_EINVAL);
	what.days = 0;
	assert_int_equal(
	    sw_pki_ca_issue(f->ca, f->csr, strlen(f->csr), &what, &cert, serial, err, sizeof(err)),
	    SW_EINVAL);
	assert_non_null(strstr(err, "days"));
	assert_null(cert);

	assert_int_equal(sw_pki_csr_create(f->key, "bad cn", &csr, err, sizeof(err)), SW_EINVAL);
	assert_null(csr);
	assert_int_equal(sw_pki_csr_create("garbage", "web01", &csr, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(sw_pki_csr_create(NULL, "web01", &csr, NULL, 0), SW_EINVAL);
	assert_null(csr);
}

static void test_issue_key_types(void **state)
{
	struct fixture *f = *state;
	char *sign_key = NULL, *sign_pub = NULL, *csr = NULL, *cert = NULL, *p384;
	char serial[41], err[256] = "";
	struct sw_identity id;

	/* Ed25519 keys are accepted. */
	assert_int_equal(sw_pki_sign_key_generate(&sign_key, &sign_pub, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_csr_create(sign_key, "ed01", &csr, err, sizeof(err)), 0);
	assert_int_equal(
	    issue(f->ca, csr, "ed01", SW_PKI_ROLE_ADMIN, NULL, 0, &cert, serial, err, sizeof(err)),
	    0);
	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), 0);
	assert_string_equal(id.cn, "ed01");
	assert_string_equal(id.role, "admin");
	free(cert);
	cert = NULL;
	free(csr);
	csr = NULL;

	/* Any other curve is not. */
	p384 = gen_key_pem(GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP384R1));
	assert_int_equal(sw_pki_csr_create(p384, "p384", &csr, err, sizeof(err)), 0);
	assert_int_equal(
	    issue(f->ca, csr, "p384", SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial, err, sizeof(err)),
	    SW_EDENIED);
	assert_non_null(strstr(err, "P-256"));
	assert_null(cert);

	free(csr);
	free(p384);
	free(sign_key);
	free(sign_pub);
}

static void test_verify_ok(void **state)
{
	struct fixture *f = *state;
	char *cert = NULL, serial[41], err[256] = "";
	struct sw_identity id;
	gnutls_datum_t chain[2];

	assert_int_equal(issue(f->ca, f->csr, "alice", SW_PKI_ROLE_ADMIN, NULL, 0, &cert, serial,
			       err, sizeof(err)),
			 0);
	pem_to_der(cert, &chain[0]);
	assert_int_equal(sw_pki_verify_chain(f->v, chain, 1, &id, err, sizeof(err)), 0);
	assert_string_equal(id.cn, "alice");
	assert_string_equal(id.role, "admin");
	assert_string_equal(id.serial, serial);

	/* A peer that sends the CA along is accepted too. */
	pem_to_der(f->ca_cert, &chain[1]);
	assert_int_equal(sw_pki_verify_chain(f->v, chain, 2, &id, err, sizeof(err)), 0);
	assert_string_equal(id.cn, "alice");

	gnutls_free(chain[0].data);
	gnutls_free(chain[1].data);
	free(cert);
}

static void test_verify_other_ca(void **state)
{
	struct fixture *f = *state;
	char *cert = NULL, serial[41], err[256] = "";
	struct sw_identity id;
	gnutls_datum_t chain[2];

	assert_int_equal(issue(f->other, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial,
			       err, sizeof(err)),
			 0);
	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "certificate not issued by this site");
	assert_string_equal(id.cn, "");

	/* Sending the other site's CA along does not help. */
	pem_to_der(cert, &chain[0]);
	pem_to_der(f->other_cert, &chain[1]);
	assert_int_equal(sw_pki_verify_chain(f->v, chain, 2, &id, err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "certificate not issued by this site");
	gnutls_free(chain[0].data);
	gnutls_free(chain[1].data);
	free(cert);
}

static void test_verify_validity(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL);
	char *cert, err[256] = "";
	struct sw_identity id;

	/* A handmade certificate in good order passes, so the refusals below are about time. */
	cert = make_cert(f, SW_PKI_ROLE_AGENT, now - DAY, now + DAY, GNUTLS_KP_TLS_WWW_CLIENT, 0);
	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), 0);
	assert_string_equal(id.cn, "handmade");
	free(cert);

	cert =
	    make_cert(f, SW_PKI_ROLE_AGENT, now - 10 * DAY, now - DAY, GNUTLS_KP_TLS_WWW_CLIENT, 0);
	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "certificate expired");
	free(cert);

	cert =
	    make_cert(f, SW_PKI_ROLE_AGENT, now + DAY, now + 10 * DAY, GNUTLS_KP_TLS_WWW_CLIENT, 0);
	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "certificate not yet valid");
	free(cert);
}

static void test_verify_refusals(void **state)
{
	struct fixture *f = *state;
	time_t now = time(NULL);
	char *cert, err[256] = "";
	struct sw_identity id;
	gnutls_datum_t chain[9];
	unsigned char junk[] = {0x30, 0x03, 0x02, 0x01, 0x01};
	unsigned i;

	assert_int_equal(sw_pki_verify_chain(f->v, NULL, 0, &id, err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "no client certificate");
	chain[0].data = junk;
	chain[0].size = sizeof(junk);
	assert_int_equal(sw_pki_verify_chain(f->v, chain, 0, &id, NULL, 0), SW_EDENIED);
	assert_int_equal(sw_pki_verify_chain(f->v, chain, 1, &id, err, sizeof(err)), SW_EDENIED);
	assert_non_null(strstr(err, "malformed"));
	chain[0].size = 0;
	assert_int_equal(sw_pki_verify_chain(f->v, chain, 1, &id, err, sizeof(err)), SW_EDENIED);

	/* The CA itself is trusted, but identifies no one. */
	assert_int_equal(verify_pem(f, f->ca_cert, &id, err, sizeof(err)), SW_EDENIED);

	/* Signed by the CA, but with no role we know. */
	cert = make_cert(f, "root", now - DAY, now + DAY, GNUTLS_KP_TLS_WWW_CLIENT, 0);
	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), SW_EDENIED);
	assert_non_null(strstr(err, "role"));
	assert_string_equal(id.cn, "");
	free(cert);

	/* Signed by the CA, but for code signing only. */
	cert = make_cert(f, SW_PKI_ROLE_AGENT, now - DAY, now + DAY, GNUTLS_KP_CODE_SIGNING, 0);
	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), SW_EDENIED);
	assert_non_null(strstr(err, "TLS"));
	free(cert);

	/* Signed by the CA with a role, but itself a CA. */
	cert = make_cert(f, SW_PKI_ROLE_AGENT, now - DAY, now + DAY, GNUTLS_KP_TLS_WWW_CLIENT, 1);
	assert_int_equal(verify_pem(f, cert, &id, err, sizeof(err)), SW_EDENIED);
	assert_non_null(strstr(err, "CA certificate"));
	free(cert);

	/* Chains have a length limit. */
	pem_to_der(f->ca_cert, &chain[0]);
	for (i = 1; i < 9; i++)
		chain[i] = chain[0];
	assert_int_equal(sw_pki_verify_chain(f->v, chain, 9, &id, err, sizeof(err)), SW_EDENIED);
	gnutls_free(chain[0].data);
}

static void test_verifier_new(void **state)
{
	struct fixture *f = *state;
	struct sw_pki_verifier *v = (struct sw_pki_verifier *)1;
	char *cert = NULL, serial[41], err[256] = "";

	assert_int_equal(sw_pki_verifier_new("garbage", &v, err, sizeof(err)), SW_EINVAL);
	assert_null(v);
	assert_int_equal(sw_pki_verifier_new(NULL, &v, NULL, 0), SW_EINVAL);
	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial,
			       err, sizeof(err)),
			 0);
	assert_int_equal(sw_pki_verifier_new(cert, &v, err, sizeof(err)), SW_EINVAL);
	assert_null(v);
	free(cert);
	sw_pki_verifier_free(NULL);
}

static void test_identity_refusals(void **state)
{
	struct sw_identity id;
	char err[256] = "";

	assert_int_equal(sw_pki_cert_identity("garbage", &id, err, sizeof(err)), SW_EINVAL);
	assert_true(err[0] != '\0');
	assert_int_equal(sw_pki_cert_identity(NULL, &id, NULL, 0), SW_EINVAL);
	assert_int_equal(sw_pki_cert_identity("", &id, err, sizeof(err)), SW_EINVAL);
}

static void test_fingerprint(void **state)
{
	struct fixture *f = *state;
	char *cert = NULL, serial[41], err[256] = "";
	char a[65], b[65], c[65], want[65];
	unsigned char digest[32];
	size_t size = sizeof(digest), i;
	gnutls_x509_crt_t crt;

	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial,
			       err, sizeof(err)),
			 0);
	assert_int_equal(sw_pki_cert_fingerprint(cert, a, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_cert_fingerprint(cert, b, err, sizeof(err)), 0);
	assert_true(is_lower_hex(a, 64));
	assert_string_equal(a, b);

	crt = crt_from_pem(cert);
	assert_int_equal(gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, digest, &size), 0);
	gnutls_x509_crt_deinit(crt);
	for (i = 0; i < 32; i++)
		snprintf(want + 2 * i, 3, "%02x", digest[i]);
	assert_string_equal(a, want);

	assert_int_equal(sw_pki_cert_fingerprint(f->ca_cert, c, err, sizeof(err)), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(sw_pki_cert_fingerprint("garbage", c, err, sizeof(err)), SW_EINVAL);
	assert_string_equal(c, "");
	free(cert);
}

static void test_cert_validity(void **state)
{
	struct fixture *f = *state;
	char *cert = NULL, serial[41], err[256] = "";
	int64_t nb = 0, na = 0, now = (int64_t)time(NULL) * 1000;

	assert_int_equal(issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &cert, serial,
			       err, sizeof(err)),
			 0);
	assert_int_equal(sw_pki_cert_validity(cert, &nb, &na, err, sizeof(err)), 0);
	/* an issued certificate is good for a machine a week behind the issuer */
	assert_true(nb <= now - 7 * (int64_t)DAY * 1000 + 5000);
	assert_true(nb >= now - 7 * (int64_t)DAY * 1000 - 5000);
	assert_true(na >= now + 30 * (int64_t)DAY * 1000 - 5000);
	assert_true(na <= now + 30 * (int64_t)DAY * 1000 + 5000);
	assert_int_equal(sw_pki_cert_validity(cert, NULL, &na, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_cert_validity("garbage", &nb, &na, err, sizeof(err)), SW_EINVAL);
	free(cert);
}

static void test_sign_verify(void **state)
{
	struct fixture *f = *state;
	static const char msg[] = "siteward-agent_0.1.0_amd64.deb contents";
	char *key = NULL, *pub = NULL, *key2 = NULL, *pub2 = NULL, *sig = NULL, *sig2 = NULL;
	char *empty_sig = NULL, *ecdsa_pub, err[256] = "";
	char flipped[sizeof(msg)];
	gnutls_x509_privkey_t xk;
	gnutls_privkey_t pk;
	gnutls_pubkey_t pubk;
	gnutls_datum_t d = {(unsigned char *)f->key, (unsigned)strlen(f->key)};

	assert_int_equal(sw_pki_sign_key_generate(&key, &pub, err, sizeof(err)), 0);
	assert_non_null(strstr(key, "-----BEGIN PRIVATE KEY-----"));
	assert_non_null(strstr(pub, "-----BEGIN PUBLIC KEY-----"));
	assert_int_equal(sw_pki_sign(key, msg, sizeof(msg), &sig, err, sizeof(err)), 0);
	assert_int_equal(strlen(sig), 88);
	assert_int_equal(sw_pki_verify_signature(pub, msg, sizeof(msg), sig, err, sizeof(err)), 0);

	memcpy(flipped, msg, sizeof(msg));
	flipped[3] ^= 0x01;
	assert_int_equal(sw_pki_verify_signature(pub, flipped, sizeof(msg), sig, err, sizeof(err)),
			 SW_EDENIED);
	assert_non_null(strstr(err, "does not match"));
	assert_int_equal(sw_pki_verify_signature(pub, msg, sizeof(msg) - 1, sig, NULL, 0),
			 SW_EDENIED);

	/* Garbage, the wrong length, a changed byte, nothing at all. */
	assert_int_equal(
	    sw_pki_verify_signature(pub, msg, sizeof(msg), "not base64 at all!!", err, sizeof(err)),
	    SW_EDENIED);
	assert_int_equal(
	    sw_pki_verify_signature(pub, msg, sizeof(msg), "aGVsbG8=", err, sizeof(err)),
	    SW_EDENIED);
	sig2 = strdup(sig);
	assert_non_null(sig2);
	sig2[10] = sig2[10] == 'A' ? 'B' : 'A';
	assert_int_equal(sw_pki_verify_signature(pub, msg, sizeof(msg), sig2, err, sizeof(err)),
			 SW_EDENIED);
	free(sig2);
	sig2 = NULL;
	assert_int_equal(sw_pki_verify_signature(pub, msg, sizeof(msg), "", err, sizeof(err)),
			 SW_EDENIED);
	assert_int_equal(sw_pki_verify_signature(pub, msg, sizeof(msg), NULL, err, sizeof(err)),
			 SW_EDENIED);

	/* Another key's signature does not verify under this one. */
	assert_int_equal(sw_pki_sign_key_generate(&key2, &pub2, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_sign(key2, msg, sizeof(msg), &sig2, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_verify_signature(pub, msg, sizeof(msg), sig2, err, sizeof(err)),
			 SW_EDENIED);

	/* Empty data can be signed. */
	assert_int_equal(sw_pki_sign(key, NULL, 0, &empty_sig, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_verify_signature(pub, NULL, 0, empty_sig, err, sizeof(err)), 0);
	assert_int_equal(
	    sw_pki_verify_signature(pub, msg, sizeof(msg), empty_sig, err, sizeof(err)),
	    SW_EDENIED);

	/* Certificate keys are not package keys. */
	{
		char *s = (char *)1;

		assert_int_equal(sw_pki_sign(f->key, msg, sizeof(msg), &s, err, sizeof(err)),
				 SW_EINVAL);
		assert_null(s);
		assert_int_equal(sw_pki_sign("garbage", msg, sizeof(msg), &s, err, sizeof(err)),
				 SW_EINVAL);
	}
	assert_int_equal(gnutls_x509_privkey_init(&xk), 0);
	assert_int_equal(gnutls_x509_privkey_import2(xk, &d, GNUTLS_X509_FMT_PEM, NULL, 0), 0);
	assert_int_equal(gnutls_privkey_init(&pk), 0);
	assert_int_equal(gnutls_privkey_import_x509(pk, xk, 0), 0);
	assert_int_equal(gnutls_pubkey_init(&pubk), 0);
	assert_int_equal(gnutls_pubkey_import_privkey(pubk, pk, 0, 0), 0);
	assert_int_equal(gnutls_pubkey_export2(pubk, GNUTLS_X509_FMT_PEM, &d), 0);
	ecdsa_pub = datum_to_str(&d);
	gnutls_pubkey_deinit(pubk);
	gnutls_privkey_deinit(pk);
	gnutls_x509_privkey_deinit(xk);
	assert_int_equal(
	    sw_pki_verify_signature(ecdsa_pub, msg, sizeof(msg), sig, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(
	    sw_pki_verify_signature("garbage", msg, sizeof(msg), sig, err, sizeof(err)), SW_EINVAL);

	free(ecdsa_pub);
	free(empty_sig);
	free(sig2);
	free(sig);
	free(key2);
	free(pub2);
	free(key);
	free(pub);
}

/* Two thirds of the life, whatever its length; an empty or inverted window is due at once. */
static void test_renew_at(void **state)
{
	int64_t day = 86400000;

	(void)state;
	assert_int_equal(sw_pki_renew_at(0, 3 * day), 2 * day);
	assert_int_equal(sw_pki_renew_at(1000 * day, 1825 * day), 1550 * day);
	assert_int_equal(sw_pki_renew_at(-7 * day, 818 * day), 543 * day);
	assert_int_equal(sw_pki_renew_at(5 * day, 5 * day), 5 * day);
	assert_int_equal(sw_pki_renew_at(5 * day, 2 * day), 5 * day);
	/* a real certificate's ends, far from overflow */
	assert_int_equal(sw_pki_renew_at(1700000000000, 1700000000000 + 825 * day),
			 1700000000000 + 550 * day);
}

/* Two CAs in one bundle, as during a rotation: the verifier takes certificates of either
 * and no other; the key picks its own CA out of the bundle; a certificate names the CA
 * that issued it; the bundle's id follows its certificates, not the text around them. */
static void test_bundle(void **state)
{
	struct fixture *f = *state;
	char *bundle = NULL, *spaced = NULL, *a = NULL, *b = NULL, *foreign_key = NULL;
	char serial[41], err[256], id1[17], id2[17], id3[17];
	struct sw_pki_ca *loaded = NULL;
	struct sw_pki_verifier *v = NULL;
	struct sw_pki_ca_info cas[4];
	struct sw_identity id;
	gnutls_datum_t der;
	size_t n = 0;

	assert_true(asprintf(&bundle, "%s%s", f->ca_cert, f->other_cert) > 0);
	assert_true(asprintf(&spaced, "# the site's CAs\n%s\n\n%s\n", f->ca_cert, f->other_cert) >
		    0);
	assert_int_equal(sw_pki_verifier_new(bundle, &v, err, sizeof(err)), 0);
	assert_int_equal(
	    issue(f->ca, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &a, serial, err, sizeof(err)),
	    0);
	assert_int_equal(issue(f->other, f->csr, "web01", SW_PKI_ROLE_AGENT, NULL, 0, &b, serial,
			       err, sizeof(err)),
			 0);
	pem_to_der(a, &der);
	assert_int_equal(sw_pki_verify_chain(v, &der, 1, &id, err, sizeof(err)), 0);
	assert_string_equal(id.ca, sw_pki_ca_id(f->ca));
	gnutls_free(der.data);
	pem_to_der(b, &der);
	assert_int_equal(sw_pki_verify_chain(v, &der, 1, &id, err, sizeof(err)), 0);
	assert_string_equal(id.ca, sw_pki_ca_id(f->other));
	assert_string_not_equal(sw_pki_ca_id(f->ca), sw_pki_ca_id(f->other));
	gnutls_free(der.data);
	/* the site's verifier alone refuses the other's */
	pem_to_der(b, &der);
	assert_int_equal(sw_pki_verify_chain(f->v, &der, 1, &id, err, sizeof(err)), SW_EDENIED);
	gnutls_free(der.data);

	/* each key loads its own CA from the bundle, whichever comes first */
	assert_int_equal(sw_pki_ca_load(bundle, f->other_key, &loaded, err, sizeof(err)), 0);
	assert_string_equal(sw_pki_ca_id(loaded), sw_pki_ca_id(f->other));
	sw_pki_ca_free(loaded);
	assert_int_equal(sw_pki_ca_load(bundle, f->ca_key, &loaded, err, sizeof(err)), 0);
	assert_string_equal(sw_pki_ca_id(loaded), sw_pki_ca_id(f->ca));
	sw_pki_ca_free(loaded);
	assert_int_equal(sw_pki_key_generate(&foreign_key, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_ca_load(bundle, foreign_key, &loaded, err, sizeof(err)), SW_EINVAL);
	assert_non_null(strstr(err, "does not belong"));

	assert_int_equal(sw_pki_bundle_id(bundle, id1, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_bundle_id(spaced, id2, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_bundle_id(f->ca_cert, id3, err, sizeof(err)), 0);
	assert_int_equal(strlen(id1), SW_PKI_BUNDLE_ID_LEN);
	assert_string_equal(id1, id2);
	assert_string_not_equal(id1, id3);
	assert_int_not_equal(sw_pki_bundle_id("not a certificate", id3, err, sizeof(err)), 0);

	assert_int_equal(sw_pki_bundle_read(spaced, cas, 4, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_string_equal(cas[0].id, sw_pki_ca_id(f->ca));
	assert_string_equal(cas[1].id, sw_pki_ca_id(f->other));
	assert_int_equal(strncmp(cas[1].name, "siteward site OTHER CA ", 23), 0);
	assert_true(cas[0].not_after > cas[0].not_before);
	assert_non_null(strstr(cas[0].pem, "BEGIN CERTIFICATE"));
	sw_pki_bundle_free(cas, n);
	/* a leaf is no CA: neither a bundle nor a verifier takes it */
	assert_int_equal(sw_pki_bundle_read(a, cas, 4, &n, err, sizeof(err)), SW_EINVAL);
	assert_int_equal(n, 0);
	free(spaced);
	assert_true(asprintf(&spaced, "%s%s", f->ca_cert, a) > 0);
	sw_pki_verifier_free(v);
	assert_int_equal(sw_pki_verifier_new(spaced, &v, err, sizeof(err)), SW_EINVAL);
	assert_null(v);

	free(bundle);
	free(spaced);
	free(a);
	free(b);
	free(foreign_key);
}

/* A certificate ends no later than the CA that issues it. */
static void test_issue_ends_with_its_ca(void **state)
{
	struct fixture *f = *state;
	char *cert = NULL, *key = NULL, *leaf = NULL, serial[41], err[256];
	struct sw_pki_ca *ca = NULL;
	int64_t ca_end, leaf_end;

	assert_int_equal(sw_pki_ca_create("SHORT", 10, &cert, &key, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_ca_load(cert, key, &ca, err, sizeof(err)), 0);
	struct sw_pki_issue what = {.cn = "web01", .role = SW_PKI_ROLE_AGENT, .days = 825};
	assert_int_equal(
	    sw_pki_ca_issue(ca, f->csr, strlen(f->csr), &what, &leaf, serial, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_cert_validity(cert, NULL, &ca_end, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_cert_validity(leaf, NULL, &leaf_end, err, sizeof(err)), 0);
	assert_int_equal(leaf_end, ca_end);
	sw_pki_ca_free(ca);
	free(cert);
	free(key);
	free(leaf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ca_create_load),
	    cmocka_unit_test(test_ca_create_refusals),
	    cmocka_unit_test(test_issue_roundtrip),
	    cmocka_unit_test(test_issue_sans_server),
	    cmocka_unit_test(test_issue_ignores_request_subject),
	    cmocka_unit_test(test_issue_bad_signature),
	    cmocka_unit_test(test_issue_malformed_request),
	    cmocka_unit_test(test_issue_invalid_args),
	    cmocka_unit_test(test_issue_key_types),
	    cmocka_unit_test(test_verify_ok),
	    cmocka_unit_test(test_verify_other_ca),
	    cmocka_unit_test(test_verify_validity),
	    cmocka_unit_test(test_verify_refusals),
	    cmocka_unit_test(test_verifier_new),
	    cmocka_unit_test(test_bundle),
	    cmocka_unit_test(test_issue_ends_with_its_ca),
	    cmocka_unit_test(test_identity_refusals),
	    cmocka_unit_test(test_fingerprint),
	    cmocka_unit_test(test_cert_validity),
	    cmocka_unit_test(test_renew_at),
	    cmocka_unit_test(test_sign_verify),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/*
 * The site's public-key infrastructure on GnuTLS: the site CA, keys, certificate
 * requests, issuing, verifying a peer's chain, and detached signatures (packages).
 *
 * Keys, requests and certificates cross this interface as PEM strings. A function
 * that returns a string through a `char **` hands ownership to the caller (free());
 * on failure nothing is returned and `err` (if not NULL) holds a sentence for a person.
 * Certificate keys are ECDSA P-256; the package signing key is Ed25519.
 */
#ifndef SW_PKI_H
#define SW_PKI_H

#include <gnutls/gnutls.h>
#include <stddef.h>
#include <stdint.h>

/* Roles a certificate may carry, in its subject's OU. */
#define SW_PKI_ROLE_SERVER "server"
#define SW_PKI_ROLE_ADMIN  "admin"
#define SW_PKI_ROLE_AGENT  "agent"
/* A machine's metering client: readable by its users, accepted only by metering servers. */
#define SW_PKI_ROLE_CLIENT "client"
/* A system's metering server, the one TLS server on a managed machine. */
#define SW_PKI_ROLE_METER "meter"
/* A monitoring system's scraper (Prometheus): may read /metrics and nothing else. */
#define SW_PKI_ROLE_SCRAPE "scrape"

/* What an issued certificate may be used for (its extended key usage). */
#define SW_PKI_TLS_CLIENT 1u
#define SW_PKI_TLS_SERVER 2u

/* How far back an issued certificate starts: a machine whose clock is up to this much
 * behind the issuer's accepts it at once. The far end is the issue time plus its days,
 * which are years, so a machine days ahead accepts it too. */
#define SW_PKI_BACKDATE_S (7 * 86400)

/* Who a verified peer is. */
struct sw_identity {
	char cn[128];	 /* subject common name: system or admin name */
	char role[16];	 /* subject OU: SW_PKI_ROLE_* */
	char serial[41]; /* certificate serial, lowercase hex */
	char ca[41];	 /* the issuing CA's key identifier (sw_pki_ca_id()), "" if unnamed */
};

/* A new ECDSA P-256 private key, PKCS#8 PEM. */
int sw_pki_key_generate(char **key_pem, char *err, size_t errlen);

/* A self-signed CA for site `site_code`, valid `days`; returns its cert and key. */
int sw_pki_ca_create(const char *site_code, unsigned days, char **cert_pem, char **key_pem,
		     char *err, size_t errlen);

/* A certificate request for `key_pem` with common name `cn`, signed by the key. */
int sw_pki_csr_create(const char *key_pem, const char *cn, char **csr_pem, char *err,
		      size_t errlen);

/* What the CA puts in an issued certificate. The subject is set here, never copied
 * from the request: CN=cn, OU=role, O=siteward site <site code>. */
struct sw_pki_issue {
	const char *cn;
	const char *role;	 /* SW_PKI_ROLE_* */
	const char *const *sans; /* NULL-terminated DNS names or IP literals, may be NULL */
	unsigned days;
	unsigned purposes; /* SW_PKI_TLS_CLIENT | SW_PKI_TLS_SERVER; 0 is client only */
};

struct sw_pki_ca;

/* Loads a CA from its key and certificate; `cert_pem` may be a bundle of the site's CAs
 * (two while one follows another in a rotation), of which the key's own is taken. */
int sw_pki_ca_load(const char *cert_pem, const char *key_pem, struct sw_pki_ca **out, char *err,
		   size_t errlen);
void sw_pki_ca_free(struct sw_pki_ca *ca);

/* Issues a certificate for the public key in `csr_pem` after checking the request's
 * own signature. `serial_hex` (41 bytes) receives the new random serial. Refuses a
 * malformed request, a bad signature, or a key that is not ECDSA P-256 or Ed25519. */
int sw_pki_ca_issue(struct sw_pki_ca *ca, const char *csr_pem, size_t csr_len,
		    const struct sw_pki_issue *what, char **cert_pem, char serial_hex[41],
		    char *err, size_t errlen);

/* The key identifier of a loaded CA, lowercase hex: what sw_identity.ca of each
 * certificate it issues holds. Issued certificates end no later than their CA. */
const char *sw_pki_ca_id(const struct sw_pki_ca *ca);
/* sw_pki_cert_fingerprint() of a loaded CA's certificate (what a token pins). */
int sw_pki_ca_fingerprint(const struct sw_pki_ca *ca, char hex[65], char *err, size_t errlen);

/* The site's CAs as one PEM bundle: an id of its certificates, in order (lowercase hex),
 * by which a system says which bundle it trusts. */
#define SW_PKI_BUNDLE_ID_LEN 16
int sw_pki_bundle_id(const char *pem, char out[SW_PKI_BUNDLE_ID_LEN + 1], char *err, size_t errlen);
/* Each CA certificate of a bundle: its key identifier, common name, validity (ms) and
 * PEM (the caller frees with sw_pki_bundle_free()). */
struct sw_pki_ca_info {
	char id[41];
	char name[128];
	int64_t not_before, not_after;
	char *pem;
};
int sw_pki_bundle_read(const char *pem, struct sw_pki_ca_info *out, size_t max, size_t *n,
		       char *err, size_t errlen);
void sw_pki_bundle_free(struct sw_pki_ca_info *cas, size_t n);

/* Verifies chains against the site's CA certificates (a PEM bundle of one or more). */
struct sw_pki_verifier;
int sw_pki_verifier_new(const char *ca_pem, struct sw_pki_verifier **out, char *err, size_t errlen);
void sw_pki_verifier_free(struct sw_pki_verifier *v);

/* Checks a peer's chain (DER, leaf first, as gnutls_certificate_get_peers gives it):
 * issued by the CA, within its validity, usable for TLS client or server auth. Fills
 * `id` on success. Returns SW_EDENIED with a reason in `err` when the chain is refused. */
int sw_pki_verify_chain(struct sw_pki_verifier *v, const gnutls_datum_t *chain, unsigned nchain,
			struct sw_identity *id, char *err, size_t errlen);

/* Identity and serial of a PEM certificate, without verifying it. */
int sw_pki_cert_identity(const char *cert_pem, struct sw_identity *id, char *err, size_t errlen);

/* A PEM certificate's notBefore and notAfter, in ms since the epoch (either may be NULL). */
int sw_pki_cert_validity(const char *cert_pem, int64_t *not_before, int64_t *not_after, char *err,
			 size_t errlen);

/* A PEM certificate's DNS names and IP addresses (as text), at most `max`; *n says how many. */
#define SW_PKI_SAN_LEN 256
int sw_pki_cert_sans(const char *cert_pem, char (*out)[SW_PKI_SAN_LEN], size_t max, size_t *n,
		     char *err, size_t errlen);

/* When a certificate valid from `not_before` to `not_after` (ms) is due for renewal: at
 * two thirds of its life, so a third is left to ride out a server that is away. */
int64_t sw_pki_renew_at(int64_t not_before, int64_t not_after);

/* SHA-256 of a PEM certificate's DER encoding, lowercase hex (65 bytes). */
int sw_pki_cert_fingerprint(const char *cert_pem, char hex[65], char *err, size_t errlen);

/* Package signing: a new Ed25519 key (PKCS#8 PEM) and its public key (PEM). */
int sw_pki_sign_key_generate(char **key_pem, char **pub_pem, char *err, size_t errlen);
/* A detached signature over `data`, base64 (caller frees). */
int sw_pki_sign(const char *key_pem, const void *data, size_t len, char **sig_b64, char *err,
		size_t errlen);
/* 0 if `sig_b64` is a valid signature of `data` by `pub_pem`, SW_EDENIED if not. */
int sw_pki_verify_signature(const char *pub_pem, const void *data, size_t len, const char *sig_b64,
			    char *err, size_t errlen);

/* A signature over `data` by a certificate's ECDSA P-256 key, SHA-256, base64 (caller
 * frees): what a system signs for its local users (lib/ticket.h). */
int sw_pki_key_sign(const char *key_pem, const void *data, size_t len, char **sig_b64, char *err,
		    size_t errlen);
/* A PEM certificate's DER encoding, base64 (caller frees). */
int sw_pki_cert_b64(const char *cert_pem, char **out, char *err, size_t errlen);
/* 0 if `sig_b64` is a signature of `data` by the key of `cert_b64` (base64 DER) and that
 * certificate passes sw_pki_verify_chain; fills `id` with its subject. SW_EDENIED with a
 * reason otherwise. */
int sw_pki_verify_signed(struct sw_pki_verifier *v, const char *cert_b64, const void *data,
			 size_t len, const char *sig_b64, struct sw_identity *id, char *err,
			 size_t errlen);

/* A PKCS#12 file (DER) of a key and its certificate, for a browser to import: both
 * encrypted with `password` (PBES2, AES-256), named `name`, with a SHA-256 MAC. The caller
 * frees *der. */
int sw_pki_pkcs12(const char *key_pem, const char *cert_pem, const char *name, const char *password,
		  unsigned char **der, size_t *len, char *err, size_t errlen);

#endif

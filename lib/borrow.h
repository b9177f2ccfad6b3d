/*
 * A borrowed license: a license server's signed word that one user on one machine holds
 * a license of a product until a time, valid with no network (siteward-run borrow).
 * The license server keeps the lease counted until it expires or is returned; the
 * machine checks the text offline before each run.
 *
 * Signed text (signed.h) with the prefix "b1", signed by the license server's
 * certificate (role meter, its system's name). The payload:
 * {lease, client, meter, host, uid, user, machine, issued_ms, expires_ms,
 *  product: {name, exe, build_id, version}} — the product's pattern, so the machine
 * knows offline which programs the license covers.
 */
#ifndef SW_BORROW_H
#define SW_BORROW_H

#include "pki.h"
#include "product.h"

#include <stddef.h>
#include <stdint.h>

#define SW_BORROW_MAX	      8192		 /* bytes of text */
#define SW_BORROW_LEEWAY_MS   (10 * 60 * 1000LL) /* clocks a little apart */
#define SW_BORROW_MACHINE_LEN 64

struct sw_borrow {
	char lease[33];	 /* the license server's lease: 32 lowercase hex */
	char client[33]; /* the holder's secret half of the lease, sent back to return it */
	char meter[64];	 /* the license server's system: its certificate's name */
	char host[64];	 /* the machine's system name */
	char user[65];
	uint32_t uid;
	char machine[SW_BORROW_MACHINE_LEN + 1]; /* sw_borrow_machine() there; "" unknown */
	int64_t issued_ms, expires_ms;		 /* the license server's clock */
	struct sw_product product;		 /* name, exe, build_id, version */
};

/* Signs `b` with the license server's key and certificate (PEM). */
int sw_borrow_make(const char *key_pem, const char *cert_pem, const struct sw_borrow *b, char **out,
		   char *err, size_t errlen);

/* Reads the payload without checking the signature (what the fuzz target drives). */
int sw_borrow_parse(const char *text, size_t len, struct sw_borrow *b, char *err, size_t errlen);

/* Reads and checks the signature: by a certificate of `v`'s CAs for a license server
 * (role meter) named as the payload's meter. `signer` gets its identity. SW_EDENIED
 * with the reason when refused. */
int sw_borrow_verify(struct sw_pki_verifier *v, const char *text, size_t len, struct sw_borrow *b,
		     struct sw_identity *signer, char *err, size_t errlen);

/* Whether a verified borrow is good here and now: for this system `host`, user `uid`
 * and `machine`, issued no later than `now_ms` (with leeway) and not expired. SW_EDENIED
 * with the reason otherwise. */
int sw_borrow_valid(const struct sw_borrow *b, const char *host, uint32_t uid, const char *machine,
		    int64_t now_ms, char *err, size_t errlen);

/* This machine's identity for a borrow: a digest of /etc/machine-id, "" when it has
 * none. */
void sw_borrow_machine(char out[SW_BORROW_MACHINE_LEN + 1]);

#endif

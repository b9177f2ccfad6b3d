/*
 * A user ticket: a system's word, signed with its agent's key, that a local user is who
 * the kernel says. siteward-agent issues one to whoever connects to its socket (the user
 * from SO_PEERCRED); siteward-run hands it to a metering server with each checkout, and
 * the metering server takes the user from it rather than from the request, so a local
 * user cannot check a license out in another user's name.
 *
 * Text: "v1." base64(payload) "." base64(signature) "." base64(agent certificate, DER).
 * The signature is ECDSA P-256/SHA-256 over the bytes before the second dot; the payload
 * is {"host","uid","user","issued_ms","expires_ms"}. A few hundred bytes: it goes in an
 * HTTP header (Siteward-Ticket), which metering servers of older versions ignore.
 */
#ifndef SW_TICKET_H
#define SW_TICKET_H

#include "pki.h"

#include <stddef.h>
#include <stdint.h>

#define SW_TICKET_MAX	      4096		   /* bytes of text */
#define SW_TICKET_LIFE_MS     (24 * 3600 * 1000LL) /* as issued */
#define SW_TICKET_MAX_LIFE_MS (7 * 24 * 3600 * 1000LL)
#define SW_TICKET_LEEWAY_MS   (10 * 60 * 1000LL) /* issued this far in the future still counts */
#define SW_TICKET_HEADER      "Siteward-Ticket"

struct sw_ticket {
	char host[64]; /* the system: its agent certificate's name */
	char user[65]; /* the account's name, or its uid in decimal when it has none */
	uint32_t uid;
	int64_t issued_ms, expires_ms;
};

/* Signs `t` with the agent's key and certificate; *out is the text (caller frees). */
int sw_ticket_make(const char *key_pem, const char *cert_pem, const struct sw_ticket *t, char **out,
		   char *err, size_t errlen);

/* Reads a ticket's payload without checking its signature (what a holder may read of its
 * own ticket, and what the fuzz target drives). */
int sw_ticket_parse(const char *text, size_t len, struct sw_ticket *t, char *err, size_t errlen);

/* Reads and checks a ticket: signed by an agent certificate of the verifier's CA whose
 * name is the ticket's host, and valid at `now_ms`. `signer` gets the certificate's
 * identity (its serial, for revocation). SW_EDENIED with a reason when refused. */
int sw_ticket_verify(struct sw_pki_verifier *v, const char *text, size_t len, int64_t now_ms,
		     struct sw_ticket *t, struct sw_identity *signer, char *err, size_t errlen);

/* Whether `s` can be a user name in a ticket: 1 to 64 printable ASCII bytes, no space. */
int sw_ticket_user_valid(const char *s);

#endif

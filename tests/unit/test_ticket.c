/* User tickets: what a metering server accepts, and everything it must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>

#include "error.h"
#include "pki.h"
#include "ticket.h"

#define NOW 1800000000000LL

struct fx {
	char *ca_cert, *ca_key;
	struct sw_pki_ca *ca;
	struct sw_pki_verifier *v;
	char *key, *agent, *client, *other; /* certificates for `key` */
};

static char *issue(struct fx *f, const char *cn, const char *role)
{
	struct sw_pki_issue what = {.cn = cn, .role = role, .days = 30};
	char *csr = NULL, *cert = NULL, serial[41], err[256];

	assert_int_equal(sw_pki_csr_create(f->key, cn, &csr, err, sizeof(err)), 0);
	assert_int_equal(
	    sw_pki_ca_issue(f->ca, csr, strlen(csr), &what, &cert, serial, err, sizeof(err)), 0);
	free(csr);
	return cert;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	assert_non_null(f);
	assert_int_equal(sw_pki_ca_create("TKT", 30, &f->ca_cert, &f->ca_key, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_ca_load(f->ca_cert, f->ca_key, &f->ca, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_verifier_new(f->ca_cert, &f->v, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_key_generate(&f->key, err, sizeof(err)), 0);
	f->agent = issue(f, "web1", SW_PKI_ROLE_AGENT);
	f->client = issue(f, "web1", SW_PKI_ROLE_CLIENT);
	f->other = issue(f, "web2", SW_PKI_ROLE_AGENT);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	sw_pki_verifier_free(f->v);
	sw_pki_ca_free(f->ca);
	free(f->ca_cert);
	free(f->ca_key);
	free(f->key);
	free(f->agent);
	free(f->client);
	free(f->other);
	free(f);
	return 0;
}

static char *make(struct fx *f, const char *cert, const char *host, int64_t issued)
{
	struct sw_ticket t = {.uid = 1000, .issued_ms = issued};
	char *text = NULL, err[256];

	snprintf(t.host, sizeof(t.host), "%s", host);
	snprintf(t.user, sizeof(t.user), "alice");
	t.expires_ms = issued + SW_TICKET_LIFE_MS;
	assert_int_equal(sw_ticket_make(f->key, cert, &t, &text, err, sizeof(err)), 0);
	return text;
}

static void refused(struct fx *f, const char *text, const char *why)
{
	struct sw_identity signer;
	struct sw_ticket t;
	char err[300];

	assert_int_not_equal(
	    sw_ticket_verify(f->v, text, strlen(text), NOW, &t, &signer, err, sizeof(err)), 0);
	if (!strstr(err, why))
		fail_msg("'%s' does not say '%s'", err, why);
	assert_string_equal(signer.serial, "");
}

static void test_a_good_ticket_names_its_user(void **state)
{
	struct fx *f = *state;
	char *text = make(f, f->agent, "web1", NOW - 1000), err[300];
	struct sw_identity signer;
	struct sw_ticket t;

	assert_true(strlen(text) < 1500); /* it travels in a header */
	assert_int_equal(
	    sw_ticket_verify(f->v, text, strlen(text), NOW, &t, &signer, err, sizeof(err)), 0);
	assert_string_equal(t.user, "alice");
	assert_string_equal(t.host, "web1");
	assert_int_equal(t.uid, 1000);
	assert_string_equal(signer.role, SW_PKI_ROLE_AGENT);
	assert_string_equal(signer.cn, "web1");
	assert_true(strlen(signer.serial) > 0);
	free(text);
}

static void test_refusals(void **state)
{
	struct fx *f = *state;
	char *text, *copy, *p;

	text = make(f, f->other, "web1", NOW); /* another system's agent */
	refused(f, text, "not by its agent");
	free(text);
	text = make(f, f->client, "web1", NOW); /* the client key every user can read */
	refused(f, text, "signed by client web1");
	free(text);
	text = make(f, f->agent, "web1", NOW - SW_TICKET_LIFE_MS - 1);
	refused(f, text, "expired");
	free(text);
	text = make(f, f->agent, "web1", NOW + 2 * SW_TICKET_LEEWAY_MS);
	refused(f, text, "in the future");
	free(text);
	/* one byte of the payload changed */
	text = make(f, f->agent, "web1", NOW);
	copy = strdup(text);
	p = copy + 5;
	*p = *p == 'A' ? 'B' : 'A';
	assert_int_not_equal(sw_ticket_verify(f->v, copy, strlen(copy), NOW, &(struct sw_ticket){0},
					      &(struct sw_identity){0}, NULL, 0),
			     0);
	free(copy);
	/* malformed */
	refused(f, "v1.e30=.AAAA.AAAA", "");
	refused(f, "v2.a.b.c", "begin with 'v1.'");
	refused(f, "v1.a.b", "four parts");
	refused(f, "v1.a.b.c.d", "four parts");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_good_ticket_names_its_user),
	    cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

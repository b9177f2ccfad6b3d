/* Borrowed licenses: what a machine accepts offline, everything it must refuse, and the
 * clock mark that keeps a clock set back from lengthening a loan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "borrow.h"
#include "clockmark.h"
#include "error.h"
#include "pki.h"
#include "util.h"

#define NOW  1800000000000LL
#define HOUR 3600000LL

struct fx {
	char *ca_cert, *ca_key;
	struct sw_pki_ca *ca;
	struct sw_pki_verifier *v;
	char *key, *meter, *client, *other_meter, *foreign_meter, *foreign_key;
};

static char *issue(struct sw_pki_ca *ca, const char *key, const char *cn, const char *role)
{
	struct sw_pki_issue what = {.cn = cn, .role = role, .days = 30};
	char *csr = NULL, *cert = NULL, serial[41], err[256];

	assert_int_equal(sw_pki_csr_create(key, cn, &csr, err, sizeof(err)), 0);
	assert_int_equal(
	    sw_pki_ca_issue(ca, csr, strlen(csr), &what, &cert, serial, err, sizeof(err)), 0);
	free(csr);
	return cert;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256], *fcert = NULL, *fkey = NULL;
	struct sw_pki_ca *foreign = NULL;

	assert_non_null(f);
	assert_int_equal(sw_pki_ca_create("BRW", 30, &f->ca_cert, &f->ca_key, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_ca_load(f->ca_cert, f->ca_key, &f->ca, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_verifier_new(f->ca_cert, &f->v, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_key_generate(&f->key, err, sizeof(err)), 0);
	f->meter = issue(f->ca, f->key, "m1", SW_PKI_ROLE_METER);
	f->client = issue(f->ca, f->key, "laptop", SW_PKI_ROLE_CLIENT);
	f->other_meter = issue(f->ca, f->key, "m2", SW_PKI_ROLE_METER);
	/* a site of its own: its license server's word is nothing here */
	assert_int_equal(sw_pki_ca_create("OTH", 30, &fcert, &fkey, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_ca_load(fcert, fkey, &foreign, err, sizeof(err)), 0);
	assert_int_equal(sw_pki_key_generate(&f->foreign_key, err, sizeof(err)), 0);
	f->foreign_meter = issue(foreign, f->foreign_key, "m1", SW_PKI_ROLE_METER);
	sw_pki_ca_free(foreign);
	free(fcert);
	free(fkey);
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
	free(f->meter);
	free(f->client);
	free(f->other_meter);
	free(f->foreign_meter);
	free(f->foreign_key);
	free(f);
	return 0;
}

static void loan(struct sw_borrow *b)
{
	memset(b, 0, sizeof(*b));
	memset(b->lease, 'a', 32);
	memset(b->client, 'b', 32);
	snprintf(b->meter, sizeof(b->meter), "m1");
	snprintf(b->host, sizeof(b->host), "laptop");
	snprintf(b->user, sizeof(b->user), "alice");
	memset(b->machine, 'c', 64);
	b->uid = 1000;
	b->issued_ms = NOW;
	b->expires_ms = NOW + 8 * HOUR;
	sw_product_init(&b->product);
	snprintf(b->product.name, sizeof(b->product.name), "cad");
	snprintf(b->product.exe, sizeof(b->product.exe), "cadtool");
	snprintf(b->product.version, sizeof(b->product.version), "9.*");
}

static char *make(const char *key, const char *cert, const struct sw_borrow *b)
{
	char *text = NULL, err[256];

	assert_int_equal(sw_borrow_make(key, cert, b, &text, err, sizeof(err)), 0);
	return text;
}

static void test_good_loan(void **state)
{
	struct fx *f = *state;
	struct sw_borrow b, got;
	struct sw_identity who;
	char err[256], machine[65];
	char *text;

	loan(&b);
	text = make(f->key, f->meter, &b);
	assert_int_equal(sw_borrow_verify(f->v, text, strlen(text), &got, &who, err, sizeof(err)),
			 0);
	assert_string_equal(who.cn, "m1");
	assert_string_equal(got.product.name, "cad");
	assert_string_equal(got.product.version, "9.*");
	assert_int_equal(got.expires_ms, NOW + 8 * HOUR);
	memcpy(machine, b.machine, sizeof(machine));
	assert_int_equal(
	    sw_borrow_valid(&got, "laptop", 1000, machine, NOW + HOUR, err, sizeof(err)), 0);
	free(text);
}

static void refused(struct fx *f, const char *text, const char *why)
{
	struct sw_borrow got;
	struct sw_identity who;
	char err[256] = "";

	assert_int_not_equal(
	    sw_borrow_verify(f->v, text, strlen(text), &got, &who, err, sizeof(err)), 0);
	if (!strstr(err, why))
		fail_msg("'%s' does not say %s", err, why);
}

static void test_signatures_refused(void **state)
{
	struct fx *f = *state;
	struct sw_borrow b;
	char *text;
	size_t at;

	loan(&b);
	/* a machine's client certificate, whose key its users may read */
	text = make(f->key, f->client, &b);
	refused(f, text, "client laptop signed it");
	free(text);
	/* another license server than the one named */
	text = make(f->key, f->other_meter, &b);
	refused(f, text, "meter m2 signed it");
	free(text);
	/* another site's license server of the same name */
	text = make(f->foreign_key, f->foreign_meter, &b);
	refused(f, text, "signature is refused");
	free(text);
	/* altered: a byte of the payload */
	text = make(f->key, f->meter, &b);
	at = strcspn(text + 3, ".") + 3 - 2;
	text[at] = text[at] == 'A' ? 'B' : 'A';
	refused(f, text, "");
	free(text);
	refused(f, "b2.e30.AA.AA", "does not begin with 'b1.'");
	refused(f, "b1.e30.AA", "four parts");
}

static void test_valid_here_and_now(void **state)
{
	struct sw_borrow b;
	char err[256], machine[65];

	(void)state;
	loan(&b);
	memcpy(machine, b.machine, sizeof(machine));
	assert_int_equal(sw_borrow_valid(&b, "desktop", 1000, machine, NOW, err, sizeof(err)),
			 SW_EDENIED);
	assert_non_null(strstr(err, "another machine"));
	machine[0] = 'd';
	assert_int_equal(sw_borrow_valid(&b, "laptop", 1000, machine, NOW, err, sizeof(err)),
			 SW_EDENIED);
	assert_non_null(strstr(err, "another machine"));
	machine[0] = 'c';
	assert_int_equal(sw_borrow_valid(&b, "laptop", 1001, machine, NOW, err, sizeof(err)),
			 SW_EDENIED);
	assert_non_null(strstr(err, "uid 1000"));
	assert_int_equal(
	    sw_borrow_valid(&b, "laptop", 1000, machine, NOW + 8 * HOUR, err, sizeof(err)),
	    SW_EDENIED);
	assert_non_null(strstr(err, "expired"));
	/* a clock behind the loan's own start: set back before it was lent */
	assert_int_equal(sw_borrow_valid(&b, "laptop", 1000, machine, NOW - HOUR, err, sizeof(err)),
			 SW_EDENIED);
	assert_non_null(strstr(err, "clock is behind"));
}

static void test_clockmark(void **state)
{
	char dir[] = "/tmp/sw-clockmark-XXXXXX", path[64], err[256];
	struct sw_clockmark m;
	int64_t behind, first;
	FILE *fp;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/clock.json", dir);
	assert_int_equal(sw_clockmark_now(path), 0);
	assert_int_equal(sw_clockmark_write(path, err, sizeof(err)), 0);
	first = sw_clockmark_now(path);
	assert_true(first > 0);
	/* a mark two hours on (written while the clock was ahead) stands, and moves on
	 * with the time since boot */
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp, "{\"wall_ms\":%lld,\"boot_id\":\"not-this-boot\",\"boot_ms\":0}",
		(long long)(sw_now_ms() + 2 * HOUR));
	fclose(fp);
	assert_true(sw_clockmark_trusted(path, &behind) > sw_now_ms() + HOUR);
	assert_true(behind > HOUR);
	assert_int_equal(sw_clockmark_write(path, err, sizeof(err)), 0);
	assert_true(sw_clockmark_now(path) > sw_now_ms() + HOUR);
	/* a mark that is not one counts as none */
	assert_int_not_equal(sw_clockmark_parse("{\"wall_ms\":0}", 13, &m), 0);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("garbage", fp);
	fclose(fp);
	assert_int_equal(sw_clockmark_now(path), 0);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_loan),
	    cmocka_unit_test(test_signatures_refused),
	    cmocka_unit_test(test_valid_here_and_now),
	    cmocka_unit_test(test_clockmark),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

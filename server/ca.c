/*
 * The site's CAs, and the rotation from one to the next without an outage.
 *
 * The site folder holds them as files, and each step of a rotation is one atomic change
 * of one file, so a crash at any point leaves a site that starts:
 *
 *   ca.crt       every CA the site trusts (a PEM bundle: one, two during a rotation);
 *   ca.key       the key of the CA that issues: of the bundle, the certificate it
 *                belongs to is the issuing one (sw_pki_ca_load());
 *   ca-next.key  while a new CA is introduced, its key.
 *
 * `siteward ca rotate` (ca_rotate()) makes a new CA: ca-next.key is written, then the
 * bundle with the new certificate added (a crash between the two leaves a key no
 * certificate in the bundle belongs to, which the next start removes). Every heartbeat
 * says which bundle its agent trusts (`ca_id`), and the reply carries the bundle to one
 * that trusts another (ca_reply()). Once every system trusts it, ca_progress() renames
 * ca-next.key over ca.key: the new CA issues. The server's own certificate is issued
 * again under it (main.c restarts to serve it), and each reply tells a system whose
 * certificate is the old CA's to renew. Once no system's certificate is the old CA's,
 * the bundle is written with the issuing CA alone: the old one is retired, and the
 * systems take the smaller bundle as they took the larger. A system that is away holds
 * the rotation where it is (`siteward ca status` names it): it trusts what it trusted,
 * and it is never cut off; removing it lets the rotation go on.
 */
#include "server.h"

#include "error.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A new CA lasts ten years, as the first one does. */
#define CA_DAYS 3650
/* An agent certificate's life (825 days) and a year more: an issuing CA with less left
 * than this is warned of, as certificates it issues start to end with it. */
#define CA_WARN_MS ((int64_t)(825 + 365) * 86400 * 1000)
/* The systems a status names as holding a rotation up, at most. */
#define CA_WAITING_MAX 50
#define CA_MAX	       4

static int ca_path(const struct server *s, const char *name, char *out, size_t len)
{
	return sw_path_join(out, len, s->dir, name);
}

/* The bundle in memory follows the one written: its id, and the listener's checks. */
static int bundle_set(struct server *s, char *pem, char *err, size_t errlen)
{
	char id[SW_PKI_BUNDLE_ID_LEN + 1];
	int rc;

	if ((rc = sw_pki_bundle_id(pem, id, err, errlen))) {
		free(pem);
		return rc;
	}
	if ((s->http && (rc = sw_http_server_trust(s->http, pem, err, errlen))) ||
	    (s->console_http && (rc = sw_http_server_trust(s->console_http, pem, err, errlen)))) {
		free(pem);
		return rc;
	}
	if (s->ca_pem != s->ca_pem_served)
		free(s->ca_pem);
	s->ca_pem = pem;
	snprintf(s->ca_bundle_id, sizeof(s->ca_bundle_id), "%s", id);
	return 0;
}

static int bundle_write(struct server *s, const char *pem, char *err, size_t errlen)
{
	char path[PATH_MAX + 64];

	ca_path(s, "ca.crt", path, sizeof(path));
	return sw_file_write_atomic(path, pem, strlen(pem), 0644, err, errlen);
}

int ca_load(struct server *s, char *err, size_t errlen)
{
	char *pem = NULL, *key = NULL, path[PATH_MAX + 64], sub[256];
	int rc;

	if ((rc = sw_pem_read(s->dir, "ca.crt", &pem, err, errlen)) ||
	    (rc = sw_pem_read(s->dir, "ca.key", &key, err, errlen)))
		goto out;
	if ((rc = sw_pki_ca_load(pem, key, &s->ca, sub, sizeof(sub)))) {
		sw_seterr(err, errlen, "%s/ca.key and ca.crt: %s", s->dir, sub);
		goto out;
	}
	free(key);
	key = NULL;
	/* a rotation that introduces a CA: its key, and its certificate in the bundle */
	ca_path(s, "ca-next.key", path, sizeof(path));
	if (access(path, F_OK) == 0) {
		if ((rc = sw_pem_read(s->dir, "ca-next.key", &key, err, errlen)))
			goto out;
		if (sw_pki_ca_load(pem, key, &s->ca_next, sub, sizeof(sub)) ||
		    strcmp(sw_pki_ca_id(s->ca_next), sw_pki_ca_id(s->ca)) == 0) {
			/* cut short before its certificate joined the bundle: never trusted */
			sw_warn("a CA rotation was cut short before it began (%s); %s removed", sub,
				path);
			sw_pki_ca_free(s->ca_next);
			s->ca_next = NULL;
			if (unlink(path) < 0 && errno != ENOENT) {
				sw_seterr(err, errlen, "cannot remove %s: %s", path,
					  strerror(errno));
				rc = SW_EIO;
				goto out;
			}
		}
	}
	rc = bundle_set(s, pem, err, errlen);
	pem = NULL;
out:
	free(pem);
	if (key) {
		explicit_bzero(key, strlen(key));
		free(key);
	}
	return rc;
}

void ca_free(struct server *s)
{
	sw_pki_ca_free(s->ca);
	sw_pki_ca_free(s->ca_next);
	s->ca = s->ca_next = NULL;
	if (s->ca_pem != s->ca_pem_served)
		free(s->ca_pem);
	free(s->ca_pem_served);
	s->ca_pem = s->ca_pem_served = NULL;
}

enum ca_phase ca_phase(const struct server *s)
{
	struct sw_pki_ca_info cas[CA_MAX];
	size_t n = 0;

	if (s->ca_next)
		return CA_INTRODUCING;
	if (sw_pki_bundle_read(s->ca_pem, cas, CA_MAX, &n, NULL, 0))
		return CA_STEADY;
	sw_pki_bundle_free(cas, n);
	return n > 1 ? CA_REISSUING : CA_STEADY;
}

int ca_rotate(struct server *s, char *err, size_t errlen)
{
	char *cert = NULL, *key = NULL, *bundle = NULL, path[PATH_MAX + 64];
	struct sw_pki_ca *next = NULL;
	int rc;

	if (ca_phase(s) != CA_STEADY) {
		sw_seterr(err, errlen,
			  "a rotation of the site's CA is under way; 'siteward ca status' shows "
			  "what it waits for");
		return SW_EEXIST;
	}
	if ((rc = sw_pki_ca_create(s->site_code, CA_DAYS, &cert, &key, err, errlen)) ||
	    (rc = sw_pki_ca_load(cert, key, &next, err, errlen)))
		goto out;
	if (asprintf(&bundle, "%s%s", s->ca_pem, cert) < 0) {
		bundle = NULL;
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	/* the key first: a bundle never names a CA whose key is not kept */
	ca_path(s, "ca-next.key", path, sizeof(path));
	if ((rc = sw_file_write_atomic(path, key, strlen(key), 0600, err, errlen)) ||
	    (rc = bundle_write(s, bundle, err, errlen))) {
		unlink(path);
		goto out;
	}
	if ((rc = bundle_set(s, bundle, err, errlen))) {
		bundle = NULL;
		goto out;
	}
	bundle = NULL;
	s->ca_next = next;
	next = NULL;
	sw_info("CA rotation: a new CA (%.16s) is trusted beside the one that issues (%.16s); "
		"it issues once every system trusts it",
		sw_pki_ca_id(s->ca_next), sw_pki_ca_id(s->ca));
out:
	sw_pki_ca_free(next);
	free(cert);
	free(bundle);
	if (key) {
		explicit_bzero(key, strlen(key));
		free(key);
	}
	return rc;
}

struct tally {
	const struct server *s;
	size_t systems, trusting, reissued;
	json_t *waiting; /* NULL: only counted */
};

static void count_one(const char *name, void *value, void *arg)
{
	const struct system *sys = value;
	struct tally *t = arg;
	int trusts = strcmp(sys->trust, t->s->ca_bundle_id) == 0;
	int reissued = strcmp(sys->cert_ca, sw_pki_ca_id(t->s->ca)) == 0;

	(void)name;
	t->systems++;
	t->trusting += trusts;
	t->reissued += reissued;
	if (t->waiting && (!trusts || !reissued) && json_array_size(t->waiting) < CA_WAITING_MAX)
		json_array_append_new(t->waiting,
				      json_pack("{ss sb sb sI}", "name", sys->name, "trusts",
						trusts, "reissued", reissued, "last_seen",
						(json_int_t)sys->last_seen));
}

static void tally(const struct server *s, struct tally *t, json_t *waiting)
{
	*t = (struct tally){.s = s, .waiting = waiting};
	sw_strmap_each(s->systems, count_one, t);
}

/* 1 when the server's own certificate is another CA's than the issuing one. */
static int served_by_other(const struct server *s)
{
	struct sw_identity id;

	return s->cert_pem && sw_pki_cert_identity(s->cert_pem, &id, NULL, 0) == 0 &&
	       strcmp(id.ca, sw_pki_ca_id(s->ca)) != 0;
}

/* Every system trusts the new CA: it issues from now on. */
static void promote(struct server *s)
{
	char from[PATH_MAX + 64], to[PATH_MAX + 64], err[256];

	ca_path(s, "ca-next.key", from, sizeof(from));
	ca_path(s, "ca.key", to, sizeof(to));
	if (rename(from, to) < 0 || sw_fsync_dir(s->dir, err, sizeof(err))) {
		sw_err("CA rotation: cannot put the new CA's key in place (%s): %s", to,
		       strerror(errno));
		return;
	}
	sw_pki_ca_free(s->ca);
	s->ca = s->ca_next;
	s->ca_next = NULL;
	sw_info("CA rotation: every system trusts the new CA (%.16s); it issues from now on, "
		"and each system renews its certificate under it",
		sw_pki_ca_id(s->ca));
}

/* No system's certificate is an old CA's: the bundle keeps the issuing CA alone. */
static void retire(struct server *s)
{
	struct sw_pki_ca_info cas[CA_MAX];
	char err[256], *pem = NULL;
	size_t n = 0;

	if (sw_pki_bundle_read(s->ca_pem, cas, CA_MAX, &n, err, sizeof(err))) {
		sw_err("CA rotation: cannot read the site's CAs: %s", err);
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(cas[i].id, sw_pki_ca_id(s->ca)) == 0 && (pem = strdup(cas[i].pem)))
			break;
	sw_pki_bundle_free(cas, n);
	if (!pem) {
		sw_err("CA rotation: the issuing CA is not in the bundle (or out of memory)");
		return;
	}
	if (bundle_write(s, pem, err, sizeof(err)) || bundle_set(s, pem, err, sizeof(err))) {
		sw_err("CA rotation: cannot retire the old CA: %s", err);
		return;
	}
	sw_info("CA rotation: done; no system depends on the old CA any more, and only the new "
		"one (%.16s) is trusted",
		sw_pki_ca_id(s->ca));
}

int ca_progress(struct server *s)
{
	struct tally t;

	switch (ca_phase(s)) {
	case CA_STEADY: break;
	case CA_INTRODUCING:
		tally(s, &t, NULL);
		if (t.trusting == t.systems)
			promote(s);
		break;
	case CA_REISSUING:
		tally(s, &t, NULL);
		if (t.reissued == t.systems && !served_by_other(s))
			retire(s);
		break;
	}
	return served_by_other(s);
}

void ca_reply(struct server *s, const struct system *sys, json_t *reply)
{
	int trusts = strcmp(sys->trust, s->ca_bundle_id) == 0;

	/* only to an agent that says what it trusts: one of an older version would not take
	 * the bundle, and it would go with every one of its heartbeats */
	if (!trusts && sys->trust[0])
		json_object_set_new(reply, "ca", json_string(s->ca_pem));
	/* it renews once it trusts every CA the site has, the issuing one among them */
	else if (sys->cert_ca[0] && strcmp(sys->cert_ca, sw_pki_ca_id(s->ca)) != 0)
		json_object_set_new(reply, "renew", json_true());
}

void ca_summarize(const struct server *s, struct ca_summary *out)
{
	struct sw_pki_ca_info cas[CA_MAX];
	struct tally t;
	size_t n = 0;

	memset(out, 0, sizeof(*out));
	out->phase = ca_phase(s);
	if (sw_pki_bundle_read(s->ca_pem, cas, CA_MAX, &n, NULL, 0) == 0) {
		for (size_t i = 0; i < n; i++)
			if (strcmp(cas[i].id, sw_pki_ca_id(s->ca)) == 0)
				out->not_after = cas[i].not_after;
		sw_pki_bundle_free(cas, n);
	}
	tally(s, &t, NULL);
	out->systems = t.systems;
	out->trusting = t.trusting;
	out->reissued = t.reissued;
}

void ca_note(const struct server *s, int64_t now, char *out, size_t len)
{
	struct sw_pki_ca_info cas[CA_MAX];
	size_t n = 0;

	out[0] = '\0';
	if (ca_phase(s) != CA_STEADY || sw_pki_bundle_read(s->ca_pem, cas, CA_MAX, &n, NULL, 0))
		return;
	if (n == 1 && cas[0].not_after - now < CA_WARN_MS)
		snprintf(out, len,
			 "the site CA ends in %lld days, and the certificates it issues end with "
			 "it: rotate it with 'siteward ca rotate'",
			 (long long)((cas[0].not_after - now) / 86400000));
	sw_pki_bundle_free(cas, n);
}

json_t *ca_status(struct server *s)
{
	static const char *const phases[] = {
	    [CA_STEADY] = "steady", [CA_INTRODUCING] = "introducing", [CA_REISSUING] = "reissuing"};
	struct sw_pki_ca_info cas[CA_MAX];
	json_t *list = json_array(), *waiting = json_array(), *o;
	enum ca_phase phase = ca_phase(s);
	char note[256];
	struct tally t;
	size_t n = 0;

	if (sw_pki_bundle_read(s->ca_pem, cas, CA_MAX, &n, NULL, 0) == 0) {
		for (size_t i = 0; i < n; i++) {
			const char *state = "old";

			if (strcmp(cas[i].id, sw_pki_ca_id(s->ca)) == 0)
				state = "issuing";
			else if (s->ca_next && strcmp(cas[i].id, sw_pki_ca_id(s->ca_next)) == 0)
				state = "next";
			json_array_append_new(list,
					      json_pack("{ss ss ss sI sI}", "id", cas[i].id, "name",
							cas[i].name, "state", state, "not_before",
							(json_int_t)cas[i].not_before, "not_after",
							(json_int_t)cas[i].not_after));
		}
		sw_pki_bundle_free(cas, n);
	}
	tally(s, &t, waiting);
	ca_note(s, sw_now_ms(), note, sizeof(note));
	o = json_pack("{ss ss so si si si ss? sb sI}", "phase", phases[phase], "bundle_id",
		      s->ca_bundle_id, "cas", list, "systems", (int)t.systems, "trusting",
		      (int)t.trusting, "reissued", (int)t.reissued, "note", note[0] ? note : NULL,
		      "server_reissued", !served_by_other(s), "now", (json_int_t)sw_now_ms());
	if (o && phase != CA_STEADY)
		json_object_set_new(o, "waiting", waiting);
	else
		json_decref(waiting);
	return o;
}

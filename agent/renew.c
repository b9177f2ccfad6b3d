/*
 * The agent's certificates, renewed before they expire. At two thirds of the agent
 * certificate's life (sw_pki_renew_at()), checked at start and every hour, the agent
 * makes new keys and asks the site server for new agent, client and meter certificates
 * (POST /v1/agent/renew) over the channel's connection, in place of a poll. The files
 * are replaced one by one, each written whole and renamed into place; then, on the
 * loop's next turn, the channel's client is made again, so its next connection shows
 * the new certificate, and the metering service, which serves with meter.crt, is
 * restarted. A failed renewal is asked again with doubling waits, from [agent]
 * renew_retry_ms; each change of state is logged once, and a retry that fails as the
 * last one did is no change. An agent whose certificate has expired cannot renew: only a
 * new enrollment helps, and it says so. One whose clock is so far ahead that a
 * certificate just issued is already due says that, and asks again an hour later.
 */
#include "agent.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "pki.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RENEW_CHECK_MS	  3600000u /* how often the certificate's age is looked at */
#define RENEW_BACKOFF_MAX 3600000u

enum renew_state {
	RENEW_WAITING, /* not due yet */
	RENEW_DUE,     /* the channel sends it in place of its next poll */
	RENEW_ASKING,  /* the request is out */
	RENEW_SWITCHING,
	RENEW_BACKOFF, /* the last one failed; asked again after `backoff_ms` */
};

static const char *const state_names[] = {
    [RENEW_WAITING] = "waiting",     [RENEW_DUE] = "due",
    [RENEW_ASKING] = "asking",	     [RENEW_SWITCHING] = "switching",
    [RENEW_BACKOFF] = "backing off",
};

struct renew {
	struct agent *a;
	uv_timer_t timer;
	enum renew_state state;
	enum renew_state logged; /* the state last logged, with `said` */
	unsigned backoff_ms, attempts;
	char said[256]; /* why the last renewal failed, as logged */
	void (*done)(void *arg);
	void *done_arg;
	int closed, in_flight; /* freed once both its timer is closed and nothing is out */
	int64_t renewed_mono;  /* sw_mono_ms() of the last renewal, 0: none yet */
};

static void check(struct renew *r);

/* Every change of state goes through here; it is logged only when it differs from the
 * one last logged, or fails for another reason. */
static void set_state(struct renew *r, enum renew_state st, const char *why)
{
	r->state = st;
	if (r->logged == st && strcmp(why ? why : "", r->said) == 0)
		return;
	if (why)
		sw_warn("certificate renewal %s: %s", state_names[st], why);
	else
		sw_info("certificate renewal: %s", state_names[st]);
	snprintf(r->said, sizeof(r->said), "%s", why ? why : "");
	r->logged = st;
}

/* A retry after a failure goes due and out again without a word: only its outcome,
 * when it differs from the last one, is news. */
static void set_state_quiet(struct renew *r, enum renew_state st)
{
	if (r->backoff_ms)
		r->state = st;
	else
		set_state(r, st, NULL);
}

static void on_timer(uv_timer_t *t)
{
	check(t->data);
}

/* The agent certificate's window; SW_EINVAL when it cannot be read. */
static int window(const struct agent *a, int64_t *nb, int64_t *na)
{
	return sw_pki_cert_validity(a->cert_pem, nb, na, NULL, 0);
}

int renew_expired(struct agent *a, char *err, size_t errlen)
{
	int64_t nb, na;

	if (window(a, &nb, &na) || sw_now_ms() < na)
		return 0;
	sw_seterr(err, errlen,
		  "%s's certificate expired %lld days ago and cannot be renewed; enroll it again "
		  "with a new token: siteward-agent init --dir %s --server %s --name %s "
		  "--token-file FILE",
		  a->name, (long long)((sw_now_ms() - na) / 86400000), a->dir, a->server, a->name);
	return 1;
}

/* Looks at the certificate's age: due, expired (the agent ends), or wait. */
static void check(struct renew *r)
{
	struct agent *a = r->a;
	int64_t nb, na, now = sw_now_ms(), at;
	char err[512];
	unsigned wait = RENEW_CHECK_MS;

	if (r->state == RENEW_ASKING || r->state == RENEW_SWITCHING || a->stopping)
		return;
	if (renew_expired(a, err, sizeof(err))) {
		sw_err("%s", err);
		a->exit_status = AGENT_EXIT_REENROLL;
		uv_stop(a->loop);
		return;
	}
	if (window(a, &nb, &na) == 0) {
		at = sw_pki_renew_at(nb, na);
		/* A certificate just issued that is already due by this machine's clock: the
		 * clock is far ahead of the server's, and asking again would get another like
		 * it, at once, without end. It is said, and asked again an hour later. */
		if (now >= at && r->renewed_mono &&
		    sw_mono_ms() - r->renewed_mono < RENEW_CHECK_MS) {
			char why[200];

			snprintf(
			    why, sizeof(why),
			    "the certificate just issued is already due by this machine's clock, "
			    "about %lld days ahead of the site server's; set the time (timedatectl "
			    "/ chrony)",
			    (long long)((now - nb - SW_PKI_BACKDATE_S * 1000) / 86400000));
			set_state(r, RENEW_WAITING, why);
			uv_timer_start(&r->timer, on_timer, RENEW_CHECK_MS, 0);
			return;
		}
		if (now >= at) {
			set_state_quiet(r, RENEW_DUE);
			channel_soon(a);
			return;
		}
		if (at - now < (int64_t)wait)
			wait = (unsigned)(at - now) + 1000;
	}
	set_state(r, RENEW_WAITING, NULL);
	uv_timer_start(&r->timer, on_timer, wait, 0);
}

int renew_wanted(const struct agent *a)
{
	return a->renew && a->renew->state == RENEW_DUE;
}

static void finish(struct renew *r)
{
	void (*done)(void *) = r->done;

	r->done = NULL;
	if (done)
		done(r->done_arg);
}

static void failed(struct renew *r, const char *why)
{
	r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : r->a->renew_retry_ms;
	if (r->backoff_ms > RENEW_BACKOFF_MAX)
		r->backoff_ms = RENEW_BACKOFF_MAX;
	set_state(r, RENEW_BACKOFF, why);
	uv_timer_start(&r->timer, on_timer,
		       r->backoff_ms / 2 + sw_random_u32() % (r->backoff_ms / 2 + 1), 0);
}

/* On the loop's next turn after the files changed: nothing of the old client is on the
 * stack, so it can go, and the next connection shows the new certificate. */
static void on_switch(uv_timer_t *t)
{
	struct renew *r = t->data;
	struct agent *a = r->a;
	struct service *meter;

	sw_http_client_free(a->client);
	a->client = NULL;
	if (agent_clients_new(a, 0)) {
		/* nothing to talk to the server with: a restart makes the clients anew */
		sw_err("certificate renewal: cannot make the client to the server again; "
		       "restarting");
		a->exit_status = 1;
		uv_stop(a->loop);
		finish(r);
		return;
	}
	ticket_renewed(a);
	/* siteward-meter serves with meter.crt, read when it starts */
	meter = supervisor_find(a->sup, "meter");
	if (meter && service_wants_running(meter)) {
		sw_info("certificate renewal: restarting the metering service for its new "
			"certificate");
		service_restart(meter);
	}
	r->backoff_ms = r->attempts = 0;
	r->renewed_mono = sw_mono_ms();
	set_state(r, RENEW_WAITING, NULL);
	finish(r);
	check(r);
}

static void pair_paths(const char *dir, const char *base, char *key, char *crt, char *key_new,
		       char *crt_new, size_t len)
{
	char name[32];

	snprintf(name, sizeof(name), "%s.key", base);
	sw_path_join(key, len, dir, name);
	snprintf(name, sizeof(name), "%s.crt", base);
	sw_path_join(crt, len, dir, name);
	snprintf(name, sizeof(name), "%s.key.new", base);
	sw_path_join(key_new, len, dir, name);
	snprintf(name, sizeof(name), "%s.crt.new", base);
	sw_path_join(crt_new, len, dir, name);
}

/* Puts a written pair in place: the key, then the certificate. A crash between the two
 * renames leaves NAME.crt.new, which renew_recover() finds and puts in place too. */
static int pair_commit(const char *dir, const char *base, char *err, size_t errlen)
{
	char key[PATH_MAX + 64], crt[PATH_MAX + 64], key_new[PATH_MAX + 64], crt_new[PATH_MAX + 64];

	pair_paths(dir, base, key, crt, key_new, crt_new, sizeof(key));
	if ((access(key_new, F_OK) == 0 && rename(key_new, key) < 0) || rename(crt_new, crt) < 0) {
		sw_seterr(err, errlen, "cannot put the renewed %s certificate in place: %s", base,
			  strerror(errno));
		return SW_EIO;
	}
	/* the renames last across a power cut, as sw_file_write_atomic's do */
	sw_fsync_dir(dir, NULL, 0);
	return 0;
}

/* One certificate and its key, written whole beside the pair in use (NAME.key.new,
 * NAME.crt.new) and only then put in place, so the pair in use always matches: a crash
 * before the renames leaves the old pair, which the server still accepts; a crash
 * between them is finished by renew_recover() at the next start. */
static int write_pair(struct agent *a, const char *base, const char *key, const char *cert,
		      unsigned key_mode, char *err, size_t errlen)
{
	char kp[PATH_MAX + 64], cp[PATH_MAX + 64], knew[PATH_MAX + 64], cnew[PATH_MAX + 64];
	int rc;

	pair_paths(a->dir, base, kp, cp, knew, cnew, sizeof(kp));
	if ((rc = sw_file_write_atomic(knew, key, strlen(key), key_mode, err, errlen)) ||
	    (rc = sw_file_write_atomic(cnew, cert, strlen(cert), 0644, err, errlen)))
		return rc;
	return pair_commit(a->dir, base, err, errlen);
}

int renew_recover(const char *dir, char *err, size_t errlen)
{
	static const char *const bases[] = {"agent", "client", "meter"};
	char key[PATH_MAX + 64], crt[PATH_MAX + 64], key_new[PATH_MAX + 64], crt_new[PATH_MAX + 64];
	int rc;

	for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		pair_paths(dir, bases[i], key, crt, key_new, crt_new, sizeof(key));
		if (access(crt_new, F_OK) == 0) {
			/* both were written whole before the first rename: finish it */
			if ((rc = pair_commit(dir, bases[i], err, errlen)))
				return rc;
			sw_warn("finished putting the renewed %s certificate in place", bases[i]);
		} else if (access(key_new, F_OK) == 0) {
			/* stopped before its certificate was written: the old pair stands */
			unlink(key_new);
		}
	}
	return 0;
}

struct ask {
	struct renew *r;
	char *key, *client_key, *meter_key;
};

static void ask_free(struct ask *q)
{
	free(q->key);
	free(q->client_key);
	free(q->meter_key);
	free(q);
}

static void on_reply(const struct sw_http_result *res, void *arg)
{
	struct ask *q = arg;
	struct renew *r = q->r;
	struct agent *a = r->a;
	const char *cert = NULL, *client = NULL, *meter = NULL;
	struct sw_identity id;
	char err[300];
	json_t *j = NULL;

	r->in_flight = 0;
	if (a->stopping || r->closed) {
		ask_free(q);
		finish(r);
		if (r->closed == 2)
			free(r);
		return;
	}
	if (res->status != 200) {
		if (res->status)
			snprintf(err, sizeof(err), "refused (%ld): %.200s", res->status, res->body);
		else
			snprintf(err, sizeof(err), "%s", res->error);
		goto fail;
	}
	if (sw_json_parse_object(res->body, res->len, &j, err, sizeof(err)) ||
	    sw_json_str(j, "certificate", 16384, 1, &cert, err, sizeof(err)) ||
	    sw_json_str(j, "client_certificate", 16384, 0, &client, err, sizeof(err)) ||
	    sw_json_str(j, "meter_certificate", 16384, 0, &meter, err, sizeof(err)))
		goto fail;
	/* the server's word for it, checked: our name and role, before anything is replaced */
	if (sw_pki_cert_identity(cert, &id, err, sizeof(err)))
		goto fail;
	if (strcmp(id.cn, a->name) != 0 || strcmp(id.role, SW_PKI_ROLE_AGENT) != 0) {
		snprintf(err, sizeof(err), "the answer is a certificate for %s %s, not agent %s",
			 id.role, id.cn, a->name);
		goto fail;
	}
	if (write_pair(a, "agent", q->key, cert, 0600, err, sizeof(err)) ||
	    /* siteward-run reads these as whichever user runs it */
	    (client && write_pair(a, "client", q->client_key, client, 0644, err, sizeof(err))) ||
	    (meter && write_pair(a, "meter", q->meter_key, meter, 0600, err, sizeof(err))))
		goto fail;
	char *c = strdup(cert);
	if (!c) {
		snprintf(err, sizeof(err), "out of memory");
		goto fail;
	}
	free(a->cert_pem);
	free(a->key_pem);
	a->cert_pem = c;
	a->key_pem = q->key;
	q->key = NULL;
	sw_info("certificate renewed: serial %s", id.serial);
	json_decref(j);
	ask_free(q);
	set_state(r, RENEW_SWITCHING, NULL);
	uv_timer_start(&r->timer, on_switch, 0, 0);
	return;
fail:
	json_decref(j);
	ask_free(q);
	failed(r, err);
	finish(r);
}

void renew_now(struct agent *a)
{
	struct renew *r = a->renew;

	if (!r || r->state == RENEW_DUE || r->state == RENEW_ASKING ||
	    r->state == RENEW_SWITCHING || a->stopping)
		return;
	uv_timer_stop(&r->timer);
	set_state(r, RENEW_DUE, "the site's CA changed; the server asks for a renewal");
	channel_soon(a);
}

void renew_trust(struct agent *a, const char *pem)
{
	char id[SW_PKI_BUNDLE_ID_LEN + 1], path[PATH_MAX + 64], err[256], *copy;
	struct sw_pki_ca_info cas[4];
	struct sw_identity mine;
	struct service *meter;
	size_t n = 0;
	int ours = 0;

	/* the server's word, over a connection it proved itself on: still, only CAs, and
	 * among them the one that issued the certificate this agent holds */
	if (sw_pki_bundle_id(pem, id, err, sizeof(err)) ||
	    sw_pki_bundle_read(pem, cas, 4, &n, err, sizeof(err)) ||
	    sw_pki_cert_identity(a->cert_pem, &mine, err, sizeof(err))) {
		sw_warn("the server sent CAs to trust that cannot be used: %s", err);
		return;
	}
	for (size_t i = 0; i < n; i++)
		ours |= strcmp(cas[i].id, mine.ca) == 0;
	sw_pki_bundle_free(cas, n);
	if (!ours) {
		sw_warn("the server sent CAs to trust without the one of this agent's certificate "
			"(%.16s); kept the ones it has",
			mine.ca);
		return;
	}
	if (strcmp(id, a->ca_id) == 0 || !(copy = strdup(pem)))
		return;
	sw_path_join(path, sizeof(path), a->dir, "ca.crt");
	if (sw_file_write_atomic(path, pem, strlen(pem), 0644, err, sizeof(err))) {
		sw_warn("cannot write the site's CAs: %s", err);
		free(copy);
		return;
	}
	free(a->ca_pem);
	a->ca_pem = copy;
	sw_info("the site's CAs changed (%s, was %s): %s written", id, a->ca_id, path);
	snprintf(a->ca_id, sizeof(a->ca_id), "%s", id);
	/* the next connections read ca.crt afresh; siteward-meter reads it when it starts */
	meter = supervisor_find(a->sup, "meter");
	if (meter && service_wants_running(meter)) {
		sw_info("restarting the metering service to trust the site's CAs");
		service_restart(meter);
	}
	channel_soon(a);
}

int renew_send(struct agent *a, void (*done)(void *arg), void *arg)
{
	struct renew *r = a->renew;
	char *csr = NULL, *client_csr = NULL, *meter_csr = NULL, *body = NULL, url[400];
	char err[256];
	struct ask *q;
	json_t *msg = NULL;
	int rc = SW_ENOMEM;

	if (!r || r->state != RENEW_DUE)
		return SW_EINVAL;
	if (!(q = calloc(1, sizeof(*q))))
		return SW_ENOMEM;
	q->r = r;
	if ((rc = sw_pki_key_generate(&q->key, err, sizeof(err))) ||
	    (rc = sw_pki_csr_create(q->key, a->name, &csr, err, sizeof(err))) ||
	    (rc = sw_pki_key_generate(&q->client_key, err, sizeof(err))) ||
	    (rc = sw_pki_csr_create(q->client_key, a->name, &client_csr, err, sizeof(err))) ||
	    (rc = sw_pki_key_generate(&q->meter_key, err, sizeof(err))) ||
	    (rc = sw_pki_csr_create(q->meter_key, a->name, &meter_csr, err, sizeof(err)))) {
		failed(r, err);
		goto out;
	}
	rc = SW_ENOMEM;
	msg = json_pack("{ss ss ss}", "csr", csr, "client_csr", client_csr, "meter_csr", meter_csr);
	if (!msg || !(body = sw_json_dump(msg))) {
		failed(r, "out of memory");
		goto out;
	}
	snprintf(url, sizeof(url), "%s/v1/agent/renew", a->server);
	if ((rc = sw_http_client_request(a->client, "POST", url, body, strlen(body),
					 a->request_timeout_ms, on_reply, q))) {
		failed(r, "cannot send the request");
		goto out;
	}
	r->in_flight = 1;
	r->done = done;
	r->done_arg = arg;
	r->attempts++;
	sw_debug("certificate renewal: asking the server (attempt %u)", r->attempts);
	set_state_quiet(r, RENEW_ASKING);
	q = NULL;
out:
	if (q)
		ask_free(q);
	json_decref(msg);
	free(body);
	free(csr);
	free(client_csr);
	free(meter_csr);
	return rc;
}

int renew_start(struct agent *a)
{
	struct renew *r = calloc(1, sizeof(*r));

	if (!r)
		return SW_ENOMEM;
	r->a = a;
	r->state = RENEW_WAITING;
	uv_timer_init(a->loop, &r->timer);
	r->timer.data = r;
	a->renew = r;
	check(r);
	return 0;
}

static void renew_closed(uv_handle_t *h)
{
	struct renew *r = h->data;

	if (r->in_flight) {
		r->closed = 2; /* its answer, or the client's cancelling it, frees it */
		return;
	}
	finish(r); /* a switch that will not happen: the channel is told it is over */
	free(r);
}

void renew_stop(struct agent *a)
{
	struct renew *r = a->renew;

	if (!r)
		return;
	a->renew = NULL;
	r->closed = 1;
	uv_close((uv_handle_t *)&r->timer, renew_closed);
}

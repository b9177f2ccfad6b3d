/*
 * siteward-run: the software-metering client (SMS's client agent, online mode). It asks
 * a metering server for a license before PROGRAM runs, keeps the lease while it runs
 * and returns it when PROGRAM exits; it exits with PROGRAM's status. A denial exits 75
 * without running it. When no metering server answers it follows the offline policy:
 * run PROGRAM and leave a usage record for the agent to upload, or refuse.
 */
#include "run.h"

#include "elfid.h"
#include "error.h"
#include "http_client.h"
#include "loop.h"
#include "paths.h"
#include "pki.h"
#include "progver.h"
#include "ticket.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "version.h"

#define CONNECT_MS   2000  /* each server's connect and TLS handshake */
#define MAX_WAIT_SEC 3600u /* --wait: a metering server queues for an hour at most */

static const char usage_text[] =
    "usage: siteward-run [--agent ADIR] [--wait SECONDS] [--verbose] -- PROGRAM [ARGS...]\n"
    "       siteward-run [--agent ADIR] borrow PRODUCT --for DURATION\n"
    "       siteward-run [--agent ADIR] return PRODUCT\n"
    "       siteward-run [--agent ADIR] borrowed [--json]\n";

void run_printable(char *out, size_t outlen, const char *in)
{
	/* what sw_printable writes is UTF-8, so it goes into JSON as it is */
	sw_printable(out, outlen, in);
}

void run_version(struct run *r)
{
	char err[PATH_MAX + 128];
	int rc;

	if (r->has_version)
		return;
	r->has_version = 1;
	rc = sw_program_version(r->path, r->version, sizeof(r->version), err, sizeof(err));
	/* Not from a package: its version is unknown, and only a product without a version
	 * pattern can be it. */
	if (rc && rc != SW_ENOTFOUND)
		fprintf(stderr, "siteward-run: the version of %s is not known: %s\n", r->exe, err);
	if (r->verbose)
		fprintf(stderr, "siteward-run: %s is version %s\n", r->path,
			r->version[0] ? r->version : "(none: no package owns it)");
}

static int parse_wait(const char *s, unsigned *ms)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return SW_EINVAL;
	v = strtoul(s, &end, 10);
	if (*end || v > MAX_WAIT_SEC)
		return SW_EINVAL;
	*ms = (unsigned)v * 1000u;
	return 0;
}

static void identify(struct run *r)
{
	const char *p = strrchr(r->argv[0], '/');
	struct passwd *pw = getpwuid(getuid());

	run_printable(r->exe, sizeof(r->exe), p ? p + 1 : r->argv[0]);
	if (pw && pw->pw_name[0])
		run_printable(r->user, sizeof(r->user), pw->pw_name);
	else
		snprintf(r->user, sizeof(r->user), "%u", (unsigned)getuid());
}

/* Ends every request and handle, and the loop; safe to call twice. */
static void finish(struct run *r)
{
	r->lease.closing = 1;
	sw_http_client_free(r->http);
	r->http = NULL;
	lease_cleanup(&r->lease);
	child_cleanup(&r->child);
	if (r->loop) {
		sw_loop_drain(r->loop, SW_LOOP_DRAIN_MS);
		uv_loop_close(r->loop);
		r->loop = NULL;
	}
}

/* Runs PROGRAM as our child until it exits; returns its status. */
static int run_child(struct run *r)
{
	char err[PATH_MAX + 128];
	int rc;

	r->start_ms = sw_now_ms();
	rc = child_start(r, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "siteward-run: %s\n", err);
		return rc == SW_ENOTFOUND ? RUN_EX_NOTFOUND : RUN_EX_NOEXEC;
	}
	if (r->lease.outcome == LEASE_GRANTED)
		lease_heartbeat_start(r);
	/* The one wait without a deadline: how long PROGRAM runs is the user's business. */
	while (!r->child.exited)
		uv_run(r->loop, UV_RUN_ONCE);
	r->end_ms = sw_now_ms();
	/* A run no server heard of, or the part of one after its license was taken back
	 * while it was let run on, is recorded for the agent to send. */
	if (r->lease.outcome == LEASE_OFFLINE || r->lease.run_unlicensed) {
		run_version(r); /* the site server's products may tell versions apart */
		if (usage_record(r, err, sizeof(err)))
			fprintf(stderr, "siteward-run: this run is not recorded: %s\n", err);
	}
	return r->child.status;
}

/* Options, up to PROGRAM: 0 to go on; otherwise the exit status (-1 for 0: --help,
 * --version). */
static int options(struct run *r, int argc, char **argv, const char **dir, int *command)
{
	static const struct option longopts[] = {
	    {"agent", required_argument, NULL, 'a'}, {"wait", required_argument, NULL, 'w'},
	    {"verbose", no_argument, NULL, 'v'},     {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},	     {NULL, 0, NULL, 0},
	};
	int opt;

	*dir = sw_path_dir(NULL, "SITEWARD_AGENT", SW_PATH_AGENT_DIR);
	/* "+": options end at PROGRAM, whose own options are its business. */
	while ((opt = getopt_long(argc, argv, "+a:w:vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'a': *dir = optarg; break;
		case 'w':
			if (parse_wait(optarg, &r->wait_ms)) {
				fprintf(stderr,
					"siteward-run: --wait takes whole seconds, 0 to %u\n",
					MAX_WAIT_SEC);
				return RUN_EX_USAGE;
			}
			break;
		case 'v': r->verbose = 1; break;
		case 'V': printf("siteward-run %s\n", SW_VERSION); return -1;
		case 'h': fputs(usage_text, stdout); return -1;
		default: fputs(usage_text, stderr); return RUN_EX_USAGE;
		}
	}
	if (optind >= argc) {
		fputs(usage_text, stderr);
		return RUN_EX_USAGE;
	}
	if (!*dir || !(*dir)[0]) {
		fprintf(stderr, "siteward-run: which agent? pass --agent ADIR or set "
				"SITEWARD_AGENT to the agent's folder\n");
		return RUN_EX_USAGE;
	}
	r->argv = argv + optind;
	/* a command, unless "--" said PROGRAM follows */
	*command = strcmp(argv[optind - 1], "--") != 0 && borrow_is_command(argv[optind]);
	return 0;
}

/* PROGRAM found before the checkout, so a mistyped name costs no license: 0 or the exit
 * status. */
static int find_program(struct run *r)
{
	char err[PATH_MAX + 128];
	int rc;

	if ((rc = sw_path_find(r->argv[0], r->path, sizeof(r->path), err, sizeof(err)))) {
		fprintf(stderr, "siteward-run: %s\n", err);
		return rc == SW_ENOTFOUND ? RUN_EX_NOTFOUND : RUN_EX_NOEXEC;
	}
	if (sw_elf_build_id(r->path, r->build_id, sizeof(r->build_id)))
		r->build_id[0] = '\0'; /* a script, or a program built without one */
	return 0;
}

void run_http_opts(const struct run *r, struct sw_http_client_opts *ho)
{
	memset(ho, 0, sizeof(*ho));
	ho->connect_timeout_ms = CONNECT_MS;
	ho->ca_file = r->conf.ca;
	ho->cert_file = r->conf.cert;
	ho->key_file = r->conf.key;
	/* a metering server serves with its system's meter certificate, or, enrolled before
	 * there was one, its agent certificate */
	ho->peer_role = SW_PKI_ROLE_METER "|" SW_PKI_ROLE_AGENT;
}

/* The loop, the signals it watches, the client of the metering servers and the user
 * ticket it shows them: 0 or the exit status. */
static int run_open(struct run *r)
{
	static uv_loop_t loop;
	struct sw_http_client_opts ho;
	char err[PATH_MAX + 128];

	if (sw_random_hex(r->client, 16) || uv_loop_init(&loop) < 0) {
		fprintf(stderr, "siteward-run: cannot start: out of resources\n");
		return RUN_EX_SOFTWARE;
	}
	r->loop = &loop;
	if (child_watch(r)) {
		fprintf(stderr, "siteward-run: cannot watch signals: out of resources\n");
		return RUN_EX_SOFTWARE;
	}
	run_http_opts(r, &ho);
	if (sw_http_client_new(r->loop, &ho, &r->http)) {
		fprintf(stderr, "siteward-run: cannot start: out of memory\n");
		return RUN_EX_SOFTWARE;
	}
	/* Metering servers take the user from the agent's word, not from ours. */
	if (r->conf.nmeters > 0 && ticket_get(r, err, sizeof(err))) {
		fprintf(stderr,
			"siteward-run: no user ticket from siteward-agent (%s); asking no metering "
			"server\n",
			err);
		config_cleanup(&r->conf);
	} else if (r->ticket) {
		char header[SW_TICKET_MAX + 32];
		struct sw_ticket t;

		snprintf(header, sizeof(header), "%s: %s", SW_TICKET_HEADER, r->ticket);
		if (sw_ticket_parse(r->ticket, strlen(r->ticket), &t, NULL, 0) == 0)
			snprintf(r->user, sizeof(r->user), "%s", t.user);
		if (sw_http_client_header(r->http, header)) {
			fprintf(stderr, "siteward-run: cannot start: out of memory\n");
			return RUN_EX_SOFTWARE;
		}
	}
	return 0;
}

/* The checkout, and what its outcome leads to; the exit status. */
static int run_metered(struct run *r)
{
	int rc, status = RUN_EX_SOFTWARE;

	/* A license borrowed for it: no checkout, no heartbeat; the loan is the record. */
	if (borrow_covers(r)) {
		r->lease.outcome = LEASE_BORROWED;
		return run_child(r);
	}
	/* Every checkout request has its deadline; the loop ends when the last one does. */
	lease_checkout(r);
	while (r->lease.outcome == LEASE_PENDING)
		uv_run(r->loop, UV_RUN_ONCE);

	switch (r->lease.outcome) {
	case LEASE_UNMETERED:
		finish(r);
		rc = child_exec(r);
		fprintf(stderr, "siteward-run: %s: %s\n", r->argv[0], strerror(rc));
		status = rc == ENOENT ? RUN_EX_NOTFOUND : RUN_EX_NOEXEC;
		break;
	case LEASE_DENIED:
		if (r->lease.queue_position && !r->wait_ms)
			fprintf(stderr,
				"siteward-run: denied: %s (with --wait SECONDS it would be number "
				"%u in the queue)\n",
				r->lease.reason, r->lease.queue_position);
		else
			fprintf(stderr, "siteward-run: denied: %s\n", r->lease.reason);
		status = RUN_EX_TEMPFAIL;
		break;
	case LEASE_FAILED:
		fprintf(stderr,
			"siteward-run: no metering server accepted the request (last: %s); tell "
			"the site's administrator\n",
			r->lease.reason);
		status = RUN_EX_SOFTWARE;
		break;
	case LEASE_OFFLINE:
		if (r->conf.offline == RUN_OFFLINE_DENY) {
			fprintf(stderr, "siteward-run: denied: no metering server answered\n");
			status = RUN_EX_TEMPFAIL;
			break;
		}
		if (r->verbose)
			fprintf(stderr,
				"siteward-run: no metering server answered; running %s "
				"and recording it in usage-cache\n",
				r->exe);
		status = run_child(r);
		break;
	case LEASE_GRANTED:
		status = run_child(r);
		/* Also when PROGRAM could not be executed: the license is returned. */
		lease_checkin(r);
		while (lease_busy(r))
			uv_run(r->loop, UV_RUN_ONCE);
		break;
	case LEASE_PENDING:
	case LEASE_BORROWED: break;
	}
	return status;
}

int main(int argc, char **argv)
{
	static struct run r;
	const char *dir;
	char err[PATH_MAX + 128];
	int status, command = 0;

	if (child_init(&r.child)) {
		fprintf(stderr, "siteward-run: cannot watch signals: %s\n", strerror(errno));
		return RUN_EX_SOFTWARE;
	}
	if ((status = options(&r, argc, argv, &dir, &command)))
		return status < 0 ? 0 : status;
	identify(&r);
	if (config_load(&r.conf, dir, err, sizeof(err))) {
		fprintf(stderr, "siteward-run: %s\n", err);
		return RUN_EX_CONFIG;
	}
	if (command) {
		if (!(status = run_open(&r)))
			status = borrow_command(&r, argc - (int)(r.argv - argv), r.argv);
	} else if (!(status = find_program(&r)) && !(status = run_open(&r))) {
		status = run_metered(&r);
	}
	finish(&r);
	config_cleanup(&r.conf);
	free(r.ticket);
	return status;
}

/* siteward-agent: runs on every managed machine. */
#ifndef AGENT_H
#define AGENT_H

#include "conf.h"
#include "http_client.h"
#include "http_server.h"
#include "metrics.h"
#include "pki.h"
#include "supervisor.h"

#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <uv.h>

struct agent {
	uv_loop_t *loop;
	char dir[PATH_MAX];
	char name[64];
	char version[33];	/* the running version (sw_install_version), found at start */
	char server[300];	/* https://HOST:PORT */
	char meter_listen[300]; /* where the meter service listens, if it runs here */
	struct sw_conf *conf;
	struct sw_http_client *client;	  /* to the server: heartbeats, the channel, uploads */
	struct sw_http_client *bulk;	  /* to the server: package downloads */
	struct sw_http_client *dp_client; /* to distribution points (deploy.c), NULL: none yet */
	char *ca_pem, *cert_pem, *key_pem;
	char
	    ca_id[SW_PKI_BUNDLE_ID_LEN + 1]; /* sw_pki_bundle_id() of ca_pem: told each heartbeat */
	unsigned heartbeat_s;		     /* as the server last said */
	unsigned request_timeout_ms;	     /* bound on each call to the server */
	unsigned connect_timeout_ms;
	unsigned renew_retry_ms; /* the first wait after a failed renewal, doubled each time */
	int changed;		 /* something to report since the last heartbeat was sent */
	int stopping;
	int usage_in_flight;
	unsigned usage_batch; /* cached records per upload while isolating a refused one; 0: all */
	json_t *meters;	      /* metering servers as last written to meters.json */
	json_t *written_off;  /* loans written off here, as last written to written-off.json */
	struct passive *passive;
	unsigned passive_ms;	   /* how often running programs are scanned; 0: never */
	int64_t last_heartbeat_ok; /* ms since the epoch, 0 if never */
	struct supervisor *sup;
	json_t *roles; /* the roles the server wants here */
	uv_signal_t sigint, sigterm;
	int64_t started_ms;
	char **argv; /* as main got it, for a re-exec */
	struct upgrade *upgrade;
	struct channel *channel;     /* commands from the server over our own connection */
	struct tickets *tickets;     /* the local socket that tells users who they are */
	struct inventory *inventory; /* what the machine is and has, for the site */
	struct dp *dp;		     /* dp.c: its distribution point, NULL: none */
	/* Set when the agent is to re-execute itself once its loop has wound down. */
	char restart_exe[PATH_MAX];
	char restart_back[33];	 /* on failure, switch back to this version ("": run self_exe) */
	char self_exe[PATH_MAX]; /* this program, as started */
	struct agent_metrics *metrics;		      /* metrics.c, NULL: none */
	struct sw_counter *mx_hb_sent, *mx_hb_failed; /* counted by channel.c */
	struct renew *renew;			      /* renew.c */
	int exit_status; /* main()'s status when the loop ends, 0: as it would be */
};

/* The agent's status when its certificate has expired: only a new enrollment helps. */
#define AGENT_EXIT_REENROLL 78

/* main.c */
/* The clients to the server, from the agent's certificate files as they are now: the
 * channel's, and with `bulk` the one for downloads. */
int agent_clients_new(struct agent *a, int bulk);
/* A client with the agent's certificate whose peers must carry `peer_role`; at most
 * `max_host_connections` to one server (0: no limit). */
int agent_client_new(struct agent *a, const char *peer_role, unsigned max_host_connections,
		     struct sw_http_client **out);

/* renew.c: the agent's certificates renewed at two thirds of their life, over the
 * channel's connection (see siteward-agent(8)) */
int renew_start(struct agent *a);
/* Finishes putting in place a renewed pair a crash interrupted (NAME.crt.new left
 * beside it), before the agent reads its certificates; 0 or SW_EIO. */
int renew_recover(const char *dir, char *err, size_t errlen);
void renew_stop(struct agent *a);
/* 1, with what to do in `err`, when the agent's certificate has expired. */
int renew_expired(struct agent *a, char *err, size_t errlen);
/* 1 when a renewal is due: the channel sends it (renew_send) in place of its next poll. */
int renew_wanted(const struct agent *a);
/* The server asks for a renewal now (its CA changed): it goes in place of the next poll,
 * unless one is under way. */
void renew_now(struct agent *a);
/* The site's CAs as the server sends them (a PEM bundle) when the agent trusts another
 * set: checked, written to ca.crt, and the metering service restarted to trust them. */
void renew_trust(struct agent *a, const char *pem);
/* Sends the renewal; `done(arg)` is called once, from the loop, when it is over and the
 * channel's client may be used again. */
int renew_send(struct agent *a, void (*done)(void *arg), void *arg);

/* enroll.c */
int enroll_main(int argc, char **argv);
/* Unattended enrollment: an agent started unenrolled in the default folder, with
 * ENROLL_CONF naming its server, enrolls with the token in ENROLL_TOKEN (as init does).
 * 0 (enrolled, or nothing to do: another folder, enrolled already, no ENROLL_CONF);
 * ENROLL_UNREACHABLE (try again later); ENROLL_CONFIG (what to fix is said on stderr). */
#define ENROLL_CONF	   "/etc/siteward/enroll.conf"
#define ENROLL_TOKEN	   "/etc/siteward/token"
#define ENROLL_UNREACHABLE 75	 /* EX_TEMPFAIL */
#define ENROLL_CONFIG	   78	 /* EX_CONFIG: the unit's RestartPreventExitStatus= */
#define ENROLL_TIMEOUT_MS  15000 /* each of enrollment's two requests */
#define ENROLL_ATTEMPT_MS  (2 * ENROLL_TIMEOUT_MS)
int enroll_auto(const char *dir);

/* facts.c */
json_t *facts_collect(const struct agent *a);

/* The heartbeat interval handed from an agent to the program it restarts into. */
#define HEARTBEAT_ENV "SITEWARD_AGENT_HEARTBEAT_S"

/* heartbeat.c */
/* Sends a heartbeat soon, to report a change without waiting for the interval. */
void heartbeat_soon(struct agent *a);
/* What a heartbeat says: version, facts, roles, services, clock, meter address. */
json_t *heartbeat_body(struct agent *a);
/* Acts on the server's reply to a heartbeat; SW_EPROTO if it is not one. */
int heartbeat_took(struct agent *a, const json_t *reply);

/* channel.c: the connection the agent keeps to the site server: its heartbeats go up,
 * the server's commands come down. */
int channel_start(struct agent *a);
void channel_stop(struct agent *a);
/* A change to report: the heartbeat goes with the next poll. */
void channel_soon(struct agent *a);
/* Answers not yet taken by the server (an agent about to restart waits for them). */
int channel_unsent(const struct agent *a);
/* 1 while the channel works (its last poll was answered), 0 while it backs off. */
int channel_open(const struct agent *a);

/* metrics.c: DIR/metrics/siteward_agent.prom for node_exporter's textfile collector */
int metrics_start(struct agent *a);
void metrics_stop(struct agent *a);

/* exec.c: POST /v1/exec, a command for the site's administrator, bounded */
void exec_post(struct sw_http_req *req, void *arg);
/* How a command run by exec_spawn() ended, and the first and last KiB of its output
 * (standard output and error together, shown printable). */
struct exec_result {
	int timed_out;
	int abandoned; /* the agent stops: the command runs on, unwatched */
	int64_t status, signo, elapsed_ms;
	const char *head, *tail;
	uint64_t bytes;
};
typedef void (*exec_done)(const struct exec_result *r, void *arg);
/* Runs argv (argv[0] a path, or a name looked up in env's PATH) with `env`, from /, in a
 * process group of its own, killed whole at `timeout_ms`; `done` follows, never inside
 * this call. Non-zero with `err` set, and `done` not called, when it cannot start. */
int exec_spawn(struct agent *a, char **argv, char **env, int64_t timeout_ms, exec_done done,
	       void *arg, char *err, size_t errlen);
/* The agent stops: each command's `done` hears so now (with `abandoned`), and the
 * commands run on. */
void exec_stop(struct agent *a);

/* dp.c: the distribution point a system of that role runs (see the file's head) */
void dp_update(struct agent *a, int wanted);
void dp_stop(struct agent *a);
/* The site server's list of revoked certificates (a heartbeat reply's), refused from
 * now on; NULL: no change. */
void dp_revoked(struct agent *a, const json_t *list);
/* Where it listens ([distribution] listen), NULL while it does not. */
const char *dp_address(const struct agent *a);

/* deploy.c: POST /v1/deploy, a package installed or removed for the site server */
void deploy_post(struct sw_http_req *req, void *arg);
/* The agent stops: deployments waiting for dpkg's lock are answered "deferred". */
void deploy_stop(struct agent *a);

/* inventory.c: the machine's hardware and packages, sent whole once, then as deltas */
int inventory_start(struct agent *a);
/* The server answered a heartbeat: the first time, the inventory is collected. */
void inventory_heard(struct agent *a);
void inventory_stop(struct agent *a);
void inventory_free(struct agent *a);

/* ticket.c: user tickets for siteward-run, on <dir>/agent.sock or /run/siteward/ */
/* The heartbeat answer's loans written off here (NULL: none), for siteward-run, which
 * refuses them, in <dir>/written-off.json. */
void ticket_written_off(struct agent *a, const json_t *leases);
int ticket_start(struct agent *a);
void ticket_stop(struct agent *a);
/* The agent's certificate changed: tickets signed with the one before are issued again. */
void ticket_renewed(struct agent *a);
void ticket_free(struct agent *a);

/* roles.c */
int roles_apply(struct agent *a, const json_t *wanted);
void roles_load(struct agent *a);
int roles_check_config(struct agent *a, char *err, size_t errlen);

/* passive.c */
struct passive *passive_start(struct agent *a, unsigned interval_ms);
void passive_stop(struct passive *p);
/* The server's products_version from a heartbeat reply: a change means a new fetch. */
void passive_products_version(struct passive *p, const json_t *version);
/* How passive metering reads what a process is, only when a product would need it. */
struct passive_lookup {
	const char *(*build_id)(void *arg); /* "" for none */
	const char *(*version)(void *arg);  /* its package's, "" for none */
	void *arg;
};
struct sw_product;
/* The product a program runs as, as a license server would choose it (NULL for none or
 * for a program in `excluded`, a JSON list of file names). */
const char *passive_product_for(const struct sw_product *const *v, size_t n, const json_t *excluded,
				const char *exe, const struct passive_lookup *look);

/* usage.c */
void usage_upload(struct agent *a);
/* Makes usage-cache/ a drop box every local user's siteward-run can write into. */
void usage_cache_prepare(struct agent *a);
void usage_meters_save(struct agent *a, json_t *meters, json_t *names);

/* upgrade.c: the agent's half of a site upgrade (see siteward-agent(8)) */
int upgrade_init(struct agent *a);
/* Answers what is under way (a staging gets 503) before the API goes away. */
void upgrade_stop(struct agent *a);
void upgrade_free(struct agent *a);
/* 1 if an upgrade stopped this service and has not started it again. */
int upgrade_holds(const struct agent *a, const char *name);
/* {"staged":[V...], "previous":P or null} */
json_t *upgrade_status(const struct agent *a);
/* Bytes available to the agent on its folder's file system; SW_EIO if unknown. */
int64_t upgrade_disk_free(const char *dir);
/* Replaces this process with a->restart_exe, the same arguments; returns only when
 * no version could be started (SW_EIO), and the agent then ends. */
int upgrade_exec(struct agent *a);
void upgrade_post_stop(struct sw_http_req *req, void *arg);
void upgrade_post_start(struct sw_http_req *req, void *arg);
void upgrade_post_stage(struct sw_http_req *req, void *arg);
void upgrade_post_switch(struct sw_http_req *req, void *arg);
void upgrade_post_rollback(struct sw_http_req *req, void *arg);

/* api.c: what the server may ask of the agent */
/* A command from the server's channel, through the API's routes. */
int api_local(struct agent *a, const struct sw_http_local_req *in, sw_http_local_done done,
	      void *arg);

#endif

/* siteward-server: the site server. */
#ifndef SERVER_H
#define SERVER_H

#include "clock.h"
#include "conf.h"
#include "db.h"
#include "http_client.h"
#include "http_server.h"
#include "metrics.h"
#include "pki.h"
#include "proto.h"
#include "strmap.h"

#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <uv.h>

/* One enrolled site system as the server last heard of it. */
struct system {
	char name[64];
	char address[300];
	char serial[41];
	char client_serial[41]; /* its metering client's certificate, "" if none */
	char prev_serial[41];	/* the agent certificate it renewed with, "" if none */
	int64_t cert_not_after; /* when its agent certificate expires (ms), 0: unknown */
	char cert_ca[41];	/* the CA that issued it (sw_identity.ca), "": not heard yet */
	char trust[SW_PKI_BUNDLE_ID_LEN + 1]; /* the bundle of CAs its agent trusts, "": unknown */
	char version[65];
	int64_t enrolled_at, last_seen; /* ms since the epoch */
	json_t *facts;
	json_t *roles;		 /* wanted here: array of role names, kept in the database */
	json_t *services;	 /* as the agent last reported them */
	char meter_address[300]; /* HOST:PORT of its metering server, "" if none */
	char dp_address[300];	 /* HOST:PORT of its distribution point, "" if none */
	int64_t clock_skew_ms;	 /* its clock minus ours, as of its last heartbeat */
	int64_t meter_seen_ms;	 /* sw_mono_ms() of its metering server's last poll, 0: none */
	enum sw_clock_state clock_state; /* as last logged */
	int dirty;			 /* changed since the last flush to the database */
	struct chan *chan;		 /* its agent's channel (channel.c), NULL: none yet */
};

struct server {
	uv_loop_t *loop;
	/* main.c's way out when the server cannot go on (its database is gone): logs `why`
	 * and ends the process with status 1; the floors below main reach it only here. */
	void (*abort)(struct server *s, const char *why) __attribute__((noreturn));
	char dir[PATH_MAX];
	char site_code[4];
	char listen[300];
	struct sw_conf *conf;
	struct sw_db *db;
	/* ca.c: the CA that issues, the one that follows it while a rotation introduces it
	 * (NULL otherwise), and the bundle of every CA the site trusts, with its id; the
	 * listener was started with `ca_pem_served` (libmicrohttpd keeps the pointer) */
	struct sw_pki_ca *ca, *ca_next;
	char *ca_pem, *ca_pem_served, *cert_pem, *key_pem;
	char ca_bundle_id[SW_PKI_BUNDLE_ID_LEN + 1];
	/* when both the site CA and the server's certificate are valid (ms; 0: unknown) */
	int64_t tls_not_before, tls_not_after;
	struct sw_http_server *http;
	struct sw_http_server *console_http; /* console.c: the console's port, NULL: none */
	struct console *console;
	struct sw_http_client *agents; /* the server's calls to agents */
	int64_t products_version;      /* changes whenever products or exclusions change */
	uint64_t registry_gen;	       /* registry.c: changes with roles or addresses */
	json_t *meter_urls;	       /* cached at meter_urls_gen, NULL: not yet */
	json_t *meter_names;	       /* the systems of meter_urls, in the same order */
	uint64_t meter_urls_gen;       /* the registry_gen meter_urls was made at */
	unsigned heartbeat_s;	       /* the interval agents are told to use */
	unsigned flush_ms;	       /* how often heartbeat state is written */
	unsigned detail_days;	       /* usage detail kept this long, then summarised */
	unsigned summarize_s;	       /* how often summarising runs */
	unsigned lease_ttl_ms;	       /* a license lease not renewed this long expires */
	unsigned meter_poll_ms;	       /* how often metering servers ask for their shares */
	uv_timer_t summarize_timer;
	uv_timer_t cert_timer;	       /* the server's certificate, looked at now and then */
	unsigned cert_check_s;	       /* how often: [server] cert_check_interval_s */
	uv_timer_t ca_timer;	       /* a rotation of the site's CA, moved on (ca.c) */
	struct sw_strmap *systems;     /* name → struct system */
	struct sw_strmap *revoked;     /* serial → (void *)1 */
	struct sw_strmap *written_off; /* lease → struct written_off: loans written off */
	struct sw_strmap *admins;      /* admins.c: name → its role */
	struct system **dirty;	       /* systems to write at the next flush */
	size_t ndirty, dirty_cap;
	uv_timer_t flush_timer;
	struct sw_db *dbq_db; /* the write queue's own connection (dbq.c), NULL: none */
	struct dbq_job *dbq_head, **dbq_tail;
	int dbq_busy;	 /* a job of the queue is on the thread pool */
	int flush_busy;	 /* a flush of heartbeat state is queued or running */
	int summarizing; /* usage summaries are queued or running */
	uv_signal_t sigint, sigterm;
	int64_t started_ms;
	struct upgrade *upgrade; /* the latest upgrade run, NULL if none */
	struct deploys *deploys; /* deploy.c: software distribution */
	int upgrade_starting;	 /* a new run's rows are on their way to the journal */
	/* upgrade.c: moves on with every change of the latest run (what is journaled), its
	 * systems' and its own each noting the generation they changed at; the watchers of
	 * upgrade_api.c read them, told through `upgrade_watch`, which the API sets and
	 * which only arms a timer */
	uint64_t upgrade_gen;
	void (*upgrade_watch)(struct server *s);
	/* upgrade_api.c: the event streams that follow the latest run, what they were last
	 * sent, and the timer that sends the next batch */
	struct watcher *watchers;
	uint64_t watch_gen;
	int64_t watch_sent_ms;
	uv_timer_t watch_timer;
	int watch_timer_init;
	struct sw_http_event *watch_run; /* the run whole as last made, while watchers are */
	uint64_t watch_run_gen;
	int64_t watch_run_ms;
	int stopping;	       /* shutting down: late answers change nothing */
	uv_timer_t lag_timer;  /* how late the loop runs (channel.c) */
	int64_t lag_due;       /* sw_mono_ms() the timer is due */
	int64_t lag_ms;	       /* how late it last came */
	int64_t lag_peak_ms;   /* the latest since shedding was last reported */
	int64_t shed_reported; /* sw_mono_ms() of that report */
	uint64_t polls_shed;   /* polls answered 503 since the last report */
	char reexec[PATH_MAX]; /* after shutdown, exec this (an upgrade's switch) */
	struct sw_db_opts db_opts;
	char db_url[PATH_MAX + 64];
	/* What /metrics shows (metrics.c); the counters below are counted where their
	 * events happen, on any floor, and NULL series count nothing. */
	struct sw_metrics *metrics;
	struct sw_counter *mx_heartbeats;	     /* heartbeats heard, alone or on a poll */
	struct sw_counter *mx_usage_records;	     /* usage records received in stored batches */
	struct sw_counter *mx_content_bytes;	     /* deployments' packages sent (deploy.c) */
	struct sw_histogram *mx_db_job, *mx_db_wait; /* a write-queue job: run, and waited */
};

/* metrics.c: GET /metrics, and the series the other files count into */
int metrics_open(struct server *s, char *err, size_t errlen);
void metrics_free(struct server *s);
void metrics_get(struct sw_http_req *req, void *arg);

/* ca.c: the site's CAs, and their rotation (see the file's head) */
enum ca_phase {
	CA_STEADY,	/* one CA */
	CA_INTRODUCING, /* a new CA is trusted, not yet issuing: systems take the bundle */
	CA_REISSUING,	/* the new CA issues; the old one is trusted until nothing uses it */
};
int ca_load(struct server *s, char *err, size_t errlen);
void ca_free(struct server *s);
enum ca_phase ca_phase(const struct server *s);
/* Starts a rotation: a new CA, trusted beside the one that issues. SW_EEXIST when one is
 * under way. */
int ca_rotate(struct server *s, char *err, size_t errlen);
/* A rotation's next step, when the systems allow it; 1 when the server's own certificate
 * is not the issuing CA's (it must be issued again and served: main.c restarts). */
int ca_progress(struct server *s);
/* What a heartbeat's reply tells `sys` of the site's CAs: the bundle, when it trusts
 * another; to renew, when its certificate is not the issuing CA's. */
void ca_reply(struct server *s, const struct system *sys, json_t *reply);
/* GET /v1/ca/status's body. */
json_t *ca_status(struct server *s);
/* Where the site's CAs stand, for /metrics. */
struct ca_summary {
	enum ca_phase phase;
	int64_t not_after; /* the issuing CA's end (ms) */
	size_t systems, trusting, reissued;
};
void ca_summarize(const struct server *s, struct ca_summary *out);
/* A warning for people when the issuing CA nears its end, or "". */
void ca_note(const struct server *s, int64_t now, char *out, size_t len);

/* site.c */
int site_init(int argc, char **argv);
int site_certs_check(struct server *s, char *err, size_t errlen);
/* The site folder's admin certificate issued again for its key when it is due (two
 * thirds of its life, or a CA other than the issuing one's); warned of if that fails. */
void site_admin_check(struct server *s);
/* 1 when the server's certificate is past two thirds of its life (site_certs_check()
 * would issue it again), 0 otherwise or when it cannot be read. */
int site_cert_due(struct server *s);
int site_renew_admin(const char *dir);

/* registry.c */
int registry_load(struct server *s, char *err, size_t errlen);
void registry_free(struct server *s);
/* A heartbeat from `sys`, heard from `address` (its metering server, if it runs one, at
 * `meter_address`; its certificate issued by the CA `cert_ca`): the system's record
 * follows it, and what `hb` owned is the system's. */
void registry_heard(struct server *s, struct system *sys, struct sw_heartbeat *hb,
		    const char *address, const char *meter_address, const char *cert_ca);
/* Changes whenever a system's roles or metering server's address change, or a system is
 * removed: what is made of those (metering.c's list of metering servers) is made again
 * when it has moved on. */
uint64_t registry_generation(const struct server *s);
/* Whether the server wants `role` on `sys`. */
int registry_has_role(const struct system *sys, const char *role);
/* The serials of removed systems' certificates, for the servers agents reach (license
 * servers, distribution points) to refuse too. */
json_t *registry_revoked_list(const struct server *s);
#define DP_ROLE "distribution-point"
int registry_flush(struct server *s);
const char *registry_health(const struct server *s, const struct system *sys, int64_t now);
/* A system whose agent certificate is this close to its end has not renewed it. */
#define REGISTRY_CERT_WARN_MS ((int64_t)30 * 86400 * 1000)
/* How the system's clock stands against the site's certificates; `note` gets what to do
 * about it, or "" when it is fine. */
enum sw_clock_state registry_clock(const struct server *s, const struct system *sys, int64_t now,
				   char *note, size_t len);
/* A change to the registry: written through the write queue, then memory follows, then
 * `done` is called on the loop with `rc` and `err` set (and what the kind gives back);
 * a removed system leaves memory just after its `done`. The caller owns `op` and frees
 * it from `done`. */
enum reg_kind {
	REG_TOKEN_CREATE, /* in: ttl_s, uses; out: token, token_id, expires_at */
	REG_TOKEN_CHECK,  /* in: secret; whether it may enroll, without using it */
	REG_TOKEN_LIST,	  /* out: list, the tokens (never their secrets), newest first */
	REG_TOKEN_REVOKE, /* in: token_id; its unused uses are refused from now on */
	REG_ENROLL,	  /* in: secret, name, address, serial, client_serial, meter_serial,
			     not_after */
	REG_REMOVE,	  /* in: name; revokes every certificate it was issued; out: serial,
			     list (the serials revoked) */
	REG_RENEW,	  /* in: name, prev_serial (the caller's), serial, client_serial,
			     meter_serial, not_after */
	REG_ROLES,	  /* in: name, roles, add */
};
/* A token's name for people: the start of the SHA-256 of its secret, which is what the
 * database keeps; it tells nothing of the secret. */
#define REG_TOKEN_ID_HEX 12
struct reg_op {
	enum reg_kind kind;
	char name[64], address[300], serial[41], client_serial[41];
	char meter_serial[41], prev_serial[41];
	int64_t not_after; /* REG_ENROLL, REG_RENEW: of the agent certificate (ms) */
	char secret[SW_TOKEN_SECRET_HEX + 1], pin[65], token[SW_TOKEN_LEN + 1];
	char token_id[REG_TOKEN_ID_HEX + 1];
	int64_t ttl_s, uses, expires_at, enrolled_at;
	json_t *roles; /* REG_ROLES: role names, the caller's */
	json_t *list;  /* REG_TOKEN_LIST, REG_REMOVE: the caller's once `done` is called */
	int add;
	int rc;
	char err[256];
	void (*done)(struct server *s, struct reg_op *op);
	void *arg;
};
/* Non-zero, with `err` set and `done` not called, when refused at once. */
int registry_submit(struct server *s, struct reg_op *op);
int registry_is_revoked(void *arg, const char *serial);

/* dbq.c: writes off the loop, one at a time, in order, on a connection of their own.
 * `run(db, arg)` works on the thread pool with the connection it is given; `done(s, arg)`
 * follows on the loop. Before it is open (at start-up) and once detached (at shutdown,
 * or before the database file is replaced) jobs run on the loop's own connection, and
 * `done` at once. */
#define DBQ_SLOW_MS 10000 /* a job slower than this is logged */
typedef void (*dbq_run_fn)(struct sw_db *db, void *arg);
typedef void (*dbq_done_fn)(struct server *s, void *arg);
struct dbq_job;
int dbq_open(struct server *s, char *err, size_t errlen);
int dbq_push(struct server *s, unsigned bound_ms, dbq_run_fn run, dbq_done_fn done, void *arg);
void dbq_detach(struct server *s);
/* Detaches, waits for the job in flight, and runs what is queued on the loop; not from
 * inside the loop (it runs it). */
void dbq_drain(struct server *s);
/* Jobs queued and not yet started. */
size_t dbq_length(const struct server *s);

/* control.c */
int control_start(struct server *s, char *err, size_t errlen);
int control_push_roles(struct server *s, struct system *sys, struct sw_http_req *req,
		       const char *role, int add, unsigned timeout_ms);
int control_service(struct server *s, struct system *sys, struct sw_http_req *req,
		    const char *service, const char *action, unsigned timeout_ms, unsigned lines);

/* The server's own call to an agent, with its deadline; `body` is consumed. */
int control_call(struct server *s, struct system *sys, const char *method, const char *path,
		 json_t *body, unsigned timeout_ms, sw_http_done done, void *arg);
/* Why a call failed: the transfer's reason, or the agent's {"error": …}. */
void control_error(const struct sw_http_result *res, char *out, size_t len);

/* channel.c: commands to agents over the connection each agent holds open. An agent's
 * poll (POST /v1/agent/poll, routed by api.c) is taken in three steps: */
struct chan;
/* whether the server takes polls now (not stopping, the loop not running late);
 * non-zero when the poll was answered 503; */
int channel_admit(struct server *s, struct sw_http_req *req);
/* the poll of `sys` replaces any it held; NULL when answered (out of memory); */
struct chan *channel_polled(struct server *s, struct system *sys, struct sw_http_req *req);
/* its answers are taken and the poll held for commands, or answered at once with
 * `heartbeat`, the reply to the heartbeat it carried (consumed; NULL if none). */
void channel_hold(struct chan *ch, struct sw_http_req *req, const struct sw_poll *poll,
		  json_t *heartbeat);
/* Sends a command to the agent of `sys`: `done` gets its answer, or at `timeout_ms` a
 * failure that says whether it was delivered; never inside this call. `body` is
 * consumed. Non-zero (and `done` not called) only when out of memory. */
int channel_call(struct server *s, struct system *sys, const char *method, const char *path,
		 json_t *body, unsigned timeout_ms, sw_http_done done, void *arg);
/* Whether the agent of `sys` has polled lately (or polls now). */
int channel_connected(const struct server *s, const struct system *sys);
/* The system goes (removed, or the server stops): its poll and commands are answered. */
void channel_forget(struct server *s, struct system *sys);
/* Starts watching how late the loop runs: while it runs late, polls are shed. */
void channel_start(struct server *s);
void channel_stop(struct server *s);

/* upgrade.c (the rest of the upgrade's parts are declared in upgrade.h) */
struct upgrade;
int upgrade_load(struct server *s, char *err, size_t errlen);
void upgrade_free(struct server *s);
/* A heartbeat from `sys`: a deferred system that reports its old version is upgraded. */
void upgrade_heard(struct server *s, struct system *sys);
/* The site's changes that an upgrade in flight hears of. */
void upgrade_system_removed(struct server *s, const char *name);
void upgrade_system_enrolled(struct server *s, struct system *sys);
void upgrade_role_changed(struct server *s, struct system *sys, const char *role, int add);

/* upgrade_api.c */
void upgrade_post(struct sw_http_req *req, void *arg);
void upgrade_check(struct sw_http_req *req, void *arg);
/* POST /v1/packages: a package uploaded into the site's store; answers its hash. */
void upgrade_package_post(struct sw_http_req *req, void *arg);
void upgrade_get(struct sw_http_req *req, void *arg);
void upgrade_action(struct sw_http_req *req, void *arg);

/* package.c */
void package_get(struct sw_http_req *req, void *arg);
void package_signing_key(struct sw_http_req *req, void *arg);

/* metering.c */
void metering_get_products(struct sw_http_req *req, void *arg);
void metering_post_product(struct sw_http_req *req, void *arg);
void metering_put_product(struct sw_http_req *req, void *arg);
void metering_delete_product(struct sw_http_req *req, void *arg);
void metering_exclude(struct sw_http_req *req, void *arg);
void metering_get_config(struct sw_http_req *req, void *arg);
/* Tells every metering server at once of certificates just revoked (a removal). */
void metering_revoked(struct server *s, json_t *serials);
/* Tells every metering server to fetch its configuration now (products or groups
 * changed); one that is away learns it at its next poll. */
void metering_config_changed(struct server *s);
void metering_post_usage(struct sw_http_req *req, void *arg);
void metering_get_usage(struct sw_http_req *req, void *arg);
json_t *metering_meter_urls(struct server *s, json_t **names);

/* licenses.c: who holds what, across every metering server, and reclaim */
/* A loan an administrator wrote off, told to its machine until it would have ended. */
struct written_off {
	char system[64];
	int64_t until_ms;
};
/* Loads the loans written off and not yet ended. */
int licenses_load(struct server *s, char *err, size_t errlen);
void licenses_free(struct server *s);
/* The loans written off on `system` that have not ended, as an array of lease ids; NULL
 * for none. */
json_t *licenses_written_off(struct server *s, const char *system);
void licenses_get(struct sw_http_req *req, void *arg);
/* inventory.c: POST /v1/inventory (agents), GET /v1/inventory/NAME, GET /v1/software */
void inventory_post(struct sw_http_req *req, void *arg);
void inventory_get(struct sw_http_req *req, void *arg);
void inventory_software(struct sw_http_req *req, void *arg);
void inventory_license_report(struct sw_http_req *req, void *arg);
/* collections.c: GET|POST|DELETE /v1/collections[/NAME[/members]] */
void collections_get(struct sw_http_req *req, void *arg);
void collections_post(struct sw_http_req *req, void *arg);
void collections_delete(struct sw_http_req *req, void *arg);
/* The members of collection `name` as they stand: done(s, members, 0, NULL, arg) with an
 * array of system names, or done(s, NULL, rc, why, arg). */
typedef void (*collections_resolved)(struct server *s, const json_t *members, int rc,
				     const char *err, void *arg);
int collections_resolve(struct server *s, const char *name, collections_resolved done, void *arg);
/* deploy.c: software distribution (siteward deploy) */
int deploy_load(struct server *s, char *err, size_t errlen);
void deploy_free(struct server *s);
void deploy_content_post(struct sw_http_req *req, void *arg);
void deploy_content_get(struct sw_http_req *req, void *arg);
void deploy_post(struct sw_http_req *req, void *arg);
void deploy_get(struct sw_http_req *req, void *arg);
void deploy_action(struct sw_http_req *req, void *arg);
/* exec.c: POST /v1/exec, a command on every member of a collection (administrators) */
void exec_post(struct sw_http_req *req, void *arg);
void licenses_reclaim(struct sw_http_req *req, void *arg);
struct sw_product;
/* A usage record's product: as recorded, or the product its program runs as among `n`,
 * as the license servers choose. NULL when none. */
const char *metering_attribute(const struct sw_product *const *v, size_t n, const json_t *r);
int64_t metering_cutoff(const struct server *s);
int metering_summarize(struct server *s);

/* groups.c: named groups of users and hosts (lib/group.h) */
/* A request may name a group's most members, each of the longest name, escaped. */
#define GROUPS_BODY_MAX (2 * 1024 * 1024)
/* Every group (or the one named `name`, NULL: all) as {"name", "users", "hosts"},
 * sorted by name, members sorted too; with `full`, "created_at" and "created_by" as
 * well. NULL on failure, with the reason in `err`. For the write queue's jobs, inside a
 * transaction of theirs, so that its reads agree. */
json_t *groups_read(struct sw_db *db, const char *name, int full, char *err, size_t errlen);
void groups_get(struct sw_http_req *req, void *arg);
void groups_post(struct sw_http_req *req, void *arg);
void groups_delete(struct sw_http_req *req, void *arg);

/* admins.c: named administrators, their roles, and the audit log */
/* `record_first`: the site folder's own administrator is recorded if it is not yet (not
 * by a check, which changes nothing). */
int admins_load(struct server *s, int record_first, char *err, size_t errlen);
void admins_free(struct server *s);
/* The HTTP server's admin_level: "admin", "operator", "viewer", or NULL (no such
 * administrator, or removed). */
const char *admins_level(void *arg, const struct sw_identity *id);
/* The HTTP server's audit hook (see sw_http_server_opts.audit). */
int admins_audit(void *arg, struct sw_http_req *req, unsigned status, const char *body,
		 int may_hold);
void admins_post(struct sw_http_req *req, void *arg);
void admins_get(struct sw_http_req *req, void *arg);
void admins_delete(struct sw_http_req *req, void *arg);
void admins_get_audit(struct sw_http_req *req, void *arg);

/* api.c */
int api_start(struct server *s, char *err, size_t errlen);
/* The API's routes, which the console's port serves too. */
const struct sw_http_route *api_route_table(size_t *n);

/* console.c: the web console's port ([console] listen), started by api_start() with the
 * API's options; nothing when it is not configured. */
int console_start(struct server *s, const struct sw_http_server_opts *api, char *err,
		  size_t errlen);
void console_stop(struct server *s);
void console_free(struct server *s);

#endif

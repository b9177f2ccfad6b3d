/*
 * The messages agents, the CLI and the server exchange, and their checked parsers.
 * A parser validates every field's type and size and never keeps fields it does not
 * know; strings it returns point into the parsed JSON.
 */
#ifndef SW_PROTO_H
#define SW_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* An enrollment token is "<secret>.<pin>": 32 hex digits of secret, then the first 32
 * hex digits of the SHA-256 of the site CA certificate, so the agent can tell it is
 * talking to the right server before it sends anything. */
#define SW_TOKEN_SECRET_HEX 32
#define SW_TOKEN_PIN_HEX    32
#define SW_TOKEN_LEN	    (SW_TOKEN_SECRET_HEX + 1 + SW_TOKEN_PIN_HEX)

/* Splits a token into its secret and CA pin (each NUL-terminated), or SW_EINVAL. */
int sw_proto_token_split(const char *token, char secret[SW_TOKEN_SECRET_HEX + 1],
			 char pin[SW_TOKEN_PIN_HEX + 1]);

/* POST /v1/enroll */
struct sw_enroll_req {
	const char *token;
	const char *name;
	const char *csr;
	const char *address;	/* HOST:PORT an agent of old listens on, or NULL */
	const char *client_csr; /* optional: for the machine's metering client certificate */
	const char *meter_csr;	/* optional: for its metering server's certificate */
};
int sw_proto_enroll_parse(const json_t *j, struct sw_enroll_req *out, char *err, size_t errlen);

/* POST /v1/heartbeat. `facts`, `roles` and `services` are new values holding only known,
 * checked fields (the caller owns them). */
struct sw_heartbeat {
	const char *version;
	const char *address; /* HOST:PORT an agent of old listens on, or NULL (it polls) */
	json_t *facts;
	json_t *roles;		   /* checked copy: array of role names, or NULL if not sent */
	json_t *services;	   /* checked copy: array of service states, or NULL if not sent */
	const char *meter_address; /* HOST:PORT of the system's metering server, or NULL */
	const char *dp_address;	   /* HOST:PORT of its distribution point, or NULL */
	int64_t now;		   /* the agent's wall clock in ms, 0 if not sent */
	const char *ca_id; /* the id of the CA bundle it trusts (sw_pki_bundle_id()), or NULL */
};

/* 1 for a role siteward knows: software-metering, distribution-point, test. */
int sw_proto_role_known(const char *role);
/* Checks an array of role names: known, no repeats, at most 32. */
int sw_proto_roles_check(const json_t *roles, char *err, size_t errlen);

/* A service's state as agents report it; read from the wire once, with
 * sw_svc_state_parse(), and compared as the enum everywhere else. */
enum sw_svc_state {
	SW_SVC_STOPPED,
	SW_SVC_STARTING,
	SW_SVC_RUNNING,
	SW_SVC_STOPPING,
	SW_SVC_FAILED,
	SW_SVC_STUCK,
	SW_SVC_UNKNOWN, /* not a state, or none given */
};
/* The state a name gives; SW_SVC_UNKNOWN for NULL or any other string. */
enum sw_svc_state sw_svc_state_parse(const char *name);
/* The name of a state ("stopped", ...; "unknown" for SW_SVC_UNKNOWN). */
const char *sw_svc_state_name(enum sw_svc_state s);

/* An upgrade run's state, as the server keeps it and the API reports it. */
enum sw_run_state {
	SW_RUN_RUNNING,
	SW_RUN_ROLLING_BACK,
	SW_RUN_INTERRUPTED, /* the server stopped in the middle; resume continues it */
	SW_RUN_DONE,
	SW_RUN_DEFERRED, /* finished; some systems are upgraded when they come back */
	SW_RUN_FAILED,
	SW_RUN_ROLLED_BACK,
	SW_RUN_UNKNOWN,
};
enum sw_run_state sw_run_state_parse(const char *name);
const char *sw_run_state_name(enum sw_run_state s);

/* A system's outcome in an upgrade run. */
enum sw_sys_state {
	SW_SYS_PENDING,
	SW_SYS_ACTIVE,
	SW_SYS_UPGRADED,
	SW_SYS_DEFERRED,
	SW_SYS_FAILED,
	SW_SYS_UNCHANGED,
	SW_SYS_ROLLED_BACK,
	SW_SYS_REMOVED, /* removed from the site during the run */
	SW_SYS_UNKNOWN,
};
enum sw_sys_state sw_sys_state_parse(const char *name);
const char *sw_sys_state_name(enum sw_sys_state s);
int sw_proto_heartbeat_parse(const json_t *j, struct sw_heartbeat *out, char *err, size_t errlen);
/* A checked copy of one service's state as an agent reports it (in a heartbeat, or in
 * its answer to a service command or a change of roles), holding only known fields;
 * NULL with the reason in `err`. */
json_t *sw_proto_service_parse(const json_t *v, char *err, size_t errlen);
/* The same for an array of at most 64 of them. */
json_t *sw_proto_services_parse(const json_t *arr, char *err, size_t errlen);

/* Frees what a parsed heartbeat owns. */
void sw_proto_heartbeat_clear(struct sw_heartbeat *hb);

/* POST /v1/tokens: {"ttl": seconds, "uses": count}; ttl 1 s .. 30 days, default 1 h;
 * uses 1 .. SW_TOKEN_USES_MAX, default 1 (how many machines the token may enroll). */
#define SW_TOKEN_TTL_MAX  (30 * 24 * 3600)
#define SW_TOKEN_USES_MAX 100000
struct sw_token_req {
	int64_t ttl_s, uses;
};
int sw_proto_token_req_parse(const json_t *j, struct sw_token_req *out, char *err, size_t errlen);

/* POST /v1/upgrades and /v1/upgrades/check on the server: the administrator's run. */
struct sw_upgrade_req {
	const char *package;	  /* SHA-256 (64 lowercase hex) of a package in the site's
				   * store, put there by POST /v1/packages (borrowed) */
	unsigned parallel;	  /* 1..1000, default 5 */
	unsigned stop_timeout_ms; /* 100 ms .. 1 h, default 30 s */
	int max_failures;	  /* -1 (no bound, the default) .. 1000000 */
	char on_stuck[16];	  /* defer (default), kill, remove-role, fail */
	int strict;		  /* warnings stop the run too */
};
int sw_proto_upgrade_req_parse(const json_t *j, struct sw_upgrade_req *out, char *err,
			       size_t errlen);

/* POST /v1/upgrade/stage on an agent: which package to stage, from where. */
#define SW_STAGE_URL_MAX     1000
#define SW_STAGE_PACKAGE_MAX ((int64_t)4 << 30)
struct sw_stage_req {
	const char *version; /* a valid version (borrowed, as the strings below) */
	const char *sha256;  /* 64 lowercase hex digits */
	const char *url;     /* https://…, at most SW_STAGE_URL_MAX bytes */
	int64_t size;	     /* 1 .. SW_STAGE_PACKAGE_MAX */
	int64_t deadline_ms; /* 0 if none */
};
int sw_proto_stage_req_parse(const json_t *j, struct sw_stage_req *out, char *err, size_t errlen);

/* POST /v1/agent/poll. `answers` and `running` point into the parsed object, checked:
 * each answer {"id", "status" 100-599, "body": the reply's JSON text}, each running id a
 * string; NULL when absent. A poll may carry the agent's heartbeat (as POST
 * /v1/heartbeat's body); then `has_heartbeat` is set and `heartbeat` must be cleared
 * with sw_proto_heartbeat_clear. */
#define SW_POLL_MAX_IDS 1000
/* While it runs commands or has answers on their way, an agent asks to be held no
 * longer than this: an answer waits at most this long for the poll that carries it. */
#define SW_POLL_ANSWER_MS   100
#define SW_COMMAND_ID_MAX   39
#define SW_POLL_HOLD_MAX_MS 600000
#define SW_HTTP_MAX_ANSWER  (4 * 1024 * 1024)
struct sw_poll {
	json_t *answers, *running;
	int64_t hold_ms;
	int has_heartbeat;
	struct sw_heartbeat heartbeat;
};
int sw_proto_poll_parse(const json_t *j, struct sw_poll *out, char *err, size_t errlen);
/* The reply to a poll, as the agent reads it: every command's fields checked. */
int sw_proto_commands_check(const json_t *j, char *err, size_t errlen);

/* The serials of removed systems' certificates, as the site server sends them to the
 * servers that agents reach (license servers, distribution points): lowercase hex, at
 * most SW_MAX_REVOKED. NULL or null: *out is NULL, none. */
#define SW_MAX_REVOKED 200000
struct sw_strmap;
int sw_proto_revoked_parse(const json_t *arr, struct sw_strmap **out, char *err, size_t errlen);

#endif

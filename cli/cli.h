/* siteward: the administrator's command line, a client of the server's API. */
#ifndef CLI_H
#define CLI_H

#include <jansson.h>
#include <limits.h>

/* How much longer than --timeout the CLI waits for the server's own answer. */
#define CLI_MARGIN_MS 800

struct cli {
	const char *site_arg; /* --site DIR or $SITEWARD_SITE, NULL if neither */
	char site[PATH_MAX];  /* the site folder holding admin.crt, admin.key, ca.crt */
	char url[320];	      /* https://HOST:PORT of the server */
	int json;	      /* --json: print the API's object */
	unsigned timeout_ms;
};

/* client.c */
int client_setup(struct cli *c, const char *site);
/* Calls the server; returns 0 and the reply object on 2xx, otherwise prints the reason
 * in one line and returns 1. */
int client_call(const struct cli *c, const char *method, const char *path, json_t *body,
		json_t **reply);
/* The same without printing: 0 on 2xx; otherwise 1 with the reason in `err`, the HTTP
 * status in *status (0 when the server was not reached) and its object, if any, in
 * *reply for the caller to free. */
int client_request(const struct cli *c, const char *method, const char *path, json_t *body,
		   long *status, json_t **reply, char *err, size_t errlen);
/* An event stream followed until it ends: each event's data, a JSON object, goes to
 * `on_event` (its strings made printable unless --json), which returns non-zero to end
 * the stream there; `on_tick`, if set, runs every `tick_ms` meanwhile. */
struct client_stream {
	int (*on_event)(const char *type, json_t *data, void *arg);
	void (*on_tick)(void *arg);
	unsigned tick_ms;
	void *arg;
};
/* GET `path` as an event stream, for at most `total_ms`, given up after `idle_ms`
 * without a byte. 0 once a stream has begun and ended (however it ended: `err` says
 * why when it broke); 2 when what it carried was unreadable (`err` says how). Else 1:
 * *status 0 when the server was not reached (`err` says why), or the status of an
 * answer that was no stream, its object in *reply (the caller's to free) and, when not
 * 2xx, its error in `err`. */
int client_stream(const struct cli *c, const char *path, unsigned total_ms, unsigned idle_ms,
		  const struct client_stream *cs, long *status, json_t **reply, char *err,
		  size_t errlen);
/* Sends the file `file` whole as the body of a POST to `path`; as client_call. */
int client_upload(const struct cli *c, const char *path, const char *file, json_t **reply);
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* --since: YYYY-MM-DD (UTC) or a number of days back, like 7d, as ms since the epoch;
 * SW_EINVAL when it is neither. */
int cli_parse_since(const char *s, long long *ms);
void print_json(const json_t *j);

/* admin.c */
int cmd_admin(struct cli *c, int argc, char **argv);
int cmd_audit(struct cli *c, int argc, char **argv);

/* ca.c */
int cmd_ca(struct cli *c, int argc, char **argv);

/* cert.c */
int cmd_cert(struct cli *c, int argc, char **argv);

/* token.c */
int cmd_token(struct cli *c, int argc, char **argv);

/* services.c */
int cmd_role(struct cli *c, int argc, char **argv);
int cmd_service(struct cli *c, int argc, char **argv);

/* group.c */
int cmd_group(struct cli *c, int argc, char **argv);

/* license.c */
int cmd_license(struct cli *c, int argc, char **argv);
int cmd_inventory(struct cli *c, int argc, char **argv);
int cmd_collection(struct cli *c, int argc, char **argv);
int cmd_exec(struct cli *c, int argc, char **argv);
int cmd_deploy(struct cli *c, int argc, char **argv);
int cmd_software(struct cli *c, int argc, char **argv);

/* metering.c */
int cmd_product(struct cli *c, int argc, char **argv);
int cmd_usage(struct cli *c, int argc, char **argv);

/* systems.c */
int cmd_systems(struct cli *c, int argc, char **argv);

/* upgrade.c */
int cmd_upgrade(struct cli *c, int argc, char **argv);

/* package.c: works from the site folder alone (c->site_arg), without the server. */
int cmd_package(struct cli *c, int argc, char **argv);

#endif

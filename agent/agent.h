/* siteward-agent: runs on every managed machine. */
#ifndef AGENT_H
#define AGENT_H

#include "conf.h"
#include "http_client.h"
#include "http_server.h"
#include "supervisor.h"

#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <uv.h>

struct agent {
	uv_loop_t *loop;
	char dir[PATH_MAX];
	char name[64];
	char server[300]; /* https://HOST:PORT */
	char listen[300];
	char meter_listen[300]; /* where the meter service listens, if it runs here */
	struct sw_conf *conf;
	struct sw_http_server *http;
	struct sw_http_client *client;
	char *ca_pem, *cert_pem, *key_pem;
	unsigned heartbeat_s;	     /* as the server last said */
	unsigned request_timeout_ms; /* bound on each call to the server */
	unsigned backoff_ms;	     /* current retry delay while the server is away */
	int server_reachable;	     /* for logging only changes of state */
	int in_flight;
	int changed; /* something to report since the heartbeat in flight was sent */
	int stopping;
	int usage_in_flight;
	json_t *meters; /* metering servers as last written to meters.json */
	struct passive *passive;
	unsigned passive_ms; /* how often running programs are scanned; 0: never */
	/* shutting down: late answers are ignored */ /* a heartbeat is on its way */
	int64_t last_heartbeat_ok;		      /* ms since the epoch, 0 if never */
	struct supervisor *sup;
	json_t *roles; /* the roles the server wants here */
	uv_timer_t heartbeat_timer;
	uv_signal_t sigint, sigterm;
	int64_t started_ms;
};

/* enroll.c */
int enroll_main(int argc, char **argv);

/* facts.c */
json_t *facts_collect(const struct agent *a);

/* heartbeat.c */
void heartbeat_start(struct agent *a);
void heartbeat_stop(struct agent *a);
/* Sends a heartbeat soon, to report a change without waiting for the interval. */
void heartbeat_soon(struct agent *a);

/* roles.c */
int roles_apply(struct agent *a, const json_t *wanted);
void roles_load(struct agent *a);
int roles_check_config(struct agent *a, char *err, size_t errlen);

/* passive.c */
struct passive *passive_start(struct agent *a, unsigned interval_ms);
void passive_stop(struct passive *p);
/* The server's products_version from a heartbeat reply: a change means a new fetch. */
void passive_products_version(struct passive *p, const json_t *version);

/* usage.c */
void usage_upload(struct agent *a);
/* Makes usage-cache/ a drop box every local user's siteward-run can write into. */
void usage_cache_prepare(struct agent *a);
void usage_meters_save(struct agent *a, json_t *meters);

/* api.c */
int api_start(struct agent *a, char *err, size_t errlen);

#endif

/*
 * The agent's supervisor: runs role services as children in their own process group,
 * restarts them when they crash, and stops them by escalation — SIGTERM to the group,
 * a grace period, SIGKILL, a last bounded wait, then "stuck" if anything survived.
 * Every wait is a timer on the loop; nothing here blocks.
 */
#ifndef SUPERVISOR_H
#define SUPERVISOR_H

#include "proto.h"

#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

enum svc_restart { RESTART_ALWAYS, RESTART_ON_FAILURE, RESTART_NEVER };

#define SVC_MAX_ARGS 32

struct svc_def {
	char name[64];
	char role[64];
	char *argv[SVC_MAX_ARGS + 1]; /* owned; NULL-terminated */
	char *env[SVC_MAX_ARGS + 1];  /* extra KEY=VALUE, owned */
	char cwd[PATH_MAX];	      /* "" for the agent's folder */
	char user[64];		      /* "" to run as the agent's user */
	enum svc_restart restart;
	unsigned stop_timeout_ms;  /* grace between SIGTERM and SIGKILL */
	unsigned restart_delay_ms; /* first delay before a restart; doubles per crash */
};

struct supervisor;
struct service;

/* Called when a service settles or the wait's deadline passes; `svc` may be NULL if the
 * service was removed meanwhile. */
typedef void (*svc_wait_fn)(struct service *svc, void *arg);

struct supervisor *supervisor_new(uv_loop_t *loop, const char *dir, void (*on_change)(void *),
				  void *arg);
/* Stops watching; leaves services running (they are found again at the next start). */
void supervisor_free(struct supervisor *sup);

/* Adds a service (taking the definition's strings), stopped. If a process recorded by
 * an earlier agent is still alive, it is adopted: supervised again, not restarted. A
 * service of that name still being removed is kept instead, with the new definition,
 * and its stop goes on. */
struct service *supervisor_add(struct supervisor *sup, struct svc_def *def);
struct service *supervisor_find(struct supervisor *sup, const char *name);
struct service *supervisor_first(struct supervisor *sup);
struct service *supervisor_next(struct service *svc);
/* Stops the service if needed and forgets it once stopped (or stuck). */
void supervisor_remove(struct supervisor *sup, struct service *svc);
/* Every service as a JSON array. */
json_t *supervisor_json(struct supervisor *sup);
/* Stops processes an earlier agent recorded for services that were not added again. */
void supervisor_stop_leftovers(struct supervisor *sup);

void service_start(struct service *svc);
void service_stop(struct service *svc);
/* A stop with its own grace (negative: the service's stop_timeout). With `kill` 0 there
 * is no SIGKILL: a service still running after the grace is left running, wanted
 * running, with the reason "timed out after S s waiting for exit". */
void service_stop_with(struct service *svc, int64_t grace_ms, int kill);
void service_restart(struct service *svc);
/* Calls fn once the service is in a settled state (not starting or stopping) or after
 * timeout_ms, whichever is first. */
void service_wait(struct service *svc, unsigned timeout_ms, svc_wait_fn fn, void *arg);
json_t *service_json(const struct service *svc);
const char *service_name(const struct service *svc);
const char *service_role(const struct service *svc);
enum sw_svc_state service_state(const struct service *svc);
int service_wants_running(const struct service *svc);
/* 1 while a service whose role went is being stopped, to be forgotten. */
int service_removing(const struct service *svc);
/* The last `lines` lines of the service's log (caller frees). */
char *service_log_tail(const struct service *svc, unsigned lines);

void svc_def_clear(struct svc_def *def);

#endif

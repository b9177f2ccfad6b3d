/*
 * The upgrade orchestrator's parts, shared by the files that make it up:
 *   usys.c          one system's machine: the step table and its decisions (pure)
 *   upgrade.c       the run: scheduling, the calls to agents, events from the site
 *   upgrade_self.c  the site server's own upgrade and return
 *   ujournal.c      the journal in the site database
 *   preflight.c     what is checked before a run touches anything
 *   upgrade_api.c   the HTTP handlers
 *   package.c       packages stored on the server and served to agents
 */
#ifndef UPGRADE_H
#define UPGRADE_H

#include "server.h"

#include "pkg.h"

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#define TICK_MS		   250	 /* scheduling, and the polling steps */
#define STAGE_BASE_MS	   30000 /* staging on an agent (download, checks, extraction): this… */
#define STAGE_BYTES_MS	   256	 /* …and a millisecond per this many bytes (256 kB/s) */
#define SWITCH_TIMEOUT_MS  10000 /* the agent's answer to a switch */
#define RETURN_TIMEOUT_MS  30000 /* for an agent to come back on the new version */
#define START_TIMEOUT_MS   20000 /* for its services to be running again */
#define VERIFY_TIMEOUT_MS  10000 /* for version and services to be reported right */
#define POLL_TIMEOUT_MS	   2000	 /* one status poll */
#define PROBE_TIMEOUT_MS   3000	 /* one preflight probe */
#define KILL_EXTRA_MS	   4000	 /* SIGKILL and its bounded wait, on the agent */
#define MARGIN_MS	   1500	 /* for an answer to travel */
#define RECONNECT_GRACE_MS 3000	 /* with two heartbeat intervals, the wait for agents */
/* How long after the server starts systems wait for their agents to reconnect: two
 * heartbeat intervals and 3 s (an agent asks again within a second of losing it). */
int64_t upgrade_reconnect_grace_ms(const struct server *s);
#define CATCHUP_DELAY_MS   3000	  /* a deferred system is retried no sooner than this */
#define BACKUP_TIMEOUT_MS  600000 /* pg_dump, VACUUM INTO, or psql restoring */
#define EXTRACT_BASE_MS	   10000  /* the server's own extraction: this, plus… */
#define EXTRACT_BYTES_MS   4096	  /* …a millisecond per this many bytes (4 MB/s) */
#define MIGRATE_TIMEOUT_MS 60000  /* the package's schema migrations */
#define RESTART_MS	   30000  /* for the server to come back after its switch */
#define METERING_ROLE	   "software-metering"

/* A run's state is an enum sw_run_state, and a system's outcome an enum sw_sys_state
 * (lib/proto.h), named as the API reports them. */

/* The site server's own part of a run. */
enum uself {
	SELF_PENDING,
	SELF_STAGED,
	SELF_BACKED_UP,
	SELF_SWITCHED,
	SELF_DONE,
	SELF_FAILED,
	SELF_RESTORED,	    /* rollback: the database is back */
	SELF_SWITCHED_BACK, /* rollback: `current` points at the old version */
	SELF_ROLLED_BACK,
};
extern const char *const uself_names[];

/* A system's step while it is active; the table in usys.c says what each does. */
enum ystep {
	YS_NONE,
	YS_DRAIN,
	YS_STOP,
	YS_STAGE,
	YS_SWITCH,
	YS_WAIT,
	YS_START,
	YS_VERIFY,
	YS_RESTORE,
	YS_ROLLBACK,
	YS_RESTART, /* its old services back up after a failure before the switch */
	YS_DONE,
	YS_COUNT
};

/* What happens to a system: the agent's answers and the site's changes. */
enum yevent {
	YE_BEGIN,	/* the scheduler starts it, or resume continues it */
	YE_ANSWER,	/* the agent answered 2xx; `reply` holds the body */
	YE_REFUSED,	/* the agent answered with an error */
	YE_TIMEOUT,	/* no answer by the call's deadline */
	YE_UNREACHABLE, /* no connection, or it dropped before the answer */
	YE_BUSY,	/* the agent answered 503: busy with it, or going away; ask again */
	YE_TICK,	/* time passes */
	YE_REMOVED,	/* removed from the site: its certificate is revoked */
	YE_REENROLLED,	/* a new enrollment under its name (another certificate) */
	YE_ROLE,	/* the administrator added or removed one of its roles */
	YE_COUNT
};
extern const char *const yevent_names[];

/* What an event carries. */
struct yinfo {
	const json_t *reply;	/* YE_ANSWER */
	const char *why;	/* YE_REFUSED, YE_TIMEOUT, YE_UNREACHABLE: the reason */
	const json_t *services; /* the services its agent last reported */
	const char *role;	/* YE_ROLE */
	int add;		/* YE_ROLE */
};

/* The options of a run that its machines read. */
struct uopts {
	unsigned parallel, stop_timeout_ms;
	uint64_t package_size; /* the staging step's deadline grows with it */
	int max_failures;      /* -1: no bound */
	enum { STUCK_DEFER, STUCK_KILL, STUCK_REMOVE_ROLE, STUCK_FAIL } on_stuck;
	int rollback;
};

/* What the driver must do after an event, besides journaling the system. */
struct yact {
	int call;	/* send the step's request */
	json_t *remove; /* roles to remove from the system (owned) */
	int restore;	/* add back the roles in `removed` */
	int halt;	/* the run stops (the fail policy), for the system's reason */
	int finished;	/* the system reached an outcome */
};

struct usys {
	struct upgrade *u;
	char name[64];
	char from[SW_PKG_VERSION_MAX + 1];
	char serial[41]; /* its certificate when the run picked it */
	enum sw_sys_state state;
	enum ystep step;
	enum sw_sys_state then; /* YS_RESTART ends in this */
	char reason[400];
	char last[300]; /* why the last poll was not yet good */
	int attempts;
	int kill;	      /* this stop escalates to SIGKILL */
	int catchup;	      /* a deferred system, upgraded now that it is back */
	int busy;	      /* a call to its agent is in flight */
	int reachable;	      /* its agent answered the last call */
	int metering;	      /* a metering server when the run picked it: one at a time */
	int dirty;	      /* to journal */
	unsigned gen;	      /* answers to calls of an older generation are dropped */
	uint64_t changed_gen; /* the server's upgrade_gen when it last changed */
	int64_t started_at, finished_at, step_at, deferred_at, deadline;
	int64_t next_poll;
	json_t *times;	 /* step → ms spent */
	json_t *removed; /* roles removed by the remove-role policy, to restore */
};

struct uevent_msg;

struct upgrade {
	struct server *s;
	int64_t id;
	char version[SW_PKG_VERSION_MAX + 1];
	char from[SW_PKG_VERSION_MAX + 1]; /* the server's version before the run */
	char min_version[SW_PKG_VERSION_MAX + 1];
	char sha[65];
	uint64_t size;
	enum sw_run_state state;
	enum uself self;
	char reason[400];
	char backup[PATH_MAX];
	char pending_backup[PATH_MAX]; /* where pg_dump or VACUUM INTO is writing */
	struct uopts o;
	int halted;   /* no system starts any more: the run failed */
	int catchups; /* deferred systems upgraded since the run finished */
	int self_busy;
	int restore_copied;  /* the SQLite backup lies copied beside the live file */
	int self_migrations; /* the package migrates the schema */
	int64_t started_at, finished_at;
	int64_t leg_at;	  /* when this leg (start, resume, rollback) began */
	int64_t bound_ms; /* the leg's worst case, known before it began */
	struct usys *sys;
	size_t nsys;
	struct sw_strmap *index; /* name → its struct usys, for the heartbeat path */
	struct uevent_msg *queue, **queue_tail;
	uv_timer_t tick, kick;
	int timers_started;
	uint64_t changed_gen; /* the server's upgrade_gen when the run's own fields changed */
};

/* usys.c */
const char *ystep_name(enum ystep step);
enum ystep ystep_parse(const char *name);
enum sw_sys_state ystate_parse(const char *name);
/* The request of a step: method and path, NULL when the step sends none. */
const char *ystep_request(enum ystep step, const char **path);
/* The bound of the step's next call at `now`: what is left of its deadline, or one poll. */
unsigned ystep_call_ms(const struct usys *y, int64_t now);
/* Changes the step: times spent, the step's deadline, the log. */
void usys_enter(struct usys *y, const struct uopts *o, enum ystep step, int64_t now);
/* Feeds an event to the machine of `y` at `now`; `act` says what the driver does. */
void usys_event(struct usys *y, const struct uopts *o, enum yevent ev, const struct yinfo *in,
		int64_t now, struct yact *act);
/* The longest one system can take, over every path of the step table. */
int64_t usys_bound_ms(const struct uopts *o);
/* The longest a leg of `metering` + `others` systems can take, the server's part
 * `self_ms` included. */
int64_t usys_run_bound_ms(const struct uopts *o, size_t metering, size_t others, int64_t self_ms);
/* The roles bringing the services named in `failed` ([{"service":…}]), from the services
 * its agent reported; every role with services when `failed` is NULL. */
json_t *usys_roles_of(const json_t *services, const json_t *failed);
/* Every service in `services` running but those of roles in `except`; else 0, and the
 * first that is not in `why`. */
int usys_services_running(const json_t *services, const json_t *except, char *why, size_t len);
const char *usys_target(const struct usys *y);

/* upgrade.c */
void upgrade_run_enter(struct upgrade *u, enum sw_run_state state);
int upgrade_is_active(const struct upgrade *u);
size_t upgrade_count(const struct upgrade *u, enum sw_sys_state st);
void upgrade_halt(struct upgrade *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void upgrade_finish(struct upgrade *u);
void upgrade_kick(struct upgrade *u);
/* The run changed: `y` (NULL: the run's own fields). Those who watch it hear of it. */
void upgrade_changed(struct upgrade *u, struct usys *y);
/* Makes the request of the step `y` is at, with what is left of the step's deadline. */
void upgrade_call_step(struct usys *y);
void upgrade_timers_start(struct upgrade *u);
/* Every enrolled system, in an array the caller frees (NULL-terminated). */
struct system **upgrade_systems_list(struct server *s);
/* A leg begins: its bound from what is left to do. */
void upgrade_leg_begin(struct upgrade *u);
void upgrade_destroy(struct upgrade *u);
/* Starts `y`, or continues it from the step the journal holds. */
void upgrade_sys_begin(struct usys *y);
int upgrade_index_build(struct upgrade *u);

/* upgrade_self.c */
void upgrade_self_step(struct upgrade *u);
int64_t upgrade_self_bound_ms(const struct upgrade *u);
void upgrade_self_enter(struct upgrade *u, enum uself step);

/* ujournal.c */
json_t *ujournal_options(const struct upgrade *u);
/* The run's row as it is now, through the write queue, once what is queued before it is
 * stored. */
void ujournal_run_save(struct upgrade *u);
/* A system's row, through the write queue; with `then_call`, the call of its step
 * follows once it is stored (the system is busy until then). */
void ujournal_sys_save(struct usys *y, int then_call);
/* A run's rows, whole, replacing any under its id: on the loop's connection (the return
 * of a rollback, with the queue detached), or through the queue for a new run that the
 * loop does not know yet; `done` follows on the loop. */
int ujournal_run_insert(struct upgrade *u, char *err, size_t errlen);
int ujournal_run_begin(struct upgrade *u,
		       void (*done)(struct upgrade *u, int rc, const char *err, void *arg),
		       void *arg);
/* The latest run, or NULL with 0 when there is none. */
int ujournal_load(struct server *s, struct upgrade **out, char *err, size_t errlen);

/* preflight.c */
json_t *preflight_site(struct server *s, const struct sw_pkg_manifest *m);
json_t *preflight_system(struct server *s, const struct sw_pkg_manifest *m, struct system *sys,
			 const json_t *disk);
int preflight_count(const json_t *issues, const char *level);
/* Answers `upgrade check`: preflight, each agent probed, and the bound a run would have. */
void preflight_probe(struct server *s, struct sw_http_req *req, struct sw_pkg_manifest *m,
		     int strict, int64_t bound_ms);

/* package.c */
int package_path(const struct server *s, const char *sha, char *out, size_t len);
/* Verifies the administrator's package off the loop and copies it into the site folder
 * by its hash; `done` gets the manifest (the callee's to free) or the reason, on a later
 * turn of the loop, within a deadline that grows with the package's size. */
typedef void (*package_done)(struct server *s, int rc, struct sw_pkg_manifest *m, const char *err,
			     void *arg);
int package_store(struct server *s, const char *src, package_done done, void *arg);
int site_path(const struct server *s, char *out, size_t len, const char *fmt, const char *arg);

#endif

/* siteward-run: the software-metering client that wraps one program. */
#ifndef RUN_H
#define RUN_H

#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct sw_http_client;
struct sw_http_client_opts;

/* siteward-run's own exit statuses (sysexits.h and the shell's), beside the program's. */
enum {
	RUN_EX_USAGE = 64,    /* bad command line */
	RUN_EX_SOFTWARE = 70, /* every metering server answered with an error */
	RUN_EX_TEMPFAIL = 75, /* denied: no license now, or no server and policy deny */
	RUN_EX_CONFIG = 78,   /* the agent's folder is missing or unusable */
	RUN_EX_NOEXEC = 126,  /* the program exists but cannot be executed */
	RUN_EX_NOTFOUND = 127 /* no such program */
};

#define RUN_MAX_METERS 32
#define RUN_URL_MAX    1024

enum run_offline { RUN_OFFLINE_RUN, RUN_OFFLINE_DENY };

/* What the agent's folder says: who we are and whom to ask. */
struct run_config {
	char dir[PATH_MAX];
	char sock[PATH_MAX + 16]; /* the agent's socket: <dir>/agent.sock, or /run/siteward/ */
	char host[64];		  /* [agent] name */
	enum run_offline offline; /* [run] offline */
	char *meters[RUN_MAX_METERS];
	char *meter_names[RUN_MAX_METERS]; /* the system that must answer there, or NULL */
	int nmeters;
	char ca[PATH_MAX + 16], cert[PATH_MAX + 16], key[PATH_MAX + 16];
};

enum lease_outcome {
	LEASE_PENDING,
	LEASE_GRANTED,	 /* run it as our child, heartbeat, check in */
	LEASE_UNMETERED, /* not a registered product: exec it in place */
	LEASE_DENIED,	 /* a server refused a license */
	LEASE_FAILED,	 /* every server that answered answered with an error */
	LEASE_OFFLINE,	 /* no server answered */
	LEASE_BORROWED	 /* a license this user borrowed here covers it (borrow.c) */
};

/* A license checked out from one metering server, and the requests that keep it. */
struct lease {
	enum lease_outcome outcome;
	int meter;	   /* the server being asked, then the one that granted */
	int answered;	   /* some server answered with an HTTP error */
	json_t *id;	   /* the lease as the server named it, sent back as it came */
	char product[256]; /* printable */
	char reason[600];  /* the denial, or the last error, printable */
	unsigned ttl_ms;   /* the lease's lifetime at the server */
	uv_timer_t timer;  /* heartbeats */
	int timer_on;	   /* the timer handle is initialised */
	int heartbeating;  /* a heartbeat awaits its answer */
	int failing;	   /* the last heartbeat did not reach the server */
	int lost;	   /* the server says the lease is gone */
	int checking_in;   /* the check-in awaits its answer */
	int closing;	   /* answers from now on are cancellations */
	/* A denial by one server sends the request to the next, which may have licenses
	 * of its own; only when all deny is the run denied, or with --wait, queued at the
	 * first that denied. */
	int denied_at;	  /* the first server that denied, -1 for none */
	int waiting_pass; /* queued at denied_at */
	char denial[600]; /* its reason, printable */
	char denied_product[256];
	unsigned queue_position;  /* a denial's: where --wait would have put the checkout */
	unsigned denied_position; /* the first denial's */
	int version_asked;	  /* the server answered "version_needed" */
	/* Idleness, reported while the server asks for it (its product has a limit). */
	int64_t idle_limit_s;
	unsigned long long cpu_ticks; /* PROGRAM's and its descendants' CPU time */
	int64_t cpu_changed;	      /* monotonic ms when it last grew */
	int cpu_seen;
	/* Taken back by the server (an administrator's reclaim, or idleness). */
	int reclaimed;
	int run_unlicensed;    /* the product lets PROGRAM run on: the rest is recorded */
	int64_t reclaimed_ms;  /* wall clock */
	uv_timer_t kill_timer; /* the product stops PROGRAM: SIGKILL after the grace */
	int kill_timer_on;
};

/* The program, run as our child. */
struct child {
	pid_t pid;
	int sfd;		/* signalfd: the forwarded signals and SIGCHLD */
	uv_poll_t poll;		/* on sfd */
	int poll_on;		/* the poll handle is initialised */
	sigset_t oldmask;	/* our signal mask at start, the child's */
	int chld_ignored;	/* SIGCHLD was ignored when we started: the child's too */
	int exited;		/* the child has been reaped */
	int status;		/* its exit status, 128+N for signal N */
	unsigned char fds[128]; /* a bitmap of the descriptors open when we started */
	int fds_known;		/* fds could be read from /proc */
};

struct run {
	uv_loop_t *loop;
	struct run_config conf;
	char **argv;	     /* the program and its arguments */
	char exe[256];	     /* the basename of the program, printable */
	char build_id[129];  /* its ELF build ID, "" if it has none */
	char path[PATH_MAX]; /* the file it is */
	char version[65];    /* its package's version, "" for none known */
	int has_version;     /* version has been looked up */
	char user[65];	     /* the invoking user's name, printable */
	char client[33];     /* this run's client id, also the offline record's id */
	char *ticket;	     /* the user ticket metering servers are shown (ticket.c) */
	unsigned wait_ms;
	int verbose;
	struct sw_http_client *http;
	struct lease lease;
	struct child child;
	int64_t start_ms, end_ms; /* wall clock */
};

/* main.c */
/* The printable form of text from a peer or a file (sw_printable): control characters
 * and bytes that are not UTF-8 are shown as \xNN or \uNNNN. */
void run_printable(char *out, size_t outlen, const char *in);
/* Looks up the program's version once (its package's, from dpkg's database), for a
 * license server that needs it or an offline record. */
void run_version(struct run *r);
/* How a client of the metering servers connects: the machine's client identity, the
 * connect bound, the roles a metering server may answer with. */
void run_http_opts(const struct run *r, struct sw_http_client_opts *ho);

/* ticket.c */
/* Gets r->ticket from the agent, or the copy it keeps for this user; SW_ENOTFOUND with
 * the reason in `why` when there is none. */
int ticket_get(struct run *r, char *why, size_t whylen);

/* config.c */
/* Reads the agent's folder into c (freed by config_cleanup, also after a failure). A
 * missing, unreadable or malformed meters.json leaves no servers, said on stderr when it
 * is not simply missing. */
int config_load(struct run_config *c, const char *dir, char *err, size_t errlen);
void config_cleanup(struct run_config *c);

/* lease.c */
/* Starts asking; r->lease.outcome leaves LEASE_PENDING from a loop callback, or at once
 * when there is no server to ask. */
void lease_checkout(struct run *r);
void lease_heartbeat_start(struct run *r);
/* Stops the heartbeats and returns the lease; lease_busy() until it is answered or its
 * 5 s pass. */
void lease_checkin(struct run *r);
int lease_busy(const struct run *r);
void lease_cleanup(struct lease *l);

/* borrow.c */
/* 1 if `s` is one of siteward-run's commands: borrow, return, borrowed. */
int borrow_is_command(const char *s);
/* Runs the command argv[0] with its arguments; the exit status. */
int borrow_command(struct run *r, int argc, char **argv);
/* 1 if a license this user borrowed on this system covers PROGRAM and stands: its
 * license server says so, or, when it does not answer, its signed text checked here. */
int borrow_covers(struct run *r);

/* idle.c */
/* Reads PROGRAM's CPU time; notes when it last grew. */
void idle_sample(struct run *r, int64_t mono);
/* Seconds since PROGRAM last used the processor (0 before the first sample). */
int64_t idle_seconds(const struct run *r, int64_t mono);

/* child.c */
/* First thing in main(): notes the descriptors we were given and blocks the signals
 * we watch. child_watch() reads them on the loop; until PROGRAM starts, one ends us. */
int child_init(struct child *c);
int child_watch(struct run *r);
/* Forks and executes PROGRAM; r->child.exited and .status once the loop reaps it. */
int child_start(struct run *r, char *err, size_t errlen);
/* Becomes PROGRAM; returns only on failure, with its errno. */
int child_exec(struct run *r);
void child_cleanup(struct child *c);

/* usage.c */
/* Writes ADIR/usage-cache/CLIENT.json for a run no server heard of, or for the part of
 * a run after its license was taken back (from r->lease.reclaimed_ms). */
int usage_record(const struct run *r, char *err, size_t errlen);

#endif

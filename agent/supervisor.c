#include "supervisor.h"

#include "json.h"
#include "log.h"
#include "procstat.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define SETTLE_MS	 500		  /* a new process that lives this long is "running" */
#define KILL_WAIT_MS	 3000		  /* after SIGKILL, how long before "stuck" */
#define GROUP_POLL_MS	 50		  /* while stopping: is the process group gone yet */
#define STUCK_POLL_MS	 1000		  /* while stuck: has it finally gone */
#define BACKOFF_FIRST_MS 1000		  /* first restart delay after a crash */
#define BACKOFF_MAX_MS	 30000		  /* restart delays double up to this */
#define BACKOFF_RESET_MS 30000		  /* a run this long forgives earlier crashes */
#define CRASH_LIMIT	 5		  /* this many crashes … */
#define CRASH_WINDOW_MS	 60000		  /* … within this window, and the service has failed */
#define LOG_MAX		 (1024 * 1024)	  /* a service log is rotated past this size */
#define LOG_CHECK_MS	 5000		  /* how often log sizes are checked */
#define STATE_FILE	 "services.state" /* pids and targets, for a restarted agent */

struct waiter {
	struct waiter *next;
	struct service *svc;
	uv_timer_t timer;
	svc_wait_fn fn;
	void *arg;
};

/* One spawned process; outlives its service if the service is freed first. */
struct child {
	uv_process_t proc;
	struct service *svc;
};

/* A process found alive from an earlier agent, watched through a pidfd. */
struct adopted {
	uv_poll_t poll;
	int fd;
	pid_t pid;
	struct service *svc;
};

struct service {
	struct supervisor *sup;
	struct service *next;
	struct svc_def def;
	enum sw_svc_state state;
	int target_running;
	pid_t pid, pgid; /* pid 0: no main process */
	unsigned long long starttime;
	struct child *child;
	struct adopted *adopted;
	uv_timer_t timer;      /* settle, backoff, grace, kill wait */
	uv_timer_t group_poll; /* while stopping or stuck */
	int escalated, was_stuck, removing, handles;
	unsigned grace_ms; /* of the stop under way */
	int no_kill;	   /* the stop under way gives up at its grace instead of SIGKILL */
	int64_t run_started_ms;
	unsigned backoff_ms;
	int64_t crashes[CRASH_LIMIT];
	int ncrashes;
	int have_exit, exit_status, exit_signal;
	char reason[200];
	struct waiter *waiters;
};

struct supervisor {
	uv_loop_t *loop;
	char dir[PATH_MAX];
	struct service *services;
	json_t *saved; /* STATE_FILE as read at start */
	uv_timer_t log_timer;
	void (*on_change)(void *);
	void *arg;
};

static void spawn(struct service *svc);

/* Every handle here carries its owner in data; closing it frees the owner. */
static void free_data(uv_handle_t *h)
{
	free(h->data);
}
static void begin_stop(struct service *svc);
static void check_stopped(uv_timer_t *t);

void svc_def_clear(struct svc_def *def)
{
	for (int i = 0; def->argv[i]; i++)
		free(def->argv[i]);
	for (int i = 0; def->env[i]; i++)
		free(def->env[i]);
	memset(def, 0, sizeof(*def));
}

/* Field 22 of /proc/PID/stat: when the process started, to tell it from a later process
 * that reuses its pid. 0 if there is no such process or it is a zombie. */
static unsigned long long proc_starttime(pid_t pid, char *state, pid_t *pgrp)
{
	struct sw_proc_stat st;

	if (sw_proc_stat_read(pid, &st))
		return 0;
	if (state)
		*state = st.state;
	if (pgrp)
		*pgrp = st.pgrp;
	return st.state == 'Z' || st.state == 'X' ? 0 : st.starttime;
}

static int pid_alive(pid_t pid)
{
	return pid > 0 && proc_starttime(pid, NULL, NULL) != 0;
}

/* Whether any live (non-zombie) process is left in the group. kill(-pgid, 0) alone
 * would count zombies nobody has reaped yet. */
static int group_alive(pid_t pgid)
{
	struct dirent *de;
	DIR *d;
	int alive = 0;

	if (pgid <= 0 || (kill(-pgid, 0) < 0 && errno == ESRCH))
		return 0;
	d = opendir("/proc");
	if (!d)
		return 1;
	while (!alive && (de = readdir(d))) {
		pid_t pg = 0;
		char st = 0;
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		if (proc_starttime(atoi(de->d_name), &st, &pg) && pg == pgid)
			alive = 1;
	}
	closedir(d);
	return alive;
}

static void save_state(struct supervisor *sup)
{
	char path[PATH_MAX + 32], *text;
	json_t *all = json_object();

	for (struct service *s = sup->services; s; s = s->next)
		json_object_set_new(all, s->def.name,
				    json_pack("{sb si si sI}", "target", s->target_running, "pid",
					      (int)s->pid, "pgid", (int)s->pgid, "starttime",
					      (json_int_t)s->starttime));
	text = sw_json_dump(all);
	json_decref(all);
	if (!text)
		return;
	sw_path_join(path, sizeof(path), sup->dir, STATE_FILE);
	if (sw_file_write_atomic(path, text, strlen(text), 0600, NULL, 0))
		sw_warn("cannot record service state in %s", path);
	free(text);
}

static void notify(struct service *svc)
{
	struct waiter **pw = &svc->waiters, *w;
	int settled = svc->state != SW_SVC_STARTING && svc->state != SW_SVC_STOPPING;

	while (settled && (w = *pw)) {
		*pw = w->next;
		uv_timer_stop(&w->timer);
		w->fn(svc, w->arg);
		uv_close((uv_handle_t *)&w->timer, free_data);
	}
	if (svc->sup->on_change)
		svc->sup->on_change(svc->sup->arg);
}

static void set_state(struct service *svc, enum sw_svc_state st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_state(struct service *svc, enum sw_svc_state st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(svc->reason, sizeof(svc->reason), fmt, ap);
	va_end(ap);
	if (svc->state != st)
		sw_info("service %s: %s -> %s (%s)", svc->def.name, sw_svc_state_name(svc->state),
			sw_svc_state_name(st), svc->reason);
	svc->state = st;
}

static void describe_exit(const struct service *svc, char *out, size_t len)
{
	if (!svc->have_exit)
		snprintf(out, len, "exited (status unknown: started by an earlier agent)");
	else if (svc->exit_signal)
		snprintf(out, len, "killed by signal %d", svc->exit_signal);
	else
		snprintf(out, len, "exited with status %d", svc->exit_status);
}

static void on_settled(uv_timer_t *t)
{
	struct service *svc = t->data;

	if (svc->state == SW_SVC_STARTING && pid_alive(svc->pid)) {
		set_state(svc, SW_SVC_RUNNING, "running as pid %d", (int)svc->pid);
		notify(svc);
	}
}

static void on_backoff(uv_timer_t *t)
{
	spawn(t->data);
}

/* The main process ended while nobody asked it to. */
static void crashed(struct service *svc)
{
	char what[96];
	int64_t now = sw_mono_ms();
	int recent = 0;

	describe_exit(svc, what, sizeof(what));
	/* Leave no orphans behind: whatever the main process started goes with it. */
	if (svc->pgid > 0)
		kill(-svc->pgid, SIGKILL);
	if (now - svc->run_started_ms > BACKOFF_RESET_MS) {
		svc->backoff_ms = 0;
		svc->ncrashes = 0;
	}
	svc->crashes[svc->ncrashes++ % CRASH_LIMIT] = now;
	for (int i = 0; i < CRASH_LIMIT && i < svc->ncrashes; i++)
		recent += now - svc->crashes[i] < CRASH_WINDOW_MS;
	if (recent >= CRASH_LIMIT) {
		set_state(svc, SW_SVC_FAILED, "failed: crashed %d times in %d s; last %s", recent,
			  CRASH_WINDOW_MS / 1000, what);
		return;
	}
	if (svc->def.restart == RESTART_NEVER ||
	    (svc->def.restart == RESTART_ON_FAILURE && svc->have_exit && !svc->exit_signal &&
	     svc->exit_status == 0)) {
		set_state(svc, SW_SVC_STOPPED, "%s", what);
		svc->target_running = 0;
		return;
	}
	svc->backoff_ms = svc->backoff_ms ? svc->backoff_ms * 2 : svc->def.restart_delay_ms;
	if (svc->backoff_ms > BACKOFF_MAX_MS)
		svc->backoff_ms = BACKOFF_MAX_MS;
	set_state(svc, SW_SVC_STARTING, "restarting in %.1f s; %s", svc->backoff_ms / 1000.0, what);
	uv_timer_start(&svc->timer, on_backoff, svc->backoff_ms, 0);
}

static void main_exited(struct service *svc)
{
	svc->pid = 0;
	svc->starttime = 0;
	switch (svc->state) {
	case SW_SVC_STOPPING:
	case SW_SVC_STUCK: check_stopped(&svc->group_poll); return;
	case SW_SVC_STARTING:
	case SW_SVC_RUNNING: crashed(svc); break;
	default: break;
	}
	save_state(svc->sup);
	notify(svc);
}

static void on_child_exit(uv_process_t *p, int64_t status, int signal)
{
	struct child *c = p->data;
	struct service *svc = c->svc;

	uv_close((uv_handle_t *)p, free_data);
	if (!svc || svc->child != c)
		return; /* an earlier run whose service moved on */
	svc->child = NULL;
	svc->have_exit = 1;
	svc->exit_status = (int)status;
	svc->exit_signal = signal;
	main_exited(svc);
}

static void adopted_free(struct adopted *a)
{
	uv_poll_stop(&a->poll);
	close(a->fd);
	uv_close((uv_handle_t *)&a->poll, free_data);
}

static void on_adopted_exit(uv_poll_t *h, int status, int events)
{
	struct adopted *a = h->data;
	struct service *svc = a->svc;

	/* A process adopted after this agent re-executed itself is still its child, one
	 * libuv does not know: reap it here, or it stays a zombie. */
	waitpid(a->pid, NULL, WNOHANG);
	adopted_free(a);
	if (!svc)
		return;
	svc->adopted = NULL;
	svc->have_exit = 0;
	main_exited(svc);
}

static int open_log(struct service *svc)
{
	char path[PATH_MAX + 80];

	snprintf(path, sizeof(path), "%s/logs/%s.log", svc->sup->dir, svc->def.name);
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

static void spawn(struct service *svc)
{
	uv_process_options_t o;
	uv_stdio_container_t stdio[3];
	char *env[2 * SVC_MAX_ARGS + 512];
	struct child *c;
	int fd, n = 0, r;

	uv_timer_stop(&svc->timer);
	if (!svc->def.argv[0]) {
		set_state(svc, SW_SVC_FAILED, "cannot start: no command configured");
		notify(svc);
		return;
	}
	for (int i = 0; svc->def.env[i]; i++)
		env[n++] = svc->def.env[i];
	/* the agent's environment, less what the service's own settings replace */
	for (int i = 0; environ[i] && n < (int)SW_ARRAY_LEN(env) - 1; i++) {
		size_t klen = strcspn(environ[i], "=");
		int replaced = 0;
		for (int k = 0; svc->def.env[k] && !replaced; k++)
			replaced = strncmp(svc->def.env[k], environ[i], klen + 1) == 0;
		if (!replaced)
			env[n++] = environ[i];
	}
	env[n] = NULL;
	fd = open_log(svc);
	c = calloc(1, sizeof(*c));
	if (fd < 0 || !c) {
		set_state(svc, SW_SVC_FAILED, "cannot start: cannot open its log: %s",
			  strerror(errno));
		free(c);
		if (fd >= 0)
			close(fd);
		notify(svc);
		return;
	}
	memset(&o, 0, sizeof(o));
	memset(stdio, 0, sizeof(stdio));
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = UV_INHERIT_FD;
	stdio[1].data.fd = fd;
	stdio[2].flags = UV_INHERIT_FD;
	stdio[2].data.fd = fd;
	o.exit_cb = on_child_exit;
	o.file = svc->def.argv[0];
	o.args = svc->def.argv;
	o.env = env;
	o.cwd = svc->def.cwd[0] ? svc->def.cwd : svc->sup->dir;
	/* UV_PROCESS_DETACHED makes the child a session and process-group leader, so a stop
	 * reaches everything it started, and it outlives a crash of the agent. */
	o.flags = UV_PROCESS_DETACHED;
	o.stdio = stdio;
	o.stdio_count = 3;
	if (svc->def.user[0]) {
		struct passwd *pw = getpwnam(svc->def.user);
		if (!pw) {
			close(fd);
			free(c);
			set_state(svc, SW_SVC_FAILED, "cannot start: no user named '%s'",
				  svc->def.user);
			notify(svc);
			return;
		}
		o.uid = pw->pw_uid;
		o.gid = pw->pw_gid;
		o.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
	}
	c->proc.data = c;
	c->svc = svc;
	r = uv_spawn(svc->sup->loop, &c->proc, &o);
	close(fd);
	if (r < 0) {
		uv_close((uv_handle_t *)&c->proc, free_data);
		set_state(svc, SW_SVC_FAILED, "cannot start %s: %s", svc->def.argv[0],
			  uv_strerror(r));
		notify(svc);
		return;
	}
	svc->child = c;
	svc->pid = svc->pgid = c->proc.pid;
	svc->starttime = proc_starttime(svc->pid, NULL, NULL);
	svc->run_started_ms = sw_mono_ms();
	svc->escalated = svc->was_stuck = 0;
	set_state(svc, SW_SVC_STARTING, "started as pid %d", (int)svc->pid);
	uv_timer_start(&svc->timer, on_settled, SETTLE_MS, 0);
	save_state(svc->sup);
	notify(svc);
}

static void service_free(struct service *svc);

static void check_stopped(uv_timer_t *t)
{
	struct service *svc = t->data;

	if (pid_alive(svc->pid) || group_alive(svc->pgid))
		return;
	uv_timer_stop(&svc->timer);
	uv_timer_stop(&svc->group_poll);
	if (svc->was_stuck)
		set_state(svc, SW_SVC_STOPPED, "stopped after being stuck");
	else if (svc->escalated)
		set_state(svc, SW_SVC_STOPPED, "killed after %u s grace", svc->grace_ms / 1000);
	else
		set_state(svc, SW_SVC_STOPPED, "stopped");
	svc->pid = svc->pgid = 0;
	svc->starttime = 0;
	if (svc->removing) {
		notify(svc);
		service_free(svc);
		return;
	}
	if (svc->target_running) {
		spawn(svc); /* a start (or restart) asked for while stopping */
		return;
	}
	save_state(svc->sup);
	notify(svc);
}

static void on_kill_wait(uv_timer_t *t)
{
	struct service *svc = t->data;

	if (!pid_alive(svc->pid) && !group_alive(svc->pgid))
		return;
	svc->was_stuck = 1;
	set_state(svc, SW_SVC_STUCK, "stuck: survived SIGKILL (process group %d)", (int)svc->pgid);
	uv_timer_start(&svc->group_poll, check_stopped, STUCK_POLL_MS, STUCK_POLL_MS);
	notify(svc);
}

/* A stop that may not kill gives up: the service runs on, still supervised and wanted
 * running, and says why. */
static void abandon_stop(struct service *svc)
{
	uv_timer_stop(&svc->group_poll);
	svc->target_running = 1;
	sw_warn("service %s: still running %u ms after SIGTERM; not killing it", svc->def.name,
		svc->grace_ms);
	if (svc->pid)
		set_state(svc, SW_SVC_RUNNING, "timed out after %g s waiting for exit",
			  svc->grace_ms / 1000.0);
	else
		/* the main process went, but what it started did not: nothing is left to
		 * watch for an exit, so it cannot be "running" */
		set_state(svc, SW_SVC_FAILED,
			  "timed out after %g s waiting for exit (its main process exited, "
			  "process group %d did not)",
			  svc->grace_ms / 1000.0, (int)svc->pgid);
	save_state(svc->sup);
	notify(svc);
}

static void on_grace(uv_timer_t *t)
{
	struct service *svc = t->data;

	/* a service whose role went is stopped whatever it takes */
	if (svc->no_kill && !svc->removing) {
		abandon_stop(svc);
		return;
	}
	svc->escalated = 1;
	sw_warn("service %s: still running %u ms after SIGTERM; sending SIGKILL", svc->def.name,
		svc->grace_ms);
	if (svc->pgid > 0)
		kill(-svc->pgid, SIGKILL);
	uv_timer_start(&svc->timer, on_kill_wait, KILL_WAIT_MS, 0);
}

static void begin_stop(struct service *svc)
{
	uv_timer_stop(&svc->timer);
	svc->escalated = 0;
	set_state(svc, SW_SVC_STOPPING, "SIGTERM sent to process group %d", (int)svc->pgid);
	if (svc->pgid > 0) {
		kill(-svc->pgid, SIGTERM);
		/* A frozen process cannot act on SIGTERM until it runs again. */
		kill(-svc->pgid, SIGCONT);
	}
	uv_timer_start(&svc->timer, on_grace, svc->grace_ms, 0);
	uv_timer_start(&svc->group_poll, check_stopped, GROUP_POLL_MS, GROUP_POLL_MS);
	notify(svc);
}

void service_start(struct service *svc)
{
	svc->target_running = 1;
	switch (svc->state) {
	case SW_SVC_STOPPED:
	case SW_SVC_FAILED:
		svc->ncrashes = 0;
		svc->backoff_ms = 0;
		spawn(svc);
		return;
	default: break; /* starting, running: already; stopping, stuck: when it ends */
	}
	save_state(svc->sup);
	notify(svc);
}

void service_stop(struct service *svc)
{
	service_stop_with(svc, -1, 1);
}

void service_stop_with(struct service *svc, int64_t grace_ms, int kill)
{
	/* A stop under way keeps its grace; one that may kill makes it one that may. */
	if (svc->state != SW_SVC_STOPPING && svc->state != SW_SVC_STUCK) {
		svc->grace_ms = grace_ms < 0 ? svc->def.stop_timeout_ms : (unsigned)grace_ms;
		svc->no_kill = !kill;
	} else if (kill) {
		svc->no_kill = 0;
	}
	svc->target_running = 0;
	switch (svc->state) {
	case SW_SVC_FAILED: set_state(svc, SW_SVC_STOPPED, "stopped"); break;
	case SW_SVC_STARTING:
		if (!svc->pid && !svc->adopted) {
			/* waiting to restart: nothing runs, so nothing to stop */
			uv_timer_stop(&svc->timer);
			set_state(svc, SW_SVC_STOPPED, "stopped");
			break;
		}
		begin_stop(svc);
		break;
	case SW_SVC_RUNNING: begin_stop(svc); break;
	default: break;
	}
	save_state(svc->sup);
	notify(svc);
}

void service_restart(struct service *svc)
{
	if (svc->state == SW_SVC_STARTING && !svc->pid && !svc->adopted) {
		/* waiting to restart after a crash: restart now */
		svc->target_running = 1;
		spawn(svc);
		return;
	}
	if (svc->state == SW_SVC_RUNNING || svc->state == SW_SVC_STARTING) {
		service_stop(svc);
		svc->target_running = 1; /* check_stopped starts it again */
		save_state(svc->sup);
	} else {
		service_start(svc);
	}
}

static void on_wait_timeout(uv_timer_t *t)
{
	struct waiter *w = t->data, **pw;

	for (pw = &w->svc->waiters; *pw && *pw != w; pw = &(*pw)->next)
		;
	if (*pw)
		*pw = w->next;
	w->fn(w->svc, w->arg);
	uv_close((uv_handle_t *)&w->timer, free_data);
}

void service_wait(struct service *svc, unsigned timeout_ms, svc_wait_fn fn, void *arg)
{
	struct waiter *w = calloc(1, sizeof(*w));

	if (!w) {
		fn(svc, arg);
		return;
	}
	w->svc = svc;
	w->fn = fn;
	w->arg = arg;
	w->next = svc->waiters;
	svc->waiters = w;
	uv_timer_init(svc->sup->loop, &w->timer);
	w->timer.data = w;
	uv_timer_start(&w->timer, on_wait_timeout, timeout_ms, 0);
	notify(svc);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct service *svc = h->data;

	if (--svc->handles == 0) {
		svc_def_clear(&svc->def);
		free(svc);
	}
}

static void service_free(struct service *svc)
{
	struct service **ps;
	struct waiter *w;

	for (ps = &svc->sup->services; *ps && *ps != svc; ps = &(*ps)->next)
		;
	if (*ps)
		*ps = svc->next;
	while ((w = svc->waiters)) {
		svc->waiters = w->next;
		uv_timer_stop(&w->timer);
		w->fn(NULL, w->arg);
		uv_close((uv_handle_t *)&w->timer, free_data);
	}
	if (svc->child)
		svc->child->svc = NULL;
	if (svc->adopted)
		svc->adopted->svc = NULL;
	uv_timer_stop(&svc->timer);
	uv_timer_stop(&svc->group_poll);
	uv_close((uv_handle_t *)&svc->timer, on_handle_closed);
	uv_close((uv_handle_t *)&svc->group_poll, on_handle_closed);
	save_state(svc->sup);
	if (svc->sup->on_change)
		svc->sup->on_change(svc->sup->arg);
}

void supervisor_remove(struct supervisor *sup, struct service *svc)
{
	svc->removing = 1;
	if (svc->state != SW_SVC_STOPPED && svc->state != SW_SVC_FAILED)
		service_stop(svc);
	/* nothing was running (or a restart wait was cancelled): forget it now */
	if (svc->state == SW_SVC_STOPPED || svc->state == SW_SVC_FAILED)
		service_free(svc);
}

/* Watches a process an earlier agent started, if it is still the same process. */
static void adopt(struct service *svc, json_t *rec)
{
	pid_t pid = (pid_t)json_integer_value(json_object_get(rec, "pid"));
	pid_t pgid = (pid_t)json_integer_value(json_object_get(rec, "pgid"));
	unsigned long long start =
	    (unsigned long long)json_integer_value(json_object_get(rec, "starttime"));
	struct adopted *a;
	int fd;

	if (pid <= 0 || start == 0 || proc_starttime(pid, NULL, NULL) != start)
		return;
	fd = pidfd_open(pid, 0);
	a = calloc(1, sizeof(*a));
	if (fd < 0 || !a || uv_poll_init(svc->sup->loop, &a->poll, fd) < 0) {
		sw_warn("service %s: cannot watch pid %d (%s); stopping it", svc->def.name,
			(int)pid, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(a);
		kill(-pgid, SIGKILL);
		return;
	}
	a->fd = fd;
	a->pid = pid;
	a->svc = svc;
	a->poll.data = a;
	uv_poll_start(&a->poll, UV_READABLE, on_adopted_exit);
	svc->adopted = a;
	svc->pid = pid;
	svc->pgid = pgid;
	svc->starttime = start;
	svc->run_started_ms = sw_mono_ms();
	set_state(svc, SW_SVC_RUNNING, "running as pid %d, found again after an agent restart",
		  (int)pid);
}

/* Gives the service the definition (taking its strings), with defaults filled in. */
static void take_def(struct service *svc, struct svc_def *def)
{
	svc->def = *def;
	memset(def, 0, sizeof(*def));
	if (svc->def.stop_timeout_ms == 0)
		svc->def.stop_timeout_ms = 10000;
	if (svc->def.restart_delay_ms == 0)
		svc->def.restart_delay_ms = BACKOFF_FIRST_MS;
}

/* A new service on the supervisor's list, taking the definition's strings. */
static struct service *service_new(struct supervisor *sup, struct svc_def *def)
{
	struct service *svc = calloc(1, sizeof(*svc));

	if (!svc) {
		svc_def_clear(def);
		return NULL;
	}
	svc->sup = sup;
	take_def(svc, def);
	svc->grace_ms = svc->def.stop_timeout_ms;
	snprintf(svc->reason, sizeof(svc->reason), "never started");
	uv_timer_init(sup->loop, &svc->timer);
	uv_timer_init(sup->loop, &svc->group_poll);
	svc->timer.data = svc->group_poll.data = svc;
	svc->handles = 2;
	svc->next = sup->services;
	sup->services = svc;
	return svc;
}

struct service *supervisor_add(struct supervisor *sup, struct svc_def *def)
{
	struct service *svc = supervisor_find(sup, def->name);
	json_t *rec;

	if (svc && svc->removing) {
		/* Its role came back while it was being stopped: the stop goes on, and the
		 * service stays, as the new definition says, for the caller to start. */
		svc_def_clear(&svc->def);
		take_def(svc, def);
		svc->removing = 0;
		svc->target_running = 0;
		save_state(sup);
		return svc;
	}
	svc = service_new(sup, def);

	if (!svc)
		return NULL;
	rec = json_object_get(sup->saved, svc->def.name);
	svc->target_running = 1; /* a wanted role's services run unless stopped on purpose */
	if (rec) {
		svc->target_running = json_is_true(json_object_get(rec, "target"));
		if (!svc->target_running)
			snprintf(svc->reason, sizeof(svc->reason), "stopped on request");
		adopt(svc, rec);
		json_object_del(sup->saved, svc->def.name);
		/* an agent that died in the middle of a stop: finish it */
		if (svc->state == SW_SVC_RUNNING && !svc->target_running)
			begin_stop(svc);
	}
	save_state(sup);
	return svc;
}

struct service *supervisor_first(struct supervisor *sup)
{
	return sup->services;
}

struct service *supervisor_next(struct service *svc)
{
	return svc->next;
}

struct service *supervisor_find(struct supervisor *sup, const char *name)
{
	for (struct service *s = sup->services; s; s = s->next)
		if (strcmp(s->def.name, name) == 0)
			return s;
	return NULL;
}

/* Keeps each log under LOG_MAX by moving it to NAME.log.1; the service writes with
 * O_APPEND, so truncating in place is safe for it. */
static void on_log_check(uv_timer_t *t)
{
	struct supervisor *sup = t->data;

	for (struct service *s = sup->services; s; s = s->next) {
		char path[PATH_MAX + 80], old[PATH_MAX + 84], *text;
		struct stat st;
		size_t len;

		snprintf(path, sizeof(path), "%s/logs/%s.log", sup->dir, s->def.name);
		if (stat(path, &st) < 0 || st.st_size <= LOG_MAX)
			continue;
		snprintf(old, sizeof(old), "%s.1", path);
		if (sw_file_read(path, (size_t)st.st_size + 65536, &text, &len, NULL, 0) == 0) {
			sw_file_write_atomic(old, text, len, 0640, NULL, 0);
			free(text);
			if (truncate(path, 0) < 0)
				sw_warn("cannot rotate %s: %s", path, strerror(errno));
		}
	}
}

struct supervisor *supervisor_new(uv_loop_t *loop, const char *dir, void (*on_change)(void *),
				  void *arg)
{
	struct supervisor *sup = calloc(1, sizeof(*sup));
	char path[PATH_MAX + 32], *text;
	size_t len;

	if (!sup)
		return NULL;
	sup->loop = loop;
	snprintf(sup->dir, sizeof(sup->dir), "%s", dir);
	sup->on_change = on_change;
	sup->arg = arg;
	sw_path_join(path, sizeof(path), dir, "logs");
	mkdir(path, 0750);
	sw_path_join(path, sizeof(path), dir, STATE_FILE);
	if (sw_file_read(path, 1024 * 1024, &text, &len, NULL, 0) == 0) {
		sup->saved = json_loadb(text, len, 0, NULL);
		free(text);
	}
	if (!json_is_object(sup->saved)) {
		json_decref(sup->saved);
		sup->saved = json_object();
	}
	uv_timer_init(loop, &sup->log_timer);
	sup->log_timer.data = sup;
	uv_timer_start(&sup->log_timer, on_log_check, LOG_CHECK_MS, LOG_CHECK_MS);
	return sup;
}

/* Processes recorded by an earlier agent for services nobody wants any more are
 * stopped like any other: SIGTERM, grace, SIGKILL, and "stuck" if they survive. */
void supervisor_stop_leftovers(struct supervisor *sup)
{
	const char *name;
	json_t *rec, *saved = sup->saved;

	sup->saved = json_object();
	json_object_foreach(saved, name, rec)
	{
		struct svc_def def;
		struct service *svc;

		memset(&def, 0, sizeof(def));
		snprintf(def.name, sizeof(def.name), "%s", name);
		snprintf(def.role, sizeof(def.role), "(no longer wanted)");
		if (!(svc = service_new(sup, &def)))
			break;
		adopt(svc, rec);
		if (svc->pid)
			sw_warn("service %s (pid %d) is no longer wanted; stopping it", name,
				(int)svc->pid);
		supervisor_remove(sup, svc);
	}
	json_decref(saved);
	save_state(sup);
}

static void on_sup_closed(uv_handle_t *h)
{
	free(h->data);
}

void supervisor_free(struct supervisor *sup)
{
	if (!sup)
		return;
	while (sup->services) {
		struct service *svc = sup->services;
		sup->services = svc->next;
		svc->next = NULL;
		/* leave the processes running; the next agent adopts them */
		if (svc->adopted) {
			adopted_free(svc->adopted);
			svc->adopted = NULL;
		}
		if (svc->child) {
			svc->child->svc = NULL;
			uv_close((uv_handle_t *)&svc->child->proc, free_data);
			svc->child = NULL;
		}
		struct waiter *w;
		while ((w = svc->waiters)) {
			svc->waiters = w->next;
			uv_timer_stop(&w->timer);
			w->fn(NULL, w->arg);
			uv_close((uv_handle_t *)&w->timer, free_data);
		}
		uv_close((uv_handle_t *)&svc->timer, on_handle_closed);
		uv_close((uv_handle_t *)&svc->group_poll, on_handle_closed);
	}
	json_decref(sup->saved);
	uv_close((uv_handle_t *)&sup->log_timer, on_sup_closed);
}

json_t *service_json(const struct service *svc)
{
	json_t *j = json_pack("{ss ss ss ss sb si}", "name", svc->def.name, "role", svc->def.role,
			      "state", sw_svc_state_name(svc->state), "reason", svc->reason,
			      "wants_running", svc->target_running, "pid", (int)svc->pid);

	if (svc->have_exit) {
		json_object_set_new(j, "last_exit_status", json_integer(svc->exit_status));
		json_object_set_new(j, "last_exit_signal", json_integer(svc->exit_signal));
	}
	if (svc->state == SW_SVC_FAILED) {
		char *tail = service_log_tail(svc, 10);
		json_object_set_new(j, "log_tail", json_string(tail ? tail : ""));
		free(tail);
	}
	return j;
}

json_t *supervisor_json(struct supervisor *sup)
{
	json_t *arr = json_array();

	for (struct service *s = sup->services; s; s = s->next)
		json_array_append_new(arr, service_json(s));
	return arr;
}

const char *service_name(const struct service *svc)
{
	return svc->def.name;
}

const char *service_role(const struct service *svc)
{
	return svc->def.role;
}

enum sw_svc_state service_state(const struct service *svc)
{
	return svc->state;
}

int service_wants_running(const struct service *svc)
{
	return svc->target_running;
}

int service_removing(const struct service *svc)
{
	return svc->removing;
}

/* The end of a file: at most `max` bytes, starting at a line boundary. */
static char *file_tail(const char *path, size_t max)
{
	struct stat st;
	char *buf;
	ssize_t n;
	off_t off;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return NULL;
	}
	off = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
	buf = malloc(max + 1);
	n = buf ? pread(fd, buf, max, off) : -1;
	close(fd);
	if (n < 0) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	if (off > 0) {
		char *nl = strchr(buf, '\n');
		if (nl)
			memmove(buf, nl + 1, strlen(nl + 1) + 1);
	}
	return buf;
}

char *service_log_tail(const struct service *svc, unsigned lines)
{
	char path[PATH_MAX + 80], old[PATH_MAX + 84], *cur, *prev = NULL, *all, *p;
	unsigned count = 0;
	size_t max = 256 * 1024;

	snprintf(path, sizeof(path), "%s/logs/%s.log", svc->sup->dir, svc->def.name);
	snprintf(old, sizeof(old), "%s.1", path);
	cur = file_tail(path, max);
	if (!cur)
		cur = strdup("");
	for (p = cur; *p; p++)
		count += *p == '\n';
	if (count < lines)
		prev = file_tail(old, max);
	if (asprintf(&all, "%s%s", prev ? prev : "", cur ? cur : "") < 0)
		all = NULL;
	free(prev);
	free(cur);
	if (!all)
		return NULL;
	/* keep the last `lines` lines */
	count = 0;
	p = all + strlen(all);
	if (p > all && p[-1] == '\n')
		p--;
	while (p > all) {
		if (p[-1] == '\n' && ++count == lines)
			break;
		p--;
	}
	memmove(all, p, strlen(p) + 1);
	return all;
}

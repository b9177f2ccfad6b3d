/*
 * The site server's own part of an upgrade: extract the package into versions/V, back
 * the database up when the package migrates it, run the migrations, switch `current`
 * and re-execute; the new program finds the run in the journal and goes on. At the end
 * of a rollback, the return: the database restored, `current` switched back.
 *
 * Each part is journaled before the next and redone if found half done. Extraction and
 * the SQLite copy run on the thread pool, pg_dump and psql as child processes: each has
 * a deadline, and the loop serves heartbeats and requests meanwhile.
 */
#include "upgrade.h"

#include "error.h"
#include "install.h"
#include "log.h"
#include "util.h"
#include "work.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void upgrade_self_enter(struct upgrade *u, enum uself step)
{
	if (u->self != step)
		sw_info("upgrade %" PRId64 ": the site server: %s", u->id, uself_names[step]);
	u->self = step;
	ujournal_run_save(u);
}

static int64_t extract_ms(const struct upgrade *u)
{
	return EXTRACT_BASE_MS + (int64_t)(u->size / EXTRACT_BYTES_MS);
}

int64_t upgrade_self_bound_ms(const struct upgrade *u)
{
	char running[SW_PKG_VERSION_MAX + 1];

	sw_install_version(u->s->dir, running, sizeof(running));
	if (u->o.rollback)
		return strcmp(running, u->from) == 0
			   ? 0
			   : (u->backup[0] ? BACKUP_TIMEOUT_MS : 0) + RESTART_MS +
				 upgrade_reconnect_grace_ms(u->s);
	if (strcmp(running, u->version) == 0 || u->self == SELF_DONE)
		return 0;
	/* its re-exec, then the agents' return to it */
	return extract_ms(u) + (u->self_migrations ? BACKUP_TIMEOUT_MS + MIGRATE_TIMEOUT_MS : 0) +
	       RESTART_MS + upgrade_reconnect_grace_ms(u->s);
}

static void fail(struct upgrade *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct upgrade *u, const char *fmt, ...)
{
	char why[700];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	u->self_busy = 0;
	if (!u->o.rollback)
		upgrade_self_enter(u, SELF_FAILED);
	upgrade_halt(u, "%s", why);
	upgrade_finish(u);
}

/* A job of the server's own on the thread pool, or a PostgreSQL client program, for
 * the run `id`: the answer is dropped if the run changed meanwhile. */
struct job {
	struct server *s;
	int64_t id;
	unsigned bound_ms;
	int rc;
	char what[32];
	char path[PATH_MAX], dest[PATH_MAX];
	char *pub;
	struct sw_db_opts db;
	char err[600];
	void (*next)(struct upgrade *u, const char *why);
	/* a child process */
	uv_process_t proc;
	uv_timer_t timer;
	int open_handles, timed_out;
	int64_t status;
	int signal;
	char log[PATH_MAX + 16];
};

static struct upgrade *job_run_of(const struct job *j)
{
	struct upgrade *u = j->s->upgrade;

	return !j->s->stopping && u && u->id == j->id ? u : NULL;
}

static void job_release(void *arg)
{
	struct job *j = arg;

	free(j->pub);
	free(j);
}

static void job_done(void *arg, int timed_out)
{
	struct job *j = arg;
	struct upgrade *u = job_run_of(j);
	char why[700];

	if (!u)
		return;
	u->self_busy = 0;
	if (timed_out)
		snprintf(why, sizeof(why), "%s did not finish within %u s", j->what,
			 j->bound_ms / 1000);
	else if (j->rc)
		snprintf(why, sizeof(why), "%s: %s", j->what, j->err);
	j->next(u, timed_out || j->rc ? why : NULL);
}

static void run_extract(void *arg)
{
	struct job *j = arg;

	j->rc = sw_pkg_extract(j->path, j->pub, j->dest, j->err, sizeof(j->err));
}

/* VACUUM INTO through a connection of its own: the loop's goes on serving. */
static void run_vacuum(void *arg)
{
	struct job *j = arg;
	struct sw_db *db = NULL;
	struct sw_db_val p[] = {SW_DB_TEXT(j->dest)};

	if (!(j->rc = sw_db_open(&j->db, &db, j->err, sizeof(j->err))))
		j->rc =
		    sw_db_exec(db, "VACUUM INTO ?", p, 1, NULL, NULL, NULL, j->err, sizeof(j->err));
	sw_db_close(db);
}

/* The package's migrations, on a connection of their own: heartbeats and requests go on
 * meanwhile (their writes wait for the migration's lock off the loop). */
static void run_migrate(void *arg)
{
	struct job *j = arg;
	struct sw_db *db = NULL;

	if (!(j->rc = sw_db_open(&j->db, &db, j->err, sizeof(j->err))))
		j->rc = sw_db_migrate_with(db, j->path, j->err, sizeof(j->err));
	sw_db_close(db);
}

static struct job *job_new(struct upgrade *u, const char *what, unsigned bound_ms,
			   void (*next)(struct upgrade *u, const char *why))
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->s = u->s;
	j->id = u->id;
	j->bound_ms = bound_ms;
	j->next = next;
	snprintf(j->what, sizeof(j->what), "%s", what);
	return j;
}

static int job_start(struct upgrade *u, struct job *j, void (*run)(void *arg))
{
	if (sw_work_start(u->s->loop, j->bound_ms, run, job_done, job_release, j)) {
		job_release(j);
		return SW_ENOMEM;
	}
	u->self_busy = 1;
	return 0;
}

/* --- pg_dump and psql --- */

static void tool_closed(uv_handle_t *h)
{
	struct job *j = h->data;
	struct upgrade *u;
	char why[700] = "";

	if (--j->open_handles > 0)
		return;
	if (!j->next || !(u = job_run_of(j))) { /* it never started, or the run is gone */
		job_release(j);
		return;
	}
	if (j->timed_out) {
		snprintf(why, sizeof(why), "%s did not finish within %u s (see %s)", j->what,
			 j->bound_ms / 1000, j->log);
	} else if (j->status != 0 || j->signal) {
		char *text = NULL;
		size_t len = 0;
		const char *tail = "";

		if (sw_file_read(j->log, 1 << 20, &text, &len, NULL, 0) == 0 && len) {
			while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
				text[--len] = '\0';
			tail = strrchr(text, '\n') ? strrchr(text, '\n') + 1 : text;
		}
		snprintf(why, sizeof(why), "%s failed (%s %d): %.300s", j->what,
			 j->signal ? "signal" : "exit status",
			 j->signal ? j->signal : (int)j->status, tail);
		free(text);
	}
	u->self_busy = 0;
	j->next(u, why[0] ? why : NULL);
	job_release(j);
}

static void tool_exited(uv_process_t *p, int64_t status, int signal)
{
	struct job *j = p->data;

	j->status = status;
	j->signal = signal;
	uv_close((uv_handle_t *)&j->timer, tool_closed);
	uv_close((uv_handle_t *)&j->proc, tool_closed);
}

static void tool_expired(uv_timer_t *timer)
{
	struct job *j = timer->data;

	j->timed_out = 1;
	uv_process_kill(&j->proc, SIGKILL);
}

/* Runs pg_dump or psql against the site database, named by the environment (see
 * sw_db_pg_environ), in the background with its deadline. */
static int tool_run(struct upgrade *u, const char *what, char **argv, const char *log,
		    void (*next)(struct upgrade *u, const char *why), char *err, size_t errlen)
{
	struct job *j = job_new(u, what, BACKUP_TIMEOUT_MS, next);
	uv_stdio_container_t stdio[3];
	uv_process_options_t o;
	char **env;
	int fd, rc;

	if (!j)
		return SW_ENOMEM;
	if (!(env = sw_db_pg_environ(u->s->db_url, err, errlen))) {
		job_release(j);
		return SW_EINVAL;
	}
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		sw_seterr(err, errlen, "%s: %s", log, strerror(errno));
		sw_environ_free(env);
		job_release(j);
		return SW_EIO;
	}
	snprintf(j->log, sizeof(j->log), "%s", log);
	memset(&o, 0, sizeof(o));
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = stdio[2].flags = UV_INHERIT_FD;
	stdio[1].data.fd = stdio[2].data.fd = fd;
	o.file = argv[0];
	o.args = argv;
	o.env = env;
	o.stdio = stdio;
	o.stdio_count = 3;
	o.exit_cb = tool_exited;
	j->proc.data = j->timer.data = j;
	rc = uv_spawn(u->s->loop, &j->proc, &o);
	close(fd);
	sw_environ_free(env);
	if (rc) {
		sw_seterr(err, errlen, "cannot run %s: %s (install postgresql-client)", what,
			  uv_strerror(rc));
		/* the handle is freed once closed: leave `j` to the loop */
		j->next = NULL;
		j->open_handles = 1;
		uv_close((uv_handle_t *)&j->proc, tool_closed);
		return SW_ENOTFOUND;
	}
	uv_timer_init(u->s->loop, &j->timer);
	uv_timer_start(&j->timer, tool_expired, BACKUP_TIMEOUT_MS, 0);
	j->open_handles = 2;
	u->self_busy = 1;
	sw_info("upgrade %" PRId64 ": %s running (log %s)", u->id, what, log);
	return 0;
}

/* --- the steps --- */

/* Migrations the package carries that the database has not run. */
static int pending_migrations(struct upgrade *u, int *n, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	int version = 0, rc;
	struct dirent *e;
	DIR *d;

	*n = 0;
	if ((rc = sw_db_schema_version(u->s->db, &version, err, errlen)))
		return rc;
	snprintf(dir, sizeof(dir), "%s/" SW_INSTALL_VERSIONS "/%s/share/siteward/sql", u->s->dir,
		 u->version);
	if (!(d = opendir(dir)))
		return 0;
	while ((e = readdir(d)))
		if (atoi(e->d_name) > version && strstr(e->d_name, ".sql"))
			(*n)++;
	closedir(d);
	return 0;
}

/* Migrated, the step is taken again: with none pending now, it switches. */
static void after_migrate(struct upgrade *u, const char *why)
{
	if (why) {
		fail(u, "the site server: %s", why);
		return;
	}
	sw_info("upgrade %" PRId64 ": database migrated", u->id);
	upgrade_self_step(u);
}

static void after_backup(struct upgrade *u, const char *why)
{
	if (why) {
		u->backup[0] = '\0';
		fail(u, "the site server: database backup: %s", why);
		return;
	}
	snprintf(u->backup, sizeof(u->backup), "%s", u->pending_backup);
	sw_info("upgrade %" PRId64 ": database backed up to %s", u->id, u->backup);
	upgrade_self_enter(u, SELF_BACKED_UP);
	upgrade_self_step(u);
}

/* Backs the database up before the package's migrations run, in the background:
 * SQLite with VACUUM INTO on a connection of its own, PostgreSQL with pg_dump. */
static int db_backup(struct upgrade *u, char *err, size_t errlen)
{
	int pg = strcmp(sw_db_engine(u->s->db), "sqlite") != 0;
	char dir[PATH_MAX], name[64];
	struct job *j;

	snprintf(name, sizeof(name), "site-%s-%" PRId64 ".%s", u->from, u->id, pg ? "sql" : "db");
	if (site_path(u->s, dir, sizeof(dir), "backups", NULL))
		return SW_ETOOBIG;
	mkdir(dir, 0700);
	sw_path_join(u->pending_backup, sizeof(u->pending_backup), dir, name);
	unlink(u->pending_backup);
	if (pg) {
		char *argv[] = {"pg_dump", "--format=plain",  "--no-owner", "--no-privileges",
				"--file",  u->pending_backup, NULL};
		char log[PATH_MAX + 16];

		snprintf(log, sizeof(log), "%s.log", u->pending_backup);
		return tool_run(u, "pg_dump", argv, log, after_backup, err, errlen);
	}
	if (!(j = job_new(u, "the database copy", BACKUP_TIMEOUT_MS, after_backup)))
		return SW_ENOMEM;
	j->db = u->s->db_opts;
	snprintf(j->dest, sizeof(j->dest), "%s", u->pending_backup);
	return job_start(u, j, run_vacuum);
}

static void server_restart(struct upgrade *u, const char *exe)
{
	u->self_busy = 1; /* nothing more of it runs in this process */
	snprintf(u->s->reexec, sizeof(u->s->reexec), "%s", exe);
	uv_stop(u->s->loop);
}

static void after_extract(struct upgrade *u, const char *why)
{
	if (why) {
		fail(u, "the site server: %s", why);
		return;
	}
	upgrade_self_enter(u, SELF_STAGED);
	upgrade_self_step(u);
}

static void after_db_restore(struct upgrade *u, const char *why)
{
	if (why) {
		upgrade_halt(u, "the server cannot return to %s: %s", u->from, why);
		upgrade_finish(u);
		return;
	}
	sw_info("upgrade: database restored from %s", u->backup);
	upgrade_self_enter(u, SELF_RESTORED);
	upgrade_self_step(u);
}

/* The SQLite backup copied beside the live database, on the thread pool: the slow part
 * of a restore, while the site goes on. */
static void run_copy(void *arg)
{
	struct job *j = arg;

	j->rc = sw_file_copy(j->path, j->dest, j->err, sizeof(j->err));
}

static void after_restore_copy(struct upgrade *u, const char *why)
{
	if (why) {
		upgrade_halt(u, "the server cannot return to %s: %s", u->from, why);
		upgrade_finish(u);
		return;
	}
	u->restore_copied = 1;
	upgrade_self_step(u);
}

static int restore_copy(struct upgrade *u, char *err, size_t errlen)
{
	struct job *j = job_new(u, "the database restore", BACKUP_TIMEOUT_MS, after_restore_copy);

	if (!j) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	snprintf(j->path, sizeof(j->path), "%s", u->backup);
	snprintf(j->dest, sizeof(j->dest), "%s.new", u->s->db_url);
	if (job_start(u, j, run_copy)) {
		sw_seterr(err, errlen, "cannot start the copy of %s", u->backup);
		return SW_ENOMEM;
	}
	return 0;
}

/* Puts the copied backup in place of the live database, reopened after. */
static int sqlite_swap(struct upgrade *u, char *err, size_t errlen)
{
	struct server *s = u->s;
	char live[PATH_MAX], tmp[PATH_MAX + 8], side[PATH_MAX + 8], why[300];
	int failed = 0;

	/* The file is replaced: writes go through the loop's connection from here on,
	 * until the re-exec (self_return waited for the one in flight). */
	dbq_detach(s);
	sw_db_close(s->db);
	s->db = NULL;
	snprintf(live, sizeof(live), "%s", s->db_url);
	snprintf(tmp, sizeof(tmp), "%s.new", live);
	if (rename(tmp, live)) {
		sw_seterr(err, errlen, "cannot put %s in place: %s", tmp, strerror(errno));
		unlink(tmp);
		failed = 1;
	} else {
		snprintf(side, sizeof(side), "%s-wal", live);
		unlink(side);
		snprintf(side, sizeof(side), "%s-shm", live);
		unlink(side);
		sw_info("upgrade: database restored from %s", u->backup);
	}
	if (sw_db_open(&s->db_opts, &s->db, why, sizeof(why))) {
		sw_seterr(err, errlen, "upgrade: cannot reopen the database: %s", why);
		return SW_EDB; /* the caller ends the server */
	}
	/* the server stays: its writes go off the loop again */
	if (failed && dbq_open(s, why, sizeof(why)))
		sw_warn("database writes stay on the server's loop: %s", why);
	return failed ? SW_EIO : 0;
}

/* The return at the end of a rollback. */
static void self_return(struct upgrade *u)
{
	struct server *s = u->s;
	char running[SW_PKG_VERSION_MAX + 1], err[600], exe[PATH_MAX];
	int rc;

	sw_install_version(s->dir, running, sizeof(running));
	if (strcmp(running, u->from) == 0) {
		upgrade_self_enter(u, SELF_ROLLED_BACK);
		upgrade_finish(u);
		return;
	}
	/* The systems' last rows are stored before the database is restored and the
	 * journal written again whole, so none lands on the journal after it. */
	if (s->dbq_busy || s->dbq_head)
		return; /* on a later tick */
	if (u->backup[0] && u->self != SELF_RESTORED) {
		size_t n = strlen(u->backup);
		if (n > 4 && strcmp(u->backup + n - 4, ".sql") == 0) {
			/* One transaction replaces the schema whole: what the migrations added
			 * goes too, and a failure leaves the database as it was. */
			char *argv[] = {"psql",
					"-X",
					"-q",
					"-v",
					"ON_ERROR_STOP=1",
					"--single-transaction",
					"-c",
					"DROP SCHEMA public CASCADE",
					"-c",
					"CREATE SCHEMA public",
					"-f",
					u->backup,
					NULL};
			char log[PATH_MAX + 16];

			snprintf(log, sizeof(log), "%s.restore.log", u->backup);
			if (tool_run(u, "psql", argv, log, after_db_restore, err, sizeof(err))) {
				upgrade_halt(u, "the server cannot return to %s: %s", u->from, err);
				upgrade_finish(u);
			}
			return;
		}
		if (!u->restore_copied) {
			if (restore_copy(u, err, sizeof(err))) {
				upgrade_halt(u, "the server cannot return to %s: %s", u->from, err);
				upgrade_finish(u);
			}
			return; /* after_restore_copy goes on */
		}
		if ((rc = sqlite_swap(u, err, sizeof(err))) == SW_EDB)
			s->abort(s, err);
		if (rc) {
			upgrade_halt(u, "the server cannot return to %s: %s", u->from, err);
			upgrade_finish(u);
			return;
		}
	}
	if (sw_install_switch_back(s->dir, u->from, "siteward-server", exe, sizeof(exe), err,
				   sizeof(err))) {
		upgrade_halt(u, "the server cannot return to %s: %s", u->from, err);
		upgrade_finish(u);
		return;
	}
	u->self = SELF_SWITCHED_BACK;
	/* The journal is written again whole: into the restored database. */
	ujournal_run_insert(u, err, sizeof(err));
	server_restart(u, exe);
}

void upgrade_self_step(struct upgrade *u)
{
	struct server *s = u->s;
	char running[SW_PKG_VERSION_MAX + 1], err[600], sqldir[PATH_MAX + 64], exe[PATH_MAX];
	int n, rc;

	if (u->self_busy)
		return;
	if (u->o.rollback) {
		self_return(u);
		return;
	}
	sw_install_version(s->dir, running, sizeof(running));
	if (strcmp(running, u->version) == 0) {
		upgrade_self_enter(u, SELF_DONE);
		sw_info("upgrade %" PRId64 ": the site server runs %s", u->id, u->version);
		upgrade_kick(u);
		return;
	}
	if (u->self == SELF_SWITCHED) {
		/* The new program should be running: it is not, so it did not start. */
		fail(u, "the server did not start on %s", u->version);
		return;
	}
	if (!sw_install_has(s->dir, u->version)) {
		struct job *j = job_new(u, "extraction", (unsigned)extract_ms(u), after_extract);

		site_path(s, sqldir, sizeof(sqldir), SW_INSTALL_VERSIONS, NULL);
		mkdir(sqldir, 0755);
		if (!j) {
			fail(u, "the site server: %s", "out of memory");
			return;
		}
		package_path(s, u->sha, j->path, sizeof(j->path));
		site_path(s, j->dest, sizeof(j->dest), SW_INSTALL_VERSIONS "/%s", u->version);
		if ((rc = sw_pem_read(s->dir, "signing.pub", &j->pub, err, sizeof(err)))) {
			job_release(j);
			fail(u, "the site server: %s", err);
			return;
		}
		if (job_start(u, j, run_extract))
			fail(u, "the site server: %s", "cannot start the extraction");
		return; /* after_extract goes on */
	}
	if (u->self < SELF_STAGED)
		upgrade_self_enter(u, SELF_STAGED);
	if ((rc = pending_migrations(u, &n, err, sizeof(err)))) {
		fail(u, "the site server: %s", err);
		return;
	}
	if (n > 0 && !u->backup[0]) {
		if ((rc = db_backup(u, err, sizeof(err))))
			fail(u, "the site server: database backup: %s", err);
		return; /* after_backup goes on */
	}
	if (n > 0) {
		struct job *j = job_new(u, "the migrations", MIGRATE_TIMEOUT_MS, after_migrate);

		if (!j) {
			fail(u, "the site server: %s", "out of memory");
			return;
		}
		j->db = s->db_opts;
		snprintf(j->path, sizeof(j->path),
			 "%s/" SW_INSTALL_VERSIONS "/%s/share/siteward/sql", s->dir, u->version);
		if (job_start(u, j, run_migrate))
			fail(u, "the site server: %s", "cannot start the migrations");
		return; /* after_migrate goes on */
	}
	upgrade_self_enter(u, SELF_SWITCHED);
	if ((rc = sw_install_switch(s->dir, u->version, err, sizeof(err)))) {
		fail(u, "the site server: %s", err);
		return;
	}
	sw_install_exe(s->dir, "siteward-server", exe, sizeof(exe));
	sw_info("upgrade %" PRId64 ": the site server switches to %s", u->id, u->version);
	server_restart(u, exe);
}

/*
 * siteward-server: the site server — site database, site CA, HTTPS API.
 *
 * Reads DIR/siteward.conf, opens and migrates the database, loads the systems it
 * knows, listens, and runs one libuv loop until SIGINT or SIGTERM.
 */
#include "server.h"
#include "upgrade.h"

#include "error.h"
#include "install.h"
#include "log.h"
#include "loop.h"
#include "migrations.h"
#include "notify.h"
#include "paths.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "version.h"

/* The service manager's watchdog, fed from the loop. */
static struct sw_notify notify;

static const char *const known_settings[] = {
    "site.code",
    "server.listen",
    "server.heartbeat_interval",
    "server.handshake_timeout",
    "server.idle_timeout",
    "server.max_event_streams",
    "server.event_stream_buffer",
    "server.flush_interval_ms",
    "server.cert_check_interval_s",
    "console.listen",
    "database.url",
    "database.busy_timeout_ms",
    "database.connect_timeout",
    "log.level",
    "metering.detail_days",
    "metering.lease_ttl_ms",
    "metering.meter_poll_ms",
    "metering.summarize_interval_s",
    "deploy.fetch_base_s",
    "deploy.lock_wait_s",
    "deploy.install_timeout_s",
    NULL,
};

static void usage(FILE *f)
{
	fprintf(f, "usage: siteward-server [--dir DIR] [-n]\n"
		   "       siteward-server init [--dir DIR] --site-code ABC --listen HOST:PORT "
		   "[--db URL]\n"
		   "       siteward-server renew-admin [--dir DIR]\n"
		   "       siteward-server --version\n");
}

static void on_flush(uv_timer_t *t)
{
	registry_flush(t->data);
}

static void on_summarize(uv_timer_t *t)
{
	metering_summarize(t->data);
}

static void on_last_flush(uv_timer_t *t)
{
	uv_stop(t->loop);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct server *s = h->data;

	sw_info("signal %d: shutting down", signum);
	uv_stop(s->loop);
}

static int server_configure(struct server *s, const char *dir, int check_only, char *err,
			    size_t errlen)
{
	char path[PATH_MAX + 32], sub[400];
	const char *level, *code;
	unsigned busy, connect;
	int lv, rc;

	if (!realpath(dir, s->dir)) {
		sw_seterr(err, errlen,
			  "%s: no such site folder (create one with siteward-server init)", dir);
		return SW_ENOTFOUND;
	}
	/* the default folder's configuration is in /etc/siteward */
	sw_path_conf(s->dir, SW_PATH_SERVER_DIR, "siteward.conf", path, sizeof(path));
	if ((rc = sw_conf_load(path, &s->conf, err, errlen)))
		return rc;
	if ((rc = sw_conf_check(s->conf, known_settings, sub, sizeof(sub)))) {
		sw_seterr(err, errlen, "%s: %s", path, sub);
		return rc;
	}
	level = sw_conf_get(s->conf, "log", "level", "info");
	lv = sw_log_level_parse(level);
	if (lv < 0) {
		sw_seterr(err, errlen, "%s: [log] level must be debug, info, warn or error", path);
		return SW_EINVAL;
	}
	sw_log_init("siteward-server", (enum sw_log_level)lv);
	code = sw_conf_get(s->conf, "site", "code", "");
	snprintf(s->site_code, sizeof(s->site_code), "%s", code);
	snprintf(s->listen, sizeof(s->listen), "%s", sw_conf_get(s->conf, "server", "listen", ""));
	if ((rc = sw_conf_get_uint(s->conf, "server", "heartbeat_interval", 15, 1, 3600,
				   &s->heartbeat_s, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(s->conf, "server", "flush_interval_ms", 1000, 10, 60000,
				   &s->flush_ms, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(s->conf, "server", "cert_check_interval_s", 21600, 1, 604800,
				   &s->cert_check_s, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(s->conf, "metering", "lease_ttl_ms", 30000, 1000, 3600000,
				   &s->lease_ttl_ms, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(s->conf, "metering", "meter_poll_ms", 10000, 500, 3600000,
				   &s->meter_poll_ms, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(s->conf, "metering", "detail_days", 90, 0, 36500,
				   &s->detail_days, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(s->conf, "metering", "summarize_interval_s", 3600, 1, 86400,
				   &s->summarize_s, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(s->conf, "database", "busy_timeout_ms", 5000, 1, 600000, &busy,
				   sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(s->conf, "database", "connect_timeout", 5, 1, 300, &connect, sub,
				   sizeof(sub)))) {
		sw_seterr(err, errlen, "%s: %s", path, sub);
		return rc;
	}
	if ((rc = ca_load(s, err, errlen)))
		return rc;
	sw_path_join(path, sizeof(path), s->dir, "site.db");
	snprintf(s->db_url, sizeof(s->db_url), "%s", sw_conf_get(s->conf, "database", "url", path));
	s->db_opts = (struct sw_db_opts){
	    .url = s->db_url,
	    .busy_timeout_ms = busy,
	    .connect_timeout_s = connect,
	};
	if ((rc = sw_db_open(&s->db_opts, &s->db, err, errlen)))
		return rc;
	if (check_only) {
		/* a check reads and changes nothing: the schema is migrated at start */
		int version = 0;
		if ((rc = sw_db_schema_version(s->db, &version, err, errlen)))
			return rc;
		if (version > sw_migrations_count) {
			sw_seterr(err, errlen,
				  "database schema %d is newer than this program (%d); upgrade "
				  "siteward",
				  version, sw_migrations_count);
			return SW_EINVAL;
		}
		if (version < sw_migrations_count) {
			printf("database schema %d: migrations up to %d run when the server "
			       "starts\n",
			       version, sw_migrations_count);
			return 0;
		}
	} else {
		/* An install tree (make install, or an upgrade's versions/V) carries the
		 * migrations of its version beside the programs. */
		char exe[PATH_MAX], sql[PATH_MAX + 64], *slash;

		sql[0] = '\0';
		if (sw_install_self(exe, sizeof(exe)) == 0 && (slash = strrchr(exe, '/'))) {
			*slash = '\0';
			snprintf(sql, sizeof(sql), "%s/../share/siteward/sql", exe);
		}
		if ((rc = sw_db_migrate_with(s->db, sql[0] ? sql : NULL, err, errlen)))
			return rc;
	}
	if ((rc = registry_load(s, err, errlen)) ||
	    (rc = admins_load(s, !check_only, err, errlen)) || (rc = licenses_load(s, err, errlen)))
		return rc;
	if (check_only)
		return 0;
	return (rc = upgrade_load(s, err, errlen)) ? rc : deploy_load(s, err, errlen);
}

/* A server that runs for years passes the renewal age of its certificate while it runs:
 * the certificate is issued again under the site CA, and the server executes itself
 * afresh in its own process to serve it, as after an upgrade (its listener holds the
 * certificate it started with). Not in the middle of an upgrade, which restarts the
 * server itself. */
static void cert_check(struct server *s)
{
	char err[512], exe[PATH_MAX];
	ssize_t n;

	if (s->stopping || s->reexec[0] || s->upgrade_starting ||
	    (s->upgrade && upgrade_is_active(s->upgrade)) || !site_cert_due(s))
		return;
	if (site_certs_check(s, err, sizeof(err))) {
		sw_warn("the server certificate is due for renewal and cannot be issued again: %s",
			err);
		return;
	}
	/* the program that runs; a package may have replaced the file since */
	if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) <= 0) {
		sw_warn("the server certificate was issued again; it is served from the next "
			"start (cannot find this program: %s)",
			strerror(errno));
		return;
	}
	exe[n] = '\0';
	if (n > 10 && strcmp(exe + n - 10, " (deleted)") == 0)
		exe[n - 10] = '\0';
	sw_info("restarting to serve the renewed server certificate");
	snprintf(s->reexec, sizeof(s->reexec), "%s", exe);
	uv_stop(s->loop);
}

/* A CA near its end is said at start and at each look at the certificates. */
static void ca_end_warn(struct server *s)
{
	char note[256];

	ca_note(s, sw_now_ms(), note, sizeof(note));
	if (note[0])
		sw_warn("%s", note);
}

static void on_cert_check(uv_timer_t *t)
{
	ca_end_warn(t->data);
	site_admin_check(t->data);
	cert_check(t->data);
}

/* A rotation of the site's CA goes on as its systems allow; once a new CA issues, the
 * server's own certificate is issued again under it, and served. */
static void on_ca_check(uv_timer_t *t)
{
	struct server *s = t->data;

	if (ca_progress(s))
		cert_check(s);
}

/* Everything that serves: the write queue, the calls to agents, the API, the timers and
 * the signals. */
static int server_open(struct server *s, char *err, size_t errlen)
{
	struct sw_nofile nofile;
	char version[40], limits[160] = "open-file limit unknown", room[256];
	int rc;

	/* Every agent holds a connection: the soft limit on open files (often 1024) goes up
	 * to the hard one before anything is opened. */
	if (sw_nofile_raise(&nofile) == 0)
		sw_nofile_describe(&nofile, limits, sizeof(limits));
	if ((rc = dbq_open(s, err, errlen)) || (rc = control_start(s, err, errlen)) ||
	    (rc = site_certs_check(s, err, errlen)) || (rc = api_start(s, err, errlen)))
		return rc;
	uv_timer_init(s->loop, &s->flush_timer);
	s->flush_timer.data = s;
	uv_timer_start(&s->flush_timer, on_flush, s->flush_ms, s->flush_ms);
	channel_start(s);
	uv_timer_init(s->loop, &s->summarize_timer);
	s->summarize_timer.data = s;
	uv_timer_start(&s->summarize_timer, on_summarize, 1000, s->summarize_s * 1000ull);
	uv_timer_init(s->loop, &s->cert_timer);
	s->cert_timer.data = s;
	uv_timer_start(&s->cert_timer, on_cert_check, s->cert_check_s * 1000ull,
		       s->cert_check_s * 1000ull);
	uv_unref((uv_handle_t *)&s->cert_timer);
	uv_timer_init(s->loop, &s->ca_timer);
	s->ca_timer.data = s;
	uv_timer_start(&s->ca_timer, on_ca_check, 1000, 1000);
	uv_unref((uv_handle_t *)&s->ca_timer);
	uv_signal_init(s->loop, &s->sigint);
	uv_signal_init(s->loop, &s->sigterm);
	s->sigint.data = s->sigterm.data = s;
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	ca_end_warn(s);
	sw_http_server_capacity(s->http, room, sizeof(room));
	sw_info("%s: %s", limits, room);
	sw_info("site %s listening on %s (port %u), %zu systems, database %s, version %s",
		s->site_code, s->listen, sw_http_server_port(s->http), sw_strmap_count(s->systems),
		sw_db_engine(s->db),
		(sw_install_version(s->dir, version, sizeof(version)), version));
	/* Listening, the database open: a service manager's start returns now. */
	sw_notify_init(&notify, s->loop);
	sw_notify_ready(&notify, "serving");
	return 0;
}

/* 0, or SW_ETIMEDOUT if work still runs on the thread pool past the drain's
 * deadline: then what it may use is not freed. */
static int server_shutdown(struct server *s)
{
	s->stopping = 1;
	sw_notify_stopping(&notify, s->reexec[0] != '\0');
	/* The last writes on the loop's own connection, once the one in flight has returned. */
	dbq_drain(s);
	registry_flush(s);
	/* Calls to agents end first, so every request waiting on one gets its answer. */
	sw_http_client_free(s->agents);
	s->agents = NULL;
	channel_stop(s);
	/* a moment, bounded, for those answers to go out before the listener closes */
	uv_timer_start(&s->flush_timer, on_last_flush, 200, 0);
	uv_run(s->loop, UV_RUN_DEFAULT);
	sw_http_server_stop(s->http);
	console_stop(s);
	if (sw_loop_drain(s->loop, SW_LOOP_DRAIN_MS)) {
		sw_warn("shutdown: work still pending after %u ms; exiting without freeing",
			SW_LOOP_DRAIN_MS);
		return SW_ETIMEDOUT;
	}
	return 0;
}

static void server_cleanup(struct server *s)
{
	s->stopping = 1;
	sw_http_client_free(s->agents);
	upgrade_free(s);
	deploy_free(s);
	json_decref(s->meter_urls);
	json_decref(s->meter_names);
	registry_free(s);
	licenses_free(s);
	admins_free(s);
	console_free(s);
	metrics_free(s);
	sw_db_close(s->dbq_db);
	sw_db_close(s->db);
	ca_free(s);
	sw_conf_free(s->conf);
	free(s->cert_pem);
	free(s->key_pem);
	uv_loop_close(s->loop);
}

/* An upgrade switched versions: the new program resumes from the journal. Returns only
 * when it cannot be started. */
static int server_reexec(struct server *s)
{
	char *args[] = {"siteward-server", "--dir", s->dir, NULL};

	sw_info("restarting as %s", s->reexec);
	execv(s->reexec, args);
	sw_err("cannot start %s: %s", s->reexec, strerror(errno));
	return 1;
}

static void server_abort(struct server *s, const char *why) __attribute__((noreturn));
static void server_abort(struct server *s, const char *why)
{
	(void)s;
	/* Nothing on the loop may run on: every write would meet the missing database. */
	sw_err("%s: the server stops", why);
	exit(1);
}

int main(int argc, char **argv)
{
	static struct server s;
	const char *dir;
	char err[512];
	int check = 0, rc, stuck = 0;

	sw_log_init("siteward-server", SW_LOG_INFO);
	if (argc > 1 && strcmp(argv[1], "init") == 0)
		return site_init(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "renew-admin") == 0) {
		if (sw_daemon_options(argc - 1, argv + 1, "siteward-server", usage, "SITEWARD_SITE",
				      SW_PATH_SERVER_DIR, &dir, &check))
			return 2;
		if (!dir)
			return 0; /* --help, --version */
		return site_renew_admin(dir);
	}
	if (sw_daemon_options(argc, argv, "siteward-server", usage, "SITEWARD_SITE",
			      SW_PATH_SERVER_DIR, &dir, &check))
		return 2;
	if (!dir)
		return 0; /* --help, --version */
	/* a service pack newer than this program runs instead (see install.h) */
	sw_install_exec_newer(dir, "siteward-server", argv);
	s.loop = uv_default_loop();
	s.abort = server_abort;
	s.started_ms = sw_mono_ms();
	s.products_version = sw_now_ms();
	rc = server_configure(&s, dir, check, err, sizeof(err));
	if (!rc && check)
		printf("configuration OK: site %s, %zu systems, database %s\n", s.site_code,
		       s.systems ? sw_strmap_count(s.systems) : 0, sw_db_engine(s.db));
	else if (!rc && !(rc = server_open(&s, err, sizeof(err)))) {
		uv_run(s.loop, UV_RUN_DEFAULT);
		stuck = server_shutdown(&s);
	}
	if (rc)
		fprintf(stderr, "siteward-server: %s\n", err);
	if (!stuck)
		server_cleanup(&s);
	if (!rc && s.reexec[0])
		return server_reexec(&s);
	return rc ? 1 : 0;
}

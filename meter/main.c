/*
 * siteward-meter: the license server of the software-metering role (SMS's
 * SMS_License_Server), run by the agent as the role's `meter` service.
 *
 * It grants leases on licenses of the products the site server configures, queues
 * checkouts that may wait, expires leases nobody renews, and uploads usage. Every grant,
 * check-in, expiry and denial is in its journal (ADIR/meter/journal) before it is
 * answered, so a meter killed with -9 comes back with the same leases and usage.
 */
#include "meter.h"

#include "conf.h"
#include "error.h"
#include "install.h"
#include "log.h"
#include "loop.h"
#include "paths.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "version.h"

#define TICK_MS	 1000
#define DRAIN_MS 200

static void on_signal(uv_signal_t *h, int signum)
{
	struct meter *m = h->data;

	sw_info("signal %d: shutting down", signum);
	uv_stop(m->loop);
}

static void on_drained(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Leases nobody renewed lapse: their licenses go to the queues. */
static void on_tick(uv_timer_t *t)
{
	struct meter *m = t->data;

	size_t n = lease_expire_due(m->table, sw_now_ms(), sw_mono_ms());

	if (n)
		sw_info("%zu lease%s expired unrenewed; licenses returned", n, n == 1 ? "" : "s");
	sync_usage_tick(m);
}

/* The meter listens where agent.conf says (sw_conf_meter_listen), and talks to the
 * agent's site server with the agent's certificate. */
static int configure(struct meter *m, const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX + 64];
	struct sw_conf *conf = NULL;
	const char *server;
	int level, rc;

	if (!realpath(dir, m->dir)) {
		sw_seterr(err, errlen, "%s: no such agent folder", dir);
		return SW_ENOTFOUND;
	}
	/* the agent's configuration: /etc/siteward/agent.conf for the default folder */
	sw_path_conf(m->dir, SW_PATH_AGENT_DIR, "agent.conf", path, sizeof(path));
	if ((rc = sw_conf_load(path, &conf, err, errlen)))
		return rc;
	/* The agent's log level is the meter's too: one knob per machine. */
	if ((level = sw_log_level_parse(sw_conf_get(conf, "log", "level", "info"))) >= 0)
		sw_log_init("siteward-meter", (enum sw_log_level)level);
	server = sw_conf_get(conf, "agent", "server", NULL);
	if (!server || strncmp(server, "https://", 8) != 0) {
		sw_seterr(err, errlen, "%s: [agent] server must be https://HOST:PORT", path);
		rc = SW_EINVAL;
		goto out;
	}
	snprintf(m->server, sizeof(m->server), "%s", server);
	if ((rc = sw_conf_meter_listen(conf, m->listen, sizeof(m->listen)))) {
		sw_seterr(err, errlen,
			  "%s: [agent] listen gives no port above it; set [meter] listen", path);
		goto out;
	}
	sw_path_join(m->ca_file, sizeof(m->ca_file), m->dir, "ca.crt");
	sw_path_join(m->cert_file, sizeof(m->cert_file), m->dir, "agent.crt");
	sw_path_join(m->key_file, sizeof(m->key_file), m->dir, "agent.key");
	sw_path_join(m->data_dir, sizeof(m->data_dir), m->dir, "meter");
	if (mkdir(m->data_dir, 0700) < 0 && errno != EEXIST) {
		sw_seterr(err, errlen, "cannot create %s: %s", m->data_dir, strerror(errno));
		rc = SW_EIO;
		goto out;
	}
	/* One license server per folder: a second would rewrite the journal under the
	 * first. The lock goes with the process, however it ends. */
	{
		char lock[PATH_MAX + 16];
		int fd;
		sw_path_join(lock, sizeof(lock), m->data_dir, "lock");
		fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
			sw_seterr(err, errlen, "another siteward-meter is running on %s",
				  m->data_dir);
			if (fd >= 0)
				close(fd);
			rc = SW_EBUSY;
			goto out;
		}
		/* kept open for the life of the process */
	}
	/* It serves with the system's meter certificate, good for serving alone; a system
	 * enrolled before there was one serves with its agent certificate. It calls the
	 * site server with the agent's (cert_file). */
	{
		char meter_crt[PATH_MAX + 16];
		int own = (sw_path_join(meter_crt, sizeof(meter_crt), m->dir, "meter.crt"),
			   access(meter_crt, F_OK) == 0);

		if ((rc = sw_pem_read(m->dir, "ca.crt", &m->ca_pem, err, errlen)) ||
		    (rc = sw_pem_read(m->dir, own ? "meter.crt" : "agent.crt", &m->cert_pem, err,
				      errlen)) ||
		    (rc = sw_pem_read(m->dir, own ? "meter.key" : "agent.key", &m->key_pem, err,
				      errlen)))
			goto out;
	}
out:
	sw_conf_free(conf);
	return rc;
}

static int replay_apply(void *arg, const json_t *rec, char *err, size_t errlen)
{
	return lease_apply(arg, rec, sw_now_ms(), sw_mono_ms(), err, errlen);
}

/* The cached configuration first, so recovered leases find their products; then the
 * journal. */
static int recover(struct meter *m, char *err, size_t errlen)
{
	int rc;

	if (!(m->table = lease_table_new())) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	sync_load_cache(m);
	rc = journal_open(m->loop, m->data_dir, replay_apply, lease_snapshot, m->table, &m->journal,
			  err, errlen);
	if (rc)
		return rc;
	m->table->journal = m->journal;
	sw_info("recovered %zu leases and %zu pending usage records", m->table->nleases,
		m->table->nusage);
	return 0;
}

/* Removed systems are refused at once, with the list the site server last sent. */
static int is_revoked(void *arg, const char *serial)
{
	struct meter *m = arg;

	return lease_revoked(m->table, serial);
}

static int serve(struct meter *m, char *err, size_t errlen)
{
	struct sw_http_server_opts o = {.listen = m->listen,
					.cert_pem = m->cert_pem,
					.key_pem = m->key_pem,
					.ca_pem = m->ca_pem,
					.routes = api_routes,
					.nroutes = api_nroutes,
					.arg = m,
					.is_revoked = is_revoked};
	int rc;

	if ((rc = api_metrics_open(m, err, errlen)))
		return rc;
	o.metrics = m->metrics;
	return sw_http_server_start(m->loop, &o, &m->http, err, errlen);
}

static void usage(FILE *f)
{
	fputs("usage: siteward-meter [--dir AGENT-DIR]\n", f);
}

/* Configuration, the journal's leases and usage, the listener and the site server's
 * polls; then the signals and the expiry tick. */
static int meter_open(struct meter *m, const char *dir, char *err, size_t errlen)
{
	struct sw_nofile nofile;
	char version[64], limits[160] = "open-file limit unknown", room[256];
	int rc;

	/* Every client holds a connection while it runs: the soft limit on open files goes
	 * up to the hard one before anything is opened. */
	if (sw_nofile_raise(&nofile) == 0)
		sw_nofile_describe(&nofile, limits, sizeof(limits));
	if ((rc = configure(m, dir, err, errlen)) || (rc = recover(m, err, errlen)) ||
	    (rc = serve(m, err, errlen)) || (rc = sync_start(m, err, errlen)))
		return rc;
	signal(SIGPIPE, SIG_IGN);
	uv_signal_init(m->loop, &m->sigint);
	uv_signal_init(m->loop, &m->sigterm);
	m->sigint.data = m->sigterm.data = m;
	uv_signal_start(&m->sigint, on_signal, SIGINT);
	uv_signal_start(&m->sigterm, on_signal, SIGTERM);
	uv_timer_init(m->loop, &m->tick);
	m->tick.data = m;
	uv_timer_start(&m->tick, on_tick, TICK_MS, TICK_MS);
	/* the package version of the tree it runs from, as the agent reports its own */
	sw_install_version(m->dir, version, sizeof(version));
	sw_http_server_capacity(m->http, room, sizeof(room));
	sw_info("%s: %s", limits, room);
	sw_info("listening on %s, version %s", m->listen, version);
	return 0;
}

/* The queue is told to ask again, what is journaled is flushed and answered, then the
 * server goes. */
/* 0, or SW_ETIMEDOUT if work still runs on the thread pool past the drain's
 * deadline: then what it may use is not freed. */
static int meter_shutdown(struct meter *m)
{
	m->stopping = 1;
	api_shutdown(m);
	/* A moment for those answers to leave; bounded, whatever the peers do. */
	uv_timer_start(&m->tick, on_drained, DRAIN_MS, 0);
	uv_run(m->loop, UV_RUN_DEFAULT);
	journal_close(m->journal);
	m->journal = m->table->journal = NULL;
	sync_stop(m);
	sw_http_server_stop(m->http);
	if (sw_loop_drain(m->loop, SW_LOOP_DRAIN_MS)) {
		sw_warn("shutdown: work still pending after %u ms; exiting without freeing",
			SW_LOOP_DRAIN_MS);
		return SW_ETIMEDOUT;
	}
	return 0;
}

/* What a start that failed part of the way had opened. */
static int meter_close(struct meter *m)
{
	journal_close(m->journal);
	sync_stop(m);
	sw_http_server_stop(m->http);
	return sw_loop_drain(m->loop, SW_LOOP_DRAIN_MS);
}

static void meter_cleanup(struct meter *m)
{
	lease_table_free(m->table);
	api_free(m);
	free(m->ca_pem);
	free(m->cert_pem);
	free(m->key_pem);
	uv_loop_close(m->loop);
}

int main(int argc, char **argv)
{
	static struct meter m;
	const char *dir;
	char err[512];
	int rc, stuck;

	sw_log_init("siteward-meter", SW_LOG_INFO);
	if (sw_daemon_options(argc, argv, "siteward-meter", usage, "SITEWARD_AGENT",
			      SW_PATH_AGENT_DIR, &dir, NULL))
		return 2;
	if (!dir)
		return 0; /* --help, --version */
	m.loop = uv_default_loop();
	m.started_ms = sw_mono_ms();
	if ((rc = meter_open(&m, dir, err, sizeof(err)))) {
		fprintf(stderr, "siteward-meter: %s\n", err);
		stuck = meter_close(&m);
	} else {
		uv_run(m.loop, UV_RUN_DEFAULT);
		stuck = meter_shutdown(&m);
	}
	if (!stuck)
		meter_cleanup(&m);
	return rc ? 1 : 0;
}

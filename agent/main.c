/*
 * siteward-agent: enrolls once, then heartbeats to the site server and answers the
 * server's calls on its own mutual-TLS API. One libuv loop; runs until SIGINT or SIGTERM.
 */
#include "agent.h"

#include "error.h"
#include "install.h"
#include "log.h"
#include "loop.h"
#include "notify.h"
#include "paths.h"
#include "pki.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "version.h"

/* The service manager's watchdog, fed from the loop. */
static struct sw_notify notify;

static const char *const known_settings[] = {
    "agent.name",
    "agent.server",
    "agent.listen",
    "agent.request_timeout_ms",
    "agent.connect_timeout_ms",
    "agent.renew_retry_ms",
    "log.level",
    "service.*.role",
    "service.*.command",
    "service.*.environment",
    "service.*.directory",
    "service.*.user",
    "service.*.restart",
    "service.*.stop_timeout",
    "service.*.restart_delay_ms",
    "meter.listen",
    "metering.passive_interval_ms",
    "run.offline",
    "inventory.dpkg_status",
    "deploy.root",
    "distribution.listen",
    "deploy.dpkg",
    "metrics.file",
    NULL,
};

static void usage(FILE *f)
{
	fprintf(f, "usage: siteward-agent [--dir DIR] [-n]\n"
		   "       siteward-agent init [--dir DIR] --server https://HOST:PORT --name NAME\n"
		   "                           (--token-file FILE | --token TOKEN | "
		   "SITEWARD_TOKEN=TOKEN)\n"
		   "       siteward-agent --version\n");
}

static int agent_configure(struct agent *a, const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX + 64], sub[400];
	unsigned connect;
	int lv, rc;

	if (!realpath(dir, a->dir)) {
		sw_seterr(err, errlen, "%s: no such agent folder (enroll with siteward-agent init)",
			  dir);
		return SW_ENOTFOUND;
	}
	/* the default folder's is /etc/siteward/agent.conf; a --dir folder holds its own */
	if (sw_path_conf(a->dir, SW_PATH_AGENT_DIR, "agent.conf", path, sizeof(path))) {
		sw_seterr(err, errlen, "%s: path too long", a->dir);
		return SW_ETOOBIG;
	}
	if ((rc = sw_conf_load(path, &a->conf, err, errlen)))
		return rc;
	if ((rc = sw_conf_check(a->conf, known_settings, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(a->conf, "agent", "request_timeout_ms", 10000, 100, 600000,
				   &a->request_timeout_ms, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(a->conf, "agent", "connect_timeout_ms", 5000, 100, 600000,
				   &connect, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(a->conf, "agent", "renew_retry_ms", 30000, 100, 3600000,
				   &a->renew_retry_ms, sub, sizeof(sub))) ||
	    (rc = sw_conf_get_uint(a->conf, "metering", "passive_interval_ms", 10000, 0, 3600000,
				   &a->passive_ms, sub, sizeof(sub)))) {
		sw_seterr(err, errlen, "%s: %s", path, sub);
		return rc;
	}
	lv = sw_log_level_parse(sw_conf_get(a->conf, "log", "level", "info"));
	if (lv < 0) {
		sw_seterr(err, errlen, "%s: [log] level must be debug, info, warn or error", path);
		return SW_EINVAL;
	}
	snprintf(a->name, sizeof(a->name), "%s", sw_conf_get(a->conf, "agent", "name", ""));
	snprintf(a->server, sizeof(a->server), "%s", sw_conf_get(a->conf, "agent", "server", ""));
	if (!sw_name_valid(a->name) || strncmp(a->server, "https://", 8) != 0) {
		sw_seterr(err, errlen, "%s: [agent] needs a valid name and an https:// server",
			  path);
		return SW_EINVAL;
	}
	sw_log_init("siteward-agent", (enum sw_log_level)lv);
	if (roles_check_config(a, sub, sizeof(sub))) {
		sw_seterr(err, errlen, "%s: %s", path, sub);
		return SW_EINVAL;
	}
	if (sw_conf_meter_listen(a->conf, a->meter_listen, sizeof(a->meter_listen)))
		a->meter_listen[0] = '\0'; /* the meter says why it cannot start */
	if ((rc = renew_recover(a->dir, err, errlen)) ||
	    (rc = sw_pem_read(a->dir, "ca.crt", &a->ca_pem, err, errlen)) ||
	    (rc = sw_pem_read(a->dir, "agent.crt", &a->cert_pem, err, errlen)) ||
	    (rc = sw_pem_read(a->dir, "agent.key", &a->key_pem, err, errlen)) ||
	    (rc = sw_pki_bundle_id(a->ca_pem, a->ca_id, err, errlen)))
		return rc;
	a->connect_timeout_ms = connect;
	return agent_clients_new(a, 1);
}

int agent_client_new(struct agent *a, const char *peer_role, unsigned max_host_connections,
		     struct sw_http_client **out)
{
	char ca[PATH_MAX + 64], crt[PATH_MAX + 64], key[PATH_MAX + 64];

	sw_path_join(ca, sizeof(ca), a->dir, "ca.crt");
	sw_path_join(crt, sizeof(crt), a->dir, "agent.crt");
	sw_path_join(key, sizeof(key), a->dir, "agent.key");
	struct sw_http_client_opts co = {.ca_file = ca,
					 .cert_file = crt,
					 .key_file = key,
					 .connect_timeout_ms = a->connect_timeout_ms,
					 .peer_role = peer_role,
					 .max_host_connections = max_host_connections};
	return sw_http_client_new(a->loop, &co, out);
}

int agent_clients_new(struct agent *a, int bulk)
{
	int rc;

	/* Packages come on a connection of their own, so a long download delays no poll. */
	if (bulk && (rc = agent_client_new(a, SW_PKI_ROLE_SERVER, 0, &a->bulk)))
		return rc;
	/* Everything else goes on the one connection the channel keeps. */
	return agent_client_new(a, SW_PKI_ROLE_SERVER, 1, &a->client);
}

static void on_services_changed(void *arg)
{
	heartbeat_soon(arg);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct agent *a = h->data;

	sw_info("signal %d: shutting down", signum);
	/* a stop asked for wins over a restart an upgrade had planned */
	a->restart_exe[0] = '\0';
	uv_stop(a->loop);
}

static void agent_init(struct agent *a, char **argv)
{
	a->loop = uv_default_loop();
	a->started_ms = sw_mono_ms();
	a->heartbeat_s = 15;
	if (getenv(HEARTBEAT_ENV)) {
		unsigned long hb = strtoul(getenv(HEARTBEAT_ENV), NULL, 10);
		if (hb >= 1 && hb <= 3600)
			a->heartbeat_s = (unsigned)hb;
		unsetenv(HEARTBEAT_ENV); /* not for the services it starts */
	}
	a->argv = argv;
	if (sw_install_self(a->self_exe, sizeof(a->self_exe)))
		a->self_exe[0] = '\0';
	sw_log_init("siteward-agent", SW_LOG_INFO);
}

/* Services, the ticket socket, passive metering, the signals and the channel. Says why
 * on stderr when it fails. */
static int agent_open(struct agent *a)
{
	struct sw_nofile nofile;
	char limits[160];

	signal(SIGPIPE, SIG_IGN);
	/* Services, the channel and downloads hold descriptors; an agent short of them
	 * cannot even report. (Services inherit the raised limit.) */
	if (sw_nofile_raise(&nofile) == 0) {
		sw_nofile_describe(&nofile, limits, sizeof(limits));
		sw_info("%s", limits);
	}
	a->sup = supervisor_new(a->loop, a->dir, on_services_changed, a);
	/* before the roles: services an upgrade stopped must stay stopped */
	if (!a->sup || upgrade_init(a))
		return 1;
	roles_load(a);
	usage_cache_prepare(a);
	if (ticket_start(a)) {
		fprintf(stderr, "siteward-agent: out of memory\n");
		return 1;
	}
	a->passive = passive_start(a, a->passive_ms);
	uv_signal_init(a->loop, &a->sigint);
	uv_signal_init(a->loop, &a->sigterm);
	a->sigint.data = a->sigterm.data = a;
	uv_signal_start(&a->sigint, on_signal, SIGINT);
	uv_signal_start(&a->sigterm, on_signal, SIGTERM);
	if (channel_start(a) || metrics_start(a) || renew_start(a) || inventory_start(a)) {
		fprintf(stderr, "siteward-agent: out of memory\n");
		return 1;
	}
	if (sw_conf_get(a->conf, "agent", "listen", NULL))
		sw_info("[agent] listen is no longer used: the agent opens no port, and takes "
			"the server's commands over the connection it keeps");
	sw_info("%s started, server %s, version %s", a->name, a->server, a->version);
	/* Ready once its services are adopted and the channel opens; the server may be
	 * away, which the agent rides out on its own. */
	sw_notify_init(&notify, a->loop);
	sw_notify_ready(&notify, "running");
	return 0;
}

/* 0, or SW_ETIMEDOUT if work still runs on the thread pool past the drain's
 * deadline: then what it may use is not freed. */
static int agent_shutdown(struct agent *a)
{
	a->stopping = 1;
	sw_notify_stopping(&notify, a->restart_exe[0] != '\0');
	passive_stop(a->passive);
	ticket_stop(a);
	renew_stop(a);
	inventory_stop(a);
	/* answers owed for commands and deployments, while the channel can take them */
	deploy_stop(a);
	exec_stop(a);
	channel_stop(a);
	metrics_stop(a);
	upgrade_stop(a);
	/* Services keep running: a restarted agent finds them again. */
	supervisor_free(a->sup);
	sw_http_client_free(a->client);
	sw_http_client_free(a->bulk);
	sw_http_client_free(a->dp_client);
	a->client = a->bulk = a->dp_client = NULL;
	dp_stop(a); /* after the downloads, whose ends it hears */
	if (sw_loop_drain(a->loop, SW_LOOP_DRAIN_MS)) {
		sw_warn("shutdown: work still pending after %u ms; exiting without freeing",
			SW_LOOP_DRAIN_MS);
		return SW_ETIMEDOUT;
	}
	return 0;
}

static void agent_cleanup(struct agent *a)
{
	sw_http_client_free(a->client);
	sw_http_client_free(a->bulk);
	sw_conf_free(a->conf);
	free(a->ca_pem);
	free(a->cert_pem);
	free(a->key_pem);
	json_decref(a->roles);
	json_decref(a->meters);
	json_decref(a->written_off);
	ticket_free(a);
	inventory_free(a);
	uv_loop_close(a->loop);
	upgrade_free(a);
}

/* An unenrolled agent in the default folder with /etc/siteward/enroll.conf enrolls before
 * it runs. A server not answering (yet: machines are often installed before their
 * network or the site server is up) is tried again, 5 s then twice as long each time up
 * to 5 min, each wait bounded and told to the service manager; anything else is for a
 * person to fix, said in one line, and ends the agent with ENROLL_CONFIG, which the unit
 * does not restart. */
static int enroll_unattended(const char *dir)
{
	unsigned wait_ms = 5000;
	char status[200];
	int rc;

	for (;;) {
		sw_notify_waiting("enrolling", ENROLL_ATTEMPT_MS + 10000);
		if ((rc = enroll_auto(dir)) != ENROLL_UNREACHABLE)
			return rc;
		snprintf(status, sizeof(status),
			 "not enrolled: the site server in %s does not answer; next attempt in "
			 "%u s",
			 ENROLL_CONF, wait_ms / 1000);
		sw_warn("%s", status);
		sw_notify_waiting(status, wait_ms + 10000);
		struct timespec ts = {.tv_sec = wait_ms / 1000};
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		wait_ms = wait_ms >= 150000 ? 300000 : wait_ms * 2;
	}
}

/* `init` without --dir enrolls into the default folder. */
static int enroll(int argc, char **argv)
{
	char *args[64];
	int n = 0;

	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "--dir") == 0 || strncmp(argv[i], "--dir=", 6) == 0)
			return enroll_main(argc, argv);
	if (argc + 3 > (int)SW_ARRAY_LEN(args)) {
		fprintf(stderr, "siteward-agent: too many arguments\n");
		return 2;
	}
	args[n++] = argv[0];
	args[n++] = "--dir";
	args[n++] = SW_PATH_AGENT_DIR;
	for (int i = 1; i < argc; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	return enroll_main(n, args);
}

int main(int argc, char **argv)
{
	static struct agent a;
	const char *dir;
	char err[512];
	int check = 0, rc, stuck = 0;

	if (argc > 1 && strcmp(argv[1], "init") == 0)
		return enroll(argc - 1, argv + 1);
	if (sw_daemon_options(argc, argv, "siteward-agent", usage, "SITEWARD_AGENT",
			      SW_PATH_AGENT_DIR, &dir, &check))
		return 2;
	if (!dir)
		return 0; /* --help, --version */
	sw_install_exec_newer(dir, "siteward-agent", argv);
	agent_init(&a, argv);
	if (!check && (rc = enroll_unattended(dir)))
		return rc;
	if ((rc = agent_configure(&a, dir, err, sizeof(err))))
		fprintf(stderr, "siteward-agent: %s\n", err);
	else
		sw_install_version(a.dir, a.version, sizeof(a.version));
	/* an agent whose certificate has expired cannot renew it: it says so once and
	 * ends with a status of its own, rather than retrying what cannot work */
	if (!rc && !check && renew_expired(&a, err, sizeof(err))) {
		sw_err("%s", err);
		agent_cleanup(&a);
		return AGENT_EXIT_REENROLL;
	}
	if (!rc && check)
		printf("configuration OK: %s, server %s\n", a.name, a.server);
	else if (!rc && !(rc = agent_open(&a))) {
		uv_run(a.loop, UV_RUN_DEFAULT);
		stuck = agent_shutdown(&a);
	}
	if (!stuck)
		agent_cleanup(&a);
	/* the loop has closed everything it had open; the upgrade's program goes on */
	if (!rc && a.restart_exe[0])
		rc = upgrade_exec(&a);
	if (!rc && a.exit_status)
		return a.exit_status;
	return rc ? 1 : 0;
}

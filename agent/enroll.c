/*
 * siteward-agent init: enrolls this machine with a token.
 *
 * The token comes from a file (--token-file), the environment (SITEWARD_TOKEN) or the
 * command line (--token, which every local user can read in /proc), exactly one of
 * them. It carries a pin of the site CA, so the agent checks it reached the right
 * server before it sends its request. Nothing is written to the agent's folder until
 * the server has accepted the enrollment.
 *
 * The default folder's agent.conf is /etc/siteward/agent.conf (sw_path_conf), and an
 * agent started there unenrolled enrolls itself from /etc/siteward/enroll.conf and
 * /etc/siteward/token (enroll_auto), with the same code as init.
 */
#include "agent.h"

#include "clock.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "paths.h"
#include "pki.h"
#include "proto.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A token file is a line; more than this is not one. */
#define TOKEN_FILE_MAX 4096

static void usage(FILE *f)
{
	fprintf(f,
		"usage: siteward-agent init [--dir DIR] [--if-needed] --server https://HOST:PORT\n"
		"                           --name NAME (--token-file FILE [--remove-token-file] "
		"|\n"
		"                            --token TOKEN | SITEWARD_TOKEN in the "
		"environment)\n");
}

/* The first line of `path`, which only its owner (this user or root) may read or write:
 * a token others can read enrolls their machines, and one they can write enrolls this
 * machine where they choose. `out` gets it without the line's end or trailing blanks. */
static int token_file_read(const char *path, char *out, size_t len, char *err, size_t errlen)
{
	char buf[TOKEN_FILE_MAX + 1];
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd, rc = 0;

	/* O_NONBLOCK: a FIFO put in its place must not hold enrollment forever */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		sw_seterr(err, errlen, "cannot read the token file %s: %s", path, strerror(errno));
		return SW_EIO;
	}
	if (fstat(fd, &st) < 0) {
		sw_seterr(err, errlen, "cannot read the token file %s: %s", path, strerror(errno));
		rc = SW_EIO;
	} else if (!S_ISREG(st.st_mode)) {
		sw_seterr(err, errlen, "the token file %s is not a regular file", path);
		rc = SW_EINVAL;
	} else if (st.st_uid != geteuid() && st.st_uid != 0) {
		sw_seterr(err, errlen,
			  "the token file %s belongs to uid %u, who could change it; chown "
			  "root %s",
			  path, (unsigned)st.st_uid, path);
		rc = SW_EDENIED;
	} else if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		sw_seterr(err, errlen,
			  "the token file %s can be read or written by others (mode %04o); "
			  "chmod 600 %s",
			  path, (unsigned)(st.st_mode & 07777), path);
		rc = SW_EDENIED;
	}
	while (!rc && got < sizeof(buf) - 1) {
		n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sw_seterr(err, errlen, "cannot read the token file %s: %s", path,
				  strerror(errno));
			rc = SW_EIO;
		}
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (rc)
		return rc;
	buf[got] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	for (size_t k = strlen(buf); k > 0 && strchr(" \t\r", buf[k - 1]); k--)
		buf[k - 1] = '\0';
	if (!buf[0]) {
		sw_seterr(err, errlen,
			  "the token file %s is empty; put in it the line 'siteward token "
			  "create' prints",
			  path);
		return SW_EINVAL;
	}
	if (strlen(buf) >= len) {
		sw_seterr(err, errlen,
			  "malformed token in %s (expected the line 'siteward token create' "
			  "prints)",
			  path);
		return SW_EINVAL;
	}
	snprintf(out, len, "%s", buf);
	return 0;
}

/* The server's {"error": …} if it sent one, else the raw status. */
static void server_error(long status, const char *body, char *out, size_t len)
{
	json_t *j = NULL;
	const char *msg = NULL;

	if (sw_json_parse_object(body, strlen(body), &j, NULL, 0) == 0)
		sw_json_str(j, "error", 400, 0, &msg, NULL, 0);
	if (msg)
		snprintf(out, len, "%s", msg);
	else
		snprintf(out, len, "server answered HTTP %ld", status);
	json_decref(j);
}

/* A clock off enough to be worth setting right: `out` says by how much. */
static int clock_off(int known, int64_t skew_ms, char *out, size_t len)
{
	char how[64];

	if (!known || sw_clock_judge(0, skew_ms, 0, 0) == SW_CLOCK_OK)
		return 0;
	sw_clock_describe(skew_ms, how, sizeof(how));
	snprintf(out, len, "this machine's clock is %s the site server's", how);
	return 1;
}

/* Whether this machine's clock is why the server's certificate did not verify: the
 * site CA or the server's certificate (`srv`, as the server sent it, may be NULL) is not
 * valid by it. `out` says so, as far off the server's clock as it is (`skew_ms`, when
 * `known`). Unverified data, used only to tell a person what to do. */
static int clock_breaks(const char *ca, const char *srv, int known, int64_t skew_ms, char *out,
			size_t len)
{
	int64_t now = sw_now_ms(), nb = 0, na = 0, snb, sna;

	if (sw_pki_cert_validity(ca, &nb, &na, NULL, 0))
		return 0;
	if (srv && sw_pki_cert_validity(srv, &snb, &sna, NULL, 0) == 0) {
		nb = snb > nb ? snb : nb;
		na = sna < na ? sna : na;
	}
	if (now >= nb && now <= na)
		return 0;
	/* a server whose own clock is as wrong gets no figure: only the certificates */
	if (!clock_off(known, skew_ms, out, len))
		snprintf(out, len, "this machine's clock is %s the site's certificates",
			 now < nb ? "before the start of" : "past the end of");
	return 1;
}

static int write_in(const char *dir, const char *name, const char *text, unsigned mode, char *err,
		    size_t errlen)
{
	char path[PATH_MAX + 64];

	if (sw_path_join(path, sizeof(path), dir, name))
		return SW_ETOOBIG;
	return sw_file_write_atomic(path, text, strlen(text), mode, err, errlen);
}

/* init's work; the exit status, or ENROLL_UNREACHABLE when the server did not answer
 * (nothing spent, worth trying again). */
static int enroll_run(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"server", required_argument, NULL, 's'},
	    {"token", required_argument, NULL, 't'},
	    {"token-file", required_argument, NULL, 'f'},
	    {"remove-token-file", no_argument, NULL, 'r'},
	    {"if-needed", no_argument, NULL, 'i'},
	    {"name", required_argument, NULL, 'n'},
	    {"listen", required_argument, NULL, 'l'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *server = NULL, *token = NULL, *name = NULL, *listen = NULL;
	const char *token_file = NULL, *env_token = getenv("SITEWARD_TOKEN");
	char file_token[SW_TOKEN_LEN + 1];
	int remove_token_file = 0, if_needed = 0, sources;
	char secret[SW_TOKEN_SECRET_HEX + 1], pin[SW_TOKEN_PIN_HEX + 1], fp[65];
	struct sw_pki_ca_info cas[4];
	size_t ncas = 0;
	int pinned_ca = 0;
	char err[512], url[400], conf_path[PATH_MAX + 64], reason[128],
	    tmpca[] = "/tmp/siteward-ca.XXXXXX";
	char *resp = NULL, *key = NULL, *csr = NULL, *body = NULL, conf[2048];
	char *client_key = NULL, *client_csr = NULL, *meter_key = NULL, *meter_csr = NULL;
	const char *ca = NULL, *cert = NULL, *client_cert = NULL, *server_cert = NULL;
	const char *meter_cert = NULL;
	json_t *j = NULL, *reply = NULL;
	long status;
	int opt, rc = 1, tmpfd = -1, server_time = 0;
	int64_t t0, server_now = 0, skew = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 's': server = optarg; break;
		case 't': token = optarg; break;
		case 'f': token_file = optarg; break;
		case 'r': remove_token_file = 1; break;
		case 'i': if_needed = 1; break;
		case 'n': name = optarg; break;
		case 'l': listen = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!dir || !server || !name || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (sw_path_conf(dir, SW_PATH_AGENT_DIR, "agent.conf", conf_path, sizeof(conf_path))) {
		fprintf(stderr, "siteward-agent: %s: path too long\n", dir);
		return 2;
	}
	/* what a provisioning script runs on every boot: once enrolled, nothing to do */
	if (if_needed && access(conf_path, F_OK) == 0) {
		printf("%s is enrolled already (%s)\n", dir, conf_path);
		return 0;
	}
	/* An empty SITEWARD_TOKEN is one not set, as a templated environment leaves it. */
	if (env_token && !env_token[0])
		env_token = NULL;
	sources = !!token + !!token_file + !!env_token;
	if (sources == 0) {
		fprintf(stderr, "siteward-agent: no token: give --token-file FILE, set "
				"SITEWARD_TOKEN, or give --token TOKEN\n");
		return 2;
	}
	if (sources > 1) {
		fprintf(stderr,
			"siteward-agent: the token is given %d ways (%s%s%s); give exactly one\n",
			sources, token ? "--token " : "", token_file ? "--token-file " : "",
			env_token ? "SITEWARD_TOKEN" : "");
		return 2;
	}
	if (remove_token_file && !token_file) {
		fprintf(stderr, "siteward-agent: --remove-token-file goes with --token-file\n");
		return 2;
	}
	if (token_file) {
		if (token_file_read(token_file, file_token, sizeof(file_token), err, sizeof(err))) {
			fprintf(stderr, "siteward-agent: %s\n", err);
			return 1;
		}
		token = file_token;
	} else if (env_token) {
		token = env_token;
	}
	if (strncmp(server, "https://", 8) != 0 || strlen(server) > 250) {
		fprintf(stderr, "siteward-agent: --server must be https://HOST:PORT\n");
		return 2;
	}
	if (!sw_name_valid(name)) {
		fprintf(stderr,
			"siteward-agent: name '%s' must be 1-63 letters, digits, '.', '_' or '-'\n",
			name);
		return 2;
	}
	/* Scripts written when agents listened keep working. */
	if (listen)
		fprintf(stderr,
			"siteward-agent: note: --listen %s is ignored: the agent opens no "
			"port; it connects to the server and takes its commands that way\n",
			listen);
	if (sw_proto_token_split(token, secret, pin)) {
		fprintf(stderr,
			"siteward-agent: enrollment refused: malformed token%s%s (expected the "
			"line 'siteward token create' prints)\n",
			token_file  ? " in "
			: env_token ? " in SITEWARD_TOKEN"
				    : "",
			token_file ? token_file : "");
		return 1;
	}
	if (access(conf_path, F_OK) == 0) {
		fprintf(stderr,
			"siteward-agent: %s is already enrolled (%s exists); choose an empty "
			"folder\n",
			dir, conf_path);
		return 1;
	}

	/* The token is spent once the server accepts: make sure the folder can be written
	 * before asking. */
	{
		char parent[PATH_MAX];
		snprintf(parent, sizeof(parent), "%s", dir);
		char *slash = strrchr(parent, '/');
		if (!slash)
			snprintf(parent, sizeof(parent), ".");
		else if (slash == parent)
			parent[1] = '\0';
		else
			*slash = '\0';
		if (access(dir, W_OK) != 0 && access(parent, W_OK) != 0) {
			fprintf(stderr, "siteward-agent: cannot create %s: %s is not writable\n",
				dir, parent);
			return 1;
		}
	}

	/* 1. Fetch the site CA and check it against the token's pin. */
	struct sw_http_client_opts insecure = {.insecure = 1};
	snprintf(url, sizeof(url), "%s/v1/ca", server);
	t0 = sw_now_ms();
	if ((rc = sw_http_fetch(&insecure, "GET", url, NULL, ENROLL_TIMEOUT_MS, &status, &resp, err,
				sizeof(err)))) {
		fprintf(stderr, "siteward-agent: cannot reach %s: %s\n", server, err);
		rc = ENROLL_UNREACHABLE;
		goto out;
	}
	rc = 1;
	if (status != 200 || sw_json_parse_object(resp, strlen(resp), &j, NULL, 0) ||
	    sw_json_str(j, "ca", 64 * 1024, 1, &ca, NULL, 0) ||
	    sw_pki_bundle_read(ca, cas, SW_ARRAY_LEN(cas), &ncas, NULL, 0)) {
		fprintf(stderr, "siteward-agent: %s is not a siteward server\n", server);
		goto out;
	}
	/* the token pins the CA that issued when it was made: one of the site's CAs (two
	 * while one follows another) */
	pinned_ca = 0;
	for (size_t i = 0; i < ncas; i++)
		if (sw_pki_cert_fingerprint(cas[i].pem, fp, NULL, 0) == 0 &&
		    strncmp(fp, pin, SW_TOKEN_PIN_HEX) == 0)
			pinned_ca = 1;
	sw_pki_bundle_free(cas, ncas);
	/* The server's clock against ours, at the middle of the exchange; only for telling
	 * a person about a clock error, never for trusting anything. */
	if (sw_json_int(j, "now", 1, INT64_MAX / 2, 0, &server_now, NULL, 0) == 0 && server_now) {
		skew = t0 + (sw_now_ms() - t0) / 2 - server_now;
		server_time = 1;
	}
	sw_json_str(j, "certificate", 64 * 1024, 0, &server_cert, NULL, 0);
	if (!pinned_ca) {
		fprintf(stderr,
			"siteward-agent: enrollment refused: the server's CA does not "
			"match the token (wrong server, an impostor, or a token made before "
			"the site's CA was rotated: make a new one)\n");
		goto out;
	}
	tmpfd = mkstemp(tmpca);
	if (tmpfd < 0 || write(tmpfd, ca, strlen(ca)) != (ssize_t)strlen(ca)) {
		fprintf(stderr, "siteward-agent: cannot write a temporary file: %s\n",
			strerror(errno));
		goto out;
	}

	/* 2. Send a certificate request; from here on the server is verified. */
	if (sw_pki_key_generate(&key, err, sizeof(err)) ||
	    sw_pki_csr_create(key, name, &csr, err, sizeof(err)) ||
	    sw_pki_key_generate(&client_key, err, sizeof(err)) ||
	    sw_pki_csr_create(client_key, name, &client_csr, err, sizeof(err)) ||
	    sw_pki_key_generate(&meter_key, err, sizeof(err)) ||
	    sw_pki_csr_create(meter_key, name, &meter_csr, err, sizeof(err))) {
		fprintf(stderr, "siteward-agent: %s\n", err);
		goto out;
	}
	json_t *req = json_pack("{ss ss ss ss ss}", "token", token, "name", name, "csr", csr,
				"client_csr", client_csr, "meter_csr", meter_csr);
	body = req ? sw_json_dump(req) : NULL;
	json_decref(req);
	free(resp);
	resp = NULL;
	struct sw_http_client_opts pinned = {.ca_file = tmpca, .peer_role = SW_PKI_ROLE_SERVER};
	snprintf(url, sizeof(url), "%s/v1/enroll", server);
	if (!body) {
		fprintf(stderr, "siteward-agent: out of memory\n");
		goto out;
	}
	rc = sw_http_fetch(&pinned, "POST", url, body, ENROLL_TIMEOUT_MS, &status, &resp, err,
			   sizeof(err));
	if (rc == SW_ETLS &&
	    clock_breaks(ca, server_cert, server_time, skew, reason, sizeof(reason))) {
		fprintf(stderr,
			"siteward-agent: cannot verify the site server's certificate: %s; set the "
			"time (timedatectl / chrony) and enroll again\n",
			reason);
		rc = 1;
		goto out;
	}
	if (rc) {
		fprintf(stderr, "siteward-agent: cannot reach %s: %s\n", server, err);
		rc = ENROLL_UNREACHABLE;
		goto out;
	}
	rc = 1;
	if (status != 200) {
		server_error(status, resp, err, sizeof(err));
		fprintf(stderr, "siteward-agent: %s\n", err);
		goto out;
	}
	if (sw_json_parse_object(resp, strlen(resp), &reply, NULL, 0) ||
	    sw_json_str(reply, "certificate", 64 * 1024, 1, &cert, NULL, 0) ||
	    sw_json_str(reply, "client_certificate", 64 * 1024, 0, &client_cert, NULL, 0) ||
	    sw_json_str(reply, "meter_certificate", 64 * 1024, 0, &meter_cert, NULL, 0)) {
		fprintf(stderr, "siteward-agent: the server's answer has no certificate\n");
		goto out;
	}

	/* 3. Accepted: now the agent's folder is written. */
	/* readable by the users who run siteward-run; agent.key stays the agent's own */
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "siteward-agent: cannot create %s: %s\n", dir, strerror(errno));
		goto out;
	}
	/* the default folder's configuration goes in /etc/siteward, made here on a machine
	 * with only the agent's package */
	if (strncmp(conf_path, SW_PATH_ETC "/", sizeof(SW_PATH_ETC)) == 0 &&
	    mkdir(SW_PATH_ETC, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "siteward-agent: cannot create %s: %s\n", SW_PATH_ETC,
			strerror(errno));
		goto out;
	}
	snprintf(conf, sizeof(conf),
		 "# siteward agent configuration; see siteward-agent.conf(5).\n"
		 "[agent]\n"
		 "name = %s\n"
		 "server = %s\n"
		 "request_timeout_ms = 10000\n"
		 "\n"
		 "[log]\n"
		 "level = info\n",
		 name, server);
	if (write_in(dir, "ca.crt", ca, 0644, err, sizeof(err)) ||
	    write_in(dir, "agent.key", key, 0600, err, sizeof(err)) ||
	    write_in(dir, "agent.crt", cert, 0644, err, sizeof(err)) ||
	    sw_file_write_atomic(conf_path, conf, strlen(conf), 0644, err, sizeof(err)) ||
	    /* siteward-run uses these as whichever user runs it: a certificate the
	     * metering servers accept and nothing else does */
	    (client_cert && (write_in(dir, "client.key", client_key, 0644, err, sizeof(err)) ||
			     write_in(dir, "client.crt", client_cert, 0644, err, sizeof(err)))) ||
	    /* what the metering server serves with, should the system take the role */
	    (meter_cert && (write_in(dir, "meter.key", meter_key, 0600, err, sizeof(err)) ||
			    write_in(dir, "meter.crt", meter_cert, 0644, err, sizeof(err))))) {
		fprintf(stderr, "siteward-agent: %s\n", err);
		goto out;
	}
	if (sw_path_is_default(dir, SW_PATH_AGENT_DIR))
		printf("enrolled %s with %s; start it with: systemctl start siteward-agent\n", name,
		       server);
	else
		printf("enrolled %s with %s; start it with: siteward-agent --dir %s\n", name,
		       server, dir);
	/* Enrolled: the agent never reads the token again. A file that stays is the
	 * administrator's to remove, unless asked here (a multi-use token in it still
	 * enrolls other machines). */
	if (remove_token_file && unlink(token_file) < 0)
		fprintf(stderr, "siteward-agent: note: enrolled, but cannot remove %s: %s\n",
			token_file, strerror(errno));
	/* It works, and the server corrects times from here: still worth setting right. */
	if (clock_off(server_time, skew, reason, sizeof(reason)))
		fprintf(stderr, "siteward-agent: note: %s; set the time (timedatectl / chrony)\n",
			reason);
	rc = 0;
out:
	if (tmpfd >= 0) {
		close(tmpfd);
		unlink(tmpca);
	}
	json_decref(j);
	json_decref(reply);
	free(resp);
	free(key);
	free(csr);
	free(client_key);
	free(client_csr);
	free(meter_key);
	free(meter_csr);
	free(body);
	return rc;
}

int enroll_main(int argc, char **argv)
{
	int rc = enroll_run(argc, argv);

	return rc == ENROLL_UNREACHABLE ? 1 : rc;
}

static const char *const enroll_settings[] = {"enroll.server", "enroll.name", NULL};

int enroll_auto(const char *dir)
{
	char conf_path[PATH_MAX + 64], err[400], sub[300], host[256] = "";
	const char *server, *name;
	struct sw_conf *conf = NULL;
	int rc = ENROLL_CONFIG;

	sw_path_conf(dir, SW_PATH_AGENT_DIR, "agent.conf", conf_path, sizeof(conf_path));
	if (!sw_path_is_default(dir, SW_PATH_AGENT_DIR) || access(conf_path, F_OK) == 0 ||
	    access(ENROLL_CONF, F_OK) != 0)
		return 0;
	if (sw_conf_load(ENROLL_CONF, &conf, err, sizeof(err))) {
		fprintf(stderr, "siteward-agent: not enrolled: %s\n", err);
		goto out;
	}
	if (sw_conf_check(conf, enroll_settings, sub, sizeof(sub))) {
		fprintf(stderr, "siteward-agent: not enrolled: %s: %s\n", ENROLL_CONF, sub);
		goto out;
	}
	server = sw_conf_get(conf, "enroll", "server", NULL);
	if (!server || strncmp(server, "https://", 8) != 0) {
		fprintf(stderr,
			"siteward-agent: not enrolled: %s needs [enroll] server = "
			"https://HOST:PORT, the site server\n",
			ENROLL_CONF);
		goto out;
	}
	name = sw_conf_get(conf, "enroll", "name", NULL);
	if (!name && gethostname(host, sizeof(host) - 1) == 0)
		name = host;
	if (!name || !sw_name_valid(name)) {
		fprintf(stderr,
			"siteward-agent: not enrolled: %s '%s' is not a valid system name (1-63 "
			"letters, digits, '.', '_' or '-'); set [enroll] name in %s\n",
			sw_conf_get(conf, "enroll", "name", NULL) ? "the name" : "the hostname",
			name ? name : "", ENROLL_CONF);
		goto out;
	}
	sw_info("not enrolled: enrolling %s with %s (%s, token %s)", name, server, ENROLL_CONF,
		ENROLL_TOKEN);
	{
		char *args[] = {"init",		"--dir",  (char *)dir,	"--server",
				(char *)server, "--name", (char *)name, "--token-file",
				ENROLL_TOKEN,	NULL};
		/* the environment's token is not this machine's: the file is */
		unsetenv("SITEWARD_TOKEN");
		rc = enroll_run((int)SW_ARRAY_LEN(args) - 1, args);
	}
	if (rc && rc != ENROLL_UNREACHABLE)
		rc = ENROLL_CONFIG;
out:
	sw_conf_free(conf);
	return rc;
}

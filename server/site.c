/* siteward-server init: creates a site — its CA, certificates, keys, config and database. */
#include "server.h"

#include "error.h"
#include "log.h"
#include "paths.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CA_DAYS		 3650
#define SERVER_CERT_DAYS 825
#define ADMIN_CERT_DAYS	 825
/* an admin certificate this close to its end is warned of at every start */
#define SITE_ADMIN_WARN_MS ((int64_t)60 * 86400 * 1000)
#define MAX_SANS	   16

static void usage(FILE *f)
{
	fprintf(f,
		"usage: siteward-server init [--dir DIR] --site-code ABC --listen HOST:PORT\n"
		"                            [--db URL] [--heartbeat SECONDS] [--san NAME]...\n");
}

static int site_code_valid(const char *code)
{
	if (strlen(code) != 3)
		return 0;
	for (int i = 0; i < 3; i++)
		if (!((code[i] >= 'A' && code[i] <= 'Z') || (code[i] >= '0' && code[i] <= '9')))
			return 0;
	return 1;
}

static int write_file(const char *dir, const char *name, const char *text, unsigned mode, char *err,
		      size_t errlen)
{
	char path[PATH_MAX + 64];

	if (sw_path_join(path, sizeof(path), dir, name)) {
		sw_seterr(err, errlen, "path too long: %s/%s", dir, name);
		return SW_ETOOBIG;
	}
	return sw_file_write_atomic(path, text, strlen(text), mode, err, errlen);
}

/* The configuration, in the site folder or /etc/siteward for the default one; there it
 * is readable by the group of the server's own user, when the packages made one. */
static int write_conf(const char *path, const char *text, char *err, size_t errlen)
{
	struct group *g;
	int rc;

	if (strncmp(path, SW_PATH_ETC "/", sizeof(SW_PATH_ETC)) != 0)
		return sw_file_write_atomic(path, text, strlen(text), 0600, err, errlen);
	if (mkdir(SW_PATH_ETC, 0755) < 0 && errno != EEXIST) {
		sw_seterr(err, errlen, "cannot create %s: %s", SW_PATH_ETC, strerror(errno));
		return SW_EIO;
	}
	g = getgrnam("siteward");
	if ((rc = sw_file_write_atomic(path, text, strlen(text), g ? 0640 : 0600, err, errlen)))
		return rc;
	if (g && chown(path, (uid_t)-1, g->gr_gid) < 0) {
		sw_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return SW_EIO;
	}
	return 0;
}

/* Issues a key and certificate pair under the CA and writes them as NAME.key, NAME.crt. */
static int issue_pair(struct sw_pki_ca *ca, const char *dir, const char *name,
		      const struct sw_pki_issue *what, char *err, size_t errlen)
{
	char *key = NULL, *csr = NULL, *cert = NULL, serial[41], file[64];
	int rc;

	if ((rc = sw_pki_key_generate(&key, err, errlen)) ||
	    (rc = sw_pki_csr_create(key, what->cn, &csr, err, errlen)) ||
	    (rc = sw_pki_ca_issue(ca, csr, strlen(csr), what, &cert, serial, err, errlen)))
		goto out;
	snprintf(file, sizeof(file), "%s.key", name);
	if ((rc = write_file(dir, file, key, 0600, err, errlen)))
		goto out;
	snprintf(file, sizeof(file), "%s.crt", name);
	rc = write_file(dir, file, cert, 0644, err, errlen);
out:
	free(key);
	free(csr);
	free(cert);
	return rc;
}

/* 1 when a certificate of the site folder is to be issued again: past two thirds of its
 * life, or issued by another CA than the one that issues now (a rotation's). */
static int cert_due(const struct server *s, const char *pem, const char **why)
{
	struct sw_identity id;
	int64_t nb, na;

	if (sw_pki_cert_validity(pem, &nb, &na, NULL, 0))
		return 0;
	*why = "was past two thirds of its life";
	if (sw_now_ms() >= sw_pki_renew_at(nb, na))
		return 1;
	*why = "was the old CA's";
	return sw_pki_cert_identity(pem, &id, NULL, 0) == 0 &&
	       strcmp(id.ca, sw_pki_ca_id(s->ca)) != 0;
}

/* The admin certificate issued again under `ca` for the key it has. */
static int admin_reissue(struct sw_pki_ca *ca, const char *dir, char serial[41], char *err,
			 size_t errlen)
{
	char *key = NULL, *csr = NULL, *cert = NULL;
	int rc;

	struct sw_pki_issue admin = {
	    .cn = "admin", .role = SW_PKI_ROLE_ADMIN, .days = ADMIN_CERT_DAYS};
	if (!(rc = sw_pem_read(dir, "admin.key", &key, err, errlen)) &&
	    !(rc = sw_pki_csr_create(key, admin.cn, &csr, err, errlen)) &&
	    !(rc = sw_pki_ca_issue(ca, csr, strlen(csr), &admin, &cert, serial, err, errlen)))
		rc = write_file(dir, "admin.crt", cert, 0644, err, errlen);
	free(key);
	free(csr);
	free(cert);
	return rc;
}

/* At start: a server certificate due (cert_due()) is issued again under the issuing CA,
 * for the same names, before the server listens with it; so is the site folder's admin
 * certificate, for its key (site_admin_check(), also every cert_check_interval_s). */
int site_cert_due(struct server *s)
{
	const char *why;
	char *pem = NULL;
	int due = 0;

	if (sw_pem_read(s->dir, "server.crt", &pem, NULL, 0) == 0)
		due = cert_due(s, pem, &why);
	free(pem);
	return due;
}

void site_admin_check(struct server *s)
{
	char *pem = NULL, serial[41], sub[256];
	const char *why = "";
	int64_t na, now = sw_now_ms();

	if (sw_pem_read(s->dir, "admin.crt", &pem, NULL, 0))
		return; /* none in the site folder: nothing to do */
	if (cert_due(s, pem, &why)) {
		if (admin_reissue(s->ca, s->dir, serial, sub, sizeof(sub)))
			sw_warn("the admin certificate (%s/admin.crt) %s and cannot be issued "
				"again: %s; renew it with 'siteward-server renew-admin --dir %s'",
				s->dir, why, sub, s->dir);
		else
			sw_info("the admin certificate (%s/admin.crt) %s: issued again under the "
				"site CA for its key (serial %s)",
				s->dir, why, serial);
	} else if (sw_pki_cert_validity(pem, NULL, &na, NULL, 0) == 0 &&
		   na - now < SITE_ADMIN_WARN_MS) {
		sw_warn("the admin certificate (%s/admin.crt) expires in %lld days: renew it with "
			"'siteward-server renew-admin --dir %s'",
			s->dir, (long long)((na - now) / 86400000), s->dir);
	}
	free(pem);
}

int site_certs_check(struct server *s, char *err, size_t errlen)
{
	char sans_buf[MAX_SANS + 8][SW_PKI_SAN_LEN], *pem = NULL;
	const char *sans[MAX_SANS + 9], *why = "";
	int64_t nb, na, now = sw_now_ms();
	size_t n = 0;
	int rc;

	site_admin_check(s);
	if ((rc = sw_pem_read(s->dir, "server.crt", &pem, err, errlen)) ||
	    (rc = sw_pki_cert_validity(pem, &nb, &na, err, errlen)))
		goto out;
	if (!cert_due(s, pem, &why))
		goto out;
	if ((rc = sw_pki_cert_sans(pem, sans_buf, MAX_SANS + 8, &n, err, errlen)))
		goto out;
	for (size_t i = 0; i < n; i++)
		sans[i] = sans_buf[i];
	sans[n] = NULL;
	struct sw_pki_issue server = {.cn = "site-server",
				      .role = SW_PKI_ROLE_SERVER,
				      .sans = sans,
				      .days = SERVER_CERT_DAYS,
				      .purposes = SW_PKI_TLS_SERVER | SW_PKI_TLS_CLIENT};
	if ((rc = issue_pair(s->ca, s->dir, "server", &server, err, errlen)))
		goto out;
	sw_warn("the server certificate %s (it ends in %lld days): issued again under the site "
		"CA for %zu names",
		why, (long long)((na - now) / 86400000), n);
out:
	free(pem);
	return rc;
}

/* siteward-server renew-admin [--dir DIR]: the admin certificate issued again under the
 * site CA, for the key it has. */
int site_renew_admin(const char *dir)
{
	char *ca = NULL, *cakey = NULL, serial[41], err[512];
	struct sw_pki_ca *c = NULL;
	int rc;

	if ((rc = sw_pem_read(dir, "ca.crt", &ca, err, sizeof(err))) ||
	    (rc = sw_pem_read(dir, "ca.key", &cakey, err, sizeof(err))) ||
	    (rc = sw_pki_ca_load(ca, cakey, &c, err, sizeof(err))) ||
	    (rc = admin_reissue(c, dir, serial, err, sizeof(err))))
		fprintf(stderr, "siteward-server: renew-admin: %s\n", err);
	else
		printf("admin certificate renewed for %u days: %s/admin.crt (serial %s)\n",
		       ADMIN_CERT_DAYS, dir, serial);
	sw_pki_ca_free(c);
	free(ca);
	free(cakey);
	return rc ? 1 : 0;
}

int site_init(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"site-code", required_argument, NULL, 'c'},
	    {"listen", required_argument, NULL, 'l'},
	    {"db", required_argument, NULL, 'b'},
	    {"heartbeat", required_argument, NULL, 'h'},
	    {"san", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *code = NULL, *listen = NULL, *db_url = NULL;
	const char *sans[MAX_SANS + 8];
	char host[256], hostname[256], err[512], path[PATH_MAX + 64], dbpath[PATH_MAX + 64];
	char conf[2048], absdir[PATH_MAX], console[300] = "";
	char *ca_cert = NULL, *ca_key = NULL, *sign_key = NULL, *sign_pub = NULL;
	struct sw_pki_ca *ca = NULL;
	struct sw_db *db = NULL;
	unsigned port, heartbeat = 15;
	int nsans = 0, opt, rc = 1;
	char *end;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 'c': code = optarg; break;
		case 'l': listen = optarg; break;
		case 'b': db_url = optarg; break;
		case 'h':
			heartbeat = (unsigned)strtoul(optarg, &end, 10);
			if (*end || heartbeat < 1 || heartbeat > 3600) {
				fprintf(stderr, "siteward-server: --heartbeat takes 1 to 3600 "
						"seconds\n");
				return 2;
			}
			break;
		case 's':
			if (nsans == MAX_SANS) {
				fprintf(stderr, "siteward-server: at most %d --san names\n",
					MAX_SANS);
				return 2;
			}
			sans[nsans++] = optarg;
			break;
		case 'H': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!dir)
		dir = SW_PATH_SERVER_DIR;
	if (!code || !listen || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (!site_code_valid(code)) {
		fprintf(stderr,
			"siteward-server: site code '%s' must be 3 characters, A-Z or 0-9\n", code);
		return 2;
	}
	if (sw_hostport_parse(listen, host, sizeof(host), &port, 0, err, sizeof(err))) {
		fprintf(stderr, "siteward-server: --listen: %s\n", err);
		return 2;
	}
	if (!sw_ip_literal(host)) {
		fprintf(stderr,
			"siteward-server: --listen takes an IP address and port, not '%s'\n",
			listen);
		return 2;
	}
	if (db_url && strncmp(db_url, "sqlite:", 7) == 0)
		db_url += 7;
	if (db_url && strncmp(db_url, "postgres", 8) != 0 && db_url[0] != '/') {
		/* a relative SQLite path would depend on where the server is started */
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)) ||
		    snprintf(dbpath, sizeof(dbpath), "%s/%s", cwd, db_url) >= (int)sizeof(dbpath)) {
			fprintf(stderr, "siteward-server: --db: path too long\n");
			return 2;
		}
		db_url = dbpath;
	}
	/* inih reads lines of up to 200 bytes: a longer setting would be cut */
	if (db_url && strlen(db_url) > 180) {
		fprintf(stderr, "siteward-server: --db is longer than 180 characters; for "
				"PostgreSQL, name a service (postgresql:///?service=NAME) from a "
				"pg_service.conf file instead\n");
		return 2;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "siteward-server: cannot create %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (!realpath(dir, absdir)) {
		fprintf(stderr, "siteward-server: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	sw_path_conf(absdir, SW_PATH_SERVER_DIR, "siteward.conf", path, sizeof(path));
	if (access(path, F_OK) == 0) {
		fprintf(stderr,
			"siteward-server: %s already holds a site; choose an empty folder\n",
			absdir);
		return 1;
	}
	/* The server answers on its listen address and on the usual local names. */
	sans[nsans++] = host;
	if (strcmp(host, "127.0.0.1") != 0)
		sans[nsans++] = "127.0.0.1";
	sans[nsans++] = "localhost";
	if (strcmp(host, "::1") != 0)
		sans[nsans++] = "::1"; /* the CLI's way to a server listening on [::] */
	if (gethostname(hostname, sizeof(hostname)) == 0 && strcmp(hostname, "localhost") != 0)
		sans[nsans++] = hostname;
	sans[nsans] = NULL;

	if (sw_pki_ca_create(code, CA_DAYS, &ca_cert, &ca_key, err, sizeof(err)) ||
	    sw_pki_ca_load(ca_cert, ca_key, &ca, err, sizeof(err)) ||
	    write_file(absdir, "ca.crt", ca_cert, 0644, err, sizeof(err)) ||
	    write_file(absdir, "ca.key", ca_key, 0600, err, sizeof(err)))
		goto out;
	struct sw_pki_issue server = {.cn = "site-server",
				      .role = SW_PKI_ROLE_SERVER,
				      .sans = sans,
				      .days = SERVER_CERT_DAYS,
				      .purposes = SW_PKI_TLS_SERVER | SW_PKI_TLS_CLIENT};
	struct sw_pki_issue admin = {
	    .cn = "admin", .role = SW_PKI_ROLE_ADMIN, .days = ADMIN_CERT_DAYS};
	if (issue_pair(ca, absdir, "server", &server, err, sizeof(err)) ||
	    issue_pair(ca, absdir, "admin", &admin, err, sizeof(err)) ||
	    sw_pki_sign_key_generate(&sign_key, &sign_pub, err, sizeof(err)) ||
	    write_file(absdir, "signing.key", sign_key, 0600, err, sizeof(err)) ||
	    write_file(absdir, "signing.pub", sign_pub, 0644, err, sizeof(err)))
		goto out;

	if (!db_url) {
		sw_path_join(dbpath, sizeof(dbpath), absdir, "site.db");
		db_url = dbpath;
	}
	struct sw_db_opts dbo = {.url = db_url};
	if (sw_db_open(&dbo, &db, err, sizeof(err)) || sw_db_migrate(db, err, sizeof(err)))
		goto out;
	/* the web console on the API's host, the next port */
	if (port < 65535)
		snprintf(console, sizeof(console), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
			 port + 1);
	snprintf(conf, sizeof(conf),
		 "# siteward site server configuration; see siteward-server.conf(5).\n"
		 "[site]\n"
		 "code = %s\n"
		 "\n"
		 "[server]\n"
		 "listen = %s\n"
		 "heartbeat_interval = %u\n"
		 "handshake_timeout = 10\n"
		 "idle_timeout = 120\n"
		 "\n"
		 "# The web console, for administrators' browsers; empty: none.\n"
		 "[console]\n"
		 "listen = %s\n"
		 "\n"
		 "[database]\n"
		 "url = %s\n"
		 "busy_timeout_ms = 5000\n"
		 "\n"
		 "[log]\n"
		 "level = info\n",
		 code, listen, heartbeat, console, db_url);
	if (write_conf(path, conf, err, sizeof(err)))
		goto out;
	printf("site %s created in %s (database: %s)\n", code, absdir, sw_db_engine(db));
	printf("start it with: siteward-server --dir %s\n", absdir);
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "siteward-server: init failed: %s\n", err);
	sw_db_close(db);
	sw_pki_ca_free(ca);
	free(ca_cert);
	free(ca_key);
	free(sign_key);
	free(sign_pub);
	return rc;
}

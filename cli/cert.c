/* siteward cert scrape: a certificate for Prometheus to read /metrics with. */
#include "cli.h"

#include "pki.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define USAGE "usage: siteward cert scrape --out DIR [--name NAME]"

/* Writes `pem` as DIR/name; 0, or 1 having said why. */
static int write_pem(const char *dir, const char *name, const char *pem, unsigned mode)
{
	char path[PATH_MAX + 64], err[300];

	sw_path_join(path, sizeof(path), dir, name);
	if (sw_file_write_atomic(path, pem, strlen(pem), mode, err, sizeof(err))) {
		cli_error("%s", err);
		return 1;
	}
	return 0;
}

int cmd_cert(struct cli *c, int argc, char **argv)
{
	const char *out = NULL, *name = "prometheus";
	char *key = NULL, *csr = NULL, err[300];
	json_t *req = NULL, *reply = NULL;
	/* the answer goes to files, not the terminal: exact, as --json has it */
	struct cli exact = *c;
	int rc = 1;

	if (argc < 1 || strcmp(argv[0], "scrape") != 0) {
		cli_error(USAGE);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
			out = argv[++i];
		} else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
			name = argv[++i];
		} else {
			cli_error(USAGE);
			return 2;
		}
	}
	if (!out || !sw_name_valid(name)) {
		cli_error(USAGE);
		return 2;
	}
	if (mkdir(out, 0700) && errno != EEXIST) {
		cli_error("cannot make %s: %s", out, strerror(errno));
		return 1;
	}
	/* the key is made here and never leaves this machine: the server signs a request */
	if (sw_pki_key_generate(&key, err, sizeof(err)) ||
	    sw_pki_csr_create(key, name, &csr, err, sizeof(err))) {
		cli_error("%s", err);
		goto out;
	}
	req = json_pack("{ss ss}", "name", name, "csr", csr);
	exact.json = 1;
	if (client_call(&exact, "POST", "/v1/certs/scrape", req, &reply))
		goto out;
	if (!json_is_string(json_object_get(reply, "certificate")) ||
	    !json_is_string(json_object_get(reply, "ca"))) {
		cli_error("the server's answer holds no certificate");
		goto out;
	}
	if (write_pem(out, "scrape.key", key, 0600) ||
	    write_pem(out, "scrape.crt", json_string_value(json_object_get(reply, "certificate")),
		      0644) ||
	    write_pem(out, "ca.crt", json_string_value(json_object_get(reply, "ca")), 0644))
		goto out;
	if (c->json)
		print_json(reply);
	else
		printf("%s/scrape.crt, scrape.key and ca.crt: for Prometheus's tls_config "
		       "(cert_file, key_file, ca_file)\n",
		       out);
	rc = 0;
out:
	free(key);
	free(csr);
	json_decref(req);
	json_decref(reply);
	return rc;
}

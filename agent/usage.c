/*
 * Usage recorded while no metering server answered: siteward-run leaves one file per
 * run in usage-cache/, and the agent uploads them to the site server, deleting each
 * only once the server has stored it. Ingestion is idempotent, so a retry after a lost
 * answer never counts a run twice.
 */
#include "agent.h"

#include "json.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UPLOAD_BATCH 200

struct upload {
	struct agent *a;
	char files[UPLOAD_BATCH][80];
	int n;
};

static void on_uploaded(const struct sw_http_result *res, void *arg)
{
	struct upload *u = arg;
	char path[PATH_MAX + 100];

	struct agent *a = u->a;
	int again = 0;

	a->usage_in_flight = 0;
	if (res->status == 200) {
		for (int i = 0; i < u->n; i++) {
			snprintf(path, sizeof(path), "%s/usage-cache/%s", a->dir, u->files[i]);
			unlink(path);
		}
		sw_info("uploaded %d usage records recorded offline", u->n);
		/* after a refusal, batches grow back while the rest goes */
		if (a->usage_batch && a->usage_batch < UPLOAD_BATCH) {
			a->usage_batch =
			    a->usage_batch * 2 < UPLOAD_BATCH ? a->usage_batch * 2 : UPLOAD_BATCH;
			again = 1;
		}
	} else if (res->status == 400 && u->n > 1) {
		/* The server refuses the batch for a record in it (anyone on the machine can
		 * drop one here): halve the batches until that record goes alone, so it
		 * cannot hold back the others. */
		a->usage_batch = (unsigned)u->n / 2;
		sw_warn("the server refused %d cached usage records (%.200s); sending %u at a "
			"time to find the one it refuses",
			u->n, res->body, a->usage_batch);
		again = 1;
	} else if (res->status == 400) {
		char aside[PATH_MAX + 120];

		snprintf(path, sizeof(path), "%s/usage-cache/%s", a->dir, u->files[0]);
		snprintf(aside, sizeof(aside), "%s.rejected", path);
		if (rename(path, aside) == 0)
			sw_warn("the server refuses the usage record %s (%.200s); kept aside as %s",
				u->files[0], res->body, aside);
		again = 1;
	} else if (res->status) {
		sw_warn("the server refused cached usage (%ld): %.200s", res->status, res->body);
	}
	free(u);
	if (again && !a->stopping)
		usage_upload(a);
}

/* Sends up to UPLOAD_BATCH cached records; called after each good heartbeat. */
void usage_upload(struct agent *a)
{
	char dirpath[PATH_MAX + 32], path[PATH_MAX + 100], url[400], *text, *body;
	struct dirent *de;
	struct upload *u;
	json_t *records, *msg;
	DIR *d;

	if (a->usage_in_flight)
		return;
	snprintf(dirpath, sizeof(dirpath), "%s/usage-cache", a->dir);
	d = opendir(dirpath);
	if (!d)
		return;
	u = calloc(1, sizeof(*u));
	records = json_array();
	int batch = a->usage_batch ? (int)a->usage_batch : UPLOAD_BATCH;

	while (u && (de = readdir(d)) && u->n < batch) {
		size_t len = strlen(de->d_name);
		json_t *rec;
		if (len < 6 || len >= sizeof(u->files[0]) || strcmp(de->d_name + len - 5, ".json"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dirpath, de->d_name);
		if (sw_file_read(path, 16 * 1024, &text, NULL, NULL, 0))
			continue;
		rec = json_loads(text, 0, NULL);
		free(text);
		if (!json_is_object(rec)) {
			sw_warn("%s is not a usage record; moving it aside", path);
			char bad[PATH_MAX + 110];
			snprintf(bad, sizeof(bad), "%s.bad", path);
			rename(path, bad);
			json_decref(rec);
			continue;
		}
		json_array_append_new(records, rec);
		snprintf(u->files[u->n++], sizeof(u->files[0]), "%s", de->d_name);
	}
	closedir(d);
	if (!u || u->n == 0) {
		free(u);
		json_decref(records);
		return;
	}
	u->a = a;
	msg = json_pack("{sI so}", "now", (json_int_t)sw_now_ms(), "records", records);
	body = msg ? sw_json_dump(msg) : NULL;
	json_decref(msg);
	snprintf(url, sizeof(url), "%s/v1/usage", a->server);
	if (body && sw_http_client_request(a->client, "POST", url, body, strlen(body),
					   a->request_timeout_ms, on_uploaded, u) == 0)
		a->usage_in_flight = 1;
	else
		free(u);
	free(body);
}

/* The metering servers the site server named, for siteward-run to fail over among, and
 * the system each must prove to be (a server of an older version names none). */
void usage_meters_save(struct agent *a, json_t *meters, json_t *names)
{
	char path[PATH_MAX + 32], *text;
	json_t *doc;

	if (!json_is_array(meters))
		return;
	doc = json_pack("{sO}", "meters", meters);
	if (doc && json_is_array(names) && json_array_size(names) == json_array_size(meters))
		json_object_set(doc, "names", names);
	if (!doc || (a->meters && json_equal(a->meters, doc))) {
		json_decref(doc);
		return;
	}
	json_decref(a->meters);
	a->meters = json_incref(doc);
	text = json_dumps(doc, JSON_INDENT(2));
	json_decref(doc);
	sw_path_join(path, sizeof(path), a->dir, "meters.json");
	/* Readable by the users who run siteward-run. */
	if (!text || sw_file_write_atomic(path, text, strlen(text), 0644, NULL, 0))
		sw_warn("cannot write %s", path);
	free(text);
}

void usage_cache_prepare(struct agent *a)
{
	char path[PATH_MAX + 32];

	snprintf(path, sizeof(path), "%s/usage-cache", a->dir);
	if (mkdir(path, 01733) < 0 && errno != EEXIST) {
		sw_warn("cannot create %s: %s", path, strerror(errno));
		return;
	}
	/* sticky and not listable: users add records, none can read or remove another's */
	if (chmod(path, 01733) < 0)
		sw_warn("cannot set the mode of %s: %s", path, strerror(errno));
}

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
#include <fcntl.h>
#include <pwd.h>
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

#define RECORD_MAX (16 * 1024)

/* Moves a cache entry out of the way, so it is looked at, and warned of, once. */
static void set_aside(int dfd, const char *dirpath, const char *name, const char *why)
{
	char aside[128];

	snprintf(aside, sizeof(aside), "%s.bad", name);
	if (renameat(dfd, name, dfd, aside) == 0)
		sw_warn("%s/%s %s; moved aside as %s", dirpath, name, why, aside);
	/* the writer may have put something in the way (a folder named NAME.bad): the
	 * entry goes, or it would be warned of after every heartbeat */
	else if (errno != ENOENT && unlinkat(dfd, name, 0) == 0)
		sw_warn("%s/%s %s; removed, as it cannot be moved aside", dirpath, name, why);
	else if (errno != ENOENT)
		sw_warn("%s/%s %s, and can be neither moved aside nor removed: %s", dirpath, name,
			why, strerror(errno));
}

/* The name of the user owning a record: who wrote it, whatever the record says. */
static void owner_name(uid_t uid, char *out, size_t len)
{
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 && res && res->pw_name[0])
		snprintf(out, len, "%s", res->pw_name);
	else
		snprintf(out, len, "%u", (unsigned)uid);
}

/*
 * Reads one cached record into *rec. Any local user can write here, so the record is
 * evidence only of what its file shows: the entry must be a regular file of one link
 * (no FIFO to block on, no link to a file its writer could not read), it is opened
 * without following a link and without waiting, and its user is the file's owner.
 * Records written by root are the agent's own (passive metering, which names the
 * process's user) or root's, who could write anything anyway. The host is this
 * machine, whatever the text says; the server decides it from our certificate anyway.
 * Returns 0, 1 for an entry to leave alone (gone meanwhile), or -1 once it is set aside.
 */
static int record_read(struct agent *a, int dfd, const char *dirpath, const char *name,
		       json_t **rec)
{
	char text[RECORD_MAX + 1], user[64];
	struct stat st, fst;
	size_t used = 0;
	ssize_t n;
	int fd = -1, rc = -1;
	json_t *j = NULL, *u;
	const char *why = NULL;

	*rec = NULL;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 1;
	/* checked before opening: opening a device or a FIFO can itself have effects */
	if (!S_ISREG(st.st_mode)) {
		why = S_ISLNK(st.st_mode) ? "is a symbolic link, not a usage record"
					  : "is not a regular file";
		goto out;
	}
	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT)
			return 1;
		why = "cannot be opened as a usage record";
		goto out;
	}
	if (fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode) || fst.st_ino != st.st_ino ||
	    fst.st_dev != st.st_dev) {
		why = "changed while it was opened";
		goto out;
	}
	/* a hard link would let a user hand in a file they cannot read */
	if (fst.st_nlink != 1) {
		why = "has other links";
		goto out;
	}
	while (used < sizeof(text)) {
		n = read(fd, text + used, sizeof(text) - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	if (used > RECORD_MAX) {
		why = "is larger than 16 KiB";
		goto out;
	}
	j = json_loadb(text, used, 0, NULL);
	if (!json_is_object(j)) {
		why = "is not a usage record";
		goto out;
	}
	if (fst.st_uid == 0 && json_is_string(u = json_object_get(j, "user")))
		snprintf(user, sizeof(user), "%s", json_string_value(u));
	else
		owner_name(fst.st_uid, user, sizeof(user));
	if (json_object_set_new(j, "user", json_string(user)) ||
	    json_object_set_new(j, "host", json_string(a->name)))
		goto out;
	/* A user's record is a run it recorded offline, never a license server's, and its
	 * id is the user's own: no user can take the id of another's run, or of one passive
	 * metering will record, to have it dropped as a duplicate. */
	if (fst.st_uid != 0) {
		const char *id = json_string_value(json_object_get(j, "id"));
		char own[96];

		if (!id || snprintf(own, sizeof(own), "%u:%s", (unsigned)fst.st_uid, id) > 64) {
			why = "has no id, or one too long";
			goto out;
		}
		json_object_set_new(j, "id", json_string(own));
		json_object_set_new(j, "source", json_string("offline"));
	}
	*rec = j;
	j = NULL;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	json_decref(j);
	if (rc && why)
		set_aside(dfd, dirpath, name, why);
	return rc;
}

/* Sends up to UPLOAD_BATCH cached records; called after each good heartbeat. */
void usage_upload(struct agent *a)
{
	char dirpath[PATH_MAX + 32], url[400], *body;
	struct dirent *de;
	struct upload *u;
	json_t *records, *msg;
	DIR *d;
	int dfd;

	if (a->usage_in_flight)
		return;
	snprintf(dirpath, sizeof(dirpath), "%s/usage-cache", a->dir);
	dfd = open(dirpath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return;
	if (!(d = fdopendir(dfd))) {
		close(dfd);
		return;
	}
	u = calloc(1, sizeof(*u));
	records = json_array();
	int batch = a->usage_batch ? (int)a->usage_batch : UPLOAD_BATCH;

	while (u && (de = readdir(d)) && u->n < batch) {
		size_t len = strlen(de->d_name);
		json_t *rec;
		if (len < 6 || len >= sizeof(u->files[0]) || strcmp(de->d_name + len - 5, ".json"))
			continue;
		if (record_read(a, dfd, dirpath, de->d_name, &rec))
			continue;
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

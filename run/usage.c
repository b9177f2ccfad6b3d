/*
 * The usage record of a run no metering server heard of: one file per run in the
 * agent's usage-cache/, which the agent uploads to the site server and then deletes.
 * The file appears whole or not at all, so the agent never reads half a record.
 */
#include "run.h"

#include "error.h"
#include "json.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int usage_record(const struct run *r, char *err, size_t errlen)
{
	char dir[PATH_MAX + 16], path[PATH_MAX + 64];
	json_t *rec;
	char *text = NULL;
	int rc = SW_ENOMEM;

	if (sw_path_join(dir, sizeof(dir), r->conf.dir, "usage-cache") ||
	    snprintf(path, sizeof(path), "%s/%s.json", dir, r->client) >= (int)sizeof(path)) {
		sw_seterr(err, errlen, "%s: path too long", r->conf.dir);
		return SW_ETOOBIG;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		sw_seterr(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		return SW_EIO;
	}
	/* The agent counts the run against the file's owner and its own system, whatever
	 * "user" and "host" say; they stay for agents of earlier versions, and for the
	 * site servers those agents talk to, which require them. */
	rec = json_pack("{ss sn ss ss ss sI sI ss sI ss}", "id", r->client, "product", "exe",
			r->exe, "user", r->user, "host", r->conf.host, "start",
			(json_int_t)(r->lease.reclaimed ? r->lease.reclaimed_ms : r->start_ms),
			"end", (json_int_t)r->end_ms, "kind", "run", "wait_ms", (json_int_t)0,
			"source", "offline");
	/* the site server attributes the run to its product by name or build ID */
	if (rec && r->build_id[0])
		json_object_set_new(rec, "build_id", json_string(r->build_id));
	if (rec && r->version[0])
		json_object_set_new(rec, "version", json_string(r->version));
	if (rec)
		text = sw_json_dump(rec);
	json_decref(rec);
	if (!text) {
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	rc = sw_file_write_atomic(path, text, strlen(text), 0600, err, errlen);
out:
	free(text);
	return rc;
}

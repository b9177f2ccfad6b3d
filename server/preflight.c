/*
 * Preflight: what is checked before an upgrade touches anything. From what the server
 * knows (its own version, free space and tools, each system's reported version, health
 * and free space) for `upgrade run`; and, for `upgrade check`, a probe of every agent
 * at once, each with its deadline.
 */
#include "upgrade.h"

#include "install.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

static void issue(json_t *list, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void issue(json_t *list, const char *level, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_array_append_new(list, json_pack("{ss ss}", "level", level, "message", msg));
}

static uint64_t free_bytes(const char *dir)
{
	struct statvfs v;

	return statvfs(dir, &v) ? 0 : (uint64_t)v.f_bavail * v.f_frsize;
}

/* 1 if `prog` is an executable in $PATH. */
static int in_path(const char *prog)
{
	char found[PATH_MAX];

	return sw_path_find(prog, found, sizeof(found), NULL, 0) == 0;
}

json_t *preflight_site(struct server *s, const struct sw_pkg_manifest *m)
{
	json_t *site = json_array();
	char running[SW_PKG_VERSION_MAX + 1];
	struct stat st;
	uint64_t need = m->package_size + m->total_size;

	sw_install_version(s->dir, running, sizeof(running));
	if (sw_version_cmp(running, m->min_version) < 0)
		issue(site, "error",
		      "the site server runs %s; the package upgrades from %s or later", running,
		      m->min_version);
	if (sw_version_cmp(running, m->version) > 0)
		issue(site, "error", "the site server runs %s, newer than the package's %s",
		      running, m->version);
	if (strcmp(sw_db_engine(s->db), "sqlite") == 0 && stat(s->db_url, &st) == 0)
		need += (uint64_t)st.st_size;
	else if (m->nmigrations && strcmp(sw_db_engine(s->db), "sqlite") != 0) {
		int version = 0;
		sw_db_schema_version(s->db, &version, NULL, 0);
		for (size_t i = 0; i < m->nmigrations; i++) {
			const char *base = strrchr(m->migrations[i], '/');
			if (atoi(base ? base + 1 : m->migrations[i]) > version) {
				if (!in_path("pg_dump") || !in_path("psql"))
					issue(site, "error",
					      "the package migrates the database: its backup needs "
					      "pg_dump and psql (install postgresql-client)");
				break;
			}
		}
	}
	if (free_bytes(s->dir) < need)
		issue(site, "error",
		      "the site folder has %" PRIu64 " bytes free; the package, its files and a "
		      "database backup need %" PRIu64,
		      free_bytes(s->dir), need);
	return site;
}

/* An agent's free space (`disk`, as it reported it) against the package staged and
 * extracted beside a spare copy. */
static void disk_issue(json_t *list, const json_t *disk, const struct sw_pkg_manifest *m)
{
	uint64_t need = m->package_size * 2 + m->total_size;

	if (json_is_integer(disk) && (uint64_t)json_integer_value(disk) < need)
		issue(list, "error", "has %" JSON_INTEGER_FORMAT " bytes free; it needs %" PRIu64,
		      json_integer_value(disk), need);
}

json_t *preflight_system(struct server *s, const struct sw_pkg_manifest *m, struct system *sys,
			 const json_t *disk)
{
	json_t *list = json_array();
	const char *health = registry_health(s, sys, sw_now_ms());

	if (!sys->version[0])
		issue(list, "warning", "has not reported its version yet");
	else if (sw_version_cmp(sys->version, m->min_version) < 0)
		issue(list, "error", "runs %s; the package upgrades from %s or later", sys->version,
		      m->min_version);
	else if (sw_version_cmp(sys->version, m->version) > 0)
		issue(list, "error", "runs %s, newer than the package's %s", sys->version,
		      m->version);
	else if (strcmp(sys->version, m->version) == 0)
		issue(list, "warning", "already runs %s", m->version);
	disk_issue(list, disk, m);
	if (strcmp(health, "ok") != 0 && strcmp(health, "enrolled") != 0)
		issue(list, "warning", "is %s; --on-stuck decides what happens to it", health);
	return list;
}

int preflight_count(const json_t *list, const char *level)
{
	json_t *i;
	size_t k;
	int n = 0;

	json_array_foreach(list, k, i) n +=
	    strcmp(json_string_value(json_object_get(i, "level")), level) == 0;
	return n;
}

struct check {
	struct sw_http_req *req;
	struct sw_pkg_manifest *m;
	json_t *out, *systems;
	int pending;
	int strict;
};

static void check_reply(struct check *c)
{
	int errors = preflight_count(json_object_get(c->out, "site"), "error"),
	    warnings = preflight_count(json_object_get(c->out, "site"), "warning");
	json_t *y;
	size_t i;

	json_array_foreach(c->systems, i, y)
	{
		errors += preflight_count(json_object_get(y, "issues"), "error");
		warnings += preflight_count(json_object_get(y, "issues"), "warning");
	}
	json_object_set_new(c->out, "errors", json_integer(errors));
	json_object_set_new(c->out, "warnings", json_integer(warnings));
	json_object_set_new(c->out, "ok", json_boolean(errors == 0 && (!c->strict || !warnings)));
	sw_http_reply_json(c->req, 200, c->out);
	sw_pkg_manifest_free(c->m);
	json_decref(c->systems);
	free(c);
}

struct probe {
	struct check *c;
	json_t *entry;
};

static void on_probe(const struct sw_http_result *res, void *arg)
{
	struct probe *p = arg;
	struct check *c = p->c;
	json_t *issues = json_object_get(p->entry, "issues"), *reply = NULL, *svc;
	size_t i;

	if (res->status == 200 && !sw_json_parse_object(res->body, res->len, &reply, NULL, 0)) {
		json_t *disk = json_object_get(reply, "disk_free");
		const char *v = json_string_value(json_object_get(reply, "version"));

		json_object_set_new(p->entry, "reachable", json_true());
		if (v)
			json_object_set_new(p->entry, "version", json_string(v));
		if (json_is_integer(disk))
			json_object_set(p->entry, "disk_free", disk);
		disk_issue(issues, disk, c->m);
		json_array_foreach(json_object_get(reply, "services"), i, svc)
		{
			const char *st = json_string_value(json_object_get(svc, "state"));
			enum sw_svc_state state = sw_svc_state_parse(st);
			if (st && state != SW_SVC_RUNNING && state != SW_SVC_STOPPED)
				issue(issues, "warning", "service %s is %s",
				      json_string_value(json_object_get(svc, "name")), st);
		}
	} else {
		char why[300];
		control_error(res, why, sizeof(why));
		json_object_set_new(p->entry, "reachable", json_false());
		if (res->status == 0)
			issue(issues, "warning", "agent not answering: %s; --on-stuck decides",
			      why);
		else
			issue(issues, "error", "agent refused: %s", why);
	}
	json_decref(reply);
	free(p);
	if (--c->pending == 0)
		check_reply(c);
}

void preflight_probe(struct server *s, struct sw_http_req *req, struct sw_pkg_manifest *m,
		     int strict, int64_t bound_ms)
{
	struct check *c = calloc(1, sizeof(*c));
	struct system **list, *sys;

	if (!c) {
		sw_pkg_manifest_free(m);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	c->req = req;
	c->m = m;
	c->strict = strict;
	c->systems = json_array();
	c->out = json_pack("{ss ss ss sI so sO sI}", "version", m->version, "min_version",
			   m->min_version, "sha256", m->package_sha256, "size",
			   (json_int_t)m->package_size, "site", preflight_site(s, m), "systems",
			   c->systems, "bound_ms", (json_int_t)bound_ms);
	/* The probes answer on later turns of the loop; this one holds the count above 0
	 * until every probe is out. */
	c->pending = 1;
	list = upgrade_systems_list(s);
	for (size_t i = 0; list && (sys = list[i]); i++) {
		struct probe *p = calloc(1, sizeof(*p));
		if (!p)
			continue;
		p->c = c;
		p->entry = json_pack("{ss ss so}", "name", sys->name, "version", sys->version,
				     "issues", preflight_system(s, m, sys, NULL));
		json_array_append_new(c->systems, p->entry);
		c->pending++;
		if (control_call(s, sys, "GET", "/v1/status", NULL, PROBE_TIMEOUT_MS, on_probe,
				 p)) {
			issue(json_object_get(p->entry, "issues"), "error", "no usable address");
			c->pending--;
			free(p);
		}
	}
	free(list);
	if (--c->pending == 0)
		check_reply(c);
}

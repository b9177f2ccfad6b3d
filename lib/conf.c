#include "conf.h"

#include "error.h"
#include "util.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A configuration file has a handful of keys: a list is simpler than a hash. */
#define CONF_MAX_ENTRIES 256

struct entry {
	char *section, *key, *value;
};

struct sw_conf {
	struct entry entries[CONF_MAX_ENTRIES];
	int n;
	char error[160];
};

static struct entry *find(const struct sw_conf *conf, const char *section, const char *key)
{
	for (int i = conf->n - 1; i >= 0; i--) {
		const struct entry *e = &conf->entries[i];
		if (strcmp(e->section, section) == 0 && strcmp(e->key, key) == 0)
			return (struct entry *)e;
	}
	return NULL;
}

static int on_entry(void *user, const char *section, const char *key, const char *value)
{
	struct sw_conf *conf = user;
	struct entry *e;

	if (!key)
		return 1; /* a section header alone */
	if (find(conf, section, key)) {
		snprintf(conf->error, sizeof(conf->error), "[%s] %s is set twice", section, key);
		return 0;
	}
	if (conf->n == CONF_MAX_ENTRIES) {
		snprintf(conf->error, sizeof(conf->error), "more than %d settings",
			 CONF_MAX_ENTRIES);
		return 0;
	}
	e = &conf->entries[conf->n];
	e->section = strdup(section);
	e->key = strdup(key);
	e->value = strdup(value);
	conf->n++;
	if (!e->section || !e->key || !e->value) {
		snprintf(conf->error, sizeof(conf->error), "out of memory");
		return 0;
	}
	return 1;
}

int sw_conf_parse(const char *text, size_t len, struct sw_conf **out, char *err, size_t errlen)
{
	struct sw_conf *conf;
	char *copy;
	int rc;

	*out = NULL;
	if (len > SW_CONF_MAX) {
		sw_seterr(err, errlen, "configuration larger than %d bytes", SW_CONF_MAX);
		return SW_ETOOBIG;
	}
	if (memchr(text, '\0', len)) {
		sw_seterr(err, errlen, "configuration contains a NUL byte");
		return SW_EINVAL;
	}
	conf = calloc(1, sizeof(*conf));
	copy = malloc(len + 1);
	if (!conf || !copy) {
		free(conf);
		free(copy);
		return SW_ENOMEM;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	rc = ini_parse_string(copy, on_entry, conf);
	free(copy);
	if (rc != 0) {
		if (conf->error[0])
			sw_seterr(err, errlen, "%s", conf->error);
		else
			sw_seterr(err, errlen,
				  "line %d: not an INI setting (expected key = value or [section])",
				  rc);
		sw_conf_free(conf);
		return SW_EINVAL;
	}
	*out = conf;
	return 0;
}

int sw_conf_load(const char *path, struct sw_conf **out, char *err, size_t errlen)
{
	char *text;
	size_t len;
	char sub[160];
	int rc;

	*out = NULL;
	rc = sw_file_read(path, SW_CONF_MAX, &text, &len, err, errlen);
	if (rc)
		return rc;
	rc = sw_conf_parse(text, len, out, sub, sizeof(sub));
	free(text);
	if (rc)
		sw_seterr(err, errlen, "%s: %s", path, sub);
	return rc;
}

void sw_conf_free(struct sw_conf *conf)
{
	if (!conf)
		return;
	for (int i = 0; i < conf->n; i++) {
		free(conf->entries[i].section);
		free(conf->entries[i].key);
		free(conf->entries[i].value);
	}
	free(conf);
}

/* "section.key", or "prefix.*.key" for any section "prefix.NAME" (NAME not empty). */
static int known_match(const char *k, const char *section, size_t sl, const char *key)
{
	const char *star = strstr(k, ".*.");

	if (star) {
		size_t pl = (size_t)(star - k) + 1; /* "prefix." */
		return sl > pl && strncmp(k, section, pl) == 0 && strcmp(star + 3, key) == 0;
	}
	return strncmp(k, section, sl) == 0 && k[sl] == '.' && strcmp(k + sl + 1, key) == 0;
}

int sw_conf_check(const struct sw_conf *conf, const char *const *known, char *err, size_t errlen)
{
	for (int i = 0; i < conf->n; i++) {
		const struct entry *e = &conf->entries[i];
		size_t sl = strlen(e->section);
		int ok = 0;

		for (const char *const *k = known; *k && !ok; k++)
			ok = known_match(*k, e->section, sl, e->key);
		if (!ok) {
			sw_seterr(err, errlen, "unknown setting [%s] %s", e->section, e->key);
			return SW_EINVAL;
		}
	}
	return 0;
}

const char *sw_conf_get(const struct sw_conf *conf, const char *section, const char *key,
			const char *def)
{
	const struct entry *e = find(conf, section, key);

	return e ? e->value : def;
}

int sw_conf_get_uint(const struct sw_conf *conf, const char *section, const char *key, unsigned def,
		     unsigned min, unsigned max, unsigned *out, char *err, size_t errlen)
{
	const struct entry *e = find(conf, section, key);
	unsigned long v;
	char *end;

	if (!e) {
		*out = def;
		return 0;
	}
	errno = 0;
	v = strtoul(e->value, &end, 10);
	if (errno || end == e->value || *end || e->value[0] == '-' || v < min || v > max) {
		sw_seterr(err, errlen, "[%s] %s must be a whole number from %u to %u", section, key,
			  min, max);
		return SW_EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

int sw_conf_count(const struct sw_conf *conf)
{
	return conf->n;
}

void sw_conf_entry(const struct sw_conf *conf, int i, const char **section, const char **key,
		   const char **value)
{
	*section = conf->entries[i].section;
	*key = conf->entries[i].key;
	*value = conf->entries[i].value;
}

int sw_conf_meter_listen(const struct sw_conf *conf, char *out, size_t len)
{
	const char *m = sw_conf_get(conf, "meter", "listen", NULL);
	const char *agent = sw_conf_get(conf, "agent", "listen", NULL);
	char host[256];
	unsigned port;

	if (m) {
		snprintf(out, len, "%s", m);
	} else if (agent) {
		if (sw_hostport_parse(agent, host, sizeof(host), &port, 0, NULL, 0) ||
		    port == 65535)
			return SW_EINVAL;
		snprintf(out, len, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port + 1);
	} else {
		snprintf(out, len, "0.0.0.0:%u", SW_METER_PORT);
	}
	return 0;
}

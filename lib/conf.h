/*
 * Configuration files: INI (inih) read into memory, then looked up by section and key.
 * Every program names the keys it knows, so a misspelt key is an error that names it.
 */
#ifndef SW_CONF_H
#define SW_CONF_H

#include <stddef.h>

struct sw_conf;

/* Largest configuration file accepted. */
#define SW_CONF_MAX (256 * 1024)

int sw_conf_load(const char *path, struct sw_conf **out, char *err, size_t errlen);
/* Parses `len` bytes of INI text (need not be NUL-terminated). */
int sw_conf_parse(const char *text, size_t len, struct sw_conf **out, char *err, size_t errlen);
void sw_conf_free(struct sw_conf *conf);

/* Refuses any "section.key" not in the NULL-terminated `known` list; an entry
 * "prefix.*.key" allows `key` in every section named "prefix.SOMETHING". */
int sw_conf_check(const struct sw_conf *conf, const char *const *known, char *err, size_t errlen);

/* The number of settings, and the i-th of them, for sections a program enumerates. */
int sw_conf_count(const struct sw_conf *conf);
void sw_conf_entry(const struct sw_conf *conf, int i, const char **section, const char **key,
		   const char **value);

/* The value of section.key, or `def` when absent. */
const char *sw_conf_get(const struct sw_conf *conf, const char *section, const char *key,
			const char *def);
/* An unsigned value within [min, max], or `def` when absent. */
int sw_conf_get_uint(const struct sw_conf *conf, const char *section, const char *key, unsigned def,
		     unsigned min, unsigned max, unsigned *out, char *err, size_t errlen);

/* The port a metering server listens on when agent.conf does not say. */
#define SW_METER_PORT 8471
/* Where siteward-meter listens, as it and the agent that reports it read agent.conf:
 * [meter] listen; else one port above [agent] listen (a folder enrolled when agents
 * listened); else every address, port SW_METER_PORT. Returns SW_EINVAL if [agent]
 * listen, the only one not checked where it is used, cannot give a port. */
int sw_conf_meter_listen(const struct sw_conf *conf, char *out, size_t len);

#endif

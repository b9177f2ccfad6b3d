#include "install.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "pkg.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "version.h"

int sw_install_self(char *out, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", out, len - 1);

	if (n <= 0 || (size_t)n >= len - 1)
		return SW_EIO;
	out[n] = '\0';
	return 0;
}

void sw_install_version(const char *dir, char *out, size_t len)
{
	char exe[PATH_MAX], root[PATH_MAX], prefix[PATH_MAX + 16];
	size_t n;

	snprintf(out, len, "%s", SW_VERSION);
	if (sw_install_self(exe, sizeof(exe)) || !realpath(dir, root))
		return;
	snprintf(prefix, sizeof(prefix), "%s/" SW_INSTALL_VERSIONS "/", root);
	n = strlen(prefix);
	if (strncmp(exe, prefix, n) == 0) {
		char v[SW_PKG_VERSION_MAX + 1];
		const char *slash = strchr(exe + n, '/');
		size_t vlen = slash ? (size_t)(slash - (exe + n)) : 0;

		if (vlen == 0 || vlen >= sizeof(v))
			return;
		memcpy(v, exe + n, vlen);
		v[vlen] = '\0';
		if (sw_version_valid(v))
			snprintf(out, len, "%s", v);
	}
}

int sw_install_has(const char *dir, const char *version)
{
	char path[PATH_MAX];
	struct stat st;

	if (!sw_version_valid(version) ||
	    snprintf(path, sizeof(path), "%s/" SW_INSTALL_VERSIONS "/%s", dir, version) >=
		(int)sizeof(path))
		return 0;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int sw_install_exe(const char *dir, const char *prog, char *out, size_t len)
{
	if (snprintf(out, len, "%s/" SW_INSTALL_CURRENT "/bin/%s", dir, prog) >= (int)len)
		return SW_EINVAL;
	return 0;
}

/* Makes DIR/current point at `target` (relative to DIR), or removes it if NULL, with
 * one rename, and syncs the folder. */
static int point_current(const char *dir, const char *target, char *err, size_t errlen)
{
	char cur[PATH_MAX], tmp[PATH_MAX + 16];
	int fd;

	snprintf(cur, sizeof(cur), "%s/" SW_INSTALL_CURRENT, dir);
	if (!target) {
		if (unlink(cur) && errno != ENOENT) {
			sw_seterr(err, errlen, "%s: %s", cur, strerror(errno));
			return SW_EIO;
		}
	} else {
		snprintf(tmp, sizeof(tmp), "%s.new", cur);
		unlink(tmp);
		if (symlink(target, tmp) || rename(tmp, cur)) {
			sw_seterr(err, errlen, "%s: %s", cur, strerror(errno));
			unlink(tmp);
			return SW_EIO;
		}
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

int sw_install_switch(const char *dir, const char *version, char *err, size_t errlen)
{
	char path[PATH_MAX], running[SW_PKG_VERSION_MAX + 1], exe[PATH_MAX],
	    target[SW_PKG_VERSION_MAX + 16];
	json_t *rec;
	char *text;
	int rc;

	if (!sw_install_has(dir, version)) {
		sw_seterr(err, errlen, "version %s is not staged", version);
		return SW_ENOTFOUND;
	}
	sw_install_version(dir, running, sizeof(running));
	if (strcmp(running, version) != 0) {
		if (sw_install_self(exe, sizeof(exe))) {
			sw_seterr(err, errlen, "cannot read /proc/self/exe");
			return SW_EIO;
		}
		rec = json_pack("{ss ss ss}", "version", version, "previous", running,
				"previous_exe", exe);
		text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
		json_decref(rec);
		if (!text)
			return SW_ENOMEM;
		sw_path_join(path, sizeof(path), dir, SW_INSTALL_RECORD);
		rc = sw_file_write_atomic(path, text, strlen(text), 0644, err, errlen);
		free(text);
		if (rc)
			return rc;
	}
	snprintf(target, sizeof(target), SW_INSTALL_VERSIONS "/%s", version);
	return point_current(dir, target, err, errlen);
}

int sw_install_switch_back(const char *dir, const char *version, const char *prog, char *exe,
			   size_t len, char *err, size_t errlen)
{
	char path[PATH_MAX], *text = NULL, target[SW_PKG_VERSION_MAX + 16];
	const char *previous = NULL, *previous_exe = NULL;
	json_t *rec = NULL;
	int rc;

	sw_path_join(path, sizeof(path), dir, SW_INSTALL_RECORD);
	if (sw_file_read(path, 64 * 1024, &text, NULL, NULL, 0) ||
	    sw_json_parse_object(text, strlen(text), &rec, NULL, 0) ||
	    sw_json_str(rec, "previous", SW_PKG_VERSION_MAX, 1, &previous, NULL, 0) ||
	    sw_json_str(rec, "previous_exe", PATH_MAX - 1, 1, &previous_exe, NULL, 0) ||
	    strcmp(previous, version) != 0) {
		sw_seterr(err, errlen, "no switch from version %s is recorded here", version);
		rc = SW_ENOTFOUND;
		goto out;
	}
	if (sw_install_has(dir, version)) {
		snprintf(target, sizeof(target), SW_INSTALL_VERSIONS "/%s", version);
		rc = point_current(dir, target, err, errlen);
		if (!rc)
			rc = sw_install_exe(dir, prog, exe, len);
		goto out;
	}
	/* The version before the first upgrade ran from where it was installed. */
	if (snprintf(exe, len, "%s", previous_exe) >= (int)len) {
		rc = SW_EINVAL;
		goto out;
	}
	{
		char *slash = strrchr(exe, '/');

		if (slash && slash[1])
			snprintf(slash + 1, len - (size_t)(slash + 1 - exe), "%s", prog);
	}
	rc = point_current(dir, NULL, err, errlen);
out:
	json_decref(rec);
	free(text);
	return rc;
}

int sw_install_prefer(const char *dir, const char *prog, const char *self, const char *built,
		      char *out, size_t len)
{
	char cur[PATH_MAX], target[PATH_MAX], real[PATH_MAX];
	const char *v;
	ssize_t n;

	if (snprintf(cur, sizeof(cur), "%s/" SW_INSTALL_CURRENT, dir) >= (int)sizeof(cur))
		return 0;
	n = readlink(cur, target, sizeof(target) - 1);
	if (n <= 0 || (size_t)n >= sizeof(target) - 1)
		return 0;
	target[n] = '\0';
	v = strrchr(target, '/');
	v = v ? v + 1 : target;
	if (!sw_version_valid(v) || sw_version_cmp(v, built) <= 0)
		return 0;
	if (sw_install_exe(dir, prog, out, len) || !realpath(out, real))
		return 0;
	return strcmp(real, self) != 0;
}

void sw_install_exec_newer(const char *dir, const char *prog, char **argv)
{
	char self[PATH_MAX], exe[PATH_MAX];

	if (sw_install_self(self, sizeof(self)) ||
	    !sw_install_prefer(dir, prog, self, SW_VERSION, exe, sizeof(exe)))
		return;
	sw_info("%s is newer than this program (%s): running it", exe, SW_VERSION);
	execv(exe, argv);
	sw_warn("cannot run %s: %s; running %s", exe, strerror(errno), self);
}

/* A machine's inventory: see inventory.h. */
#include "inventory.h"

#include "dpkgdb.h"
#include "error.h"
#include "json.h"
#include "progver.h"
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

/* The first line of a small file under root, printable, or "" when it cannot be read
 * (a /sys or /proc file has no size to read by: read() until the end, bounded). */
static int read_line(const char *root, const char *path, char *out, size_t len)
{
	char full[1024], buf[SW_INV_TEXT_MAX + 1];
	ssize_t n;
	int fd;

	out[0] = '\0';
	if (snprintf(full, sizeof(full), "%s%s", root, path) >= (int)sizeof(full) ||
	    (fd = open(full, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	sw_printable(out, len, buf);
	/* trailing blanks, as DMI strings often have */
	for (size_t k = strlen(out); k > 0 && out[k - 1] == ' '; k--)
		out[k - 1] = '\0';
	return out[0] ? 0 : -1;
}

static void set_text(json_t *o, const char *key, const char *root, const char *path)
{
	char v[SW_INV_TEXT_MAX];

	if (read_line(root, path, v, sizeof(v)) == 0)
		json_object_set_new(o, key, json_string(v));
}

static long long read_number(const char *root, const char *path)
{
	char v[64], *end;
	long long n;

	if (read_line(root, path, v, sizeof(v)))
		return -1;
	n = strtoll(v, &end, 10);
	return *end || n < 0 ? -1 : n;
}

static json_t *dmi(const char *root)
{
	static const char *const keys[] = {"sys_vendor",     "product_name",  "product_version",
					   "product_serial", "product_uuid",  "board_vendor",
					   "board_name",     "bios_vendor",   "bios_version",
					   "bios_date",	     "chassis_vendor"};
	char path[128];
	json_t *o = json_object();

	for (size_t i = 0; o && i < SW_ARRAY_LEN(keys); i++) {
		snprintf(path, sizeof(path), "/sys/class/dmi/id/%s", keys[i]);
		set_text(o, keys[i], root, path);
	}
	return o;
}

/* /proc/cpuinfo: the model, and how many logical processors. */
static json_t *cpu(const char *root)
{
	char path[1024], line[512], model[SW_INV_TEXT_MAX] = "";
	long long count = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/proc/cpuinfo", root);
	if (!(f = fopen(path, "re")))
		return json_object();
	while (fgets(line, sizeof(line), f) && count < 100000) {
		if (strncmp(line, "processor", 9) == 0 && strchr(line, ':'))
			count++;
		else if (!model[0] && strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
			char *v = strchr(line, ':') + 1;
			v += strspn(v, " \t");
			v[strcspn(v, "\n")] = '\0';
			sw_printable(model, sizeof(model), v);
		}
	}
	fclose(f);
	return json_pack("{ss sI}", "model", model, "count", (json_int_t)count);
}

static json_t *memory(const char *root)
{
	char path[1024], line[256];
	long long kib;
	json_t *o = json_object();
	FILE *f;

	snprintf(path, sizeof(path), "%s/proc/meminfo", root);
	if (!o || !(f = fopen(path, "re")))
		return o;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemTotal: %lld kB", &kib) == 1)
			json_object_set_new(o, "total", json_integer((json_int_t)kib * 1024));
		else if (sscanf(line, "SwapTotal: %lld kB", &kib) == 1)
			json_object_set_new(o, "swap", json_integer((json_int_t)kib * 1024));
	}
	fclose(f);
	return o;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

/* A list of objects sorted by "name", so the same hardware is the same JSON. */
static json_t *sorted(json_t **v, size_t n)
{
	json_t *arr = json_array();

	if (n)
		qsort(v, n, sizeof(*v), by_name);
	for (size_t i = 0; i < n; i++)
		if (!arr || json_array_append_new(arr, v[i]))
			json_decref(v[i]);
	return arr;
}

/* /sys/block: disks, not loop devices, RAM disks or device-mapper's views of them. */
static json_t *disks(const char *root)
{
	char dir[1024], path[1024], name[NAME_MAX + 1];
	json_t *v[SW_INV_DEVICES_MAX];
	size_t n = 0;
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/sys/block", root);
	if (!(d = opendir(dir)))
		return json_array();
	while ((e = readdir(d)) && n < SW_INV_DEVICES_MAX) {
		long long sectors;
		json_t *o;

		if (e->d_name[0] == '.' || strncmp(e->d_name, "loop", 4) == 0 ||
		    strncmp(e->d_name, "ram", 3) == 0 || strncmp(e->d_name, "zram", 4) == 0)
			continue;
		sw_printable(name, sizeof(name), e->d_name);
		snprintf(path, sizeof(path), "/sys/block/%s/size", e->d_name);
		if ((sectors = read_number(root, path)) < 0)
			continue;
		if (!(o = json_pack("{ss sI}", "name", name, "bytes", (json_int_t)sectors * 512)))
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/device/model", e->d_name);
		set_text(o, "model", root, path);
		snprintf(path, sizeof(path), "/sys/block/%s/queue/rotational", e->d_name);
		json_object_set_new(o, "rotational", json_boolean(read_number(root, path) == 1));
		snprintf(path, sizeof(path), "/sys/block/%s/removable", e->d_name);
		json_object_set_new(o, "removable", json_boolean(read_number(root, path) == 1));
		v[n++] = o;
	}
	closedir(d);
	return sorted(v, n);
}

/* The addresses of interface `name`, as getifaddrs() has them (this machine only). */
static json_t *addresses(const char *name)
{
	struct ifaddrs *all, *i;
	json_t *arr = json_array();
	char text[INET6_ADDRSTRLEN];

	if (!arr || getifaddrs(&all) < 0)
		return arr;
	for (i = all; i; i = i->ifa_next) {
		const void *a = NULL;

		if (!i->ifa_addr || strcmp(i->ifa_name, name) != 0)
			continue;
		if (i->ifa_addr->sa_family == AF_INET)
			a = &((const struct sockaddr_in *)(const void *)i->ifa_addr)->sin_addr;
		else if (i->ifa_addr->sa_family == AF_INET6)
			a = &((const struct sockaddr_in6 *)(const void *)i->ifa_addr)->sin6_addr;
		if (a && inet_ntop(i->ifa_addr->sa_family, a, text, sizeof(text)))
			json_array_append_new(arr, json_string(text));
	}
	freeifaddrs(all);
	return arr;
}

/* /sys/class/net: each interface but loopback, its MAC, link speed and state. */
static json_t *interfaces(const char *root)
{
	char dir[1024], path[1024], name[NAME_MAX + 1];
	json_t *v[SW_INV_DEVICES_MAX];
	size_t n = 0;
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/sys/class/net", root);
	if (!(d = opendir(dir)))
		return json_array();
	while ((e = readdir(d)) && n < SW_INV_DEVICES_MAX) {
		long long speed;
		json_t *o;

		if (e->d_name[0] == '.' || strcmp(e->d_name, "lo") == 0)
			continue;
		sw_printable(name, sizeof(name), e->d_name);
		if (!(o = json_pack("{ss}", "name", name)))
			continue;
		snprintf(path, sizeof(path), "/sys/class/net/%s/address", e->d_name);
		set_text(o, "mac", root, path);
		snprintf(path, sizeof(path), "/sys/class/net/%s/operstate", e->d_name);
		set_text(o, "state", root, path);
		/* Mb/s; a link that is down, or virtual, has none */
		snprintf(path, sizeof(path), "/sys/class/net/%s/speed", e->d_name);
		if ((speed = read_number(root, path)) > 0)
			json_object_set_new(o, "speed_mbps", json_integer(speed));
		if (!root[0])
			json_object_set_new(o, "addresses", addresses(e->d_name));
		v[n++] = o;
	}
	closedir(d);
	return sorted(v, n);
}

/* /etc/os-release: the fields a collection asks about. */
static json_t *os_release(const char *root)
{
	static const char *const keys[] = {"ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME"};
	char path[1024], line[512], v[SW_INV_TEXT_MAX];
	json_t *o = json_object();
	FILE *f;

	snprintf(path, sizeof(path), "%s/etc/os-release", root);
	if (!o || !(f = fopen(path, "re")))
		return o;
	while (fgets(line, sizeof(line), f)) {
		for (size_t i = 0; i < SW_ARRAY_LEN(keys); i++) {
			size_t k = strlen(keys[i]);
			char *s;

			if (strncmp(line, keys[i], k) != 0 || line[k] != '=')
				continue;
			s = line + k + 1;
			s[strcspn(s, "\n")] = '\0';
			if (*s == '"' && s[strlen(s) - 1] == '"' && strlen(s) >= 2) {
				s[strlen(s) - 1] = '\0';
				s++;
			}
			sw_printable(v, sizeof(v), s);
			json_object_set_new(o,
					    keys[i][0] == 'I'	? "id"
					    : keys[i][8] == 'I' ? "version"
					    : keys[i][0] == 'V' ? "codename"
								: "name",
					    json_string(v));
		}
	}
	fclose(f);
	return o;
}

json_t *sw_inv_hardware(const char *root)
{
	struct utsname u;
	json_t *hw = json_pack("{so so so so so so}", "dmi", dmi(root), "cpu", cpu(root), "memory",
			       memory(root), "disks", disks(root), "interfaces", interfaces(root),
			       "os", os_release(root));

	if (hw && !root[0] && uname(&u) == 0)
		json_object_set_new(hw, "kernel",
				    json_pack("{ss ss ss}", "release", u.release, "version",
					      u.version, "machine", u.machine));
	return hw;
}

int sw_inv_collect(const char *root, const char *dpkg_status, json_t **out, char *err,
		   size_t errlen)
{
	struct sw_dpkg_list l = {0};
	json_t *pkgs, *hw;
	int rc;

	*out = NULL;
	if ((rc = sw_dpkg_read(dpkg_status, &l, err, errlen)))
		return rc;
	pkgs = json_array();
	for (size_t i = 0; pkgs && i < l.n; i++)
		if (json_array_append_new(pkgs, json_pack("{ss ss ss}", "n", l.v[i].name, "a",
							  l.v[i].arch, "v", l.v[i].version)))
			break;
	sw_dpkg_list_free(&l);
	hw = sw_inv_hardware(root);
	if (!pkgs || !hw) {
		json_decref(pkgs);
		json_decref(hw);
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	*out = json_pack("{so so}", "hardware", hw, "packages", pkgs);
	return *out ? 0 : SW_ENOMEM;
}

static int pkg_cmp(const json_t *a, const json_t *b)
{
	int c = strcmp(json_string_value(json_object_get(a, "n")),
		       json_string_value(json_object_get(b, "n")));

	return c ? c
		 : strcmp(json_string_value(json_object_get(a, "a")),
			  json_string_value(json_object_get(b, "a")));
}

json_t *sw_inv_delta(const json_t *from, const json_t *to, int *same)
{
	const json_t *a = json_object_get(from, "packages"), *b = json_object_get(to, "packages");
	json_t *added = json_array(), *changed = json_array(), *removed = json_array(), *d;
	size_t i = 0, k = 0, na = json_array_size(a), nb = json_array_size(b);

	*same = 0;
	if (!added || !changed || !removed)
		goto oom;
	/* both sorted by name, then architecture: one walk */
	while (i < na || k < nb) {
		const json_t *x = i < na ? json_array_get(a, i) : NULL;
		const json_t *y = k < nb ? json_array_get(b, k) : NULL;
		int c = !x ? 1 : !y ? -1 : pkg_cmp(x, y);

		if (c < 0) {
			json_array_append_new(removed,
					      json_pack("{sO sO}", "n", json_object_get(x, "n"),
							"a", json_object_get(x, "a")));
			i++;
		} else if (c > 0) {
			json_array_append(added, (json_t *)y);
			k++;
		} else {
			if (!json_equal(json_object_get(x, "v"), json_object_get(y, "v")))
				json_array_append(changed, (json_t *)y);
			i++, k++;
		}
	}
	if (!json_array_size(added) && !json_array_size(changed) && !json_array_size(removed) &&
	    json_equal(json_object_get(from, "hardware"), json_object_get(to, "hardware"))) {
		*same = 1;
		goto oom;
	}
	d = json_pack("{so so so}", "added", added, "changed", changed, "removed", removed);
	if (d && !json_equal(json_object_get(from, "hardware"), json_object_get(to, "hardware")))
		json_object_set(d, "hardware", json_object_get(to, "hardware"));
	return d;
oom:
	json_decref(added);
	json_decref(changed);
	json_decref(removed);
	return NULL;
}

static int check_pkgs(const json_t *arr, const char *what, int with_version, size_t *total,
		      char *err, size_t errlen)
{
	const json_t *p;
	size_t i;

	if (!arr)
		return 0;
	if (!json_is_array(arr)) {
		sw_seterr(err, errlen, "'%s' must be a list of packages", what);
		return SW_EINVAL;
	}
	json_array_foreach(arr, i, p)
	{
		const char *n = json_string_value(json_object_get(p, "n"));
		const char *a = json_string_value(json_object_get(p, "a"));
		const char *v = json_string_value(json_object_get(p, "v"));

		if (++*total > SW_DPKG_PACKAGES_MAX) {
			sw_seterr(err, errlen, "more than %d packages", SW_DPKG_PACKAGES_MAX);
			return SW_EINVAL;
		}
		if (!json_is_object(p) || json_object_size(p) != (with_version ? 3u : 2u) || !n ||
		    !a || !sw_dpkg_name_valid(n) || !a[0] || strlen(a) > SW_DPKG_ARCH_MAX ||
		    strspn(a, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(a) ||
		    (with_version && (!v || !sw_prog_version_valid(v)))) {
			sw_seterr(err, errlen, "%s[%zu]: not a package {n, a%s}", what, i,
				  with_version ? ", v" : "");
			return SW_EINVAL;
		}
	}
	return 0;
}

/* A hardware value: objects, arrays, strings and numbers, bounded, at most 4 deep. */
static int check_value(const json_t *v, int depth, size_t *count)
{
	const char *k;
	const json_t *x;
	size_t i;

	if (++*count > 4096 || depth > 4)
		return SW_EINVAL;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		json_object_foreach((json_t *)v, k,
				    x) if (strlen(k) > 64 ||
					   check_value(x, depth + 1, count)) return SW_EINVAL;
		return 0;
	case JSON_ARRAY:
		json_array_foreach(v, i, x) if (check_value(x, depth + 1, count)) return SW_EINVAL;
		return 0;
	case JSON_STRING: return json_string_length(v) <= SW_INV_TEXT_MAX ? 0 : SW_EINVAL;
	case JSON_INTEGER:
	case JSON_TRUE:
	case JSON_FALSE: return 0;
	default: return SW_EINVAL;
	}
}

int sw_inv_check(const json_t *j, int delta, char *err, size_t errlen)
{
	const json_t *hw = json_object_get(j, "hardware");
	size_t total = 0, count = 0;
	int rc;

	if (!json_is_object(j)) {
		sw_seterr(err, errlen, "an inventory must be an object");
		return SW_EINVAL;
	}
	if ((!delta && !hw) || (hw && (!json_is_object(hw) || check_value(hw, 0, &count)))) {
		sw_seterr(err, errlen, "'hardware' must be an object of bounded values");
		return SW_EINVAL;
	}
	if (!delta && !json_is_array(json_object_get(j, "packages"))) {
		sw_seterr(err, errlen, "a full inventory lists its 'packages'");
		return SW_EINVAL;
	}
	if ((rc = check_pkgs(json_object_get(j, "packages"), "packages", 1, &total, err, errlen)) ||
	    (rc = check_pkgs(json_object_get(j, "added"), "added", 1, &total, err, errlen)) ||
	    (rc = check_pkgs(json_object_get(j, "changed"), "changed", 1, &total, err, errlen)) ||
	    (rc = check_pkgs(json_object_get(j, "removed"), "removed", 0, &total, err, errlen)))
		return rc;
	return 0;
}

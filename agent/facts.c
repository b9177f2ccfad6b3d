/* What an agent tells the server about its machine. */
#include "agent.h"

#include "util.h"

#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

/* PRETTY_NAME from os-release, or the kernel's name when there is none. */
static void os_name(char *out, size_t len, const char *fallback)
{
	char line[512];
	FILE *f = fopen("/etc/os-release", "re");

	snprintf(out, len, "%s", fallback);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "PRETTY_NAME=", 12) == 0) {
			char *v = line + 12, *end;
			if (*v == '"')
				v++;
			end = v + strcspn(v, "\"\n");
			*end = '\0';
			snprintf(out, len, "%s", v);
			break;
		}
	}
	fclose(f);
}

/* MemAvailable counts reclaimable page cache too; sysinfo() has no such figure. */
static json_int_t mem_available(const struct sysinfo *si)
{
	char line[256];
	long long kib;
	FILE *f = fopen("/proc/meminfo", "re");

	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "MemAvailable: %lld kB", &kib) == 1) {
				fclose(f);
				return (json_int_t)kib * 1024;
			}
		fclose(f);
	}
	return (json_int_t)(si->freeram + si->bufferram) * si->mem_unit;
}

json_t *facts_collect(const struct agent *a)
{
	struct utsname u;
	struct sysinfo si;
	struct statvfs vfs;
	char os[256], host[256];
	json_t *f = json_object();

	if (!f)
		return NULL;
	if (uname(&u) == 0) {
		os_name(os, sizeof(os), u.sysname);
		json_object_set_new(f, "os", json_string(os));
		json_object_set_new(f, "kernel", json_string(u.release));
		json_object_set_new(f, "arch", json_string(u.machine));
	}
	if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		json_object_set_new(f, "hostname", json_string(host));
	}
	json_object_set_new(f, "cpus", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
	if (sysinfo(&si) == 0) {
		json_object_set_new(f, "memory_total",
				    json_integer((json_int_t)si.totalram * si.mem_unit));
		json_object_set_new(f, "memory_available", json_integer(mem_available(&si)));
		json_object_set_new(f, "uptime", json_integer(si.uptime));
	}
	if (statvfs(a->dir, &vfs) == 0)
		json_object_set_new(
		    f, "disk_free",
		    json_integer((json_int_t)vfs.f_bavail * (json_int_t)vfs.f_frsize));
	json_object_set_new(f, "agent_uptime", json_integer((sw_mono_ms() - a->started_ms) / 1000));
	return f;
}

/* The latest time a machine is known to have reached: see clockmark.h. */
#include "clockmark.h"

#include "error.h"
#include "json.h"
#include "util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t boot_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
		return -1;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* This boot's id, "" when the kernel does not say (a /proc file has no size to read by). */
static void boot_id(char out[40])
{
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, out, 39);

	if (fd >= 0)
		close(fd);
	if (n < 0)
		n = 0;
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		n--;
	out[n] = '\0';
}

int sw_clockmark_parse(const char *text, size_t len, struct sw_clockmark *m)
{
	const char *bid = NULL;
	json_t *j = NULL;
	int rc = SW_EINVAL;

	memset(m, 0, sizeof(*m));
	if (len > SW_CLOCKMARK_MAX || sw_json_parse_object(text, len, &j, NULL, 0) ||
	    sw_json_int(j, "wall_ms", 1, INT64_MAX / 4, 1, &m->wall_ms, NULL, 0) ||
	    sw_json_int(j, "boot_ms", 0, INT64_MAX / 4, 1, &m->boot_ms, NULL, 0) ||
	    sw_json_str(j, "boot_id", sizeof(m->boot_id) - 1, 1, &bid, NULL, 0))
		goto out;
	snprintf(m->boot_id, sizeof(m->boot_id), "%s", bid);
	rc = 0;
out:
	json_decref(j);
	return rc;
}

int64_t sw_clockmark_now(const char *path)
{
	struct sw_clockmark m;
	char *text = NULL, id[40];
	size_t len = 0;
	int64_t out = 0, now_boot;

	if (sw_file_read(path, SW_CLOCKMARK_MAX, &text, &len, NULL, 0) ||
	    sw_clockmark_parse(text, len, &m))
		goto out;
	out = m.wall_ms;
	boot_id(id);
	now_boot = boot_ms();
	/* the same boot: as much time has passed as the kernel has counted since */
	if (id[0] && strcmp(id, m.boot_id) == 0 && now_boot >= m.boot_ms)
		out = m.wall_ms + (now_boot - m.boot_ms);
out:
	free(text);
	return out;
}

int64_t sw_clockmark_trusted(const char *path, int64_t *behind_ms)
{
	int64_t wall = sw_now_ms(), mark = sw_clockmark_now(path);

	*behind_ms = mark > wall ? mark - wall : 0;
	return mark > wall ? mark : wall;
}

int sw_clockmark_write(const char *path, char *err, size_t errlen)
{
	char id[40], *text = NULL;
	int64_t behind, now = sw_clockmark_trusted(path, &behind), b = boot_ms();
	json_t *j;
	int rc = SW_ENOMEM;

	boot_id(id);
	if (b < 0 || !id[0]) {
		sw_seterr(err, errlen, "this kernel tells no boot time or boot id");
		return SW_EIO;
	}
	j = json_pack("{sI ss sI}", "wall_ms", (json_int_t)now, "boot_id", id, "boot_ms",
		      (json_int_t)b);
	if (j && (text = sw_json_dump(j)))
		rc = sw_file_write_atomic(path, text, strlen(text), 0644, err, errlen);
	else
		sw_seterr(err, errlen, "out of memory");
	json_decref(j);
	free(text);
	return rc;
}

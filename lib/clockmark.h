/*
 * The latest time a machine is known to have reached, so that setting its clock back
 * does not make time run backwards for what expires by it (a borrowed license). The
 * agent, as root, keeps it in its folder (clock.json); whoever reads it takes the later
 * of its own clock and the mark.
 *
 * The mark is {"wall_ms", "boot_id", "boot_ms"}: the wall clock when it was written and
 * the time since boot then (CLOCK_BOOTTIME, which counts suspended time). In the same
 * boot the mark moves on with the time since boot, so a clock set back an hour ago is
 * still an hour behind; after a reboot the mark stands where it was written.
 */
#ifndef SW_CLOCKMARK_H
#define SW_CLOCKMARK_H

#include <stddef.h>
#include <stdint.h>

#define SW_CLOCKMARK_FILE "clock.json"
#define SW_CLOCKMARK_MAX  512 /* bytes */

struct sw_clockmark {
	int64_t wall_ms, boot_ms;
	char boot_id[40];
};

/* Reads a mark's text: 0, or SW_EINVAL. */
int sw_clockmark_parse(const char *text, size_t len, struct sw_clockmark *m);

/* The time the mark at `path` stands for now, in ms since the epoch; 0 when there is
 * none or it does not read (a file that is not a mark counts as none). */
int64_t sw_clockmark_now(const char *path);

/* Writes the mark: the later of this clock and where the mark stood (sw_clockmark_now).
 * 0, or an SW_E* code with the reason. */
int sw_clockmark_write(const char *path, char *err, size_t errlen);

/* The later of the wall clock and the mark at `path`; *behind_ms is how far the wall
 * clock is behind the mark (0 when it is not). */
int64_t sw_clockmark_trusted(const char *path, int64_t *behind_ms);

#endif

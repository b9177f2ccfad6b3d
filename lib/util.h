/* Small helpers every program needs: files, time, randomness, addresses. */
#ifndef SW_UTIL_H
#define SW_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define SW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Milliseconds: wall clock since the epoch, and a monotonic clock for deadlines. */
int64_t sw_now_ms(void);
int64_t sw_mono_ms(void);

/* Reads a whole file of at most `max` bytes into a NUL-terminated buffer the caller
 * frees. A larger file fails with SW_ETOOBIG. */
int sw_file_read(const char *path, size_t max, char **buf, size_t *len, char *err, size_t errlen);

/* The largest certificate, key or CA file a program reads. */
#define SW_PEM_MAX (64 * 1024)

/* Reads the PEM file `name` (a certificate, a key, the site CA) in the folder `dir` into
 * a NUL-terminated string the caller frees, at most SW_PEM_MAX bytes; the error names
 * the file. The one way a program reads its certificates and keys. */
int sw_pem_read(const char *dir, const char *name, char **pem, char *err, size_t errlen);

/* Replaces `path` atomically and durably: a temporary file in the same folder is
 * written, fsynced and renamed over it, then the folder is fsynced. */
int sw_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode, char *err,
			 size_t errlen);

/* Makes the names in the folder `dir` (renames, new files) last across a power cut. */
int sw_fsync_dir(const char *dir, char *err, size_t errlen);

/* Copies the file `from` to `to` (created 0644, or truncated), synced before it returns. */
int sw_file_copy(const char *from, const char *to, char *err, size_t errlen);

/* Finds the file execvp would run for `program` (a path, or a name looked up in $PATH,
 * "/bin:/usr/bin" when unset), into `found`. SW_ENOTFOUND ("command not found") or
 * SW_EDENIED (found but not executable), with the reason in `err`. */
int sw_path_find(const char *program, char *found, size_t foundlen, char *err, size_t errlen);

/* Runs argv[0] (a path) with `argv`, stdin and stderr on /dev/null, and reads what it
 * writes to stdout into `out` (NUL-terminated; the rest is read and dropped). It gets
 * `timeout_ms` in all; past that it is killed and SW_ETIMEDOUT returned. *status is its
 * wait status. For short, synchronous questions to a system tool. */
int sw_command_output(char *const argv[], int timeout_ms, char *out, size_t outlen, int *status,
		      char *err, size_t errlen);

/* Joins a folder and a file name into `out`; fails with SW_ETOOBIG if it does not fit. */
int sw_path_join(char *out, size_t outlen, const char *dir, const char *name);

/* `nbytes` random bytes from GnuTLS's generator as lowercase hex (2*nbytes+1 bytes). */
int sw_random_hex(char *out, size_t nbytes);
/* A random number, for jitter (not for keys). */
uint32_t sw_random_u32(void);

/* SHA-256 of `data` as lowercase hex (65 bytes). */
void sw_sha256_hex(const void *data, size_t len, char out[65]);
/* SHA-256 of the file at `path` as lowercase hex, and its size; read in pieces, for
 * files of any size (on the thread pool for large ones). */
int sw_file_sha256(const char *path, char out[65], uint64_t *size, char *err, size_t errlen);

/* Compares two strings in time independent of where they differ. */
int sw_consttime_eq(const char *a, const char *b);

/* Splits "host:port", "[v6]:port" into host (no brackets) and port 1..65535 (or 0 when
 * `allow_zero`). */
int sw_hostport_parse(const char *s, char *host, size_t hostlen, unsigned *port, int allow_zero,
		      char *err, size_t errlen);

/* 1 if `host` is an IPv4 or IPv6 literal. */
int sw_ip_literal(const char *host);
/* The leading bits two addresses (HOST or HOST:PORT, IPv4 or IPv6 literals) have in
 * common: 32 or 128 for the same host; SW_EINVAL (below 0) when either is no IP
 * literal or they are of two families. */
int sw_addr_common_bits(const char *a, const char *b);

/* The open-file limit (RLIMIT_NOFILE). The soft limit is often 1024 while the hard one
 * is far higher; a daemon that holds a descriptor per connection raises its soft limit
 * to the hard one at start. Unlimited is UINT64_MAX. */
struct sw_nofile {
	uint64_t was;  /* the soft limit the program was started with */
	uint64_t soft; /* the soft limit now */
	uint64_t hard;
	int raise_errno; /* why setrlimit refused, or 0 */
};
/* Raises the soft limit to the hard one and says what was and is. SW_EIO only if the
 * limit cannot even be read; a refused raise leaves the old limit, and its errno in
 * `raise_errno`. Children inherit the raised limit. */
int sw_nofile_raise(struct sw_nofile *nf);
/* "open-file limit 524288 (raised from 1024; the hard limit)" and the like, for a log
 * line. */
void sw_nofile_describe(const struct sw_nofile *nf, char *out, size_t outlen);
/* How many descriptors the process has open now (from /proc/self/fd), or SW_EIO. */
int sw_fds_open(void);

/* A name for a system or an admin: 1..63 of [A-Za-z0-9._-], not starting with '.' or '-'. */
int sw_name_valid(const char *name);

/* A number in decimal ("30", "0.5", "1e3"): the whole of `s`, finite, from min to max.
 * Not "nan", "inf", hex or spaces, which strtod takes. SW_EINVAL otherwise. */
int sw_number_parse(const char *s, double min, double max, double *out);
/* A whole number in decimal, the whole of `s`, from min to max; SW_EINVAL otherwise. */
int sw_int_parse(const char *s, int64_t min, int64_t max, int64_t *out);
/* A duration as people write it: seconds, or a number with s, m, h or d (90, 90s, 30m,
 * 8h, 7d), from `min` to `max` seconds. 0 and the seconds in *out, or SW_EINVAL. */
int sw_duration_parse(const char *s, int64_t min, int64_t max, int64_t *out);
/* A duration as sw_duration_parse() reads it, in the largest whole unit: 14d, 8h, 90s. */
void sw_duration_text(int64_t seconds, char *out, size_t len);

/* Text from another machine made safe to show on a terminal: control characters (C0,
 * DEL, C1, so also the ESC that starts a terminal's escape sequences), bidirectional
 * overrides and bytes that are not UTF-8 are written as \xNN or \uNNNN, the rest as it
 * is. At most outlen - 1 bytes and a NUL go to `out`, cut before a character or escape
 * that does not fit; 4 * strlen(in) + 1 always fits. Returns the length written. */
size_t sw_printable(char *out, size_t outlen, const char *in);

#endif

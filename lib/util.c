#include "util.h"

#include "error.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t sw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sw_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sw_file_read(const char *path, size_t max, char **buf, size_t *len, char *err, size_t errlen)
{
	char *data = NULL;
	size_t used = 0;
	ssize_t n;
	struct stat st;
	int fd, rc = SW_EIO;

	*buf = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		sw_seterr(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return errno == ENOENT ? SW_ENOTFOUND : SW_EIO;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		sw_seterr(err, errlen, "%s is not a regular file", path);
		goto out;
	}
	if ((size_t)st.st_size > max) {
		sw_seterr(err, errlen, "%s is larger than %zu bytes", path, max);
		rc = SW_ETOOBIG;
		goto out;
	}
	data = malloc((size_t)st.st_size + 1);
	if (!data) {
		rc = SW_ENOMEM;
		goto out;
	}
	while (used < (size_t)st.st_size) {
		n = read(fd, data + used, (size_t)st.st_size - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			sw_seterr(err, errlen, "cannot read %s: %s", path,
				  n < 0 ? strerror(errno) : "file shrank");
			goto out;
		}
		used += (size_t)n;
	}
	data[used] = '\0';
	*buf = data;
	data = NULL;
	if (len)
		*len = used;
	rc = 0;
out:
	free(data);
	close(fd);
	return rc;
}

int sw_pem_read(const char *dir, const char *name, char **pem, char *err, size_t errlen)
{
	char path[PATH_MAX];

	*pem = NULL;
	if (sw_path_join(path, sizeof(path), dir, name)) {
		sw_seterr(err, errlen, "%s/%s: path too long", dir, name);
		return SW_EINVAL;
	}
	return sw_file_read(path, SW_PEM_MAX, pem, NULL, err, errlen);
}

int sw_file_copy(const char *from, const char *to, char *err, size_t errlen)
{
	char buf[65536];
	int in, out, rc = 0;
	ssize_t n;

	in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		sw_seterr(err, errlen, "%s: %s", from, strerror(errno));
		return errno == ENOENT ? SW_ENOTFOUND : SW_EIO;
	}
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		sw_seterr(err, errlen, "%s: %s", to, strerror(errno));
		close(in);
		return SW_EIO;
	}
	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sw_seterr(err, errlen, "%s: %s", from, strerror(errno));
			rc = SW_EIO;
			break;
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(out, buf + done, (size_t)(n - done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				sw_seterr(err, errlen, "%s: %s", to, strerror(errno));
				rc = SW_EIO;
				break;
			}
			done += w;
		}
		if (rc)
			break;
	}
	if (!rc && fsync(out)) {
		sw_seterr(err, errlen, "%s: %s", to, strerror(errno));
		rc = SW_EIO;
	}
	close(in);
	close(out);
	return rc;
}

int sw_fsync_dir(const char *dir, char *err, size_t errlen)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (dfd < 0 || fsync(dfd) < 0) {
		sw_seterr(err, errlen, "cannot sync the folder %s: %s", dir, strerror(errno));
		rc = SW_EIO;
	}
	return rc;
}

int sw_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode, char *err,
			 size_t errlen)
{
	char tmp[4096], dir[4096];
	const char *p = data;
	int fd = -1, rc = SW_EIO;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
		sw_seterr(err, errlen, "path too long: %s", path);
		return SW_ETOOBIG;
	}
	/* A new file, never one found there: in a folder others may write to (the usage
	 * cache), a link or a file put at this name beforehand must not be written through
	 * or taken over. One left by a crash of an earlier process of this pid goes. */
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		sw_seterr(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return SW_EIO;
	}
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sw_seterr(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
			goto out;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		sw_seterr(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		sw_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		goto out;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	sw_fsync_dir(dirname(dir), NULL, 0);
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (rc)
		unlink(tmp);
	return rc;
}

int sw_path_join(char *out, size_t outlen, const char *dir, const char *name)
{
	int n = snprintf(out, outlen, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= outlen ? SW_ETOOBIG : 0;
}

uint32_t sw_random_u32(void)
{
	uint32_t v = 0;

	if (gnutls_rnd(GNUTLS_RND_NONCE, &v, sizeof(v)) < 0)
		v = (uint32_t)getpid() * 2654435761u; /* only for jitter: anything will do */
	return v;
}

int sw_random_hex(char *out, size_t nbytes)
{
	unsigned char raw[64];
	static const char digits[] = "0123456789abcdef";

	if (nbytes > sizeof(raw))
		return SW_EINVAL;
	if (gnutls_rnd(GNUTLS_RND_KEY, raw, nbytes) < 0)
		return SW_ECRYPTO;
	for (size_t i = 0; i < nbytes; i++) {
		out[2 * i] = digits[raw[i] >> 4];
		out[2 * i + 1] = digits[raw[i] & 15];
	}
	out[2 * nbytes] = '\0';
	return 0;
}

void sw_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char digest[32];
	static const char digits[] = "0123456789abcdef";

	gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, digest);
	for (int i = 0; i < 32; i++) {
		out[2 * i] = digits[digest[i] >> 4];
		out[2 * i + 1] = digits[digest[i] & 15];
	}
	out[64] = '\0';
}

int sw_file_sha256(const char *path, char out[65], uint64_t *size, char *err, size_t errlen)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char digest[32], *buf = malloc(1 << 16);
	gnutls_hash_hd_t h = NULL;
	uint64_t total = 0;
	ssize_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), rc = SW_EIO;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		sw_seterr(err, errlen, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		sw_seterr(err, errlen, "%s is not a regular file", path);
		goto out;
	}
	if (!buf || gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		goto out;
	}
	while ((n = read(fd, buf, 1 << 16)) > 0 || (n < 0 && errno == EINTR)) {
		if (n < 0)
			continue;
		gnutls_hash(h, buf, (size_t)n);
		total += (uint64_t)n;
	}
	if (n < 0) {
		sw_seterr(err, errlen, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	gnutls_hash_deinit(h, digest);
	h = NULL;
	for (int i = 0; i < 32; i++) {
		out[2 * i] = digits[digest[i] >> 4];
		out[2 * i + 1] = digits[digest[i] & 15];
	}
	out[64] = '\0';
	if (size)
		*size = total;
	rc = 0;
out:
	if (h)
		gnutls_hash_deinit(h, NULL);
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

int sw_consttime_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;

	for (size_t i = 0; i < la && i < lb; i++)
		diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
	return diff == 0;
}

int sw_hostport_parse(const char *s, char *host, size_t hostlen, unsigned *port, int allow_zero,
		      char *err, size_t errlen)
{
	const char *colon, *hs = s, *he;
	char *end;
	unsigned long p;

	if (s[0] == '[') {
		he = strchr(s, ']');
		if (!he || he[1] != ':')
			goto bad;
		hs = s + 1;
		colon = he + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			goto bad;
		he = colon;
	}
	if (he == hs || (size_t)(he - hs) >= hostlen)
		goto bad;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || p > 65535 || (p == 0 && !allow_zero))
		goto bad;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	*port = (unsigned)p;
	return 0;
bad:
	sw_seterr(err, errlen, "'%s' is not HOST:PORT", s);
	return SW_EINVAL;
}

int sw_ip_literal(const char *host)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int sw_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 63 || name[0] == '.' || name[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int sw_path_find(const char *program, char *found, size_t foundlen, char *err, size_t errlen)
{
	char path[PATH_MAX];
	const char *dirs, *p, *end;
	struct stat st;
	int exists = 0;

	if (strchr(program, '/')) {
		if (stat(program, &st) < 0) {
			sw_seterr(err, errlen, "%s: %s", program, strerror(errno));
			return errno == ENOENT || errno == ENOTDIR ? SW_ENOTFOUND : SW_EDENIED;
		}
		if (S_ISDIR(st.st_mode) || eaccess(program, X_OK) < 0) {
			sw_seterr(err, errlen, "%s: %s", program,
				  S_ISDIR(st.st_mode) ? "Is a directory" : strerror(EACCES));
			return SW_EDENIED;
		}
		snprintf(found, foundlen, "%s", program);
		return 0;
	}
	if (!program[0]) {
		sw_seterr(err, errlen, "an empty program name");
		return SW_ENOTFOUND;
	}
	dirs = getenv("PATH");
	if (!dirs || !dirs[0])
		dirs = "/bin:/usr/bin";
	for (p = dirs;; p = end + 1) {
		size_t n;

		end = strchrnul(p, ':');
		n = (size_t)(end - p);
		if (snprintf(path, sizeof(path), "%.*s%s%s", (int)n, p, n ? "/" : "", program) <
			(int)sizeof(path) &&
		    stat(path, &st) == 0) {
			if (S_ISREG(st.st_mode) && eaccess(path, X_OK) == 0) {
				snprintf(found, foundlen, "%s", path);
				return 0;
			}
			exists = 1;
		}
		if (!*end)
			break;
	}
	sw_seterr(err, errlen, "%s: %s", program, exists ? strerror(EACCES) : "command not found");
	return exists ? SW_EDENIED : SW_ENOTFOUND;
}

int sw_command_output(char *const argv[], int timeout_ms, char *out, size_t outlen, int *status,
		      char *err, size_t errlen)
{
	int64_t deadline = sw_mono_ms() + timeout_ms;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	int pipefd[2], rc = 0, open = 1;
	size_t used = 0;
	pid_t pid;

	out[0] = '\0';
	*status = -1;
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		sw_seterr(err, errlen, "cannot run %s: %s", argv[0], strerror(errno));
		return SW_EIO;
	}
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	/* The caller may block or catch signals (siteward-run does): the tool gets its own
	 * default dispositions and an empty mask. */
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	rc = posix_spawn(&pid, argv[0], &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(pipefd[1]);
	if (rc) {
		close(pipefd[0]);
		sw_seterr(err, errlen, "cannot run %s: %s", argv[0], strerror(rc));
		return rc == ENOENT ? SW_ENOTFOUND : SW_EIO;
	}
	rc = 0;
	/* Read to the end of its output, then wait for it to exit, all within the time. */
	for (;;) {
		int64_t left = deadline - sw_mono_ms();
		struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
		char buf[4096];
		ssize_t n;

		if (!open) {
			pid_t w = waitpid(pid, status, WNOHANG);

			if (w == pid)
				break;
			if (w < 0 && errno != EINTR) {
				rc = SW_EIO;
				break;
			}
			if (left <= 0) {
				rc = SW_ETIMEDOUT;
				break;
			}
			usleep(1000);
			continue;
		}
		if (left <= 0) {
			rc = SW_ETIMEDOUT;
			break;
		}
		n = poll(&pfd, 1, (int)(left < INT32_MAX ? left : INT32_MAX));
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			continue; /* the deadline, next turn */
		n = read(pipefd[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			open = 0;
			continue;
		}
		if (used + 1 < outlen) {
			size_t take = (size_t)n < outlen - 1 - used ? (size_t)n : outlen - 1 - used;

			memcpy(out + used, buf, take);
			used += take;
			out[used] = '\0';
		}
	}
	close(pipefd[0]);
	if (rc) {
		/* Killed, then reaped: SIGKILL cannot be ignored, so this wait is short. */
		kill(pid, SIGKILL);
		while (waitpid(pid, status, 0) < 0 && errno == EINTR)
			;
		sw_seterr(err, errlen, "%s did not %s within %d ms", argv[0],
			  open ? "answer" : "exit", timeout_ms);
	}
	return rc;
}

int sw_number_parse(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	/* strtod would also take "nan", "inf", hex, and leading spaces */
	if (!s || !*s || strspn(s, "0123456789.eE+-") != strlen(s))
		return SW_EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end || errno == ERANGE || !isfinite(v) || v < min || v > max)
		return SW_EINVAL;
	*out = v;
	return 0;
}

int sw_int_parse(const char *s, int64_t min, int64_t max, int64_t *out)
{
	const char *digits = s && *s == '-' ? s + 1 : s;
	char *end;
	long long v;

	if (!digits || !*digits || strspn(digits, "0123456789") != strlen(digits))
		return SW_EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end || errno == ERANGE || v < min || v > max)
		return SW_EINVAL;
	*out = v;
	return 0;
}

int sw_duration_parse(const char *s, int64_t min, int64_t max, int64_t *out)
{
	static const struct {
		char unit;
		int64_t seconds;
	} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
	char num[32];
	size_t n = s ? strlen(s) : 0;
	int64_t mult = 1, v;

	if (n == 0 || n >= sizeof(num))
		return SW_EINVAL;
	memcpy(num, s, n + 1);
	for (size_t i = 0; i < SW_ARRAY_LEN(units); i++)
		if (num[n - 1] == units[i].unit) {
			mult = units[i].seconds;
			num[n - 1] = '\0';
		}
	if (sw_int_parse(num, 0, INT64_MAX / 86400, &v) || v * mult < min || v * mult > max)
		return SW_EINVAL;
	*out = v * mult;
	return 0;
}

void sw_duration_text(int64_t seconds, char *out, size_t len)
{
	static const struct {
		char unit;
		int64_t seconds;
	} units[] = {{'d', 86400}, {'h', 3600}, {'m', 60}};

	for (size_t i = 0; i < SW_ARRAY_LEN(units); i++)
		if (seconds > 0 && seconds % units[i].seconds == 0) {
			snprintf(out, len, "%lld%c", (long long)(seconds / units[i].seconds),
				 units[i].unit);
			return;
		}
	snprintf(out, len, "%llds", (long long)seconds);
}

/* The length of the UTF-8 sequence at `p` and its code point, or 0 if it is not one
 * (overlong, a surrogate, past U+10FFFF, cut short). */
static size_t utf8_next(const unsigned char *p, uint32_t *cp)
{
	size_t n;
	uint32_t c;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, c = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, c = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, c = p[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

size_t sw_printable(char *out, size_t outlen, const char *in)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0;

	if (outlen == 0)
		return 0;
	while (*p) {
		char esc[16 + 1];
		uint32_t cp;
		size_t n = utf8_next(p, &cp), elen;

		if (n == 0) /* a byte that is not UTF-8: a terminal may take 0x9b for CSI */
			elen = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", p[0]), n = 1;
		else if (cp < 0x20 || cp == 0x7f)
			elen = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", (unsigned)cp);
		else if ((cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
			 (cp >= 0x2066 && cp <= 0x2069))
			/* C1 controls, and the bidirectional overrides that reorder what a
			 * person reads */
			elen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
		else
			memcpy(esc, p, n), elen = n;
		if (o + elen >= outlen) /* only whole characters and escapes */
			break;
		memcpy(out + o, esc, elen);
		o += elen;
		p += n;
	}
	out[o] = '\0';
	return o;
}

static uint64_t rlim_u64(rlim_t v)
{
	return v == RLIM_INFINITY ? UINT64_MAX : (uint64_t)v;
}

int sw_nofile_raise(struct sw_nofile *nf)
{
	struct rlimit rl;

	memset(nf, 0, sizeof(*nf));
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return SW_EIO;
	nf->was = nf->soft = rlim_u64(rl.rlim_cur);
	nf->hard = rlim_u64(rl.rlim_max);
	if (rl.rlim_cur == rl.rlim_max)
		return 0;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		/* the hard limit above what the kernel allows (fs.nr_open): keep the old */
		nf->raise_errno = errno;
		return 0;
	}
	nf->soft = nf->hard;
	return 0;
}

void sw_nofile_describe(const struct sw_nofile *nf, char *out, size_t outlen)
{
	char soft[24], hard[24];

	snprintf(soft, sizeof(soft), "%" PRIu64, nf->soft);
	snprintf(hard, sizeof(hard), "%" PRIu64, nf->hard);
	if (nf->soft == UINT64_MAX)
		snprintf(soft, sizeof(soft), "unlimited");
	if (nf->hard == UINT64_MAX)
		snprintf(hard, sizeof(hard), "unlimited");
	if (nf->raise_errno)
		snprintf(out, outlen,
			 "open-file limit %s (hard limit %s, which it cannot take: %s)", soft, hard,
			 strerror(nf->raise_errno));
	else if (nf->was != nf->soft)
		snprintf(out, outlen,
			 "open-file limit %s (raised from %" PRIu64 "; the hard limit)", soft,
			 nf->was);
	else
		snprintf(out, outlen, "open-file limit %s (the hard limit)", soft);
}

int sw_fds_open(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return SW_EIO;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* not the descriptor that reads the folder */
}

/* The host of HOST[:PORT] as an address: its length in bytes (4 or 16), 0 if none. */
static int addr_bytes(const char *s, unsigned char out[16])
{
	char host[256];
	unsigned port;

	if (sw_hostport_parse(s, host, sizeof(host), &port, 0, NULL, 0))
		snprintf(host, sizeof(host), "%s", s);
	if (inet_pton(AF_INET, host, out) == 1)
		return 4;
	return inet_pton(AF_INET6, host, out) == 1 ? 16 : 0;
}

int sw_addr_common_bits(const char *a, const char *b)
{
	unsigned char x[16], y[16];
	int n = addr_bytes(a, x), bits = 0;

	if (!n || n != addr_bytes(b, y))
		return SW_EINVAL;
	for (int i = 0; i < n; i++) {
		unsigned char d = x[i] ^ y[i];

		if (!d) {
			bits += 8;
			continue;
		}
		while (!(d & 0x80)) {
			bits++;
			d = (unsigned char)(d << 1);
		}
		break;
	}
	return bits;
}

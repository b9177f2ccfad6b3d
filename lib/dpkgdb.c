/* dpkg's database of installed packages: see dpkgdb.h. */
#include "dpkgdb.h"

#include "error.h"
#include "progver.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int sw_dpkg_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < 2 || n > SW_DPKG_NAME_MAX ||
	    !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789+-.") == n;
}

static int arch_valid(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= SW_DPKG_ARCH_MAX &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* One stanza's fields as they are read. */
struct stanza {
	char name[SW_DPKG_NAME_MAX + 2], version[SW_DPKG_VERSION_MAX + 2],
	    arch[SW_DPKG_ARCH_MAX + 2], status[64];
	size_t lines; /* none: the blank lines between two stanzas */
	int has_name;
	char why[128]; /* set when the stanza does not read: the first reason, for a person */
};

/* A field's value (its first line: continuation lines belong to the fields kept here
 * only in ones that have none) into `out`; too long spoils the stanza. */
static void take(struct stanza *st, const char *field, char *out, size_t size, const char *v,
		 size_t n)
{
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r'))
		n--;
	if (n >= size - 1 || memchr(v, '\0', n)) {
		if (!st->why[0])
			sw_seterr(st->why, sizeof(st->why),
				  n >= size - 1 ? "has an over-long %s field (more than %zu bytes)"
						: "has a NUL byte in its %s field",
				  field, size - 2);
		return;
	}
	memcpy(out, v, n);
	out[n] = '\0';
}

/* The one deb822 reader, of dpkg's database and of a package's control file alike:
 * calls `end` at the end of each stanza that has a line, and stops at its first error.
 * `status`: whether the Status field is read, or ignored as a control file has none. */
static int stanzas(const char *text, size_t len, int status,
		   int (*end)(const struct stanza *st, void *arg), void *arg)
{
	struct stanza st;
	size_t pos = 0, lineno = 0;
	int rc = 0;

	memset(&st, 0, sizeof(st));
	while (!rc && pos < len) {
		const char *line = text + pos, *nl = memchr(line, '\n', len - pos), *colon;
		size_t n = nl ? (size_t)(nl - line) : len - pos;

		pos += n + (nl ? 1 : 0);
		lineno++;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (n == 0) {
			if (st.lines)
				rc = end(&st, arg);
			memset(&st, 0, sizeof(st));
			continue;
		}
		st.lines++;
		if (line[0] == ' ' || line[0] == '\t')
			continue; /* a continuation: of Description, Conffiles, ... */
		if (!(colon = memchr(line, ':', n))) {
			if (!st.why[0])
				sw_seterr(st.why, sizeof(st.why),
					  "has a line that is not a field (line %zu)", lineno);
			continue;
		}
		size_t k = (size_t)(colon - line), vn = n - k - 1;
		const char *v = colon + 1;

		if (k == 7 && strncasecmp(line, "Package", 7) == 0) {
			/* two in one stanza: the file is damaged here */
			if (st.has_name && !st.why[0])
				sw_seterr(st.why, sizeof(st.why), "has two Package fields");
			st.has_name = 1;
			take(&st, "Package", st.name, sizeof(st.name), v, vn);
		} else if (k == 7 && strncasecmp(line, "Version", 7) == 0) {
			take(&st, "Version", st.version, sizeof(st.version), v, vn);
		} else if (k == 12 && strncasecmp(line, "Architecture", 12) == 0) {
			take(&st, "Architecture", st.arch, sizeof(st.arch), v, vn);
		} else if (status && k == 6 && strncasecmp(line, "Status", 6) == 0) {
			take(&st, "Status", st.status, sizeof(st.status), v, vn);
		}
	}
	if (!rc && st.lines)
		rc = end(&st, arg);
	return rc;
}

/* Why a stanza does not name a package, or NULL. */
static const char *name_why(const struct stanza *st)
{
	if (st->why[0])
		return st->why;
	if (!st->has_name)
		return "has no Package field";
	if (!sw_dpkg_name_valid(st->name))
		return "has a Package field that is not a package name (lowercase letters, "
		       "digits, + - .)";
	return NULL;
}

/* Why the package a stanza names has no version or architecture dpkg could give it, or
 * NULL. */
static const char *fields_why(const struct stanza *st)
{
	if (!st->version[0])
		return "has no Version field";
	if (!sw_prog_version_valid(st->version))
		return "has a Version field that is not a valid version";
	if (!st->arch[0])
		return "has no Architecture field";
	if (!arch_valid(st->arch))
		return "has an Architecture field that is not a valid architecture";
	return NULL;
}

static int push(struct sw_dpkg_list *l, const struct stanza *st)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 512;
		struct sw_dpkg_pkg *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return SW_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	snprintf(l->v[l->n].name, sizeof(l->v[l->n].name), "%s", st->name);
	snprintf(l->v[l->n].version, sizeof(l->v[l->n].version), "%s", st->version);
	snprintf(l->v[l->n].arch, sizeof(l->v[l->n].arch), "%s", st->arch);
	l->v[l->n].seq = l->n;
	l->n++;
	return 0;
}

/* Ends a stanza of dpkg's database: an installed package is kept, one that does not
 * read is counted. */
static int status_end(const struct stanza *st, void *arg)
{
	struct sw_dpkg_list *l = arg;
	const char *last;

	if (!st->has_name)
		return 0;
	last = strrchr(st->status, ' ');
	last = last ? last + 1 : st->status;
	if (name_why(st))
		l->skipped++;
	else if (strcmp(last, "installed") != 0)
		; /* removed with its configuration kept, half-installed, ... */
	else if (fields_why(st))
		l->skipped++;
	else if (l->n >= SW_DPKG_PACKAGES_MAX)
		return SW_ETOOBIG;
	else
		return push(l, st);
	return 0;
}

static int by_name_arch(const void *a, const void *b)
{
	const struct sw_dpkg_pkg *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->arch, y->arch);
}

static int by_name_arch_seq(const void *a, const void *b)
{
	const struct sw_dpkg_pkg *x = a, *y = b;
	int c = by_name_arch(a, b);

	return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

int sw_dpkg_parse(const char *text, size_t len, struct sw_dpkg_list *out, char *err, size_t errlen)
{
	size_t w = 0;
	int rc;

	sw_dpkg_list_free(out);
	if (len > SW_DPKG_STATUS_MAX) {
		sw_seterr(err, errlen, "dpkg's status file is larger than %d bytes",
			  SW_DPKG_STATUS_MAX);
		return SW_ETOOBIG;
	}
	if ((rc = stanzas(text, len, 1, status_end, out))) {
		sw_seterr(err, errlen,
			  rc == SW_ENOMEM ? "out of memory"
					  : "dpkg's status file lists more than %d packages",
			  SW_DPKG_PACKAGES_MAX);
		sw_dpkg_list_free(out);
		return rc;
	}
	/* sorted, and each package and architecture once (the first stanza wins) */
	if (out->n)
		qsort(out->v, out->n, sizeof(*out->v), by_name_arch_seq);
	for (size_t r = 0; r < out->n; r++)
		if (w == 0 || by_name_arch(&out->v[w - 1], &out->v[r]) != 0)
			out->v[w++] = out->v[r];
		else
			out->skipped++;
	out->n = w;
	return 0;
}

/* A control file's stanza; a second one is an error. */
struct control {
	struct stanza st;
	size_t n;
};

static int control_end(const struct stanza *st, void *arg)
{
	struct control *c = arg;

	if (c->n++)
		return SW_EINVAL;
	c->st = *st;
	return 0;
}

int sw_dpkg_control_parse(const char *text, size_t len, struct sw_dpkg_pkg *out, char *err,
			  size_t errlen)
{
	struct control c;
	const char *why;

	memset(out, 0, sizeof(*out));
	memset(&c, 0, sizeof(c));
	if (len > SW_DPKG_CONTROL_MAX) {
		sw_seterr(err, errlen, "the control file is larger than %d bytes",
			  SW_DPKG_CONTROL_MAX);
		return SW_ETOOBIG;
	}
	if (stanzas(text, len, 0, control_end, &c))
		why = "holds more than one stanza";
	else if (!c.n)
		why = "is empty";
	else if (!(why = name_why(&c.st)))
		why = fields_why(&c.st);
	if (why) {
		sw_seterr(err, errlen, "the control file %s", why);
		return SW_EINVAL;
	}
	snprintf(out->name, sizeof(out->name), "%s", c.st.name);
	snprintf(out->version, sizeof(out->version), "%s", c.st.version);
	snprintf(out->arch, sizeof(out->arch), "%s", c.st.arch);
	return 0;
}

int sw_dpkg_read(const char *path, struct sw_dpkg_list *out, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	if ((rc = sw_file_read(path, SW_DPKG_STATUS_MAX, &text, &len, err, errlen)))
		return rc;
	rc = sw_dpkg_parse(text, len, out, err, errlen);
	free(text);
	return rc;
}

void sw_dpkg_list_free(struct sw_dpkg_list *l)
{
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* dpkg's verrevcmp(): a character's weight among non-digits. */
static int order(int c)
{
	if (c >= '0' && c <= '9')
		return 0;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return c;
	if (c == '~')
		return -1;
	return c ? c + 256 : 0;
}

static int verrevcmp(const char *a, const char *b)
{
	while (*a || *b) {
		int first = 0;

		while ((*a && !(*a >= '0' && *a <= '9')) || (*b && !(*b >= '0' && *b <= '9'))) {
			int ac = order((unsigned char)*a), bc = order((unsigned char)*b);

			if (ac != bc)
				return ac - bc;
			a++, b++;
		}
		while (*a == '0')
			a++;
		while (*b == '0')
			b++;
		while (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
			if (!first)
				first = *a - *b;
			a++, b++;
		}
		if (*a >= '0' && *a <= '9')
			return 1;
		if (*b >= '0' && *b <= '9')
			return -1;
		if (first)
			return first;
	}
	return 0;
}

/* A version's epoch, and its upstream version and revision copied into `up` and `rev`. */
static long long split_version(const char *v, char *up, size_t uplen, char *rev, size_t revlen)
{
	const char *colon = strchr(v, ':'), *dash;
	long long epoch = 0;

	if (colon) {
		for (const char *p = v; p < colon && epoch < 1000000000; p++)
			epoch = epoch * 10 + (*p >= '0' && *p <= '9' ? *p - '0' : 0);
		v = colon + 1;
	}
	dash = strrchr(v, '-');
	snprintf(up, uplen, "%.*s", (int)(dash ? (size_t)(dash - v) : strlen(v)), v);
	snprintf(rev, revlen, "%s", dash ? dash + 1 : "");
	return epoch;
}

int sw_dpkg_version_cmp(const char *a, const char *b)
{
	char ua[SW_DPKG_VERSION_MAX + 1], ra[SW_DPKG_VERSION_MAX + 1];
	char ub[SW_DPKG_VERSION_MAX + 1], rb[SW_DPKG_VERSION_MAX + 1];
	long long ea = split_version(a, ua, sizeof(ua), ra, sizeof(ra));
	long long eb = split_version(b, ub, sizeof(ub), rb, sizeof(rb));
	int c;

	if (ea != eb)
		return ea < eb ? -1 : 1;
	if ((c = verrevcmp(ua, ub)))
		return c;
	return verrevcmp(ra, rb);
}

const struct sw_dpkg_pkg *sw_dpkg_find(const struct sw_dpkg_list *l, const char *name,
				       const char *arch)
{
	struct sw_dpkg_pkg key;

	if (!l->n)
		return NULL;
	snprintf(key.name, sizeof(key.name), "%s", name);
	snprintf(key.arch, sizeof(key.arch), "%s", arch);
	return bsearch(&key, l->v, l->n, sizeof(*l->v), by_name_arch);
}

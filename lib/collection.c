/* The collection language: see collection.h. A recursive-descent parser over a token
 * list, into a tree of at most SW_COLL_NODES_MAX nodes. */
#include "collection.h"

#include "dpkgdb.h"
#include "error.h"
#include "progver.h"
#include "util.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum node_kind { N_AND, N_OR, N_NOT, N_COND };
enum op { OP_NONE, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_GLOB };
enum field {
	F_PACKAGE,
	F_ROLE,
	F_NAME,
	F_OS_ID,
	F_OS_VERSION,
	F_OS_CODENAME,
	F_KERNEL,
	F_ARCH,
	F_MEMORY,
	F_CPUS,
	F_DISK_FREE
};

static const struct {
	const char *name;
	enum field field;
	int numeric;
} fields[] = {
    {"role", F_ROLE, 0},
    {"name", F_NAME, 0},
    {"os.id", F_OS_ID, 0},
    {"os.version", F_OS_VERSION, 0},
    {"os.codename", F_OS_CODENAME, 0},
    {"kernel", F_KERNEL, 0},
    {"arch", F_ARCH, 0},
    {"memory", F_MEMORY, 1},
    {"cpus", F_CPUS, 1},
    {"disk_free", F_DISK_FREE, 1},
};

struct node {
	enum node_kind kind;
	int a, b; /* children's indexes, -1 none */
	enum field field;
	enum op op;
	char value[SW_DPKG_VERSION_MAX + 1]; /* a string, a version, a package name's */
	char package[SW_DPKG_NAME_MAX + 1];
	long long number;
};

struct sw_coll_expr {
	struct node n[SW_COLL_NODES_MAX];
	int count, root;
};

/* --- tokens --- */

enum tok_kind { T_END, T_WORD, T_STRING, T_OP, T_LPAREN, T_RPAREN };

struct tok {
	enum tok_kind kind;
	char text[SW_DPKG_VERSION_MAX + 16];
	enum op op;
	size_t at; /* byte offset, from 1, for a person */
};

struct parser {
	const char *s;
	size_t pos, len;
	struct tok t; /* the current token */
	struct sw_coll_expr *e;
	int depth;
	char *err;
	size_t errlen;
};

static int word_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("._-+:~*?", c));
}

static int fail(struct parser *p, const char *what)
{
	sw_seterr(p->err, p->errlen, "at %zu: %s", p->t.at, what);
	return SW_EINVAL;
}

static int next(struct parser *p)
{
	const char *s = p->s;
	struct tok *t = &p->t;
	size_t n = 0;

	while (p->pos < p->len && (s[p->pos] == ' ' || s[p->pos] == '\t' || s[p->pos] == '\n'))
		p->pos++;
	memset(t, 0, sizeof(*t));
	t->at = p->pos + 1;
	if (p->pos >= p->len)
		return 0;
	char c = s[p->pos];
	if (c == '(' || c == ')') {
		t->kind = c == '(' ? T_LPAREN : T_RPAREN;
		p->pos++;
		return 0;
	}
	if (c == '"') {
		t->kind = T_STRING;
		for (p->pos++; p->pos < p->len && s[p->pos] != '"'; p->pos++) {
			if ((unsigned char)s[p->pos] < ' ' || n + 1 >= sizeof(t->text))
				return fail(p, "a quoted value is at most 100 printable bytes");
			t->text[n++] = s[p->pos];
		}
		if (p->pos >= p->len)
			return fail(p, "a quoted value has no closing '\"'");
		p->pos++;
		return 0;
	}
	static const struct {
		const char *text;
		enum op op;
	} ops[] = {{"!=", OP_NE}, {"<=", OP_LE}, {">=", OP_GE}, {"=", OP_EQ},
		   {"<", OP_LT},  {">", OP_GT},	 {"~", OP_GLOB}};
	/* "~" alone is the glob operator; in a word it is part of a version */
	for (size_t i = 0; i < SW_ARRAY_LEN(ops); i++) {
		size_t k = strlen(ops[i].text);

		if (p->len - p->pos >= k && memcmp(s + p->pos, ops[i].text, k) == 0 &&
		    (ops[i].op != OP_GLOB || !word_char(s[p->pos + 1]))) {
			t->kind = T_OP;
			t->op = ops[i].op;
			p->pos += k;
			return 0;
		}
	}
	if (!word_char(c))
		return fail(p, "unexpected character (quote a value with spaces or symbols)");
	t->kind = T_WORD;
	while (p->pos < p->len && word_char(s[p->pos])) {
		if (n + 1 >= sizeof(t->text))
			return fail(p, "a word is at most 100 bytes");
		t->text[n++] = s[p->pos++];
	}
	return 0;
}

static int is_word(const struct parser *p, const char *w)
{
	return p->t.kind == T_WORD && strcasecmp(p->t.text, w) == 0;
}

static int add(struct parser *p, enum node_kind kind, int a, int b)
{
	struct node *n;

	if (p->e->count >= SW_COLL_NODES_MAX) {
		sw_seterr(p->err, p->errlen, "more than %d conditions and operators",
			  SW_COLL_NODES_MAX);
		return -1;
	}
	n = &p->e->n[p->e->count];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->a = a;
	n->b = b;
	return p->e->count++;
}

static int expr(struct parser *p, int *out);

static int cond(struct parser *p, int *out)
{
	struct node *n;
	int i, numeric = 0;

	if (p->t.kind != T_WORD)
		return fail(p, "a condition starts with a field (package:NAME, role, memory, ...)");
	if ((i = add(p, N_COND, -1, -1)) < 0)
		return SW_EINVAL;
	n = &p->e->n[i];
	if (strncasecmp(p->t.text, "package:", 8) == 0) {
		n->field = F_PACKAGE;
		snprintf(n->package, sizeof(n->package), "%s", p->t.text + 8);
		if (!sw_dpkg_name_valid(n->package))
			return fail(p, "package: names a Debian package, like package:libssl3");
	} else {
		size_t f;

		for (f = 0; f < SW_ARRAY_LEN(fields); f++)
			if (strcasecmp(p->t.text, fields[f].name) == 0)
				break;
		if (f == SW_ARRAY_LEN(fields))
			return fail(p,
				    "no such field (package:NAME, role, name, os.id, os.version, "
				    "os.codename, kernel, arch, memory, cpus, disk_free)");
		n->field = fields[f].field;
		numeric = fields[f].numeric;
	}
	if (next(p))
		return SW_EINVAL;
	if (p->t.kind != T_OP) {
		if (n->field != F_PACKAGE)
			return fail(p, "an operator follows the field (= != < <= > >= ~)");
		*out = i;
		return 0; /* package:NAME alone: it is installed */
	}
	n->op = p->t.op;
	if (next(p))
		return SW_EINVAL;
	if (p->t.kind != T_WORD && p->t.kind != T_STRING)
		return fail(p, "a value follows the operator");
	if (n->field == F_PACKAGE) {
		if (n->op == OP_GLOB)
			return fail(p, "a package's version is compared with = != < <= > >=");
		if (!sw_prog_version_valid(p->t.text))
			return fail(p, "not a Debian package version");
	} else if (numeric) {
		if (n->op == OP_GLOB)
			return fail(p, "a number is compared with = != < <= > >=");
		if (sw_coll_size_parse(p->t.text, &n->number))
			return fail(p, "a number, or a size like 8G or 512M, follows");
	} else if (n->op != OP_EQ && n->op != OP_NE && n->op != OP_GLOB) {
		return fail(p, "text is compared with = != or ~ (a glob)");
	} else if (n->field == F_ROLE && n->op == OP_GLOB) {
		return fail(p, "a role is compared with = or !=");
	}
	snprintf(n->value, sizeof(n->value), "%s", p->t.text);
	*out = i;
	return next(p);
}

static int primary(struct parser *p, int *out)
{
	int rc;

	if (p->t.kind == T_LPAREN) {
		if (++p->depth > SW_COLL_DEPTH_MAX)
			return fail(p, "brackets nested too deep");
		if ((rc = next(p)) || (rc = expr(p, out)))
			return rc;
		if (p->t.kind != T_RPAREN)
			return fail(p, "a ')' is missing");
		p->depth--;
		return next(p);
	}
	return cond(p, out);
}

static int negation(struct parser *p, int *out)
{
	int rc, inner, i;

	if (!is_word(p, "not"))
		return primary(p, out);
	if (++p->depth > SW_COLL_DEPTH_MAX)
		return fail(p, "'not' nested too deep");
	if ((rc = next(p)) || (rc = negation(p, &inner)))
		return rc;
	p->depth--;
	if ((i = add(p, N_NOT, inner, -1)) < 0)
		return SW_EINVAL;
	*out = i;
	return 0;
}

static int conjunction(struct parser *p, int *out)
{
	int rc, left, right;

	if ((rc = negation(p, &left)))
		return rc;
	while (is_word(p, "and")) {
		if ((rc = next(p)) || (rc = negation(p, &right)))
			return rc;
		if ((left = add(p, N_AND, left, right)) < 0)
			return SW_EINVAL;
	}
	*out = left;
	return 0;
}

static int expr(struct parser *p, int *out)
{
	int rc, left, right;

	if ((rc = conjunction(p, &left)))
		return rc;
	while (is_word(p, "or")) {
		if ((rc = next(p)) || (rc = conjunction(p, &right)))
			return rc;
		if ((left = add(p, N_OR, left, right)) < 0)
			return SW_EINVAL;
	}
	*out = left;
	return 0;
}

int sw_coll_parse(const char *text, struct sw_coll_expr **out, char *err, size_t errlen)
{
	struct parser p = {.s = text, .err = err, .errlen = errlen};
	int rc;

	*out = NULL;
	p.len = text ? strlen(text) : 0;
	if (p.len == 0 || p.len > SW_COLL_TEXT_MAX) {
		sw_seterr(err, errlen, "an expression is 1 to %d bytes", SW_COLL_TEXT_MAX);
		return SW_EINVAL;
	}
	if (!(p.e = calloc(1, sizeof(*p.e))))
		return SW_ENOMEM;
	if (!(rc = next(&p)) && !(rc = expr(&p, &p.e->root)) && p.t.kind != T_END)
		rc = fail(&p, p.t.kind == T_RPAREN ? "a ')' without its '('"
						   : "'and' or 'or' joins two conditions");
	if (rc) {
		free(p.e);
		return rc;
	}
	*out = p.e;
	return 0;
}

void sw_coll_free(struct sw_coll_expr *e)
{
	free(e);
}

/* --- judging a system --- */

int sw_coll_size_parse(const char *s, long long *out)
{
	static const char units[] = "KMGT";
	char *end;
	long long v, mult = 1;
	const char *u;

	if (!s || *s < '0' || *s > '9')
		return SW_EINVAL;
	v = strtoll(s, &end, 10);
	if (*end && (end[1] || !(u = strchr(units, *end >= 'a' ? *end - 32 : *end))))
		return SW_EINVAL;
	if (*end)
		for (long i = 0; i <= u - units; i++)
			mult *= 1024;
	if (v > (1LL << 62) / mult)
		return SW_EINVAL;
	*out = v * mult;
	return 0;
}

static const char *text_of(const json_t *o, const char *a, const char *b)
{
	return json_string_value(json_object_get(b ? json_object_get(o, a) : o, b ? b : a));
}

static int number_of(const json_t *o, const char *a, const char *b, long long *out)
{
	const json_t *v = json_object_get(b ? json_object_get(o, a) : o, b ? b : a);

	if (!json_is_integer(v))
		return -1;
	*out = json_integer_value(v);
	return 0;
}

static int compare(enum op op, int c)
{
	switch (op) {
	case OP_EQ: return c == 0;
	case OP_NE: return c != 0;
	case OP_LT: return c < 0;
	case OP_LE: return c <= 0;
	case OP_GT: return c > 0;
	case OP_GE: return c >= 0;
	default: return 0;
	}
}

static int judge(const struct node *n, const struct sw_coll_facts *f)
{
	const char *s = NULL;
	long long v = 0;
	int have = 0;
	size_t i;

	switch (n->field) {
	case F_PACKAGE:
		s = f->package ? f->package(f->arg, n->package) : NULL;
		return s && (n->op == OP_NONE || compare(n->op, sw_dpkg_version_cmp(s, n->value)));
	case F_ROLE:
		for (i = 0; i < json_array_size(f->roles); i++)
			have |=
			    json_is_string(json_array_get(f->roles, i)) &&
			    strcmp(json_string_value(json_array_get(f->roles, i)), n->value) == 0;
		return n->op == OP_EQ ? have : !have;
	case F_NAME: s = f->name; break;
	case F_OS_ID: s = text_of(f->hardware, "os", "id"); break;
	case F_OS_VERSION: s = text_of(f->hardware, "os", "version"); break;
	case F_OS_CODENAME: s = text_of(f->hardware, "os", "codename"); break;
	case F_KERNEL:
		if (!(s = text_of(f->hardware, "kernel", "release")))
			s = text_of(f->facts, "kernel", NULL);
		break;
	case F_ARCH:
		if (!(s = text_of(f->hardware, "kernel", "machine")))
			s = text_of(f->facts, "arch", NULL);
		break;
	case F_MEMORY:
		if (number_of(f->hardware, "memory", "total", &v) &&
		    number_of(f->facts, "memory_total", NULL, &v))
			return 0;
		return compare(n->op, v < n->number ? -1 : v > n->number);
	case F_CPUS:
		if (number_of(f->hardware, "cpu", "count", &v) &&
		    number_of(f->facts, "cpus", NULL, &v))
			return 0;
		return compare(n->op, v < n->number ? -1 : v > n->number);
	case F_DISK_FREE:
		if (number_of(f->facts, "disk_free", NULL, &v))
			return 0;
		return compare(n->op, v < n->number ? -1 : v > n->number);
	}
	if (!s)
		return 0; /* not reported: no condition on it holds */
	if (n->op == OP_GLOB)
		return fnmatch(n->value, s, 0) == 0;
	return compare(n->op, strcmp(s, n->value));
}

static int eval(const struct sw_coll_expr *e, int i, const struct sw_coll_facts *f)
{
	const struct node *n = &e->n[i];

	switch (n->kind) {
	case N_AND: return eval(e, n->a, f) && eval(e, n->b, f);
	case N_OR: return eval(e, n->a, f) || eval(e, n->b, f);
	case N_NOT: return !eval(e, n->a, f);
	case N_COND: return judge(n, f);
	}
	return 0;
}

int sw_coll_match(const struct sw_coll_expr *e, const struct sw_coll_facts *f)
{
	return eval(e, e->root, f);
}

size_t sw_coll_packages(const struct sw_coll_expr *e, const char **out, size_t max)
{
	size_t n = 0;

	for (int i = 0; i < e->count; i++) {
		const struct node *x = &e->n[i];
		size_t k;

		if (x->kind != N_COND || x->field != F_PACKAGE)
			continue;
		for (k = 0; k < n && strcmp(out[k], x->package) != 0; k++)
			;
		if (k == n && n < max)
			out[n++] = x->package;
	}
	return n;
}

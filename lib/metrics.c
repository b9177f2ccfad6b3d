#include "metrics.h"

#include "error.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum mtype { M_COUNTER, M_GAUGE, M_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct family;

/* One series; counters, gauges and histograms are its three views. */
struct series {
	struct series *next;
	struct family *fam;
	char *labels;		/* `a="x",b="y"`, escaped, "" for none */
	_Atomic uint64_t count; /* a counter's value; a histogram's observations, by bucket */
	_Atomic int64_t gauge;
	_Atomic uint64_t sum;
	_Atomic uint64_t buckets[SW_METRICS_MAX_BUCKETS + 1]; /* the last: above every bound */
};

struct sw_counter {
	struct series s;
};
struct sw_gauge {
	struct series s;
};
struct sw_histogram {
	struct series s;
};

struct family {
	struct family *next;
	char *name, *help;
	enum mtype type;
	uint64_t bounds[SW_METRICS_MAX_BUCKETS];
	size_t nbounds;
	double scale;
	struct series *head, **tail;
};

struct sw_metrics {
	struct family *head, **tail;
	char error[200];
};

const uint64_t sw_metrics_latency_us[] = {
    500,    1000,   2500,    5000,    10000,   25000,	 50000,	   100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 120000000,
};
const size_t sw_metrics_latency_n = sizeof(sw_metrics_latency_us) / sizeof(uint64_t);

struct sw_metrics *sw_metrics_new(void)
{
	struct sw_metrics *m = calloc(1, sizeof(*m));

	if (m)
		m->tail = &m->head;
	return m;
}

void sw_metrics_free(struct sw_metrics *m)
{
	struct family *f, *fn;
	struct series *s, *sn;

	if (!m)
		return;
	for (f = m->head; f; f = fn) {
		fn = f->next;
		for (s = f->head; s; s = sn) {
			sn = s->next;
			free(s->labels);
			free(s);
		}
		free(f->name);
		free(f->help);
		free(f);
	}
	free(m);
}

static void failed(struct sw_metrics *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void failed(struct sw_metrics *m, const char *fmt, ...)
{
	va_list ap;

	if (m->error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(m->error, sizeof(m->error), fmt, ap);
	va_end(ap);
}

const char *sw_metrics_error(const struct sw_metrics *m)
{
	return m && m->error[0] ? m->error : NULL;
}

static int name_ok(const char *s, int colon)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || (colon && *s == ':')))
			return 0;
	return 1;
}

/* A growing string; `failed` once an allocation did not succeed. */
struct buf {
	char *s;
	size_t len, cap;
	int failed;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (!(p = realloc(b->s, cap))) {
			b->failed = 1;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void putf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Escapes as the format wants: a backslash and a newline always, a double quote in a
 * label value. */
static void put_escaped(struct buf *b, const char *s, int quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			puts_(b, "\\\\");
		else if (*s == '\n')
			puts_(b, "\\n");
		else if (quote && *s == '"')
			puts_(b, "\\\"");
		else
			put(b, s, 1);
	}
}

/* The labels of a series as they are written, or NULL (with the reason in m). */
static char *labels_text(struct sw_metrics *m, const char *name, const char *const *labels)
{
	struct buf b = {0};

	puts_(&b, "");
	for (size_t i = 0; labels && labels[i]; i += 2) {
		if (!name_ok(labels[i], 0) || strncmp(labels[i], "__", 2) == 0 ||
		    strcmp(labels[i], "le") == 0 || !labels[i + 1]) {
			failed(m, "metric %s: bad label name or missing value", name);
			free(b.s);
			return NULL;
		}
		if (i > 0)
			puts_(&b, ",");
		puts_(&b, labels[i]);
		puts_(&b, "=\"");
		put_escaped(&b, labels[i + 1], 1);
		puts_(&b, "\"");
	}
	if (b.failed) {
		failed(m, "metric %s: out of memory", name);
		free(b.s);
		return NULL;
	}
	return b.s;
}

static struct series *add(struct sw_metrics *m, enum mtype type, const char *name, const char *help,
			  const char *const *labels, const uint64_t *bounds, size_t nbounds,
			  double scale)
{
	struct family *f;
	struct series *s;
	char *text;

	if (!m)
		return NULL;
	if (!name_ok(name, 1) || !help) {
		failed(m, "metric '%s': not a valid name", name ? name : "");
		return NULL;
	}
	if (type == M_HISTOGRAM) {
		if (nbounds == 0 || nbounds > SW_METRICS_MAX_BUCKETS || !(scale > 0)) {
			failed(m, "metric %s: 1 to %d buckets and a positive scale", name,
			       SW_METRICS_MAX_BUCKETS);
			return NULL;
		}
		for (size_t i = 1; i < nbounds; i++)
			if (bounds[i] <= bounds[i - 1]) {
				failed(m, "metric %s: bucket bounds must ascend", name);
				return NULL;
			}
	}
	for (f = m->head; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			break;
	if (f && (f->type != type || strcmp(f->help, help) != 0 ||
		  (type == M_HISTOGRAM &&
		   (f->nbounds != nbounds || f->scale != scale ||
		    memcmp(f->bounds, bounds, nbounds * sizeof(*bounds)) != 0)))) {
		failed(m, "metric %s: registered before as another kind", name);
		return NULL;
	}
	if (!(text = labels_text(m, name, labels)))
		return NULL;
	if (f) {
		for (s = f->head; s; s = s->next)
			if (strcmp(s->labels, text) == 0) {
				free(text);
				return s;
			}
	} else {
		if (!(f = calloc(1, sizeof(*f))) || !(f->name = strdup(name)) ||
		    !(f->help = strdup(help))) {
			if (f)
				free(f->name);
			free(f);
			free(text);
			failed(m, "metric %s: out of memory", name);
			return NULL;
		}
		f->type = type;
		f->nbounds = nbounds;
		f->scale = scale;
		if (type == M_HISTOGRAM)
			memcpy(f->bounds, bounds, nbounds * sizeof(*bounds));
		f->tail = &f->head;
		*m->tail = f;
		m->tail = &f->next;
	}
	if (!(s = calloc(1, sizeof(*s)))) {
		free(text);
		failed(m, "metric %s: out of memory", name);
		return NULL;
	}
	s->fam = f;
	s->labels = text;
	*f->tail = s;
	f->tail = &s->next;
	return s;
}

struct sw_counter *sw_metrics_counter(struct sw_metrics *m, const char *name, const char *help,
				      const char *const *labels)
{
	return (struct sw_counter *)add(m, M_COUNTER, name, help, labels, NULL, 0, 1);
}

struct sw_gauge *sw_metrics_gauge(struct sw_metrics *m, const char *name, const char *help,
				  const char *const *labels)
{
	return (struct sw_gauge *)add(m, M_GAUGE, name, help, labels, NULL, 0, 1);
}

struct sw_histogram *sw_metrics_histogram(struct sw_metrics *m, const char *name, const char *help,
					  const char *const *labels, const uint64_t *bounds,
					  size_t nbounds, double scale)
{
	return (struct sw_histogram *)add(m, M_HISTOGRAM, name, help, labels, bounds, nbounds,
					  scale);
}

void sw_counter_add(struct sw_counter *c, uint64_t n)
{
	if (c)
		atomic_fetch_add_explicit(&c->s.count, n, memory_order_relaxed);
}

void sw_counter_inc(struct sw_counter *c)
{
	sw_counter_add(c, 1);
}

uint64_t sw_counter_value(const struct sw_counter *c)
{
	return c ? atomic_load_explicit(&c->s.count, memory_order_relaxed) : 0;
}

void sw_gauge_set(struct sw_gauge *g, int64_t v)
{
	if (g)
		atomic_store_explicit(&g->s.gauge, v, memory_order_relaxed);
}

void sw_gauge_add(struct sw_gauge *g, int64_t d)
{
	if (g)
		atomic_fetch_add_explicit(&g->s.gauge, d, memory_order_relaxed);
}

int64_t sw_gauge_value(const struct sw_gauge *g)
{
	return g ? atomic_load_explicit(&g->s.gauge, memory_order_relaxed) : 0;
}

void sw_histogram_observe(struct sw_histogram *h, uint64_t v)
{
	size_t i;

	if (!h)
		return;
	for (i = 0; i < h->s.fam->nbounds && v > h->s.fam->bounds[i]; i++)
		;
	atomic_fetch_add_explicit(&h->s.buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->s.sum, v, memory_order_relaxed);
}

uint64_t sw_histogram_count(const struct sw_histogram *h)
{
	uint64_t n = 0;

	if (!h)
		return 0;
	for (size_t i = 0; i <= h->s.fam->nbounds; i++)
		n += atomic_load_explicit(&h->s.buckets[i], memory_order_relaxed);
	return n;
}

/* `name{labels[,extra]}`, or `name` alone when there are none. */
static void put_name(struct buf *b, const char *name, const char *suffix, const char *labels,
		     const char *extra)
{
	puts_(b, name);
	puts_(b, suffix);
	if (!labels[0] && !extra)
		return;
	puts_(b, "{");
	puts_(b, labels);
	if (extra) {
		if (labels[0])
			puts_(b, ",");
		puts_(b, extra);
	}
	puts_(b, "}");
}

static void put_histogram(struct buf *b, const struct family *f, const struct series *s)
{
	uint64_t counts[SW_METRICS_MAX_BUCKETS + 1], cum = 0;
	char le[64];

	/* one reading of every bucket, so the cumulative counts, +Inf and _count agree */
	for (size_t i = 0; i <= f->nbounds; i++)
		counts[i] = atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
	for (size_t i = 0; i <= f->nbounds; i++) {
		cum += counts[i];
		if (i < f->nbounds)
			snprintf(le, sizeof(le), "le=\"%.9g\"", (double)f->bounds[i] / f->scale);
		else
			snprintf(le, sizeof(le), "le=\"+Inf\"");
		put_name(b, f->name, "_bucket", s->labels, le);
		putf(b, " %" PRIu64 "\n", cum);
	}
	put_name(b, f->name, "_sum", s->labels, NULL);
	if (f->scale == 1)
		putf(b, " %" PRIu64 "\n", atomic_load_explicit(&s->sum, memory_order_relaxed));
	else
		putf(b, " %.15g\n",
		     (double)atomic_load_explicit(&s->sum, memory_order_relaxed) / f->scale);
	put_name(b, f->name, "_count", s->labels, NULL);
	putf(b, " %" PRIu64 "\n", cum);
}

int sw_metrics_render(const struct sw_metrics *m, char **out, size_t *len)
{
	struct buf b = {0};

	puts_(&b, "");
	for (const struct family *f = m->head; f; f = f->next) {
		puts_(&b, "# HELP ");
		puts_(&b, f->name);
		puts_(&b, " ");
		put_escaped(&b, f->help, 0);
		puts_(&b, "\n# TYPE ");
		puts_(&b, f->name);
		puts_(&b, " ");
		puts_(&b, type_names[f->type]);
		puts_(&b, "\n");
		for (const struct series *s = f->head; s; s = s->next) {
			switch (f->type) {
			case M_COUNTER:
				put_name(&b, f->name, "", s->labels, NULL);
				putf(&b, " %" PRIu64 "\n",
				     atomic_load_explicit(&s->count, memory_order_relaxed));
				break;
			case M_GAUGE:
				put_name(&b, f->name, "", s->labels, NULL);
				putf(&b, " %" PRId64 "\n",
				     atomic_load_explicit(&s->gauge, memory_order_relaxed));
				break;
			case M_HISTOGRAM: put_histogram(&b, f, s); break;
			}
		}
	}
	if (b.failed) {
		free(b.s);
		return SW_ENOMEM;
	}
	*out = b.s;
	*len = b.len;
	return 0;
}

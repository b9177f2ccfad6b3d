/*
 * Metrics in the Prometheus text exposition format (version 0.0.4): counters, gauges
 * and histograms with fixed buckets, each series registered once, by name, with its
 * help text and its labels, and written out whole by sw_metrics_render().
 *
 * Debian has no C client library for Prometheus (only C++, Go, Perl and Rust ones), and
 * the format is a few lines of text, so this is a small writer of its own.
 *
 * Labels are fixed when a series is registered: a program registers every series it
 * will ever show (a route, a state, a product of a bounded table), so no label takes
 * unbounded values and an observation never allocates. Observing is an atomic add on
 * the series, safe from any thread (a job on the thread pool times itself); registering,
 * rendering and freeing are the loop's. A series that could not be registered (out of
 * memory, a bad name) is NULL, and every observation of NULL does nothing:
 * sw_metrics_error() says what went wrong.
 */
#ifndef SW_METRICS_H
#define SW_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct sw_metrics;
struct sw_counter;
struct sw_gauge;
struct sw_histogram;

/* A registry, empty; NULL when out of memory. */
struct sw_metrics *sw_metrics_new(void);
/* Frees the registry and every series in it. NULL is a no-op. */
void sw_metrics_free(struct sw_metrics *m);

/*
 * Registers a series of the family `name` (letters, digits, '_' and ':', not starting
 * with a digit), whose HELP line is `help`. `labels` is NULL or a NULL-terminated list of
 * name, value pairs ({"route", "/v1/usage", NULL}). Registering the same name and labels
 * again gives the same series; a name registered as another type, with other help or
 * (histograms) other buckets, is refused. The registry owns the series.
 */
struct sw_counter *sw_metrics_counter(struct sw_metrics *m, const char *name, const char *help,
				      const char *const *labels);
struct sw_gauge *sw_metrics_gauge(struct sw_metrics *m, const char *name, const char *help,
				  const char *const *labels);
/* Observations are integers (microseconds, records); `bounds` are the buckets' upper
 * bounds in the same unit, ascending, at most SW_METRICS_MAX_BUCKETS, and `scale` what
 * they are divided by when written (1e6 for microseconds shown as seconds, 1 for
 * counts). */
#define SW_METRICS_MAX_BUCKETS 24
struct sw_histogram *sw_metrics_histogram(struct sw_metrics *m, const char *name, const char *help,
					  const char *const *labels, const uint64_t *bounds,
					  size_t nbounds, double scale);

/* The first registration that failed, as a sentence; NULL when none did. */
const char *sw_metrics_error(const struct sw_metrics *m);

void sw_counter_add(struct sw_counter *c, uint64_t n);
void sw_counter_inc(struct sw_counter *c);
uint64_t sw_counter_value(const struct sw_counter *c);
void sw_gauge_set(struct sw_gauge *g, int64_t v);
void sw_gauge_add(struct sw_gauge *g, int64_t d);
int64_t sw_gauge_value(const struct sw_gauge *g);
void sw_histogram_observe(struct sw_histogram *h, uint64_t v);
uint64_t sw_histogram_count(const struct sw_histogram *h);

/* Latency buckets in microseconds, from 0.5 ms to 2 minutes (a held poll). */
extern const uint64_t sw_metrics_latency_us[];
extern const size_t sw_metrics_latency_n;

/* Every family, in the order of their first registration, as Prometheus text:
 * `*out` (NUL-terminated, `*len` bytes without the NUL) is the caller's to free().
 * 0, or SW_ENOMEM. */
int sw_metrics_render(const struct sw_metrics *m, char **out, size_t *len);

/* The Content-Type of what sw_metrics_render() writes. */
#define SW_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif

/* Metrics: registration, observation and the Prometheus text they are written as. */
#include "metrics.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *render(struct sw_metrics *m)
{
	char *text;
	size_t len;

	assert_int_equal(sw_metrics_render(m, &text, &len), 0);
	assert_int_equal(strlen(text), len);
	return text;
}

static void test_counters_and_gauges(void **state)
{
	struct sw_metrics *m = sw_metrics_new();
	const char *const ok[] = {"health", "ok", NULL};
	const char *const late[] = {"health", "late", NULL};
	struct sw_counter *c;
	struct sw_gauge *g1, *g2;
	char *text;

	c = sw_metrics_counter(m, "sw_beats_total", "Heartbeats heard.", NULL);
	g1 = sw_metrics_gauge(m, "sw_systems", "Systems by health.", ok);
	g2 = sw_metrics_gauge(m, "sw_systems", "Systems by health.", late);
	assert_non_null(c);
	assert_non_null(g1);
	assert_non_null(g2);
	/* the same name and labels are the same series */
	assert_ptr_equal(sw_metrics_gauge(m, "sw_systems", "Systems by health.", ok), g1);
	sw_counter_inc(c);
	sw_counter_add(c, 2);
	sw_gauge_set(g1, 5);
	sw_gauge_add(g2, -1);
	assert_int_equal(sw_counter_value(c), 3);
	assert_int_equal(sw_gauge_value(g1), 5);
	text = render(m);
	assert_string_equal(text, "# HELP sw_beats_total Heartbeats heard.\n"
				  "# TYPE sw_beats_total counter\n"
				  "sw_beats_total 3\n"
				  "# HELP sw_systems Systems by health.\n"
				  "# TYPE sw_systems gauge\n"
				  "sw_systems{health=\"ok\"} 5\n"
				  "sw_systems{health=\"late\"} -1\n");
	free(text);
	assert_null(sw_metrics_error(m));
	sw_metrics_free(m);
}

static void test_histogram(void **state)
{
	struct sw_metrics *m = sw_metrics_new();
	const uint64_t us[] = {1000, 10000};
	const uint64_t n[] = {1, 10, 100};
	const char *const route[] = {"route", "/v1/x", "method", "GET", NULL};
	struct sw_histogram *h, *b;
	char *text;

	h = sw_metrics_histogram(m, "sw_req_seconds", "Latency.", route, us, 2, 1e6);
	b = sw_metrics_histogram(m, "sw_batch", "Records a batch.", NULL, n, 3, 1);
	assert_non_null(h);
	assert_non_null(b);
	sw_histogram_observe(h, 500);
	sw_histogram_observe(h, 1000); /* on a bound: in that bucket (le) */
	sw_histogram_observe(h, 5000);
	sw_histogram_observe(h, 2000000);
	sw_histogram_observe(b, 7);
	assert_int_equal(sw_histogram_count(h), 4);
	text = render(m);
	assert_string_equal(text,
			    "# HELP sw_req_seconds Latency.\n"
			    "# TYPE sw_req_seconds histogram\n"
			    "sw_req_seconds_bucket{route=\"/v1/x\",method=\"GET\",le=\"0.001\"} 2\n"
			    "sw_req_seconds_bucket{route=\"/v1/x\",method=\"GET\",le=\"0.01\"} 3\n"
			    "sw_req_seconds_bucket{route=\"/v1/x\",method=\"GET\",le=\"+Inf\"} 4\n"
			    "sw_req_seconds_sum{route=\"/v1/x\",method=\"GET\"} 2.0065\n"
			    "sw_req_seconds_count{route=\"/v1/x\",method=\"GET\"} 4\n"
			    "# HELP sw_batch Records a batch.\n"
			    "# TYPE sw_batch histogram\n"
			    "sw_batch_bucket{le=\"1\"} 0\n"
			    "sw_batch_bucket{le=\"10\"} 1\n"
			    "sw_batch_bucket{le=\"100\"} 1\n"
			    "sw_batch_bucket{le=\"+Inf\"} 1\n"
			    "sw_batch_sum 7\n"
			    "sw_batch_count 1\n");
	free(text);
	sw_metrics_free(m);
}

static void test_escaping(void **state)
{
	struct sw_metrics *m = sw_metrics_new();
	const char *const l[] = {"product", "a\"b\\c\nd", NULL};
	char *text;

	assert_non_null(sw_metrics_gauge(m, "g", "Help with \\ and\nnewline.", l));
	text = render(m);
	assert_string_equal(text, "# HELP g Help with \\\\ and\\nnewline.\n"
				  "# TYPE g gauge\n"
				  "g{product=\"a\\\"b\\\\c\\nd\"} 0\n");
	free(text);
	sw_metrics_free(m);
}

static void test_refusals(void **state)
{
	struct sw_metrics *m = sw_metrics_new();
	const uint64_t down[] = {10, 5};
	const char *const bad_label[] = {"1x", "v", NULL};
	const char *const le[] = {"le", "v", NULL};
	const char *const no_value[] = {"x", NULL};

	assert_null(sw_metrics_counter(m, "9lives", "x", NULL));
	assert_non_null(sw_metrics_error(m));
	assert_null(sw_metrics_counter(m, "a-b", "x", NULL));
	assert_null(sw_metrics_counter(m, "c", "x", bad_label));
	assert_null(sw_metrics_counter(m, "c", "x", le));
	assert_null(sw_metrics_counter(m, "c", "x", no_value));
	assert_null(sw_metrics_histogram(m, "h", "x", NULL, down, 2, 1));
	assert_non_null(sw_metrics_counter(m, "c", "x", NULL));
	/* one name, one type and help */
	assert_null(sw_metrics_gauge(m, "c", "x", NULL));
	assert_null(sw_metrics_counter(m, "c", "other help", NULL));
	/* NULL series are observed as nothing */
	sw_counter_inc(NULL);
	sw_gauge_set(NULL, 1);
	sw_histogram_observe(NULL, 1);
	sw_metrics_free(m);
	sw_metrics_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counters_and_gauges),
	    cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* siteward product add|set|remove|list and siteward usage. */
#include "cli.h"

#include "product.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char product_usage[] =
    "usage: siteward product add NAME --exe FILE --licenses N [OPTIONS]\n"
    "       siteward product set NAME [--exe FILE] [--licenses N] [OPTIONS]\n"
    "       siteward product remove NAME | siteward product list\n"
    "       siteward product exclude|include EXE   (passive metering)\n"
    "options: --version PATTERN --build-id HEX --enforce|--no-enforce --hours HH:MM-HH:MM\n"
    "         --package NAME  (the Debian package it comes in: license report counts\n"
    "         its installs; an empty value clears)\n"
    "         --deny-users U1,U2 --deny-hosts H1,H2  (an empty value clears)\n"
    "         --on-reclaim stop|run --reclaim-signal TERM|INT|HUP|USR1|USR2|none\n"
    "         --idle DURATION  (a license whose program used no CPU this long, like\n"
    "         30m, is taken back; 0: never)\n"
    "         --reserve N --for GROUP  (licenses only the group's members may use)\n"
    "         --max N --for GROUP|user:USER|host:HOST  (the most they hold at once)\n"
    "         (a count of 0 removes the rule)\n"
    "         --borrow N [--borrow-for DURATION]  (at most N licenses lent out at once\n"
    "         with siteward-run borrow, each for up to DURATION, 7d if not given;\n"
    "         0 stops lending)";

/* --reserve N --for GROUP, --max N --for GROUP|user:U|host:H, as the API's rule. */
static json_t *rule_arg(const char *kind, const char *count, const char *target)
{
	const char *colon = strchr(target, ':'), *name = colon ? colon + 1 : target;
	char what[8] = "group";
	int64_t n;

	if (sw_int_parse(count, 0, 1000000, &n)) {
		cli_error("--%s takes a count of licenses (0 removes the rule)", kind);
		return NULL;
	}
	if (colon) {
		snprintf(what, sizeof(what), "%.*s", (int)(colon - target), target);
		if (strcmp(what, "group") != 0 && strcmp(what, "user") != 0 &&
		    strcmp(what, "host") != 0) {
			cli_error("--for takes GROUP, group:GROUP, user:USER or host:HOST");
			return NULL;
		}
	}
	return json_pack("{ss sI ss}", "kind", kind, "count", (json_int_t)n, what, name);
}

static void print_products(const json_t *reply)
{
	json_t *p, *arr = json_object_get(reply, "products");
	size_t i, rules = 0;

	printf("%-20s %-24s %-10s %8s  %s\n", "PRODUCT", "EXECUTABLE", "VERSION", "LICENSES",
	       "ENFORCED");
	json_array_foreach(arr, i, p)
	{
		const char *v = json_string_value(json_object_get(p, "version"));
		printf("%-20s %-24s %-10s %8lld  %s\n",
		       json_string_value(json_object_get(p, "name")),
		       json_string_value(json_object_get(p, "exe")), v && *v ? v : "any",
		       (long long)json_integer_value(json_object_get(p, "licenses")),
		       json_is_true(json_object_get(p, "enforce")) ? "yes" : "no");
	}
	if (json_array_size(arr) == 0)
		printf("(no products: register one with 'siteward product add')\n");
	json_array_foreach(arr, i, p)
	{
		json_t *r;
		size_t k;

		json_array_foreach(json_object_get(p, "rules"), k, r)
		{
			if (!rules++)
				printf("\nrules:\n");
			if (strcmp(json_string_value(json_object_get(r, "kind")), "borrow") == 0) {
				char span[48];

				sw_duration_text(json_integer_value(json_object_get(r, "max_s")),
						 span, sizeof(span));
				printf("  %s: borrow %lld at once, each for up to %s\n",
				       json_string_value(json_object_get(p, "name")),
				       (long long)json_integer_value(json_object_get(r, "count")),
				       span);
				continue;
			}
			const char *target = json_object_get(r, "group")  ? "group"
					     : json_object_get(r, "user") ? "user"
									  : "host";
			printf("  %s: %s %lld for %s %s\n",
			       json_string_value(json_object_get(p, "name")),
			       json_string_value(json_object_get(r, "kind")),
			       (long long)json_integer_value(json_object_get(r, "count")), target,
			       json_string_value(json_object_get(r, target)));
		}
	}
}

int cmd_product(struct cli *c, int argc, char **argv)
{
	const char *action = argc > 0 ? argv[0] : "";
	char path[128];
	json_t *body, *reply;
	int rc;

	if (strcmp(action, "list") == 0 && argc == 1) {
		if (client_call(c, "GET", "/v1/products", NULL, &reply))
			return 1;
		if (c->json)
			print_json(reply);
		else
			print_products(reply);
		json_decref(reply);
		return 0;
	}
	if (argc < 2 || !sw_name_valid(argv[1])) {
		cli_error("%s", product_usage);
		return 2;
	}
	if ((strcmp(action, "exclude") == 0 || strcmp(action, "include") == 0) && argc == 2) {
		snprintf(path, sizeof(path), "/v1/excluded/%s", argv[1]);
		if (client_call(c, action[0] == 'e' ? "PUT" : "DELETE", path, NULL, &reply))
			return 1;
		if (c->json)
			print_json(reply);
		else
			printf("%s %s passive metering\n", argv[1],
			       action[0] == 'e' ? "left out of" : "back in");
		json_decref(reply);
		return 0;
	}
	if (strcmp(action, "remove") == 0 && argc == 2) {
		snprintf(path, sizeof(path), "/v1/products/%s", argv[1]);
		if (client_call(c, "DELETE", path, NULL, &reply))
			return 1;
		if (c->json)
			print_json(reply);
		else
			printf("product %s removed\n", argv[1]);
		json_decref(reply);
		return 0;
	}
	if (strcmp(action, "add") != 0 && strcmp(action, "set") != 0) {
		cli_error("%s", product_usage);
		return 2;
	}
	body = json_object();
	if (strcmp(action, "add") == 0)
		json_object_set_new(body, "name", json_string(argv[1]));
	for (int i = 2; i < argc; i++) {
		const char *o = argv[i];
		if (strcmp(o, "--enforce") == 0 || strcmp(o, "--no-enforce") == 0) {
			json_object_set_new(body, "enforce", json_boolean(o[2] == 'e'));
		} else if (i + 1 < argc &&
			   (strcmp(o, "--exe") == 0 || strcmp(o, "--version") == 0 ||
			    strcmp(o, "--hours") == 0)) {
			json_object_set_new(body, o + 2, json_string(argv[++i]));
		} else if (i + 1 < argc && strcmp(o, "--package") == 0) {
			json_object_set_new(body, "package", json_string(argv[++i]));
		} else if (i + 1 < argc && strcmp(o, "--build-id") == 0) {
			json_object_set_new(body, "build_id", json_string(argv[++i]));
		} else if (i + 3 < argc &&
			   (strcmp(o, "--reserve") == 0 || strcmp(o, "--max") == 0) &&
			   strcmp(argv[i + 2], "--for") == 0) {
			json_t *rule = rule_arg(o + 2, argv[i + 1], argv[i + 3]);

			if (!rule) {
				json_decref(body);
				return 2;
			}
			if (!json_object_get(body, "rule"))
				json_object_set_new(body, "rule", json_array());
			json_array_append_new(json_object_get(body, "rule"), rule);
			i += 3;
		} else if (i + 1 < argc && strcmp(o, "--borrow") == 0) {
			int64_t n, span = 0;

			if (sw_int_parse(argv[++i], 0, 1000000, &n)) {
				cli_error("--borrow takes the most licenses lent out at once (0 "
					  "stops lending)");
				json_decref(body);
				return 2;
			}
			if (i + 2 < argc && strcmp(argv[i + 1], "--borrow-for") == 0) {
				if (sw_duration_parse(argv[i + 2], SW_BORROW_MIN_S,
						      SW_BORROW_LIMIT_S, &span)) {
					cli_error(
					    "--borrow-for takes 1 minute to 90 days, like 14d");
					json_decref(body);
					return 2;
				}
				i += 2;
			}
			json_t *rule =
			    json_pack("{ss sI}", "kind", "borrow", "count", (json_int_t)n);
			if (span)
				json_object_set_new(rule, "max_s", json_integer(span));
			if (!json_object_get(body, "rule"))
				json_object_set_new(body, "rule", json_array());
			json_array_append_new(json_object_get(body, "rule"), rule);
		} else if (strcmp(o, "--borrow-for") == 0) {
			cli_error(
			    "--borrow-for follows --borrow N, like --borrow 3 --borrow-for 14d");
			json_decref(body);
			return 2;
		} else if (i + 1 < argc && strcmp(o, "--on-reclaim") == 0) {
			json_object_set_new(body, "on_reclaim", json_string(argv[++i]));
		} else if (i + 1 < argc && strcmp(o, "--reclaim-signal") == 0) {
			json_object_set_new(body, "reclaim_signal", json_string(argv[++i]));
		} else if (i + 1 < argc && strcmp(o, "--idle") == 0) {
			int64_t n;
			if (sw_duration_parse(argv[++i], 0, SW_PRODUCT_IDLE_MAX, &n) ||
			    (n && n < SW_PRODUCT_IDLE_MIN)) {
				cli_error("--idle takes 0 (never) or %d s to 7d, like 30m",
					  SW_PRODUCT_IDLE_MIN);
				json_decref(body);
				return 2;
			}
			json_object_set_new(body, "idle_s", json_integer(n));
		} else if (i + 1 < argc &&
			   (strcmp(o, "--deny-users") == 0 || strcmp(o, "--deny-hosts") == 0)) {
			json_t *list = json_array();
			char buf[1024], *save = NULL, *tok;
			snprintf(buf, sizeof(buf), "%s", argv[++i]);
			for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
				json_array_append_new(list, json_string(tok));
			json_object_set_new(body, o[7] == 'u' ? "deny_users" : "deny_hosts", list);
		} else if (i + 1 < argc && strcmp(o, "--licenses") == 0) {
			int64_t n;
			if (sw_int_parse(argv[++i], 0, 1000000, &n)) {
				cli_error("--licenses takes 0 to 1000000");
				json_decref(body);
				return 2;
			}
			json_object_set_new(body, "licenses", json_integer(n));
		} else {
			cli_error("%s", product_usage);
			json_decref(body);
			return 2;
		}
	}
	if (strcmp(action, "add") == 0) {
		rc = client_call(c, "POST", "/v1/products", body, &reply);
	} else {
		snprintf(path, sizeof(path), "/v1/products/%s", argv[1]);
		rc = client_call(c, "PUT", path, body, &reply);
	}
	json_decref(body);
	if (rc)
		return 1;
	if (c->json)
		print_json(reply);
	else
		printf("product %s: %s, %lld licenses%s\n", argv[1],
		       json_string_value(json_object_get(reply, "exe")),
		       (long long)json_integer_value(json_object_get(reply, "licenses")),
		       json_is_true(json_object_get(reply, "enforce")) ? ", enforced" : "");
	json_decref(reply);
	return 0;
}

int cmd_usage(struct cli *c, int argc, char **argv)
{
	char path[256];
	const char *product = NULL;
	long long since = 0;
	json_t *reply, *u;
	size_t i;

	for (int k = 0; k < argc; k++) {
		if (strcmp(argv[k], "--product") == 0 && k + 1 < argc &&
		    sw_name_valid(argv[k + 1])) {
			product = argv[++k];
		} else if (strcmp(argv[k], "--since") == 0 && k + 1 < argc &&
			   cli_parse_since(argv[k + 1], &since) == 0) {
			k++;
		} else {
			cli_error("usage: siteward usage [--product NAME] [--since YYYY-MM-DD|Nd]");
			return 2;
		}
	}
	snprintf(path, sizeof(path), "/v1/usage?since=%lld%s%s", since, product ? "&product=" : "",
		 product ? product : "");
	if (client_call(c, "GET", path, NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
		json_decref(reply);
		return 0;
	}
	printf("%-20s %-10s %8s %5s %5s %10s %9s %7s %6s\n", "PRODUCT", "DAY", "LAUNCHES", "USERS",
	       "HOSTS", "RUN TIME", "PEAK/LIC", "DENIED", "WAITS");
	json_array_foreach(json_object_get(reply, "usage"), i, u)
	{
		time_t day = (time_t)(json_integer_value(json_object_get(u, "day")) / 1000);
		long long run = json_integer_value(json_object_get(u, "run_time_ms")) / 1000;
		char date[16], peak[32], runtime[32];
		struct tm tm;
		json_t *lic = json_object_get(u, "licenses");

		gmtime_r(&day, &tm);
		strftime(date, sizeof(date), "%Y-%m-%d", &tm);
		snprintf(runtime, sizeof(runtime), "%lld:%02lld:%02lld", run / 3600, run / 60 % 60,
			 run % 60);
		if (lic)
			snprintf(
			    peak, sizeof(peak), "%lld/%lld",
			    (long long)json_integer_value(json_object_get(u, "peak_concurrent")),
			    (long long)json_integer_value(lic));
		else
			snprintf(
			    peak, sizeof(peak), "%lld",
			    (long long)json_integer_value(json_object_get(u, "peak_concurrent")));
		printf("%-20s %-10s %8lld %5lld %5lld %10s %9s %7lld %6lld\n",
		       json_string_value(json_object_get(u, "product")), date,
		       (long long)json_integer_value(json_object_get(u, "launches")),
		       (long long)json_integer_value(json_object_get(u, "users")),
		       (long long)json_integer_value(json_object_get(u, "hosts")), runtime, peak,
		       (long long)json_integer_value(json_object_get(u, "denials")),
		       (long long)json_integer_value(json_object_get(u, "queue_waits")));
	}
	if (json_array_size(json_object_get(reply, "usage")) == 0)
		printf("(no usage recorded)\n");
	json_decref(reply);
	return 0;
}

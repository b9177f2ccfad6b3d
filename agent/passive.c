/*
 * Passive metering: registered products seen running on this machine are recorded as
 * usage, whether or not they were started through siteward-run. Where permitted, the
 * kernel's process events (the proc connector) note each matching process as it
 * executes and end its run as it exits; a scan of /proc every interval catches up
 * (events dropped in a burst, processes older than the agent) and is all there is
 * elsewhere. An ended run goes to the usage cache that usage.c uploads. A run's id is derived from
 * the host, pid and process start time, so seeing the same process again (after an agent restart,
 * say) never counts it twice. Processes started by siteward-run are left to the metering server.
 */
#include "agent.h"

#include "elfid.h"
#include "strmap.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "procev.h"
#include "procstat.h"
#include "product.h"
#include "progver.h"
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PRODUCTS_EVERY_MS 60000 /* how often the product table is fetched */
#define MAX_TRACKED	  4096

struct seen {
	char id[33];
	char product[64], exe[256], user[64];
	pid_t pid;
	unsigned long long starttime;
	int64_t start_ms;
	int alive; /* seen in the current scan */
};

struct passive {
	struct agent *a;
	uv_timer_t timer;
	json_t *products;	  /* the table as last fetched, to tell a change */
	struct sw_product **prod; /* the same, read */
	size_t nprod;
	json_t *excluded;	     /* executables never metered passively */
	struct sw_strmap *build_ids; /* executable path -> its build ID ("" for none) */
	struct sw_strmap *versions;  /* executable file -> its package's version ("" for none) */
	int64_t products_at;
	json_int_t products_version; /* as of the last fetch, or 0 */
	json_int_t wanted_version;   /* as the server last said */
	json_int_t fetch_version;    /* what the fetch in flight will bring */
	int fetching;
	struct seen *seen;
	size_t nseen;
	int64_t boot_ms; /* wall clock at boot, to date processes */
	int cn_fd;	 /* the process connector, or -1 */
	uv_poll_t cn_poll;
	int cn_overrun; /* said that events were lost */
	int handles;	/* open libuv handles: freed when the last one is closed */
	long ticks;
};

/* The fields of /proc/PID/stat we need: parent, start time (ticks after boot). */
static int proc_stat(pid_t pid, pid_t *ppid, unsigned long long *start)
{
	struct sw_proc_stat st;

	if (sw_proc_stat_read(pid, &st))
		return -1;
	*ppid = st.ppid;
	*start = st.starttime;
	return 0;
}

static int proc_comm(pid_t pid, char *out, size_t len)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (!fgets(out, (int)len, f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	out[strcspn(out, "\n")] = '\0';
	return 0;
}

/* The executable's file name: from /proc/PID/exe where permitted, else its comm. */
static int proc_exe(pid_t pid, char *out, size_t len)
{
	char path[64], target[PATH_MAX];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, target, sizeof(target) - 1);
	if (n > 0) {
		char *slash;
		target[n] = '\0';
		/* a replaced binary reads "/path/prog (deleted)" */
		if (n > 10 && strcmp(target + n - 10, " (deleted)") == 0)
			target[n - 10] = '\0';
		slash = strrchr(target, '/');
		snprintf(out, len, "%s", slash ? slash + 1 : target);
		return 0;
	}
	return proc_comm(pid, out, len);
}

static void free_value(const char *key, void *value, void *arg)
{
	free(value);
}

/* The build ID of a process's executable, read once per path. */
static const char *build_id_of(struct passive *p, pid_t pid)
{
	char link[64], path[PATH_MAX], hex[2 * SW_BUILD_ID_MAX + 1];
	ssize_t n;
	char *cached;

	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return "";
	path[n] = '\0';
	cached = sw_strmap_get(p->build_ids, path);
	if (cached)
		return cached;
	if (sw_strmap_count(p->build_ids) > 4096)
		return ""; /* bounded; refilled when the product table next changes */
	/* the process's own view of its executable, even if the path was replaced */
	if (sw_elf_build_id(link, hex, sizeof(hex)))
		hex[0] = '\0';
	cached = strdup(hex);
	if (!cached || sw_strmap_set(p->build_ids, path, cached)) {
		free(cached);
		return "";
	}
	return cached;
}

/* The version of a process's executable (its package's, "" for none), looked up once
 * per file: the key has the file's inode and change time, so an upgraded package is
 * asked again. The lookup queries dpkg's database, bounded by its deadline, and only
 * for programs that a product with a version pattern could be. */
static const char *version_of(struct passive *p, pid_t pid)
{
	char link[64], path[PATH_MAX], key[PATH_MAX + 64], v[SW_PROG_VERSION_MAX + 1];
	char err[PATH_MAX + 128];
	struct stat st;
	ssize_t n;
	char *cached;
	int rc;

	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0 || stat(link, &st) < 0)
		return "";
	path[n] = '\0';
	snprintf(key, sizeof(key), "%s\n%llu:%llu:%lld", path, (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino, (long long)st.st_ctim.tv_sec);
	if ((cached = sw_strmap_get(p->versions, key)))
		return cached;
	if (sw_strmap_count(p->versions) > 4096) {
		sw_strmap_each(p->versions, free_value, NULL);
		sw_strmap_free(p->versions);
		if (!(p->versions = sw_strmap_new()))
			return "";
	}
	rc = sw_program_version(path, v, sizeof(v), err, sizeof(err));
	if (rc && rc != SW_ENOTFOUND)
		sw_warn("passive metering: the version of %s is not known: %s", path, err);
	cached = strdup(v);
	if (!cached || sw_strmap_set(p->versions, key, cached)) {
		free(cached);
		return "";
	}
	return cached;
}

const char *passive_product_for(const struct sw_product *const *v, size_t n, const json_t *excluded,
				const char *exe, const struct passive_lookup *look)
{
	struct sw_program prog = {exe, NULL, NULL};
	const struct sw_product *d;
	unsigned need;
	const json_t *x;
	size_t i;

	json_array_foreach(excluded, i, x)
	{
		const char *e = json_string_value(x);

		if (e && strcmp(e, exe) == 0)
			return NULL;
	}
	/* a build ID or a version is read only when it would decide: the version costs a
	 * query of dpkg's database */
	while (!(d = sw_product_match(v, n, &prog, &need)) && need) {
		if ((need & SW_PRODUCT_NEED_BUILD_ID) && !prog.build_id)
			prog.build_id = look->build_id(look->arg);
		else if ((need & SW_PRODUCT_NEED_VERSION) && !prog.version)
			prog.version = look->version(look->arg);
		else
			break;
	}
	return d ? d->name : NULL;
}

struct proc_ref {
	struct passive *p;
	pid_t pid;
};

static const char *proc_build_id(void *arg)
{
	struct proc_ref *r = arg;

	return build_id_of(r->p, r->pid);
}

static const char *proc_version(void *arg)
{
	struct proc_ref *r = arg;

	return version_of(r->p, r->pid);
}

/* The product a process is, as a license server would choose it. */
static const char *product_for(struct passive *p, const char *exe, pid_t pid)
{
	struct proc_ref r = {p, pid};
	struct passive_lookup look = {proc_build_id, proc_version, &r};

	return passive_product_for((const struct sw_product *const *)p->prod, p->nprod, p->excluded,
				   exe, &look);
}

static void record_run(struct passive *p, const struct seen *s, int64_t end_ms)
{
	char path[PATH_MAX + 100], dir[PATH_MAX + 32], *text;
	json_t *rec;

	snprintf(dir, sizeof(dir), "%s/usage-cache", p->a->dir);
	mkdir(dir, 0700);
	rec =
	    json_pack("{ss ss ss ss ss sI sI ss sI ss}", "id", s->id, "product", s->product, "exe",
		      s->exe, "user", s->user, "host", p->a->name, "start", (json_int_t)s->start_ms,
		      "end", (json_int_t)(end_ms > s->start_ms ? end_ms : s->start_ms), "kind",
		      "run", "wait_ms", (json_int_t)0, "source", "passive");
	text = rec ? sw_json_dump(rec) : NULL;
	json_decref(rec);
	snprintf(path, sizeof(path), "%s/%s.json", dir, s->id);
	if (!text || sw_file_write_atomic(path, text, strlen(text), 0600, NULL, 0))
		sw_warn("cannot record passive usage of %s", s->exe);
	free(text);
}

/* Looks at one process: a product not tracked yet starts a run. */
static void note(struct passive *p, pid_t pid)
{
	char exe[256], parent[64], key[128], path[64], hex[65];
	pid_t ppid = 0;
	unsigned long long start = 0;
	const char *product;
	struct seen *s;
	struct stat st;
	size_t i;

	if (proc_exe(pid, exe, sizeof(exe)) || !(product = product_for(p, exe, pid)) ||
	    proc_stat(pid, &ppid, &start))
		return;
	/* Started by siteward-run: metered by its license server. A parent already gone
	 * (a short run whose siteward-run reaped it and left between our reads) is not
	 * known not to be siteward-run, and is left too. */
	if (proc_comm(ppid, parent, sizeof(parent)) != 0 || strcmp(parent, "siteward-run") == 0)
		return;
	for (i = 0; i < p->nseen; i++)
		if (p->seen[i].pid == pid && p->seen[i].starttime == start)
			break;
	if (i < p->nseen) {
		p->seen[i].alive = 1;
		return;
	}
	if (p->nseen == MAX_TRACKED)
		return;
	s = &p->seen[p->nseen++];
	memset(s, 0, sizeof(*s));
	s->pid = pid;
	s->starttime = start;
	s->alive = 1;
	s->start_ms = p->boot_ms + (int64_t)(start * 1000 / (unsigned long long)p->ticks);
	snprintf(s->product, sizeof(s->product), "%s", product);
	snprintf(s->exe, sizeof(s->exe), "%s", exe);
	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	if (stat(path, &st) == 0) {
		struct passwd *pw = getpwuid(st.st_uid);
		if (pw)
			snprintf(s->user, sizeof(s->user), "%s", pw->pw_name);
		else
			snprintf(s->user, sizeof(s->user), "%u", (unsigned)st.st_uid);
	}
	snprintf(key, sizeof(key), "%s/%d/%llu/%lld", p->a->name, (int)pid, start,
		 (long long)p->boot_ms / 1000);
	sw_sha256_hex(key, strlen(key), hex);
	memcpy(s->id, hex, 32);
	s->id[32] = '\0';
}

/* The run at index i ended at end_ms: recorded, and no longer tracked. */
static void end_run(struct passive *p, size_t i, int64_t end_ms)
{
	record_run(p, &p->seen[i], end_ms);
	p->seen[i] = p->seen[--p->nseen];
}

static void scan(struct passive *p)
{
	struct dirent *de;
	DIR *d = opendir("/proc");
	int64_t now = sw_now_ms();

	if (!d)
		return;
	for (size_t i = 0; i < p->nseen; i++)
		p->seen[i].alive = 0;
	while ((de = readdir(d)))
		if (de->d_name[0] >= '1' && de->d_name[0] <= '9')
			note(p, atoi(de->d_name));
	closedir(d);
	for (size_t i = 0; i < p->nseen;) {
		if (p->seen[i].alive)
			i++;
		else
			end_run(p, i, now);
	}
}

/* The process connector: a program executed is looked at at once, so a run shorter
 * than the scan interval still counts, and a run ends when its process does. */
static void on_event(void *arg, const struct sw_procev *ev)
{
	struct passive *p = arg;

	if (ev->kind == SW_PROCEV_EXEC) {
		if (p->nprod)
			note(p, ev->pid);
		return;
	}
	for (size_t i = 0; i < p->nseen; i++)
		if (p->seen[i].pid == ev->pid) {
			end_run(p, i, sw_now_ms());
			return;
		}
}

static void on_events(uv_poll_t *h, int status, int events)
{
	struct passive *p = h->data;
	char buf[8192];

	if (status < 0) {
		sw_warn("passive metering: process events fail (%s); scanning /proc only",
			uv_strerror(status));
		uv_poll_stop(&p->cn_poll);
		return;
	}
	/* A burst is taken a bounded share at a time; the loop comes back for the rest. */
	for (int i = 0; i < 256; i++) {
		int rc = sw_procev_read(p->cn_fd, buf, sizeof(buf), on_event, p);

		if (rc == SW_EBUSY)
			return;
		if (rc == SW_ETOOBIG) {
			if (!p->cn_overrun)
				sw_warn("passive metering: process events were lost in a burst; "
					"scanning /proc");
			p->cn_overrun = 1;
			if (p->nprod)
				scan(p);
		} else if (rc < 0) {
			sw_warn("passive metering: cannot read process events; scanning /proc "
				"only");
			uv_poll_stop(&p->cn_poll);
			return;
		}
	}
}

static void clear_build_ids(struct passive *p)
{
	sw_strmap_each(p->build_ids, free_value, NULL);
	sw_strmap_free(p->build_ids);
	p->build_ids = sw_strmap_new();
}

static void on_products(const struct sw_http_result *res, void *arg)
{
	struct passive *p = arg;
	json_t *j = NULL, *arr;
	struct sw_product **v;
	size_t n;
	char err[256];

	p->fetching = 0;
	if (res->status != 200 || sw_json_parse_object(res->body, res->len, &j, NULL, 0))
		return;
	arr = json_object_get(j, "products");
	if (json_is_array(arr)) {
		json_t *ex = json_object_get(j, "excluded");

		/* read as a license server reads them; a table it would refuse is not used */
		if (sw_product_array_parse(arr, &v, &n, err, sizeof(err))) {
			if (!json_equal(arr, p->products))
				sw_warn("passive metering: the site server's products are not "
					"used: %s",
					err);
			json_decref(p->products);
			p->products = json_incref(arr);
			p->products_at = sw_mono_ms();
			p->products_version = p->fetch_version;
			json_decref(j);
			return;
		}

		/* said when it changes: what passive metering looks for from now on */
		if (!json_equal(arr, p->products) ||
		    (json_is_array(ex) && !json_equal(ex, p->excluded)))
			sw_info("passive metering: %zu product%s, %zu program%s excluded",
				json_array_size(arr), json_array_size(arr) == 1 ? "" : "s",
				json_array_size(ex), json_array_size(ex) == 1 ? "" : "s");
		json_decref(p->products);
		p->products = json_incref(arr);
		sw_product_array_free(p->prod, p->nprod);
		p->prod = v;
		p->nprod = n;
		json_decref(p->excluded);
		p->excluded = json_is_array(ex) ? json_incref(ex) : json_array();
		clear_build_ids(p);
		p->products_at = sw_mono_ms();
		p->products_version = p->fetch_version;
	}
	json_decref(j);
}

static void on_tick(uv_timer_t *t)
{
	struct passive *p = t->data;
	char url[400];

	if (!p->fetching && (!p->products_at || p->wanted_version != p->products_version ||
			     sw_mono_ms() - p->products_at > PRODUCTS_EVERY_MS)) {
		p->fetch_version = p->wanted_version;
		snprintf(url, sizeof(url), "%s/v1/products", p->a->server);
		if (sw_http_client_request(p->a->client, "GET", url, NULL, 0,
					   p->a->request_timeout_ms, on_products, p) == 0)
			p->fetching = 1;
	}
	if (p->nprod)
		scan(p);
}

static int64_t boot_time_ms(void)
{
	char line[256];
	long long btime = 0;
	FILE *f = fopen("/proc/stat", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "btime %lld", &btime) == 1)
			break;
	fclose(f);
	return btime * 1000;
}

struct passive *passive_start(struct agent *a, unsigned interval_ms)
{
	char err[256] = "the process connector is not open";
	struct passive *p;

	if (interval_ms == 0)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->a = a;
	p->seen = calloc(MAX_TRACKED, sizeof(*p->seen));
	p->products = json_array();
	p->build_ids = sw_strmap_new();
	p->versions = sw_strmap_new();
	p->boot_ms = boot_time_ms();
	p->ticks = sysconf(_SC_CLK_TCK);
	if (!p->seen || !p->build_ids || !p->versions || p->ticks <= 0) {
		sw_strmap_free(p->build_ids);
		sw_strmap_free(p->versions);
		json_decref(p->products);
		free(p->seen);
		free(p);
		return NULL;
	}
	uv_timer_init(a->loop, &p->timer);
	p->timer.data = p;
	p->handles = 1;
	uv_timer_start(&p->timer, on_tick, 1000, interval_ms);
	p->cn_fd = sw_procev_open(err, sizeof(err));
	if (p->cn_fd >= 0 && uv_poll_init(a->loop, &p->cn_poll, p->cn_fd) == 0) {
		p->cn_poll.data = p;
		p->handles++;
		uv_poll_start(&p->cn_poll, UV_READABLE, on_events);
		sw_info("passive metering: process events from the kernel, and a /proc scan "
			"every %u ms",
			interval_ms);
	} else {
		if (p->cn_fd >= 0)
			close(p->cn_fd);
		p->cn_fd = -1;
		sw_info("passive metering: a /proc scan every %u ms (%s)", interval_ms, err);
	}
	return p;
}

static void on_closed(uv_handle_t *h)
{
	struct passive *p = h->data;

	if (--p->handles > 0)
		return;
	json_decref(p->products);
	sw_product_array_free(p->prod, p->nprod);
	json_decref(p->excluded);
	sw_strmap_each(p->build_ids, free_value, NULL);
	sw_strmap_free(p->build_ids);
	sw_strmap_each(p->versions, free_value, NULL);
	sw_strmap_free(p->versions);
	free(p->seen);
	free(p);
}

void passive_stop(struct passive *p)
{
	if (!p)
		return;
	if (p->cn_fd >= 0) {
		uv_poll_stop(&p->cn_poll);
		uv_close((uv_handle_t *)&p->cn_poll, on_closed);
		sw_procev_close(p->cn_fd);
		p->cn_fd = -1;
	}
	uv_timer_stop(&p->timer);
	uv_close((uv_handle_t *)&p->timer, on_closed);
}

void passive_products_version(struct passive *p, const json_t *version)
{
	if (p && json_is_integer(version))
		p->wanted_version = json_integer_value(version);
}

/* siteward-meter: the license server of the software-metering role. */
#ifndef METER_H
#define METER_H

#include "http_client.h"
#include "http_server.h"
#include "metrics.h"
#include "product.h"
#include "proto.h"

#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define METER_ID_LEN	     32 /* lease, client and usage ids: 32 lowercase hex */
#define METER_NAME_MAX	     64
#define METER_EXE_MAX	     255
#define METER_BUILD_ID_MAX   128
#define METER_USER_MAX	     64
#define METER_HOST_MAX	     127
#define METER_VERSION_MAX    64
#define METER_REASON_MAX     160
#define METER_MAX_LEASES     100000
#define METER_MAX_WAITERS    10000 /* per product */
#define METER_MAX_WAIT_MS    3600000
#define METER_MAX_BODY	     (16 * 1024)
#define METER_HB_MAX_LEASES  256
#define METER_UPLOAD_BATCH   500
#define METER_JOURNAL_MAX    (16 * 1024 * 1024)
#define METER_DEFAULT_TTL_MS 30000
#define METER_MAX_REVOKED    SW_MAX_REVOKED
/* A reclaimed lease's note lasts until the lease would have expired, and at least this
 * long after, for a client that was away a while (frozen, a network cut) */
#define METER_RECLAIM_NOTE_MS 60000

/* JSON text made once and shared, never changed: a record's text is kept with it and
 * handed to the journal's thread for a snapshot while the loop goes on. Its count of
 * references is touched on the loop thread only. */
struct jtext {
	unsigned refs;
	size_t len;
	char s[];
};

/* A product of the site, as the server last configured it, and what this license
 * server does with it now. */
struct product {
	struct product *next;
	struct sw_product def; /* allotment: this meter's share */
	int removed;	       /* no longer configured: matches nothing, holds its leases */
	unsigned in_use;       /* every lease of it */
	unsigned open_in_use;  /* leases from the pool everyone draws from */
	/* per rule of def.rules: a reservation's leases, or the leases a cap counts */
	unsigned rule_in_use[SW_PRODUCT_RULES_MAX];
	struct waiter *qhead, *qtail; /* FIFO */
	unsigned nwait;
};

/* One granted license. Wall-clock times are for people and usage; `deadline` is on the
 * monotonic clock, so a clock step never expires a lease early. */
struct lease {
	struct lease *prev, *next;
	char id[METER_ID_LEN + 1];
	char client[METER_ID_LEN + 1];
	char product[METER_NAME_MAX + 1];
	char exe[METER_EXE_MAX + 1];
	char user[METER_USER_MAX + 1];
	char host[METER_HOST_MAX + 1];
	int64_t pid;
	int64_t granted_at, renewed_at;	    /* wall ms */
	int64_t deadline;		    /* monotonic ms */
	int64_t wait_ms;		    /* how long the checkout queued */
	char reserve[SW_RULE_NAME_MAX + 1]; /* the group whose reservation it is from; "": the
					       pool everyone draws from */
	int64_t borrow_until; /* wall ms: lent out (siteward-run borrow) until then, with no
				 heartbeat; 0: an ordinary lease */
	struct jtext *text;   /* its grant record's fields, as JSON */
};

/* A group of the site, as the configuration gave it: its users and its hosts. */
struct mgroup {
	struct sw_strmap *users, *hosts;
};

/* A usage record not yet accepted by the site server. A run's id is its lease's id, so a
 * record written twice (a check-in lost in a crash, then an expiry) is one record. */
struct usage {
	struct usage *prev, *next;
	char id[METER_ID_LEN + 1];
	char product[METER_NAME_MAX + 1];
	char exe[METER_EXE_MAX + 1];
	char user[METER_USER_MAX + 1];
	char host[METER_HOST_MAX + 1];
	char kind[8]; /* run, denied */
	int64_t start, end, wait_ms;
	uint64_t seq; /* journal record that holds it: uploadable once durable */
	int uploading;
	struct jtext *text; /* the record as JSON, as uploaded and journaled */
};

/* A lease taken back (siteward license reclaim, or its program idle): its client is
 * told so at its next heartbeat, with what the product says to do, until the lease
 * would have expired. */
struct reclaimed {
	struct reclaimed *prev, *next;
	char id[METER_ID_LEN + 1];
	char client[METER_ID_LEN + 1];
	int64_t until;	    /* monotonic ms */
	struct jtext *text; /* {lease, client, product, reason, on_reclaim, signal, until} */
};

/* POST /v1/reclaim, parsed: every field given must match; at least one of lease, user
 * and host is given. */
struct reclaim_req {
	char lease[METER_ID_LEN + 1];
	char user[METER_USER_MAX + 1];
	char host[METER_HOST_MAX + 1];
	char product[METER_NAME_MAX + 1];
	char by[METER_NAME_MAX + 1]; /* who asked: "" for the license server itself */
};

/* The records of one upload. */
struct usage_batch {
	size_t n;
	char (*ids)[METER_ID_LEN + 1];
	char *json; /* the records as a JSON array */
	size_t len;
};

/* POST /v1/checkout, parsed. */
struct checkout_req {
	char exe[METER_EXE_MAX + 1];
	char build_id[METER_BUILD_ID_MAX + 1]; /* optional */
	char version[METER_VERSION_MAX + 1];   /* its package's; "" for none known */
	int has_version;		       /* the client looked its version up */
	char user[METER_USER_MAX + 1];
	char client[METER_ID_LEN + 1];
	int64_t pid, wait_ms;
};

struct heartbeat_req {
	char client[METER_ID_LEN + 1];
	size_t nleases;
	char leases[METER_HB_MAX_LEASES][METER_ID_LEN + 1];
	int64_t idle_s[METER_HB_MAX_LEASES]; /* how long its program has used no CPU; -1
						not said */
};

/* POST /v1/borrow, parsed; the user and uid are the ticket's. */
struct borrow_req {
	char product[METER_NAME_MAX + 1];
	char client[METER_ID_LEN + 1];
	char machine[65]; /* sw_borrow_machine() on the client; "" unknown */
	char user[METER_USER_MAX + 1];
	uint32_t uid;
	int64_t for_s;
};

/* What a borrowed lease is now, for its holder (POST /v1/borrow/check). */
enum borrow_state {
	BORROW_HELD,	    /* lent out, as the holder thinks */
	BORROW_WRITTEN_OFF, /* taken back by an administrator (siteward license reclaim) */
	BORROW_GONE	    /* returned, expired or never lent */
};

struct checkin_req {
	char client[METER_ID_LEN + 1];
	char lease[METER_ID_LEN + 1];
};

/* A checkout queued for a license. Owned by the caller of lease_checkout(); `granted` is
 * called once when a license is given to it, after which the queue forgets it. */
struct waiter {
	struct waiter *prev, *next;
	struct product *product;
	struct checkout_req req;
	char host[METER_HOST_MAX + 1];
	int64_t since_wall, since_mono;
	void (*granted)(struct waiter *w, struct lease *l);
	void *arg;
};

/* Why a checkout was denied: a bounded set, a label of siteward_meter_denials_total. */
enum deny_reason {
	DENY_USER,	   /* the product's deny list names the user */
	DENY_HOST,	   /* ... or the host */
	DENY_HOURS,	   /* outside the product's hours */
	DENY_NO_LICENSE,   /* every license this server holds is in use (or none allotted) */
	DENY_QUEUE_FULL,   /* and too many checkouts wait already */
	DENY_SERVER_FULL,  /* this server holds the most leases it can */
	DENY_WAIT_TIMEOUT, /* queued, and no license freed within the wait asked for */
	DENY_RULE,	   /* a product's rule: a cap reached, or what is free is reserved */
	DENY_N
};
extern const char *const deny_reason_names[DENY_N];

struct lease_table {
	struct journal *journal;	      /* NULL: nothing is journaled (tests) */
	struct sw_counter *mx_denied[DENY_N]; /* denials by reason; NULL: not counted */
	struct product *products;
	unsigned nproducts;
	const struct sw_product **match; /* the configured products, for sw_product_match() */
	size_t nmatch;
	int64_t ttl_ms;
	struct sw_strmap *leases;
	struct lease *lhead, *ltail;
	size_t nleases;
	struct sw_strmap *usage;
	struct usage *uhead, *utail;
	size_t nusage;
	size_t nwaiting;
	struct sw_strmap *revoked; /* serials of removed systems' certificates, or NULL */
	struct sw_strmap *groups;  /* name -> struct mgroup, or NULL */
	struct sw_strmap *reclaimed;
	struct reclaimed *rhead, *rtail;
	size_t nreclaimed;
};

enum checkout_result {
	CHECKOUT_UNMETERED,
	CHECKOUT_GRANTED,
	CHECKOUT_DENIED,
	CHECKOUT_QUEUED,
	CHECKOUT_NEED_VERSION /* a product's version pattern decides: ask with the version */
};

struct checkout_out {
	enum checkout_result result;
	struct lease *lease;
	const struct product *product;
	char reason[METER_REASON_MAX];
	unsigned queue_position; /* denied for want of a license: where waiting would put it */
};

/* A parsed GET /v1/meter/config answer. */
struct meter_config {
	struct product *products; /* list, owned */
	unsigned nproducts;
	int64_t ttl_ms;
	int64_t poll_ms;	   /* how often to ask again; 0: the meter's default */
	struct sw_strmap *revoked; /* owned; NULL when the answer had none */
	struct sw_strmap *groups;  /* owned: name -> struct mgroup; NULL for none */
};

struct journal_buf {
	char *data;
	size_t len, cap;
};

/* A snapshot: records whose text exists already, each with its sequence number. The
 * journal's thread writes the lines; the loop only collects references. */
struct journal_snap_rec {
	uint64_t seq;
	const char *type, *key; /* string literals */
	struct jtext *text;
};

struct journal_snap {
	struct journal_snap_rec *recs;
	size_t n, cap;
	uint64_t bytes; /* as written */
};

struct meter {
	uv_loop_t *loop;
	char dir[PATH_MAX];
	char data_dir[PATH_MAX + 16];
	char listen[300];
	char server[300];
	char ca_file[PATH_MAX + 16], cert_file[PATH_MAX + 16], key_file[PATH_MAX + 16];
	char *ca_pem, *cert_pem, *key_pem;
	struct sw_http_server *http;
	struct sw_http_client *client;
	struct lease_table *table;
	struct journal *journal;
	struct call *calls; /* queued checkouts, answered at shutdown */
	uv_timer_t tick, config_timer, upload_timer;
	int64_t poll_ms;    /* as the site server last said, 0 for the default */
	int upload_waiting; /* an upload waits for pending usage to be durable */
	int in_upload;	    /* inside upload(): a callback now is not a reason to go again */
	uv_signal_t sigint, sigterm;
	int64_t started_ms;
	int stopping;
	int server_reachable;
	int config_in_flight, upload_in_flight;
	int config_again; /* fetch again when the fetch in flight ends */
	/* Serials the site server pushed as revoked, kept beside the configuration's list
	 * until a configuration fetched after the last push has replaced it: an answer
	 * already on its way may not list them yet. */
	struct sw_strmap *pushed_revoked;
	unsigned push_seq, fetch_seq;
	char *config_text;	      /* the last good config answer, as cached */
	struct usage_batch uploading; /* records of the upload in flight */
	size_t upload_batch; /* records per upload; smaller while isolating a refused one */
	struct sw_pki_verifier *tickets_ca; /* user tickets' signers, made on first use */
	struct sw_strmap *tickets;	    /* ticket text → struct ticket_seen, verified */
	struct sw_metrics *metrics;	    /* what GET /metrics shows (api.c) */
};

/* api.c */
void api_free(struct meter *m);
/* Registers what GET /metrics shows, and hands the lease table and the journal their
 * series; before the listener starts. */
int api_metrics_open(struct meter *m, char *err, size_t errlen);

/* lease.c */
struct lease_table *lease_table_new(void);
void lease_table_free(struct lease_table *t);
/* Replaces the products and the ttl; leases of removed products stay until released. */
void lease_configure(struct lease_table *t, struct meter_config *conf, int64_t wall, int64_t mono);
/* The product a checkout is for, as sw_product_match() chooses among the configured
 * ones, or NULL; *need_version is set when a version pattern would decide and the client
 * has not said its version. */
struct product *lease_product_for(const struct lease_table *t, const struct checkout_req *r,
				  int *need_version);
int lease_config_parse(const char *text, size_t len, struct meter_config *out, char *err,
		       size_t errlen);
void lease_config_cleanup(struct meter_config *conf);
/* `w` is used only when the answer is CHECKOUT_QUEUED, and must then live until it is
 * granted or cancelled. */
int lease_checkout(struct lease_table *t, const struct checkout_req *req, const char *host,
		   int64_t wall, int64_t mono, struct waiter *w, struct checkout_out *out);
/* Takes a waiter out of its queue; with `deny`, records a denial and writes its reason. */
void lease_waiter_cancel(struct lease_table *t, struct waiter *w, int deny, int64_t wall,
			 char *reason, size_t reasonlen);
/* 0, SW_ENOTFOUND for an unknown lease, SW_EDENIED for another client's or host's. */
int lease_renew(struct lease_table *t, const char *id, const char *client, const char *host,
		int64_t wall, int64_t mono);
int lease_checkin(struct lease_table *t, const char *id, const char *client, const char *host,
		  int64_t wall, int64_t mono);
/* Lends a license of `req->product` until wall + for_s: granted (out->lease, with
 * borrow_until) or denied with the reason (no borrow rule, too long, the rule's cap, no
 * license free); never queued. */
int lease_borrow(struct lease_table *t, const struct borrow_req *req, const char *host,
		 int64_t wall, int64_t mono, struct checkout_out *out);
/* What the holder `client` on `host` of borrowed lease `id` should think of it; with
 * BORROW_WRITTEN_OFF, *note is the reclaim's note (caller decrefs). */
enum borrow_state lease_borrow_state(const struct lease_table *t, const char *id,
				     const char *client, const char *host, json_t **note);
/* Expires leases past their deadline; returns how many. */
size_t lease_expire_due(struct lease_table *t, int64_t wall, int64_t mono);
struct lease *lease_find(const struct lease_table *t, const char *id);
/* 1 if the site server listed this certificate serial as revoked. */
int lease_revoked(const struct lease_table *t, const char *serial);
/* Every lease and every queued checkout ({leases, queue}), of one product or all. */
json_t *lease_list_json(const struct lease_table *t, const char *product, int64_t wall,
			int64_t mono);
/* Takes back every lease `r` matches, as lease_checkin() would return it, and keeps a
 * note for its client's next heartbeat; appends {lease, product, user, host, pid} of
 * each to `out`. Returns how many. */
size_t lease_reclaim(struct lease_table *t, const struct reclaim_req *r, int64_t wall, int64_t mono,
		     json_t *out);
/* A heartbeat's lease `id` of `client` that was taken back: the note for the client
 * ({lease, reason, on_reclaim, signal}), or NULL. */
json_t *lease_reclaimed_json(const struct lease_table *t, const char *id, const char *client);
/* After a renewal with the idle time its client reported: the lease is taken back if
 * its product's limit is passed; 1 if it was. */
int lease_idle_check(struct lease_table *t, const char *id, int64_t idle_s, int64_t wall,
		     int64_t mono);
/* What this license server has of each pool of a product, as its poll reports it to
 * the site server: {name or rule key: {allotment, in_use, waiting}}. */
void lease_pools_report(const struct lease_table *t, const struct product *p, json_t *out);
/* The seconds of idleness after which the lease's product takes it back; 0: never. */
int64_t lease_idle_limit(const struct lease_table *t, const char *id);
/* Up to `max` pending records written by journal records <= durable_seq, marked as
 * uploading, into `out`; returns how many (0: none, `out` is then empty). */
size_t lease_usage_take(struct lease_table *t, uint64_t durable_seq, size_t max,
			struct usage_batch *out);
/* After an upload: on success forgets the records (journaling their ids), otherwise
 * makes them uploadable again. */
void lease_usage_done(struct lease_table *t, const struct usage_batch *b, int ok);
void usage_batch_cleanup(struct usage_batch *b);
/* Applies one journal record during replay. */
int lease_apply(struct lease_table *t, const json_t *rec, int64_t wall, int64_t mono, char *err,
		size_t errlen);
/* Writes the live state (leases, pending usage) as journal records. */
int lease_snapshot(void *arg, struct journal *j, struct journal_snap *s);

/* journal.c */
typedef void (*journal_done_fn)(void *arg, int rc);
typedef int (*journal_apply_fn)(void *arg, const json_t *rec, char *err, size_t errlen);
typedef int (*journal_snapshot_fn)(void *arg, struct journal *j, struct journal_snap *s);
/* Replays `dir`/journal through `apply`, then compacts it to a snapshot. */
int journal_open(uv_loop_t *loop, const char *dir, journal_apply_fn apply,
		 journal_snapshot_fn snapshot, void *arg, struct journal **out, char *err,
		 size_t errlen);
/* Waits for the flush in progress, then frees. NULL is a no-op. */
void journal_close(struct journal *j);
/* Adds a record {"seq","t":type, members, "key":text} to the batch, where `members` is
 * "\"name\":value,..." or NULL, and `text` an object; with a NULL key, the members of
 * `text` are the record's. */
int journal_append_text(struct journal *j, const char *type, const char *members, const char *key,
			const struct jtext *text, uint64_t *seq);
/* Adds a record {"seq","t":type, "key":text} (or text's members, key NULL) to a
 * snapshot, with the next sequence number; takes a reference to `text`. */
int journal_snap_add(struct journal *j, struct journal_snap *s, const char *type, const char *key,
		     struct jtext *text, uint64_t *seq);
/* JSON text: of `len` bytes of `s`, or the compact dump of `j` (taken; NULL fails). */
struct jtext *jtext_new(const char *s, size_t len);
struct jtext *jtext_dump(json_t *j);
struct jtext *jtext_ref(struct jtext *t);
void jtext_unref(struct jtext *t);
/* Calls cb(arg, 0) once every record appended so far is on disk, or cb(arg, SW_EIO) if
 * writing failed. May call it before returning when nothing is pending. */
int journal_wait(struct journal *j, journal_done_fn cb, void *arg);
uint64_t journal_durable_seq(const struct journal *j);
int journal_busy(const struct journal *j);
/* Parses one line; *out is the record with "seq" and "t" checked. */
int journal_parse_line(const char *line, size_t len, json_t **out, uint64_t *seq, char *err,
		       size_t errlen);
/* 1 while the last write failed and no snapshot has caught up since. */
int journal_failing(const struct journal *j);
/* Where each fsync is counted, and each append's count of records observed (NULL:
 * nowhere). */
void journal_set_metrics(struct journal *j, struct sw_counter *fsyncs,
			 struct sw_histogram *records_per_fsync);
/* Counters for health: flushes done and records they carried. */
void journal_stats(const struct journal *j, uint64_t *flushes, uint64_t *records,
		   uint64_t *max_batch);

/* proto.c */
int proto_checkout_parse(const json_t *j, struct checkout_req *out, char *err, size_t errlen);
int proto_heartbeat_parse(const json_t *j, struct heartbeat_req *out, char *err, size_t errlen);
int proto_checkin_parse(const json_t *j, struct checkin_req *out, char *err, size_t errlen);
int proto_reclaim_parse(const json_t *j, struct reclaim_req *out, char *err, size_t errlen);
/* {product, for_s, client, machine}; the user is the caller's to fill in. */
int proto_borrow_parse(const json_t *j, struct borrow_req *out, char *err, size_t errlen);
/* 1 if `s` is exactly 32 lowercase hex digits. */
int proto_id_valid(const char *s);

/* api.c */
extern const struct sw_http_route api_routes[];
extern const size_t api_nroutes;
/* Answers every queued checkout (the meter is going away). */
void api_shutdown(struct meter *m);

/* sync.c */
/* Loads ADIR/meter/config.json if there is one; a missing cache is an empty config. */
void sync_load_cache(struct meter *m);
int sync_start(struct meter *m, char *err, size_t errlen);
void sync_stop(struct meter *m);
/* Every tick: uploads at once when a whole batch is pending. */
void sync_usage_tick(struct meter *m);
/* The site server says products changed: fetch the configuration now. */
void sync_refresh(struct meter *m);
/* The site server's push named certificates just revoked ({"revoked": [serial...]}, the
 * body of POST /v1/config/refresh): they are refused from now on, before the
 * configuration that lists them arrives. An empty or absent list is no change. */
int sync_revoked(struct meter *m, const char *body, size_t len, char *err, size_t errlen);

#endif

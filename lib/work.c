#include "work.h"

#include "error.h"

#include <stdlib.h>

struct work {
	uv_work_t req;
	uv_timer_t timer;
	void *arg;
	void (*run)(void *arg);
	void (*done)(void *arg, int timed_out);
	void (*release)(void *arg);
	int returned;	  /* run() has returned */
	int timer_closed; /* the deadline's timer is closed */
	int delivered;	  /* done() has run */
};

static void work_free(struct work *w)
{
	if (w->release)
		w->release(w->arg);
	free(w);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct work *w = h->data;

	w->timer_closed = 1;
	if (w->returned)
		work_free(w);
}

static void deliver(struct work *w, int timed_out)
{
	if (w->delivered)
		return;
	w->delivered = 1;
	w->done(w->arg, timed_out);
	uv_close((uv_handle_t *)&w->timer, on_timer_closed);
}

static void on_run(uv_work_t *req)
{
	struct work *w = req->data;

	w->run(w->arg);
}

static void on_returned(uv_work_t *req, int status)
{
	struct work *w = req->data;

	(void)status;
	w->returned = 1;
	if (!w->delivered)
		deliver(w, 0);
	else if (w->timer_closed)
		work_free(w);
}

static void on_expired(uv_timer_t *t)
{
	deliver(t->data, 1);
}

int sw_work_start(uv_loop_t *loop, unsigned bound_ms, void (*run)(void *arg),
		  void (*done)(void *arg, int timed_out), void (*release)(void *arg), void *arg)
{
	struct work *w = calloc(1, sizeof(*w));

	if (!w)
		return SW_ENOMEM;
	w->arg = arg;
	w->run = run;
	w->done = done;
	w->release = release;
	w->req.data = w->timer.data = w;
	uv_timer_init(loop, &w->timer);
	if (uv_queue_work(loop, &w->req, on_run, on_returned)) {
		w->returned = 1;
		w->delivered = 1;
		w->release = NULL;
		uv_close((uv_handle_t *)&w->timer, on_timer_closed);
		return SW_EIO;
	}
	uv_timer_start(&w->timer, on_expired, bound_ms, 0);
	return 0;
}

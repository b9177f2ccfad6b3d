#include "loop.h"

#include "error.h"

#include <stddef.h>

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void on_deadline(uv_timer_t *t)
{
	*(int *)t->data = 1;
	uv_stop(t->loop);
}

int sw_loop_drain(uv_loop_t *loop, unsigned timeout_ms)
{
	uv_timer_t deadline;
	int expired = 0;

	uv_walk(loop, close_walk, NULL);
	/* Unreferenced, the deadline keeps nothing alive: the run ends as soon as the
	 * closes and pending requests do, and at the latest when it fires. */
	uv_timer_init(loop, &deadline);
	deadline.data = &expired;
	uv_timer_start(&deadline, on_deadline, timeout_ms, 0);
	uv_unref((uv_handle_t *)&deadline);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&deadline, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return expired ? SW_ETIMEDOUT : 0;
}

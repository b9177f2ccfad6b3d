/* A job on libuv's thread pool with a deadline, for work that must not hold the loop: a
 * package verified or extracted, a database copied. */
#ifndef SW_WORK_H
#define SW_WORK_H

#include <uv.h>

/* `run(arg)` works on the thread pool. `done(arg, timed_out)` runs on the loop when
 * `run` has returned or when `bound_ms` has passed, whichever comes first; `release(arg)`
 * (may be NULL) runs on the loop after both `done` and `run`, to free what they share.
 * A job that timed out still runs to its end, since a thread cannot be stopped, only no
 * longer waited for. Returns 0, or a negative SW_E* code (nothing is called then). */
int sw_work_start(uv_loop_t *loop, unsigned bound_ms, void (*run)(void *arg),
		  void (*done)(void *arg, int timed_out), void (*release)(void *arg), void *arg);

#endif

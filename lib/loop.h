/* The end of a daemon's libuv loop, the same in every program. */
#ifndef SW_LOOP_H
#define SW_LOOP_H

#include <uv.h>

/* How long a program waits for its loop to wind down once every handle is closed. */
#define SW_LOOP_DRAIN_MS 5000

/* Closes every handle on `loop` not already closing and runs the loop until the last
 * has closed and no request is pending, or until `timeout_ms` has passed. Each
 * program's own shutdown (answers sent, journals flushed) comes before; this is the
 * common tail. Returns 0, or SW_ETIMEDOUT when something (a job on the thread pool, a
 * request) still held the loop at the deadline: uv_loop_close() then fails, and the
 * process should end rather than free what that job may still use. */
int sw_loop_drain(uv_loop_t *loop, unsigned timeout_ms);

#endif

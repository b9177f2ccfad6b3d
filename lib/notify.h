/*
 * A daemon's word to its service manager (systemd's sd_notify protocol): ready, stopping,
 * and the watchdog fed from the loop itself, so that a loop that stalls stops feeding it
 * and the service manager restarts the daemon. Without NOTIFY_SOCKET (not started by
 * systemd, or not as Type=notify) every call does nothing.
 *
 * The environment (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID) is left as it is: a
 * program that re-executes itself after an upgrade keeps its process, and the new
 * program tells the service manager again that it is ready. Children inherit it, but
 * only the main process is heard (NotifyAccess=main) and WATCHDOG_PID names it alone.
 */
#ifndef SW_NOTIFY_H
#define SW_NOTIFY_H

#include <uv.h>

struct sw_notify {
	uv_timer_t watchdog;
	int armed; /* the watchdog timer runs */
};

/* Arms the watchdog on `loop` when the service manager asked for one (every half of
 * WATCHDOG_USEC, at least every 10 ms). The timer is unreferenced: it keeps no loop
 * alive, and sw_loop_drain() closes it with the rest. */
void sw_notify_init(struct sw_notify *n, uv_loop_t *loop);

/* READY=1, with a STATUS= line for `systemctl status` (NULL for none), and the
 * watchdog's first feeding. */
void sw_notify_ready(struct sw_notify *n, const char *status);

/* While a daemon waits before it is ready (an agent retrying its enrollment): a STATUS=
 * line, the watchdog fed, and the start's timeout extended by `ms`, so that the wait,
 * bounded by the caller, is not taken for a hang. */
void sw_notify_waiting(const char *status, unsigned ms);

/* STOPPING=1, and the watchdog no longer fed: the stop is bounded by TimeoutStopSec.
 * With `reexec` (the daemon runs its new version in its own process next), RELOADING=1
 * instead: the new program's READY=1 makes the service active again. */
void sw_notify_stopping(struct sw_notify *n, int reexec);

#endif

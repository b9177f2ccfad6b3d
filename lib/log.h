/* Logging to stderr: one line per event, with time, program and level. */
#ifndef SW_LOG_H
#define SW_LOG_H

enum sw_log_level { SW_LOG_DEBUG, SW_LOG_INFO, SW_LOG_WARN, SW_LOG_ERR };

/* Names the program in every line and sets the lowest level printed. */
void sw_log_init(const char *program, enum sw_log_level level);
/* Parses "debug", "info", "warn" or "error"; SW_EINVAL for anything else. */
int sw_log_level_parse(const char *name);

void sw_log(enum sw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sw_debug(...) sw_log(SW_LOG_DEBUG, __VA_ARGS__)
#define sw_info(...)  sw_log(SW_LOG_INFO, __VA_ARGS__)
#define sw_warn(...)  sw_log(SW_LOG_WARN, __VA_ARGS__)
#define sw_err(...)   sw_log(SW_LOG_ERR, __VA_ARGS__)

#endif

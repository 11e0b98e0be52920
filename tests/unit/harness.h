/* harness.h - a tiny TAP test harness for the library's unit tests.
 * Each test file defines its tests with TEST(name) and lists them in main
 * with RUN(name); CHECK(cond) records a failure and continues. */
#ifndef OPT_HARNESS_H
#define OPT_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int h_failed_now, h_count, h_failures;

#define CHECK(cond) do { if (!(cond)) { \
	printf("# %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	h_failed_now = 1; } } while (0)
#define CHECK_RC(expr) do { int h_rc_ = (expr); if (h_rc_ < 0) { \
	printf("# %s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, h_rc_, opt_error_last()); \
	h_failed_now = 1; } } while (0)
#define TEST(name) static void test_##name(void)
#define RUN(name) do { h_failed_now = 0; test_##name(); h_count++; \
	if (h_failed_now) h_failures++; \
	printf("%s %d - %s\n", h_failed_now ? "not ok" : "ok", h_count, #name); \
	fflush(stdout); } while (0)
#define DONE() (printf("1..%d\n", h_count), h_failures ? 1 : 0)

#endif

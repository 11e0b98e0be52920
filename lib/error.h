/* error.h - error codes and the last error message of the library.
 *
 * Every library function that can fail returns 0 on success or a negative
 * OPT_E* code, and keeps a one-line message (lowercase, no trailing period)
 * for opt_error_last().  The message is thread-local.  The library never
 * prints and never exits.
 *
 * The codes map one-to-one onto the programs' exit statuses: a program exits
 * with opt_exit_status(code).
 */
#ifndef OPT_ERROR_H
#define OPT_ERROR_H

#include <stdarg.h>

enum opt_error_code {
	OPT_OK = 0,
	OPT_ENOTFOUND = -1,  /* not found / nothing matched          exit 1 */
	OPT_EINVAL = -2,     /* usage or invalid input                exit 2 */
	OPT_ECONFLICT = -3,  /* conflict not resolved                 exit 3 */
	OPT_EINTEGRITY = -4, /* hash, signature, corrupt object       exit 4 */
	OPT_ENET = -5,       /* peer or network failure               exit 5 */
	OPT_EBUSY = -6,      /* store busy or locked                  exit 6 */
	OPT_EIO = -7,        /* other errors: I/O, out of space, OOM  exit 7 */
};

/* Exit statuses shared by every program. */
enum opt_exit {
	OPT_EXIT_OK = 0,
	OPT_EXIT_NOTFOUND = 1,
	OPT_EXIT_USAGE = 2,
	OPT_EXIT_CONFLICT = 3,
	OPT_EXIT_INTEGRITY = 4,
	OPT_EXIT_NET = 5,
	OPT_EXIT_BUSY = 6,
	OPT_EXIT_OTHER = 7,
};

/* Set the last error message (printf format) and return code.  An
 * argument may point into the last message (opt_error_last()). */
int opt_error_set(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int opt_error_vset(int code, const char *fmt, va_list ap);

/* Prefix the current message with "prefix: " and return code unchanged. */
int opt_error_wrap(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The last message set in this thread (borrowed; never NULL). */
const char *opt_error_last(void);

/* The code stored with the last message (0 if none). */
int opt_error_last_code(void);

void opt_error_clear(void);

/* Why an integrity failure failed, for scripts: a word that stays with the
 * last message (also when it is wrapped or set again with the old one in
 * it; a new message drops it).  opt_error_set_reason attaches reason (a
 * static string) to the current message and returns code.  The words:
 *   "untrusted" a valid signature by a key the store does not trust;
 *   "tampered"  a hash, signature or block that does not match what was
 *               recorded (data changed after it was written);
 *   "rewound"   history that does not descend from what was seen before;
 *   "malformed" something our writer does not make (a shape, a name,
 *               an object of the wrong type or size);
 *   "corrupt"   any other integrity failure (an object missing or damaged).
 *   "linked"    (a pull) a collection that shares a transaction with a
 *               refused one, and is taken whole or not at all;
 *   "conflict"  (a pull) a name that clashes with a collection here.
 * opt_error_reason: the reason of the last message; for an integrity
 * failure without one "corrupt"; NULL for other errors without one. */
int opt_error_set_reason(int code, const char *reason);
const char *opt_error_reason(void);

/* The exit status for a (negative) library code. */
int opt_exit_status(int code);

/* A short name for a code ("not found", "conflict", ...). */
const char *opt_error_name(int code);

/* Sets "out of memory" (OPT_EIO) and returns OPT_EIO. */
int opt_error_oom(void);

/* OPT_CHECK_ALLOC(p): return opt_error_oom() from the calling function when
 * p is NULL, as libgit2's GIT_ERROR_CHECK_ALLOC. Only in functions that own
 * nothing to release on that path; others set rc = opt_error_oom() and go
 * to their cleanup. */
#define OPT_CHECK_ALLOC(p) do { if (!(p)) return opt_error_oom(); } while (0)

#endif

#include "error.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char last_msg[1024];
static _Thread_local int last_code;
static _Thread_local const char *last_reason;  /* a static string, or NULL */

int opt_error_vset(int code, const char *fmt, va_list ap)
{
	char msg[sizeof(last_msg)];

	/* into a copy first: an argument may be the last message itself
	 * (opt_error_last()), which formatting in place would overwrite
	 * while reading it */
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* the reason stays with its message, also wrapped or set again */
	if (last_reason && (!last_msg[0] || !strstr(msg, last_msg)))
		last_reason = NULL;
	memcpy(last_msg, msg, strlen(msg) + 1);
	last_code = code;
	return code;
}

int opt_error_set(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	opt_error_vset(code, fmt, ap);
	va_end(ap);
	return code;
}

int opt_error_wrap(int code, const char *fmt, ...)
{
	char prefix[512], old[sizeof(last_msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, last_msg, sizeof(old));
	snprintf(last_msg, sizeof(last_msg), "%.500s: %.500s", prefix,
		 old[0] ? old : opt_error_name(code));
	last_code = code;
	return code;
}

const char *opt_error_last(void)
{
	return last_msg[0] ? last_msg : "unknown error";
}

int opt_error_last_code(void)
{
	return last_code;
}

void opt_error_clear(void)
{
	last_msg[0] = '\0';
	last_code = 0;
	last_reason = NULL;
}

int opt_error_set_reason(int code, const char *reason)
{
	last_reason = reason;
	return code;
}

const char *opt_error_reason(void)
{
	if (last_reason)
		return last_reason;
	return last_code == OPT_EINTEGRITY ? "corrupt" : NULL;
}

int opt_exit_status(int code)
{
	if (code >= 0)
		return OPT_EXIT_OK;
	if (code < OPT_EIO)
		return OPT_EXIT_OTHER;
	return -code;
}

const char *opt_error_name(int code)
{
	switch (code) {
	case OPT_OK: return "success";
	case OPT_ENOTFOUND: return "not found";
	case OPT_EINVAL: return "invalid argument";
	case OPT_ECONFLICT: return "conflict";
	case OPT_EINTEGRITY: return "integrity failure";
	case OPT_ENET: return "peer or network failure";
	case OPT_EBUSY: return "store busy";
	default: return "error";
	}
}

int opt_error_oom(void)
{
	return opt_error_set(OPT_EIO, "out of memory");
}

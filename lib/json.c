#include "json.h"
#include "error.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Our own canonical serializer: object keys in byte order, the escapes
 * JSON requires and no others, integers as integers, and reals in the
 * shortest form that reads back to the same double (0.1, not
 * 0.10000000000000001), always with a '.' or an exponent. */
struct cbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void cb_reserve(struct cbuf *b, size_t n)
{
	if (b->err || b->len + n <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + n)
		cap *= 2;
	char *np = realloc(b->p, cap);
	if (!np) {
		b->err = 1;
		return;
	}
	b->p = np;
	b->cap = cap;
}

static void cb_put(struct cbuf *b, const char *s, size_t n)
{
	cb_reserve(b, n);
	if (b->err)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void cb_str(struct cbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, start = 0;

	cb_reserve(b, n + 2);
	cb_put(b, "\"", 1);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		char u[7];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		cb_put(b, s + start, i - start);
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default:
			u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
			u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = '\0';
			esc = u;
		}
		cb_put(b, esc, strlen(esc));
		start = i + 1;
	}
	cb_put(b, s + start, n - start);
	cb_put(b, "\"", 1);
}

static void cb_real(struct cbuf *b, double d)
{
	char tmp[40];
	int prec;

	if (d != d || d - d != 0) { /* NaN or infinity: not JSON */
		b->err = 2;
		return;
	}
	for (prec = 15; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	if (!strpbrk(tmp, ".eEn"))
		strcat(tmp, ".0");
	cb_put(b, tmp, strlen(tmp));
}

static int cmp_keyp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void cb_value(struct cbuf *b, const json_t *v, int depth)
{
	char tmp[32];

	if (b->err)
		return;
	if (depth > 2048) {
		b->err = 3;
		return;
	}
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(v), i = 0;
		const char *stackkeys[16], **keys = stackkeys, *k;
		json_t *x;

		if (n > 16) {
			keys = malloc(n * sizeof(*keys));
			if (!keys) {
				b->err = 1;
				return;
			}
		}
		json_object_foreach((json_t *)v, k, x)
			keys[i++] = k;
		if (n > 1)
			qsort(keys, n, sizeof(*keys), cmp_keyp);
		cb_put(b, "{", 1);
		for (i = 0; i < n; i++) {
			if (i)
				cb_put(b, ",", 1);
			cb_str(b, keys[i], strlen(keys[i]));
			cb_put(b, ":", 1);
			cb_value(b, json_object_get(v, keys[i]), depth + 1);
		}
		cb_put(b, "}", 1);
		if (keys != stackkeys)
			free(keys);
		break;
	}
	case JSON_ARRAY: {
		size_t i, n = json_array_size(v);
		cb_put(b, "[", 1);
		for (i = 0; i < n; i++) {
			if (i)
				cb_put(b, ",", 1);
			cb_value(b, json_array_get(v, i), depth + 1);
		}
		cb_put(b, "]", 1);
		break;
	}
	case JSON_STRING:
		cb_str(b, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		cb_put(b, tmp, strlen(tmp));
		break;
	case JSON_REAL:
		cb_real(b, json_real_value(v));
		break;
	case JSON_TRUE:
		cb_put(b, "true", 4);
		break;
	case JSON_FALSE:
		cb_put(b, "false", 5);
		break;
	case JSON_NULL:
		cb_put(b, "null", 4);
		break;
	}
}

int opt_json_canon(char **out, size_t *len, const json_t *v)
{
	struct cbuf b = { NULL, 0, 0, 0 };

	*out = NULL;
	if (!v)
		return opt_error_set(OPT_EINVAL, "no JSON value");
	cb_value(&b, v, 0);
	cb_put(&b, "", 1);
	if (b.err) {
		free(b.p);
		if (b.err == 2)
			return opt_error_set(OPT_EINVAL, "NaN and infinity are not JSON numbers");
		if (b.err == 3)
			return opt_error_set(OPT_EINVAL, "JSON value nested too deeply");
		return opt_error_set(OPT_EIO, "out of memory");
	}
	*out = b.p;
	if (len)
		*len = b.len - 1;
	return 0;
}

int opt_json_hash(char out[65], const json_t *v)
{
	char *s;
	size_t n = 0;
	int rc = opt_json_canon(&s, &n, v);

	if (rc < 0)
		return rc;
	opt_sha256_hex(out, s, n);
	free(s);
	return 0;
}

int opt_json_parse(json_t **out, const char *buf, size_t len)
{
	json_error_t err;
	json_t *v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);

	*out = NULL;
	if (!v)
		return opt_error_set(OPT_EINVAL, "invalid JSON: %s", err.text);
	*out = v;
	return 0;
}

json_t *opt_json_copy(const json_t *v)
{
	json_t *out;
	const char *k;
	json_t *x;
	size_t i;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		out = json_object();
		if (!out)
			return NULL;
		json_object_foreach((json_t *)v, k, x) {
			if (json_object_set_new_nocheck(out, k, opt_json_copy(x)) < 0) {
				json_decref(out);
				return NULL;
			}
		}
		return out;
	case JSON_ARRAY:
		out = json_array();
		if (!out)
			return NULL;
		for (i = 0; i < json_array_size(v); i++)
			if (json_array_append_new(out, opt_json_copy(json_array_get(v, i))) < 0) {
				json_decref(out);
				return NULL;
			}
		return out;
	case JSON_STRING:
		return json_stringn_nocheck(json_string_value(v), json_string_length(v));
	default:
		/* numbers, true, false, null: immutable in our use */
		return json_incref((json_t *)v);
	}
}

int opt_key_valid(const json_t *v)
{
	size_t i;

	if (!v)
		return 0;
	if (json_is_number(v) || json_is_string(v))
		return 1;
	if (!json_is_array(v))
		return 0;
	for (i = 0; i < json_array_size(v); i++)
		if (!opt_key_valid(json_array_get(v, i)))
			return 0;
	return 1;
}

static int key_rank(const json_t *v)
{
	if (json_is_number(v))
		return 0;
	if (json_is_string(v))
		return 1;
	return 2;
}

int opt_key_cmp(const json_t *a, const json_t *b)
{
	int ra = key_rank(a), rb = key_rank(b);

	if (ra != rb)
		return ra < rb ? -1 : 1;
	if (ra == 0) {
		if (json_is_integer(a) && json_is_integer(b)) {
			json_int_t x = json_integer_value(a), y = json_integer_value(b);
			return x < y ? -1 : x > y;
		}
		/* long double holds every 64-bit integer exactly */
		long double x = json_is_integer(a) ? (long double)json_integer_value(a) : (long double)json_real_value(a);
		long double y = json_is_integer(b) ? (long double)json_integer_value(b) : (long double)json_real_value(b);
		return x < y ? -1 : x > y;
	}
	if (ra == 1) {
		size_t la = json_string_length(a), lb = json_string_length(b);
		int c = memcmp(json_string_value(a), json_string_value(b), la < lb ? la : lb);
		if (c)
			return c < 0 ? -1 : 1;
		return la < lb ? -1 : la > lb;
	}
	size_t na = json_array_size(a), nb = json_array_size(b), i;
	for (i = 0; i < na && i < nb; i++) {
		int c = opt_key_cmp(json_array_get(a, i), json_array_get(b, i));
		if (c)
			return c;
	}
	return na < nb ? -1 : na > nb;
}

/* ---- canonical JSON text, scanned without building values ---- */

const char *opt_raw_skip(const char *p, const char *end)
{
	uint64_t stack = 0;  /* bit per open level: 1 for '{', 0 for '[' */
	int depth = 0;

	if (p >= end)
		return NULL;
	for (;;) {
		char ch;

		if (p >= end)
			return NULL;  /* after an opening bracket, a comma or a colon */
		ch = *p;
		if (ch == '"') {
			for (p++;; p++) {
				if (p >= end)
					return NULL;
				if (*p == '\\') {
					if (++p >= end || !strchr("\"\\/bfnrtu", *p))
						return NULL;
					if (*p == 'u') {
						int k;
						for (k = 0; k < 4; k++)
							if (++p >= end || !isxdigit((unsigned char)*p))
								return NULL;
					}
					continue;
				}
				if (*p == '"')
					break;
				if ((unsigned char)*p < 0x20)
					return NULL;
			}
			p++;
		} else if (ch == '{' || ch == '[') {
			if (depth == 64)
				return NULL;
			stack = (stack << 1) | (ch == '{');
			depth++;
			p++;
			continue;
		} else if (ch == '}' || ch == ']') {
			if (depth == 0 || (stack & 1) != (ch == '}'))
				return NULL;
			stack >>= 1;
			depth--;
			p++;
		} else if (ch == ',' || ch == ':') {
			if (depth == 0)
				return NULL;
			p++;
			continue;
		} else if (ch == 't' || ch == 'f' || ch == 'n') {
			const char *lit = ch == 't' ? "true" : ch == 'f' ? "false" : "null";
			size_t ll = strlen(lit);
			if ((size_t)(end - p) < ll || memcmp(p, lit, ll) != 0)
				return NULL;
			p += ll;
		} else if ((ch >= '0' && ch <= '9') || ch == '-') {
			/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
			const char *q;
			if (*p == '-')
				p++;
			q = p;
			while (p < end && *p >= '0' && *p <= '9')
				p++;
			if (p == q || (*q == '0' && p - q > 1))
				return NULL;
			if (p < end && *p == '.') {
				q = ++p;
				while (p < end && *p >= '0' && *p <= '9')
					p++;
				if (p == q)
					return NULL;
			}
			if (p < end && (*p == 'e' || *p == 'E')) {
				p++;
				if (p < end && (*p == '+' || *p == '-'))
					p++;
				q = p;
				while (p < end && *p >= '0' && *p <= '9')
					p++;
				if (p == q)
					return NULL;
			}
		} else {
			return NULL;  /* white space or junk: not canonical */
		}
		if (depth == 0)
			return p;
		if (p >= end)
			return NULL;
	}
}

static int raw_rank(char c)
{
	if (c == '"')
		return 1;
	if (c == '[')
		return 2;
	return (c >= '0' && c <= '9') || c == '-' ? 0 : -1;
}

/* A string key's bytes straight from the text, when it has no escapes. */
static int raw_plain_string(const char *raw, size_t len)
{
	return len >= 2 && raw[0] == '"' && raw[len - 1] == '"' && !memchr(raw + 1, '\\', len - 2);
}

static int raw_parse_key(const char *raw, size_t len, json_t **out)
{
	json_error_t err;

	*out = json_loadb(raw, len, JSON_DECODE_ANY, &err);
	if (!*out || !opt_key_valid(*out)) {
		json_decref(*out);
		*out = NULL;
		return opt_error_set(OPT_EINTEGRITY, "a stored key is not a valid key");
	}
	return 0;
}

int opt_raw_key_cmp(const char *raw, size_t len, const json_t *key, int *err)
{
	int ra, rk = key_rank(key), c;
	json_t *v;

	if (len == 0) {
		*err = opt_error_set(OPT_EINTEGRITY, "a stored key is empty");
		return 0;
	}
	ra = raw_rank(raw[0]);
	if (ra < 0) {
		*err = opt_error_set(OPT_EINTEGRITY, "a stored key is not a valid key");
		return 0;
	}
	if (ra != rk)
		return ra < rk ? -1 : 1;
	if (ra == 1 && raw_plain_string(raw, len)) {
		size_t la = len - 2, lb = json_string_length(key);
		c = memcmp(raw + 1, json_string_value(key), la < lb ? la : lb);
		if (c)
			return c < 0 ? -1 : 1;
		return la < lb ? -1 : la > lb;
	}
	if ((c = raw_parse_key(raw, len, &v)) < 0) {
		*err = c;
		return 0;
	}
	c = opt_key_cmp(v, key);
	json_decref(v);
	return c;
}

int opt_raw_keys_cmp(const char *a, size_t al, const char *b, size_t bl, int *err)
{
	json_t *v;
	int c;

	if (raw_plain_string(a, al) && raw_plain_string(b, bl)) {
		size_t la = al - 2, lb = bl - 2;
		c = memcmp(a + 1, b + 1, la < lb ? la : lb);
		if (c)
			return c < 0 ? -1 : 1;
		return la < lb ? -1 : la > lb;
	}
	if ((c = raw_parse_key(b, bl, &v)) < 0) {
		*err = c;
		return 0;
	}
	c = opt_raw_key_cmp(a, al, v, err);
	json_decref(v);
	return c;
}

/* The reader keeps a buffer; a scanner finds where one top-level value
 * ends (balanced brackets outside strings, or white space after a scalar)
 * and hands that slice to jansson. */
struct opt_jsonl {
	FILE *f;
	char *buf;
	size_t cap, start, end; /* unread data is buf[start..end) */
	int eof;
	long line;      /* line of buf[start] */
	long value_line;
};

int opt_jsonl_open(struct opt_jsonl **out, FILE *f)
{
	struct opt_jsonl *r = calloc(1, sizeof(*r));

	*out = NULL;
	if (!r)
		return opt_error_set(OPT_EIO, "out of memory");
	r->f = f;
	r->cap = 1 << 16;
	r->buf = malloc(r->cap);
	if (!r->buf) {
		free(r);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	r->line = 1;
	*out = r;
	return 0;
}

void opt_jsonl_free(struct opt_jsonl *r)
{
	if (!r)
		return;
	free(r->buf);
	free(r);
}

static int is_ws(char c);

int opt_jsonl_buffered(const struct opt_jsonl *r)
{
	size_t i;

	for (i = r->start; i < r->end; i++)
		if (!is_ws(r->buf[i]))
			return 1;
	return 0;
}

long opt_jsonl_line(const struct opt_jsonl *r)
{
	return r->value_line;
}

/* Read more input; returns 1 if any was read, 0 at EOF, <0 on error. */
static int fill(struct opt_jsonl *r)
{
	size_t n;

	if (r->eof)
		return 0;
	if (r->start > 0 && r->start == r->end) {
		r->start = r->end = 0;
	} else if (r->start > r->cap / 2) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->end -= r->start;
		r->start = 0;
	}
	if (r->end == r->cap) {
		char *nb = realloc(r->buf, r->cap * 2);
		if (!nb)
			return opt_error_set(OPT_EIO, "out of memory");
		r->buf = nb;
		r->cap *= 2;
	}
	/* read(2), not fread: return what a pipe has now, so that a stream's
	 * values are seen as they come (fread would wait to fill the buffer) */
	if (fileno(r->f) < 0) {  /* a memory stream (fmemopen) has no fd */
		n = fread(r->buf + r->end, 1, r->cap - r->end, r->f);
		if (n == 0 && ferror(r->f))
			return opt_error_set(OPT_EIO, "cannot read input: %s", strerror(errno));
	} else for (;;) {
		ssize_t got = read(fileno(r->f), r->buf + r->end, r->cap - r->end);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return opt_error_set(OPT_EIO, "cannot read input: %s", strerror(errno));
		n = (size_t)got;
		break;
	}
	if (n == 0) {
		r->eof = 1;
		return 0;
	}
	r->end += n;
	return 1;
}

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int opt_jsonl_next(struct opt_jsonl *r, json_t **out)
{
	size_t i;
	int depth = 0, in_str = 0, esc = 0, rc;

	*out = NULL;
	/* skip white space */
	for (;;) {
		while (r->start < r->end && is_ws(r->buf[r->start])) {
			if (r->buf[r->start] == '\n')
				r->line++;
			r->start++;
		}
		if (r->start < r->end)
			break;
		rc = fill(r);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return 0;
	}
	r->value_line = r->line;
	i = r->start;
	for (;;) {
		for (; i < r->end; i++) {
			char c = r->buf[i];
			if (in_str) {
				if (esc)
					esc = 0;
				else if (c == '\\')
					esc = 1;
				else if (c == '"') {
					in_str = 0;
					if (depth == 0)
						goto found_next;
				} else if (c == '\n')
					goto found; /* let jansson report it */
				continue;
			}
			if (c == '"') {
				in_str = 1;
			} else if (c == '{' || c == '[') {
				depth++;
			} else if (c == '}' || c == ']') {
				if (--depth <= 0)
					goto found_next;
			} else if (depth == 0) {
				if (is_ws(c))
					goto found;
			}
		}
		{
			/* fill() may move buf[start..] to the front: keep i relative */
			size_t off = i - r->start;
			rc = fill(r);
			i = r->start + off;
		}
		if (rc < 0)
			return rc;
		if (rc == 0)
			goto found;
	}
found_next:
	i++;
found:
	{
		json_error_t err;
		size_t len = i - r->start;
		const char *p = r->buf + r->start;
		size_t k;
		json_t *v = json_loadb(p, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);

		for (k = 0; k < len; k++)
			if (p[k] == '\n')
				r->line++;
		r->start = i;
		if (!v) {
			/* skip the rest of the offending line so a caller may go on */
			while (r->start < r->end && r->buf[r->start] != '\n')
				r->start++;
			return opt_error_set(OPT_EINVAL, "line %ld: invalid JSON: %s",
					     r->value_line, err.text);
		}
		*out = v;
		return 1;
	}
}

/* ---- canonical text checked in one pass (opt_canon_scan) ---- */

#define CANON_DEPTH 512

/* Bytes a canonical string holds as they are (bytes >= 0x80 are checked
 * as UTF-8 apart). */
static const unsigned char canon_plain[256] = {
	[0x20] = 1, [0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7f] = 1,
};

/* The length of the valid UTF-8 sequence at p (p[0] >= 0x80) as jansson
 * accepts it (no overlong forms, no surrogates, up to U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0], v;
	size_t n, i;

	if (c < 0xc2)
		return 0;
	if (c < 0xe0) {
		n = 2;
		v = c & 0x1f;
	} else if (c < 0xf0) {
		n = 3;
		v = c & 0x0f;
	} else if (c < 0xf5) {
		n = 4;
		v = c & 0x07;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (p[i] & 0x3f);
	}
	if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff) || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000))
		return 0;
	return n;
}

/* The end of the canonical string at p (*p == '"'), or NULL; *esc is set
 * when it holds an escape. */
static const char *canon_string(const char *p, const char *end, int *esc)
{
	const unsigned char *q = (const unsigned char *)p + 1, *e = (const unsigned char *)end;
	unsigned x;

	for (;;) {
		/* eight bytes at a time while none is a quote, a backslash, a
		 * control character or a byte >= 0x80 */
		while (e - q >= 8) {
			uint64_t x, t;
			memcpy(&x, q, 8);
			/* (a lane's high bit after the subtractions: the lowest
			 * byte below 0x20, or equal to '"' or '\\', sets it;
			 * false alarms only send us to the loop below) */
			t = ((x - 0x2020202020202020ULL) | ((x ^ 0x2222222222222222ULL) - 0x0101010101010101ULL) |
			     ((x ^ 0x5c5c5c5c5c5c5c5cULL) - 0x0101010101010101ULL) | x) & 0x8080808080808080ULL;
			if (t)
				break;
			q += 8;
		}
		while (q < e && canon_plain[*q])
			q++;
		if (q >= e)
			return NULL;
		if (*q == '"')
			return (const char *)q + 1;
		if (*q >= 0x80) {
			size_t n = utf8_seq(q, e);
			if (!n)
				return NULL;
			q += n;
			continue;
		}
		if (*q != '\\' || e - q < 2)
			return NULL;  /* a control character as it is */
		*esc = 1;
		switch (q[1]) {
		case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
			q += 2;
			continue;
		case 'u':
			/* \u00xx (lower case) only for the control characters
			 * without a short escape, and never NUL */
			if (e - q < 6 || q[2] != '0' || q[3] != '0' || (q[4] != '0' && q[4] != '1'))
				return NULL;
			if (q[5] >= '0' && q[5] <= '9')
				x = (unsigned)(q[5] - '0');
			else if (q[5] >= 'a' && q[5] <= 'f')
				x = (unsigned)(q[5] - 'a' + 10);
			else
				return NULL;
			x += (unsigned)(q[4] - '0') * 16;
			if (x == 0 || x == '\b' || x == '\t' || x == '\n' || x == '\f' || x == '\r')
				return NULL;
			q += 6;
			continue;
		default:
			return NULL;
		}
	}
}

/* The end of the canonical number at p, or NULL: an integer that fits
 * (no "-0"), or a real exactly as cb_real writes it. */
static const char *canon_number(const char *p, const char *end)
{
	const char *s = p, *d, *f;
	int real = 0;

	if (p < end && *p == '-')
		p++;
	d = p;
	if (p >= end)
		return NULL;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if (p < end && *p == '.') {
		real = 1;
		f = ++p;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
		if (p == f)
			return NULL;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = 1;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		f = p;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
		if (p == f)
			return NULL;
	}
	if (!real) {
		size_t nd = (size_t)(p - d);
		if ((s != d && nd == 1 && *d == '0') || nd > 19 ||
		    (nd == 19 && memcmp(d, s != d ? "9223372036854775808" : "9223372036854775807", 19) > 0))
			return NULL;
		return p;
	}
	{
		struct cbuf b = { NULL, 0, 0, 0 };
		char tmp[64];
		size_t n = (size_t)(p - s);
		int same;

		if (n >= sizeof(tmp))
			return NULL;
		memcpy(tmp, s, n);
		tmp[n] = '\0';
		cb_real(&b, strtod(tmp, NULL));
		same = !b.err && b.len == n && memcmp(b.p, s, n) == 0;
		free(b.p);
		return same ? p : NULL;
	}
}

struct clevel {
	uint32_t node;  /* tape index, UINT32_MAX when not recorded */
	uint32_t pk, pkl; /* the previous key's bytes (objects) */
	char close;     /* '}' or ']' */
	char first;
};

static int tape_add(struct opt_ctape *t)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		struct opt_cnode *nv = realloc(t->v, cap * sizeof(*nv));
		if (!nv)
			return opt_error_set(OPT_EIO, "out of memory");
		t->v = nv;
		t->cap = cap;
	}
	return 0;
}

int opt_canon_scan(const char *text, size_t len, int maxdepth, struct opt_ctape *tape)
{
	struct clevel st[CANON_DEPTH];
	const char *p = text, *end = text + len, *q;
	uint32_t key = 0, keyl = 0, node;
	int depth = 0, esc;

	tape->n = 0;
	if (len == 0 || len >= UINT32_MAX)
		return 0;
value:
	if (p >= end)
		return 0;
	node = UINT32_MAX;
	if (depth <= maxdepth) {
		struct opt_cnode *c;
		if (tape_add(tape) < 0)
			return OPT_EIO;
		node = (uint32_t)tape->n++;
		c = &tape->v[node];
		c->k = key;
		c->kl = keyl;
		c->v = (uint32_t)(p - text);
		c->t = *p == '-' || (*p >= '0' && *p <= '9') ? '0' : *p;
	}
	switch (*p) {
	case '{':
	case '[':
		if (depth == CANON_DEPTH)
			return 0;
		st[depth].node = node;
		st[depth].close = *p == '{' ? '}' : ']';
		st[depth].first = 1;
		st[depth].pk = st[depth].pkl = 0;
		depth++;
		p++;
		if (p < end && *p == st[depth - 1].close)
			goto close;
		if (st[depth - 1].close == '}')
			goto member;
		key = keyl = 0;
		goto value;
	case '"':
		esc = 0;
		q = canon_string(p, end, &esc);
		break;
	case 't':
		q = end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
		break;
	case 'f':
		q = end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
		break;
	case 'n':
		q = end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
		break;
	default:
		q = canon_number(p, end);
	}
	if (!q)
		return 0;
	if (node != UINT32_MAX) {
		tape->v[node].vl = (uint32_t)(q - p);
		tape->v[node].next = (uint32_t)tape->n;
	}
	p = q;
after:
	if (depth == 0)
		return p == end;
	if (p >= end)
		return 0;
	if (*p == ',') {
		p++;
		if (st[depth - 1].close == '}')
			goto member;
		key = keyl = 0;
		goto value;
	}
	if (*p != st[depth - 1].close)
		return 0;
close:
	p++;
	depth--;
	if ((node = st[depth].node) != UINT32_MAX) {
		tape->v[node].vl = (uint32_t)(p - text) - tape->v[node].v;
		tape->v[node].next = (uint32_t)tape->n;
	}
	goto after;
member:
	{
		struct clevel *l = &st[depth - 1];
		uint32_t kc, kcl;
		if (p >= end || *p != '"')
			return 0;
		esc = 0;
		q = canon_string(p, end, &esc);
		if (!q || esc)
			return 0;  /* (a key with an escape: compare it parsed) */
		kc = (uint32_t)(p + 1 - text);
		kcl = (uint32_t)(q - p - 2);
		if (!l->first) {
			/* (keys mostly differ in their first byte) */
			const unsigned char *a = (const unsigned char *)text + l->pk, *b = (const unsigned char *)text + kc;
			size_t m = l->pkl < kcl ? l->pkl : kcl;
			int c = m && a[0] != b[0] ? (a[0] < b[0] ? -1 : 1) : memcmp(a, b, m);
			if (c > 0 || (c == 0 && l->pkl >= kcl))
				return 0;  /* out of order, or twice */
		}
		l->first = 0;
		l->pk = kc;
		l->pkl = kcl;
		key = (uint32_t)(p - text);
		keyl = (uint32_t)(q - p);
		p = q;
		if (p >= end || *p != ':')
			return 0;
		p++;
		goto value;
	}
}

void opt_ctape_free(struct opt_ctape *tape)
{
	free(tape->v);
	tape->v = NULL;
	tape->n = tape->cap = 0;
}

int opt_canon_check_parsed(const char *text, size_t len)
{
	json_t *v = json_loadb(text, len, JSON_DECODE_ANY, NULL);
	char *c = NULL;
	size_t cl = 0;
	int rc;

	if (!v)
		return 0;
	rc = opt_json_canon(&c, &cl, v);
	json_decref(v);
	if (rc < 0)
		return rc == OPT_EIO ? rc : 0;
	rc = cl == len && memcmp(c, text, len) == 0;
	free(c);
	return rc;
}

size_t opt_ctape_child(const struct opt_ctape *tape, size_t at, size_t i)
{
	size_t c = at + 1, stop = tape->v[at].next;

	if (tape->v[at].t != '{' && tape->v[at].t != '[')
		return 0;
	for (; c < stop; c = tape->v[c].next)
		if (i-- == 0)
			return c;
	return 0;
}

size_t opt_ctape_member(const struct opt_ctape *tape, const char *text, size_t at, const char *key)
{
	size_t c = at + 1, stop = tape->v[at].next, kl = strlen(key);

	if (tape->v[at].t != '{')
		return 0;
	for (; c < stop; c = tape->v[c].next)
		if (tape->v[c].kl == kl + 2 && memcmp(text + tape->v[c].k + 1, key, kl) == 0)
			return c;
	return 0;
}

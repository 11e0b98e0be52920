#include "json.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif
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
	int limit;  /* the deepest level a value may be at */
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

/* depth: v's level in the stored document, counted as the parser counts
 * (the document's top value is level 1). */
static void cb_value(struct cbuf *b, const json_t *v, int depth)
{
	char tmp[32];

	if (b->err)
		return;
	if (depth > b->limit) {
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

int opt_json_too_deep(const char *what)
{
	return opt_error_set(OPT_EINVAL, "nested too deeply: %s would nest more than %d levels, the most a stored document may",
			     what ? what : "the value", OPT_JSON_MAX_DEPTH);
}

int opt_json_canon(char **out, size_t *len, const json_t *v)
{
	return opt_json_canon_at(out, len, v, 0, NULL);
}

int opt_json_canon_at(char **out, size_t *len, const json_t *v, int above, const char *what)
{
	struct cbuf b = { NULL, 0, 0, 0, OPT_JSON_MAX_DEPTH };

	*out = NULL;
	if (!v)
		return opt_error_set(OPT_EINVAL, "no JSON value");
	cb_value(&b, v, above + 1);
	cb_put(&b, "", 1);
	if (b.err) {
		free(b.p);
		if (b.err == 2)
			return opt_error_set(OPT_EINVAL, "NaN and infinity are not JSON numbers");
		if (b.err == 3)
			return opt_json_too_deep(what);
		return opt_error_set(OPT_EIO, "out of memory");
	}
	*out = b.p;
	if (len)
		*len = b.len - 1;
	return 0;
}

int opt_json_text_depth(const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	int depth = 0, max = 0;

	while (p < end) {
		switch (*p) {
		case '"':
			/* a string: a value (or a name, as deep as its value) */
			if (depth + 1 > max)
				max = depth + 1;
			for (p++;; p++) {
#ifdef __SSE2__
				while (end - p >= 16) {
					__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
					int m = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
									       _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
					if (m) {
						p += __builtin_ctz((unsigned)m);
						break;
					}
					p += 16;
				}
#endif
				while (p < end && *p != '"' && *p != '\\')
					p++;
				if (p >= end)
					return max;
				if (*p == '\\') {
					p++;
					continue;
				}
				break;
			}
			p++;
			break;
		case '[':
		case '{':
			if (++depth > max)
				max = depth;
			p++;
			break;
		case ']':
		case '}':
			depth--;
			p++;
			break;
		case ',':
		case ':':
		case ' ':
		case '\t':
		case '\n':
		case '\r':
			p++;
			break;
		default:
			/* a number, true, false or null */
			if (depth + 1 > max)
				max = depth + 1;
			for (p++; p < end && *p && !strchr(",:]} \t\n\r", *p); p++)
				;
			break;
		}
	}
	return max;
}

int opt_json_text_fits(const char *text, size_t len, int above)
{
	const char *p = text, *end = text + len;
	size_t opens = 0;

	/* a cheap bound first: the text nests at most one level more than it
	 * has '[' and '{' bytes (strings included) */
#ifdef __SSE2__
	while (end - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		opens += (size_t)__builtin_popcount((unsigned)_mm_movemask_epi8(
			_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('[')), _mm_cmpeq_epi8(v, _mm_set1_epi8('{')))));
		p += 16;
	}
#endif
	for (; p < end; p++)
		opens += *p == '[' || *p == '{';
	if ((size_t)above + opens + 1 <= OPT_JSON_MAX_DEPTH)
		return 1;
	return above + opt_json_text_depth(text, len) <= OPT_JSON_MAX_DEPTH;
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

/* A real that is 0 (or -0), anywhere in v. */
static int has_zero_real(const json_t *v)
{
	const char *k;
	json_t *x;
	size_t i;

	switch (json_typeof(v)) {
	case JSON_REAL:
		return json_real_value(v) == 0.0;
	case JSON_ARRAY:
		for (i = 0; i < json_array_size(v); i++)
			if (has_zero_real(json_array_get(v, i)))
				return 1;
		return 0;
	case JSON_OBJECT:
		json_object_foreach((json_t *)v, k, x)
			if (has_zero_real(x))
				return 1;
		return 0;
	default:
		return 0;
	}
}

/* The first number in JSON text[0..len) (valid JSON) that has a digit
 * other than 0 before its exponent but reads as 0: *tok and *n, 1; 0 when
 * there is none. */
static int underflow_token(const char *text, size_t len, const char **tok, size_t *n)
{
	const char *p = text, *end = text + len;

	while (p < end) {
		if (*p == '"') {
			for (p++; p < end && *p != '"'; p++)
				if (*p == '\\')
					p++;
			p++;
		} else if (*p == '-' || (*p >= '0' && *p <= '9')) {
			const char *q = p;
			int nonzero = 0, real = 0, mant = 1;
			while (q < end && (strchr("0123456789+-.eE", *q))) {
				if (*q == 'e' || *q == 'E')
					mant = 0, real = 1;
				else if (*q == '.')
					real = 1;
				else if (mant && *q >= '1' && *q <= '9')
					nonzero = 1;
				q++;
			}
			if (real && nonzero) {
				char small[64], *t = (size_t)(q - p) < sizeof(small) ? small : malloc((size_t)(q - p) + 1);
				double d;
				if (!t)
					return 0;
				memcpy(t, p, (size_t)(q - p));
				t[q - p] = '\0';
				d = strtod(t, NULL);
				if (t != small)
					free(t);
				if (d == 0.0) {
					*tok = p;
					*n = (size_t)(q - p);
					return 1;
				}
			}
			p = q;
		} else {
			p++;
		}
	}
	return 0;
}

int opt_json_underflow(const json_t *v, const char *text, size_t len, char *msg, size_t msgsz)
{
	const char *tok;
	size_t n;
	char t[44];

	if (!has_zero_real(v) || !underflow_token(text, len, &tok, &n))
		return 0;
	/* as jansson words an overflow: "real number overflow near '1e400'" */
	snprintf(t, sizeof(t), "%.*s", (int)(n < 40 ? n : 40), tok);
	snprintf(msg, msgsz, "real number underflow near '%s%s'", t, n > 40 ? "..." : "");
	return 1;
}

int opt_json_parse(json_t **out, const char *buf, size_t len)
{
	json_error_t err;
	json_t *v = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);

	*out = NULL;
	if (!v)
		return opt_error_set(OPT_EINVAL, "invalid JSON: %s", opt_esc(err.text));
	if (opt_json_underflow(v, buf, len, err.text, sizeof(err.text))) {
		json_decref(v);
		return opt_error_set(OPT_EINVAL, "invalid JSON: %s", err.text);
	}
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

/* Bytes a string holds as they are: not '"', '\\' or a control character.
 * (A constant table: a full verification reads text in two threads, and a
 * table filled on first use would be a data race between them.) */
static const unsigned char plain[256] = {
	[0x20] = 1, [0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0xff] = 1,
};

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
				/* plain bytes first: the bulk of a string */
#ifdef __SSE2__
				while (end - p >= 16) {
					__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
					__m128i stop = _mm_or_si128(
						_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
							     _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
						_mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v));
					int m = _mm_movemask_epi8(stop);
					if (m) {
						p += __builtin_ctz((unsigned)m);
						break;
					}
					p += 16;
				}
#endif
				while (p < end && plain[(unsigned char)*p])
					p++;
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

int opt_jsonl_next_text(struct opt_jsonl *r, const char **text, size_t *len)
{
	size_t i, k;
	int depth = 0, in_str = 0, esc = 0, rc;

	*text = NULL;
	*len = 0;
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
	*text = r->buf + r->start;
	*len = i - r->start;
	for (k = 0; k < *len; k++)
		if ((*text)[k] == '\n')
			r->line++;
	r->start = i;
	return 1;
}

int opt_jsonl_parse_text(struct opt_jsonl *r, const char *text, size_t len, json_t **out)
{
	json_error_t err;
	json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);

	*out = NULL;
	if (!v) {
		/* skip the rest of the offending line so a caller may go on */
		while (r->start < r->end && r->buf[r->start] != '\n')
			r->start++;
		return opt_error_set(OPT_EINVAL, "line %ld: invalid JSON: %s", r->value_line, opt_esc(err.text));
	}
	if (opt_json_underflow(v, text, len, err.text, sizeof(err.text))) {
		json_decref(v);
		return opt_error_set(OPT_EINVAL, "line %ld: invalid JSON: %s", r->value_line, err.text);
	}
	*out = v;
	return 0;
}

int opt_jsonl_next(struct opt_jsonl *r, json_t **out)
{
	const char *text;
	size_t len;
	int rc = opt_jsonl_next_text(r, &text, &len);

	*out = NULL;
	if (rc <= 0)
		return rc;
	rc = opt_jsonl_parse_text(r, text, len, out);
	return rc < 0 ? rc : 1;
}

/* ---- canonical text straight from input text ----
 *
 * A fast path for the common case: it handles objects, arrays, strings
 * (valid UTF-8, the short escapes), integers of up to 18 digits, true,
 * false and null, and gives up (0) on anything else -- \u escapes, reals,
 * bigger integers, -0, duplicate or escaped object keys, deep nesting,
 * malformed text -- so that the caller falls back to jansson and
 * opt_json_canon.  What it does produce is what that path produces. */

#define FAST_MAX_DEPTH 64

static int tx_reserve(struct opt_text *t, size_t n)
{
	size_t cap;
	char *np;

	if (t->len + n <= t->cap)
		return 0;
	cap = t->cap ? t->cap : 4096;
	while (cap < t->len + n)
		cap *= 2;
	np = realloc(t->p, cap);
	if (!np)
		return -1;
	t->p = np;
	t->cap = cap;
	return 0;
}

int opt_text_add(struct opt_text *t, const char *s, size_t n)
{
	if (tx_reserve(t, n + 1) < 0)
		return opt_error_set(OPT_EIO, "out of memory");
	memcpy(t->p + t->len, s, n);
	t->len += n;
	t->p[t->len] = '\0';
	return 0;
}

void opt_text_free(struct opt_text *t)
{
	free(t->p);
	memset(t, 0, sizeof(*t));
}

/* The length of the valid UTF-8 sequence at s (first byte >= 0x80), or 0:
 * the rules jansson applies (no overlong forms, no surrogates, at most
 * U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, const unsigned char *end)
{
	unsigned c = s[0], v, i;
	size_t n;

	if (c < 0xC2 || c > 0xF4)
		return 0;
	n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	if ((size_t)(end - s) < n)
		return 0;
	v = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3F);
	}
	if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF)
		return 0;
	return n;
}

struct fast {
	const char *end;
	struct opt_text *out;
	int oom;
};

static const char *fast_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

/* A string at p (at the '"'): write its canonical form; *plain is 1 when
 * it had no escapes.  The end of it, or NULL. */
static const char *fast_str(struct fast *f, const char *p, int *plain)
{
	const unsigned char *s = (const unsigned char *)p + 1, *end = (const unsigned char *)f->end, *run;
	struct opt_text *o = f->out;

	*plain = 1;
	if (tx_reserve(o, 2) < 0)
		goto oom;
	o->p[o->len++] = '"';
	run = s;
	for (;;) {
		unsigned c;
		/* the run of bytes that need nothing */
		while (s < end && *s >= 0x20 && *s != '"' && *s != '\\' && *s < 0x80)
			s++;
		if (s >= end)
			return NULL;
		c = *s;
		if (c >= 0x80) {
			size_t n = utf8_seq(s, end);
			if (!n)
				return NULL;
			s += n;
			continue;
		}
		if (tx_reserve(o, (size_t)(s - run) + 3) < 0)
			goto oom;
		memcpy(o->p + o->len, run, (size_t)(s - run));
		o->len += (size_t)(s - run);
		if (c == '"') {
			o->p[o->len++] = '"';
			return (const char *)s + 1;
		}
		if (c < 0x20)
			return NULL;  /* a raw control character: jansson says why */
		/* a backslash */
		*plain = 0;
		if (s + 1 >= end)
			return NULL;
		switch (s[1]) {
		case '"': o->p[o->len++] = '\\'; o->p[o->len++] = '"'; break;
		case '\\': o->p[o->len++] = '\\'; o->p[o->len++] = '\\'; break;
		case '/': o->p[o->len++] = '/'; break;
		case 'b': o->p[o->len++] = '\\'; o->p[o->len++] = 'b'; break;
		case 'f': o->p[o->len++] = '\\'; o->p[o->len++] = 'f'; break;
		case 'n': o->p[o->len++] = '\\'; o->p[o->len++] = 'n'; break;
		case 'r': o->p[o->len++] = '\\'; o->p[o->len++] = 'r'; break;
		case 't': o->p[o->len++] = '\\'; o->p[o->len++] = 't'; break;
		default:
			return NULL;  /* \u, or not an escape */
		}
		s += 2;
		run = s;
	}
oom:
	f->oom = 1;
	return NULL;
}

struct member {
	const char *k;   /* the name's bytes (no escapes) */
	size_t kl;
	size_t off, len; /* its canonical value in the output */
};

static int member_cmp(const void *a, const void *b)
{
	const struct member *x = a, *y = b;
	int c = memcmp(x->k, y->k, x->kl < y->kl ? x->kl : y->kl);

	if (c)
		return c;
	return (x->kl > y->kl) - (x->kl < y->kl);
}

static const char *fast_value(struct fast *f, const char *p, int depth);

static const char *fast_object(struct fast *f, const char *p, int depth)
{
	struct member stack[16], *m = stack, *nm;
	size_t n = 0, cap = 16, start = f->out->len, i, total;
	char *tmp = NULL;
	const char *q, *ret = NULL;
	int plain;

	p = fast_ws(p + 1, f->end);
	if (p < f->end && *p == '}') {
		if (opt_text_add(f->out, "{}", 2) < 0)
			f->oom = 1;
		return f->oom ? NULL : p + 1;
	}
	for (;;) {
		if (p >= f->end || *p != '"')
			goto done;
		if (n == cap) {
			nm = malloc(cap * 2 * sizeof(*nm));
			if (!nm) {
				f->oom = 1;
				goto done;
			}
			memcpy(nm, m, n * sizeof(*m));
			if (m != stack)
				free(m);
			m = nm;
			cap *= 2;
		}
		/* the name: written, then dropped (it is written again in order) */
		m[n].off = f->out->len;
		q = fast_str(f, p, &plain);
		if (!q || !plain)
			goto done;
		m[n].k = p + 1;
		m[n].kl = (size_t)(q - p) - 2;
		f->out->len = m[n].off;
		p = fast_ws(q, f->end);
		if (p >= f->end || *p != ':')
			goto done;
		p = fast_value(f, p + 1, depth + 1);
		if (!p)
			goto done;
		m[n].len = f->out->len - m[n].off;
		n++;
		p = fast_ws(p, f->end);
		if (p < f->end && *p == ',') {
			p = fast_ws(p + 1, f->end);
			continue;
		}
		if (p < f->end && *p == '}')
			break;
		goto done;
	}
	if (n > 1)
		qsort(m, n, sizeof(*m), member_cmp);
	for (i = 1; i < n; i++)
		if (member_cmp(&m[i - 1], &m[i]) == 0)
			goto done;  /* a duplicate name: jansson rejects it */
	/* the values in name order, each after its name */
	total = f->out->len - start;
	tmp = malloc(total ? total : 1);
	if (!tmp) {
		f->oom = 1;
		goto done;
	}
	memcpy(tmp, f->out->p + start, total);
	f->out->len = start;
	if (tx_reserve(f->out, 1) < 0)
		goto oom;
	f->out->p[f->out->len++] = '{';
	for (i = 0; i < n; i++) {
		if (tx_reserve(f->out, m[i].kl + m[i].len + 4) < 0)
			goto oom;
		if (i)
			f->out->p[f->out->len++] = ',';
		f->out->p[f->out->len++] = '"';
		memcpy(f->out->p + f->out->len, m[i].k, m[i].kl);
		f->out->len += m[i].kl;
		f->out->p[f->out->len++] = '"';
		f->out->p[f->out->len++] = ':';
		memcpy(f->out->p + f->out->len, tmp + (m[i].off - start), m[i].len);
		f->out->len += m[i].len;
	}
	if (tx_reserve(f->out, 1) < 0)
		goto oom;
	f->out->p[f->out->len++] = '}';
	ret = p + 1;
	goto done;
oom:
	f->oom = 1;
done:
	free(tmp);
	if (m != stack)
		free(m);
	return ret;
}

static const char *fast_value(struct fast *f, const char *p, int depth)
{
	const char *end = f->end, *q;
	int plain;

	if (depth > FAST_MAX_DEPTH)
		return NULL;
	p = fast_ws(p, end);
	if (p >= end)
		return NULL;
	switch (*p) {
	case '{':
		return fast_object(f, p, depth);
	case '[':
		if (opt_text_add(f->out, "[", 1) < 0)
			goto oom;
		p = fast_ws(p + 1, end);
		if (p < end && *p == ']')
			goto close;
		for (;;) {
			if (!(p = fast_value(f, p, depth + 1)))
				return NULL;
			p = fast_ws(p, end);
			if (p < end && *p == ']')
				goto close;
			if (p >= end || *p != ',' || opt_text_add(f->out, ",", 1) < 0)
				return NULL;
			p++;
		}
	close:
		if (opt_text_add(f->out, "]", 1) < 0)
			goto oom;
		return p + 1;
	case '"':
		return fast_str(f, p, &plain);
	case 't':
	case 'f':
	case 'n': {
		const char *lit = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
		size_t ll = strlen(lit);
		if ((size_t)(end - p) < ll || memcmp(p, lit, ll) != 0)
			return NULL;
		q = p + ll;
		if (q < end && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9')))
			return NULL;
		if (opt_text_add(f->out, lit, ll) < 0)
			goto oom;
		return q;
	}
	default:
		if (*p == '-' || (*p >= '0' && *p <= '9')) {
			const char *d = *p == '-' ? p + 1 : p;
			q = d;
			while (q < end && *q >= '0' && *q <= '9')
				q++;
			/* integers only: no leading zero, at most 18 digits, not -0 */
			if (q == d || q - d > 18 || (*d == '0' && (q - d > 1 || d != p)))
				return NULL;
			if (q < end && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '.' ||
					*q == '+' || *q == '-'))
				return NULL;
			if (opt_text_add(f->out, p, (size_t)(q - p)) < 0)
				goto oom;
			return q;
		}
		return NULL;
	}
oom:
	f->oom = 1;
	return NULL;
}

int opt_json_canon_text(struct opt_text *out, const char *in, size_t len)
{
	struct fast f = { in + len, out, 0 };
	size_t start = out->len;
	const char *p = fast_value(&f, in, 0);

	if (p)
		p = fast_ws(p, in + len);
	if (!p || p != in + len || f.oom) {
		out->len = start;
		if (out->p)
			out->p[start] = '\0';
		return f.oom ? opt_error_set(OPT_EIO, "out of memory") : 0;
	}
	if (tx_reserve(out, 1) < 0) {
		out->len = start;
		return opt_error_set(OPT_EIO, "out of memory");
	}
	out->p[out->len] = '\0';
	return 1;
}

/* 1 if canonical text (from the fast path: no reals) is a valid key:
 * a number, a string, or arrays of those. */
static int fast_key_ok(const char *s, size_t n)
{
	size_t i;
	int in_str = 0;

	for (i = 0; i < n; i++) {
		char c = s[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"')
			in_str = 1;
		else if (c == '{' || c == 't' || c == 'f' || c == 'n')
			return 0;
	}
	return 1;
}

int opt_json_record_text(struct opt_text *out, const char *in, size_t len, size_t max_value,
			 struct opt_text_rec *rec)
{
	size_t start = out->len, tmp;
	int rc;

	rc = opt_json_canon_text(out, in, len);
	if (rc <= 0)
		return rc;
	/* the canonical record: {"key":K,...,"value":V} in name order, the
	 * names plain; find the two members at top level */
	{
		const char *s = out->p + start, *e = out->p + out->len, *p = s + 1, *q;
		rec->klen = rec->vlen = 0;
		rec->koff = rec->voff = (size_t)-1;
		if (*s != '{')
			goto no;
		while (p < e && *p == '"') {
			const char *name = p + 1;
			size_t nl;
			q = memchr(name, '"', (size_t)(e - name));
			if (!q)
				goto no;
			nl = (size_t)(q - name);
			p = q + 2;  /* past '":' */
			q = opt_raw_skip(p, e);
			if (!q)
				goto no;
			if (nl == 3 && memcmp(name, "key", 3) == 0) {
				rec->koff = (size_t)(p - out->p);
				rec->klen = (size_t)(q - p);
			} else if (nl == 5 && memcmp(name, "value", 5) == 0) {
				rec->voff = (size_t)(p - out->p);
				rec->vlen = (size_t)(q - p);
			} else {
				goto no;  /* another member: the caller says so */
			}
			p = q + 1;  /* past ',' or '}' */
		}
		if (rec->koff == (size_t)-1 || rec->voff == (size_t)-1 || rec->vlen > max_value ||
		    !fast_key_ok(out->p + rec->koff, rec->klen))
			goto no;
	}
	/* keep only "K" then "V" (the key first, so the value follows it) */
	tmp = out->len;
	if (tx_reserve(out, rec->klen + rec->vlen) < 0) {
		out->len = start;
		return opt_error_set(OPT_EIO, "out of memory");
	}
	memcpy(out->p + tmp, out->p + rec->koff, rec->klen);
	memcpy(out->p + tmp + rec->klen, out->p + rec->voff, rec->vlen);
	memmove(out->p + start, out->p + tmp, rec->klen + rec->vlen);
	rec->koff = start;
	rec->voff = start + rec->klen;
	out->len = start + rec->klen + rec->vlen;
	out->p[out->len] = '\0';
	return 1;
no:
	out->len = start;
	out->p[start] = '\0';
	return 0;
}

/* ---- canonical text checked in one pass (opt_canon_scan) ---- */

#define CANON_DEPTH 512

/* Bytes a canonical string holds as they are (bytes >= 0x80 are checked
 * as UTF-8 apart). */
static const unsigned char canon_plain[256] = {
	[0x20] = 1, [0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7f] = 1,
};

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
		struct cbuf b = { NULL, 0, 0, 0, OPT_JSON_MAX_DEPTH };
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

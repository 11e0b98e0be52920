#include "json.h"
#include "error.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int opt_json_canon(char **out, size_t *len, const json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY |
			     JSON_REAL_PRECISION(17));

	*out = NULL;
	if (!s)
		return opt_error_set(OPT_EIO, "cannot serialize JSON value");
	*out = s;
	if (len)
		*len = strlen(s);
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
		double x = json_number_value(a), y = json_number_value(b);
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
	n = fread(r->buf + r->end, 1, r->cap - r->end, r->f);
	if (n == 0) {
		if (ferror(r->f))
			return opt_error_set(OPT_EIO, "cannot read input: %s", strerror(errno));
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

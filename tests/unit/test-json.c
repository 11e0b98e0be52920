/* The fast canonicalizer (opt_json_canon_text, opt_json_record_text)
 * against the reference path, jansson + opt_json_canon: whatever the fast
 * path accepts, jansson accepts too and canonicalizes to the same bytes;
 * whatever it declines is left unchanged in the output. */
#include "harness.h"
#include "collection.h"
#include "error.h"
#include "json.h"
#include "util.h"

static unsigned long long rng = 88172645463325252ULL;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

static long fast_ok, fast_declined;

/* The reference: jansson (as the input reader parses) + opt_json_canon;
 * NULL when jansson rejects the text. */
static char *reference(const char *in, size_t len, size_t *out_len)
{
	json_error_t err;
	json_t *v = json_loadb(in, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
	char *s = NULL;

	if (!v)
		return NULL;
	if (opt_json_canon(&s, out_len, v) < 0)
		s = NULL;
	json_decref(v);
	return s;
}

static void compare(const char *in, size_t len)
{
	struct opt_text t = { NULL, 0, 0 };
	size_t rl = 0;
	char *ref;
	int rc;

	CHECK(opt_text_add(&t, "prefix", 6) == 0);
	rc = opt_json_canon_text(&t, in, len);
	CHECK(rc == 0 || rc == 1);
	if (rc == 1) {
		fast_ok++;
		ref = reference(in, len, &rl);
		if (!ref || rl != t.len - 6 || memcmp(ref, t.p + 6, rl) != 0) {
			printf("# input:     %.*s\n# fast:      %s\n# reference: %s\n", (int)len, in, t.p + 6,
			       ref ? ref : "(rejected)");
			CHECK(0);
		}
		free(ref);
	} else {
		fast_declined++;
		CHECK(t.len == 6 && strcmp(t.p, "prefix") == 0);
	}
	opt_text_free(&t);
}

static void compare_s(const char *s)
{
	compare(s, strlen(s));
}

TEST(canon_text_awkward)
{
	static const char *const cases[] = {
		"0", "-0", "1", "-1", "007", "12345678901234567", "123456789012345678",
		"1234567890123456789", "-999999999999999999", "9223372036854775807",
		"9223372036854775808", "1.0", "1e5", "1E5", "-", "--1", "+1", ".5", "1.", "0x10",
		"true", "false", "null", "tru", "nul", "truex", "true false", "nan", "Infinity",
		"\"\"", "\"a\"", "\"\\u0041\"", "\"\\u0000\"", "\"\\ud83d\\ude00\"", "\"\\/\"",
		"\"\\b\\f\\n\\r\\t\\\"\\\\\"", "\"\\x\"", "\"\\\"", "\"abc", "\"a\tb\"", "\"a\nb\"",
		"\"\x7f\"", "\"\xc3\xa9\"", "\"\xc3\"", "\"\xc0\x80\"", "\"\xe0\x80\x80\"",
		"\"\xed\xa0\x80\"", "\"\xf4\x8f\xbf\xbf\"", "\"\xf4\x90\x80\x80\"", "\"\xff\"",
		"\"\xe2\x82\xac\"", "\"\xf0\x9f\x98\x80\"", "\"\xf0\x9f\x98\"",
		"{}", "[]", "{ }", "[ ]", " [ 1 , 2 ] ", "\n{\"a\":1}\r\n\t", "{\"b\":1,\"a\":2}",
		"{\"a\":1,\"a\":2}", "{\"a\":1,\"b\":2,\"a\":3}", "{\"\\u0061\":1}", "{\"a\\n\":1}",
		"{\"\":1}", "{\"a\":1,}", "[1,]", "[,1]", "{,}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}",
		"{1:1}", "[1 2]", "[1] [2]", "[1]]", "[[1]", "{\"a\":[{\"c\":3,\"b\":[true,null]}]}",
		"{\"ab\":1,\"a\":2,\"b\":3,\"aa\":4,\"\xc3\xa9\":5,\"z\":6}", "[1.5]", "[1e2]",
		"{\"x\":-0}", "{\"key\":\"k\",\"value\":{\"z\":1,\"y\":[1,2,{\"b\":\"\\t\",\"a\":null}]}}",
		"", " ", "\"a\" x", "[\"\\u00e9\"]", "{\"a\":\"\\u001f\"}",
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++)
		compare_s(cases[i]);
	/* a NUL byte inside and outside a string */
	compare("\"a\0b\"", 5);
	compare("[1]\0", 4);
	/* nesting at and past the fast path's depth */
	{
		char deep[400];
		int d;
		for (d = 60; d < 70; d++) {
			memset(deep, '[', (size_t)d);
			memset(deep + d, ']', (size_t)d);
			compare(deep, 2 * (size_t)d);
		}
	}
	CHECK(fast_ok > 20 && fast_declined > 20);
}

/* Random JSON text with random spacing, names in any order, escapes,
 * UTF-8, numbers of every kind, duplicates now and then. */
static void gen(struct opt_text *t, int depth);

static void gen_ws(struct opt_text *t)
{
	static const char *const ws[] = { "", "", "", " ", "\n", "\t", "\r\n  " };
	const char *w = ws[rnd(7)];
	opt_text_add(t, w, strlen(w));
}

static void gen_str(struct opt_text *t, int name)
{
	static const char *const parts[] = {
		"a", "b", "key", "value", "z", "A", " ", "\\n", "\\\"", "\\\\", "\\/", "\\t", "\\b",
		"\\f", "\\r", "\\u0041", "\\u00e9", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x7f",
		"~", "\\ud83d\\ude00", "\xc3", "\t", "\\x",
	};
	unsigned n = rnd(name ? 2 : 5) + (name ? 1 : 0), i;

	opt_text_add(t, "\"", 1);
	for (i = 0; i < n; i++) {
		/* mostly valid: the last three parts are not */
		const char *p = parts[rnd(rnd(20) ? 23 : 26)];
		opt_text_add(t, p, strlen(p));
	}
	opt_text_add(t, "\"", 1);
}

static void gen_num(struct opt_text *t)
{
	static const char *const nums[] = {
		"0", "1", "-1", "42", "-0", "1.5", "-2.25", "1e3", "1E-2", "0.1", "100000000000000000",
		"999999999999999999", "-999999999999999999", "1000000000000000000", "12345678901234567890",
		"9007199254740993", "01", "1.", "-", "2.0",
	};
	const char *n = nums[rnd(rnd(10) ? 16 : 20)];
	opt_text_add(t, n, strlen(n));
}

static void gen(struct opt_text *t, int depth)
{
	unsigned k = rnd(depth > 4 ? 4 : 7), i, n;

	gen_ws(t);
	switch (k) {
	case 0: gen_num(t); break;
	case 1: gen_str(t, 0); break;
	case 2: {
		/* (the length of the literal chosen: "false" is 5 bytes) */
		const char *lit = rnd(2) ? "true" : rnd(2) ? "false" : "null";
		opt_text_add(t, lit, strlen(lit));
		break;
	}
	case 3: gen_num(t); break;
	case 4:
	case 5:
		n = rnd(5);
		opt_text_add(t, "{", 1);
		for (i = 0; i < n; i++) {
			if (i)
				opt_text_add(t, ",", 1);
			gen_ws(t);
			gen_str(t, 1);
			gen_ws(t);
			opt_text_add(t, ":", 1);
			gen(t, depth + 1);
		}
		gen_ws(t);
		opt_text_add(t, "}", 1);
		break;
	default:
		n = rnd(5);
		opt_text_add(t, "[", 1);
		for (i = 0; i < n; i++) {
			if (i)
				opt_text_add(t, ",", 1);
			gen(t, depth + 1);
		}
		gen_ws(t);
		opt_text_add(t, "]", 1);
	}
	gen_ws(t);
}

TEST(canon_text_random)
{
	long i;

	fast_ok = fast_declined = 0;
	for (i = 0; i < 60000; i++) {
		struct opt_text t = { NULL, 0, 0 };
		gen(&t, 0);
		compare(t.p, t.len);
		/* and a mutation of it: a byte dropped, doubled or changed */
		if (t.len > 1) {
			size_t at = rnd((unsigned)t.len);
			char *m = malloc(t.len + 1);
			memcpy(m, t.p, t.len);
			switch (rnd(3)) {
			case 0:
				memmove(m + at, m + at + 1, t.len - at - 1);
				compare(m, t.len - 1);
				break;
			case 1:
				m[at] = "{}[],:\"\\ 0a-.e\x80"[rnd(16)];
				compare(m, t.len);
				break;
			default:
				free(m);
				m = malloc(t.len + 1);
				memcpy(m, t.p, at);
				m[at] = t.p[at];
				memcpy(m + at + 1, t.p + at, t.len - at);
				compare(m, t.len + 1);
			}
			free(m);
		}
		opt_text_free(&t);
	}
	printf("# fast path: %ld handled, %ld declined\n", fast_ok, fast_declined);
	CHECK(fast_ok > 20000 && fast_declined > 20000);
}

/* The record path: what it accepts is a record the reference accepts, with
 * the same key and value text. */
static void compare_rec(const char *in, size_t len)
{
	struct opt_text t = { NULL, 0, 0 };
	struct opt_text_rec r;
	json_error_t err;
	json_t *v;
	int rc;

	rc = opt_json_record_text(&t, in, len, 64, &r);
	CHECK(rc == 0 || rc == 1);
	if (rc != 1) {
		CHECK(t.len == 0);
		opt_text_free(&t);
		return;
	}
	fast_ok++;
	v = json_loadb(in, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
	CHECK(v && json_is_object(v));
	if (v && json_is_object(v)) {
		json_t *k = json_object_get(v, "key"), *val = json_object_get(v, "value");
		char *ks = NULL, *vs = NULL;
		size_t kl = 0, vl = 0;
		CHECK(k && val && opt_key_valid(k));
		CHECK(json_object_size(v) == 2);  /* no other member */
		if (k && val) {
			CHECK(opt_json_canon(&ks, &kl, k) == 0 && opt_json_canon(&vs, &vl, val) == 0);
			CHECK(kl == r.klen && memcmp(ks, t.p + r.koff, kl) == 0);
			CHECK(vl == r.vlen && memcmp(vs, t.p + r.voff, vl) == 0 && vl <= 64);
			CHECK(r.koff == 0 && r.voff == r.klen && t.len == kl + vl);
		}
		free(ks);
		free(vs);
	}
	json_decref(v);
	opt_text_free(&t);
}

TEST(record_text)
{
	static const char *const cases[] = {
		"{\"key\":\"a\",\"value\":1}", "{\"value\":1,\"key\":\"a\"}", "{\"key\":\"a\"}", "{\"value\":1}",
		"{\"key\":{},\"value\":1}", "{\"key\":true,\"value\":1}", "{\"key\":null,\"value\":1}",
		"{\"key\":[1,\"a\",[2]],\"value\":1}", "{\"key\":[1,{}],\"value\":1}", "{\"key\":[true],\"value\":1}",
		"{\"key\":1,\"value\":\"01234567890123456789012345678901234567890123456789012345678901\"}",
		"{\"key\":1,\"value\":\"012345678901234567890123456789012345678901234567890123456789012\"}",
		"{\"key\":1,\"value\":2,\"other\":{\"x\":[1]}}", "{\"key\":1,\"value\":2,\"key\":3}",
		"[\"key\",\"value\"]", "{\"key\":\"t\",\"value\":\"true\"}", "{\"key\":\"{\",\"value\":[]}",
		"{\"key\":1.5,\"value\":1}", "{\"aaa\":\"key\",\"key\":\"k\",\"value\":{\"b\":1,\"a\":2},\"zz\":0}",
		"{\"key\":\"x\\\"y\",\"value\":null}",
	};
	size_t i;

	fast_ok = 0;
	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++)
		compare_rec(cases[i], strlen(cases[i]));
	printf("# record cases handled: %ld\n", fast_ok);
	CHECK(fast_ok >= 7);
	{
		/* a member besides "key" and "value": declined, for the caller
		 * to refuse */
		struct opt_text t = { NULL, 0, 0 };
		struct opt_text_rec r;
		CHECK(opt_json_record_text(&t, cases[12], strlen(cases[12]), 64, &r) == 0);
		CHECK(opt_json_record_text(&t, cases[18], strlen(cases[18]), 64, &r) == 0);
		CHECK(opt_json_record_text(&t, cases[0], strlen(cases[0]), 64, &r) == 1);
		opt_text_free(&t);
	}
	for (i = 0; i < 20000; i++) {
		struct opt_text t = { NULL, 0, 0 };
		opt_text_add(&t, "{", 1);
		if (rnd(4)) {
			opt_text_add(&t, "\"key\":", 6);
			gen(&t, 3);
			opt_text_add(&t, ",", 1);
		}
		if (rnd(3) == 0) {
			gen_str(&t, 1);
			opt_text_add(&t, ":1,", 3);
		}
		opt_text_add(&t, "\"value\":", 8);
		gen(&t, 2);
		opt_text_add(&t, "}", 1);
		compare_rec(t.p, t.len);
		opt_text_free(&t);
	}
	printf("# records handled: %ld\n", fast_ok);
	CHECK(fast_ok > 1000);
}

int main(void)
{
	opt_util_init();
	RUN(canon_text_awkward);
	RUN(canon_text_random);
	RUN(record_text);
	return DONE();
}

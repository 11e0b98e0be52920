#include "harness.h"
#include "error.h"
#include "json.h"
#include "util.h"

TEST(base32_roundtrip)
{
	uint8_t in[40], back[40];
	char enc[80];
	size_t n;

	for (n = 0; n <= sizeof(in); n++) {
		size_t i;
		for (i = 0; i < n; i++)
			in[i] = (uint8_t)(i * 37 + n);
		opt_base32_encode(enc, in, n);
		CHECK(strlen(enc) == opt_base32_len(n));
		CHECK(opt_base32_decode(back, sizeof(back), enc, strlen(enc)) == (long)n);
		CHECK(memcmp(in, back, n) == 0);
	}
	opt_base32_encode(enc, (const uint8_t *)"foobar", 6);
	CHECK(strcmp(enc, "mzxw6ytboi") == 0); /* RFC 4648 vector, lowercase */
	CHECK(opt_base32_decode(back, sizeof(back), "MZ", 2) == -1);
	CHECK(opt_base32_decode(back, sizeof(back), "a1", 2) == -1);
}

TEST(ids)
{
	char a[OPT_ID_LEN + 1], b[OPT_ID_LEN + 1];

	opt_id_new(a);
	opt_id_new(b);
	CHECK(strlen(a) == OPT_ID_LEN);
	CHECK(strcmp(a, b) != 0);
	CHECK(opt_id_valid(a));
	CHECK(!opt_id_valid(""));
	CHECK(!opt_id_valid("../etc"));
	CHECK(!opt_id_valid("a/b"));
	CHECK(!opt_id_valid("ABC"));
	CHECK(!opt_id_valid(NULL));
}

TEST(sha)
{
	char hex[65];
	uint8_t d[20];
	char dh[41];
	struct opt_sha1 c;
	struct opt_sha256 s;

	opt_sha256_hex(hex, "abc", 3);
	CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
	opt_sha256_init(&s);
	opt_sha256_update(&s, "a", 1);
	opt_sha256_update(&s, "bc", 2);
	opt_sha256_final_hex(&s, hex);
	CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
	opt_sha1_init(&c);
	opt_sha1_update(&c, "abc", 3);
	opt_sha1_final(&c, d);
	opt_hex(dh, d, 20);
	CHECK(strcmp(dh, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0);
	{
		/* 1,000,000 'a' in odd chunks */
		char buf[777];
		size_t left = 1000000;
		memset(buf, 'a', sizeof(buf));
		opt_sha1_init(&c);
		while (left) {
			size_t n = left < sizeof(buf) ? left : sizeof(buf);
			opt_sha1_update(&c, buf, n);
			left -= n;
		}
		opt_sha1_final(&c, d);
		opt_hex(dh, d, 20);
		CHECK(strcmp(dh, "34aa973cd4c4daa4f61eeb2bdbad27316534016f") == 0);
	}
}

TEST(canonical_json)
{
	json_t *v;
	char *s;

	const char *in = "{\"b\": 1, \"a\": [true, null, \"\xc3\xa9\"], \"c\": 2.5}";
	CHECK_RC(opt_json_parse(&v, in, strlen(in)));
	if (!v)
		return;
	CHECK_RC(opt_json_canon(&s, NULL, v));
	CHECK(strcmp(s, "{\"a\":[true,null,\"\xc3\xa9\"],\"b\":1,\"c\":2.5}") == 0);
	free(s);
	json_decref(v);
	{
		/* reals in their shortest exact form; escapes; nesting */
		const char *in2 = "[0.1,1.0,-2.5e-300,1e300,100.0,\"a\\\"b\\n\\u0001/\",{\"z\":{},\"\":[]}]";
		json_t *w;
		CHECK_RC(opt_json_parse(&w, in2, strlen(in2)));
		CHECK_RC(opt_json_canon(&s, NULL, w));
		CHECK(strcmp(s, "[0.1,1.0,-2.5e-300,1e+300,100.0,\"a\\\"b\\n\\u0001/\",{\"\":[],\"z\":{}}]") == 0);
		if (strcmp(s, "[0.1,1.0,-2.5e-300,1e+300,100.0,\"a\\\"b\\n\\u0001/\",{\"\":[],\"z\":{}}]"))
			printf("# got %s\n", s);
		free(s);
		json_decref(w);
	}
	CHECK(opt_json_parse(&v, "{\"a\":1,\"a\":2}", 13) == OPT_EINVAL);
	CHECK(opt_json_parse(&v, "{", 1) == OPT_EINVAL);
}

TEST(keys)
{
	json_t *one = json_integer(1), *half = json_real(1.5), *two = json_integer(2);
	json_t *s = json_string("a"), *s2 = json_string("ab"), *arr = json_pack("[i,s]", 1, "x");
	json_t *arr2 = json_pack("[i]", 1), *obj = json_object(), *bad = json_pack("[b]", 1);

	CHECK(opt_key_cmp(one, half) < 0);
	CHECK(opt_key_cmp(half, two) < 0);
	CHECK(opt_key_cmp(two, s) < 0);
	CHECK(opt_key_cmp(s, s2) < 0);
	CHECK(opt_key_cmp(s2, arr) < 0);
	CHECK(opt_key_cmp(arr2, arr) < 0);
	CHECK(opt_key_cmp(arr, arr) == 0);
	CHECK(opt_key_valid(arr));
	CHECK(!opt_key_valid(obj));
	CHECK(!opt_key_valid(bad));
	CHECK(!opt_key_valid(json_true()));
	json_decref(one); json_decref(half); json_decref(two); json_decref(s);
	json_decref(s2); json_decref(arr); json_decref(arr2); json_decref(obj); json_decref(bad);
}

TEST(raw_text)
{
	/* values of every kind end where they should */
	static const char *ok[] = { "1", "-2.5e+10", "true", "null", "\"a\\\"]b\"", "[]", "{}",
				    "[1,[2,{\"a\":[3]}],\"x\"]", "{\"a\":{\"b\":\"}\"},\"c\":[]}" };
	static const char *bad[] = { "", " 1", "[1, 2]", "[1}", "{\"a\":1]", "\"abc", "[[1]", "]", "\"a\nb\"",
				     ",", "x", "[", "{\"a\":", "[1,", "nulx", "[tru]", "01", "1.", "-", "1e", "\"\\x\"",
				     "\"\\u12\"" };
	char deep[200], buf[64];
	size_t i;
	int err = 0;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(buf, sizeof(buf), "%s,", ok[i]);
		CHECK(opt_raw_skip(buf, buf + strlen(buf)) == buf + strlen(ok[i]));
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(opt_raw_skip(bad[i], bad[i] + strlen(bad[i])) == NULL);
	/* nesting beyond 64 levels is refused (the caller parses instead) */
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	CHECK(opt_raw_skip(deep, deep + 200) == NULL);
	CHECK(opt_raw_skip(deep + 36, deep + 164) == deep + 164);
	/* each byte in a short string (the table, not the SSE2 path): held
	 * as it is unless a quote, a backslash or a control character */
	for (i = 0; i < 256; i++) {
		char s3[3] = { '"', (char)i, '"' };
		const char *q = opt_raw_skip(s3, s3 + 3);
		if (i == '"')
			CHECK(q == s3 + 2);
		else
			CHECK(q == (i >= 0x20 && i != '\\' ? s3 + 3 : NULL));
	}

	/* stored keys compare as parsed ones do */
	json_t *k = json_string("k\"q"), *n = json_integer(3), *a = json_pack("[i]", 1);
	CHECK(opt_raw_key_cmp("\"k\\\"q\"", 6, k, &err) == 0 && !err);
	CHECK(opt_raw_key_cmp("\"k1\"", 4, k, &err) > 0 && !err);  /* '1' > '"' */
	CHECK(opt_raw_key_cmp("\"k\"", 3, k, &err) < 0 && !err);
	CHECK(opt_raw_key_cmp("2.5", 3, n, &err) < 0 && !err);
	CHECK(opt_raw_key_cmp("3.0", 3, n, &err) == 0 && !err);
	CHECK(opt_raw_key_cmp("\"a\"", 3, n, &err) > 0 && !err);
	CHECK(opt_raw_key_cmp("[0,1]", 5, a, &err) < 0 && !err);
	CHECK(opt_raw_key_cmp("\"zz\"", 4, a, &err) < 0 && !err);
	CHECK(opt_raw_keys_cmp("\"k1\"", 4, "\"k\\\"q\"", 6, &err) > 0 && !err);
	CHECK(opt_raw_keys_cmp("\"ab\"", 4, "\"abc\"", 5, &err) < 0 && !err);
	CHECK(opt_raw_keys_cmp("[1]", 3, "[1]", 3, &err) == 0 && !err);
	opt_raw_key_cmp("{\"a\":1}", 7, a, &err);
	CHECK(err == OPT_EINTEGRITY);
	json_decref(k);
	json_decref(n);
	json_decref(a);
}

/* opt_canon_scan says canonical exactly when serializing the parse gives
 * the text back; and its tape finds the values. */
TEST(canon_scan)
{
	static const char *const yes[] = {
		"{}", "[]", "0", "-1", "9223372036854775807", "-9223372036854775808", "0.1", "1.0", "-0.0",
		"1e+300", "\"\"", "\"a\\\"b\\\\c\\n\\u001f\"", "\"\xc3\xa9\xf0\x9f\x98\x80\x7f\"",
		"{\"a\":1,\"b\":[true,false,null],\"ba\":{}}", "[[[[1]]]]", "{\"\":0,\"A\":1,\"a\":2}",
	};
	static const char *const no[] = {
		"", " {}", "{} ", "{ }", "[1, 2]", "01", "-0", "1.", ".5", "1E5", "1e5", "0.10", "1.5e",
		"9223372036854775808", "-9223372036854775809", "\"\\u0041\"", "\"\\/\"", "\"\\u000a\"",
		"\"\\u001F\"", "\"\\u0000\"", "\"\x01\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"",
		"\"\xf4\x90\x80\x80\"", "\"\xe2\x82\"", "{\"b\":1,\"a\":2}", "{\"a\":1,\"a\":2}",
		"[1,]", "{\"a\":}", "tru", "nul", "[1]]", "{\"a\"1}", "\"abc", "[1e999]",
	};
	struct opt_ctape t = { 0 };
	const char *text = "{\"entries\":[[\"k\",{\"x\":[1,2]}],[2,3]],\"header\":{\"id\":\"i\"}}";
	size_t i, e, h;

	for (i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
		CHECK(opt_canon_scan(yes[i], strlen(yes[i]), 3, &t) == 1);
		CHECK(opt_canon_check_parsed(yes[i], strlen(yes[i])) == 1);
	}
	for (i = 0; i < sizeof(no) / sizeof(*no); i++) {
		if (opt_canon_scan(no[i], strlen(no[i]), 3, &t) != 0)
			printf("# taken as canonical: %s\n", no[i]);
		CHECK(opt_canon_scan(no[i], strlen(no[i]), 3, &t) == 0);
		CHECK(opt_canon_check_parsed(no[i], strlen(no[i])) == 0);
	}
	/* a byte that matters at every place of a long string (the scanner
	 * reads strings eight bytes at a time) */
	{
		static const char *const bytes[] = { "\\n", "\\\"", "\\\\", "\x01", "\x1f", "\xc3\xa9", "\xc3",
						     "\x7f", "\x20", "~", "\\u0001", "\\/" };
		char buf[64];
		size_t b, at, len;
		for (b = 0; b < sizeof(bytes) / sizeof(*bytes); b++)
			for (at = 0; at < 20; at++) {
				len = (size_t)snprintf(buf, sizeof(buf), "\"%.*s%s%.*s\"", (int)at, "abcdefghijklmnopqrstuvwxyz",
						       bytes[b], (int)(20 - at), "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
				CHECK(opt_canon_scan(buf, len, 3, &t) == opt_canon_check_parsed(buf, len));
			}
	}
	/* the tape: {entries: [[k, {x}], [2, 3]], header: {id}} */
	CHECK(opt_canon_scan(text, strlen(text), 3, &t) == 1);
	e = opt_ctape_member(&t, text, 0, "entries");
	h = opt_ctape_member(&t, text, 0, "header");
	CHECK(e && h && t.v[e].t == '[' && t.v[h].t == '{');
	CHECK(opt_ctape_child(&t, e, 2) == 0);
	i = opt_ctape_child(&t, opt_ctape_child(&t, e, 0), 1);
	CHECK(i && t.v[i].t == '{' && t.v[i].vl == strlen("{\"x\":[1,2]}"));
	CHECK(t.v[i].next == i + 1);  /* depth 3: its members are not recorded */
	i = opt_ctape_child(&t, opt_ctape_child(&t, e, 1), 0);
	CHECK(i && t.v[i].t == '0' && text[t.v[i].v] == '2');
	i = opt_ctape_member(&t, text, h, "id");
	CHECK(i && t.v[i].vl == 3 && memcmp(text + t.v[i].k, "\"id\"", 4) == 0);
	CHECK(opt_ctape_member(&t, text, h, "type") == 0);
	opt_ctape_free(&t);
}

TEST(jsonl_reader)
{
	const char *text = "{\"a\":1}\n  [1,\n 2]\n\"x y\" 42\n\n{\"s\":\"}]\\\"\"}\nnope\n{\"z\":0}";
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	struct opt_jsonl *r;
	json_t *v;
	int n = 0, rc;

	CHECK_RC(opt_jsonl_open(&r, f));
	while ((rc = opt_jsonl_next(r, &v)) == 1) {
		n++;
		json_decref(v);
	}
	CHECK(n == 5);
	CHECK(rc == OPT_EINVAL);
	CHECK(strstr(opt_error_last(), "line 7") != NULL);
	/* the reader can go on after an error */
	CHECK(opt_jsonl_next(r, &v) == 1);
	CHECK(json_is_object(v) && json_object_get(v, "z"));
	json_decref(v);
	CHECK(opt_jsonl_next(r, &v) == 0);
	opt_jsonl_free(r);
	fclose(f);
}

TEST(jsonl_large)
{
	/* values larger than the reader's buffer */
	size_t n = 300000, i;
	char *text = malloc(n + 16);
	FILE *f;
	struct opt_jsonl *r;
	json_t *v;

	text[0] = '"';
	for (i = 1; i < n; i++)
		text[i] = 'q';
	strcpy(text + n, "\"\n[1]");
	f = fmemopen(text, strlen(text), "r");
	CHECK_RC(opt_jsonl_open(&r, f));
	CHECK(opt_jsonl_next(r, &v) == 1);
	CHECK(json_is_string(v) && json_string_length(v) == n - 1);
	json_decref(v);
	CHECK(opt_jsonl_next(r, &v) == 1);
	CHECK(json_is_array(v));
	json_decref(v);
	CHECK(opt_jsonl_next(r, &v) == 0);
	opt_jsonl_free(r);
	fclose(f);
	free(text);
}

/* One growing-array helper: it keeps what the array held, grows by
 * doubling, and refuses a size that would overflow without touching the
 * array. */
TEST(alloc_grow)
{
	int *v = NULL;
	size_t cap = 0, i;

	CHECK_RC(OPT_ALLOC_GROW(v, 1, cap));
	CHECK(cap == 16 && v != NULL);
	for (i = 0; i < 1000; i++) {
		CHECK_RC(OPT_ALLOC_GROW(v, i + 1, cap));
		v[i] = (int)i;
	}
	CHECK(cap == 1024);
	for (i = 0; i < 1000; i++)
		CHECK(v[i] == (int)i);
	CHECK(OPT_ALLOC_GROW(v, SIZE_MAX / 2, cap) == OPT_EIO);
	CHECK(strcmp(opt_error_last(), "out of memory") == 0);
	CHECK(cap == 1024 && v[999] == 999);
	free(v);
}

TEST(backoff)
{
	unsigned i;

	for (i = 0; i < 100; i++) {
		unsigned d = opt_backoff_ms(3, 100, 5000);
		CHECK(d > 400 && d <= 800);
		d = opt_backoff_ms(20, 100, 5000);
		CHECK(d > 2500 && d <= 5000);
	}
}

/* A message may quote the one before it (a busy timeout gives the lock's
 * message as the reason). */
TEST(error_quotes_last)
{
	opt_error_set(OPT_EBUSY, "collection 'c' is locked by another writer");
	CHECK(opt_error_set(OPT_EBUSY, "gave up (%s)", opt_error_last()) == OPT_EBUSY);
	CHECK(strcmp(opt_error_last(), "gave up (collection 'c' is locked by another writer)") == 0);
	opt_error_wrap(OPT_EIO, "prefix");
	CHECK(strcmp(opt_error_last(), "prefix: gave up (collection 'c' is locked by another writer)") == 0);
	opt_error_clear();
}

/* A message made from the last message: formatted into a copy, so the
 * argument is read whole before the buffer it lives in is written. */
TEST(error_from_last)
{
	opt_error_set(OPT_EBUSY, "collection '%s' is busy (its ref is locked)", "t");
	opt_error_set(OPT_EBUSY, "%s; gave up after %d attempts", opt_error_last(), 32);
	CHECK(strcmp(opt_error_last(), "collection 't' is busy (its ref is locked); gave up after 32 attempts") == 0);
	CHECK(opt_error_last_code() == OPT_EBUSY);
	opt_error_set(OPT_EINVAL, "invalid JSON: oops");
	opt_error_set(OPT_ECONFLICT, "the resolver printed no JSON (%s)", opt_error_last());
	CHECK(strcmp(opt_error_last(), "the resolver printed no JSON (invalid JSON: oops)") == 0);
	/* the tail of the last message, too */
	opt_error_set(OPT_EINVAL, "abcdef");
	opt_error_set(OPT_EINVAL, "[%s|%s]", opt_error_last() + 3, opt_error_last());
	CHECK(strcmp(opt_error_last(), "[def|abcdef]") == 0);
	opt_error_clear();
}

/* Text from outside, quoted in a message: no control byte, no byte that
 * is not UTF-8 gets through; UTF-8 does as it is. */
TEST(esc)
{
	char big[1000];
	const char *a, *b;

	CHECK(strcmp(opt_esc("users"), "users") == 0);
	CHECK(strcmp(opt_esc("a\x1b[31mb"), "a\\x1b[31mb") == 0);
	CHECK(strcmp(opt_esc("\a\n\t\x7f"), "\\x07\\x0a\\x09\\x7f") == 0);
	CHECK(strcmp(opt_esc("back\\slash"), "back\\\\slash") == 0);
	CHECK(strcmp(opt_esc("caf\xc3\xa9 \xe2\x82\xac"), "caf\xc3\xa9 \xe2\x82\xac") == 0);
	/* a C1 control (U+009B, CSI), a lone continuation byte, an overlong
	 * form, a surrogate, a sequence cut short */
	CHECK(strcmp(opt_esc("\xc2\x9b["), "\\xc2\\x9b[") == 0);
	CHECK(strcmp(opt_esc("\x80"), "\\x80") == 0);
	CHECK(strcmp(opt_esc("\xc0\xaf"), "\\xc0\\xaf") == 0);
	CHECK(strcmp(opt_esc("\xed\xa0\x80"), "\\xed\\xa0\\x80") == 0);
	CHECK(strcmp(opt_esc("\xe2\x82"), "\\xe2\\x82") == 0);
	CHECK(strcmp(opt_esc(NULL), "(null)") == 0);
	CHECK(strcmp(opt_esc(""), "") == 0);
	/* long text: the first OPT_ESC_SHOWN bytes, then "..." */
	memset(big, 1, sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	a = opt_esc(big);
	CHECK(strlen(a) == 4 * OPT_ESC_SHOWN + 3 && strcmp(a + 4 * OPT_ESC_SHOWN, "...") == 0);
	memset(big, 'x', sizeof(big) - 1);
	a = opt_esc(big);
	CHECK(strlen(a) == OPT_ESC_SHOWN + 3);
	/* the buffers are used in turn: the arguments of one message differ */
	a = opt_esc("one");
	b = opt_esc("two");
	CHECK(strcmp(a, "one") == 0 && strcmp(b, "two") == 0);
}

/* A number that underflows to 0 is refused as one that overflows is. */
TEST(underflow)
{
	static const char *const bad[] = {
		"1e-400", "-1e-400", "[0, 1E-999]", "{\"a\":{\"b\":2e-324}}", "0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
	};
	static const char *const good[] = {
		"0.0", "-0.0", "0e-400", "[\"1e-400\", 0.0]", "4.9e-324", "1e-310", "{\"1e-400\":0E0}",
	};
	json_t *v;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		CHECK(opt_json_parse(&v, bad[i], strlen(bad[i])) == OPT_EINVAL);
		CHECK(v == NULL);
		CHECK(strstr(opt_error_last(), "invalid JSON: real number underflow near '") != NULL);
	}
	for (i = 0; i < sizeof(good) / sizeof(*good); i++) {
		CHECK(opt_json_parse(&v, good[i], strlen(good[i])) == 0);
		json_decref(v);
	}
	{
		char in[] = "{\"a\":1}\n{\"a\":[1e-400]}\n";
		FILE *f = fmemopen(in, strlen(in), "r");
		struct opt_jsonl *r;
		CHECK(f && opt_jsonl_open(&r, f) == 0);
		CHECK(opt_jsonl_next(r, &v) == 1);
		json_decref(v);
		CHECK(opt_jsonl_next(r, &v) == OPT_EINVAL);
		CHECK(strcmp(opt_error_last(), "line 2: invalid JSON: real number underflow near '1e-400'") == 0);
		opt_jsonl_free(r);
		fclose(f);
	}
}

/* N levels of arrays, as text. */
static char *deep_text(int n)
{
	char *t = malloc(2 * (size_t)n + 1);

	memset(t, '[', (size_t)n);
	memset(t + n, ']', (size_t)n);
	t[2 * n] = '\0';
	return t;
}

/* The one nesting limit: what jansson's parser reads back. */
TEST(depth)
{
	char *t, *c;
	size_t n;
	json_t *v, *w;

	/* the parser reads OPT_JSON_MAX_DEPTH levels and not one more */
	t = deep_text(OPT_JSON_MAX_DEPTH);
	CHECK(opt_json_parse(&v, t, strlen(t)) == 0);
	CHECK(opt_json_text_depth(t, strlen(t)) == OPT_JSON_MAX_DEPTH);
	CHECK(opt_json_text_fits(t, strlen(t), 0) == 1);
	CHECK(opt_json_text_fits(t, strlen(t), 1) == 0);
	/* the canonicalizer keeps to it, counted the same way */
	CHECK(opt_json_canon(&c, &n, v) == 0);
	CHECK(n == strlen(t) && strcmp(c, t) == 0);
	free(c);
	CHECK(opt_json_canon_at(&c, &n, v, 1, "block 'x'") == OPT_EINVAL && c == NULL);
	CHECK(strcmp(opt_error_last(), "nested too deeply: block 'x' would nest more than 2048 levels, the most a stored document may") == 0);
	w = json_pack("[O]", v);
	CHECK(opt_json_canon(&c, &n, w) == OPT_EINVAL);
	json_decref(w);
	json_decref(v);
	free(t);
	t = deep_text(OPT_JSON_MAX_DEPTH + 1);
	CHECK(opt_json_parse(&v, t, strlen(t)) == OPT_EINVAL);
	CHECK(opt_json_text_fits(t, strlen(t), 0) == 0);
	free(t);
	/* a value 5 levels down (a tree value in its log entry) */
	t = deep_text(OPT_JSON_MAX_DEPTH - 5);
	CHECK(opt_json_parse(&v, t, strlen(t)) == 0);
	CHECK(opt_json_canon_at(&c, &n, v, 5, NULL) == 0);
	free(c);
	CHECK(opt_json_canon_at(&c, &n, v, 6, NULL) == OPT_EINVAL);
	CHECK(strstr(opt_error_last(), "nested too deeply: the value would nest more than 2048 levels") != NULL);
	json_decref(v);
	free(t);
	/* levels as the parser counts them: a value is one, a container one
	 * more than what it holds; brackets in strings do not count */
	CHECK(opt_json_text_depth("1", strlen("1")) == 1);
	CHECK(opt_json_text_depth("[]", strlen("[]")) == 1);
	CHECK(opt_json_text_depth("[1]", strlen("[1]")) == 2);
	CHECK(opt_json_text_depth("{\"a\":[{}]}", strlen("{\"a\":[{}]}")) == 3);
	CHECK(opt_json_text_depth("{\"a\":[{\"b\":true}]}", strlen("{\"a\":[{\"b\":true}]}")) == 4);
	CHECK(opt_json_text_depth("\"[[[\"", strlen("\"[[[\"")) == 1);
	CHECK(opt_json_text_depth("[\"a\\\"[[\",[]]", strlen("[\"a\\\"[[\",[]]")) == 2);
	CHECK(opt_json_text_depth("[\"0123456789abcdef0123456789[\\\\\",[[]]]", strlen("[\"0123456789abcdef0123456789[\\\\\",[[]]]")) == 3);
	/* many brackets in strings: the bound fails, the count decides */
	{
		size_t len = 2 * OPT_JSON_MAX_DEPTH + 4, i;
		char *s = malloc(len + 1);
		s[0] = '[';
		s[1] = '"';
		for (i = 2; i < len - 2; i++)
			s[i] = '{';
		s[len - 2] = '"';
		s[len - 1] = ']';
		s[len] = '\0';
		CHECK(opt_json_text_depth(s, len) == 2);
		CHECK(opt_json_text_fits(s, len, OPT_JSON_MAX_DEPTH - 2) == 1);
		CHECK(opt_json_text_fits(s, len, OPT_JSON_MAX_DEPTH - 1) == 0);
		free(s);
	}
}

int main(void)
{
	opt_util_init();
	RUN(base32_roundtrip);
	RUN(ids);
	RUN(sha);
	RUN(canonical_json);
	RUN(keys);
	RUN(raw_text);
	RUN(canon_scan);
	RUN(jsonl_reader);
	RUN(jsonl_large);
	RUN(alloc_grow);
	RUN(backoff);
	RUN(error_quotes_last);
	RUN(error_from_last);
	RUN(esc);
	RUN(underflow);
	RUN(depth);
	return DONE();
}

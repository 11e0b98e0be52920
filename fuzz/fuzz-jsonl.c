/* fuzz-jsonl.c - libFuzzer harness for the JSON readers and canonical JSON.
 *
 * Input: any bytes, read as a stream of JSON values by opt_jsonl (through
 * fmemopen).  Every value read must
 *   - serialize with opt_json_canon, and the canonical text must parse back
 *     (opt_json_parse) to an equal value (json_equal) whose canonical text
 *     is the same bytes;
 *   - copy (opt_json_copy) to an equal value;
 *   - if it is a key (opt_key_valid): compare equal to itself, to its copy
 *     and to its re-parse (opt_key_cmp), and order consistently with the
 *     previous keys and with its own elements (antisymmetry, transitivity).
 * The reader must make progress: no more results than input bytes, line
 * numbers never going back.  When opt_json_parse accepts the whole input as
 * one value, the stream reader must give that value and then the end.
 * The fast canonicalizer (opt_json_canon_text, opt_json_record_text) must
 * accept only what opt_json_parse accepts, giving opt_json_canon's bytes
 * (and for a record the key's and value's), and leave its output as it was
 * when it declines.
 *
 * Two prefixes change how the bytes after them are fed:
 *   0x01 N  65536 - 32*(N/2) bytes of white space are put before the
 *           bytes (N even) or after their first byte (N odd: inside the
 *           first value), so that values straddle the reader's first 64 KiB
 *           buffer (exercising the buffer's move, and its growth when a
 *           value outgrows it);
 *   0x02 N  read from a socket (SOCK_SEQPACKET, a file descriptor: the
 *           read(2) path used for stdin and pipes) in messages of N+1
 *           bytes, so that values arrive split across reads.
 *
 * A broken property aborts (the fuzzer reports it as a crash). */
#include "error.h"
#include "json.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAIL(...) do { fprintf(stderr, "fuzz-jsonl: " __VA_ARGS__); \
	fputc('\n', stderr); abort(); } while (0)
#define ASSERT(c) do { if (!(c)) FAIL("assertion failed: %s (line %d)", #c, __LINE__); } while (0)

#define PAD_BASE 65536

static int sign(int c)
{
	return (c > 0) - (c < 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (opt_util_init() < 0)
		FAIL("cannot initialise libsodium");
	return 0;
}

/* The canonical form of v, checked: it parses back to an equal value with
 * the same canonical bytes.  Returns the re-parsed value (new reference). */
static json_t *check_canon(const json_t *v)
{
	char *s = NULL, *s2 = NULL;
	size_t n = 0, n2 = 0;
	json_t *w = NULL;
	int rc;

	rc = opt_json_canon(&s, &n, v);
	if (rc < 0)
		FAIL("opt_json_canon failed on a parsed value: %s", opt_error_last());
	ASSERT(memchr(s, '\0', n) == NULL);
	rc = opt_json_parse(&w, s, n);
	if (rc < 0)
		FAIL("canonical text does not parse: %s\n%.*s", opt_error_last(), (int)(n > 2000 ? 2000 : n), s);
	if (!json_equal((json_t *)v, w))
		FAIL("canonical text parses to a different value:\n%.*s", (int)(n > 2000 ? 2000 : n), s);
	rc = opt_json_canon(&s2, &n2, w);
	ASSERT(rc == 0);
	if (n != n2 || memcmp(s, s2, n) != 0)
		FAIL("canonical form is not stable:\n%.*s\n%.*s", (int)(n > 2000 ? 2000 : n), s,
		     (int)(n2 > 2000 ? 2000 : n2), s2);
	free(s);
	free(s2);
	return w;
}

/* opt_key_cmp must be antisymmetric on a, b. */
static int cmp_checked(const json_t *a, const json_t *b)
{
	int ab = sign(opt_key_cmp(a, b)), ba = sign(opt_key_cmp(b, a));

	if (ab != -ba)
		FAIL("opt_key_cmp is not antisymmetric: cmp(a,b)=%d cmp(b,a)=%d", ab, ba);
	return ab;
}

/* Transitivity over a, b, c (all keys). */
static void check_trans(const json_t *a, const json_t *b, const json_t *c)
{
	int ab = cmp_checked(a, b), bc = cmp_checked(b, c), ac = cmp_checked(a, c);

	if (ab <= 0 && bc <= 0 && ac > 0)
		FAIL("opt_key_cmp is not transitive: a<=b, b<=c but a>c");
	if (ab == 0 && bc == 0 && ac != 0)
		FAIL("opt_key_cmp equality is not transitive");
	if (ab >= 0 && bc >= 0 && ac < 0)
		FAIL("opt_key_cmp is not transitive: a>=b, b>=c but a<c");
}

#define SUBKEYS 8

/* The key properties of one value; prev[0..1] are earlier keys (or NULL). */
static void check_key(const json_t *v, const json_t *reparsed, const json_t *copy,
		      const json_t *prev[2])
{
	const json_t *sub[SUBKEYS];
	size_t i, j, k, n = 0;

	if (!opt_key_valid(v)) {
		/* a non-key stays a non-key through the round trip */
		ASSERT(!opt_key_valid(reparsed));
		return;
	}
	ASSERT(opt_key_valid(reparsed) && opt_key_valid(copy));
	if (opt_key_cmp(v, v) != 0)
		FAIL("opt_key_cmp(a, a) != 0");
	if (cmp_checked(v, reparsed) != 0)
		FAIL("a key differs from its canonical re-parse");
	if (cmp_checked(v, copy) != 0)
		FAIL("a key differs from its copy");
	if (prev[0])
		cmp_checked(prev[0], v);
	if (prev[0] && prev[1])
		check_trans(prev[1], prev[0], v);
	/* the elements of an array key are keys too: order them pairwise */
	for (i = 0; json_is_array(v) && i < json_array_size(v) && n < SUBKEYS; i++)
		sub[n++] = json_array_get(v, i);
	for (i = 0; i < n; i++) {
		if (opt_key_cmp(sub[i], sub[i]) != 0)
			FAIL("opt_key_cmp(a, a) != 0 for an element");
		cmp_checked(sub[i], v);
		for (j = i + 1; j < n; j++)
			for (k = j + 1; k < n; k++)
				check_trans(sub[i], sub[j], sub[k]);
	}
}

/* A stream of data in messages of chunk bytes: a socket whose writing end
 * is closed after the last message (NULL when the messages do not fit in
 * the socket's buffer). */
static FILE *chunked_stream(const uint8_t *data, size_t size, size_t chunk)
{
	int sv[2], sndbuf = 1 << 20;
	size_t off;
	FILE *f;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
		FAIL("socketpair: %s", strerror(errno));
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	for (off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		if (send(sv[0], data + off, n, MSG_DONTWAIT) != (ssize_t)n) {
			close(sv[0]);
			close(sv[1]);
			return NULL;
		}
	}
	close(sv[0]);
	f = fdopen(sv[1], "r");
	ASSERT(f != NULL);
	return f;
}

/* The depth of v's nesting (1 for a scalar). */
static int depth_of(const json_t *v)
{
	int d = 0, x;
	size_t i;
	const char *k;
	json_t *m;

	if (json_is_array(v)) {
		for (i = 0; i < json_array_size(v); i++)
			if ((x = depth_of(json_array_get(v, i))) > d)
				d = x;
	} else if (json_is_object(v)) {
		json_object_foreach((json_t *)v, k, m)
			if ((x = depth_of(m)) > d)
				d = x;
	}
	return d + (json_is_array(v) || json_is_object(v));
}

/* Stored text is scanned, not parsed (tree leaves): the scanner finds the
 * end of v's canonical text exactly (nesting up to 64), never reads past
 * the end of any input, and stored keys compare as parsed ones do. */
static void check_raw(const json_t *v, const json_t *prev[2], const char *in, size_t inlen)
{
	char *s = NULL;
	size_t n = 0;
	const char *end;
	int err = 0, a, b;

	(void)opt_raw_skip(in, in + inlen);
	ASSERT(opt_json_canon(&s, &n, v) == 0);
	end = opt_raw_skip(s, s + n);
	if (depth_of(v) <= 64 && end != s + n)
		FAIL("opt_raw_skip does not find the end of canonical text:\n%.*s", (int)(n > 2000 ? 2000 : n), s);
	if (end && end != s + n)
		FAIL("opt_raw_skip stops inside canonical text");
	if (opt_key_valid(v)) {
		if (opt_raw_key_cmp(s, n, v, &err) != 0 || err)
			FAIL("a stored key differs from itself: %s", err ? opt_error_last() : "");
		for (int i = 0; i < 2; i++) {
			char *t = NULL;
			size_t tl = 0;
			if (!prev[i])
				continue;
			a = sign(opt_key_cmp(v, prev[i]));
			b = sign(opt_raw_key_cmp(s, n, prev[i], &err));
			if (err || a != b)
				FAIL("opt_raw_key_cmp %d, opt_key_cmp %d", b, a);
			ASSERT(opt_json_canon(&t, &tl, prev[i]) == 0);
			b = sign(opt_raw_keys_cmp(s, n, t, tl, &err));
			free(t);
			if (err || a != b)
				FAIL("opt_raw_keys_cmp %d, opt_key_cmp %d", b, a);
		}
	}
	free(s);
}

static void check_value(json_t *v, const json_t *prev[2])
{
	json_t *w = check_canon(v);
	json_t *c = opt_json_copy(v);
	char h1[65], h2[65];

	ASSERT(c != NULL);
	if (!json_equal(v, c))
		FAIL("opt_json_copy gives a different value");
	ASSERT(opt_json_hash(h1, v) == 0 && opt_json_hash(h2, c) == 0);
	ASSERT(strcmp(h1, h2) == 0);
	check_key(v, w, c, prev);
	json_decref(w);
	json_decref(c);
}

/* The fast path against the reference on the whole input. */
static void check_fast(const char *buf, size_t total, const json_t *whole)
{
	struct opt_text t = { NULL, 0, 0 };
	struct opt_text_rec rec;
	char *s = NULL;
	size_t n = 0;
	int rc = opt_json_canon_text(&t, buf, total);

	ASSERT(rc == 0 || rc == 1);
	if (rc == 0)
		ASSERT(t.len == 0);
	if (rc == 1) {
		if (!whole)
			FAIL("opt_json_canon_text accepts what opt_json_parse rejects");
		ASSERT(opt_json_canon(&s, &n, whole) == 0);
		if (n != t.len || memcmp(s, t.p, n) != 0)
			FAIL("opt_json_canon_text differs from opt_json_canon:\n%.*s\n%.*s", (int)(n > 2000 ? 2000 : n), s,
			     (int)(t.len > 2000 ? 2000 : t.len), t.p);
		free(s);
		s = NULL;
	}
	opt_text_free(&t);
	rc = opt_json_record_text(&t, buf, total, 1 << 20, &rec);
	ASSERT(rc == 0 || rc == 1);
	if (rc == 1) {
		const json_t *k = json_object_get(whole, "key"), *v = json_object_get(whole, "value");
		ASSERT(whole && json_is_object(whole) && k && v && opt_key_valid(k));
		ASSERT(json_object_size(whole) == 2);  /* no other member */
		ASSERT(opt_json_canon(&s, &n, k) == 0);
		ASSERT(n == rec.klen && memcmp(s, t.p + rec.koff, n) == 0);
		free(s);
		ASSERT(opt_json_canon(&s, &n, v) == 0);
		ASSERT(n == rec.vlen && memcmp(s, t.p + rec.voff, n) == 0);
		free(s);
	} else {
		ASSERT(t.len == 0);
	}
	opt_text_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct opt_jsonl *r = NULL;
	json_t *v, *whole = NULL, *keys[2] = { NULL, NULL };
	const json_t *prev[2];
	size_t pad = 0, pad_at = 0, chunk = 0, total, results = 0, nvalues = 0;
	char *buf;
	FILE *f = NULL;
	long line = 0;
	int rc;

	if (size >= 2 && data[0] == 0x01) {
		pad = PAD_BASE - 32 * (size_t)(data[1] / 2);
		data += 2;
		size -= 2;
		pad_at = (data[-1] & 1) && size ? 1 : 0;
	} else if (size >= 2 && data[0] == 0x02) {
		chunk = (size_t)data[1] + 1;
		data += 2;
		size -= 2;
	}
	total = pad + size;
	if (total == 0)
		return 0;
	buf = malloc(total);
	ASSERT(buf != NULL);
	if (pad_at)
		buf[0] = (char)data[0];
	for (size_t i = 0; i < pad; i++)
		buf[pad_at + i] = (i % 61 == 60) ? '\n' : ' ';
	if (size > pad_at)
		memcpy(buf + pad_at + pad, data + pad_at, size - pad_at);

	if (opt_json_parse(&whole, buf, total) < 0)
		whole = NULL;
	check_fast(buf, total, whole);

	if (chunk)
		f = chunked_stream(data, size, chunk);
	if (!f)
		f = fmemopen(buf, total, "r");
	ASSERT(f != NULL);
	ASSERT(opt_jsonl_open(&r, f) == 0);
	for (;;) {
		rc = opt_jsonl_next(r, &v);
		if (++results > total + 1)
			FAIL("opt_jsonl_next makes no progress (%zu results from %zu bytes)", results, total);
		if (rc == 0) {
			ASSERT(v == NULL);
			break;
		}
		if (rc < 0) {
			ASSERT(v == NULL);
			ASSERT(rc == OPT_EINVAL);
			if (whole)
				FAIL("opt_jsonl rejects what opt_json_parse accepts: %s", opt_error_last());
			/* the reader may go on after a bad line: keep reading */
			continue;
		}
		ASSERT(rc == 1 && v != NULL);
		if (opt_jsonl_line(r) < line || opt_jsonl_line(r) < 1)
			FAIL("opt_jsonl_line went back from %ld to %ld", line, opt_jsonl_line(r));
		line = opt_jsonl_line(r);
		(void)opt_jsonl_buffered(r);
		nvalues++;
		if (whole && (nvalues > 1 || !json_equal(whole, v)))
			FAIL("opt_jsonl reads a different value than opt_json_parse of the whole input");
		prev[0] = keys[0];
		prev[1] = keys[1];
		check_value(v, prev);
		check_raw(v, prev, buf, total);
		if (opt_key_valid(v)) {
			json_decref(keys[1]);
			keys[1] = keys[0];
			keys[0] = v;
		} else {
			json_decref(v);
		}
	}
	if (whole && nvalues != 1)
		FAIL("opt_jsonl reads %zu values where opt_json_parse reads one", nvalues);
	opt_jsonl_free(r);
	fclose(f);
	free(buf);
	json_decref(whole);
	json_decref(keys[0]);
	json_decref(keys[1]);
	return 0;
}

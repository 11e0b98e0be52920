/* identity.h - a store's Ed25519 identity and its trusted keys.
 *
 * Every store has a key pair, made on first need: the public key signs
 * (as "author", hex) every log entry the store writes, and the secret key
 * stays outside the git objects, in <store>/opt-identity (mode 0600), the
 * public key alone in <store>/opt-identity.pub (mode 0644, for peers).
 * <store>/opt-trusted lists keys by name ("<hex key> <name>" lines).
 *
 * Every entry's signature is always checked against the key it names.
 * Who may write is not restricted until the store asks for it: an open
 * store accepts a valid signature by any key; a restricted one only by its
 * own key and the listed ones.  The file says which in a line "writers
 * any" or "writers listed"; a file without that line (written by an
 * earlier version, when every store was restricted) is restricted when it
 * lists a key.
 */
#ifndef OPT_IDENTITY_H
#define OPT_IDENTITY_H

#include <jansson.h>

#include "store.h"

#define OPT_KEY_HEX 64
#define OPT_SIG_HEX 128
#define OPT_TRUST_NAME_MAX 200  /* a trusted key's name: one line */

struct opt_identity {
	unsigned char pk[32];
	unsigned char sk[64];
	char pub[OPT_KEY_HEX + 1];
};

/* Load the store's identity, creating it when absent (create = 1) or
 * failing with OPT_ENOTFOUND (create = 0). */
int opt_identity_get(struct opt_identity *out, struct opt_store *s, int create);

/* The public key of the store at dir (a path peer: its files are read,
 * the store is not opened) into key, from opt-identity.pub, else (a store
 * made before that file) the public half of opt-identity where it can be
 * read; key "" when the store has no identity or it cannot be read.  Only
 * regular files are read (never waited on, never through a symlink):
 * OPT_EINTEGRITY for anything else. */
int opt_identity_public_at(const char *dir, char key[OPT_KEY_HEX + 1]);

/* Sign msg: 128 hex characters of an Ed25519 signature. */
int opt_identity_sign(const struct opt_identity *id, const char *msg, char sig[OPT_SIG_HEX + 1]);

/* Check sig (hex) of msg by pub (hex): 0 or OPT_EINTEGRITY. */
int opt_sig_verify(const char *pub, const char *msg, const char *sig);

/* 1 if s is 64 lowercase hex characters. */
int opt_key_hex_valid(const char *s);

/* The trusted keys: *out a new array of {"key", "name", "self"?}. */
int opt_trust_list(struct opt_store *s, json_t **out);
/* 1 if key is trusted (the store's own key always is), 0 if not. */
int opt_trust_has(struct opt_store *s, const char *key);
/* Add (or rename) / remove a trusted key.  Removing the store's own key is
 * refused (OPT_EINVAL); removing an absent one is OPT_ENOTFOUND. */
int opt_trust_add(struct opt_store *s, const char *key, const char *name);
int opt_trust_remove(struct opt_store *s, const char *key);

/* 1 if only the store's own and the listed keys may write (restricted),
 * 0 if any key may (open), <0 on failure. */
int opt_trust_restricted(struct opt_store *s);
/* Restrict the writers to the listed keys (on), or open them to any key. */
int opt_trust_restrict(struct opt_store *s, int on);

#endif

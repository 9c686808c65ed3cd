/*
 * ES256 verification for @dt/protocol/native (protocol/src/native.ts) without a key import.
 *
 * node:crypto verifies only with a KeyObject, and importing a public key (JWK or SPKI) costs about
 * as much as a verification: OpenSSL's key check multiplies the point by the group order. A ledger
 * among 100k cards imports a cold card key for nearly every payment. On P-256 (cofactor 1) a point
 * that is on the curve is in the prime-order group, so the on-curve check that EC_POINT_oct2point
 * does on an uncompressed point is the whole validity check; this verifies straight from the
 * 65-byte point with Node's own OpenSSL (the symbols Node exports to addons: nothing else is
 * linked), the same ECDSA code node:crypto runs.
 *
 * verify(publicKey: 65 bytes 04||x||y, message: bytes, signature: 64 bytes r||s) -> boolean
 * (false for a point not on the curve, r or s out of range, or a signature that does not verify;
 * the low-S rule is the caller's, as for node:crypto). Built by protocol/native/build.sh.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <node_api.h>
#include <pthread.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

/* Created once per process (worker threads load the addon too), read-only afterwards. */
static EC_GROUP *group;
static pthread_once_t group_once = PTHREAD_ONCE_INIT;
static void make_group(void) { group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1); }

static int bytes_of(napi_env env, napi_value v, unsigned char **data, size_t *len) {
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  napi_typedarray_type type;
  void *p;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, len, &p, &ab, &off) != napi_ok || type != napi_uint8_array) return 0;
  *data = p;
  return 1;
}

static int verify_raw(const unsigned char *pub, const unsigned char *msg, size_t msg_len, const unsigned char *sig) {
  int ok = 0;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  EC_KEY *key = EC_KEY_new();
  EC_POINT *point = EC_POINT_new(group);
  ECDSA_SIG *s = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
  if (!key || !point || !s || !r || !ss) goto done;
  if (EC_KEY_set_group(key, group) != 1) goto done;
  /* Checks that the point is on the curve (and refuses the point at infinity). */
  if (EC_POINT_oct2point(group, point, pub, 65, NULL) != 1) goto done;
  if (EC_KEY_set_public_key(key, point) != 1) goto done;
  if (ECDSA_SIG_set0(s, r, ss) != 1) goto done;
  r = ss = NULL; /* owned by s now */
  SHA256(msg, msg_len, digest);
  /* 1 valid, 0 invalid, -1 error (r or s zero or not below the order included). */
  ok = ECDSA_do_verify(digest, sizeof digest, s, key) == 1;
done:
  BN_free(r);
  BN_free(ss);
  ECDSA_SIG_free(s);
  EC_POINT_free(point);
  EC_KEY_free(key);
  return ok;
}

static napi_value verify(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_value out;
  unsigned char *pub, *msg, *sig;
  size_t pub_len, msg_len, sig_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 || !bytes_of(env, argv[0], &pub, &pub_len) ||
      !bytes_of(env, argv[1], &msg, &msg_len) || !bytes_of(env, argv[2], &sig, &sig_len)) {
    napi_throw_type_error(env, NULL, "verify(publicKey, message, signature): three Uint8Arrays");
    return NULL;
  }
  int ok = pub_len == 65 && pub[0] == 4 && sig_len == 64 && verify_raw(pub, msg, msg_len, sig);
  napi_get_boolean(env, ok, &out);
  return out;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  pthread_once(&group_once, make_group);
  if (!group) {
    napi_throw_error(env, NULL, "P-256 group unavailable");
    return NULL;
  }
  napi_value fn;
  if (napi_create_function(env, "verify", NAPI_AUTO_LENGTH, verify, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "verify", fn) != napi_ok) return NULL;
  return exports;
}

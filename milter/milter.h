/*
 * milter.h - kyso-milter's internal interfaces. Only this directory includes
 * libmilter; everything that signs, verifies or decides lives in libkyso.
 */
#ifndef KYSO_MILTER_H
#define KYSO_MILTER_H

#include "kyso.h"
#include "kyso_config.h"

/* A signing identity at run time: its key store and signer, shared by every
 * config snapshot that names the same key, certificate and chain, so a reload
 * does not open the token a second time. */
typedef struct signer_slot signer_slot;

/* Everything one message needs from the configuration, reference-counted:
 * a reload builds a new snapshot and swaps it in; messages in flight keep
 * the one they started with. */
typedef struct {
    int refs;
    kyso_config *conf;
    kyso_trust *trust;
    kyso_revoker *revoker; /* NULL when inbound.revocation is "off" */
    signer_slot **slots;   /* one per conf->identities[i] */
} snapshot;

/* Builds a snapshot from a config file; err gets one line on failure.
 * Tokens that cannot be opened yet are not an error: signing with them
 * tempfails (per on_sign_error) until they come back. */
kyso_status snapshot_load(snapshot **out, const char *path, char *err, size_t errlen);
/* The current snapshot with a reference taken; never NULL once installed. */
snapshot *snapshot_acquire(void);
void snapshot_release(snapshot *s);
/* Installs s as current (takes over the caller's reference). */
void snapshot_install(snapshot *s);

/* Signs msg with identity i of the snapshot, reopening the token once if the
 * key store fails (libp11 cannot recover a lost session otherwise). */
kyso_status snapshot_sign(const snapshot *s, size_t identity, kyso_buf *out,
                          kyso_sign_outcome *what, const char *msg, size_t len);
/* Checks every identity: token login, key, certificate, and the
 * certificate's own standing (revoked, expired, expiring within 30 days);
 * logs problems and marks revoked or expired identities so they refuse to
 * sign. Returns the number of identities that cannot sign. */
int snapshot_check_identities(const snapshot *s, int verbose);
/* Refreshes CRLs near nextUpdate and re-checks identities; for a timer. */
void snapshot_maintain(const snapshot *s);

/* kyso-milter.c */
int kyso_milter_run(const char *config_path, int foreground);

#endif

// Package vault is wirken's encrypted secret store: one file on disk holding
// credentials that the proxy injects into agent requests.
//
// # Keys
//
// A random 32-byte root key is wrapped by one or more seals, each giving a
// seal entry in the file; any one entry unseals. A seal is any
// go-kms-wrapping v2 wrapper; NewSeal builds one from configuration: aead
// (a local key file), transit (Vault/OpenBao), awskms, gcpckms,
// azurekeyvault (validated, not exercised live here), pkcs11 (crypto11,
// only in builds with cgo and the pkcs11 tag) and tpm2 (go-tpm, pure Go).
// Unsealing is one KMS call, made by Open. The root key encrypts a keyring
// of term keys, each term key wraps the per-secret data keys, and each data
// key encrypts one secret value with AES-256-GCM. The additional data of a
// value binds it to the vault, its name, its version and the hosts it may
// be sent to, so a value moved to another slot or given another binding no
// longer decrypts. A MAC keyed from the root key covers the whole file and
// a generation counter increases with every write.
//
// # Verification, rotation, live change
//
// Open and Reload verify everything before a snapshot serves: the keyring,
// every data key and value, then the MAC; a refusal names the file and what
// failed. Put makes a new version of a secret; Remove deletes one;
// RotateKeyring rewraps the data keys under a new term; RotateRoot replaces
// the root key and its seal entries; Rewrap adds and drops seal entries.
// None of them re-encrypts a value. Every write is one atomic replacement of
// the file under a flock. A running Vault picks up writes by other processes
// with Reload (or Watch, which calls it on file events): snapshots are
// swapped atomically, a call in flight finishes with the snapshot it began
// with, and a bad, foreign or older file is refused while the last good
// snapshot keeps serving. Versions and Changed tell which credentials
// rotated. Open with WithMinGeneration refuses a file older than the
// generation the audit log last recorded (ErrRollback).
//
// # Memory
//
// In memory the root and term keys live in memguard Enclaves. A secret value
// is decrypted per use into a memguard LockedBuffer and destroyed afterwards;
// the [Secret] type prints as "[redacted]" everywhere. Locked memory is
// budgeted from RLIMIT_MEMLOCK, first come first served, so that memguard
// never hits the limit (it panics when it does).
//
// File layout (mode 0600, replaced atomically, writers flock "<file>.lock"):
//
//	wirken-vault/1
//	{"vault_id":…,"generation":…,"seals":[…],"keyring":…,"secrets":[…]}
//	mac:<base64 HMAC-SHA256(HKDF(root,"wirken/file-mac"), line1||line2)>
//
// Who may import it: cmd/wirken and hostagent. vault imports nothing else
// from this module; the proxy reaches it through an interface it declares.
package vault

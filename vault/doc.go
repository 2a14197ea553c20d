// Package vault is wirken's encrypted secret store: one file on disk holding
// credentials that the proxy injects into agent requests.
//
// A KMS or HSM seal (any go-kms-wrapping v2 wrapper, or the local AEAD key
// file from [AEADSeal]) wraps a random 32-byte root key; that is the only
// KMS call, made once by [Open]. The root key encrypts a keyring of term
// keys, each term key wraps the per-secret data keys, and each data key
// encrypts one secret value with AES-256-GCM. The additional data of a value
// binds it to the vault, its name, its version and the hosts it may be sent
// to, so a value moved to another slot or given another binding no longer
// decrypts. A MAC keyed from the root key covers the whole file and a
// generation counter increases with every write.
//
// In memory the root and term keys live in memguard Enclaves. A secret value
// is decrypted per use into a memguard LockedBuffer and destroyed afterwards;
// the [Secret] type prints as "[redacted]" everywhere. Locked memory is
// budgeted from RLIMIT_MEMLOCK so that memguard never hits the limit (it
// panics when it does).
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

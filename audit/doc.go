// Package audit is wirken's system of record: an append-only, tamper-evident
// log of every decision the proxy and the host agent make, plus the helpers
// that put a window onto it as OpenTelemetry spans.
//
// # The log
//
// The log is a JSON Lines file (mode 0600, opened O_APPEND; see Segments). Each line is
// one record, marshalled from a fixed Go struct so the field order never
// changes:
//
//	{"v":1,"seq":0,"ts":"2026-11-25T18:00:03.123456Z","type":"startup","prev":"",...}
//
// seq starts at 0 and is contiguous. Each line is an RFC 6962 Merkle leaf
// whose leaf hash is tlog.RecordHash(line without its '\n'); prev holds the
// base64 (standard encoding) leaf hash of the previous line, so the lines form
// a hash chain as well as the leaves of a Merkle tree. Only the canonical
// encoding (what json.Marshal of the struct produces) is valid, so two readers
// can never disagree about what a line says.
//
// Append is durable when it returns: concurrent callers are group-committed
// (one write and one fdatasync per batch). A failed write fails every caller
// of that batch, the file is cut back to its last durable length, and later
// Appends try again, so the log fails closed and heals by itself when the
// disk does. Open takes an exclusive lock (one writer per log), refuses a
// file that does not verify, repairs a torn final line left by a crash and
// records the repair as a "recovered" record.
//
// # Checkpoints
//
// With a Signer (NewSigner: Ed25519 from a 32-byte seed the daemon derives
// from the vault's root key) the writer appends a "checkpoint" record every
// K records, every T if records were added, and at Close. Its detail is a
// C2SP tlog-checkpoint signed note (golang.org/x/mod/sumdb/note):
//
//	<origin>
//	<tree size = the checkpoint's own seq, covering records 0..seq-1>
//	<base64 RFC 6962 root hash>
//
//	— <origin> <base64 key hash and signature>
//
// The writer keeps the tree as a compact range (one hash per set bit of the
// size), so appends and checkpoints cost the same at any size; Open
// rebuilds it in its one scan. The public verifier key (WriteVerifierKey)
// is all a verifier needs: Verify with WithVerifierKey checks every
// signature, and WithTrustedCheckpoint (a note saved elsewhere earlier)
// detects a log that was rolled back or rewritten, even re-signed with a
// stolen key. Records after the last checkpoint are "unsealed": no
// signature covers them yet and cutting them off leaves no trace locally,
// so checkpoints are frequent, and the seq and leaf hash on every span are
// a witness kept off the host. Prove and CheckProof give and check an RFC
// 6962 inclusion proof of one record.
//
// # Segments
//
// When the active file passes a size it is sealed with a checkpoint,
// renamed to "<base>.000001.jsonl" (then 000002, ...), and a new active file
// starts with a "segment" record: seq and prev continue the chain and its
// detail carries the tree size and frontier hashes, followed by a
// checkpoint that signs them. A run of retained segments therefore verifies
// without the ones before it (VerifyFiles, SegmentPaths), and old segments
// can be deleted (WithRetention). Follow reads the log as it grows, across
// rotations, for `wirken audit tail -f`.
//
// # Spans
//
// StartSpan and EndSpan emit one CLIENT span per upstream request following
// the OpenTelemetry HTTP client semantic conventions, through the OTel API
// only (the SDK and exporters are set up by the binary). EndSpan puts the
// audit seq and leaf hash on the span, so a tracing backend also acts as an
// external witness of the log's head.
//
// # Who may import it
//
// audit is a leaf: it imports nothing else from this module. hostagent,
// mitm (through a small interface it declares), cmd/wirken, vm-tests and
// bench may import it.
package audit

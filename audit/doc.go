// Package audit is wirken's system of record: an append-only, tamper-evident
// log of every decision the proxy and the host agent make, plus the helpers
// that put a window onto it as OpenTelemetry spans.
//
// # The log
//
// The log is one JSON Lines file (mode 0600, opened O_APPEND). Each line is
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
// Signed checkpoints (C2SP tlog-checkpoint notes over the tree of leaves
// 0..seq-1) will be added as records of type "checkpoint" carrying the signed
// note in the detail field; that needs no change to the line format.
//
// Append is durable when it returns: concurrent callers are group-committed
// (one write and one fdatasync per batch). A failed write fails every caller
// of that batch, the file is cut back to its last durable length, and later
// Appends try again. Open takes an exclusive lock (one writer per log),
// refuses a file that does not verify, repairs a torn final line left by a
// crash and records the repair as a "recovered" record. Verify checks a
// whole log and names the first bad line.
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

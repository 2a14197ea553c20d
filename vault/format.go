package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

const (
	magic          = "wirken-vault/1"
	magicPrefix    = "wirken-vault/"
	macPrefix      = "mac:"
	maxFileSize    = 64 << 20
	maxSeals       = 16
	maxSealBlob    = 64 << 10
	maxTerms       = 64
	maxValueLen    = 16 << 10
	termRecordLen  = 4 + keyLen
	vaultIDHexLen  = 32
	maxSealFieldLn = 256
)

// b64 is strict standard base64: one encoding per byte string, so a changed
// character always changes the decoded bytes.
var b64 = base64.StdEncoding.Strict()

// b64Decode decodes the canonical base64 of the vault file: Go's decoder skips
// line breaks even in strict mode, so they are refused first and every value
// has one spelling.
func b64Decode(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break inside base64")
	}
	return b64.DecodeString(s)
}

// fileBody is line 2 of the file. Field order is the canonical order.
type fileBody struct {
	VaultID    string        `json:"vault_id"`
	Generation uint64        `json:"generation"`
	Seals      []sealEntry   `json:"seals"`
	Keyring    string        `json:"keyring"`
	Secrets    []secretEntry `json:"secrets"`
}

// sealEntry is the root key wrapped by one seal; any one entry unseals.
type sealEntry struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	KeyID string `json:"key_id"`
	// Hint names the KMS key in words (address, key name…), never a
	// credential; seals from NewSeal set it, others leave it empty.
	Hint string `json:"hint,omitempty"`
	Root string `json:"root"` // base64(proto.Marshal(wrapping.BlobInfo))
}

// secretEntry is one version of one secret.
type secretEntry struct {
	Name    string    `json:"name"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	Hosts   []string  `json:"hosts"`
	Term    uint32    `json:"term"`
	DEK     string    `json:"dek"`   // base64(nonce || AES-GCM(term key, data key))
	Value   string    `json:"value"` // base64(nonce || AES-GCM(data key, value))
}

// parsedFile is a file split into its parts; nothing is verified but syntax.
type parsedFile struct {
	body   fileBody
	signed []byte // line 1 and line 2 with their newlines: the MAC input
	mac    []byte
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, a...)...)
}

// parseFile splits raw into magic, body and MAC and decodes the body. It
// checks syntax and canonical form only; see decodeBody for the contents.
func parseFile(raw []byte) (*parsedFile, error) {
	if len(raw) > maxFileSize {
		return nil, corrupt("file is larger than %d bytes", maxFileSize)
	}
	line1, rest, ok := bytes.Cut(raw, []byte("\n"))
	if !ok || string(line1) != magic {
		if bytes.HasPrefix(raw, []byte(magicPrefix)) {
			v := line1[len(magicPrefix):]
			return nil, fmt.Errorf("%w: line 1: format %q, this build reads %q", ErrUnsupportedVersion, truncate(string(v), 16), "1")
		}
		return nil, corrupt("line 1: bad magic, not a wirken vault file")
	}
	body, tail, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return nil, corrupt("line 2: missing body line")
	}
	macLine, ok := bytes.CutSuffix(tail, []byte("\n"))
	if !ok || bytes.IndexByte(macLine, '\n') >= 0 || !bytes.HasPrefix(macLine, []byte(macPrefix)) {
		return nil, corrupt("line 3: want the last line %q", "mac:<base64>")
	}
	mac, err := b64Decode(string(macLine[len(macPrefix):]))
	if err != nil || len(mac) != 32 {
		return nil, corrupt("line 3: MAC is not base64 of 32 bytes")
	}
	p := &parsedFile{signed: raw[:len(line1)+1+len(body)+1], mac: mac}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p.body); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, corrupt("line 2: data after the JSON body")
	}
	canon, err := json.Marshal(&p.body)
	if err != nil || !bytes.Equal(canon, body) {
		return nil, corrupt("line 2: body is not in canonical form")
	}
	return p, nil
}

// jsonError names line 2 and the column of a JSON error.
func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return corrupt("line 2, column %d: invalid JSON: %v", se.Offset, se)
	case errors.As(err, &te):
		return corrupt("line 2, column %d: field %q has the wrong type", te.Offset, te.Field)
	default:
		return corrupt("line 2: invalid JSON body: %v", err)
	}
}

// secretRec is a validated, decoded secret version.
type secretRec struct {
	name       string
	version    int
	created    time.Time
	hosts      []string
	bindingSum string
	term       uint32
	dek        []byte
	value      []byte
}

// decodedBody is a fileBody whose every field was validated and decoded.
type decodedBody struct {
	seals   [][]byte // decoded Root of each seal entry
	keyring []byte
	secrets []*secretRec // in file order: by name, then version
	current map[string]*secretRec
}

// decodeBody validates everything in the body that can be checked without
// keys, so later code never meets a bad length or a missing reference.
func decodeBody(b *fileBody) (*decodedBody, error) {
	if len(b.VaultID) != vaultIDHexLen || !isLowerHex(b.VaultID) {
		return nil, corrupt("vault_id is not %d lower-case hex digits", vaultIDHexLen)
	}
	if b.Generation < 1 {
		return nil, corrupt("generation is 0")
	}
	d := &decodedBody{current: make(map[string]*secretRec)}
	if len(b.Seals) < 1 || len(b.Seals) > maxSeals {
		return nil, corrupt("want 1 to %d seal entries, have %d", maxSeals, len(b.Seals))
	}
	ids := make(map[string]bool)
	for i, s := range b.Seals {
		if s.ID == "" || len(s.ID) > maxSealFieldLn || ids[s.ID] {
			return nil, corrupt("seal entry %d: id is empty, too long or repeated", i)
		}
		ids[s.ID] = true
		if s.Type == "" || len(s.Type) > maxSealFieldLn || len(s.KeyID) > maxSealFieldLn || len(s.Hint) > maxSealFieldLn {
			return nil, corrupt("seal entry %q: type is empty or a field is too long", s.ID)
		}
		if !printable(s.ID) || !printable(s.Type) || !printable(s.KeyID) || !printable(s.Hint) {
			return nil, corrupt("seal entry %d: a field has characters other than printable ASCII", i)
		}
		blob, err := b64Decode(s.Root)
		if err != nil || len(blob) == 0 || len(blob) > maxSealBlob {
			return nil, corrupt("seal entry %q: root is not base64 of 1 to %d bytes", s.ID, maxSealBlob)
		}
		d.seals = append(d.seals, blob)
	}
	kr, err := b64Decode(b.Keyring)
	n := len(kr) - gcmOverhead
	if err != nil || n < termRecordLen || n%termRecordLen != 0 || n/termRecordLen > maxTerms {
		return nil, corrupt("keyring is not base64 of an encrypted list of 1 to %d terms", maxTerms)
	}
	d.keyring = kr
	if b.Secrets == nil {
		return nil, corrupt("secrets is not a list")
	}
	var prev *secretRec
	for i := range b.Secrets {
		r, err := decodeSecret(&b.Secrets[i])
		if err != nil {
			return nil, fmt.Errorf("secret entry %d: %w", i, err)
		}
		if prev != nil && (r.name < prev.name || r.name == prev.name && r.version <= prev.version) {
			return nil, corrupt("secret entry %d: entries are not sorted by name and version, or repeat", i)
		}
		d.secrets = append(d.secrets, r)
		d.current[r.name] = r // sorted, so the last one seen is the newest
		prev = r
	}
	return d, nil
}

func decodeSecret(s *secretEntry) (*secretRec, error) {
	if !validName(s.Name) {
		return nil, corrupt("invalid name")
	}
	if s.Version < 1 {
		return nil, corrupt("secret %q: version below 1", s.Name)
	}
	if s.Created.IsZero() {
		return nil, corrupt("secret %q: no creation time", s.Name)
	}
	if s.Hosts == nil {
		return nil, corrupt("secret %q: hosts is not a list", s.Name)
	}
	hosts, err := normalizeBinding(s.Hosts)
	if err != nil || !slices.Equal(hosts, s.Hosts) {
		return nil, corrupt("secret %q: hosts are invalid or not in canonical form", s.Name)
	}
	sum, err := bindingDigest(hosts)
	if err != nil {
		return nil, err
	}
	if s.Term < 1 {
		return nil, corrupt("secret %q: term below 1", s.Name)
	}
	dek, err := b64Decode(s.DEK)
	if err != nil || len(dek) != dekBlobLen {
		return nil, corrupt("secret %q version %d: dek is not base64 of %d bytes", s.Name, s.Version, dekBlobLen)
	}
	val, err := b64Decode(s.Value)
	if err != nil || len(val) <= gcmOverhead || len(val) > gcmOverhead+maxValueLen {
		return nil, corrupt("secret %q version %d: value is not base64 of an encrypted 1 to %d bytes", s.Name, s.Version, maxValueLen)
	}
	return &secretRec{
		name: s.Name, version: s.Version, created: s.Created, hosts: hosts,
		bindingSum: sum, term: s.Term, dek: dek, value: val,
	}, nil
}

// parseKeyring splits a decrypted keyring into terms; terms strictly increase.
func parseKeyring(pt []byte) ([]uint32, error) {
	if len(pt) == 0 || len(pt)%termRecordLen != 0 {
		return nil, corrupt("keyring plaintext has a bad length")
	}
	var terms []uint32
	for off := 0; off < len(pt); off += termRecordLen {
		t := binary.BigEndian.Uint32(pt[off:])
		if t < 1 || len(terms) > 0 && t <= terms[len(terms)-1] {
			return nil, corrupt("keyring terms are not increasing from 1")
		}
		terms = append(terms, t)
	}
	return terms, nil
}

// encodeFile renders body and appends the MAC keyed from root.
func encodeFile(b *fileBody, root []byte) ([]byte, error) {
	j, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encoding vault body: %w", err)
	}
	out := make([]byte, 0, len(magic)+len(j)+len(macPrefix)+48)
	out = append(out, magic+"\n"...)
	out = append(out, j...)
	out = append(out, '\n')
	mac, err := fileMAC(root, out)
	if err != nil {
		return nil, err
	}
	out = append(out, macPrefix...)
	out = b64.AppendEncode(out, mac)
	return append(out, '\n'), nil
}

// validName reports whether name matches ^[a-z][a-z0-9_.-]{0,62}$.
func validName(name string) bool {
	if len(name) < 1 || len(name) > 63 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// printable reports whether s is printable ASCII (space to tilde).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func isLowerHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && bytes.Equal([]byte(s), bytes.ToLower([]byte(s)))
}

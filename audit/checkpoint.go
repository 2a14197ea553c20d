package audit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// checkpoint is the body of a C2SP tlog-checkpoint: the tree of the first
// size leaves has root hash root. wirken writes no extension lines.
type checkpoint struct {
	origin string
	size   uint64
	root   tlog.Hash
}

// text returns the note text: origin, size and base64 root, one per line.
func (c checkpoint) text() string {
	return c.origin + "\n" + strconv.FormatUint(c.size, 10) + "\n" + encodeHash(c.root) + "\n"
}

// parseCheckpointText parses a note text written by checkpoint.text. It
// accepts only that canonical form (no extension lines, size > 0).
func parseCheckpointText(text string) (checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return checkpoint{}, errors.New("checkpoint text is not exactly origin, size and root lines")
	}
	if validOrigin(lines[0]) != nil {
		return checkpoint{}, errors.New("checkpoint origin is not a valid name")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return checkpoint{}, errors.New("checkpoint size is not a decimal number")
	}
	if size == 0 {
		return checkpoint{}, errors.New("checkpoint is of an empty tree")
	}
	root, err := decodeHash(lines[2])
	if err != nil {
		return checkpoint{}, errors.New("checkpoint root is not a base64 SHA-256 hash")
	}
	return checkpoint{origin: lines[0], size: size, root: root}, nil
}

// keyring is the set of verifier keys checkpoints must be signed with. A nil
// *keyring checks no signatures (only the checkpoint's form and root).
type keyring struct {
	known note.Verifiers
}

// newKeyring parses note verifier keys. It returns nil for no keys.
func newKeyring(keys []string) (*keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	vs := make([]note.Verifier, 0, len(keys))
	for _, k := range keys {
		v, err := note.NewVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("parsing verifier key: %w", err)
		}
		vs = append(vs, v)
	}
	return &keyring{known: note.VerifierList(vs...)}, nil
}

// unknownKeys treats every signature as made by an unknown key, so that
// note.Open parses a note without verifying it.
type unknownKeys struct{}

func (unknownKeys) Verifier(name string, hash uint32) (note.Verifier, error) {
	return nil, &note.UnknownVerifierError{Name: name, KeyHash: hash}
}

// open parses a signed checkpoint note. With a keyring the note must carry
// a valid signature by one of its keys, named after the checkpoint's
// origin; without one the signatures are parsed but not checked. Errors are
// fixed descriptions that never quote the note.
func (k *keyring) open(msg []byte) (checkpoint, error) {
	if k == nil {
		_, err := note.Open(msg, unknownKeys{})
		var unv *note.UnverifiedNoteError
		if !errors.As(err, &unv) {
			return checkpoint{}, errors.New("checkpoint is not a well-formed signed note")
		}
		return parseCheckpointText(unv.Note.Text)
	}
	n, err := note.Open(msg, k.known)
	if err != nil {
		var unv *note.UnverifiedNoteError
		var inv *note.InvalidSignatureError
		switch {
		case errors.As(err, &unv):
			return checkpoint{}, errors.New("checkpoint is not signed by a trusted key (signed by another key?)")
		case errors.As(err, &inv):
			return checkpoint{}, errors.New("checkpoint signature does not verify")
		default:
			return checkpoint{}, errors.New("checkpoint is not a well-formed signed note")
		}
	}
	cp, err := parseCheckpointText(n.Text)
	if err != nil {
		return checkpoint{}, err
	}
	for _, s := range n.Sigs {
		if s.Name == cp.origin {
			return cp, nil
		}
	}
	return checkpoint{}, errors.New("checkpoint origin is not the name of the key that signed it")
}

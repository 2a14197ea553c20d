package policy

import (
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// BurntSushi/toml does not export where keys are, and its per-key positions
// are keyed without array indexes (every [[rules]] shares "rules.name"). So
// after the TOML parser has accepted a document, a small scanner walks the
// same source once and records where each field path starts: a key/value at
// its key, an array element at its first byte, a table at its header. The
// scanner only ever sees valid TOML, which keeps it short; it never fails,
// and a path it did not record falls back to its nearest recorded parent.

// Field paths: keys joined by ".", array elements as "[i]", keys that are not
// bare TOML keys quoted with strconv.Quote: agents.demo, rules[1].hosts[0],
// agents."Bad Name".

func quoteKey(k string) string {
	if k == "" {
		return `""`
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return strconv.Quote(k)
		}
	}
	return k
}

func childPath(parent, key string) string {
	if parent == "" {
		return quoteKey(key)
	}
	return parent + "." + quoteKey(key)
}

func indexPath(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// parentPath strips the last key or index from a field path.
func parentPath(p string) (string, bool) {
	last := -1
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '"':
			for i++; i < len(p) && p[i] != '"'; i++ {
				if p[i] == '\\' {
					i++
				}
			}
		case '.', '[':
			last = i
		}
	}
	if last <= 0 {
		return "", false
	}
	return p[:last], true
}

// maxScanDepth bounds the scanner's recursion into nested arrays and inline
// tables; deeper values are skipped without recording positions.
const maxScanDepth = 16

const utf8BOM = "\xef\xbb\xbf"

// positions maps field paths to byte offsets in the source.
type positions struct {
	at    map[string]int
	lines []int // byte offset where each line starts
	bom   bool
}

// newPositions indexes the lines of src; it records no field paths.
func newPositions(src string) *positions {
	p := &positions{at: make(map[string]int), lines: []int{0}, bom: strings.HasPrefix(src, utf8BOM)}
	for i := 0; i < len(src); i++ {
		if src[i] == '\n' {
			p.lines = append(p.lines, i+1)
		}
	}
	return p
}

// scanPositions indexes src, which must be valid TOML, and records where
// each field path starts.
func scanPositions(src string) *positions {
	p := newPositions(src)
	s := scanner{src: src, at: p.at, aot: make(map[string]int)}
	if p.bom {
		s.i = len(utf8BOM)
	}
	s.document()
	return p
}

// lineCol converts a byte offset into a 1-based line and byte column.
func (p *positions) lineCol(off int) (line, col int) {
	line = sort.Search(len(p.lines), func(i int) bool { return p.lines[i] > off })
	col = off - p.lines[line-1] + 1
	if line == 1 && p.bom {
		col = max(col-len(utf8BOM), 1)
	}
	return line, col
}

// lookup returns the position of path, or of its nearest recorded parent, or
// 1:1.
func (p *positions) lookup(path string) (line, col int) {
	for {
		if off, ok := p.at[path]; ok {
			return p.lineCol(off)
		}
		parent, ok := parentPath(path)
		if !ok {
			return 1, 1
		}
		path = parent
	}
}

type scanner struct {
	src string
	i   int
	at  map[string]int
	aot map[string]int // array-of-tables path (with parent indexes) -> elements so far
}

func (s *scanner) record(path string, off int) {
	if _, ok := s.at[path]; !ok {
		s.at[path] = off
	}
}

func (s *scanner) peek(c byte) bool { return s.i < len(s.src) && s.src[s.i] == c }

// skipSpace skips blanks and comments, and newlines too if nl is set.
func (s *scanner) skipSpace(nl bool) {
	for s.i < len(s.src) {
		switch s.src[s.i] {
		case ' ', '\t':
			s.i++
		case '#':
			for s.i < len(s.src) && s.src[s.i] != '\n' {
				s.i++
			}
		case '\r', '\n':
			if !nl {
				return
			}
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) document() {
	ctx := ""
	for s.i < len(s.src) {
		before := s.i
		s.skipSpace(true)
		if s.i >= len(s.src) {
			return
		}
		if s.src[s.i] == '[' {
			ctx = s.header()
		} else {
			s.keyValue(ctx, 0)
		}
		s.skipSpace(false)
		if s.i == before {
			s.i++ // cannot happen on valid TOML; guarantees progress anyway
		}
	}
}

// header scans "[a.b]" or "[[a.b]]" and returns the table's field path.
func (s *scanner) header() string {
	start := s.i
	s.i++
	arr := s.peek('[')
	if arr {
		s.i++
	}
	s.skipSpace(false)
	keys := s.keys()
	s.skipSpace(false)
	for n := 0; n < 2 && s.peek(']'); n++ {
		s.i++
	}
	path := ""
	for j, k := range keys {
		path = childPath(path, k)
		if arr && j == len(keys)-1 {
			n := s.aot[path]
			s.aot[path] = n + 1
			s.record(path, start)
			path = indexPath(path, n)
		} else if n, ok := s.aot[path]; ok {
			path = indexPath(path, n-1)
		}
		s.record(path, start)
	}
	return path
}

func (s *scanner) keyValue(ctx string, depth int) {
	start := s.i
	path := ctx
	for _, k := range s.keys() {
		path = childPath(path, k)
		s.record(path, start)
	}
	s.skipSpace(false)
	if s.peek('=') {
		s.i++
	}
	s.skipSpace(false)
	s.value(path, depth)
}

// keys scans a dotted key.
func (s *scanner) keys() []string {
	var ks []string
	for s.i < len(s.src) {
		ks = append(ks, s.simpleKey())
		s.skipSpace(false)
		if !s.peek('.') {
			break
		}
		s.i++
		s.skipSpace(false)
	}
	return ks
}

func (s *scanner) simpleKey() string {
	start := s.i
	if s.i >= len(s.src) {
		return ""
	}
	switch s.src[s.i] {
	case '\'':
		s.i++
		for s.i < len(s.src) && s.src[s.i] != '\'' && s.src[s.i] != '\n' {
			s.i++
		}
		k := s.src[start+1 : s.i]
		if s.peek('\'') {
			s.i++
		}
		return k
	case '"':
		return s.basicKey()
	}
	for s.i < len(s.src) {
		c := s.src[s.i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			break
		}
		s.i++
	}
	return s.src[start:s.i]
}

// basicKey scans a double-quoted key and decodes its escapes the way TOML
// does.
func (s *scanner) basicKey() string {
	s.i++ // opening quote
	var b strings.Builder
	for s.i < len(s.src) {
		c := s.src[s.i]
		switch c {
		case '"':
			s.i++
			return b.String()
		case '\n':
			return b.String()
		case '\\':
			if s.i+1 >= len(s.src) {
				s.i++
				return b.String()
			}
			e := s.src[s.i+1]
			s.i += 2
			switch e {
			case 'b':
				b.WriteByte('\b')
			case 't':
				b.WriteByte('\t')
			case 'n':
				b.WriteByte('\n')
			case 'f':
				b.WriteByte('\f')
			case 'r':
				b.WriteByte('\r')
			case 'e':
				b.WriteByte(0x1b)
			case '"', '\\':
				b.WriteByte(e)
			case 'x', 'u', 'U':
				n := 2
				switch e {
				case 'u':
					n = 4
				case 'U':
					n = 8
				}
				if s.i+n <= len(s.src) {
					if r, err := strconv.ParseUint(s.src[s.i:s.i+n], 16, 32); err == nil && utf8.ValidRune(rune(r)) {
						b.WriteRune(rune(r))
					}
					s.i += n
				}
			default:
				b.WriteByte('\\')
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
			s.i++
		}
	}
	return b.String()
}

// value scans one value, recording array elements and inline-table keys.
func (s *scanner) value(path string, depth int) {
	if s.i >= len(s.src) {
		return
	}
	switch s.src[s.i] {
	case '"', '\'':
		s.skipString()
	case '[':
		if depth >= maxScanDepth {
			s.skipNested()
			return
		}
		s.i++
		for n := 0; s.i < len(s.src); {
			s.skipSpace(true)
			if s.i >= len(s.src) {
				return
			}
			switch s.src[s.i] {
			case ']':
				s.i++
				return
			case ',':
				s.i++
				continue
			}
			elem := indexPath(path, n)
			s.record(elem, s.i)
			before := s.i
			s.value(elem, depth+1)
			if s.i == before {
				s.i++
			}
			n++
		}
	case '{':
		if depth >= maxScanDepth {
			s.skipNested()
			return
		}
		s.i++
		for s.i < len(s.src) {
			s.skipSpace(true)
			if s.i >= len(s.src) {
				return
			}
			switch s.src[s.i] {
			case '}':
				s.i++
				return
			case ',':
				s.i++
				continue
			}
			before := s.i
			s.keyValue(path, depth+1)
			if s.i == before {
				s.i++
			}
		}
	default: // number, boolean or datetime (which may hold a space)
		for s.i < len(s.src) && strings.IndexByte(",]}#\r\n", s.src[s.i]) < 0 {
			s.i++
		}
	}
}

// skipNested skips an array or inline table without recursion.
func (s *scanner) skipNested() {
	depth := 0
	for s.i < len(s.src) {
		switch s.src[s.i] {
		case '"', '\'':
			s.skipString()
			continue
		case '#':
			for s.i < len(s.src) && s.src[s.i] != '\n' {
				s.i++
			}
			continue
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth <= 0 {
				s.i++
				return
			}
		}
		s.i++
	}
}

// skipString skips a basic, literal or multi-line string.
func (s *scanner) skipString() {
	defer func() { s.i = min(s.i, len(s.src)) }()
	q := s.src[s.i]
	if strings.HasPrefix(s.src[s.i:], string([]byte{q, q, q})) {
		s.i += 3
		for s.i < len(s.src) {
			if s.src[s.i] == '\\' && q == '"' {
				s.i += 2
				continue
			}
			if strings.HasPrefix(s.src[s.i:], string([]byte{q, q, q})) {
				for s.i < len(s.src) && s.src[s.i] == q { // up to two quotes may end the content
					s.i++
				}
				return
			}
			s.i++
		}
		return
	}
	s.i++
	for s.i < len(s.src) && s.src[s.i] != '\n' {
		c := s.src[s.i]
		s.i++
		if c == q {
			return
		}
		if c == '\\' && q == '"' {
			s.i++
		}
	}
}

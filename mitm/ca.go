package mitm

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"sync"
	"time"
)

// leafLifetime is how long a minted leaf is valid. Leaves are cheap to mint (ECDSA P-256), so
// they are short-lived; the cache renews them well before they expire.
const (
	leafLifetime  = 24 * time.Hour
	leafRenew     = 12 * time.Hour
	leafCacheSize = 4096
)

// CA is the wirken certificate authority that signs interception leaves. Its key never leaves
// the host; only the certificate is handed to agents.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey

	mu       sync.Mutex
	leaves   map[string]*leafEntry
	lru      list.List // of *leafEntry, most recently used first
	maxLeafs int       // leafCacheSize; smaller in tests
}

// leafEntry is one name's leaf. Its fields are written once, before done is closed, and only
// read after: waiting on done is what makes reading them safe.
type leafEntry struct {
	name    string
	elem    *list.Element // in CA.lru; guarded by CA.mu
	done    chan struct{}
	cert    *tls.Certificate
	err     error
	expires time.Time
}

func (e *leafEntry) ready() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// GenerateCA creates a new ECDSA P-256 CA and writes the certificate (0644) and the key (0600).
// It refuses to overwrite either file.
func GenerateCA(certPath, keyPath, name string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"wirken"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("signing CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding CA key: %w", err)
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		_ = os.Remove(keyPath)
		return err
	}
	return nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	return nil
}

// LoadCA reads a CA written by GenerateCA. It refuses a key file that group or others can read.
func LoadCA(certPath, keyPath string) (*CA, error) {
	st, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("CA key %s: mode %#o is readable by others; want 0600", keyPath, st.Mode().Perm())
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("CA certificate %s: no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("CA key %s: no PEM PRIVATE KEY block", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("CA key %s: want an ECDSA P-256 key", keyPath)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match certificate %s", keyPath, certPath)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %s is not a CA", certPath)
	}
	return &CA{cert: cert, certPEM: certPEM, key: key, leaves: make(map[string]*leafEntry), maxLeafs: leafCacheSize}, nil
}

// CertPEM returns the CA certificate in PEM form, to be trusted by agents.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Leaf returns a certificate for name signed by the CA. Leaves are cached per name in an LRU of
// leafCacheSize names, renewed after leafRenew, and minted once even when many connections ask
// at the same time (the others wait for that one mint).
func (ca *CA) Leaf(name string) (*tls.Certificate, error) {
	now := time.Now()
	ca.mu.Lock()
	e := ca.leaves[name]
	if e != nil && e.ready() && e.err == nil && now.After(e.expires) {
		ca.drop(e)
		e = nil
	}
	mint := e == nil
	if mint {
		for ca.lru.Len() >= ca.maxLeafs {
			ca.drop(ca.lru.Back().Value.(*leafEntry)) // a waiter keeps its own pointer
		}
		e = &leafEntry{name: name, done: make(chan struct{})}
		e.elem = ca.lru.PushFront(e)
		ca.leaves[name] = e
	} else {
		ca.lru.MoveToFront(e.elem)
	}
	ca.mu.Unlock()
	if mint {
		e.cert, e.err = ca.mint(name, now)
		e.expires = now.Add(leafRenew)
		close(e.done)
	}
	<-e.done
	if e.err != nil {
		ca.mu.Lock()
		if ca.leaves[name] == e {
			ca.drop(e)
		}
		ca.mu.Unlock()
	}
	return e.cert, e.err
}

// drop removes e from the cache; ca.mu is held.
func (ca *CA) drop(e *leafEntry) {
	ca.lru.Remove(e.elem)
	if ca.leaves[e.name] == e {
		delete(ca.leaves, e.name)
	}
}

func (ca *CA) mint(name string, now time.Time) (*tls.Certificate, error) {
	if name == "" {
		return nil, errors.New("minting leaf: empty server name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("minting leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing leaf for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing leaf for %s: %w", name, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// Fingerprint is the SHA-256 of the CA certificate, for display.
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.cert.Raw)
	return fmt.Sprintf("%X", sum[:])
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial: %w", err)
	}
	return s, nil
}

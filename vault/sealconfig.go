package vault

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"

	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
)

// SealConfig selects and configures a seal, as written in wirken's
// configuration: a type and its options. Options are strings; booleans are
// "true" or "false". Unknown options are refused, so a typo never silently
// falls back to a default. Environment variables that the underlying client
// libraries would read instead of an option are disabled where the library
// allows it and refused where it does not (see each type).
//
// Types and options (required ones marked *):
//
//	aead           key_file*                 a local key file (CreateAEADKeyFile)
//	transit        address*, token* | token_file*, mount_path*, key_name*,
//	               namespace, disable_renewal (default true), tls_ca_cert,
//	               tls_ca_path, tls_client_cert, tls_client_key, tls_server_name
//	awskms         kms_key_id*, region*, endpoint, access_key + secret_key,
//	               session_token, shared_creds_filename, shared_creds_profile,
//	               web_identity_token_file, role_arn, role_session_name
//	gcpckms        project*, region*, key_ring*, crypto_key*, credentials
//	azurekeyvault  vault_name*, key_name*, tenant_id, client_id,
//	               client_secret | client_secret_file, environment, resource
//	pkcs11         lib*, token_label* | slot*, pin* | pin_file*, key_label*
//	tpm2           device (default /dev/tpmrm0; a Unix socket means swtpm)
//
// Files holding credentials (token_file, pin_file, client_secret_file,
// credentials) are refused when group or other may read them.
type SealConfig struct {
	Type    string
	Options map[string]string
}

// NewSeal builds the seal cfg describes. Seals that talk to a KMS check
// their configuration with one call to it (go-kms-wrapping does that inside
// SetConfig, without a deadline of its own); NewSeal bounds that call by
// ctx. Pass the seal to FinalizeSeal when done with it. Errors name the seal
// type and option ("seal transit: option address: required") and wrap
// ErrInvalid, or ErrUnavailable for a type this build does not include; no
// error contains a credential.
func NewSeal(ctx context.Context, cfg SealConfig) (Seal, error) {
	p, err := planSeal(cfg)
	if err != nil {
		return nil, err
	}
	s, err := p.build(ctx)
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", cfg.Type, err)
	}
	return s, nil
}

// sealPlan is a validated configuration, ready to build a seal.
type sealPlan struct {
	build func(ctx context.Context) (Seal, error)
}

// planSeal validates cfg without touching the network or any device.
func planSeal(cfg SealConfig) (*sealPlan, error) {
	o := &sealOptions{typ: cfg.Type, m: cfg.Options}
	switch cfg.Type {
	case "aead":
		return planAEAD(o)
	case "transit":
		return planTransit(o)
	case "awskms":
		return planAWSKMS(o)
	case "gcpckms":
		return planGCPCKMS(o)
	case "azurekeyvault":
		return planAzureKeyVault(o)
	case "pkcs11":
		return planPKCS11(o)
	case "tpm2":
		return planTPM2(o)
	case "":
		return nil, &configError{"seal: type: required (one of " + strings.Join(sealTypes, ", ") + ")"}
	default:
		return nil, &configError{fmt.Sprintf("seal: type %q: unknown (one of %s)", truncate(cfg.Type, 40), strings.Join(sealTypes, ", "))}
	}
}

var sealTypes = []string{"aead", "transit", "awskms", "gcpckms", "azurekeyvault", "pkcs11", "tpm2"}

// configError is a configuration mistake. It prints exactly its message
// and matches ErrInvalid.
type configError struct{ msg string }

func (e *configError) Error() string        { return e.msg }
func (e *configError) Is(target error) bool { return target == ErrInvalid }

// sealOptions reads a seal's option map for one seal type.
type sealOptions struct {
	typ string
	m   map[string]string
}

func (o *sealOptions) errorf(opt, format string, a ...any) error {
	return &configError{fmt.Sprintf("seal %s: option %s: ", o.typ, opt) + fmt.Sprintf(format, a...)}
}

// known refuses options outside names, and options with empty values or
// control characters (values are never echoed: they may be credentials).
func (o *sealOptions) known(names ...string) error {
	keys := make([]string, 0, len(o.m))
	for k := range o.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(names, k) {
			return o.errorf(truncate(k, 40), "unknown (known: %s)", strings.Join(names, ", "))
		}
		v := o.m[k]
		if v == "" {
			return o.errorf(k, "empty value")
		}
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return o.errorf(k, "value contains control characters")
		}
	}
	return nil
}

func (o *sealOptions) get(name string) string { return o.m[name] }

func (o *sealOptions) required(name string) (string, error) {
	v := o.m[name]
	if v == "" {
		return "", o.errorf(name, "required")
	}
	return v, nil
}

// exactlyOne returns the name of the one option of names that is set.
func (o *sealOptions) exactlyOne(names ...string) (string, error) {
	var set []string
	for _, n := range names {
		if o.m[n] != "" {
			set = append(set, n)
		}
	}
	switch len(set) {
	case 1:
		return set[0], nil
	case 0:
		return "", o.errorf(strings.Join(names, " or "), "required")
	default:
		return "", o.errorf(strings.Join(set, " and "), "give only one")
	}
}

// boolean parses "true" or "false", def when the option is absent.
func (o *sealOptions) boolean(name string, def bool) (bool, error) {
	switch o.m[name] {
	case "":
		return def, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	default:
		return false, o.errorf(name, "want true or false")
	}
}

// noReference refuses values that go-kms-wrapping would treat as a file://
// or env:// reference and replace (its ParsePaths), so a credential always
// comes from where the configuration says.
func (o *sealOptions) noReference(names ...string) error {
	for _, n := range names {
		v := strings.ToLower(o.m[n])
		if strings.HasPrefix(v, "file:") || strings.HasPrefix(v, "env:") {
			return o.errorf(n, "file: and env: references are not supported (use the _file option)")
		}
	}
	return nil
}

// endpoint checks a URL option: https, or http only toward a loopback
// address (a KMS request carries the root key or its wrapping).
func (o *sealOptions) endpoint(name string) (string, error) {
	raw := o.m[name]
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", o.errorf(name, "want an http(s)://host[:port][/path] URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return "", o.errorf(name, "http is allowed only toward a loopback address; use https")
		}
	default:
		return "", o.errorf(name, "want an http(s)://host[:port][/path] URL")
	}
	return raw, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readSecretFile reads a credential from the file named by option name,
// refusing a file that group or other may access. Surrounding white space
// is dropped. The content never appears in an error.
func (o *sealOptions) readSecretFile(name string) ([]byte, error) {
	path := o.m[name]
	f, err := os.Open(path)
	if err != nil {
		return nil, o.errorf(name, "%v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, o.errorf(name, "%v", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, o.errorf(name, "%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, o.errorf(name, "%s has mode %04o; group or other may access it (chmod 600)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, o.errorf(name, "reading %s: %v", path, err)
	}
	out := bytes.Clone(bytes.TrimSpace(data))
	clear(data)
	if len(out) == 0 {
		return nil, o.errorf(name, "%s is empty", path)
	}
	return out, nil
}

// refuseEnv fails when one of vars is set: the client library would read it
// and override or extend the configuration.
func (o *sealOptions) refuseEnv(vars ...string) error {
	for _, v := range vars {
		if _, ok := os.LookupEnv(v); ok {
			return &configError{fmt.Sprintf("seal %s: environment variable %s is set; the client library would use it instead of the configuration (unset it)", o.typ, v)}
		}
	}
	return nil
}

// configuredSeal is a go-kms-wrapping wrapper built by NewSeal, with the
// hint recorded in its seal entry and what FinalizeSeal must release.
type configuredSeal struct {
	Seal
	hint     string
	finalize func(context.Context) error
}

func (s *configuredSeal) sealHint() string { return s.hint }

// Finalize releases the wrapper's resources.
func (s *configuredSeal) Finalize(ctx context.Context) error {
	if s.finalize == nil {
		return nil
	}
	return s.finalize(ctx)
}

// FinalizeSeal releases what a seal holds: transit's token renewal, a
// PKCS#11 session, a TPM connection. It accepts any Seal and does nothing
// for seals that hold nothing. Do not use the seal afterwards.
func FinalizeSeal(ctx context.Context, s Seal) error {
	switch f := s.(type) {
	case interface{ Finalize(context.Context) error }:
		return f.Finalize(ctx)
	case wrapping.InitFinalizer:
		return f.Finalize(ctx)
	case io.Closer:
		return f.Close()
	}
	return nil
}

// setConfig runs w.SetConfig bounded by ctx. go-kms-wrapping wrappers make
// a network call inside SetConfig with a context of their own; if ctx ends
// first, setConfig returns and finalize runs once SetConfig does finish.
// A panic inside SetConfig becomes an error.
func setConfig(ctx context.Context, w wrapping.Wrapper, finalize func(), opts ...wrapping.Option) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("%w: the wrapper panicked during configuration", ErrSeal)
			}
		}()
		_, err := w.SetConfig(ctx, opts...)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		go func() {
			if err := <-done; err == nil && finalize != nil {
				finalize()
			}
		}()
		return fmt.Errorf("configuring the wrapper: %w", ctx.Err())
	}
}

// planAEAD: the local key file seal.
func planAEAD(o *sealOptions) (*sealPlan, error) {
	if err := o.known("key_file"); err != nil {
		return nil, err
	}
	kf, err := o.required("key_file")
	if err != nil {
		return nil, err
	}
	return &sealPlan{build: func(ctx context.Context) (Seal, error) { return AEADSeal(ctx, kf) }}, nil
}

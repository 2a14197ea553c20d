package vault

import (
	"context"
	"strings"

	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
	"github.com/hashicorp/go-kms-wrapping/wrappers/transit/v2"
)

// transitEnv are the variables hashicorp/vault/api reads on its own (in
// DefaultConfig and NewClient) that would redirect the connection, weaken
// its TLS checks or change the namespace behind the configuration's back.
// go-kms-wrapping's own TRANSIT_WRAPPER_* and VAULT_TRANSIT_SEAL_* variables
// are switched off with WithDisallowEnvVars instead.
var transitEnv = []string{
	"VAULT_ADDR", "VAULT_AGENT_ADDR", "VAULT_CACERT", "VAULT_CACERT_BYTES", "VAULT_CAPATH",
	"VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_SKIP_VERIFY", "VAULT_TLS_SERVER_NAME",
	"VAULT_SRV_LOOKUP", "VAULT_HTTP_PROXY", "VAULT_PROXY_ADDR", "VAULT_NAMESPACE",
	"VAULT_DISABLE_REDIRECTS",
}

// planTransit: HashiCorp Vault's or OpenBao's transit secrets engine. The
// root key travels to the server inside an encrypt request, so address must
// be https (or http to loopback) and TLS verification cannot be turned off.
// Token renewal is off unless disable_renewal = "false"; FinalizeSeal stops
// it. Tested here against an in-test server implementing
// POST /v1/<mount>/encrypt/<key> and /decrypt/<key>.
func planTransit(o *sealOptions) (*sealPlan, error) {
	if _, ok := o.m["tls_skip_verify"]; ok {
		return nil, o.errorf("tls_skip_verify", "not supported: the connection carries the root key; give tls_ca_cert instead")
	}
	if err := o.known("address", "token", "token_file", "mount_path", "key_name", "namespace",
		"disable_renewal", "tls_ca_cert", "tls_ca_path", "tls_client_cert", "tls_client_key", "tls_server_name"); err != nil {
		return nil, err
	}
	addr, err := o.required("address")
	if err != nil {
		return nil, err
	}
	if addr, err = o.endpoint("address"); err != nil {
		return nil, err
	}
	tokenOpt, err := o.exactlyOne("token", "token_file")
	if err != nil {
		return nil, err
	}
	if err := o.noReference("token", "tls_client_key"); err != nil {
		return nil, err
	}
	mount, err := o.required("mount_path")
	if err != nil {
		return nil, err
	}
	key, err := o.required("key_name")
	if err != nil {
		return nil, err
	}
	disableRenewal, err := o.boolean("disable_renewal", true)
	if err != nil {
		return nil, err
	}
	if (o.get("tls_client_cert") == "") != (o.get("tls_client_key") == "") {
		return nil, o.errorf("tls_client_cert", "give tls_client_cert and tls_client_key together")
	}
	hint := "address=" + addr + " mount_path=" + strings.Trim(mount, "/") + " key_name=" + key
	if ns := o.get("namespace"); ns != "" {
		hint += " namespace=" + ns
	}
	return &sealPlan{build: func(ctx context.Context) (Seal, error) {
		if err := o.refuseEnv(transitEnv...); err != nil {
			return nil, err
		}
		var token string
		if tokenOpt == "token_file" {
			b, err := o.readSecretFile("token_file")
			if err != nil {
				return nil, err
			}
			token = string(b) // a Go string cannot be wiped; the client keeps it anyway
			clear(b)
		} else {
			token = o.get("token")
		}
		cfg := map[string]string{
			"address":         addr,
			"token":           token,
			"mount_path":      mount,
			"key_name":        key,
			"disable_renewal": boolString(disableRenewal),
		}
		for _, k := range []string{"namespace", "tls_ca_cert", "tls_ca_path", "tls_client_cert", "tls_client_key", "tls_server_name"} {
			if v := o.get(k); v != "" {
				cfg[k] = v
			}
		}
		w := transit.NewWrapper()
		finalize := func() { _ = w.Finalize(context.Background()) }
		if err := setConfig(ctx, w, finalize, wrapping.WithConfigMap(cfg), wrapping.WithDisallowEnvVars(true)); err != nil {
			return nil, err
		}
		return &configuredSeal{Seal: w, hint: hint, finalize: w.Finalize}, nil
	}}, nil
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

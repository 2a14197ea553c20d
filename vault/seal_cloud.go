package vault

import (
	"context"
	"fmt"

	wrapping "github.com/hashicorp/go-kms-wrapping/v2"
	"github.com/hashicorp/go-kms-wrapping/wrappers/awskms/v2"
	"github.com/hashicorp/go-kms-wrapping/wrappers/azurekeyvault/v2"
	"github.com/hashicorp/go-kms-wrapping/wrappers/gcpckms/v2"
)

// The cloud KMS seals. Their configuration is validated here (required
// options present, unknown ones refused, the wrappers' own environment
// variables switched off), but they are NOT exercised against a live
// service in this project's tests: there is no offline AWS, Google Cloud or
// Azure KMS to run them against. Each wrapper encrypts the root key locally
// under a fresh data key and has the KMS wrap only that data key
// (go-kms-wrapping's envelope encryption). Credentials otherwise come from
// the provider's usual chain (instance metadata, workload identity…).

// planAWSKMS: AWS KMS through go-kms-wrapping's awskms v2 (aws-sdk-go v1).
// region is required so the SDK never probes instance metadata for it.
func planAWSKMS(o *sealOptions) (*sealPlan, error) {
	if err := o.known("kms_key_id", "region", "endpoint", "access_key", "secret_key", "session_token",
		"shared_creds_filename", "shared_creds_profile", "web_identity_token_file", "role_arn", "role_session_name"); err != nil {
		return nil, err
	}
	keyID, err := o.required("kms_key_id")
	if err != nil {
		return nil, err
	}
	region, err := o.required("region")
	if err != nil {
		return nil, err
	}
	if (o.get("access_key") == "") != (o.get("secret_key") == "") {
		return nil, o.errorf("access_key", "give access_key and secret_key together")
	}
	if o.get("session_token") != "" && o.get("access_key") == "" {
		return nil, o.errorf("session_token", "needs access_key and secret_key")
	}
	if err := o.noReference("access_key", "secret_key", "session_token"); err != nil {
		return nil, err
	}
	hint := "region=" + region + " kms_key_id=" + keyID
	if o.get("endpoint") != "" {
		ep, err := o.endpoint("endpoint")
		if err != nil {
			return nil, err
		}
		hint += " endpoint=" + ep
	}
	cfg := copyOptions(o.m)
	cfg["disallow_env_vars"] = "true"
	return &sealPlan{build: func(ctx context.Context) (Seal, error) {
		w := awskms.NewWrapper()
		if err := setConfig(ctx, w, nil, wrapping.WithConfigMap(cfg), wrapping.WithDisallowEnvVars(true)); err != nil {
			return nil, err
		}
		return &configuredSeal{Seal: w, hint: hint}, nil
	}}, nil
}

// planGCPCKMS: Google Cloud KMS through go-kms-wrapping's gcpckms v2.
// credentials is the path of a service-account key file; without it the
// client uses Application Default Credentials.
func planGCPCKMS(o *sealOptions) (*sealPlan, error) {
	if err := o.known("project", "region", "key_ring", "crypto_key", "credentials"); err != nil {
		return nil, err
	}
	var parts [4]string
	for i, n := range []string{"project", "region", "key_ring", "crypto_key"} {
		v, err := o.required(n)
		if err != nil {
			return nil, err
		}
		parts[i] = v
	}
	hint := fmt.Sprintf("projects/%s/locations/%s/keyRings/%s/cryptoKeys/%s", parts[0], parts[1], parts[2], parts[3])
	cfg := copyOptions(o.m)
	return &sealPlan{build: func(ctx context.Context) (Seal, error) {
		if o.get("credentials") != "" {
			b, err := o.readSecretFile("credentials") // only to check its mode
			if err != nil {
				return nil, err
			}
			clear(b)
		}
		w := gcpckms.NewWrapper()
		if err := setConfig(ctx, w, nil, wrapping.WithConfigMap(cfg), wrapping.WithDisallowEnvVars(true)); err != nil {
			return nil, err
		}
		return &configuredSeal{Seal: w, hint: hint}, nil
	}}, nil
}

// planAzureKeyVault: Azure Key Vault through go-kms-wrapping's
// azurekeyvault v2. Without client_secret it uses managed identity.
func planAzureKeyVault(o *sealOptions) (*sealPlan, error) {
	if err := o.known("vault_name", "key_name", "tenant_id", "client_id", "client_secret", "client_secret_file",
		"environment", "resource"); err != nil {
		return nil, err
	}
	vaultName, err := o.required("vault_name")
	if err != nil {
		return nil, err
	}
	keyName, err := o.required("key_name")
	if err != nil {
		return nil, err
	}
	secretOpt := ""
	if o.get("client_secret") != "" || o.get("client_secret_file") != "" {
		if secretOpt, err = o.exactlyOne("client_secret", "client_secret_file"); err != nil {
			return nil, err
		}
		for _, n := range []string{"tenant_id", "client_id"} {
			if o.get(n) == "" {
				return nil, o.errorf(n, "required with %s", secretOpt)
			}
		}
	}
	hint := "vault_name=" + vaultName + " key_name=" + keyName
	return &sealPlan{build: func(ctx context.Context) (Seal, error) {
		cfg := copyOptions(o.m)
		delete(cfg, "client_secret_file")
		if secretOpt == "client_secret_file" {
			b, err := o.readSecretFile("client_secret_file")
			if err != nil {
				return nil, err
			}
			cfg["client_secret"] = string(b)
			clear(b)
		}
		cfg["disallow_env_vars"] = "true"
		w := azurekeyvault.NewWrapper()
		if err := setConfig(ctx, w, nil, wrapping.WithConfigMap(cfg), wrapping.WithDisallowEnvVars(true)); err != nil {
			return nil, err
		}
		return &configuredSeal{Seal: w, hint: hint}, nil
	}}, nil
}

func copyOptions(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

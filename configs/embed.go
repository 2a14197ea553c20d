// Package configs holds the example configuration and the systemd unit, embedded so that
// `wirken install` can lay them out from the binary alone. Only cmd/ imports it.
package configs

import "embed"

// Files are wirken.toml, policy.toml, wirken.service and the other examples in this directory.
//
//go:embed wirken.toml policy.toml wirken.service otel-collector.yaml
var Files embed.FS

// Package configs holds the example configuration and the systemd unit, embedded so that
// `wirken install` can lay them out from the binary alone. Only cmd/ imports it.
package configs

import "embed"

// Files are every example in this directory: wirken.toml, policy.toml, wirken.service, ...
//
//go:embed *.toml *.yaml *.service
var Files embed.FS

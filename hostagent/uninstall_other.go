//go:build !linux

package hostagent

import "io"

// UninstallSpec says what `wirken uninstall` removes.
type UninstallSpec struct {
	Root, Prefix string
	Config       *Config
	Force, Purge bool
	Out          io.Writer
}

// Uninstall is only available on Linux.
func Uninstall(UninstallSpec) error { return errLinuxOnly }

// Detach is only available on Linux.
func Detach(*Config, io.Writer) error { return errLinuxOnly }

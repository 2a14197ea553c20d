//go:build !linux

package hostagent

import (
	"context"
	"errors"
)

var errLinuxOnly = errors.New("wirken's host agent runs on Linux only")

// Run is only available on Linux.
func Run(context.Context, *Config, Telemetry, chan<- struct{}) error {
	return errLinuxOnly
}

// ExecSpec says what to launch as which agent.
type ExecSpec struct {
	Agent     string
	User      string
	AllowRoot bool
	Argv      []string
}

// Exec is only available on Linux.
func Exec(context.Context, *Client, ExecSpec) (int, error) { return 0, errLinuxOnly }

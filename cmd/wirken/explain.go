package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/wirken/wirken/hostagent"
	"github.com/wirken/wirken/policy"
)

// policyExplain prints which rule and credential apply to one request, or why it is denied.
func policyExplain(args []string) error {
	fs := newFlags("policy explain")
	config := fs.String("config", defaultConfig(), "daemon configuration `file` (to find the policy)")
	file := fs.String("policy", "", "policy `file` (default: the config's)")
	agent := fs.String("agent", "", "agent `name` (required)")
	method := fs.String("method", "GET", "HTTP `method`")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *agent == "" {
		return usageError("policy explain needs --agent NAME and exactly one URL")
	}
	if *file == "" {
		cfg, err := hostagent.LoadConfig(*config)
		if err != nil {
			return err
		}
		*file = cfg.Policy
	}
	p, err := loadPolicy(*file)
	if err != nil {
		return err
	}
	out, err := p.Explain(*agent, *method, fs.Arg(0))
	if err != nil {
		return usageError("%v", err)
	}
	fmt.Print(out)
	return nil
}

// loadPolicy loads a policy file, printing each of its errors on stderr.
func loadPolicy(file string) (*policy.Policy, error) {
	p, err := policy.Load(file)
	if err != nil {
		var errs policy.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(os.Stderr, e)
			}
			return nil, &exitError{code: 1, err: fmt.Errorf("%s: %d error(s)", file, len(errs))}
		}
		return nil, err
	}
	return p, nil
}

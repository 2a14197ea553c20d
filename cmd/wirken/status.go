package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wirken/wirken/hostagent"
)

// controlFlags are the flags of the commands that talk to the daemon.
func controlFlags(name string, args []string) (*hostagent.Client, bool, error) {
	fs := newFlags(name)
	config := fs.String("config", defaultConfig(), "daemon configuration `file` (for the control socket)")
	asJSON := fs.Bool("json", false, "print the daemon's answer as JSON")
	if err := parse(fs, args); err != nil {
		return nil, false, err
	}
	if fs.NArg() > 0 {
		return nil, false, usageError("%s takes no arguments", name)
	}
	cfg, err := hostagent.LoadConfig(*config)
	if err != nil {
		return nil, false, err
	}
	return hostagent.NewClient(cfg.ControlSocket), *asJSON, nil
}

func cmdStatus(args []string) error {
	return controlCall("status", args, (*hostagent.Client).Status, func(st hostagent.Status) any { return st },
		func(st hostagent.Status) { printStatus(os.Stdout, st) })
}

func cmdReload(args []string) error {
	return controlCall("reload", args, (*hostagent.Client).Reload, func(st hostagent.Status) any { return st },
		func(st hostagent.Status) {
			fmt.Printf("reloaded: policy %s (%s), vault generation %d, %d agents\n", st.Policy, short(st.PolicyDigest), st.VaultGeneration, len(st.Agents))
		})
}

func cmdAgents(args []string) error {
	return controlCall("agents", args, (*hostagent.Client).Status, func(st hostagent.Status) any { return st.Agents },
		func(st hostagent.Status) { printAgents(os.Stdout, st.Agents) })
}

// controlCall asks the daemon, then prints its answer as JSON (--json) or for a person.
func controlCall(name string, args []string, call func(*hostagent.Client, context.Context) (hostagent.Status, error),
	jsonPart func(hostagent.Status) any, human func(hostagent.Status)) error {
	c, asJSON, err := controlFlags(name, args)
	if err != nil {
		return err
	}
	st, err := call(c, context.Background())
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(jsonPart(st))
	}
	human(st)
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

func printStatus(w io.Writer, st hostagent.Status) {
	up := ""
	if !st.StartedAt.IsZero() {
		up = ", up " + time.Since(st.StartedAt).Round(time.Second).String()
	}
	fmt.Fprintf(w, "daemon:       pid %d%s, proxy on loopback port %d\n", st.PID, up, st.ProxyPort)
	if len(st.Startup) > 0 {
		var total float64
		steps := make([]string, len(st.Startup))
		for i, p := range st.Startup {
			total += p.Ms
			steps[i] = fmt.Sprintf("%s %.1f", p.Name, p.Ms)
		}
		fmt.Fprintf(w, "start-up:     %.1f ms (%s)\n", total, strings.Join(steps, ", "))
	}
	fmt.Fprintf(w, "policy:       %s (digest %s, load %d)\n", st.Policy, short(st.PolicyDigest), st.PolicyLoads)
	fmt.Fprintf(w, "vault:        generation %d\n", st.VaultGeneration)
	fmt.Fprintf(w, "connections:  %d open\n", st.Connections)
	fmt.Fprintf(w, "runtime:      %d goroutines, %d of %d open files\n", st.Goroutines, st.OpenFiles, st.FileLimit)
	if st.AcceptErrors > 0 {
		fmt.Fprintf(w, "accept:       failed %d times (out of file descriptors?), retried\n", st.AcceptErrors)
	}
	if st.Unregistered.Denials > 0 {
		fmt.Fprintf(w, "unregistered: %d connections refused from no known agent\n", st.Unregistered.Denials)
	}
	fmt.Fprintf(w, "agents:       %d\n\n", len(st.Agents))
	printAgents(w, st.Agents)
}

func printAgents(w io.Writer, agents []hostagent.AgentInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tUSER\tPROCESSES\tREQUESTS\tDENIALS\tCGROUP")
	for _, a := range agents {
		var c hostagent.AgentCounts
		if a.Counts != nil {
			c = *a.Counts
		}
		pids := make([]string, 0, len(a.Processes))
		for _, p := range a.Processes {
			pids = append(pids, fmt.Sprint(p))
		}
		procs := fmt.Sprint(len(a.Processes))
		if len(pids) > 0 && len(pids) <= 5 {
			procs += " (" + strings.Join(pids, ",") + ")"
		}
		user := a.User
		if user == "" {
			user = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", a.Name, user, procs, c.Requests, c.Denials, a.Cgroup)
	}
	tw.Flush()
}

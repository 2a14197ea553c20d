package hostagent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/bpf"
	"github.com/wirken/wirken/mitm"
	"github.com/wirken/wirken/policy"
	"github.com/wirken/wirken/resolver"
	"github.com/wirken/wirken/vault"
)

// shutdownGrace is how long requests in flight may take to finish when the daemon stops.
const shutdownGrace = 10 * time.Second

// Daemon is a running wirken host agent.
type Daemon struct {
	cfg    *Config
	log    *slog.Logger
	tracer trace.Tracer

	policy livePolicy
	vault  *vault.Vault
	audit  *audit.Log
	steer  *bpf.Steering
	proxy  *mitm.Proxy

	resolver *resolver.Resolver

	root   string // <cgroup2>/<cfg.Cgroup.Root>
	agents registry

	reloadMu sync.Mutex // one policy change at a time (SIGHUP and the control socket)

	vaultMu      sync.Mutex                      // one vault change at a time
	versions     func() (uint64, map[string]int) // the vault's live secret versions
	lastVersions atomic.Pointer[map[string]int]  // as last seen, to tell what changed

	counts     *counters      // per-agent totals for status
	started    time.Time      // when Run began
	startup    []StartupPhase // how long each start-up step took, for status
	policyLoad atomic.Uint64  // policies applied so far: 1 after start, +1 per accepted reload
}

// Run starts the daemon and serves until ctx is done. ready, if not nil, is closed once agents
// can be launched.
func Run(ctx context.Context, cfg *Config, tel Telemetry, ready chan<- struct{}) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the daemon must run as root (it loads eBPF programs and manages cgroups)")
	}
	clock := newStartupClock(time.Now)
	log := tel.Logger
	d := &Daemon{cfg: cfg, log: log, tracer: tel.Tracer.Tracer(instrumentation)}
	met, err := newMetrics(tel.Meter.Meter(instrumentation))
	if err != nil {
		return err
	}
	d.counts, d.started = &counters{}, time.Now()
	nofile, err := raiseFileLimit()
	if err != nil {
		return err
	}
	met.counts = d.counts
	d.agents.byID = map[uint64]string{}
	d.agents.byName = map[string]agentCgroup{}

	pol, err := policy.Load(cfg.Policy)
	if err != nil {
		return fmt.Errorf("loading policy: %w", err)
	}
	clock.mark("policy")
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	// A vault file older than the last generation the audit log recorded is a rollback (to a
	// revoked key, say): refused unless the operator accepts it.
	minGen, err := lastAuditedGeneration(cfg)
	if err != nil {
		return err
	}
	clock.mark("audit-scan")
	vopts := []vault.OpenOption{vault.WithMinGeneration(minGen)}
	if cfg.AcceptRollback {
		vopts = append(vopts, vault.WithAcceptRollback())
	}
	var seal vault.Seal
	d.vault, seal, err = OpenVault(ctx, cfg, vopts...)
	if err != nil {
		if errors.Is(err, vault.ErrRollback) {
			return fmt.Errorf("%w (the audit log last recorded generation %d; start with --accept-rollback if this is intended)", err, minGen)
		}
		return err
	}
	defer func() {
		d.vault.Close()
		_ = vault.FinalizeSeal(context.Background(), seal)
	}()
	d.versions = d.vault.Versions
	_, cur := d.vault.Versions()
	d.lastVersions.Store(&cur)
	clock.mark("vault")

	// The audit log's checkpoint key comes from the vault's root key, so it is as safe at rest
	// as the secrets; its public half is published for verifiers.
	signer, err := AuditSigner(d.vault, cfg)
	if err != nil {
		return err
	}
	added, err := PublishVerifierKey(cfg, signer)
	if err != nil {
		return err
	}
	if added {
		log.Warn("published a new audit verifier key (new vault or rotated root key); copy it off the host", "file", cfg.Audit.VerifierKey, "key", signer.VerifierKey())
	}
	d.audit, err = audit.Open(cfg.Audit.Log, log, cfg.auditOptions(signer)...)
	if err != nil {
		return fmt.Errorf("opening audit log: %w", err)
	}
	defer func() {
		if _, aerr := d.audit.Append(audit.Record{Type: "shutdown", Reason: errString(err)}); aerr != nil {
			log.Error("writing shutdown record", "err", aerr)
		}
		d.audit.Close()
	}()
	if _, err := d.audit.Append(audit.Record{Type: "startup", Policy: pol.Digest(), Generation: d.vault.Generation(), Detail: "pid " + strconv.Itoa(os.Getpid())}); err != nil {
		return fmt.Errorf("writing startup record: %w", err)
	}
	if g := d.vault.Generation(); g < minGen {
		log.Warn("vault rollback accepted by the operator", "generation", g, "audited", minGen)
		if _, err := d.audit.Append(audit.Record{Type: "vault.rollback", Decision: "accept", Generation: g, Detail: fmt.Sprintf("audit log had generation %d", minGen)}); err != nil {
			return fmt.Errorf("auditing the accepted rollback: %w", err)
		}
	}
	clock.mark("audit")

	ca, err := mitm.LoadCA(cfg.CA.Cert, cfg.CA.Key)
	if err != nil {
		return fmt.Errorf("loading CA: %w", err)
	}
	if err := writeCABundle(cfg.CABundle(), cfg.CACertDir(), ca.CertPEM()); err != nil {
		return err
	}
	roots, err := upstreamRoots(cfg.Proxy.UpstreamCAFiles)
	if err != nil {
		return err
	}
	clock.mark("ca")

	if err := d.setupCgroups(); err != nil {
		return err
	}

	// Listen before steering starts, so a steered connection always finds the proxy.
	lns, err := listen(uint16(cfg.Proxy.Port), log)
	if err != nil {
		return err
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()

	ups, err := cfg.dnsUpstreams()
	if err != nil {
		return err
	}
	dnsLns, err := listenDNS(cfg.dnsListenAddrs(), log)
	if err != nil {
		return err
	}
	defer dnsLns.close()
	clock.mark("listen")

	level, err := cgroupLevel(d.agents.mount, d.agents.mountRoot, filepath.Join(d.root, "agents"))
	if err != nil {
		return err
	}
	d.steer, err = bpf.Load(bpf.Config{
		AgentsCgroup: filepath.Join(d.root, "agents"),
		AgentLevel:   level + 1,
		PinDir:       cfg.BPF.PinDir,
		ProxyPort:    uint16(cfg.Proxy.Port),
		DNSPort:      uint16(cfg.DNS.Port),
		RefuseIPv6:   cfg.Proxy.IPv6 == "refuse",
	})
	if err != nil {
		return fmt.Errorf("loading eBPF steering: %w", err)
	}
	defer d.steer.Close() // the pinned links stay: agents stay steered (and refused) while we are gone
	denials, err := d.steer.Denials()
	if err != nil {
		return err
	}
	denialsDone := make(chan struct{})
	go func() {
		defer close(denialsDone)
		d.auditDenials(denials, log)
	}()
	defer func() { denials.Close(); <-denialsDone }() // before the audit log closes
	clock.mark("ebpf")

	if err := d.applyPolicy(pol); err != nil {
		return err
	}
	clock.mark("agents")

	meter, err := loadMeter(budgetsFile(cfg))
	if err != nil {
		return err
	}
	meterCtx, stopMeter := context.WithCancel(context.Background())
	meterDone := make(chan struct{})
	go func() { keepMeter(meterCtx, meter, budgetsFile(cfg), log); close(meterDone) }()
	defer func() { stopMeter(); <-meterDone }() // after the proxy has finished its requests
	d.resolver, err = resolver.New(resolver.Config{
		Upstreams: ups, Identify: dnsIdentifier{d}, Policy: &d.policy, Recorder: dnsRecorder{d},
		Logger: log.With("component", "resolver"),
	})
	if err != nil {
		return err
	}
	defer dnsLns.serve(d.resolver, log)()
	var names mitm.Names
	if *cfg.DNS.RequireResolved {
		names = d.resolver
	}

	peek, header, idle, dial, respHeader := cfg.Proxy.Timeouts.Durations()
	d.proxy, err = mitm.New(mitm.Config{
		CA:            ca,
		UpstreamRoots: roots,
		Steering:      steeringAdapter{d},
		Policy:        &d.policy,
		Secrets:       d.vault,
		Recorder:      &recorder{log: d.audit, tracer: d.tracer, metrics: met, logger: log},
		Logger:        log,
		Limits:        meter,
		Names:         names,
		Addresses:     d.resolver,
		Own:           cfg.dnsListenAddrs(),

		PeekTimeout:           peek,
		HeaderTimeout:         header,
		IdleTimeout:           idle,
		DialTimeout:           dial,
		ResponseHeaderTimeout: respHeader,
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.proxy.Serve(ln); err != nil {
				log.Error("proxy stopped", "listener", ln.Addr(), "err", err)
			}
		}()
	}
	defer wg.Wait()
	defer func() {
		// Let requests in flight finish (and their results be recorded) before the audit log
		// and the vault close; connections still open after the grace period are cut.
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := d.proxy.Shutdown(ctx); err != nil {
			log.Warn("connections still open at shutdown were closed", "grace", shutdownGrace)
		}
	}()

	clock.mark("proxy")
	d.startup = clock.phases
	ctl, err := d.serveControl()
	if err != nil {
		return err
	}
	defer ctl.Close()

	// Vault changes (vault put/rotate/rewrap by the CLI, or any edit) are picked up live.
	go func() {
		if err := d.vault.Watch(ctx, d.vaultChanged); err != nil && ctx.Err() == nil {
			log.Error("watching the vault file stopped; changes now need SIGHUP or wirken reload", "err", err)
		}
	}()

	go d.watchBound(ctx)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	log.Info("wirken is running", "proxy_port", cfg.Proxy.Port, "dns_port", cfg.DNS.Port, "dns_upstreams", ups,
		"require_resolved", *cfg.DNS.RequireResolved, "cgroup", d.root, "pin_dir", cfg.BPF.PinDir,
		"agents", len(pol.Agents()), "control_socket", cfg.ControlSocket, "open_files_limit", nofile,
		"startup_ms", clock.total(), "startup", startupAttrs(clock.phases))
	if ready != nil {
		close(ready)
	}
	// Start-up garbage (policy and config parsing, the eBPF objects' ELF and BTF, the system
	// roots) is freed; give its pages back now rather than to the background scavenger minutes
	// later: about 3 MB less idle RSS, for one collection.
	debug.FreeOSMemory()
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			return nil
		case <-hup:
			if err := d.Reload(); err != nil {
				log.Error("reload refused; the last good policy and vault keep serving", "err", err)
			}
		}
	}
}

// Reload re-reads the vault and the policy. A bad file is refused and the last good one keeps
// serving.
func (d *Daemon) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	// A refused vault file is logged and audited by vaultChanged; the last good vault serves on
	// and the policy reload goes ahead regardless.
	// A root key rotated in the file needs the KMS: a KMS that never answers must not hold
	// the reload (and reloadMu) forever.
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.UnsealTimeout())
	defer cancel()
	changed, verr := d.vault.Reload(ctx)
	if verr != nil || changed {
		d.vaultChanged(d.vault.Generation(), verr)
	}
	perr := d.reloadPolicy()
	if verr != nil {
		// The caller (wirken reload) must hear of it too, not only the log and the audit log.
		verr = fmt.Errorf("vault file refused, the last good vault keeps serving: %w", verr)
	}
	return errors.Join(verr, perr)
}

// vaultChanged audits a new vault snapshot (or a refused file) and closes the idle upstream
// connections of every credential whose secret changed.
func (d *Daemon) vaultChanged(gen uint64, err error) {
	d.vaultMu.Lock() // the file watch and Reload may both report
	defer d.vaultMu.Unlock()
	if err != nil {
		if errors.Is(err, vault.ErrSeal) {
			d.log.Error("the vault file is now sealed by entries the daemon's seal cannot open (after vault rewrap --remove or rotate root): restart the daemon to pick it up; the last good vault keeps serving", "generation", gen)
		}
		d.log.Error("vault file refused; the last good vault keeps serving", "generation", gen, "err", err)
		if _, aerr := d.audit.Append(audit.Record{Type: "vault.reload", Decision: "reject", Generation: gen, Reason: err.Error()}); aerr != nil {
			d.log.Error("audit log write failed", "err", aerr)
		}
		return
	}
	gen, cur := d.versions()
	prev := d.lastVersions.Swap(&cur)
	changed := vault.Changed(*prev, cur)
	var creds []string
	for _, c := range d.policy.p.Load().Credentials() {
		if slices.Contains(changed, c.Secret) {
			creds = append(creds, c.Name)
		}
	}
	if len(creds) > 0 {
		d.proxy.CloseIdle(creds...)
	}
	d.log.Info("vault reloaded", "generation", gen, "changed_secrets", changed, "credentials_reset", creds)
	if _, aerr := d.audit.Append(audit.Record{Type: "vault.reload", Decision: "accept", Generation: gen, Detail: "changed: " + strings.Join(changed, ",")}); aerr != nil {
		d.log.Error("audit log write failed", "err", aerr)
	}
}

func (d *Daemon) reloadPolicy() error {
	pol, err := policy.Load(d.cfg.Policy)
	if err != nil {
		if _, aerr := d.audit.Append(audit.Record{Type: "policy.load", Decision: "reject", Reason: err.Error()}); aerr != nil {
			d.log.Error("audit log write failed", "err", aerr)
		}
		return err
	}
	return d.applyPolicy(pol)
}

// applyPolicy creates and registers the cgroups of the policy's agents, unregisters agents
// that are gone, and only then publishes the policy. Its load is audited.
func (d *Daemon) applyPolicy(pol *policy.Policy) error {
	if err := d.agents.sync(pol.Agents(), filepath.Join(d.root, "agents"), d.steer, d.log); err != nil {
		return err
	}
	d.agents.pruneBound(d.steer, d.log)
	if _, err := d.audit.Append(audit.Record{Type: "policy.load", Decision: "accept", Policy: pol.Digest()}); err != nil {
		return fmt.Errorf("auditing policy load: %w", err)
	}
	d.policy.p.Store(pol)
	d.policyLoad.Add(1)
	d.log.Info("policy loaded", "file", d.cfg.Policy, "digest", pol.Digest()[:12], "agents", len(pol.Agents()))
	return nil
}

// setupCgroups creates <cgroup2>/<root>/{daemon,agents} and moves the daemon into daemon/,
// which no steering program is attached to.
func (d *Daemon) setupCgroups() error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading mountinfo: %w", err)
	}
	mount, err := cgroup2Mount(f)
	f.Close()
	if err != nil {
		return err
	}
	d.agents.mount = mount.point
	d.agents.mountRoot = mount.root
	d.root = filepath.Join(mount.point, d.cfg.Cgroup.Root)
	for _, dir := range []string{d.root, filepath.Join(d.root, "daemon"), filepath.Join(d.root, "agents")} {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
	}
	procs := filepath.Join(d.root, "daemon", "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("moving the daemon into %s: %w", procs, err)
	}
	return nil
}

// listen opens the proxy on 127.0.0.1 and, where the host has IPv6, on [::1].
func listen(port uint16, log *slog.Logger) ([]net.Listener, error) {
	v4, err := net.Listen("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
	if err != nil {
		return nil, fmt.Errorf("listening on 127.0.0.1:%d: %w", port, err)
	}
	lns := []net.Listener{v4}
	v6, err := net.Listen("tcp6", netip.AddrPortFrom(netip.IPv6Loopback(), port).String())
	if err != nil {
		log.Warn("no IPv6 loopback listener; agents' IPv6 connections will be refused", "err", err)
	} else {
		lns = append(lns, v6)
	}
	return lns, nil
}

func upstreamRoots(extra []string) (*x509.CertPool, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		return nil, fmt.Errorf("loading system roots: %w", err)
	}
	for _, f := range extra {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading upstream CA: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream CA %s: no PEM certificates", f)
		}
	}
	return roots, nil
}

// livePolicy is the current policy snapshot, swapped atomically on reload.
type livePolicy struct{ p atomic.Pointer[policy.Policy] }

// PlaceholderCredential lets the proxy refuse placeholders sent anywhere but their hosts.
func (l *livePolicy) PlaceholderCredential(s string) *policy.Credential {
	return l.p.Load().PlaceholderCredential(s)
}

func (l *livePolicy) Decide(agent, host string, port uint16) policy.Decision {
	return l.p.Load().Decide(agent, host, port)
}

func (l *livePolicy) Authorize(r policy.Request) policy.Grant { return l.p.Load().Authorize(r) }

// steeringAdapter names the agent behind a kernel origin record.
type steeringAdapter struct{ d *Daemon }

func (s steeringAdapter) Origin(client, local netip.AddrPort) (mitm.Origin, error) {
	o, err := s.d.steer.Origin(client, local)
	if err != nil {
		return mitm.Origin{}, err
	}
	return mitm.Origin{Agent: s.d.agents.name(o.CgroupID), Dst: o.Dst, PID: o.PID, UID: o.UID, Comm: o.Comm}, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

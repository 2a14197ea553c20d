// Command wirken-bench is `make bench`: the workloads of issue 9 (keep-alive POST shaped like an
// LLM call, a new connection per request, open-loop latency at 1,000 req/s, 1,000 connections,
// SSE, 100 MB up/download, start-up, wirken's feature ablation, the eBPF connect() cost) against
// a direct TLS upstream, wirken (transparent, through its eBPF steering, the load client inside
// an agent cgroup), an nginx TLS reverse proxy, mitmdump and Squid ssl-bump, interleaved in one
// run with a direct run before and after each trial. It writes bench/RESULTS.md. Run it as root
// in a fresh network namespace (the Makefile uses `unshare --net`): every server listens on
// that namespace's loopback, and it removes the daemon's cgroups, pins and files when it ends,
// also on failure or Ctrl-C. `wirken-bench load` (the load generator) and `wirken-bench sink`
// (SSE, upload and OTLP server) are the same binary, run by the bench.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wirken/wirken/demo/zone"
	"github.com/wirken/wirken/hostagent"
)

const (
	host     = "api.bench.local"
	upAddr   = "127.0.0.2"
	nginxRP  = "127.0.0.1:9444"
	mitmAddr = "127.0.0.1:9445"
	squidUp  = "127.0.0.3" // the upstream again, reached only through Squid's interception
	squidTLS = "127.0.0.1:3129"
	agent    = "bench"
	sinkAddr = "127.0.0.1:8446" // the bench's SSE and upload server, behind the upstream nginx
	otlpAddr = "127.0.0.1:4318" // the bench's OTLP/HTTP receiver
)

// A 360-byte-ish chat completion, as the upstream answers every request.
const answer = `{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark upstream. This answer is about the size of a short model reply."},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":24,"total_tokens":66}}`

// A ~1 KB request body.
var body = `{"model":"bench-model","max_tokens":64,"messages":[{"role":"system","content":"You are a benchmark."},{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}]}`

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "load" || os.Args[1] == "sink") {
		run := loadMain
		if os.Args[1] == "sink" {
			run = sinkMain
		}
		if err := run(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "wirken: error: bench %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	b := &bench{}
	flag.StringVar(&b.bin, "wirken", "bin/wirken", "the wirken binary under test")
	flag.IntVar(&b.trialsN, "trials", 3, "trials of the light workloads (each: direct, every path, direct)")
	flag.IntVar(&b.heavyTrials, "heavy-trials", 2, "trials of the heavy workloads (sse, download, upload)")
	flag.IntVar(&b.connsTrials, "conns-trials", 1, "trials of conns1000 (opening 1,000 TLS connections through Squid or mitmdump takes about a minute)")
	flag.DurationVar(&b.dur, "duration", 5*time.Second, "length of each load run (keepalive, newconn, latency, conns1000, ablation)")
	flag.IntVar(&b.conns, "conns", 50, "keep-alive connections of wrk in keepalive and ablation")
	flag.StringVar(&b.out, "out", "bench/RESULTS.md", "where to write the results")
	flag.StringVar(&b.commit, "commit", "", "the commit under test (for RESULTS.md)")
	flag.StringVar(&b.sel, "workloads", "all", "comma-separated workloads: "+strings.Join(workloadNames, ","))
	flag.StringVar(&b.pathSel, "paths", "all", "comma-separated paths besides direct: wirken,nginx-rp,mitmdump,squid")
	noMitm := flag.Bool("no-mitmdump", false, "leave mitmdump out (as -paths without it)")
	noSquid := flag.Bool("no-squid", false, "leave Squid out (as -paths without it)")
	flag.Parse()
	if err := b.choose(*noMitm, *noSquid); err != nil {
		fmt.Fprintf(os.Stderr, "wirken: error: bench: %v\n", err)
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		b.cleanup()
		os.Exit(1)
	}()
	err := b.run()
	b.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "wirken: error: bench: %v\n", err)
		if b.daemonLog.Len() > 0 {
			fmt.Fprintf(os.Stderr, "daemon log (last 3 KB):\n%s\n", tail(b.daemonLog.String(), 3000))
		}
		os.Exit(1)
	}
}

var (
	workloadNames = []string{"keepalive", "newconn", "latency", "conns1000", "sse", "download", "upload", "startup", "ablation", "connect"}
	pathNames     = []string{"wirken", "nginx-rp", "mitmdump", "squid"}
)

type bench struct {
	bin, out, commit, self           string
	trialsN, heavyTrials, conns      int
	connsTrials                      int
	dur                              time.Duration
	sel, pathSel                     string
	workloadsOn, pathsOn             map[string]bool
	dir, config, cgroup, pinDir, shm string
	procs                            []*exec.Cmd
	daemon                           *exec.Cmd
	daemonLog                        bytes.Buffer
	daemonGone                       chan struct{} // closed when the daemon has exited
	variant                          string        // the configuration the daemon runs
	dns                              *zone.Server
	readyMs, firstReadyMs            float64
	startupPhases                    []hostagent.StartupPhase // the daemon's, at its last start
	idleRSSKB                        int
	peerReadyMs                      map[string]float64
	loadStart                        string
}

// choose reads -workloads and -paths.
func (b *bench) choose(noMitm, noSquid bool) error {
	pick := func(sel string, names []string) (map[string]bool, error) {
		on := map[string]bool{}
		if sel == "all" {
			for _, n := range names {
				on[n] = true
			}
			return on, nil
		}
		for _, n := range strings.Split(sel, ",") {
			if n = strings.TrimSpace(n); !slices.Contains(names, n) {
				return nil, fmt.Errorf("unknown %q: want some of %s", n, strings.Join(names, ","))
			}
			on[n] = true
		}
		return on, nil
	}
	var err error
	if b.workloadsOn, err = pick(b.sel, workloadNames); err != nil {
		return fmt.Errorf("-workloads: %w", err)
	}
	if b.pathsOn, err = pick(b.pathSel, pathNames); err != nil {
		return fmt.Errorf("-paths: %w", err)
	}
	if noMitm {
		delete(b.pathsOn, "mitmdump")
	}
	if noSquid {
		delete(b.pathsOn, "squid")
	}
	if b.trialsN < 1 || b.heavyTrials < 1 || b.connsTrials < 1 {
		return errors.New("-trials, -heavy-trials and -conns-trials must be at least 1")
	}
	return nil
}

func (b *bench) run() error {
	if os.Geteuid() != 0 {
		return errors.New("run me as root (make bench): wirken loads eBPF programs and manages cgroups")
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("bringing up loopback (run me in a fresh network namespace): %v: %s", err, out)
	}
	var err error
	if b.bin, err = filepath.Abs(b.bin); err != nil {
		return err
	}
	if b.dir, err = os.MkdirTemp("", "wirken-bench-"); err != nil {
		return err
	}
	os.Chmod(b.dir, 0o711) // the agent user runs the load generator and reads the wrk script
	u := make([]byte, 4)
	rand.Read(u)
	id := hex.EncodeToString(u)
	b.cgroup = "wirken-bench-" + id
	b.pinDir = "/sys/fs/bpf/wirken-bench-" + id
	b.shm = "/dev/shm/wirken-bench-" + id
	b.peerReadyMs = map[string]float64{}

	// The load generator and sink are this binary, copied where the agent user can run it.
	me, err := os.Executable()
	if err != nil {
		return err
	}
	b.self = filepath.Join(b.dir, "wirken-bench")
	if err := copyFile(me, b.self, 0o755); err != nil {
		return fmt.Errorf("copying the load generator: %w", err)
	}
	if err := b.certs(); err != nil {
		return fmt.Errorf("writing certificates: %w", err)
	}
	if err := writeBlob(filepath.Join(b.dir, "blob"), 100<<20); err != nil {
		return fmt.Errorf("writing the download file: %w", err)
	}
	sink, err := b.start("sink", "taskset", "-c", "0", b.self, "sink", "-listen", sinkAddr, "-otlp", otlpAddr)
	if err != nil {
		return err
	}
	if err := waitTCP(sinkAddr, sink, 10*time.Second); err != nil {
		return err
	}
	if _, err := b.nginxPid("up", upstreamConf, "0"); err != nil {
		return err
	}
	// The POST; Squid gets it with the Host the URL gives (its interception checks the Host).
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", body)
	for name, text := range map[string]string{"post.lua": lua + fmt.Sprintf("wrk.headers[\"Host\"] = %q\n", host), "post-urlhost.lua": lua} {
		if err := os.WriteFile(filepath.Join(b.dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	script := filepath.Join(b.dir, "post.lua")
	direct := path{name: "direct", wrkURL: "https://" + upAddr, wrkScript: script, loadURL: "https://" + host, connectTo: upAddr + ":443"}
	var paths []path
	if b.pathsOn["wirken"] {
		if err := b.prepareWirken(); err != nil {
			return err
		}
		if err := b.startDaemon("full"); err != nil {
			return err
		}
		b.firstReadyMs = b.readyMs
		time.Sleep(2 * time.Second)
		b.idleRSSKB = rssKB(b.daemon.Process.Pid)
		paths = append(paths, b.wirkenPath(nil))
	}
	if b.pathsOn["nginx-rp"] {
		t0 := time.Now()
		pid, err := b.nginxRP()
		if err != nil {
			return err
		}
		p := path{name: "nginx-rp", pid: func() int { return pid }, wrkURL: "https://" + nginxRP, wrkScript: script, loadURL: "https://" + host, connectTo: nginxRP}
		if err := b.firstResponse(p, t0); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	if b.pathsOn["mitmdump"] {
		t0 := time.Now()
		pid, err := b.mitmdump()
		if err != nil {
			return err
		}
		p := path{name: "mitmdump", pid: func() int { return pid }, wrkURL: "https://" + mitmAddr, wrkScript: script, loadURL: "https://" + host, connectTo: mitmAddr}
		if err := b.firstResponse(p, t0); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	if b.pathsOn["squid"] {
		t0 := time.Now()
		pid, err := b.squid()
		if err != nil {
			return err
		}
		p := path{name: "squid", pid: func() int { return pid }, wrkURL: "https://" + squidUp, wrkScript: filepath.Join(b.dir, "post-urlhost.lua"), loadURL: "https://" + squidUp}
		if err := b.firstResponse(p, t0); err != nil {
			return err
		}
		paths = append(paths, p)
	}
	// One short warm-up of each path (connection pools, minted certificates), not counted.
	for _, p := range append([]path{direct}, paths...) {
		if _, err := b.wrk(b.wrkArgs(p, b.conns, 2*time.Second)); err != nil {
			return fmt.Errorf("warm-up of %s: %w", p.name, err)
		}
	}
	b.loadStart = loadavg()
	start := time.Now()
	var results []*result
	for _, w := range b.workloads() {
		if !b.workloadsOn[w.name] {
			continue
		}
		ps := paths
		if w.paths != nil {
			ps = w.paths(paths)
		}
		if len(ps) == 0 {
			results = append(results, &result{w: w, err: "no selected path can run it (it needs the wirken path)"})
			continue
		}
		if w.name == "ablation" || w.name == "connect" {
			if !b.pathsOn["wirken"] {
				results = append(results, &result{w: w, err: "it needs the wirken path"})
				continue
			}
		}
		var r *result
		if w.name == "connect" {
			r = b.withBPFStats(func() *result { return b.trials(w, b.connectDirect(), ps) })
		} else {
			r = b.trials(w, direct, ps)
		}
		r.w = w
		results = append(results, r)
		if b.pathsOn["wirken"] && b.variant != "full" {
			if err := b.startDaemon("full"); err != nil {
				return err
			}
		}
	}
	var st *startup
	if b.workloadsOn["startup"] {
		st = b.startupRuns(paths)
	}
	return b.write(paths, results, st, time.Since(start))
}

// firstResponse times p's start (from t0) to its first proxied 200.
func (b *bench) firstResponse(p path, t0 time.Time) error {
	g := &loadgen{url: p.loadURL + "/v1/chat/completions", connectTo: p.connectTo, method: "POST", timeout: 30 * time.Second}
	if _, err := g.probe(); err != nil {
		return fmt.Errorf("%s: the first request: %w\n%s", p.name, err, b.logs())
	}
	b.peerReadyMs[p.name] = float64(time.Since(t0).Microseconds()) / 1000
	return nil
}

// logs is the tail of every server log, for an error.
func (b *bench) logs() string {
	var w strings.Builder
	files, _ := filepath.Glob(filepath.Join(b.dir, "*.log"))
	more, _ := filepath.Glob(filepath.Join(b.dir, "*", "*.log"))
	for _, f := range append(files, more...) {
		raw, _ := os.ReadFile(f)
		fmt.Fprintf(&w, "== %s\n%s\n", filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), tail(string(raw), 1500))
	}
	return w.String()
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on Linux).
const clockTicks = 100

// cpuTicks is utime+stime of pid and every descendant still running (nginx's worker, mitmdump).
func cpuTicks(pid int) int64 {
	if pid == 0 {
		return 0
	}
	var total int64
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		if len(f) > 12 {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			total += ut + st
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		raw, _ := os.ReadFile(t)
		for _, c := range strings.Fields(string(raw)) {
			if cp, err := strconv.Atoi(c); err == nil {
				total += cpuTicks(cp)
			}
		}
	}
	return total
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// start runs argv in the background and remembers it for cleanup.
func (b *bench) start(logName string, argv ...string) (*exec.Cmd, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	f, err := os.Create(filepath.Join(b.dir, logName+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	b.procs = append(b.procs, cmd)
	return cmd, nil
}

// waitTCP waits until addr accepts a connection.
func waitTCP(addr string, cmd *exec.Cmd, within time.Duration) error {
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if cmd.ProcessState != nil {
			break
		}
	}
	return fmt.Errorf("%s did not listen on %s within %s", cmd.Path, addr, within)
}

func (b *bench) certs() error {
	ca, caKey, caPEM, err := mint(nil, nil, "bench upstream CA")
	if err != nil {
		return err
	}
	_, key, leafPEM, err := mint(ca, caKey, host)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"upca.pem": caPEM,
		"up.crt":   leafPEM,
		"up.key":   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(b.dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(b.dir, "up.key"), 0o600)
}

// mint makes an ECDSA P-256 certificate for name, self-signed when parent is nil.
func mint(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	signer := key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
		parent = tmpl
	} else {
		signer = parentKey
		tmpl.DNSNames, tmpl.IPAddresses = []string{name}, []net.IP{net.ParseIP(upAddr), net.ParseIP(squidUp)}
		tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

const nginxCommon = `worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fcgi;
  uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  ssl_certificate %[2]s/up.crt; ssl_certificate_key %[2]s/up.key; ssl_protocols TLSv1.3;
`

// upstreamConf: the LLM-shaped upstream on 127.0.0.2:443.
var upstreamConf = nginxCommon + `  upstream sink { server ` + sinkAddr + `; keepalive 64; }
  server { listen ` + upAddr + `:443 ssl; listen ` + squidUp + `:443 ssl; server_name ` + host + `; client_max_body_size 0;
    location / { default_type application/json; return 200 '` + answer + `'; }
    location = /v1/stream { proxy_pass http://sink; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    location = /v1/upload { proxy_pass http://sink; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_request_buffering off; client_body_buffer_size 256k; }
    location = /v1/download { default_type application/octet-stream; alias %[2]s/blob; } }
}
`

// rpConf: nginx as a TLS reverse proxy that re-encrypts to the upstream and injects a header.
var rpConf = nginxCommon + `  upstream up { server ` + upAddr + `:443; keepalive 512; }
  server { listen ` + nginxRP + ` ssl;
    location / { proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host ` + host + `; proxy_set_header Authorization "Bearer sk-injected-by-nginx";
      proxy_ssl_protocols TLSv1.3; proxy_ssl_verify on; proxy_ssl_trusted_certificate %[2]s/upca.pem; proxy_ssl_name ` + host + `;
      proxy_ssl_server_name on; proxy_ssl_session_reuse on; proxy_buffering off;
      client_max_body_size 0; proxy_request_buffering off; client_body_buffer_size 256k; proxy_read_timeout 120s; }
    # Bulk downloads buffered in memory (64 KB reads) rather than relayed 4 KB at a time.
    location = /v1/download { proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host ` + host + `; proxy_set_header Authorization "Bearer sk-injected-by-nginx";
      proxy_ssl_protocols TLSv1.3; proxy_ssl_verify on; proxy_ssl_trusted_certificate %[2]s/upca.pem; proxy_ssl_name ` + host + `;
      proxy_ssl_server_name on; proxy_ssl_session_reuse on; proxy_buffering on; proxy_buffer_size 64k; proxy_buffers 16 64k;
      proxy_busy_buffers_size 128k; proxy_max_temp_file_size 0; } }
}
`

// nginxPid starts an nginx (master and one worker) pinned to cpu, in the foreground.
func (b *bench) nginxPid(name, conf, cpu string) (int, error) {
	dir := filepath.Join(b.dir, "nginx-"+name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(conf, dir, b.dir)), 0o600); err != nil {
		return 0, err
	}
	cmd, err := b.start("nginx-"+name, "taskset", "-c", cpu, "nginx", "-g", "daemon off;", "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", file)
	if err != nil {
		return 0, err
	}
	addr := upAddr + ":443"
	if name == "rp" {
		addr = nginxRP
	}
	if err := waitTCP(addr, cmd, 10*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return 0, fmt.Errorf("nginx %s: %w: %s", name, err, log)
	}
	return cmd.Process.Pid, nil
}

func (b *bench) nginxRP() (int, error) { return b.nginxPid("rp", rpConf, "1") }

// mitmdump as a TLS reverse proxy (terminate, inspect, re-encrypt) with header injection.
func (b *bench) mitmdump() (int, error) {
	conf := filepath.Join(b.dir, "mitm")
	if err := os.MkdirAll(conf, 0o700); err != nil {
		return 0, err
	}
	cmd, err := b.start("mitmdump", "taskset", "-c", "1", "mitmdump", "-q", "--listen-host", "127.0.0.1", "-p", strings.Split(mitmAddr, ":")[1],
		"--mode", "reverse:https://"+upAddr+":443", "--set", "confdir="+conf,
		"--set", "ssl_verify_upstream_trusted_ca="+filepath.Join(b.dir, "upca.pem"),
		"--modify-headers", "/~q/Authorization/Bearer sk-injected-by-mitmproxy")
	if err != nil {
		return 0, err
	}
	if err := waitTCP(mitmAddr, cmd, 30*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(b.dir, "mitmdump.log"))
		return 0, fmt.Errorf("mitmdump: %w: %s", err, log)
	}
	return cmd.Process.Pid, nil
}

// squid runs Squid's ssl-bump in intercept mode: an iptables REDIRECT in this namespace sends
// the client's connections to 127.0.0.3:443 to Squid, which peeks at the TLS hello, bumps it with
// a certificate minted from its own CA, and re-encrypts to the upstream (verified against the
// upstream CA; only the name check is waived, because the client names an IP address and
// Squid does not match IP SANs). Squid's own upstream connections leave from another address.
func (b *bench) squid() (int, error) {
	dir := filepath.Join(b.dir, "squid")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	_, caKey, caPEM, err := mint(nil, nil, "bench squid CA")
	if err != nil {
		return 0, err
	}
	der, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return 0, err
	}
	os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	conf := fmt.Sprintf(`http_port 127.0.0.1:3128
https_port %[2]s intercept ssl-bump cert=%[1]s/ca.pem key=%[1]s/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s %[1]s/ssl_db -M 16MB
sslcrtd_children 8 startup=2 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=%[3]s/upca.pem
acl ipname ssl_error SQUID_X509_V_ERR_DOMAIN_MISMATCH
sslproxy_cert_error allow ipname
sslproxy_cert_error deny all
tcp_outgoing_address 127.0.0.5
request_header_access Authorization deny all
request_header_add Authorization "Bearer sk-injected-by-squid" all
http_access allow localhost
http_access deny all
cache deny all
access_log none
cache_log %[1]s/cache.log
pid_filename %[1]s/squid.pid
pinger_enable off
shutdown_lifetime 1 seconds
hosts_file %[1]s/hosts
dns_nameservers 127.0.0.1
`, dir, squidTLS, b.dir)
	// Squid checks the Host header against the intercepted address by resolving it.
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(squidUp+" "+host+"\n"), 0o644); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "squid.conf"), []byte(conf), 0o644); err != nil {
		return 0, err
	}
	for _, argv := range [][]string{
		{"/usr/lib/squid/security_file_certgen", "-c", "-s", filepath.Join(dir, "ssl_db"), "-M", "16MB"},
		{"chown", "-R", "proxy:proxy", dir},
		{"iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", "127.0.0.1", "-d", squidUp, "--dport", "443", "-j", "REDIRECT", "--to-ports", strings.Split(squidTLS, ":")[1]},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("setting up squid: %s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	cmd, err := b.start("squid", "taskset", "-c", "1", "squid", "-N", "-d1", "-f", filepath.Join(dir, "squid.conf"))
	if err != nil {
		return 0, err
	}
	if err := waitTCP(squidTLS, cmd, 30*time.Second); err != nil {
		return 0, fmt.Errorf("squid: %w\n%s", err, b.logs())
	}
	return cmd.Process.Pid, nil
}

func (b *bench) wirken(stdin string, args ...string) (string, error) {
	cmd := exec.Command(b.bin, args...)
	cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+b.config)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("wirken %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func rssKB(pid int) int {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// halt sends sig through send, and SIGKILL if gone does not close within grace.
func halt(send func(syscall.Signal), gone <-chan struct{}, grace time.Duration) {
	send(syscall.SIGTERM)
	select {
	case <-gone:
	case <-time.After(grace):
		send(syscall.SIGKILL)
		<-gone
	}
}

// cleanup stops every process it started and removes the daemon's cgroups, pins and files.
func (b *bench) cleanup() {
	b.stopDaemon()
	for _, p := range b.procs {
		gone := make(chan struct{})
		go func() { p.Wait(); close(gone) }()
		// The process group: nginx's workers and mitmdump's children too.
		halt(func(s syscall.Signal) { syscall.Kill(-p.Process.Pid, s) }, gone, 5*time.Second)
	}
	b.procs = nil
	if b.config != "" {
		if _, err := os.Stat(b.config); err == nil {
			cmd := exec.Command(b.bin, "uninstall", "--root", b.dir, "--prefix", filepath.Join(b.dir, "prefix"), "--config", b.config, "--force", "--purge")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "cleanup: %v: %s\n", err, out)
			}
		}
	}
	if b.shm != "" {
		os.RemoveAll(b.shm)
	}
	if b.pinDir != "" {
		os.RemoveAll(b.pinDir)
	}
	if b.cgroup != "" {
		removeCgroup(filepath.Join("/sys/fs/cgroup", b.cgroup))
	}
	if b.dns != nil {
		b.dns.Close()
		b.dns = nil
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
		b.dir = ""
	}
}

// removeCgroup removes a cgroup tree bottom-up (rmdir only: cgroupfs has no files to unlink).
func removeCgroup(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
}

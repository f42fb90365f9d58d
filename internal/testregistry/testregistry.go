// Package testregistry starts the CNCF Distribution registry (the registry
// behind Docker Hub, GitLab, Harbor and most self-hosted ones) on loopback,
// behind a fault layer, for tests and the benchmark.
//
// The registry runs as its own process, built once with `go install` into the
// user cache and reused, so the product's module does not carry Distribution's
// dependencies. Set TAGPUSH_REGISTRY_BIN to use a registry binary you have.
package testregistry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/tagpush/tagpush/internal/faults"
)

// Module is the registry's module and version. v3.0.0 is the reference: it
// answers a manifest read 500 ("invalid checksum digest format") while
// another tag of the same manifest is written in the repository, as older
// Distribution releases (registry:2) in the field do; v3.1.2 does not.
const Module = RegistryModule + "@" + DefaultVersion

// RegistryModule is Distribution's command, without a version.
const RegistryModule = "github.com/distribution/distribution/v3/cmd/registry"

// DefaultVersion is the Distribution release tests and the benchmark run.
const DefaultVersion = "v3.0.0"

// Registry is a running Distribution registry with a fault layer in front.
type Registry struct {
	// Host is the fault layer's host:port: what references name.
	Host string
	// Faults is the layer in front of the registry.
	Faults *faults.Layer
	// Direct is the registry's own address, without the fault layer.
	Direct string
	// CAFile is the PEM file of the CA that signed a TLS registry's certificate.
	CAFile string

	cmd    *exec.Cmd
	front  *httptest.Server
	dir    string
	logBuf *os.File
}

// Options configures a registry.
type Options struct {
	// Users, when set, makes the registry require basic auth (Distribution's
	// auth.htpasswd) as one of these users (name -> password).
	Users map[string]string
	// Faults configures the fault layer.
	Faults faults.Config
	// OnDisk stores blobs in a temporary directory instead of memory, for
	// runs that push more than a few hundred MiB.
	OnDisk bool
	// TLS makes Distribution itself serve TLS, with a certificate for
	// 127.0.0.1 signed by a CA made for the registry (CAFile). Host is then
	// the registry's own address: there is no fault layer (Faults is nil).
	TLS bool
	// Binary is the registry binary to run; empty means Binary's.
	Binary string
	// AllowForeignURLs lets manifests name non-distributable layers by URL
	// (Distribution allows none by default).
	AllowForeignURLs bool
}

// Binary returns the path of the registry binary, installing it when needed.
func Binary(ctx context.Context) (string, error) {
	if p := os.Getenv("TAGPUSH_REGISTRY_BIN"); p != "" {
		return p, nil
	}
	return Tool(ctx, Module, "registry")
}

// BinaryVersion returns the path of Distribution's registry at version
// (v3.0.0, v3.1.2), installing it when needed.
func BinaryVersion(ctx context.Context, version string) (string, error) {
	return Tool(ctx, RegistryModule+"@"+version, "registry")
}

// OrasModule is the best peer the benchmark races: oras cp.
const OrasModule = "oras.land/oras/cmd/oras@v1.3.6"

// Tool returns the path of the binary bin that `go install module` builds,
// installing it once into the user cache (tagpush/<name>-<version>), outside
// the product's module. Test packages run in parallel: one installs, the
// others wait on a lock.
func Tool(ctx context.Context, module, bin string) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache directory for %s: %w", bin, err)
	}
	version := module[strings.LastIndex(module, "@")+1:]
	dir := filepath.Join(cache, "tagpush", toolDir(module, bin, version))
	path := filepath.Join(dir, bin)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	Say(fmt.Sprintf("tagpush: building %s into %s (once per machine; it takes a few minutes)\n", module, dir))
	tmp, err := os.MkdirTemp(dir, "install-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "install", module)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", module, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, bin), path); err != nil {
		return "", err
	}
	return path, nil
}

// toolDir keeps the cache layout earlier versions used for the registry.
func toolDir(module, bin, version string) string {
	if strings.HasPrefix(module, RegistryModule+"@") {
		return "distribution-" + version
	}
	return bin + "-" + version
}

// Start starts a registry.
func Start(ctx context.Context, opts Options) (*Registry, error) {
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = Binary(ctx); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "tagpush-registry-")
	if err != nil {
		return nil, err
	}
	r := &Registry{dir: dir}
	if err := r.start(ctx, bin, opts); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Registry) start(ctx context.Context, bin string, opts Options) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	auth := ""
	if len(opts.Users) > 0 {
		var htpasswd strings.Builder
		for user, pass := range opts.Users {
			hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
			if err != nil {
				return err
			}
			fmt.Fprintf(&htpasswd, "%s:%s\n", user, hash)
		}
		path := filepath.Join(r.dir, "htpasswd")
		if err := os.WriteFile(path, []byte(htpasswd.String()), 0o600); err != nil {
			return err
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: tagpush-test\n    path: %s\n", path)
	}
	storage := "inmemory: {}"
	if opts.OnDisk {
		storage = fmt.Sprintf("filesystem:\n    rootdirectory: %s", filepath.Join(r.dir, "data"))
	}
	validation := ""
	if opts.AllowForeignURLs {
		validation = "validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n"
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  %s
  delete:
    enabled: true
http:
  addr: %s
%s%s`, storage, addr, auth, validation)
	cfgPath := filepath.Join(r.dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	r.logBuf, err = os.Create(filepath.Join(r.dir, "registry.log"))
	if err != nil {
		return err
	}
	// The registry reads every REGISTRY_* variable as configuration and exports
	// traces to localhost:4318 unless told not to: give it a clean environment.
	r.cmd = exec.Command(bin, "serve", cfgPath)
	r.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + r.dir, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}
	scheme, client := "http", http.DefaultClient
	if opts.TLS {
		certFile, keyFile, pool, err := writeCertificates(r.dir)
		if err != nil {
			return err
		}
		r.CAFile = filepath.Join(r.dir, "ca.pem")
		r.cmd.Env = append(r.cmd.Env, "REGISTRY_HTTP_TLS_CERTIFICATE="+certFile, "REGISTRY_HTTP_TLS_KEY="+keyFile)
		scheme = "https"
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	r.cmd.Stdout, r.cmd.Stderr = r.logBuf, r.logBuf
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start registry: %w", err)
	}
	r.Direct = addr
	if err := waitReady(ctx, client, scheme+"://"+addr+"/v2/", len(opts.Users) > 0); err != nil {
		return fmt.Errorf("%w; registry log:\n%s", err, r.Log())
	}
	if opts.TLS {
		r.Host = addr
		return nil
	}
	target, _ := url.Parse("http://" + addr)
	r.Faults = faults.New(faults.Proxy(target), opts.Faults)
	r.front = httptest.NewServer(r.Faults)
	r.Host = strings.TrimPrefix(r.front.URL, "http://")
	return nil
}

// Log returns what the registry printed.
func (r *Registry) Log() string {
	if r.logBuf == nil {
		return ""
	}
	b, _ := os.ReadFile(r.logBuf.Name())
	return string(b)
}

// Close stops the registry and removes its files.
func (r *Registry) Close() {
	if r.front != nil {
		r.front.CloseClientConnections()
		r.front.Close()
	}
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
	if r.logBuf != nil {
		r.logBuf.Close()
	}
	os.RemoveAll(r.dir)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitReady(ctx context.Context, client *http.Client, u string, authRequired bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || (authRequired && resp.StatusCode == http.StatusUnauthorized) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("no answer")
			}
			return fmt.Errorf("registry at %s not ready: %w", u, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeCertificates makes a CA (ca.pem) and a certificate for 127.0.0.1
// signed by it (cert.pem, key.pem) in dir, and returns a pool trusting the CA.
func writeCertificates(dir string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tagpush test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	write := func(name, typ string, der []byte) (string, error) {
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	if _, err := write("ca.pem", "CERTIFICATE", caDER); err != nil {
		return "", "", nil, err
	}
	if certFile, err = write("cert.pem", "CERTIFICATE", leafDER); err != nil {
		return "", "", nil, err
	}
	if keyFile, err = write("key.pem", "EC PRIVATE KEY", keyDER); err != nil {
		return "", "", nil, err
	}
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	return certFile, keyFile, pool, nil
}

// Say tells the person at the terminal. go test keeps a passing package's
// output to itself, so a first run that builds the registry would be silent
// for minutes: the terminal itself (/dev/tty) is written to when there is
// one, stderr otherwise (a failing test's output, or a command's).
func Say(msg string) {
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		if _, err := tty.WriteString(msg); err == nil {
			return
		}
	}
	fmt.Fprint(os.Stderr, msg)
}

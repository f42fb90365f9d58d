package source

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/moby/client"

	"github.com/tagpush/tagpush/internal/quote"
)

// Docker is where the Docker engine is, as the docker CLI finds it: the
// environment's DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, else
// the current context (DOCKER_CONTEXT, or the config's currentContext, in
// DOCKER_CONFIG or ~/.docker), else the default socket.
type Docker struct {
	Host      string
	TLSVerify bool
	CertPath  string
	Context   string
	// ConfigDir is DOCKER_CONFIG; empty means Home/.docker.
	ConfigDir string
	Home      string
}

// ExportProgress is how far an export from the Docker engine has come:
// written bytes of about size.
type ExportProgress struct {
	Image         string
	Written, Size int64
}

// exportEvery is how often an export says how far it has come.
const exportEvery = 2 * time.Second

// daemonSource is an image in the Docker engine, found but not exported.
type daemonSource struct {
	spec, host string
	cli        *client.Client
	id         string // the image's ID
	size       int64  // its size in the engine, uncompressed
	diffIDs    []v1.Hash
	o          Options
}

// prepareDaemon finds an image in the Docker engine: a name (app:ci), or an
// ID as `docker build -q` prints it (sha256:<id> or its first 12 digits).
// Nothing is exported yet: that is open's work.
func prepareDaemon(ctx context.Context, spec string, o Options) (*daemonSource, error) {
	cli, host, err := dockerClient(o.Docker)
	if err != nil {
		return nil, fmt.Errorf("source docker-daemon:%s: %w", spec, err)
	}
	// The engine resolves names and IDs itself, as `docker save` does.
	res, err := cli.ImageInspect(ctx, spec)
	switch {
	case err == nil:
	case client.IsErrConnectionFailed(err):
		return nil, fmt.Errorf("source docker-daemon:%s: cannot reach Docker engine at %s: is the docker service enabled? (GitHub runners mount /var/run/docker.sock; Bitbucket needs `services: [docker]`): %w", spec, host, err)
	case cerrdefs.IsNotFound(err):
		return nil, fmt.Errorf("source docker-daemon:%s: no image %s in the Docker engine at %s (was it built or pulled in this job?)", spec, quote.Value(spec), host)
	default:
		return nil, fmt.Errorf("source docker-daemon:%s: ask the Docker engine at %s: %w", spec, host, err)
	}
	d := &daemonSource{spec: spec, host: host, cli: cli, id: res.ID, size: res.Size, o: o}
	for _, l := range res.RootFS.Layers {
		h, err := v1.NewHash(l)
		if err != nil {
			return nil, fmt.Errorf("source docker-daemon:%s: the engine says a layer is %s: %w", spec, quote.Value(l), err)
		}
		d.diffIDs = append(d.diffIDs, h)
	}
	return d, nil
}

// open exports the image (`docker save`) and reads the export as it comes,
// saying how far it has come every few seconds: a layer held names a blob
// the destination has, and is only hashed in passing; every other layer is
// compressed once, into a file of its own that goes when the image is
// closed, or at once when the export fails or is cancelled: nothing is left
// in TMPDIR.
func (d *daemonSource) open(ctx context.Context, held Held) (*Image, error) {
	dir, err := os.MkdirTemp("", "tagpush-export-")
	if err != nil {
		return nil, fmt.Errorf("source docker-daemon:%s: %w", d.spec, err)
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	id, _ := v1.NewHash(d.id)
	er := newExportReader(dir, id, d.diffIDs, held)
	if err := d.export(ctx, er.read); err != nil {
		cleanup()
		var stall *ExportStallError
		switch {
		case errors.As(err, &stall):
			return nil, fmt.Errorf("source docker-daemon:%s: %w", d.spec, err)
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return nil, fmt.Errorf("source docker-daemon:%s: the export from %s ran past the tags' time limit: %w", d.spec, d.host, context.Cause(ctx))
		case ctx.Err() != nil:
			return nil, fmt.Errorf("source docker-daemon:%s: export cancelled: %w", d.spec, context.Cause(ctx))
		}
		return nil, fmt.Errorf("source docker-daemon:%s: export the image from %s: %w", d.spec, d.host, err)
	}
	img, err := er.image(id)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("source docker-daemon:%s: read the export: %w", d.spec, err)
	}
	short := strings.TrimPrefix(d.id, "sha256:")
	if len(short) > 12 {
		short = short[:12]
	}
	return &Image{Taggable: img, Description: fmt.Sprintf("Docker engine image %s (ID %s; %s)", d.spec, short, er.says(img)), close: cleanup}, nil
}

// ExportStallError is an export the Docker engine stopped sending: nothing
// came for Idle.
type ExportStallError struct {
	Host string
	Idle time.Duration
}

func (e *ExportStallError) Error() string {
	return fmt.Sprintf("the Docker engine at %s sent nothing of the export for %s: export abandoned (is the engine, or the link to it, alive?)", e.Host, e.Idle)
}

// export streams the image out of the engine into read, abandoning it when
// no byte comes for the stall time.
//
// read is also handed a func to call while it works without reading (a
// spooled layer compressing): the engine is not silent then, it waits.
func (d *daemonSource) export(ctx context.Context, read func(r io.Reader, busy func()) error) error {
	// A silent engine (a tcp:// link gone quiet) would hold the run
	// forever: the export is abandoned when no byte comes for the stall
	// time, as an upload is.
	idle := d.o.ExportStall
	if idle <= 0 {
		idle = 30 * time.Second
	}
	stalled := &ExportStallError{Host: d.host, Idle: idle}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(idle, func() { cancel(stalled) })
	defer watchdog.Stop()
	rc, err := d.cli.ImageSave(ctx, []string{d.id})
	if err != nil {
		if context.Cause(ctx) == stalled {
			return stalled
		}
		return err
	}
	defer rc.Close()
	var written atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if d.o.Export == nil {
			return
		}
		t := time.NewTicker(exportEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d.o.Export(ExportProgress{Image: d.spec, Written: written.Load(), Size: d.size})
			}
		}
	}()
	alive := func() { watchdog.Reset(idle) }
	err = read(&countingReader{r: rc, n: &written, touch: alive}, alive)
	close(stop)
	<-done
	if err != nil && context.Cause(ctx) == stalled {
		return stalled
	}
	return err
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
	// touch, when set, is called whenever bytes arrive.
	touch func()
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if n > 0 && c.touch != nil {
		c.touch()
	}
	return n, err
}

// dockerClient is a client of the engine d names, and its address.
func dockerClient(d Docker) (*client.Client, string, error) {
	host, tlsFiles, verify, err := d.endpoint()
	if err != nil {
		return nil, "", err
	}
	opts := []client.Opt{client.WithHost(host)}
	if tlsFiles != "" {
		cfg, err := tlsConfig(tlsFiles, verify)
		if err != nil {
			return nil, "", err
		}
		opts = append(opts, client.WithHTTPClient(&http.Client{
			Transport:     &http.Transport{TLSClientConfig: cfg},
			CheckRedirect: client.CheckRedirect,
		}))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, "", fmt.Errorf("Docker engine address %s: %w", quote.Value(host), err)
	}
	return cli, host, nil
}

// endpoint is the engine's address and, when it speaks TLS, the directory of
// its ca.pem, cert.pem and key.pem and whether the certificate is checked.
func (d Docker) endpoint() (host, tlsFiles string, verify bool, err error) {
	configDir := d.ConfigDir
	if configDir == "" && d.Home != "" {
		configDir = filepath.Join(d.Home, ".docker")
	}
	if d.Host != "" {
		if d.TLSVerify || d.CertPath != "" {
			tlsFiles = d.CertPath
			if tlsFiles == "" {
				tlsFiles = configDir
			}
		}
		return d.Host, tlsFiles, d.TLSVerify, nil
	}
	name := d.Context
	if name == "" && configDir != "" {
		var cfg struct {
			CurrentContext string `json:"currentContext"`
		}
		if b, err := os.ReadFile(filepath.Join(configDir, "config.json")); err == nil {
			_ = json.Unmarshal(b, &cfg)
		}
		name = cfg.CurrentContext
	}
	if name == "" || name == "default" {
		return client.DefaultDockerHost, "", false, nil
	}
	if configDir == "" {
		return "", "", false, fmt.Errorf("Docker context %s: no Docker config directory to read it from (DOCKER_CONFIG, HOME)", quote.Value(name))
	}
	// The docker CLI keeps a context under the SHA-256 of its name.
	sum := sha256.Sum256([]byte(name))
	id := hex.EncodeToString(sum[:])
	var meta struct {
		Endpoints map[string]struct {
			Host          string
			SkipTLSVerify bool
		}
	}
	b, err := os.ReadFile(filepath.Join(configDir, "contexts", "meta", id, "meta.json"))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil {
		return "", "", false, fmt.Errorf("Docker context %s: %w (see `docker context ls`)", quote.Value(name), err)
	}
	ep, ok := meta.Endpoints["docker"]
	if !ok || ep.Host == "" {
		return "", "", false, fmt.Errorf("Docker context %s has no docker endpoint", quote.Value(name))
	}
	files := filepath.Join(configDir, "contexts", "tls", id, "docker")
	if _, err := os.Stat(filepath.Join(files, "ca.pem")); err != nil {
		files = ""
	}
	return ep.Host, files, !ep.SkipTLSVerify, nil
}

// tlsConfig trusts dir's ca.pem and presents its cert.pem and key.pem, as
// the docker CLI does; without verify, the engine's certificate is not
// checked (DOCKER_TLS_VERIFY unset).
func tlsConfig(dir string, verify bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: !verify} //nolint:gosec // as the docker CLI does without DOCKER_TLS_VERIFY
	if ca, err := os.ReadFile(filepath.Join(dir, "ca.pem")); err == nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", filepath.Join(dir, "ca.pem"))
		}
		cfg.RootCAs = pool
	} else if verify {
		return nil, fmt.Errorf("TLS to the Docker engine: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	switch {
	case err == nil:
		cfg.Certificates = []tls.Certificate{cert}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("TLS to the Docker engine: %w", err)
	}
	return cfg, nil
}

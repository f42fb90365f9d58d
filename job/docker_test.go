package job_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/tagpush/tagpush/internal/dockertest"
	"github.com/tagpush/tagpush/internal/fakedocker"
	"github.com/tagpush/tagpush/internal/testimage"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/job"
	"github.com/tagpush/tagpush/report"
)

// docker-daemon: on a real engine, as a workflow step uses it: by name, by
// ID (whole and short, as `docker build -q` prints it), an image of many
// layers, a re-run; nothing is left in TMPDIR after any of them.
func TestDockerEngineSource(t *testing.T) {
	host := dockertest.Engine(t)
	reg := testregistry.ForTest(t, testregistry.Options{})
	small, _ := testimage.Small("linux", "amd64")
	many, err := random.Image(64<<10, 6)
	if err != nil {
		t.Fatal(err)
	}
	ids := dockertest.Load(t, host, map[string]v1.Image{"tagpush-test/app:ci": small, "tagpush-test/many:ci": many})
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	run := func(spec, tags string) (*runner, map[string]string) {
		t.Helper()
		r := newRunner(t, map[string]string{"source": spec, "tags": tags, "repository": reg.Host + "/acme/app"})
		r.env["DOCKER_HOST"] = host
		mustRun(t, r)
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Errorf("%s left %d entries in TMPDIR", spec, len(left))
		}
		return r, r.outputs(t)
	}
	_, out := run("docker-daemon:tagpush-test/app:ci", "1.0\nlatest")
	for _, tag := range []string{"acme/app:1.0", "acme/app:latest"} {
		if got := resolves(t, reg, tag); got != out["digest"] {
			t.Errorf("%s = %s, digest output %s", tag, got, out["digest"])
		}
	}
	digest := out["digest"]

	// The same image by its ID: the same digest, so a re-run finds the
	// tags unchanged; a new tag is pushed.
	id := ids["tagpush-test/app:ci"]
	for i, spec := range []string{id, strings.TrimPrefix(id, "sha256:")[:12]} {
		r, out := run("docker-daemon:"+spec, "1.0\nlatest\nby-id-"+strings.Repeat("x", i+1))
		if out["digest"] != digest || out["unchanged"] != reg.Host+"/acme/app:1.0\n"+reg.Host+"/acme/app:latest" {
			t.Errorf("%s: digest %s (want %s), unchanged %q\n%s", spec, out["digest"], digest, out["unchanged"], &r.stdout)
		}
	}

	_, out = run("tagpush-test/many:ci", "many")
	if got := resolves(t, reg, "acme/app:many"); got != out["digest"] {
		t.Errorf("many layers: %s, digest output %s", got, out["digest"])
	}
}

// A missing image and an engine that is not there are bad input (exit 2),
// named, with nothing pushed.
func TestDockerEngineSourceBadInput(t *testing.T) {
	host := dockertest.Engine(t)
	reg := testregistry.ForTest(t, testregistry.Options{})
	for _, tt := range []struct {
		name, host, want string
	}{
		{"missing image", host, `no image "tagpush-test/nothing:ci" in the Docker engine`},
		{"no engine", "unix:///nonexistent.sock", "cannot reach Docker engine at unix:///nonexistent.sock"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRunner(t, map[string]string{"source": "docker-daemon:tagpush-test/nothing:ci", "tags": reg.Host + "/acme/app:1"})
			r.env["DOCKER_HOST"] = tt.host
			if code := r.run(t); code != job.ExitBadInput || !strings.Contains(r.stdout.String(), tt.want) {
				t.Errorf("exit %d, want 2 saying %q:\n%s", code, tt.want, &r.stdout)
			}
		})
	}
	// One images line of several naming an image the engine lacks (a typo
	// in a service's name): nothing is pushed, not even the other images.
	// The others were pushed (acme/api:1.4.2 overwritten), exit 1.
	r := newRunner(t, map[string]string{"images": ociSource + " -> " + reg.Host + "/acme/api:1.4.2\n" +
		"docker-daemon:tagpush-test/wrker:ci -> " + reg.Host + "/acme/worker:1.4.2"})
	r.env["DOCKER_HOST"] = host
	want := `images line 2: source docker-daemon:tagpush-test/wrker:ci: no image "tagpush-test/wrker:ci" in the Docker engine`
	if code := r.run(t); code != job.ExitBadInput || !strings.Contains(r.stdout.String(), want) {
		t.Errorf("images with a missing engine image: exit %d, want 2 saying %q:\n%s", code, want, &r.stdout)
	}
	if n := reg.Faults.Stats().Requests; n != 0 {
		t.Errorf("the registry got %d requests", n)
	}
}

// The engine found as the docker CLI finds it: no DOCKER_HOST, the context
// DOCKER_CONTEXT names (or the config's currentContext), from DOCKER_CONFIG.
func TestDockerEngineFromContext(t *testing.T) {
	host := dockertest.Engine(t)
	reg := testregistry.ForTest(t, testregistry.Options{})
	img, _ := testimage.Small("linux", "arm64")
	dockertest.Load(t, host, map[string]v1.Image{"tagpush-test/ctx:ci": img})
	config := t.TempDir()
	sum := sha256.Sum256([]byte("ci-engine"))
	meta := filepath.Join(config, "contexts", "meta", hex.EncodeToString(sum[:]))
	if err := os.MkdirAll(meta, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"Name": "ci-engine", "Endpoints": map[string]any{"docker": map[string]any{"Host": host, "SkipTLSVerify": false}}})
	if err := os.WriteFile(filepath.Join(meta, "meta.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"DOCKER_CONTEXT", "currentContext"} {
		t.Run(how, func(t *testing.T) {
			r := newRunner(t, map[string]string{"source": "docker-daemon:tagpush-test/ctx:ci", "tags": reg.Host + "/acme/ctx:" + strings.ToLower(how)})
			r.env["DOCKER_CONFIG"] = config
			if how == "DOCKER_CONTEXT" {
				r.env["DOCKER_CONTEXT"] = "ci-engine"
			} else if err := os.WriteFile(filepath.Join(config, "config.json"), []byte(`{"currentContext":"ci-engine"}`), 0o644); err != nil {
				t.Fatal(err)
			}
			mustRun(t, r)
		})
	}
}

// A workflow cancelled while the image is being exported: exit 1
// (cancelled, not bad input), the outputs written with every tag
// cancelled, and the export's file gone.
func TestCancelDuringExport(t *testing.T) {
	host := dockertest.Engine(t)
	reg := testregistry.ForTest(t, testregistry.Options{})
	big, err := random.Image(48<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	dockertest.Load(t, host, map[string]v1.Image{"tagpush-test/big:ci": big})
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	r := newRunner(t, map[string]string{"source": "docker-daemon:tagpush-test/big:ci", "tags": reg.Host + "/acme/big:1\n" + reg.Host + "/acme/big:2"})
	r.env["DOCKER_HOST"] = host
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// Cancel once the export has begun: a layer is being written in
		// TMPDIR.
		defer wg.Done()
		defer cancel()
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if dirs, _ := filepath.Glob(filepath.Join(tmp, "tagpush-export-*", "*")); len(dirs) > 0 {
				return
			}
		}
	}()
	code := job.Run(ctx, job.Env{Getenv: func(k string) string { return r.env[k] }, Stdout: &r.stdout, Stderr: &bytes.Buffer{}, Version: "test", DockerConfig: authn.NewMultiKeychain()})
	wg.Wait()
	if code != job.ExitFailed {
		t.Errorf("exit %d, want 1 (cancelled)\n%s", code, &r.stdout)
	}
	var results []report.Entry
	if err := json.Unmarshal([]byte(r.outputs(t)["results"]), &results); err != nil || len(results) != 2 {
		t.Fatalf("results after a cancelled export: %v", err)
	}
	for _, e := range results {
		if e.Status != "cancelled" {
			t.Errorf("%s: %s, want cancelled", e.Tag, e.Status)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("a cancelled export left %d entries in TMPDIR", len(left))
	}
}

// An export the engine stops sending is under the tags' time limit: the run
// ends at the timeout with a clear error, exit 1, the outputs written with
// every tag failed, and nothing left in TMPDIR. With --timeout 30s a run
// was still waiting at 150 s.
func TestSilentEngineEndsAtTheTimeout(t *testing.T) {
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := fakedocker.Start(t.TempDir(), map[string]v1.Image{"acme/app:ci": img})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	engine.StallSave = true
	reg := testregistry.ForTest(t, testregistry.Options{})
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	r := newRunner(t, map[string]string{"source": "docker-daemon:acme/app:ci", "tags": reg.Host + "/acme/app:1", "timeout": "2s"})
	r.env["DOCKER_HOST"] = engine.Host
	start := time.Now()
	if code := r.run(t); code != job.ExitFailed {
		t.Errorf("exit %d, want 1\n%s", code, &r.stdout)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("took %s with a 2s timeout", took)
	}
	var results []report.Entry
	if err := json.Unmarshal([]byte(r.outputs(t)["results"]), &results); err != nil || len(results) != 1 {
		t.Fatalf("results: %v", err)
	}
	if e := results[0]; e.Status != "failed" || !strings.Contains(e.Error, "ran past the tags' time limit") {
		t.Errorf("result %+v; want failed, saying the export ran past the time limit", e)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("%d entries left in TMPDIR", len(left))
	}
}

// A re-run of an engine image every tag already holds costs no export: each
// tag is read, its manifest's config is the engine's image ID, and the tags
// are unchanged without the image being saved. A changed image is exported
// as before. Every re-run exported and compressed the whole image.
func TestUnchangedEngineImageIsNotExported(t *testing.T) {
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	next, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := fakedocker.Start(t.TempDir(), map[string]v1.Image{"acme/app:ci": img, "acme/app:next": next})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	reg := testregistry.ForTest(t, testregistry.Options{})
	tags := reg.Host + "/acme/app:1.4.2\n" + reg.Host + "/acme/app:latest"
	run := func(src string) (int, map[string]string) {
		r := newRunner(t, map[string]string{"source": "docker-daemon:" + src, "tags": tags})
		r.env["DOCKER_HOST"] = engine.Host
		code := r.run(t)
		return code, r.outputs(t)
	}
	code, out := run("acme/app:ci")
	if code != job.ExitOK || engine.Saves() != 1 {
		t.Fatalf("first push: exit %d, %d exports", code, engine.Saves())
	}
	want := out["digest"]
	code, out = run("acme/app:ci")
	if code != job.ExitOK || engine.Saves() != 1 || out["unchanged"] != tags || out["digest"] != want {
		t.Errorf("re-run: exit %d, %d exports (want still 1), unchanged %q, digest %q (want %s)", code, engine.Saves(), out["unchanged"], out["digest"], want)
	}
	if code, out := run("acme/app:next"); code != job.ExitOK || engine.Saves() != 2 || out["unchanged"] != "" {
		t.Errorf("changed image: exit %d, %d exports (want 2), unchanged %q", code, engine.Saves(), out["unchanged"])
	}
}

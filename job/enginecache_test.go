package job_test

import (
	crand "crypto/rand"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/tagpush/tagpush/internal/dockertest"
	"github.com/tagpush/tagpush/internal/fakedocker"
	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/job"
)

// service is an image of a base (two layers of 1 MiB) and an app layer of
// 64 KiB, as `docker build` leaves a service image: the base stays, the app
// layer changes with every build.
func service(t *testing.T, base []v1.Layer) v1.Image {
	t.Helper()
	app, err := random.Layer(64<<10, "application/vnd.docker.image.rootfs.diff.tar.gzip")
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, append(append([]v1.Layer{}, base...), app)...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func baseLayers(t *testing.T) []v1.Layer {
	t.Helper()
	var base []v1.Layer
	for range 2 {
		l, err := random.Layer(1<<20, "application/vnd.docker.image.rootfs.diff.tar.gzip")
		if err != nil {
			t.Fatal(err)
		}
		base = append(base, l)
	}
	return base
}

// manifestOf reads what a tag holds.
func manifestOf(t *testing.T, ref string) *v1.Manifest {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(tag)
	if err != nil {
		t.Fatalf("read %s: %v", ref, err)
	}
	// Every blob is what its manifest and config say: the compressed
	// digest and size, and the uncompressed layer's diff ID.
	if err := validate.Image(img); err != nil {
		t.Errorf("%s is not a whole image: %v", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A rebuild on a fresh runner, after a team moved from docker push: the
// tags hold the last build as docker push compressed it (here: the blobs
// as they were pushed by another tool, whose compression is not tagpush's).
// The new build shares the base: its layers are found at the destination
// by diff ID, pushed as the blobs that are there, and only the new app
// layer is compressed and uploaded. Every run compressed and uploaded the
// whole image, and the base went up again under new digests.
func TestRebuildUploadsOnlyTheNewLayer(t *testing.T) {
	base := baseLayers(t)
	last, next := service(t, base), service(t, base)
	engine := fakeEngine(t, map[string]v1.Image{"acme/api:ci": next})
	reg := testregistry.ForTest(t, testregistry.Options{})
	tags := []string{reg.Host + "/acme/api:1.4", reg.Host + "/acme/api:latest"}
	for _, ref := range tags {
		tag, _ := name.NewTag(ref)
		if err := remote.Write(tag, last); err != nil {
			t.Fatal(err)
		}
	}
	lastManifest := manifestOf(t, tags[0])
	reg.Faults.Reset(faults.Config{})

	r := newRunner(t, map[string]string{"source": "docker-daemon:acme/api:ci", "tags": strings.Join(tags, "\n")})
	r.env["DOCKER_HOST"] = engine.Host
	if code := r.run(t); code != job.ExitOK {
		t.Fatalf("exit %d\n%s", code, &r.stdout)
	}
	for _, ref := range tags {
		m := manifestOf(t, ref)
		for i := range 2 {
			if m.Layers[i].Digest != lastManifest.Layers[i].Digest {
				t.Errorf("%s: base layer %d is %s, want the blob already there, %s", ref, i, m.Layers[i].Digest, lastManifest.Layers[i].Digest)
			}
		}
		if m.Layers[2].Digest == lastManifest.Layers[2].Digest {
			t.Errorf("%s: the app layer did not change", ref)
		}
	}
	// The app layer (64 KiB of random bytes, gzip adds a little) and the
	// config: the base's 2 MiB stay where they are.
	if sent := reg.Faults.Stats().BlobBytes; sent > 80<<10 {
		t.Errorf("uploaded %d bytes, want only the app layer and the config (< 80 KiB)", sent)
	}
	if !strings.Contains(r.stdout.String(), "1 layer compressed, 2 reused") {
		t.Errorf("the log does not say what was compressed:\n%s", &r.stdout)
	}
}

// A job retried after one registry failed it: one tag holds the image
// already, the other does not. The image is read from the tag that holds
// it and its blobs mounted from there: no export at all.
func TestImageHeldByOneTagIsNotExported(t *testing.T) {
	img := service(t, baseLayers(t))
	engine := fakeEngine(t, map[string]v1.Image{"acme/api:ci": img})
	reg := testregistry.ForTest(t, testregistry.Options{})
	run := func(tags ...string) (int, map[string]string) {
		r := newRunner(t, map[string]string{"source": "docker-daemon:acme/api:ci", "tags": strings.Join(tags, "\n")})
		r.env["DOCKER_HOST"] = engine.Host
		code := r.run(t)
		return code, r.outputs(t)
	}
	first, other := reg.Host+"/acme/api:1.4", reg.Host+"/acme/mirror:1.4"
	if code, _ := run(first); code != job.ExitOK || engine.Saves() != 1 {
		t.Fatalf("first push: exit %d, %d exports", code, engine.Saves())
	}
	want := manifestOf(t, first)
	reg.Faults.Reset(faults.Config{})
	code, out := run(first, other)
	if code != job.ExitOK || engine.Saves() != 1 || !strings.Contains(out["pushed"], other) || out["unchanged"] != first {
		t.Fatalf("retry: exit %d, %d exports (want still 1), pushed %q, unchanged %q", code, engine.Saves(), out["pushed"], out["unchanged"])
	}
	if got := manifestOf(t, other); got.Config.Digest != want.Config.Digest || got.Layers[0].Digest != want.Layers[0].Digest {
		t.Errorf("%s holds another image than %s", other, first)
	}
	if sent := reg.Faults.Stats().BlobBytes; sent != 0 {
		t.Errorf("uploaded %d blob bytes, want every blob mounted", sent)
	}
}

// The same on a real engine, as a workflow has it: a base in the engine,
// `docker build` of an app layer on it, pushed; then a rebuild with a new
// app layer, pushed to the same tags. The rebuild uploads the app layer and
// the config only, and every pushed image is whole (each layer's
// uncompressed digest is its config's diff ID). Then a team moving from
// docker push: the tags hold what `docker push` wrote, and a rebuild keeps
// its base blobs.
func TestRebuildOnARealEngine(t *testing.T) {
	host := dockertest.Engine(t)
	reg := testregistry.ForTest(t, testregistry.Options{})
	base, err := random.Image(512<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	dockertest.Load(t, host, map[string]v1.Image{"tagpush-test/base:1": base})
	build := func(ref string) {
		t.Helper()
		dir := t.TempDir()
		app := make([]byte, 64<<10)
		_, _ = crand.Read(app)
		if err := os.WriteFile(filepath.Join(dir, "app.bin"), app, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM tagpush-test/base:1\nCOPY app.bin /app.bin\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("docker", "build", "-q", "-t", ref, dir)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+host)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker build: %v: %s", err, out)
		}
		t.Cleanup(func() {
			c := exec.Command("docker", "rmi", "-f", ref)
			c.Env = cmd.Env
			_ = c.Run()
		})
	}
	push := func(src string, tags ...string) string {
		t.Helper()
		r := newRunner(t, map[string]string{"source": "docker-daemon:" + src, "tags": strings.Join(tags, "\n")})
		r.env["DOCKER_HOST"] = host
		mustRun(t, r)
		return r.stdout.String()
	}
	tags := []string{reg.Host + "/acme/svc:1", reg.Host + "/acme/svc:latest"}
	build("tagpush-test/svc:1")
	push("tagpush-test/svc:1", tags...)
	first := manifestOf(t, tags[0])
	build("tagpush-test/svc:2")
	reg.Faults.Reset(faults.Config{})
	log := push("tagpush-test/svc:2", tags...)
	for _, ref := range tags {
		m := manifestOf(t, ref)
		if m.Layers[0].Digest != first.Layers[0].Digest || m.Layers[1].Digest != first.Layers[1].Digest || m.Layers[2].Digest == first.Layers[2].Digest {
			t.Errorf("%s: layers %v, want the base's blobs kept and a new app layer", ref, m.Layers)
		}
	}
	if sent := reg.Faults.Stats().BlobBytes; sent > 80<<10 {
		t.Errorf("the rebuild uploaded %d bytes, want the app layer and the config (< 80 KiB)\n%s", sent, log)
	}

	// docker push wrote these tags; tagpush's rebuild keeps docker's base.
	pushed := reg.Host + "/acme/moved:1"
	for _, args := range [][]string{{"tag", "tagpush-test/svc:1", pushed}, {"push", "-q", pushed}, {"rmi", pushed}} {
		cmd := exec.Command("docker", args...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+host)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker %s: %v: %s", args[0], err, out)
		}
	}
	byDocker := manifestOf(t, pushed)
	reg.Faults.Reset(faults.Config{})
	push("tagpush-test/svc:2", pushed)
	if m := manifestOf(t, pushed); m.Layers[0].Digest != byDocker.Layers[0].Digest || m.Layers[1].Digest != byDocker.Layers[1].Digest {
		t.Errorf("after docker push: layers %v, want docker's base blobs %v", m.Layers, byDocker.Layers)
	}
	if sent := reg.Faults.Stats().BlobBytes; sent > 80<<10 {
		t.Errorf("the rebuild over docker push's tags uploaded %d bytes, want < 80 KiB", sent)
	}
}

// A new layer goes up as soon as it is compressed, while the engine is
// still sending the rest of the export: on a remote registry the upload of
// one layer hides the export and compression of the next, as docker push's
// streaming does. The engine here pauses between the files it sends; by
// the time it sends the last layer, the registry has blob bytes already.
// Every upload waited for the whole export before.
func TestNewLayersUploadWhileTheExportGoesOn(t *testing.T) {
	img, _ := randomImage(t, 3, 256<<10)
	engine := fakeEngine(t, map[string]v1.Image{"acme/api:ci": img})
	reg := testregistry.ForTest(t, testregistry.Options{})
	var atEnd atomic.Int64
	sent := 0
	engine.Trickle = 300 * time.Millisecond
	engine.Before = func(name string, offset int) {
		if strings.HasSuffix(name, "/layer.tar") && offset == 0 {
			if sent++; sent == 3 {
				atEnd.Store(reg.Faults.Stats().BlobBytes)
			}
		}
	}
	tags := []string{reg.Host + "/acme/api:1", reg.Host + "/acme/mirror:1"}
	r := newRunner(t, map[string]string{"source": "docker-daemon:acme/api:ci", "tags": strings.Join(tags, "\n")})
	r.env["DOCKER_HOST"] = engine.Host
	mustRun(t, r)
	for _, ref := range tags {
		manifestOf(t, ref)
	}
	if atEnd.Load() == 0 {
		t.Errorf("no blob byte had reached the registry when the engine sent the last layer\n%s", &r.stdout)
	}
	if sent := reg.Faults.Stats().BlobBytes; sent > 3*(256<<10)+(64<<10) {
		t.Errorf("uploaded %d bytes: a layer went up more than once", sent)
	}
}

// One big new layer goes up while it is compressed: its bytes are streamed
// to the registry as they are made (a PATCH that ends with the layer, then
// the PUT naming its digest), so on a remote registry the upload hides
// behind the export and compression, as docker push's does. The engine
// here sends the layer in pieces; before it sends the last, the registry
// has blob bytes already. Each layer went up only once it was whole.
func TestABigLayerStreamsWhileItIsCompressed(t *testing.T) {
	t.Run("distribution", func(t *testing.T) {
		reg := testregistry.ForTest(t, testregistry.Options{})
		bigLayerStreams(t, reg.Host, reg.Faults)
	})
	// go-containerregistry's registry (a second server): its PATCH takes a
	// body of no length too.
	t.Run("go-containerregistry", func(t *testing.T) {
		layer := faults.New(ggcrregistry.New(), faults.Config{})
		srv := httptest.NewServer(layer)
		t.Cleanup(srv.Close)
		bigLayerStreams(t, strings.TrimPrefix(srv.URL, "http://"), layer)
	})
}

func bigLayerStreams(t *testing.T, host string, fl *faults.Layer) {
	img, layers := randomImage(t, 1, 3<<20)
	l := layers[0]
	engine := fakeEngine(t, map[string]v1.Image{"acme/api:ci": img})
	var before atomic.Int64
	engine.Trickle, engine.Piece = 100*time.Millisecond, 256<<10
	size, _ := l.Size()
	engine.Before = func(name string, offset int) {
		if strings.HasSuffix(name, "/layer.tar") && offset+256<<10 >= int(size) {
			before.Store(fl.Stats().BlobBytes)
		}
	}
	tags := []string{host + "/acme/api:1", host + "/acme/api:latest", host + "/acme/mirror:1"}
	r := newRunner(t, map[string]string{"source": "docker-daemon:acme/api:ci", "tags": strings.Join(tags, "\n")})
	r.env["DOCKER_HOST"] = engine.Host
	mustRun(t, r)
	for _, ref := range tags {
		manifestOf(t, ref)
	}
	if before.Load() == 0 {
		t.Errorf("no blob byte had reached the registry before the engine sent the layer's last piece\n%s", &r.stdout)
	}
	// Streamed once, mounted into the other repository (or found there:
	// go-containerregistry's registry keeps one store).
	if sent := fl.Stats().BlobBytes; sent > size+size/8 {
		t.Errorf("uploaded %d bytes for a layer of %d: it went up more than once", sent, size)
	}
	// The layer and the config, each counted once.
	if !strings.Contains(r.stdout.String(), "2 blobs uploaded (3.0 MiB)") {
		t.Errorf("the transfer line does not count the streamed layer once:\n%s", &r.stdout)
	}
}

// A stream is a shortcut: one that fails (its POST refused, its PATCH reset
// midway, its session lost, its token expired in flight: a body made as it
// goes cannot be sent again) leaves the layer to a plain upload, and every
// tag is pushed, whole.
func TestAFailedStreamFallsBackToAPlainUpload(t *testing.T) {
	img, _ := randomImage(t, 1, 2<<20)
	for _, tt := range []struct {
		name string
		cfg  faults.Config
	}{
		{"POST refused", faults.Config{FailWritesFirst: 1}},
		{"PATCH reset", faults.Config{ResetFirst: 1}},
		{"session lost", faults.Config{LoseUploadFirst: 1}},
		{"token expired in flight", faults.Config{TokenAuth: true, ShortLivedTokens: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			engine := fakeEngine(t, map[string]v1.Image{"acme/api:ci": img})
			engine.Trickle, engine.Piece = 20*time.Millisecond, 256<<10
			reg := testregistry.ForTest(t, testregistry.Options{Faults: tt.cfg})
			tags := []string{reg.Host + "/acme/api:1", reg.Host + "/acme/api:latest"}
			r := newRunner(t, map[string]string{"source": "docker-daemon:acme/api:ci", "tags": strings.Join(tags, "\n")})
			r.env["DOCKER_HOST"] = engine.Host
			mustRun(t, r)
			for _, ref := range tags {
				manifestOf(t, ref)
			}
			if len(reg.Faults.Stats().Injected) == 0 {
				t.Error("the fault never came: the case tests nothing")
			}
		})
	}
}

// Services built on one base, pushed in one run to new repositories: the
// first export compresses the base, the next one reuses those layers (one
// export at a time), and the base goes up once, mounted into the other
// repository. Each export compressed the whole base, at once.
func TestImagesOfOneBaseCompressItOnce(t *testing.T) {
	base := baseLayers(t)
	api, web := service(t, base), service(t, base)
	engine := fakeEngine(t, map[string]v1.Image{"acme/api:ci": api, "acme/web:ci": web})
	reg := testregistry.ForTest(t, testregistry.Options{})
	r := newRunner(t, map[string]string{"images": "docker-daemon:acme/api:ci -> " + reg.Host + "/acme/api:1\ndocker-daemon:acme/web:ci -> " + reg.Host + "/acme/web:1"})
	r.env["DOCKER_HOST"] = engine.Host
	mustRun(t, r)
	for _, ref := range []string{reg.Host + "/acme/api:1", reg.Host + "/acme/web:1"} {
		manifestOf(t, ref)
	}
	log := r.stdout.String()
	if !strings.Contains(log, "3 layers compressed") || !strings.Contains(log, "1 layer compressed, 2 reused") {
		t.Errorf("the second export compressed the base again:\n%s", log)
	}
	// The base (2 MiB) once, two app layers and configs.
	if sent := reg.Faults.Stats().BlobBytes; sent > 2<<20+200<<10 {
		t.Errorf("uploaded %d bytes: the base went up twice", sent)
	}
}

// An engine with the containerd image store: the image is pushed as the
// engine keeps it, at the engine's own digest (its ID), and a re-run finds
// every tag holding it without an export.
func TestContainerdStoreImageIsPushedAsItIs(t *testing.T) {
	img := service(t, baseLayers(t))
	engine := fakeEngine(t, map[string]v1.Image{"acme/api:ci": img})
	engine.Store = fakedocker.Containerd
	reg := testregistry.ForTest(t, testregistry.Options{})
	tags := reg.Host + "/acme/api:1\n" + reg.Host + "/acme/api:latest"
	run := func() map[string]string {
		r := newRunner(t, map[string]string{"source": "docker-daemon:acme/api:ci", "tags": tags})
		r.env["DOCKER_HOST"] = engine.Host
		mustRun(t, r)
		return r.outputs(t)
	}
	want, _ := img.Digest()
	if out := run(); out["digest"] != want.String() || engine.Saves() != 1 {
		t.Fatalf("first push: digest %s, want the engine's %s; %d exports", out["digest"], want, engine.Saves())
	}
	manifestOf(t, reg.Host+"/acme/api:1")
	if out := run(); out["unchanged"] != tags || engine.Saves() != 1 {
		t.Errorf("re-run: unchanged %q, %d exports (want still 1)", out["unchanged"], engine.Saves())
	}
}

// fakeEngine serves images as a fake Docker engine, for the test's time.
func fakeEngine(t *testing.T, images map[string]v1.Image) *fakedocker.Engine {
	t.Helper()
	engine, err := fakedocker.Start(t.TempDir(), images)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	return engine
}

// randomImage is an image of n layers of size random bytes each.
func randomImage(t *testing.T, n int, size int64) (v1.Image, []v1.Layer) {
	t.Helper()
	var layers []v1.Layer
	for range n {
		l, err := random.Layer(size, "application/vnd.docker.image.rootfs.diff.tar.gzip")
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img, layers
}

// On a slow wire a layer streams for longer than a repository waits for a
// home that makes no progress (3 s): the stream's bytes count as its home's
// progress, so the image's other repository mounts the layer once it is
// there instead of sending it a second time.
func TestASlowStreamIsAHomeMakingProgress(t *testing.T) {
	img, layers := randomImage(t, 1, 8<<20)
	engine := fakeEngine(t, map[string]v1.Image{"acme/api:ci": img})
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{UploadBytesPerSec: 2 << 20}})
	tags := []string{reg.Host + "/acme/api:1", reg.Host + "/acme/mirror:1"}
	r := newRunner(t, map[string]string{"source": "docker-daemon:acme/api:ci", "tags": strings.Join(tags, "\n")})
	r.env["DOCKER_HOST"] = engine.Host
	mustRun(t, r)
	for _, ref := range tags {
		manifestOf(t, ref)
	}
	size, _ := layers[0].Size()
	if sent := reg.Faults.Stats().BlobBytes; sent > size+size/4 {
		t.Errorf("uploaded %d bytes for a layer of %d: the other repository sent it again\n%s", sent, size, &r.stdout)
	}
}

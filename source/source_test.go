package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/tagpush/tagpush/internal/dockertest"
	"github.com/tagpush/tagpush/internal/fakedocker"
	"github.com/tagpush/tagpush/internal/testimage"
)

func digestOf(t *testing.T, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// twoImageLayout writes an OCI layout holding an amd64 image tagged "amd" and
// a two-platform index tagged "multi".
func twoImageLayout(t *testing.T) (dir string, img v1.Image, idx v1.ImageIndex) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "layout:with-colon")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img, err = testimage.Small("linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	idx, err = testimage.Index("linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "amd"})); err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "multi"})); err != nil {
		t.Fatal(err)
	}
	return dir, img, idx
}

// twoImageArchive writes a docker-archive holding acme/one:1 (linux/amd64)
// and acme/two:2 (linux/arm64).
func twoImageArchive(t *testing.T) string {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "two.tar")
	one, _ := name.NewTag("acme/one:1")
	two, _ := name.NewTag("acme/two:2")
	amd, _ := testimage.Small("linux", "amd64")
	arm, _ := testimage.Small("linux", "arm64")
	if err := tarball.MultiRefWriteToFile(archive, map[name.Reference]v1.Image{one: amd, two: arm}); err != nil {
		t.Fatal(err)
	}
	return archive
}

func TestOpenPicksTheRightManifest(t *testing.T) {
	dir, img, idx := twoImageLayout(t)
	archive := twoImageArchive(t)
	small, _ := testimage.Small("linux", "amd64")
	tests := []struct {
		spec      string
		wantIndex bool
		want      string
	}{
		{"oci:../testdata/oci", false, digestOf(t, small)},
		{"../testdata/oci", false, digestOf(t, small)},
		{"oci:" + dir + "@" + digestOf(t, img), false, digestOf(t, img)},
		{"oci:" + dir + ":amd", false, digestOf(t, img)},
		{"oci:" + dir + ":multi", true, digestOf(t, idx)},
		{"oci:" + dir + "@" + digestOf(t, idx), true, digestOf(t, idx)},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := Open(context.Background(), tt.spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			_, isIndex := got.Taggable.(v1.ImageIndex)
			if isIndex != tt.wantIndex {
				t.Errorf("index = %t, want %t", isIndex, tt.wantIndex)
			}
			if d := digestOf(t, got.Taggable.(interface{ Digest() (v1.Hash, error) })); d != tt.want {
				t.Errorf("digest %s, want %s", d, tt.want)
			}
		})
	}
	for _, tt := range []struct{ spec, wantArch string }{
		{"docker-archive:" + archive + ":acme/two:2", "arm64"},
		{"docker-archive:" + archive + ":acme/one:1", "amd64"},
		{"../testdata/image.tar", "amd64"},
	} {
		got, err := Open(context.Background(), tt.spec, Options{})
		if err != nil {
			t.Fatalf("%s: %v", tt.spec, err)
		}
		cf, err := got.Taggable.(v1.Image).ConfigFile()
		if err != nil || cf.Architecture != tt.wantArch {
			t.Errorf("%s: architecture %v (%v), want %s", tt.spec, cf, err, tt.wantArch)
		}
	}
}

func TestOpenErrorsNameTheProblem(t *testing.T) {
	dir, _, _ := twoImageLayout(t)
	archive := twoImageArchive(t)
	tests := []struct{ spec, want string }{
		{"", "source is empty"},
		{"oci:" + dir, "holds 2 manifests: pick one"},
		{"oci:" + dir + ":nope", `no manifest matches "nope"`},
		{"oci:" + t.TempDir(), "not an OCI image layout"},
		{"./no/such/thing", `source "./no/such/thing": no such file or directory`},
		{"no/such/thing.tar", `source "no/such/thing.tar": no such file or directory`},
		{"docker-daemon:app:1", "cannot reach Docker engine at unix:///nonexistent/docker.sock: is the docker service enabled?"},
		{"app:1", "cannot reach Docker engine at unix:///nonexistent/docker.sock"},

		{"registry:Not A Ref", "source registry:Not A Ref: not an image reference"},
		{"docker-archive:" + archive, "docker-archive:PATH:NAME:TAG"},
		{"docker-archive:/nope.tar", "docker-archive:/nope.tar"},
	}
	for _, tt := range tests {
		_, err := Open(context.Background(), tt.spec, Options{Docker: Docker{Host: "unix:///nonexistent/docker.sock"}})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", tt.spec, err, tt.want)
		}
	}
}

func TestOpenFromDockerEngine(t *testing.T) {
	host := dockertest.Engine(t)
	img, _ := testimage.Small("linux", "amd64")
	ids := dockertest.Load(t, host, map[string]v1.Image{"tagpush-test/source:1.0": img})
	t.Setenv("TMPDIR", t.TempDir())
	wantLayers, _ := img.Layers()
	id := ids["tagpush-test/source:1.0"]
	// By name, bare or with the scheme, and by ID as `docker build -q`
	// prints it: whole, and its first 12 digits.
	for _, spec := range []string{"docker-daemon:tagpush-test/source:1.0", "tagpush-test/source:1.0", "docker-daemon:" + id, strings.TrimPrefix(id, "sha256:")[:12]} {
		got, err := Open(context.Background(), spec, Options{Docker: Docker{Host: host}})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		layers, err := got.Taggable.(v1.Image).Layers()
		if err != nil || len(layers) != len(wantLayers) {
			t.Fatalf("%s: %d layers (%v), want %d", spec, len(layers), err, len(wantLayers))
		}
		for i := range layers {
			g, _ := layers[i].DiffID()
			w, _ := wantLayers[i].DiffID()
			if g != w {
				t.Errorf("%s layer %d: %s, want %s", spec, i, g, w)
			}
		}
		got.Close()
	}
	if left, _ := os.ReadDir(os.Getenv("TMPDIR")); len(left) != 0 {
		t.Errorf("the exports left %d entries in TMPDIR", len(left))
	}
	_, err := Open(context.Background(), "docker-daemon:tagpush-test/source:2.0", Options{Docker: Docker{Host: host}})
	if err == nil || !strings.Contains(err.Error(), `no image "tagpush-test/source:2.0" in the Docker engine at `+host) {
		t.Errorf("missing image: %v", err)
	}
}

// An export the engine breaks off midway (it is stopped, its disk fills)
// fails the open, and leaves nothing in TMPDIR. A real engine cannot be
// made to do that on cue: the fake one can.
func TestBrokenExportLeavesNothing(t *testing.T) {
	img, _ := testimage.Small("linux", "amd64")
	engine, err := fakedocker.Start(t.TempDir(), map[string]v1.Image{"acme/app:1.0": img})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	engine.BreakSave = true
	t.Setenv("TMPDIR", t.TempDir())
	_, err = Open(context.Background(), "docker-daemon:acme/app:1.0", Options{Docker: Docker{Host: engine.Host}})
	if err == nil || !strings.Contains(err.Error(), "export the image from "+engine.Host) {
		t.Errorf("broken export: %v", err)
	}
	if left, _ := os.ReadDir(os.Getenv("TMPDIR")); len(left) != 0 {
		t.Errorf("a broken export left %d entries in TMPDIR", len(left))
	}
}

// An engine that stops sending mid-export (a tcp:// link gone silent,
// Bitbucket's docker service) is given up on once nothing has come for the
// stall time, with an error that says so, and nothing is left in TMPDIR.
// The run waited for it without end (150 s and counting with --timeout 30s).
func TestSilentEngineExportIsAbandoned(t *testing.T) {
	img, _ := testimage.Small("linux", "amd64")
	engine, err := fakedocker.Start(t.TempDir(), map[string]v1.Image{"acme/app:1.0": img})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	engine.StallSave = true
	t.Setenv("TMPDIR", t.TempDir())
	start := time.Now()
	_, err = Open(context.Background(), "docker-daemon:acme/app:1.0", Options{Docker: Docker{Host: engine.Host}, ExportStall: 300 * time.Millisecond})
	var stall *ExportStallError
	if !errors.As(err, &stall) || !strings.Contains(err.Error(), "sent nothing of the export for 300ms") {
		t.Errorf("silent engine: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s to give up", took)
	}
	if left, _ := os.ReadDir(os.Getenv("TMPDIR")); len(left) != 0 {
		t.Errorf("an abandoned export left %d entries in TMPDIR", len(left))
	}
}

func TestPlatformPicksOneImage(t *testing.T) {
	dir, _, idx := twoImageLayout(t)
	m, _ := idx.IndexManifest()
	var arm string
	for _, d := range m.Manifests {
		if d.Platform.Architecture == "arm64" {
			arm = d.Digest.String()
		}
	}
	got, err := Open(context.Background(), "oci:"+dir+":multi", Options{Platform: "linux/arm64"})
	if err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, got.Taggable.(v1.Image)); d != arm {
		t.Errorf("picked %s, want the arm64 image %s", d, arm)
	}
	for _, tt := range []struct{ spec, platform, want string }{
		{"oci:" + dir + ":multi", "linux/s390x", "platform linux/s390x is not in"},
		{"oci:" + dir + ":amd", "linux/arm64", "is a single linux/amd64 image"},
		{"oci:" + dir + ":multi", "linux", "platform \"linux\" is not OS/ARCH"},
	} {
		if _, err := Open(context.Background(), tt.spec, Options{Platform: tt.platform}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s with %s: %v, want %q", tt.spec, tt.platform, err, tt.want)
		}
	}
	if _, err := Open(context.Background(), "oci:"+dir+":amd", Options{Platform: "linux/amd64"}); err != nil {
		t.Errorf("matching single image refused: %v", err)
	}
}

// A layout that holds the image, a signature of it (an OCI referrer) and a
// cosign-scheme .sig tag: oci:PATH opens the image without a pick, and both
// artifacts come with it.
func TestLayoutReferrers(t *testing.T) {
	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(128, 1)
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := partial.Descriptor(img)
	base, _ := random.Image(32, 1)
	sig := mutate.Subject(mutate.ConfigMediaType(base, "application/vnd.dev.cosign.simplesigning.v1+json"), *subject).(v1.Image)
	cosignSig, _ := random.Image(16, 1)
	for _, add := range []struct {
		img v1.Image
		ref string
	}{{img, "1.0"}, {sig, ""}, {cosignSig, "sha256-" + subject.Digest.Hex + ".sig"}} {
		var opts []layout.Option
		if add.ref != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": add.ref}))
		}
		if err := lp.AppendImage(add.img, opts...); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Open(context.Background(), "oci:"+dir, Options{Referrers: true})
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Taggable.(v1.Image).Digest(); d != subject.Digest {
		t.Fatalf("opened %s, want the image %s", d, subject.Digest)
	}
	sigDigest, _ := sig.Digest()
	cosignDigest, _ := cosignSig.Digest()
	var found []string
	for _, r := range got.Referrers {
		found = append(found, r.Digest.String()+" "+r.Tag)
	}
	want := []string{sigDigest.String() + " ", cosignDigest.String() + " sha256-" + subject.Digest.Hex + ".sig"}
	if strings.Join(found, ",") != strings.Join(want, ",") {
		t.Errorf("referrers = %q, want %q", found, want)
	}
}

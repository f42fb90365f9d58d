package job_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testimage"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/job"
)

// seed puts img in reg at ref (repository:tag) straight, not through the fault layer.
func seed(t *testing.T, reg *testregistry.Registry, ref string, img v1.Image) {
	t.Helper()
	tag, err := name.NewTag(reg.Direct + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
}

func resolves(t *testing.T, reg *testregistry.Registry, ref string, opts ...remote.Option) string {
	t.Helper()
	tag, err := name.NewTag(reg.Direct + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(tag, opts...)
	if err != nil {
		t.Fatalf("%s is not in the registry: %v", ref, err)
	}
	return desc.Digest.String()
}

func digest(t *testing.T, x interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func mustRun(t *testing.T, r *runner) {
	t.Helper()
	if code := r.run(t); code != job.ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, &r.stdout, &r.stderr)
	}
}

func TestSourceRemoteSameRepositoryOnlyPutsManifests(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	img, _ := testimage.Small("linux", "amd64")
	seed(t, reg, "acme/app:sha-abc123", img)
	r := newRunner(t, map[string]string{"source": "registry:" + reg.Host + "/acme/app:sha-abc123", "tags": "1.4.2\n1.4\nlatest", "repository": reg.Host + "/acme/app"})
	mustRun(t, r)
	st := reg.Faults.Stats()
	if st.UploadSessions != 0 || st.ByMethod["PATCH"] != 0 || st.Mounts != 0 {
		t.Errorf("retag in the same repository started %d uploads, %d PATCHes, %d mounts; want none", st.UploadSessions, st.ByMethod["PATCH"], st.Mounts)
	}
	if st.ManifestPuts != 3 {
		t.Errorf("%d manifest PUTs, want 3", st.ManifestPuts)
	}
	for _, tag := range []string{"acme/app:1.4.2", "acme/app:1.4", "acme/app:latest"} {
		if got := resolves(t, reg, tag); got != digest(t, img) {
			t.Errorf("%s = %s, want %s", tag, got, digest(t, img))
		}
	}
}

func TestSourceRemoteOtherRepositoryMountsBlobs(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	img, _ := testimage.Small("linux", "amd64")
	seed(t, reg, "acme/build:123", img)
	// A plain reference whose first part is a registry host is a registry source.
	r := newRunner(t, map[string]string{"source": reg.Host + "/acme/build:123", "tags": reg.Host + "/acme/app:1\n" + reg.Host + "/acme/app:2"})
	mustRun(t, r)
	st := reg.Faults.Stats()
	layers, _ := img.Layers()
	if st.Mounts != len(layers)+1 || st.UploadSessions != 0 || st.BlobBytes != 0 {
		t.Errorf("%d mounts, %d uploads, %d blob bytes; want %d mounts and nothing uploaded", st.Mounts, st.UploadSessions, st.BlobBytes, len(layers)+1)
	}
	if got := resolves(t, reg, "acme/app:2"); got != digest(t, img) {
		t.Errorf("acme/app:2 = %s", got)
	}
}

func TestSourceRemoteOtherRegistryStreamsBlobs(t *testing.T) {
	from := testregistry.ForTest(t, testregistry.Options{})
	to := testregistry.ForTest(t, testregistry.Options{})
	img, _ := testimage.Small("linux", "amd64")
	seed(t, from, "acme/app:1", img)
	r := newRunner(t, map[string]string{"source": "registry:" + from.Host + "/acme/app:1", "tags": to.Host + "/mirror/app:1\n" + to.Host + "/mirror/app:latest"})
	mustRun(t, r)
	var size int64
	layers, _ := img.Layers()
	for _, l := range layers {
		s, _ := l.Size()
		size += s
	}
	cfg, _ := img.RawConfigFile()
	size += int64(len(cfg))
	if st := to.Faults.Stats(); st.BlobBytes != size || st.Mounts != 0 {
		t.Errorf("destination received %d blob bytes and %d mounts; want the image's %d bytes once", st.BlobBytes, st.Mounts, size)
	}
	if st := from.Faults.Stats(); st.ByMethod["GET"] == 0 || st.ByMethod["PUT"] != 0 {
		t.Errorf("source registry saw %v: want reads only", st.ByMethod)
	}
	if got := resolves(t, to, "mirror/app:latest"); got != digest(t, img) {
		t.Errorf("mirror/app:latest = %s", got)
	}
}

func writeIndexLayout(t *testing.T) (string, v1.ImageIndex) {
	t.Helper()
	idx, err := testimage.Index("linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "multi")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	return dir, idx
}

func TestSourceMultiPlatformIndex(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	dir, idx := writeIndexLayout(t)
	m, _ := idx.IndexManifest()

	r := newRunner(t, map[string]string{"source": "oci:" + dir, "tags": "1\nlatest", "repository": reg.Host + "/acme/multi"})
	mustRun(t, r)
	for _, tag := range []string{"acme/multi:1", "acme/multi:latest"} {
		if got := resolves(t, reg, tag); got != digest(t, idx) {
			t.Errorf("%s = %s, want the index %s", tag, got, digest(t, idx))
		}
		ref, _ := name.NewTag(reg.Direct + "/" + tag)
		got, err := remote.Index(ref)
		if err != nil {
			t.Fatal(err)
		}
		for _, child := range m.Manifests {
			img, err := got.Image(child.Digest)
			if err != nil {
				t.Fatalf("%s: platform %s: %v", tag, child.Platform, err)
			}
			if _, err := img.Layers(); err != nil {
				t.Errorf("%s: platform %s: %v", tag, child.Platform, err)
			}
		}
	}

	r = newRunner(t, map[string]string{"source": "oci:" + dir, "tags": "arm", "repository": reg.Host + "/acme/multi", "platform": "linux/arm64"})
	mustRun(t, r)
	var arm string
	for _, d := range m.Manifests {
		if d.Platform.Architecture == "arm64" {
			arm = d.Digest.String()
		}
	}
	if got := resolves(t, reg, "acme/multi:arm"); got != arm {
		t.Errorf("platform linux/arm64 pushed %s, want the arm64 image %s", got, arm)
	}
}

// A registry that fails every write, asking for a pause (503 with
// Retry-After), does not hold back another: each registry has its own queue
// and its own pause, so the healthy one finishes all its tags while the
// failing one is still retrying: the slowest healthy tag is done before the
// fastest failing one.
func TestFailingRegistryDoesNotHoldBackAHealthyOne(t *testing.T) {
	healthy := testregistry.ForTest(t, testregistry.Options{})
	broken := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{FailWrites: 503, RetryAfter: "0.3"}})
	var tags []string
	for _, tag := range []string{"1", "2", "3", "4", "5", "6"} {
		tags = append(tags, broken.Host+"/acme/app:"+tag, healthy.Host+"/acme/app:"+tag)
	}
	// Three attempts, each after the 300ms pause the broken registry asks
	// for (max-retry-delay lets it): its tags retry for a second or more;
	// the healthy ones take a few tens of milliseconds.
	r := newRunner(t, map[string]string{"source": ociSource, "tags": strings.Join(tags, "\n"), "concurrency": "2", "max-attempts": "3", "retry-delay": "50ms", "max-retry-delay": "300ms"})
	if code := r.run(t); code != job.ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	out := r.outputs(t)
	if got := strings.Count(out["pushed"], healthy.Host); got != 6 || strings.Contains(out["pushed"], broken.Host) {
		t.Errorf("pushed:\n%s", out["pushed"])
	}
	var results []struct {
		Tag        string
		Status     string
		DurationMS int64 `json:"duration_ms"`
	}
	if err := json.Unmarshal([]byte(out["results"]), &results); err != nil {
		t.Fatal(err)
	}
	slowestHealthy, fastestBroken := int64(-1), int64(math.MaxInt64)
	for _, res := range results {
		if strings.HasPrefix(res.Tag, healthy.Host+"/") {
			slowestHealthy = max(slowestHealthy, res.DurationMS)
		} else {
			fastestBroken = min(fastestBroken, res.DurationMS)
		}
	}
	if slowestHealthy < 0 || slowestHealthy >= fastestBroken {
		t.Errorf("the healthy registry's slowest tag took %dms, the failing one's fastest %dms: the healthy one was held back\n%s", slowestHealthy, fastestBroken, out["results"])
	}
	summary, _ := os.ReadFile(r.report)
	for _, want := range []string{"#### " + broken.Host + ": 0 of 6 tags at the digest\n", "#### " + healthy.Host + ": 6 of 6 tags at the digest (6 pushed)"} {
		if !strings.Contains(string(summary), want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
}

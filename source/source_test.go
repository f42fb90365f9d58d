package source

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

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

func TestOpenPicksTheRightManifest(t *testing.T) {
	dir, img, idx := twoImageLayout(t)
	archive := filepath.Join(t.TempDir(), "two.tar")
	one, _ := name.NewTag("acme/one:1")
	two, _ := name.NewTag("acme/two:2")
	other, _ := testimage.Small("linux", "arm64")
	if err := tarball.MultiRefWriteToFile(archive, map[name.Reference]v1.Image{one: img, two: other}); err != nil {
		t.Fatal(err)
	}
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
			got, err := Open(tt.spec)
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
	for _, tt := range []struct{ spec, wantDiffOf string }{
		{"docker-archive:" + archive + ":acme/two:2", "arm64"},
		{"docker-archive:" + archive + ":acme/one:1", "amd64"},
		{"../testdata/image.tar", "amd64"},
	} {
		got, err := Open(tt.spec)
		if err != nil {
			t.Fatalf("%s: %v", tt.spec, err)
		}
		cf, err := got.Taggable.(v1.Image).ConfigFile()
		if err != nil || cf.Architecture != tt.wantDiffOf {
			t.Errorf("%s: architecture %v (%v), want %s", tt.spec, cf, err, tt.wantDiffOf)
		}
	}
}

func TestOpenErrorsNameTheProblem(t *testing.T) {
	dir, _, _ := twoImageLayout(t)
	archive := filepath.Join(t.TempDir(), "two.tar")
	a, _ := name.NewTag("acme/a:1")
	b, _ := name.NewTag("acme/b:1")
	img, _ := testimage.Small("linux", "amd64")
	other, _ := testimage.Small("linux", "arm64")
	if err := tarball.MultiRefWriteToFile(archive, map[name.Reference]v1.Image{a: img, b: other}); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ spec, want string }{
		{"", "source is empty"},
		{"oci:" + dir, "holds 2 manifests: pick one"},
		{"oci:" + dir + ":nope", `no manifest matches "nope"`},
		{"oci:" + t.TempDir(), "not an OCI image layout"},
		{"./no/such/thing", `source "./no/such/thing": no such file or directory`},
		{"docker-daemon:app:1", "docker-daemon: form is not supported yet"},
		{"docker-archive:" + archive, "docker-archive:PATH:NAME:TAG"},
		{"docker-archive:/nope.tar", "docker-archive:/nope.tar"},
	}
	for _, tt := range tests {
		_, err := Open(tt.spec)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", tt.spec, err, tt.want)
		}
	}
}

package testimage

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var update = flag.Bool("update", false, "rewrite testdata/ from Small")

const testdata = "../../testdata"

// TestTestdataMatchesSmall keeps the committed testdata/ images the ones Small
// builds: run with -update after changing Small.
func TestTestdataMatchesSmall(t *testing.T) {
	img, err := Small("linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		writeTestdata(t, img)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(filepath.Join(testdata, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != want {
		t.Fatalf("testdata/oci holds %v, want the one image %s; run go test ./internal/testimage -update", m.Manifests, want)
	}
	tb, err := tarball.ImageFromPath(filepath.Join(testdata, "image.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	gotLayers, err := tb.Layers()
	if err != nil {
		t.Fatal(err)
	}
	wantLayers, _ := img.Layers()
	if len(gotLayers) != len(wantLayers) {
		t.Fatalf("testdata/image.tar has %d layers, want %d", len(gotLayers), len(wantLayers))
	}
	for i := range gotLayers {
		g, _ := gotLayers[i].DiffID()
		w, _ := wantLayers[i].DiffID()
		if g != w {
			t.Errorf("image.tar layer %d diff id %s, want %s", i, g, w)
		}
	}
}

func writeTestdata(t *testing.T, img v1.Image) {
	t.Helper()
	dir := filepath.Join(testdata, "oci")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "latest"})); err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag("tagpush-test:latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(filepath.Join(testdata, "image.tar"), ref, img); err != nil {
		t.Fatal(err)
	}
}

func TestWriteRandomLayout(t *testing.T) {
	dir := t.TempDir()
	want, err := WriteRandomLayout(dir, 3, 100<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := lp.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 3 {
		t.Fatalf("%d layers, %v", len(layers), err)
	}
	for _, l := range layers {
		// Digest checks the bytes on disk against the manifest.
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		h, n, err := v1.SHA256(rc)
		rc.Close()
		d, _ := l.Digest()
		if err != nil || h != d || n != 100<<10 {
			t.Errorf("layer %s on disk hashes to %s (%d bytes)", d, h, n)
		}
	}
}

func TestWriteRandomIndexLayout(t *testing.T) {
	dir := t.TempDir()
	want, err := WriteRandomIndexLayout(dir, []string{"linux/amd64", "linux/arm64"}, 2, 10<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	inner, err := idx.ImageIndex(want)
	if err != nil {
		t.Fatalf("index.json does not name the index %s: %v", want, err)
	}
	m, _ := inner.IndexManifest()
	if len(m.Manifests) != 2 || m.Manifests[1].Platform == nil || m.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("manifests %+v, want amd64 and arm64", m.Manifests)
	}
	for _, d := range m.Manifests {
		img, err := inner.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil || cf.Architecture != d.Platform.Architecture {
			t.Errorf("image %s: config %+v, %v; want architecture %s", d.Digest, cf, err, d.Platform.Architecture)
		}
		layers, _ := img.Layers()
		for _, l := range layers {
			rc, _ := l.Compressed()
			h, _, err := v1.SHA256(rc)
			rc.Close()
			if want, _ := l.Digest(); err != nil || h != want {
				t.Errorf("layer %s hashes to %s on disk", want, h)
			}
		}
	}
}

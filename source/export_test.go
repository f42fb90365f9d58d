package source

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tagpush/tagpush/internal/fakedocker"
)

// textLayer is an uncompressed layer of n bytes of seeded words: it
// compresses as source code does, in several of the compressor's blocks.
func textLayer(t *testing.T, seed uint64, n int) v1.Layer {
	t.Helper()
	words := strings.Fields("func return if err nil package import type struct the a layer blob tag push registry context error string int")
	rng := rand.New(rand.NewPCG(seed, seed))
	var body bytes.Buffer
	for body.Len() < n {
		body.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(9) == 0 {
			body.WriteByte('\n')
		} else {
			body.WriteByte(' ')
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "src/words.txt", Mode: 0o644, Size: int64(body.Len()), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return static.NewLayer(buf.Bytes(), types.DockerUncompressedLayer)
}

func engineWith(t *testing.T, store fakedocker.Store, img v1.Image) *fakedocker.Engine {
	t.Helper()
	engine, err := fakedocker.Start(t.TempDir(), map[string]v1.Image{"acme/app:ci": img})
	if err != nil {
		t.Fatal(err)
	}
	engine.Store = store
	t.Cleanup(engine.Close)
	return engine
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range layers {
		out = append(out, digestOf(t, l))
	}
	return out
}

// A layer compressed by tagpush gives the same bytes on every run and every
// machine: the blob a re-run, another image of the same base or another
// runner compresses is the one already there. The digest below is what
// gzip level 8 in 1 MiB blocks makes of this 3 MiB layer; it changes only
// when the compression does (a new klauspost/compress or pgzip, another
// level or block size), which changes every digest tagpush pushes: say so
// in the release notes.
func TestEngineLayersCompressTheSameEverywhere(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, textLayer(t, 1, 3<<20))
	if err != nil {
		t.Fatal(err)
	}
	engine := engineWith(t, fakedocker.Classic, img)
	const want = "sha256:d045689a24db847ef9baaaec4b0ef2a50686125cf496b80fa7f9c88bde751592"
	for run := range 2 {
		got, err := Open(context.Background(), "docker-daemon:acme/app:ci", Options{Docker: Docker{Host: engine.Host}})
		if err != nil {
			t.Fatal(err)
		}
		if d := layerDigests(t, got.Taggable.(v1.Image)); d[0] != want {
			t.Errorf("run %d: the layer compressed to %s, want %s", run+1, d[0], want)
		}
		got.Close()
	}
}

// held is a destination holding some layers, by diff ID.
type held map[v1.Hash]v1.Layer

func (h held) Layer(d v1.Hash) (v1.Layer, bool) { l, ok := h[d]; return l, ok }

// heldBlob stands for a blob the destination holds for a layer: its own
// digest, whoever compressed it, and no bytes to read.
type heldBlob struct{ diffID v1.Hash }

func (b heldBlob) Digest() (v1.Hash, error) {
	return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 56) + b.diffID.Hex[:8]}, nil
}
func (b heldBlob) DiffID() (v1.Hash, error)            { return b.diffID, nil }
func (b heldBlob) Size() (int64, error)                { return 1234, nil }
func (b heldBlob) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }
func (b heldBlob) Compressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("held blob %s read", b.diffID)
}
func (b heldBlob) Uncompressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("held blob %s read", b.diffID)
}

// Layers the destination holds are pushed as the blobs there, in their
// place, whatever order the classic export sends them in; only the others
// are compressed. A layer met twice (the classic form links it) is one
// blob.
func TestHeldLayersAreNotCompressed(t *testing.T) {
	for _, store := range []fakedocker.Store{fakedocker.Classic, fakedocker.ClassicOCI} {
		t.Run(fmt.Sprint(store), func(t *testing.T) { heldLayersAreNotCompressed(t, store) })
	}
}

func heldLayersAreNotCompressed(t *testing.T, store fakedocker.Store) {
	a, b, c := textLayer(t, 1, 64<<10), textLayer(t, 2, 64<<10), textLayer(t, 3, 64<<10)
	img, err := mutate.AppendLayers(empty.Image, a, b, c, a)
	if err != nil {
		t.Fatal(err)
	}
	engine := engineWith(t, store, img)
	diff := func(l v1.Layer) v1.Hash { d, _ := l.DiffID(); return d }
	h := held{diff(a): heldBlob{diff(a)}, diff(c): heldBlob{diff(c)}}
	p, err := Prepare(context.Background(), "docker-daemon:acme/app:ci", Options{Docker: Docker{Host: engine.Host}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.OpenHeld(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	gi := got.Taggable.(v1.Image)
	d := layerDigests(t, gi)
	ha, _ := h[diff(a)].Digest()
	hc, _ := h[diff(c)].Digest()
	if d[0] != ha.String() || d[2] != hc.String() || d[3] != ha.String() {
		t.Errorf("layers %v, want the held blobs %s and %s at 0, 2 and 3", d, ha, hc)
	}
	layers, _ := gi.Layers()
	rc, err := layers[1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := b.Uncompressed()
	gotBytes, _ := io.ReadAll(rc)
	wantBytes, _ := io.ReadAll(want)
	if !bytes.Equal(gotBytes, wantBytes) {
		t.Errorf("the new layer's %d bytes are not the engine's %d", len(gotBytes), len(wantBytes))
	}
	if !strings.Contains(got.Description, "1 layer compressed, 2 reused") {
		t.Errorf("description %q", got.Description)
	}
	// The pushed config is the engine's: its digest is the image ID.
	if name, _ := gi.ConfigName(); name.String() != p.ID {
		t.Errorf("config %s, want the engine's image ID %s", name, p.ID)
	}
}

// The containerd image store (Docker 29's default on new installs) keeps
// layers compressed: its export is pushed as it is, with the manifest the
// engine has, so the pushed digest is the engine's image ID and nothing is
// compressed again.
func TestContainerdStoreBlobsPassThrough(t *testing.T) {
	img, err := random.Image(256<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	// buildx writes annotations: a manifest written anew would lose them,
	// and its digest would not be the engine's ID.
	img = mutate.Annotations(img, map[string]string{"org.opencontainers.image.source": "https://github.com/acme/app"}).(v1.Image)
	engine := engineWith(t, fakedocker.Containerd, img)
	p, err := Prepare(context.Background(), "docker-daemon:acme/app:ci", Options{Docker: Docker{Host: engine.Host}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	gi := got.Taggable.(v1.Image)
	if d := digestOf(t, gi); d != digestOf(t, img) || d != p.ID {
		t.Errorf("pushed %s, want the engine's manifest %s (ID %s)", d, digestOf(t, img), p.ID)
	}
	if g, w := layerDigests(t, gi), layerDigests(t, img); strings.Join(g, ",") != strings.Join(w, ",") {
		t.Errorf("layers %v, want the engine's blobs %v", g, w)
	}
	if !strings.Contains(got.Description, "0 layers compressed, 2 kept as the engine compressed them") {
		t.Errorf("description %q", got.Description)
	}
}

// A layer spooled while a held layer has yet to come is compressed after
// it has been read, reading nothing from the engine meanwhile: that work
// must keep the stall watchdog quiet, or a big layer on a slow runner
// would pass for a silent engine and fail the run.
func TestCompressingASpooledLayerIsNotSilence(t *testing.T) {
	held1, fresh := textLayer(t, 1, 64<<10), textLayer(t, 2, 256<<10)
	diff := func(l v1.Layer) v1.Hash { d, _ := l.DiffID(); return d }
	e := newExportReader(t.TempDir(), v1.Hash{}, []v1.Hash{diff(held1), diff(fresh)}, held{diff(held1): heldBlob{diff(held1)}})
	var busy int
	e.busy = func() { busy++ }
	rc, err := fresh.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// The fresh layer comes first: it could be the held one until its end.
	if err := e.layer("x/layer.tar", rc, v1.Hash{}); err != nil {
		t.Fatal(err)
	}
	if s := e.layers["x/layer.tar"]; s.file == "" || s.diffID != diff(fresh) {
		t.Fatalf("the new layer was not compressed: %+v", s)
	}
	if busy == 0 {
		t.Error("compressing the spooled layer never told the watchdog the run is busy")
	}
}

// `docker save -o app.tar` on an engine with the containerd image store
// writes the same form, and a later job pushes it as docker-archive:. The
// layers come compressed; the image pushed is the engine's, blob for blob.
func TestArchiveOfAContainerdStoreSave(t *testing.T) {
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	engine := engineWith(t, fakedocker.Containerd, img)
	path := filepath.Join(t.TempDir(), "app.tar")
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(engine.Host, "unix://"))
	}}}
	resp, err := client.Get("http://engine/images/get?names=acme/app:ci")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := Open(context.Background(), "docker-archive:"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if g, w := layerDigests(t, got.Taggable.(v1.Image)), layerDigests(t, img); strings.Join(g, ",") != strings.Join(w, ",") {
		t.Errorf("layers %v, want the engine's blobs %v", g, w)
	}
}

package pusher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tagpush/tagpush/registry"
)

// Held is what the destination already holds of an image about to be
// opened: a compressed blob for a layer, by the layer's diff ID. A Docker
// engine source compresses only the layers not found here, and pushes the
// others as the blobs they are, whoever compressed them.
type Held interface {
	Layer(diffID v1.Hash) (v1.Layer, bool)
}

// heldAlready reads the tags of an image whose source knows its ID without
// opening it (a Docker engine's image ID: the digest of its config in the
// classic store, of its manifest in the containerd one). When every tag
// holds that image (a manifest whose digest is the ID, or whose config's
// is), the tags are unchanged, each at the digest the read showed, and the
// image is never opened: no export, no compression. Otherwise what the tags
// hold is the layer cache the source opens with: each image manifest's
// config lists the diff IDs of its layers, in the order of its blobs.
// Every read is a shortcut: one that fails leaves its tag out, and the
// image is opened as if the destination held nothing of it.
//
// When some tags hold the image and others do not (a job retried after a
// registry failed it), the image is read from a repository that holds it,
// its blobs are mounted or copied from there, and it is not opened either.
func (r *run) heldAlready(ctx context.Context, img opened, start time.Time) (ImageResult, []*tagRun, *engineLook, bool) {
	id, err := v1.NewHash(img.id)
	if err != nil || len(img.tags) == 0 {
		return ImageResult{}, nil, nil, false
	}
	type read struct {
		rs     *repoState
		raw    []byte
		digest v1.Hash
		held   bool
	}
	reads := make([]read, len(img.tags))
	// The tags of a repository are read in turn, until one holds another
	// image: that one is the repository's layer cache, and the image is
	// not held everywhere. A release's tags (1.4.3, 1.4, latest) cost one
	// or two reads: a new tag's 404, then the last build under a floating
	// one. The repositories are read at once.
	byRepo := make(map[name.Repository][]int)
	var repos []name.Repository
	for i, tag := range img.tags {
		if _, ok := byRepo[tag.Repository]; !ok {
			repos = append(repos, tag.Repository)
		}
		byRepo[tag.Repository] = append(byRepo[tag.Repository], i)
	}
	var wg sync.WaitGroup
	for _, repo := range repos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs := r.repo(repo)
			for _, i := range byRepo[repo] {
				tag, rd := img.tags[i], &reads[i]
				rd.rs = rs
				_, _, err := r.reads(ctx, rs.reg, "read "+tag.String(), func(ctx context.Context) error {
					raw, _, err := rs.rc.Manifest(ctx, tag.TagStr())
					if registry.IsStatus(err, http.StatusNotFound) {
						return nil // not there: not held, and no failure
					}
					if err != nil {
						return err
					}
					rd.raw = raw
					rd.digest, rd.held = holds(raw, id)
					return nil
				})
				if err != nil {
					rd.raw, rd.held = nil, false
				}
				if rd.raw != nil && !rd.held {
					return
				}
			}
		}()
	}
	wg.Wait()
	all := true
	for _, rd := range reads {
		all = all && rd.held
	}
	if !all {
		look := &engineLook{cache: &layerCache{ctx: r.phaseCtx, layers: make(map[v1.Hash]v1.Layer)}}
		if !r.planning {
			look.cache.upload = func(l v1.Layer, s *stream) { r.uploadEarly(img, l, s) }
			look.cache.streamTo = func(body io.ReadCloser) *stream { return r.streamLayer(img, body) }
		}
		seen := make(map[v1.Hash]bool)
		for _, rd := range reads {
			if rd.raw != nil && !seen[rd.digest] {
				seen[rd.digest] = true
				cfg := r.cacheLayers(ctx, look.cache, rd.rs, rd.raw)
				if rd.held && cfg != nil && look.whole == nil {
					look.whole = look.cache.image(rd.rs.repo, rd.raw, cfg)
				}
			}
		}
		return ImageResult{}, nil, look, false
	}
	if !r.planning {
		r.passBarriers(img.tags)
	}
	runs := make([]*tagRun, len(img.tags))
	for i, tag := range img.tags {
		res := Result{Tag: tag, Image: img.name, Status: StatusUnchanged, Digest: reads[i].digest.String(), Duration: r.cfg.now().Sub(start)}
		runs[i] = &tagRun{tag: tag, start: start, unchanged: true, result: &res}
		if r.cfg.events.TagDone != nil {
			r.cfg.events.TagDone(res)
		}
	}
	return ImageResult{Name: img.name, Digest: reads[0].digest.String()}, runs, nil, true
}

// cacheLayers adds the layers of an image manifest rs holds to the cache:
// its config (one more read) pairs each blob with its diff ID. Anything
// else (an index, a config that cannot be read or does not match) adds
// nothing.
// It returns the config, nil when it added nothing.
func (r *run) cacheLayers(ctx context.Context, cache *layerCache, rs *repoState, raw []byte) []byte {
	var m v1.Manifest
	if json.Unmarshal(raw, &m) != nil || !m.MediaType.IsImage() && m.MediaType != "" || m.Config.Digest.Hex == "" {
		return nil
	}
	var cfg []byte
	_, _, err := r.reads(ctx, rs.reg, "read config "+rs.label(m.Config.Digest), func(ctx context.Context) error {
		var err error
		cfg, err = rs.rc.Config(ctx, m.Config.Digest)
		return err
	})
	if err != nil {
		return nil
	}
	var cf struct {
		RootFS struct {
			DiffIDs []v1.Hash `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if json.Unmarshal(cfg, &cf) != nil || len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil
	}
	cache.mu.Lock()
	defer cache.mu.Unlock()
	for i, desc := range m.Layers {
		diffID := cf.RootFS.DiffIDs[i]
		if _, ok := cache.layers[diffID]; ok || !desc.MediaType.IsLayer() || !desc.MediaType.IsDistributable() {
			continue
		}
		l := &heldLayer{desc: desc, diffID: diffID, rc: rs.rc, ctx: cache.ctx}
		cache.layers[diffID] = &remote.MountableLayer{Layer: l, Reference: rs.repo.Digest(desc.Digest.String())}
	}
	return cfg
}

// engineLook is what heldAlready found of an image some of whose tags do
// not hold it: the layers the destination holds, and the image itself when
// a tag holds it.
type engineLook struct {
	cache *layerCache
	whole v1.Image
}

// image is the image raw describes, its config cfg, its layers the cache's:
// nil unless the cache has every one.
func (c *layerCache) image(repo name.Repository, raw, cfg []byte) v1.Image {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cfg))
	if err != nil || len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil
	}
	img := &heldImage{raw: raw, digest: digestOf(raw), manifest: m, config: cfg}
	// The config is mounted from there too.
	img.configLayer = &remote.MountableLayer{Layer: static.NewLayer(cfg, m.Config.MediaType), Reference: repo.Digest(m.Config.Digest.String())}
	for i, d := range cf.RootFS.DiffIDs {
		l, ok := c.Layer(d)
		if !ok {
			return nil
		}
		if got, _ := l.Digest(); got != m.Layers[i].Digest {
			return nil
		}
		img.layers = append(img.layers, l)
	}
	return img
}

// heldImage is an image a destination tag holds, read from there.
type heldImage struct {
	raw, config []byte
	digest      v1.Hash // raw's
	manifest    *v1.Manifest
	layers      []v1.Layer
	configLayer v1.Layer
}

// ConfigLayer is what partial.ConfigLayer returns.
func (h *heldImage) ConfigLayer() (v1.Layer, error) { return h.configLayer, nil }

func (h *heldImage) Layers() ([]v1.Layer, error)         { return h.layers, nil }
func (h *heldImage) MediaType() (types.MediaType, error) { return h.manifest.MediaType, nil }
func (h *heldImage) Size() (int64, error)                { return int64(len(h.raw)), nil }
func (h *heldImage) ConfigName() (v1.Hash, error)        { return h.manifest.Config.Digest, nil }
func (h *heldImage) ConfigFile() (*v1.ConfigFile, error) {
	return v1.ParseConfigFile(bytes.NewReader(h.config))
}
func (h *heldImage) RawConfigFile() ([]byte, error)  { return h.config, nil }
func (h *heldImage) Digest() (v1.Hash, error)        { return h.digest, nil }
func (h *heldImage) Manifest() (*v1.Manifest, error) { return h.manifest.DeepCopy(), nil }
func (h *heldImage) RawManifest() ([]byte, error)    { return h.raw, nil }
func (h *heldImage) LayerByDigest(d v1.Hash) (v1.Layer, error) {
	if d == h.manifest.Config.Digest {
		return partial.ConfigLayer(h)
	}
	for _, l := range h.layers {
		if got, _ := l.Digest(); got == d {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no blob %s in the image", d)
}
func (h *heldImage) LayerByDiffID(d v1.Hash) (v1.Layer, error) {
	for _, l := range h.layers {
		if got, _ := l.DiffID(); got == d {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no layer %s in the image", d)
}

// layerCache is Held, from the images the destination's tags hold.
type layerCache struct {
	ctx    context.Context
	mu     sync.Mutex
	layers map[v1.Hash]v1.Layer
	// upload, when set, starts a blob's upload to the image's
	// repositories before the image is open (Ready), joining the stream
	// of its bytes when there is one.
	upload func(l v1.Layer, s *stream)
	// streamTo, when set, starts streaming a layer's bytes as they are
	// compressed (Compressing).
	streamTo func(body io.ReadCloser) *stream
	cur      *stream // the layer being compressed, streamed
}

// Compressing streams a layer's bytes to the image's first repository as
// the source compresses them. A dry run streams nothing.
func (c *layerCache) Compressing(body io.ReadCloser) {
	if c.streamTo == nil {
		_ = body.Close()
		return
	}
	c.cur = c.streamTo(body)
}

// Ready starts uploading a layer the source has just compressed to every
// repository of the image, while the export goes on: a blob phase of each
// repository's, which the image's own blob phase joins once it is open.
// The repository its bytes were streamed to only commits the stream (or,
// when the stream failed, uploads the layer plainly).
func (c *layerCache) Ready(l v1.Layer) {
	s := c.cur
	c.cur = nil
	if s != nil {
		d, _ := l.Digest()
		s.digest <- d
	}
	if c.upload != nil {
		c.upload(l, s)
	}
}

func (c *layerCache) Layer(diffID v1.Hash) (v1.Layer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.layers[diffID]
	return l, ok
}

// heldLayer is a blob in a destination repository, holding a layer. It is
// mounted from there into the image's other repositories of that registry
// (a remote.MountableLayer), and read from there for any other registry.
type heldLayer struct {
	desc   v1.Descriptor
	diffID v1.Hash
	rc     *registry.Repository
	ctx    context.Context
}

func (l *heldLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *heldLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *heldLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *heldLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *heldLayer) Compressed() (io.ReadCloser, error)  { return l.rc.OpenBlob(l.ctx, l.desc.Digest) }
func (l *heldLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("layer %s is only read compressed, from %s", l.desc.Digest, l.rc.Name())
}

// holds reports whether the manifest raw is the image id names: its digest,
// or its config's. It returns the manifest's digest.
func holds(raw []byte, id v1.Hash) (v1.Hash, bool) {
	d := digestOf(raw)
	if d == id {
		return d, true
	}
	var m struct {
		Config *v1.Descriptor `json:"config"`
	}
	if json.Unmarshal(raw, &m) != nil || m.Config == nil {
		return d, false
	}
	return d, m.Config.Digest == id
}

// digestOf is the sha256 digest of b.
func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// uploadEarly starts the upload of a layer of img to each of its
// repositories, before the image is open. The repository its bytes were
// streamed to (s, when set) is the blob's home on its registry: its phase
// waits for the stream's commit, and the others mount from it.
func (r *run) uploadEarly(img opened, l v1.Layer, s *stream) {
	d, err := l.Digest()
	if err != nil {
		return
	}
	size, err := l.Size()
	if err != nil {
		return
	}
	b := blob{digest: d, size: size, layer: l}
	seen := make(map[name.Repository]bool)
	if s != nil {
		seen[s.rs.repo] = true
		rs := s.rs
		home, mine := rs.reg.claim(d, rs.repo.RepositoryStr())
		if mine {
			s.home.Store(home)
		}
		_, fresh := beginFresh(rs, rs.blobs, d, func(ctx context.Context) (int, verdict, error) {
			select {
			case <-s.done:
			case <-ctx.Done():
			}
			if mine {
				rs.reg.settle(home, s.ok)
			}
			if s.ok {
				r.noteWire(rs.reg.host, img.name, blobUploaded, size)
				return 1, verdict{}, nil
			}
			return rs.ensureBlob(ctx, b, img.name)
		})
		if !fresh && mine {
			// The repository was getting the blob already (another image
			// of the run): its phase claims a home of its own.
			rs.reg.settle(home, false)
		}
	}
	for _, tag := range img.tags {
		if seen[tag.Repository] {
			continue
		}
		seen[tag.Repository] = true
		rs := r.repo(tag.Repository)
		begin(rs, rs.blobs, d, func(ctx context.Context) (int, verdict, error) {
			return rs.ensureBlob(ctx, b, img.name)
		})
	}
}

// stream is a layer's bytes going up to one repository as they are
// compressed: a POST, one PATCH that ends with the layer, and, once the
// source says the digest, the PUT that commits it. It is one attempt, with
// no retry of its own: a stream that fails leaves the layer to a plain
// upload.
type stream struct {
	rs     *repoState
	digest chan v1.Hash  // the layer's digest, from Ready
	done   chan struct{} // closed when the stream has ended
	ok     bool          // set before done is closed
	// home, once the layer is whole, is the blob's home the stream is:
	// the bytes it sends from then on count as that home's progress, so
	// the repositories waiting to mount from it tell a slow wire from a
	// stalled one.
	home atomic.Pointer[blobHome]
}

// progress counts what the stream sends toward its home.
type progress struct {
	r io.Reader
	s *stream
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if h := p.s.home.Load(); h != nil && n > 0 {
		h.sent.Add(int64(n))
	}
	return n, err
}

// streamLayer starts streaming body to img's first repository. The write
// slot is held for the POST and the PATCH (the write request, however long
// the compression makes it), given back while the digest is awaited, and
// taken again for the commit.
func (r *run) streamLayer(img opened, body io.ReadCloser) *stream {
	s := &stream{rs: r.repo(img.tags[0].Repository), digest: make(chan v1.Hash, 1), done: make(chan struct{})}
	r.phases.Add(1)
	go func() {
		defer r.phases.Done()
		defer close(s.done)
		defer body.Close()
		ctx, rs := r.phaseCtx, s.rs
		var sess *registry.Session
		err := r.underSlot(ctx, rs.reg, func() error {
			var err error
			if sess, err = rs.rc.StartUpload(ctx); err != nil {
				return err
			}
			return sess.Patch(ctx, &progress{r: body, s: s})
		})
		if err != nil {
			return
		}
		var d v1.Hash
		select {
		case d = <-s.digest:
		case <-ctx.Done():
			return
		}
		s.ok = r.underSlot(ctx, rs.reg, func() error { return sess.Commit(ctx, d) }) == nil
	}()
	return s
}

package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/pgzip"
)

// Held is what the destination already holds of an image: a compressed blob
// for a layer, by the layer's diff ID (the digest of its uncompressed tar,
// which the engine knows and every pushed image's config lists in the order
// of its manifest's layers). The layer returned has the blob's digest, size
// and media type; reading it fetches the blob from where it is.
type Held interface {
	Layer(diffID v1.Hash) (v1.Layer, bool)
}

// Ready is what a Held may also be: told of each new layer as soon as it is
// compressed, while the export goes on, it can start uploading it.
type Ready interface {
	Ready(v1.Layer)
}

// Streams is what a Held may also be: handed each new layer's compressed
// bytes as they are made (a reader that follows them to their end, and
// fails when the layer does), it can upload them before the digest is known;
// Ready then says which layer they were. It must close the reader. Layers
// are compressed one at a time: Compressing and Ready alternate.
type Streams interface {
	Compressing(io.ReadCloser)
}

// The compression of a layer the destination does not hold: gzip at level 8
// in blocks of 1 MiB, compressed on every core (klauspost/pgzip). The same
// layer gives the same bytes on every run and machine (the blocks do not
// depend on how many are compressed at once), so a layer compressed again
// (another image of the same base, a re-run) is the blob already there. Level
// 8 is the lowest whose output is no larger than docker push's (the standard
// library's default level, 6): on a 137 MB layer of Go source, 32.04 MB
// against 32.07 MB, in 1.1 s on 2 cores against 2.9 s.
const (
	gzipLevel = 8
	gzipBlock = 1 << 20
)

// maxMetadataBytes bounds what of an export is held in memory: the JSON
// files (manifest.json, index.json, the config, an OCI manifest).
const maxMetadataBytes = 16 << 20

// exportReader reads a `docker save` stream in one pass: no uncompressed copy
// of the image is kept. Each layer the destination holds is only hashed and
// passed over; each new one is compressed once, as it arrives, into a file
// of its own that the upload reads; a layer that comes compressed (the
// containerd image store) is kept as it is.
//
// Both forms the engine writes are read: the classic one (a directory per
// layer holding layer.tar, the config as <id>.json) and the OCI one (Docker
// 25+: blobs/sha256/<digest>, index.json), with manifest.json in both. The
// classic form names a layer by a v1 ID that says nothing of its content,
// and sorts the entries by name, not by layer: while a layer the destination
// holds has yet to come, a layer cannot be told from it before its end, and
// is spooled as it comes, then compressed only when it turned out new.
type exportReader struct {
	dir  string
	held Held
	// diffIDs are the image's layers, from the engine's inspect.
	diffIDs []v1.Hash
	// unseenHeld and unseenNew are the distinct diff IDs not yet met in
	// the stream, which the destination holds, or does not.
	unseenHeld, unseenNew map[v1.Hash]bool
	// id is the image's ID; config, once met, the file whose digest it is
	// (the classic store's config). came counts blobs that came
	// compressed, whose diff IDs only the config and manifest.json say.
	id     v1.Hash
	config []byte
	came   int

	files    map[string][]byte   // small JSON files, by path in the export
	layers   map[string]*spooled // layers and blobs, by path
	links    map[string]string   // symlinks: path -> the path they name
	nspool   int
	compress func(io.Writer) (io.WriteCloser, error)
	// busy, when set, is called as a spooled layer is compressed: work
	// that reads nothing from the engine, which must not pass for its
	// silence.
	busy func()
}

// spooled is a layer or blob of the export as it was read.
type spooled struct {
	// diffID is the uncompressed layer's digest; zero for a blob that came
	// compressed (its diff ID is the config's to say).
	diffID v1.Hash
	// file holds the compressed bytes (digest, size, mediaType); empty for a
	// layer the destination holds, which was passed over.
	file      string
	digest    v1.Hash
	size      int64
	mediaType types.MediaType
}

func newExportReader(dir string, id v1.Hash, diffIDs []v1.Hash, held Held) *exportReader {
	e := &exportReader{
		dir: dir, id: id, held: held, diffIDs: diffIDs,
		unseenHeld: make(map[v1.Hash]bool), unseenNew: make(map[v1.Hash]bool),
		files: make(map[string][]byte), layers: make(map[string]*spooled), links: make(map[string]string),
		compress: func(w io.Writer) (io.WriteCloser, error) {
			z, err := pgzip.NewWriterLevel(w, gzipLevel)
			if err != nil {
				return nil, err
			}
			return z, z.SetConcurrency(gzipBlock, 4)
		},
	}
	for _, d := range diffIDs {
		if e.holds(d) {
			e.unseenHeld[d] = true
		} else {
			e.unseenNew[d] = true
		}
	}
	return e
}

func (e *exportReader) holds(d v1.Hash) bool {
	if e.held == nil {
		return false
	}
	_, ok := e.held.Layer(d)
	return ok
}

// read reads the whole stream.
func (e *exportReader) read(r io.Reader, busy func()) error {
	e.busy = busy
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := path.Clean(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			// The classic form links a layer met twice to its first copy.
			e.links[p] = path.Join(path.Dir(p), hdr.Linkname)
			continue
		case tar.TypeLink:
			e.links[p] = path.Clean(hdr.Linkname)
			continue
		case tar.TypeReg:
		default:
			continue
		}
		if err := e.entry(p, hdr.Size, tr); err != nil {
			return fmt.Errorf("%s in the export: %w", p, err)
		}
		if e.enough() {
			return nil
		}
	}
}

// enough reports whether the export has given all the push needs: the
// config (the file whose digest is the image ID: the classic store's) and
// every layer the destination does not hold. The rest of it is layers the
// destination holds, which would only be hashed and passed over: the export
// is abandoned there (the engine stops writing when the connection closes),
// and the image is put together in the order of the engine's diff IDs.
func (e *exportReader) enough() bool {
	return e.config != nil && len(e.unseenNew) == 0 && e.came == 0
}

// entry reads one file of the export.
func (e *exportReader) entry(p string, size int64, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(4)
	var named v1.Hash // a blob's digest, from its name (OCI form)
	if hexPart, ok := strings.CutPrefix(p, "blobs/sha256/"); ok {
		named, _ = v1.NewHash("sha256:" + hexPart)
	}
	switch {
	case isGzip(head) || isZstd(head):
		return e.keepCompressed(p, br, head)
	case len(head) > 0 && (head[0] == '{' || head[0] == '[') && size <= maxMetadataBytes:
		b, err := io.ReadAll(br)
		e.files[p] = b
		if sha256Of(b) == e.id {
			e.config = b
		}
		return err
	case strings.HasSuffix(p, "/layer.tar"), named.Hex != "" && e.isLayer(named):
		return e.layer(p, br, named)
	}
	// Anything else (VERSION, a v1 json, a blob that is none of the
	// image's layers) is passed over.
	_, err := io.Copy(io.Discard, br)
	return err
}

func (e *exportReader) isLayer(d v1.Hash) bool {
	for _, l := range e.diffIDs {
		if l == d {
			return true
		}
	}
	return false
}

func isGzip(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }
func isZstd(b []byte) bool {
	return len(b) >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd
}

// keepCompressed keeps a blob that came compressed, as it is.
func (e *exportReader) keepCompressed(p string, r io.Reader, head []byte) error {
	mt := types.DockerLayer
	if isZstd(head) {
		mt = types.OCILayerZStd
	}
	s := &spooled{mediaType: mt}
	if err := e.spool(s, r, false, nil); err != nil {
		return err
	}
	e.layers[p] = s
	e.came++
	return nil
}

// layer reads an uncompressed layer (known, when the OCI form names it by
// its diff ID): passed over when the destination holds it, compressed as it
// comes when it cannot be one the destination holds, else spooled and
// compressed after, once its digest says it is new.
func (e *exportReader) layer(p string, r io.Reader, known v1.Hash) error {
	s := &spooled{mediaType: types.DockerLayer}
	diff := sha256.New()
	switch {
	case known.Hex != "" && e.holds(known), known.Hex == "" && len(e.unseenNew) == 0:
		if _, err := io.Copy(diff, r); err != nil {
			return err
		}
	case known.Hex != "" || len(e.unseenHeld) == 0:
		if err := e.spool(s, r, true, diff); err != nil {
			return err
		}
	default:
		raw, err := e.tempFile()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.MultiWriter(raw, diff), r)
		if err == nil {
			_, err = raw.Seek(0, io.SeekStart)
		}
		if err == nil && !e.holds(hashOf(diff)) {
			err = e.spool(s, raw, true, nil)
		}
		raw.Close()
		_ = os.Remove(raw.Name())
		if err != nil {
			return err
		}
	}
	s.diffID = hashOf(diff)
	if known.Hex != "" && s.diffID != known {
		return fmt.Errorf("its content's digest is %s", s.diffID)
	}
	delete(e.unseenHeld, s.diffID)
	delete(e.unseenNew, s.diffID)
	e.layers[p] = s
	if r, ok := e.held.(Ready); ok && s.file != "" {
		r.Ready(&spooledLayer{s: *s, diffID: s.diffID, mediaType: s.mediaType})
	}
	return nil
}

// spool writes r into a file of its own, compressed unless it came so, and
// notes its digest and size; diff, when set, hashes what is compressed.
func (e *exportReader) spool(s *spooled, r io.Reader, compress bool, diff hash.Hash) (err error) {
	f, err := e.tempFile()
	if err != nil {
		return err
	}
	defer f.Close()
	sum := sha256.New()
	n := &countWriter{busy: e.busy}
	out := io.MultiWriter(f, sum, n)
	if !compress {
		_, err = io.Copy(out, r)
	} else {
		if st, ok := e.held.(Streams); ok {
			fw := newFollow(f.Name())
			n.grew = fw.grew
			defer func() { fw.end(err) }()
			st.Compressing(fw)
		}
		var z io.WriteCloser
		if z, err = e.compress(out); err == nil {
			var in io.Writer = z
			if diff != nil {
				in = io.MultiWriter(z, diff)
			}
			if _, err = io.Copy(in, r); err == nil {
				err = z.Close()
			}
		}
	}
	if err != nil {
		return err
	}
	s.file, s.digest, s.size = f.Name(), hashOf(sum), n.n
	return f.Close()
}

func (e *exportReader) tempFile() (*os.File, error) {
	e.nspool++
	return os.Create(path.Join(e.dir, fmt.Sprintf("%d", e.nspool)))
}

type countWriter struct {
	n    int64
	busy func()
	// grew, when set, hears how many bytes are in the file so far.
	grew func(int64)
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.busy != nil {
		c.busy()
	}
	if c.grew != nil {
		c.grew(c.n)
	}
	return len(p), nil
}

// follow reads a spool file while it is written: it waits for more at the
// end of what is there, until the writer ends it; then the reader gets
// io.EOF, or the writer's error. The file is opened on the first read.
type follow struct {
	path string
	// fmu guards the file and the offset: net/http may still read a body
	// after RoundTrip has returned, while its owner closes it.
	fmu    sync.Mutex
	f      *os.File
	read   int64
	closed bool

	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	ended   bool
	err     error
}

func newFollow(path string) *follow {
	fw := &follow{path: path}
	fw.cond = sync.NewCond(&fw.mu)
	return fw
}

// grew says the file holds n bytes.
func (fw *follow) grew(n int64) {
	fw.mu.Lock()
	fw.written = n
	fw.mu.Unlock()
	fw.cond.Broadcast()
}

// end says the file is whole (err nil) or will not be.
func (fw *follow) end(err error) {
	fw.mu.Lock()
	if !fw.ended {
		fw.ended, fw.err = true, err
	}
	fw.mu.Unlock()
	fw.cond.Broadcast()
}

func (fw *follow) Read(p []byte) (int, error) {
	fw.fmu.Lock()
	defer fw.fmu.Unlock()
	if fw.closed {
		return 0, os.ErrClosed
	}
	fw.mu.Lock()
	for fw.read >= fw.written && !fw.ended {
		fw.cond.Wait()
	}
	avail, ended, err := fw.written-fw.read, fw.ended, fw.err
	fw.mu.Unlock()
	if ended && err != nil {
		return 0, err
	}
	if avail == 0 {
		return 0, io.EOF
	}
	if fw.f == nil {
		f, err := os.Open(fw.path)
		if err != nil {
			return 0, err
		}
		fw.f = f
	}
	n, err := fw.f.ReadAt(p[:min(int64(len(p)), avail)], fw.read)
	fw.read += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Close closes the file. A Read waiting for more bytes holds the lock
// until the writer ends the file, which it always does.
func (fw *follow) Close() error {
	fw.fmu.Lock()
	defer fw.fmu.Unlock()
	fw.closed = true
	if fw.f != nil {
		return fw.f.Close()
	}
	return nil
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// resolve is the path p names in the export, following links.
func (e *exportReader) resolve(p string) string {
	for range 8 {
		t, ok := e.links[p]
		if !ok {
			break
		}
		p = t
	}
	return p
}

// saved is manifest.json's entry for an image.
type saved struct {
	Config string
	Layers []string
}

// image builds the image the export held, whose ID is id: its config, and
// each layer as the destination holds it, spooled or as it came. When every
// layer came compressed and the export has the image's own manifest (the
// containerd image store), that manifest is pushed as it is.
func (e *exportReader) image(id v1.Hash) (*engineImage, error) {
	if e.enough() {
		return e.imageByDiffIDs()
	}
	var entries []saved
	if err := json.Unmarshal(e.files["manifest.json"], &entries); err != nil || len(entries) == 0 {
		return nil, fmt.Errorf("the export has no manifest.json: is it a `docker save` of one image?")
	}
	m := entries[0]
	rawConfig, ok := e.files[e.resolve(path.Clean(m.Config))]
	if !ok {
		return nil, fmt.Errorf("the export has no config %s", m.Config)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, fmt.Errorf("the export's config: %w", err)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("the export's config lists %d layers and its manifest.json %d", len(cf.RootFS.DiffIDs), len(m.Layers))
	}
	img := &engineImage{rawConfig: rawConfig, config: cf}
	var own *v1.Manifest
	var ownRaw []byte
	allCame := true
	for i, lp := range m.Layers {
		diffID := cf.RootFS.DiffIDs[i]
		s, ok := e.layers[e.resolve(path.Clean(lp))]
		if !ok {
			return nil, fmt.Errorf("the export has no layer %s", lp)
		}
		if s.diffID.Hex != "" && s.diffID != diffID {
			return nil, fmt.Errorf("layer %s holds %s, and the config says %s", lp, s.diffID, diffID)
		}
		if s.diffID.Hex == "" && own == nil {
			own, ownRaw = e.ownManifest(id, rawConfig)
		}
		allCame = allCame && s.diffID.Hex == ""
		if s.file == "" {
			l, ok := e.held.Layer(diffID)
			if !ok {
				return nil, fmt.Errorf("layer %s (%s) is not one of the image's", lp, diffID)
			}
			img.layers = append(img.layers, l)
			continue
		}
		mt := s.mediaType
		if own != nil {
			for _, d := range own.Layers {
				if d.Digest == s.digest {
					mt = d.MediaType
				}
			}
		}
		img.layers = append(img.layers, &spooledLayer{s: *s, diffID: diffID, mediaType: mt})
	}
	if allCame && own != nil {
		return img, img.useManifest(ownRaw, own)
	}
	return img, img.writeManifest()
}

// ownManifest finds, among the export's JSON files, the manifest of the
// image: the one whose digest is the image's ID, or whose config is this.
func (e *exportReader) ownManifest(id v1.Hash, rawConfig []byte) (*v1.Manifest, []byte) {
	cfg := sha256Of(rawConfig)
	var found *v1.Manifest
	var raw []byte
	for _, b := range e.files {
		m, err := v1.ParseManifest(bytes.NewReader(b))
		if err != nil || m.Config.Digest != cfg || len(m.Layers) == 0 {
			continue
		}
		if found == nil || sha256Of(b) == id {
			found, raw = m, b
		}
	}
	return found, raw
}

// says what the export cost: layers it compressed, layers it reused (the
// destination's blobs, or another image's of the run), blobs kept as the
// engine compressed them.
func (e *exportReader) says(img *engineImage) string {
	mine := make(map[string]bool)
	for _, s := range e.layers {
		if s.file != "" {
			mine[s.file] = true
		}
	}
	var compressed, reused, came int
	seen := make(map[v1.Hash]bool)
	for _, l := range img.layers {
		d, _ := l.Digest()
		if seen[d] {
			continue
		}
		seen[d] = true
		switch s, ok := l.(*spooledLayer); {
		case !ok || !mine[s.s.file]:
			reused++
		case s.s.diffID.Hex == "":
			came++
		default:
			compressed++
		}
	}
	parts := []string{fmt.Sprintf("%d %s compressed", compressed, plural(compressed, "layer", "layers"))}
	if reused > 0 {
		parts = append(parts, fmt.Sprintf("%d reused", reused))
	}
	if came > 0 {
		parts = append(parts, fmt.Sprintf("%d kept as the engine compressed %s", came, plural(came, "it", "them")))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// imageByDiffIDs puts the image together from its config and the layers
// met, by diff ID, in the order the engine listed them: manifest.json may
// not have been read.
func (e *exportReader) imageByDiffIDs() (*engineImage, error) {
	cf, err := v1.ParseConfigFile(bytes.NewReader(e.config))
	if err != nil {
		return nil, fmt.Errorf("the export's config: %w", err)
	}
	if len(cf.RootFS.DiffIDs) != len(e.diffIDs) {
		return nil, fmt.Errorf("the export's config lists %d layers and the engine %d", len(cf.RootFS.DiffIDs), len(e.diffIDs))
	}
	byDiff := make(map[v1.Hash]*spooled)
	for _, s := range e.layers {
		if s.file != "" {
			byDiff[s.diffID] = s
		}
	}
	img := &engineImage{rawConfig: e.config, config: cf}
	for i, diffID := range cf.RootFS.DiffIDs {
		if diffID != e.diffIDs[i] {
			return nil, fmt.Errorf("the export's config lists layer %d as %s and the engine as %s", i, diffID, e.diffIDs[i])
		}
		if s, ok := byDiff[diffID]; ok {
			img.layers = append(img.layers, &spooledLayer{s: *s, diffID: diffID, mediaType: s.mediaType})
			continue
		}
		l, ok := e.held.Layer(diffID)
		if !ok {
			return nil, fmt.Errorf("layer %s is in neither the export nor the destination", diffID)
		}
		img.layers = append(img.layers, l)
	}
	return img, img.writeManifest()
}

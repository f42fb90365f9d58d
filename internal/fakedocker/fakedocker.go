// Package fakedocker serves the Docker Engine API calls the docker-daemon:
// source makes (ping, image inspect, image save) on a unix socket, from
// images held in memory. A real engine runs in tagpush's tests; this one is
// for what a real engine cannot be made to do: an export that breaks off
// midway (BreakSave).
package fakedocker

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
)

// Engine is a fake Docker engine.
type Engine struct {
	// Host is the DOCKER_HOST value that reaches it (unix://...).
	Host string

	srv    *http.Server
	mu     sync.Mutex
	images map[string]v1.Image
	saves  int
	// BreakSave ends every export halfway, as an engine that is stopped or
	// runs out of disk mid-export does.
	BreakSave bool
	// StallSave sends the first half of every export, then nothing, the
	// connection open, until the client goes away: an engine link gone
	// silent (a tcp:// engine, Bitbucket's docker service).
	StallSave bool
	// Store is how the engine keeps images, which decides an image's ID
	// and the form of its export.
	Store Store
	// Trickle pauses a save before each file it sends (and each Piece of
	// one), as an engine does while it reads a big layer from disk.
	Trickle time.Duration
	// Piece, when set, sends files in pieces of this many bytes.
	Piece int
	// Before, when set, is called before a save sends each file and each
	// piece of one, with the file's name and where in it the piece starts.
	Before func(name string, offset int)
}

// Store is an engine's image store.
type Store int

func (s Store) String() string {
	return [...]string{"classic", "classic-oci", "containerd"}[s]
}

const (
	// Classic is the overlay2/vfs store (Docker 20.10 to 28, and 29 on
	// upgraded installs): the image ID is the config's digest, layers are
	// kept uncompressed, and a save is the classic form, sorted by name:
	// <v1 id>/layer.tar per layer, <id>.json, manifest.json.
	Classic Store = iota
	// ClassicOCI is the classic store of Docker 25 to 28, whose save is an
	// OCI layout: each layer uncompressed as blobs/sha256/<diff ID>, the
	// config as blobs/sha256/<image ID>, index.json and manifest.json.
	ClassicOCI
	// Containerd is the containerd image store (Docker 29's default on
	// new installs): the image ID is the manifest's digest, and a save is
	// an OCI layout of the blobs as pulled or built, compressed, with
	// manifest.json beside it.
	Containerd
)

// Start serves images (by name, e.g. "app:1") on a socket in dir.
func Start(dir string, images map[string]v1.Image) (*Engine, error) {
	sock := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	e := &Engine{Host: "unix://" + sock, images: make(map[string]v1.Image)}
	for n, img := range images {
		tag, err := name.NewTag(n)
		if err != nil {
			return nil, err
		}
		e.images[tag.Name()] = img
	}
	e.srv = &http.Server{Handler: http.HandlerFunc(e.serve)}
	go func() { _ = e.srv.Serve(l) }()
	return e, nil
}

// Close stops the engine.
func (e *Engine) Close() { _ = e.srv.Close() }

// Saves counts image save calls.
func (e *Engine) Saves() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.saves
}

// lookup finds an image by name or by ID (its config digest), as the
// engine does.
func (e *Engine) lookup(ref string) (name.Tag, v1.Image, bool) {
	for n, img := range e.images {
		if id, err := e.id(img); err == nil && id.String() == ref {
			tag, _ := name.NewTag(n)
			return tag, img, true
		}
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return name.Tag{}, nil, false
	}
	img, ok := e.images[tag.Name()]
	return tag, img, ok
}

func (e *Engine) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Api-Version", "1.51")
	w.Header().Set("Ostype", "linux")
	path := r.URL.Path
	if i := strings.Index(path, "/images/"); i >= 0 {
		path = path[i:]
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/_ping"):
		_, _ = w.Write([]byte("OK"))
	case path == "/images/get":
		e.save(w, r, r.URL.Query()["names"])
	case strings.HasPrefix(path, "/images/") && strings.HasSuffix(path, "/json"):
		e.inspect(w, strings.TrimSuffix(strings.TrimPrefix(path, "/images/"), "/json"))
	case strings.HasPrefix(path, "/images/") && strings.HasSuffix(path, "/history"):
		_, _ = w.Write([]byte("[]"))
	default:
		notFound(w, "page not found: "+r.URL.Path)
	}
}

func notFound(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func (e *Engine) inspect(w http.ResponseWriter, escaped string) {
	ref, _ := url.PathUnescape(escaped)
	_, img, ok := e.lookup(ref)
	if !ok {
		notFound(w, "No such image: "+ref)
		return
	}
	id, err := e.id(img)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	cf, err := img.ConfigFile()
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	var layers []string
	for _, d := range cf.RootFS.DiffIDs {
		layers = append(layers, d.String())
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"Id":           id.String(),
		"RepoTags":     []string{ref},
		"Created":      cf.Created.Format("2006-01-02T15:04:05.999999999Z07:00"),
		"Architecture": cf.Architecture,
		"Os":           cf.OS,
		"RootFS":       map[string]any{"Type": "layers", "Layers": layers},
	})
}

func (e *Engine) save(w http.ResponseWriter, r *http.Request, names []string) {
	refs := make(map[name.Tag]v1.Image)
	for _, n := range names {
		tag, img, ok := e.lookup(n)
		if !ok {
			notFound(w, fmt.Sprintf("No such image: %s", n))
			return
		}
		refs[tag] = img
	}
	e.mu.Lock()
	e.saves++
	broken, stall := e.BreakSave, e.StallSave
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-tar")
	write := e.writeClassic
	switch e.Store {
	case ClassicOCI:
		write = writeClassicOCI
	case Containerd:
		write = writeContainerd
	}
	if stall || broken {
		// Half the export, then silence (stall) or a closed connection.
		var buf bytes.Buffer
		_ = write(refs, &buf, func(string, int) {}, 0)
		_, _ = w.Write(buf.Bytes()[:buf.Len()/2])
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if stall {
			<-r.Context().Done()
			return
		}
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
		return
	}
	e.mu.Lock()
	trickle, before, piece := e.Trickle, e.Before, e.Piece
	e.mu.Unlock()
	flusher, _ := w.(http.Flusher)
	between := func(next string, offset int) {
		if trickle > 0 && flusher != nil {
			flusher.Flush()
			time.Sleep(trickle)
		}
		if before != nil {
			before(next, offset)
		}
	}
	if err := write(refs, w, between, piece); err != nil {
		panic(http.ErrAbortHandler)
	}
	if flusher != nil {
		flusher.Flush()
	}
}

// id is the image's ID in the engine's store.
func (e *Engine) id(img v1.Image) (v1.Hash, error) {
	if e.Store == Containerd {
		return img.Digest()
	}
	return img.ConfigName()
}

// writeClassic writes what the classic store's save writes: each layer
// uncompressed in a directory named by an ID that says nothing of its
// content, a layer met again linked to its first copy, every entry sorted
// by name (as `docker save` of Docker 20.10 archives its temp directory).
func (e *Engine) writeClassic(refs map[name.Tag]v1.Image, w io.Writer, between func(next string, offset int), piece int) error {
	files := make(map[string][]byte)
	links := make(map[string]string)
	var manifest []map[string]any
	for tag, img := range refs {
		cfgName, err := img.ConfigName()
		if err != nil {
			return err
		}
		raw, err := img.RawConfigFile()
		if err != nil {
			return err
		}
		files[cfgName.Hex+".json"] = raw
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		var paths []string
		byDiff := make(map[v1.Hash]string)
		for i, l := range layers {
			diff, err := l.DiffID()
			if err != nil {
				return err
			}
			sum := sha256.Sum256([]byte(fmt.Sprintf("%s %d %s", cfgName, i, diff)))
			dir := hex.EncodeToString(sum[:])
			p := dir + "/layer.tar"
			if first, ok := byDiff[diff]; ok {
				links[p] = "../" + first
			} else {
				rc, err := l.Uncompressed()
				if err != nil {
					return err
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					return err
				}
				files[p] = b
				byDiff[diff] = p
			}
			files[dir+"/VERSION"] = []byte("1.0")
			files[dir+"/json"] = []byte(fmt.Sprintf(`{"id":%q}`, dir))
			paths = append(paths, p)
		}
		manifest = append(manifest, map[string]any{"Config": cfgName.Hex + ".json", "RepoTags": []string{tag.String()}, "Layers": paths})
	}
	m, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	files["manifest.json"] = m
	return writeTar(w, files, links, between, piece)
}

// writeClassicOCI writes what the classic store's save writes since Docker
// 25: an OCI layout of uncompressed layers named by their diff IDs.
func writeClassicOCI(refs map[name.Tag]v1.Image, w io.Writer, between func(next string, offset int), piece int) error {
	return writeLayout(refs, w, false, between, piece)
}

// writeContainerd writes what the containerd store's save writes: an OCI
// layout holding the image's blobs as they are (compressed), its manifest
// and index.json, and manifest.json naming them.
func writeContainerd(refs map[name.Tag]v1.Image, w io.Writer, between func(next string, offset int), piece int) error {
	return writeLayout(refs, w, true, between, piece)
}

// writeLayout writes an OCI layout of the images with manifest.json: each
// layer compressed, as its blob, or uncompressed, named by its diff ID.
func writeLayout(refs map[name.Tag]v1.Image, w io.Writer, compressed bool, between func(next string, offset int), piece int) error {
	files := make(map[string][]byte)
	var manifest []map[string]any
	var index []v1.Descriptor
	for tag, img := range refs {
		cfgName, err := img.ConfigName()
		if err != nil {
			return err
		}
		raw, err := img.RawConfigFile()
		if err != nil {
			return err
		}
		files["blobs/sha256/"+cfgName.Hex] = raw
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		var paths []string
		for _, l := range layers {
			d, read := l.DiffID, l.Uncompressed
			if compressed {
				d, read = l.Digest, l.Compressed
			}
			h, err := d()
			if err != nil {
				return err
			}
			rc, err := read()
			if err != nil {
				return err
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return err
			}
			files["blobs/sha256/"+h.Hex] = b
			paths = append(paths, "blobs/sha256/"+h.Hex)
		}
		if compressed {
			desc, err := partial.Descriptor(img)
			if err != nil {
				return err
			}
			rawManifest, err := img.RawManifest()
			if err != nil {
				return err
			}
			files["blobs/sha256/"+desc.Digest.Hex] = rawManifest
			index = append(index, v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size, Annotations: map[string]string{"io.containerd.image.name": tag.String()}})
		}
		manifest = append(manifest, map[string]any{"Config": "blobs/sha256/" + cfgName.Hex, "RepoTags": []string{tag.String()}, "Layers": paths})
	}
	m, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	files["manifest.json"] = m
	if compressed {
		idx, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index})
		if err != nil {
			return err
		}
		files["index.json"] = idx
	}
	files["oci-layout"] = []byte(`{"imageLayoutVersion":"1.0.0"}`)
	return writeTar(w, files, nil, between, piece)
}

// writeTar writes files and links, sorted by name, in pieces of piece bytes
// (0: whole), calling between before each file and piece.
func writeTar(w io.Writer, files map[string][]byte, links map[string]string, between func(next string, offset int), piece int) error {
	var names []string
	for n := range files {
		names = append(names, n)
	}
	for n := range links {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		between(n, 0)
		if target, ok := links[n]; ok {
			if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o644}); err != nil {
				return err
			}
			continue
		}
		b := files[n]
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Size: int64(len(b)), Mode: 0o644}); err != nil {
			return err
		}
		for off := 0; off < len(b); {
			end := len(b)
			if piece > 0 {
				end = min(off+piece, len(b))
			}
			if off > 0 {
				between(n, off)
			}
			if _, err := tw.Write(b[off:end]); err != nil {
				return err
			}
			off = end
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return tw.Close()
}

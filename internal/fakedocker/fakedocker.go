// Package fakedocker serves the Docker Engine API calls the docker-daemon:
// source makes (ping, image inspect, image save) on a unix socket, from
// images held in memory. A real engine runs in tagpush's tests; this one is
// for what a real engine cannot be made to do: an export that breaks off
// midway (BreakSave).
package fakedocker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
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
}

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
		if id, err := img.ConfigName(); err == nil && id.String() == ref {
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
	id, err := img.ConfigName()
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
	if stall || broken {
		// Half the export, then silence (stall) or a closed connection.
		var buf bytes.Buffer
		_ = tarball.MultiWrite(refs, &buf)
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
	_ = tarball.MultiWrite(refs, w)
}

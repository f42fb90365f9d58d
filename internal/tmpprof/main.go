package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/tagpush/tagpush/pusher"
)

type rt struct {
	inner http.RoundTripper
	mu    sync.Mutex
	ev    []string
	start time.Time
}

func (r *rt) RoundTrip(req *http.Request) (*http.Response, error) {
	t0 := time.Since(r.start)
	resp, err := r.inner.RoundTrip(req)
	t1 := time.Since(r.start)
	kind := "other"
	p := req.URL.Path
	switch {
	case strings.Contains(p, "/manifests/"):
		kind = "manifest"
	case strings.Contains(p, "/blobs/uploads"):
		kind = "upload"
	case strings.Contains(p, "/blobs/"):
		kind = "blob"
	case strings.Contains(p, "/tags/list"):
		kind = "list"
	}
	r.mu.Lock()
	r.ev = append(r.ev, fmt.Sprintf("%s %s", req.Method, kind))
	r.ev = append(r.ev, fmt.Sprintf("@%d-%d", t0.Microseconds(), t1.Microseconds()))
	r.mu.Unlock()
	return resp, err
}

func main() {
	p, _ := layout.FromPath(os.Args[1])
	idx, _ := p.ImageIndex()
	m, _ := idx.IndexManifest()
	img, _ := idx.Image(m.Manifests[0].Digest)
	var tags []name.Tag
	for i := 0; i < 200; i++ {
		t, _ := name.NewTag(fmt.Sprintf("127.0.0.1:5055/acme/%s:v%d", os.Args[2], i))
		tags = append(tags, t)
	}
	tr, _ := pusher.NewTransport(pusher.TLS{})
	r := &rt{inner: tr, start: time.Now()}
	pu, _ := pusher.New(pusher.WithTransport(r), pusher.WithConcurrency(8))
	rep, _ := pu.Push(context.Background(), img, tags)
	total := time.Since(r.start)
	// per kind: first start, last end
	type span struct{ first, last int64; n int }
	spans := map[string]*span{}
	for i := 0; i < len(r.ev); i += 2 {
		var a, b int64
		fmt.Sscanf(r.ev[i+1], "@%d-%d", &a, &b)
		s := spans[r.ev[i]]
		if s == nil {
			s = &span{first: a, last: b}
			spans[r.ev[i]] = s
		}
		if a < s.first { s.first = a }
		if b > s.last { s.last = b }
		s.n++
	}
	var keys []string
	for k := range spans { keys = append(keys, k) }
	sort.Slice(keys, func(i, j int) bool { return spans[keys[i]].first < spans[keys[j]].first })
	for _, k := range keys {
		s := spans[k]
		fmt.Printf("%-16s n=%3d  %6.1fms - %6.1fms\n", k, s.n, float64(s.first)/1000, float64(s.last)/1000)
	}
	fmt.Println("total", total, rep.Results[0].Status)
}

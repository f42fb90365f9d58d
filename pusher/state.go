package pusher

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tagpush/tagpush/queue"
	"github.com/tagpush/tagpush/registry"
)

// regState is the push's share of one destination registry (by host): its
// write limit, how many writes it has served, since when it has refused
// connections, and each blob's home. What the registry says for every
// request (Retry-After, HEAD quirks, refused mounts) and the read budget are
// the registry client's.
type regState struct {
	host string
	// writes is the adaptive limit on writes in flight (blob uploads,
	// manifest PUTs).
	writes *queue.Limiter
	// served counts the writes the registry has answered with success.
	served atomic.Int64

	now func() time.Time

	mu           sync.Mutex
	refusedSince time.Time
	homes        map[v1.Hash]*blobHome
}

// refused notes a refused connection and reports whether the registry has
// refused them for less than grace: long enough to ride out a restart, short
// enough that a wrong address ends the run in seconds, not after every tag
// has spent its attempts.
func (r *regState) refused(grace time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.refusedSince.IsZero() {
		r.refusedSince = now
		return true
	}
	return now.Sub(r.refusedSince) < grace
}

// reached notes that the registry answered, which ends a run of refusals.
func (r *regState) reached() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refusedSince = time.Time{}
}

// blobHome is the repository of the registry that holds a blob, or is
// having it uploaded: where the others mount it from.
type blobHome struct {
	repo string
	done chan struct{} // closed when the blob is there, or its upload failed
	ok   bool          // set before done is closed
	// sent counts the bytes the home's upload has sent, for the repositories
	// waiting on it to tell a slow upload from a stalled one.
	sent atomic.Int64
}

// noteHome records that repo holds the blob.
func (r *regState) noteHome(d v1.Hash, repo string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h, ok := r.homes[d]; ok && h.ok {
		return
	}
	h := &blobHome{repo: repo, done: make(chan struct{}), ok: true}
	close(h.done)
	r.homes[d] = h
}

// claim returns the blob's home: one that holds it or is getting it, or,
// when there is none (or its upload failed), a new one in repo, which the
// caller then owns (mine) and must settle.
func (r *regState) claim(d v1.Hash, repo string) (h *blobHome, mine bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h, ok := r.homes[d]; ok {
		select {
		case <-h.done:
			if h.ok {
				return h, false
			}
		default:
			return h, false
		}
	}
	h = &blobHome{repo: repo, done: make(chan struct{})}
	r.homes[d] = h
	return h, true
}

// settle ends the upload of a home the caller owns.
func (r *regState) settle(h *blobHome, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h.ok = ok
	close(h.done)
}

// repoState is one destination repository's share of a run: its client, the
// blobs it has been given, the phases its tags share, and how many of its
// manifest PUTs are in flight.
type repoState struct {
	repo name.Repository
	rc   *registry.Repository
	run  *run
	reg  *regState

	mu      sync.Mutex
	blobs   map[v1.Hash]*phase // each blob's upload (or check), once per run
	phases  map[*content]*phase
	refs    map[*content]*phase // the referrers' push, once per image
	gp      *remote.Pusher
	puts    int           // manifest PUTs in flight
	settled chan struct{} // closed and replaced whenever puts drops to 0
}

func newRepoState(r *run, repo name.Repository, reg *regState) *repoState {
	return &repoState{
		repo:    repo,
		rc:      r.client.Repository(repo),
		run:     r,
		reg:     reg,
		blobs:   make(map[v1.Hash]*phase),
		phases:  make(map[*content]*phase),
		refs:    make(map[*content]*phase),
		settled: make(chan struct{}),
	}
}

// pusher returns the repository's go-containerregistry Pusher, for chunked
// uploads and referrers, on the run's HTTP layers.
func (rs *repoState) pusher() (*remote.Pusher, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.gp == nil {
		gp, err := remote.NewPusher(rs.run.remoteOptions()...)
		if err != nil {
			return nil, err
		}
		rs.gp = gp
	}
	return rs.gp, nil
}

// putManifest writes a manifest as ref; the caller holds a write slot. The
// repository's PUTs in flight are counted, for settle.
func (rs *repoState) putManifest(ctx context.Context, ref string, raw []byte, mt types.MediaType) (v1.Hash, error) {
	rs.mu.Lock()
	rs.puts++
	rs.mu.Unlock()
	defer func() {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		if rs.puts--; rs.puts == 0 {
			close(rs.settled)
			rs.settled = make(chan struct{})
		}
	}()
	return rs.rc.PutManifest(ctx, ref, raw, mt)
}

// settle waits until none of the repository's manifest PUTs is in flight, for
// at most limit. A read that races a write of the same repository can fail
// where neither would alone (Distribution answers such a HEAD 500, "invalid
// checksum digest format", as it rewrites the link files the read follows):
// verification reads once the writes are done.
func (rs *repoState) settle(ctx context.Context, limit time.Duration) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		rs.mu.Lock()
		if rs.puts == 0 {
			rs.mu.Unlock()
			return
		}
		ch := rs.settled
		rs.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

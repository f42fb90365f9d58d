package pusher

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tagpush/tagpush/queue"
)

// registry is what a run learns about one destination registry (by host)
// that speaks for every request to it, not for one tag: its write limit and
// read budget, how long it asked clients to stay away (Retry-After), since
// when it has refused connections, and whether its manifest HEAD answers can
// be trusted.
type registry struct {
	host string
	// writes is the adaptive limit on writes in flight (blob uploads,
	// manifest PUTs); reads is a fixed budget for reads (look-ups,
	// verification, blob existence checks), which never touch writes.
	writes, reads *queue.Limiter
	// served counts the writes the registry has answered with success.
	served atomic.Int64

	now func() time.Time
	// maxWait caps a registry's announced wait (max-retry-delay): a
	// Retry-After of an hour must not hold a CI job for an hour.
	maxWait time.Duration

	mu           sync.Mutex
	until        time.Time
	refusedSince time.Time
	homes        map[v1.Hash]*blobHome
	// headUnusable is set once a manifest HEAD answered without a digest,
	// 405, or 404 for a manifest that GET then found: from then on manifest
	// reads go straight to GET.
	headUnusable bool
}

// registries are a run's registries by host. The HTTP layers look hosts up
// too, including hosts that are no destination (a token server, blob
// storage): those get the pause and Retry-After bookkeeping and no limits.
type registries struct {
	now     func() time.Time
	maxWait time.Duration
	// setup gives a new registry its limits.
	setup func(*registry)

	mu     sync.Mutex
	byHost map[string]*registry
	dests  map[string]*registry // the destinations, for the statistics
}

func newRegistries(now func() time.Time, maxWait time.Duration) *registries {
	return &registries{now: now, maxWait: maxWait, byHost: make(map[string]*registry), dests: make(map[string]*registry)}
}

// get returns the registry of host, created on first use.
func (rs *registries) get(host string) *registry {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.getLocked(host)
}

func (rs *registries) getLocked(host string) *registry {
	r, ok := rs.byHost[host]
	if !ok {
		r = &registry{host: host, now: rs.now, maxWait: rs.maxWait, homes: make(map[v1.Hash]*blobHome)}
		if rs.setup != nil {
			rs.setup(r)
		}
		rs.byHost[host] = r
	}
	return r
}

// destination returns the registry of host and counts it as a destination.
func (rs *registries) destination(host string) *registry {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.getLocked(host)
	rs.dests[host] = r
	return r
}

// destinations returns the destination registries by host.
func (rs *registries) destinations() map[string]*registry {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make(map[string]*registry, len(rs.dests))
	for h, r := range rs.dests {
		out[h] = r
	}
	return out
}

// noteWait records a wait the registry announced, capped by maxWait.
func (r *registry) noteWait(d time.Duration) {
	d = min(d, r.maxWait)
	if d <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.now().Add(d); t.After(r.until) {
		r.until = t
	}
}

// remaining is how much of the registry's requested wait is left.
func (r *registry) remaining() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.until.Sub(r.now()), 0)
}

// refused notes a refused connection and reports whether the registry has
// refused them for less than grace: long enough to ride out a restart, short
// enough that a wrong address ends the run in seconds, not after every tag
// has spent its attempts.
func (r *registry) refused(grace time.Duration) bool {
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
func (r *registry) reached() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refusedSince = time.Time{}
}

func (r *registry) headIsUnusable() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headUnusable
}

func (r *registry) noteHeadUnusable() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.headUnusable = true
}

// read runs f, one read request, holding a slot of the registry's read budget.
func (r *registry) read(ctx context.Context, f func() error) error {
	s, err := r.reads.Acquire(ctx)
	if err != nil {
		return err
	}
	defer s.Release()
	return f()
}

// blobHome is the repository of the registry that holds a blob, or is
// having it uploaded: where the others mount it from.
type blobHome struct {
	repo string
	done chan struct{} // closed when the blob is there, or its upload failed
	ok   bool          // set before done is closed
}

// noteHome records that repo holds the blob.
func (r *registry) noteHome(d v1.Hash, repo string) {
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
func (r *registry) claim(d v1.Hash, repo string) (h *blobHome, mine bool) {
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
func (r *registry) settle(h *blobHome, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h.ok = ok
	close(h.done)
}

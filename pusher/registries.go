package pusher

import (
	"sync"
	"time"
)

// registries is what a run learns about each destination registry (by host)
// that speaks for every request to it, not for one tag: how long it asked
// clients to stay away (Retry-After), and since when it has refused
// connections.
type registries struct {
	now func() time.Time
	// maxWait caps a registry's announced wait (max-retry-delay): a
	// Retry-After of an hour must not hold a CI job for an hour.
	maxWait time.Duration

	mu           sync.Mutex
	until        map[string]time.Time
	refusedSince map[string]time.Time
}

func newRegistries(now func() time.Time, maxWait time.Duration) *registries {
	return &registries{now: now, maxWait: maxWait, until: make(map[string]time.Time), refusedSince: make(map[string]time.Time)}
}

// noteWait records a wait the registry announced, capped by maxWait.
func (r *registries) noteWait(host string, d time.Duration) {
	d = min(d, r.maxWait)
	if d <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.now().Add(d); t.After(r.until[host]) {
		r.until[host] = t
	}
}

// remaining is how much of the registry's requested wait is left.
func (r *registries) remaining(host string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.until[host].Sub(r.now()), 0)
}

// refused notes a refused connection and reports whether the registry has
// refused them for less than grace: long enough to ride out a restart, short
// enough that a wrong address ends the run in seconds, not after every tag
// has spent its attempts.
func (r *registries) refused(host string, grace time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	since, ok := r.refusedSince[host]
	if !ok {
		r.refusedSince[host] = now
		return true
	}
	return now.Sub(since) < grace
}

// reached notes that the registry answered, which ends a run of refusals.
func (r *registries) reached(host string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.refusedSince, host)
}

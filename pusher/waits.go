package pusher

import (
	"net/http"
	"sync"
	"time"
)

// registryWaits remembers, per registry host, until when the registry asked
// clients to stay away (Retry-After). The wait belongs to the registry, not to
// one request: every tag bound for it waits.
type registryWaits struct {
	now   func() time.Time
	mu    sync.Mutex
	until map[string]time.Time
}

func newRegistryWaits(now func() time.Time) *registryWaits {
	return &registryWaits{now: now, until: make(map[string]time.Time)}
}

func (w *registryWaits) note(host string, d time.Duration) {
	if d <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if t := w.now().Add(d); t.After(w.until[host]) {
		w.until[host] = t
	}
}

// remaining is how much of the registry's requested wait is left.
func (w *registryWaits) remaining(host string) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(w.until[host].Sub(w.now()), 0)
}

// retryAfterTransport notes the Retry-After header of 429 and 503 answers.
// go-containerregistry turns responses into errors without their headers, so
// this is the one place the header can be read.
type retryAfterTransport struct {
	inner http.RoundTripper
	waits *registryWaits
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.inner.RoundTrip(req)
	if err == nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), t.waits.now()); ok {
			t.waits.note(req.URL.Host, d)
		}
	}
	return resp, err
}

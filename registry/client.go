// Package registry is tagpush's client of the distribution API: one
// Repository per destination repository, with the reads (resolve a tag, list
// the tags, check a blob) and writes (mount or upload a blob, put a manifest)
// the push is made of, and the HTTP layers under them (pause after
// Retry-After, redirect bound, stall watchdog, upload and redirect guard,
// error body cap, byte counting).
//
// It knows nothing of a push: no tags to report, no retries, no write limit.
// Every read takes a slot of its registry's read budget inside, so no caller
// can forget it; a write is sent as asked, and the caller holds whatever slot
// its own limit wants around it. Failures are typed values (SignInError,
// StallError, RedirectLoopError, ErrInternalTarget, go-containerregistry's
// *transport.Error with the registry's own status, codes and words) for the
// caller to classify. The ping, token exchange and scopes are
// go-containerregistry's.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tagpush/tagpush/queue"
)

// Options configure a Client. Zero values are the documented defaults.
type Options struct {
	// Transport is the HTTP transport under the client's layers
	// (http.DefaultTransport when nil).
	Transport http.RoundTripper
	// Keychain finds each registry's credentials (authn.DefaultKeychain).
	Keychain authn.Keychain
	// UserAgent is sent with every request ("tagpush").
	UserAgent string
	// ReadBudget is the most reads in flight per registry (32).
	ReadBudget int
	// StallTimeout abandons a request whose body or answer moves no byte for
	// that long; 0 turns the watchdog off.
	StallTimeout time.Duration
	// MaxWait caps a wait a registry announces (Retry-After): an hour must
	// not hold a CI job for an hour (30s).
	MaxWait time.Duration
	// LookupIP resolves names for the upload and redirect guard
	// (net.DefaultResolver).
	LookupIP func(ctx context.Context, host string) ([]net.IPAddr, error)
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Client talks to the registries of one run: it keeps what each registry
// (by host) has said that speaks for every later request to it.
type Client struct {
	opts      Options
	transport http.RoundTripper
	uploads   *uploadCounter

	mu    sync.Mutex
	hosts map[string]*host
	repos map[name.Repository]*Repository
}

// New returns a client with its HTTP layers.
func New(o Options) *Client {
	if o.Transport == nil {
		o.Transport = http.DefaultTransport
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.UserAgent == "" {
		o.UserAgent = "tagpush"
	}
	if o.ReadBudget <= 0 {
		o.ReadBudget = 32
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 30 * time.Second
	}
	if o.LookupIP == nil {
		o.LookupIP = net.DefaultResolver.LookupIPAddr
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Client{opts: o, hosts: make(map[string]*host), repos: make(map[name.Repository]*Repository)}
	base := o.Transport
	c.uploads = &uploadCounter{inner: &stallWatchdog{inner: &realmTransport{inner: base}, idle: o.StallTimeout}}
	c.transport = &rewindTransport{inner: &redirectLimitTransport{inner: &pauseTransport{c: c,
		inner: &retryAfterTransport{c: c, inner: &errorBodyLimit{inner: c.uploads, wait: errorBodyWait}}}}}
	return c
}

// Transport is the client's HTTP stack, for go-containerregistry's own
// clients (a Pusher for referrers and chunked uploads) to share its layers
// and per-registry state.
func (c *Client) Transport() http.RoundTripper { return c.transport }

// Uploaded is how many blob bytes the client has sent, and the size of every
// blob upload it has started.
func (c *Client) Uploaded() (sent, total int64) { return c.uploads.progress() }

// Wait is how much of a registry's announced wait (Retry-After) is left.
func (c *Client) Wait(registry string) time.Duration { return c.host(registry).remaining() }

// NoteWait records a wait a registry announced somewhere the HTTP layers do
// not read (ghcr.io says it in the error body): every write to it waits.
func (c *Client) NoteWait(registry string, d time.Duration) { c.host(registry).noteWait(d) }

// MountsRefused reports whether the registry has refused a cross-repository
// mount in this run: it is not asked again.
func (c *Client) MountsRefused(registry string) bool {
	h := c.host(registry)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mountsRefused
}

// Repository returns the client's view of repo, made on first use. Every
// repository of a run should be asked for before the first request: each
// signs in with pull access to the others on its registry, which mounting a
// blob from one of them needs.
func (c *Client) Repository(repo name.Repository) *Repository {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.repos[repo]
	if !ok {
		r = &Repository{name: repo, c: c, host: c.hostLocked(repo.RegistryStr())}
		c.repos[repo] = r
	}
	return r
}

// siblings are the client's other repositories on repo's registry.
func (c *Client) siblings(repo name.Repository) []name.Repository {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []name.Repository
	for other := range c.repos {
		if other.RegistryStr() == repo.RegistryStr() && other != repo {
			out = append(out, other)
		}
	}
	return out
}

func (c *Client) now() time.Time { return c.opts.Now() }

func (c *Client) host(h string) *host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hostLocked(h)
}

func (c *Client) hostLocked(h string) *host {
	r, ok := c.hosts[h]
	if !ok {
		r = &host{now: c.opts.Now, maxWait: c.opts.MaxWait, reads: queue.NewLimiter(h, queue.Fixed(c.opts.ReadBudget))}
		c.hosts[h] = r
	}
	return r
}

// host is what a registry has said that speaks for every request to it.
type host struct {
	now     func() time.Time
	maxWait time.Duration
	// reads bounds the reads in flight; writes are the caller's to bound.
	reads *queue.Limiter

	mu    sync.Mutex
	until time.Time // the end of its announced wait
	// headUnusable is set once a manifest HEAD answered without a digest,
	// 405, or 404 for a manifest that GET then found: manifest reads go
	// straight to GET from then on.
	headUnusable bool
	// mountsRefused is set once a mount was answered anything but 201.
	mountsRefused bool
}

func (h *host) noteWait(d time.Duration) {
	d = min(d, h.maxWait)
	if d <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.now().Add(d); t.After(h.until) {
		h.until = t
	}
}

func (h *host) remaining() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return max(h.until.Sub(h.now()), 0)
}

func (h *host) flag(f *bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return *f
}

func (h *host) set(f *bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	*f = true
}

// read runs f, one read request, holding a slot of the read budget.
func (h *host) read(ctx context.Context, f func() error) error {
	s, err := h.reads.Acquire(ctx)
	if err != nil {
		return err
	}
	defer s.Release()
	return f()
}

// Sleep waits for d or until ctx ends, with ctx's cause.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// RetryAfter reads a Retry-After header: delay seconds or an HTTP date.
func RetryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	var secs float64
	if _, err := fmt.Sscanf(h, "%g", &secs); err == nil && !strings.ContainsAny(h, " ,") {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(secs * float64(time.Second)), true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// uploadLocation resolves the upload session's Location and refuses one that
// moves the upload to another host at a loopback, unspecified, private or
// link-local address where the registry itself is not: a registry must not
// be able to point our blob at a service on the runner or its network.
func (c *Client) uploadLocation(ctx context.Context, resp *http.Response) (*url.URL, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil, fmt.Errorf("registry opened an upload without a Location")
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("upload Location %q: %w", loc, err)
	}
	if err := c.targetAllowed(ctx, resp.Request.URL.Host, u.Host); err != nil {
		return nil, fmt.Errorf("registry sent the upload to %s: %w", u.Host, err)
	}
	return u, nil
}

// checkRedirect follows redirects as go-containerregistry does, refusing one
// that moves a request to another host at an address of the kinds
// uploadLocation refuses; how many redirects a request may follow is
// redirectLimitTransport's to say.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 {
		return nil
	}
	if err := c.targetAllowed(req.Context(), via[0].URL.Host, req.URL.Host); err != nil {
		return fmt.Errorf("registry redirected a request to %s: %w", req.URL.Host, err)
	}
	return nil
}

// ErrInternalTarget is an upload or redirect the registry pointed at an
// address tagpush does not send to.
var ErrInternalTarget = errors.New("refused: an internal address the registry is not at")

// targetAllowed checks a host a registry (at from) sends a request to. The
// same host is always allowed. Another host is resolved: each of its
// addresses must be public, or of a kind (this machine, a private network)
// the registry's own addresses include, so a registry on a private network
// may send uploads within it and one on the runner (a test registry) to the
// runner, and no other may.
func (c *Client) targetAllowed(ctx context.Context, from, to string) error {
	if strings.EqualFold(from, to) {
		return nil
	}
	toIPs, err := c.addresses(ctx, hostOf(to))
	if err != nil {
		return fmt.Errorf("resolve %s: %w", hostOf(to), err)
	}
	var fromIPs []net.IP
	for _, ip := range toIPs {
		kind := addressKind(ip)
		if kind == "" {
			continue
		}
		if fromIPs == nil {
			if fromIPs, err = c.addresses(ctx, hostOf(from)); err != nil {
				return fmt.Errorf("resolve %s: %w", hostOf(from), err)
			}
		}
		shared := false
		for _, f := range fromIPs {
			shared = shared || addressKind(f) == kind
		}
		if !shared {
			return fmt.Errorf("%w (%s is %s)", ErrInternalTarget, ip, kind)
		}
	}
	return nil
}

func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// addresses resolves host (an IP literal is its own address).
func (c *Client) addresses(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	addrs, err := c.opts.LookupIP(ctx, host)
	if err != nil {
		return nil, err
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips, nil
}

// addressKind is "this machine" for loopback and unspecified addresses (both
// reach the runner itself), "a private address" for private, shared (CGNAT)
// and link-local ones, and "" for a public address.
func addressKind(ip net.IP) string {
	switch {
	case ip.IsLoopback() || ip.IsUnspecified():
		return "this machine"
	case ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || cgnat.Contains(ip):
		return "a private address"
	}
	return ""
}

var cgnat = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

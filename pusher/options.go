package pusher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/option"
	"github.com/tagpush/tagpush/internal/quote"
)

// Option configures a Pusher.
type Option func(*config) error

type config struct {
	concurrency   int
	adaptive      bool
	overwrite     bool
	atomic        bool
	probeAfter    time.Duration
	readBudget    int
	maxAttempts   int
	retryDelay    time.Duration
	maxRetryDelay time.Duration
	timeout       time.Duration
	stallTimeout  time.Duration
	verifyWindow  time.Duration
	connectGrace  time.Duration
	transport     http.RoundTripper
	lookupIP      func(ctx context.Context, host string) ([]net.IPAddr, error)
	keychain      authn.Keychain
	userAgent     string
	progressEvery time.Duration
	events        Events
	now           func() time.Time
	// optionName names an option in advice as the front end does.
	optionName func(string) string
}

// The defaults of the settings a person can change; tagpush's options table
// takes its defaults from here, so they are written once.
const (
	DefaultConcurrency = 10
	// StartConcurrency is where the adaptive limit starts when the
	// ceiling is higher: it climbs by one per successful write until the
	// ceiling or the registry's first overload (slow start).
	StartConcurrency   = 4
	DefaultAdaptive    = true
	DefaultOverwrite   = true
	DefaultMaxAttempts = 8
	// DefaultRetryDelay and DefaultMaxAttempts ride out about 25s of failures.
	DefaultRetryDelay    = 200 * time.Millisecond
	DefaultMaxRetryDelay = 30 * time.Second
	DefaultTimeout       = 10 * time.Minute
	// ReadBudget is the most reads (look-ups, verification, blob checks) in
	// flight at once per registry, however many tags: with the highest
	// concurrency a person may set, at most 64 requests reach a registry at
	// once.
	ReadBudget = 32
)

// The ceilings of the settings a person can change: beyond them a value is a
// mistake (concurrency: 1000000) rather than a choice.
const (
	// MaxConcurrency keeps a run at most 64 requests in flight to a
	// registry, with the read budget.
	MaxConcurrency   = 32
	MaxMaxAttempts   = 50
	MaxRetryDelay    = time.Minute
	MaxMaxRetryDelay = 10 * time.Minute
	MaxTimeout       = 24 * time.Hour
)

func defaults() config {
	return config{
		concurrency:   DefaultConcurrency,
		adaptive:      DefaultAdaptive,
		overwrite:     DefaultOverwrite,
		probeAfter:    5 * time.Second,
		readBudget:    ReadBudget,
		maxAttempts:   DefaultMaxAttempts,
		retryDelay:    DefaultRetryDelay,
		maxRetryDelay: DefaultMaxRetryDelay,
		timeout:       DefaultTimeout,
		stallTimeout:  30 * time.Second,
		verifyWindow:  10 * time.Second,
		connectGrace:  3 * time.Second,
		transport:     defaultTransport(),
		lookupIP:      net.DefaultResolver.LookupIPAddr,
		keychain:      authn.DefaultKeychain,
		userAgent:     "tagpush",
		progressEvery: 5 * time.Second,
		now:           time.Now,
		optionName:    option.Plain,
	}
}

// Events are called as a run goes; each may be nil. They may be called from
// several goroutines at once.
type Events struct {
	// TagDone is called once per tag when it ends.
	TagDone func(Result)
	// Retry is called before each wait between two attempts of a tag.
	Retry func(Retry)
	// LimitChange is called when a registry's concurrency limit changes.
	LimitChange func(LimitChange)
	// Progress is called every progress interval while bytes are being uploaded.
	Progress func(Progress)
}

// LimitChange is a registry's write limit moving: down after an overload
// (5xx, 429, timeout), up again once it has recovered.
type LimitChange struct {
	Registry string
	Old, New int
	// Overload is true for a decrease.
	Overload bool
	// SlowStart is true for a rise of the climb from StartConcurrency to
	// the ceiling that every run makes on a healthy registry.
	SlowStart bool
}

// Retry describes one failed attempt that will be tried again.
type Retry struct {
	// Registry is the registry the step went to.
	Registry string
	// Tag names the step: a tag, a blob (REPO@DIGEST), or a read.
	Tag     string
	Attempt int
	Fault   Fault
	Err     error
	Wait    time.Duration
	// Read is set for a read (a look-up, a verification, a blob check).
	Read bool
}

// Progress is the bytes uploaded so far out of the bytes the run has to check or upload.
type Progress struct {
	Complete, Total int64
}

// WithConcurrency sets the most writes in flight at once per registry (the ceiling
// when adaptive). Default 4.
func WithConcurrency(n int) Option {
	return func(c *config) error {
		switch {
		case n < 1:
			return option.Errorf(option.Ref("concurrency"), fmt.Sprintf(": %d is less than 1", n))
		case n > MaxConcurrency:
			return option.Errorf(option.Ref("concurrency"), fmt.Sprintf(": %d is more than %d, the most writes tagpush puts on one registry at once", n, MaxConcurrency))
		}
		c.concurrency = n
		return nil
	}
}

// WithOverwrite says whether a tag that holds another digest is written
// (true, the default) or left as it is and reported failed.
func WithOverwrite(on bool) Option {
	return func(c *config) error { c.overwrite = on; return nil }
}

// WithAtomic holds the tags that already point at another digest (floating
// tags) until every other tag of the run is pushed and verified, and puts
// back any it moved when a tag of the run fails.
func WithAtomic(on bool) Option {
	return func(c *config) error { c.atomic = on; return nil }
}

// WithOptionNames names options in the advice of failed tags ("raise
// timeout") as the front end in use names them: --timeout on a terminal,
// TIMEOUT in a Bitbucket pipe. By default, as the options table does.
func WithOptionNames(name func(option string) string) Option {
	return func(c *config) error {
		if name != nil {
			c.optionName = name
		}
		return nil
	}
}

// WithAdaptive turns adaptive concurrency on (the default) or off.
func WithAdaptive(on bool) Option {
	return func(c *config) error { c.adaptive = on; return nil }
}

// WithRetry sets the attempt budget per tag and the backoff: the first wait is
// about delay, doubling each time, never more than maxDelay (which also caps a
// registry's Retry-After).
func WithRetry(maxAttempts int, delay, maxDelay time.Duration) Option {
	return func(c *config) error {
		switch {
		case maxAttempts < 1:
			return option.Errorf(option.Ref("max-attempts"), fmt.Sprintf(": %d is less than 1", maxAttempts))
		case maxAttempts > MaxMaxAttempts:
			return option.Errorf(option.Ref("max-attempts"), fmt.Sprintf(": %d is more than %d", maxAttempts, MaxMaxAttempts))
		case delay <= 0:
			return option.Errorf(option.Ref("retry-delay"), fmt.Sprintf(": %s is not a positive duration", delay))
		case delay > MaxRetryDelay:
			return option.Errorf(option.Ref("retry-delay"), fmt.Sprintf(": %s is more than %s", quote.Duration(delay), quote.Duration(MaxRetryDelay)))
		case maxDelay < delay:
			return option.Errorf(option.Ref("max-retry-delay"), fmt.Sprintf(" (%s) is less than ", maxDelay), option.Ref("retry-delay"), fmt.Sprintf(" (%s)", delay))
		case maxDelay > MaxMaxRetryDelay:
			return option.Errorf(option.Ref("max-retry-delay"), fmt.Sprintf(": %s is more than %s", quote.Duration(maxDelay), quote.Duration(MaxMaxRetryDelay)))
		}
		c.maxAttempts, c.retryDelay, c.maxRetryDelay = maxAttempts, delay, maxDelay
		return nil
	}
}

// WithTimeout bounds the time one tag may take, all attempts included. Default 10m.
func WithTimeout(d time.Duration) Option {
	return func(c *config) error {
		switch {
		case d <= 0:
			return option.Errorf(option.Ref("timeout"), fmt.Sprintf(": %s is not a positive duration", d))
		case d > MaxTimeout:
			return option.Errorf(option.Ref("timeout"), fmt.Sprintf(": %s is more than %s", quote.Duration(d), quote.Duration(MaxTimeout)))
		}
		c.timeout = d
		return nil
	}
}

// WithStallTimeout abandons (and retries) a request that sends none of its
// body, or receives none of its answer's, for d. Default 30s; 0 turns it off.
func WithStallTimeout(d time.Duration) Option {
	return durationOption("stall timeout", d, func(c *config) { c.stallTimeout = d })
}

// WithVerifyWindow sets how long a tag the registry accepted may read as
// missing (or as another digest) before the attempt counts as failed: reads
// after writes lag on ghcr.io and S3-backed registries. Default 10s.
func WithVerifyWindow(d time.Duration) Option {
	return durationOption("verify window", d, func(c *config) { c.verifyWindow = d })
}

// WithConnectGrace sets how long a registry that refuses connections is
// believed to be restarting: refused attempts are retried until the registry
// has refused for d, then every tag bound for it fails at once. Default 3s.
func WithConnectGrace(d time.Duration) Option {
	return durationOption("connect grace", d, func(c *config) { c.connectGrace = d })
}

// durationOption refuses a negative d, naming what it is, and otherwise sets it.
func durationOption(what string, d time.Duration, set func(*config)) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%s must not be negative, got %s", what, d)
		}
		set(c)
		return nil
	}
}

// WithProbeInterval tunes adaptive concurrency: the level that overloaded is
// tried again no sooner than d after it (default 5s, doubling after each
// failed probe).
func WithProbeInterval(d time.Duration) Option {
	return durationOption("limit probe interval", d, func(c *config) { c.probeAfter = d })
}

// WithReadBudget sets the most reads in flight at once per registry.
// Default ReadBudget.
func WithReadBudget(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("read budget: %d is less than 1", n)
		}
		c.readBudget = n
		return nil
	}
}

// WithTransport sets the HTTP transport under go-containerregistry's.
func WithTransport(t http.RoundTripper) Option {
	return func(c *config) error { c.transport = t; return nil }
}

// WithKeychain sets where credentials come from. Default authn.DefaultKeychain.
func WithKeychain(k authn.Keychain) Option {
	return func(c *config) error { c.keychain = k; return nil }
}

// WithUserAgent sets the User-Agent sent to registries.
func WithUserAgent(ua string) Option {
	return func(c *config) error { c.userAgent = ua; return nil }
}

// WithProgressInterval sets how often Events.Progress is called. Default 5s.
func WithProgressInterval(d time.Duration) Option {
	return func(c *config) error { c.progressEvery = d; return nil }
}

// WithEvents sets the callbacks that observe a run.
func WithEvents(e Events) Option {
	return func(c *config) error { c.events = e; return nil }
}

// defaultTransport is go-containerregistry's, with a bound on how long a
// registry may take to start answering once a request is sent (an upload's
// clock starts after its body is written), so a hung connection is a
// retryable timeout rather than a tag stuck until its own timeout.
func defaultTransport() http.RoundTripper {
	t, _ := NewTransport(TLS{})
	return t
}

// TLS says which certificates to trust beyond the system's.
type TLS struct {
	// CAFile is a PEM file of CA certificates to trust as well (a company CA).
	CAFile string
	// Insecure lists registries (host or host:port) whose certificates are
	// not checked and which may be reached over plain HTTP.
	Insecure []string
}

// NewTransport returns the HTTP transport for registries: go-containerregistry's
// default, with the response-header bound, trusting tls.CAFile too, and
// skipping certificate checks for tls.Insecure. Sources and destinations use
// the same one, so both get the same timeouts and trust.
func NewTransport(cfg TLS) (http.RoundTripper, error) {
	base := remote.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = 2 * time.Minute
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, &option.Error{Msg: option.Message{option.Ref("ca-file")}, Err: err}
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, option.Errorf(option.Ref("ca-file"), " "+cfg.CAFile+": no PEM certificate in it")
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if len(cfg.Insecure) == 0 {
		return base, nil
	}
	skip := base.Clone()
	if skip.TLSClientConfig == nil {
		skip.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	skip.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // the user listed these registries as insecure
	hosts := make(map[string]bool, len(cfg.Insecure))
	for _, h := range cfg.Insecure {
		hosts[h] = true
	}
	return &perHost{insecure: hosts, secure: base, skip: skip}, nil
}

// perHost sends requests for the registries the user listed as insecure
// through a transport that does not check certificates, the rest through the
// normal one. Redirects to another host (blob storage) are checked again.
type perHost struct {
	insecure     map[string]bool
	secure, skip http.RoundTripper
}

func (p *perHost) RoundTrip(req *http.Request) (*http.Response, error) {
	if p.insecure[req.URL.Host] || p.insecure[req.URL.Hostname()] {
		return p.skip.RoundTrip(req)
	}
	return p.secure.RoundTrip(req)
}

// Package pusher pushes one image or index to many tags through go-containerregistry.
//
// Blobs go to each repository once, however many tags share them, and the same
// blob is never uploaded twice at once (go-containerregistry's Pusher dedupes by
// digest); each tag then costs one manifest PUT and one HEAD that proves the tag
// resolves to the pushed digest. Each tag is retried as a whole under a policy
// owned by retry-go, with go-containerregistry's own retries turned off so the
// attempts reported are the attempts made. Tags run through a queue with one
// adaptive limit per registry.
package pusher

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/avast/retry-go/v4"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tagpush/tagpush/queue"
)

// Status is how a tag ended.
type Status string

const (
	StatusPushed    Status = "pushed"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// Result is what became of one tag.
type Result struct {
	Tag      name.Tag
	Status   Status
	Digest   string
	Attempts int
	Duration time.Duration
	Err      error
}

// Stats describes a whole run.
type Stats struct {
	// Faults counts failed attempts by kind.
	Faults map[Fault]int
	// Retries is how many attempts were followed by another.
	Retries int
	// BackoffWait is the total time tags spent waiting between attempts.
	BackoffWait time.Duration
	// PeakConcurrency is, per registry, the most tags that were in flight at once.
	PeakConcurrency map[string]int
	// FinalLimit is, per registry, the concurrency limit at the end of the run.
	FinalLimit map[string]int
}

// Report is the outcome of a run: one result per tag, in the order given.
type Report struct {
	Digest  string
	Results []Result
	Stats   Stats
}

// Pusher pushes images to tags. It is safe to use for one run at a time.
type Pusher struct {
	cfg config
}

// New returns a Pusher with the given options.
func New(opts ...Option) (*Pusher, error) {
	cfg := defaults()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	return &Pusher{cfg: cfg}, nil
}

// Push pushes img (a v1.Image or v1.ImageIndex) to every tag and reports each.
// It returns an error only when img cannot be read at all; failures of tags are
// in the report.
func (p *Pusher) Push(ctx context.Context, img remote.Taggable, tags []name.Tag) (*Report, error) {
	c, err := contentOf(img)
	if err != nil {
		return nil, err
	}
	r := &run{
		cfg:     p.cfg,
		content: c,
		regs:    newRegistries(p.cfg.now, p.cfg.maxRetryDelay),
		faults:  make(map[Fault]int),
	}
	r.uploads = &uploadCounter{inner: &stallWatchdog{inner: p.cfg.transport, idle: p.cfg.stallTimeout}}
	r.transport = &redirectLimitTransport{inner: &pauseTransport{regs: r.regs, inner: &retryAfterTransport{inner: r.uploads, regs: r.regs}}}
	r.puller, err = remote.NewPuller(r.remoteOptions()...)
	if err != nil {
		return nil, fmt.Errorf("set up registry client: %w", err)
	}

	limiters := make(map[string]*queue.Limiter)
	repos := make(map[name.Repository]*repoState)
	jobs := make([]queue.Job[Result], len(tags))
	for i, tag := range tags {
		reg := tag.RegistryStr()
		lim, ok := limiters[reg]
		if !ok {
			lim = r.newLimiter(reg)
			limiters[reg] = lim
		}
		rs, ok := repos[tag.Repository]
		if !ok {
			rs = &repoState{repo: tag.Repository, run: r}
			repos[tag.Repository] = rs
		}
		jobs[i] = queue.Job[Result]{Limiter: lim, Do: func(ctx context.Context, s *queue.Slot) (Result, error) {
			return r.pushTag(ctx, s, rs, tag), nil
		}}
	}

	stopProgress := r.reportProgress()
	results := queue.Run(ctx, jobs)
	stopProgress()

	rep := &Report{Digest: c.digest.String(), Results: make([]Result, len(tags))}
	for i, res := range results {
		if !res.Started {
			res.Value = Result{Tag: tags[i], Status: StatusCancelled, Err: fmt.Errorf("cancelled before it started: %w", res.Err)}
			if p.cfg.events.TagDone != nil {
				p.cfg.events.TagDone(res.Value)
			}
		}
		rep.Results[i] = res.Value
	}
	rep.Stats = r.stats(limiters)
	return rep, nil
}

// run is the state of one Push call.
type run struct {
	cfg       config
	content   *content
	transport http.RoundTripper
	uploads   *uploadCounter
	regs      *registries
	puller    *remote.Puller

	mu      sync.Mutex
	faults  map[Fault]int
	retries int
	waited  time.Duration
}

func (r *run) newLimiter(reg string) *queue.Limiter {
	var alg queue.Algorithm = queue.Fixed(r.cfg.concurrency)
	if r.cfg.adaptive {
		// The ceiling was validated by WithConcurrency.
		a, _ := queue.NewAIMD(r.cfg.concurrency, r.cfg.cooldown, r.cfg.probeAfter)
		alg = a
	}
	opts := []queue.LimiterOption{queue.WithClock(r.cfg.now)}
	if r.cfg.events.LimitChange != nil {
		opts = append(opts, queue.OnChange(r.cfg.events.LimitChange))
	}
	return queue.NewLimiter(reg, alg, opts...)
}

// remoteOptions configures go-containerregistry with its retries off: retry-go
// owns the policy, and two layers retrying the same failure would multiply
// attempts without anyone seeing them.
func (r *run) remoteOptions() []remote.Option {
	return []remote.Option{
		remote.WithTransport(r.transport),
		remote.WithAuthFromKeychain(r.cfg.keychain),
		remote.WithUserAgent(r.cfg.userAgent),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
	}
}

func (r *run) noteFault(f Fault) {
	r.mu.Lock()
	r.faults[f]++
	r.mu.Unlock()
}

func (r *run) noteWait(d time.Duration) {
	r.mu.Lock()
	r.retries++
	r.waited += d
	r.mu.Unlock()
}

func (r *run) stats(limiters map[string]*queue.Limiter) Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{
		Faults:          make(map[Fault]int, len(r.faults)),
		Retries:         r.retries,
		BackoffWait:     r.waited,
		PeakConcurrency: make(map[string]int, len(limiters)),
		FinalLimit:      make(map[string]int, len(limiters)),
	}
	for f, n := range r.faults {
		if f != faultCancelled {
			s.Faults[f] = n
		}
	}
	for reg, l := range limiters {
		s.PeakConcurrency[reg] = l.Peak()
		s.FinalLimit[reg] = l.Limit()
	}
	return s
}

// repoState is one destination repository's share of a run.
type repoState struct {
	repo name.Repository
	run  *run

	mu sync.Mutex
	gp *remote.Pusher // remembers which blobs this run has put in repo
	// started marks the blobs some attempt has begun to upload with gp, so
	// that attempts starting together take different blobs first and keep the
	// uplink busy, instead of queueing behind the same one.
	started map[v1.Hash]bool
}

// pusher returns the repository's go-containerregistry Pusher.
func (rs *repoState) pusher() (*remote.Pusher, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.gp == nil {
		gp, err := remote.NewPusher(rs.run.remoteOptions()...)
		if err != nil {
			return nil, err
		}
		rs.gp, rs.started = gp, make(map[v1.Hash]bool)
	}
	return rs.gp, nil
}

// claim returns the next blob no attempt has started on with gp, marking it
// started, or false when every blob has been started.
func (rs *repoState) claim(gp *remote.Pusher) (blob, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.gp != gp {
		return blob{}, false
	}
	for _, b := range rs.run.content.blobs {
		if !rs.started[b.digest] {
			rs.started[b.digest] = true
			return b, true
		}
	}
	return blob{}, false
}

// forget drops what gp believed the repository holds, after the registry lost
// a blob: the next attempt checks every blob again and uploads what is missing.
func (rs *repoState) forget(gp *remote.Pusher) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.gp == gp {
		rs.gp = nil
	}
}

// attempt writes one tag once: the repository's blobs (each once per run), an
// index's child manifests, then the tag's manifest. put is set once the
// manifest PUT has been sent, whatever its answer: from then on the tag may be
// in the registry, and a failure is checked there before it is reported.
func (rs *repoState) attempt(ctx context.Context, tag name.Tag, put *bool) (*remote.Pusher, error) {
	c := rs.run.content
	gp, err := rs.pusher()
	if err != nil {
		return nil, err
	}
	upload := func(b blob) error {
		if err := gp.Upload(ctx, rs.repo, b.layer); err != nil {
			return fmt.Errorf("upload blob %s: %w", b.digest, err)
		}
		return nil
	}
	// First the blobs nobody has started, then all of them: those another
	// attempt is uploading are waited for (the Pusher runs each upload once),
	// those already uploaded cost nothing.
	for b, ok := rs.claim(gp); ok; b, ok = rs.claim(gp) {
		if err := upload(b); err != nil {
			return gp, err
		}
	}
	for _, b := range c.blobs {
		if err := upload(b); err != nil {
			return gp, err
		}
	}
	for _, child := range c.children {
		if err := gp.Push(ctx, rs.repo.Digest(child.digest.String()), child.t); err != nil {
			return gp, fmt.Errorf("push manifest %s: %w", child.digest, err)
		}
	}
	*put = true
	if err := gp.Put(ctx, tag, c.top); err != nil {
		return gp, fmt.Errorf("put manifest: %w", err)
	}
	return gp, nil
}

// verify reads the tag back until it resolves to the pushed digest. ghcr.io
// and S3-backed registries can answer 404 (or the old digest) for a moment
// after a PUT they accepted, so a miss is read again, with growing waits, for
// up to window before it counts; a 404 after our own PUT is never a verdict
// on the repository's name. Other failures to read are returned as they are.
func (r *run) verify(ctx context.Context, tag name.Tag, window time.Duration) error {
	deadline := r.cfg.now().Add(window)
	wait := 50 * time.Millisecond
	for {
		desc, err := r.puller.Head(ctx, tag)
		var miss error
		switch {
		case err == nil && desc.Digest == r.content.digest:
			return nil
		case err == nil:
			miss = fmt.Errorf("%w: %s resolves to %s, pushed %s", errNotVerified, tag, desc.Digest, r.content.digest)
		case isNotFound(err):
			miss = fmt.Errorf("%w: %s was not found after the registry accepted it: %v", errNotVerified, tag, err)
		default:
			return fmt.Errorf("verify tag: %w", err)
		}
		if !r.cfg.now().Add(wait).Before(deadline) {
			return miss
		}
		if err := sleep(ctx, wait); err != nil {
			return miss
		}
		wait = min(wait*2, time.Second)
	}
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// pushTag runs a tag's attempts under the retry policy. It owns slot: the
// slot is given back while the tag waits between attempts and while it reads
// the tag back, and taken again here, on this goroutine, before each attempt.
func (r *run) pushTag(parent context.Context, slot *queue.Slot, rs *repoState, tag name.Tag) Result {
	start := r.cfg.now()
	ctx, cancel := context.WithTimeout(parent, r.cfg.timeout)
	defer cancel()

	host := tag.RegistryStr()
	var (
		attempts int
		lastErr  error
		last     verdict
		put      bool // a manifest PUT for this tag was sent
	)
	err := retry.Do(func() error {
		if err := slot.Acquire(ctx); err != nil {
			return retry.Unrecoverable(err)
		}
		attempts++
		gp, err := rs.attempt(ctx, tag, &put)
		if err == nil {
			slot.Observe(queue.Success)
			r.regs.reached(host)
			// Reading back is not a write: it holds no slot.
			slot.Release()
			if err = r.verify(ctx, tag, r.cfg.verifyWindow); err == nil {
				return nil
			}
		}
		lastErr, last = err, classify(ctx, err)
		r.noteFault(last.fault)
		slot.Observe(last.outcome)
		switch {
		case last.refused:
			last.transient = r.regs.refused(host, r.cfg.connectGrace)
		case last.status != 0:
			r.regs.reached(host)
		}
		r.regs.noteWait(host, last.wait)
		if last.relearnBlobs && gp != nil {
			rs.forget(gp)
		}
		if !last.transient {
			return retry.Unrecoverable(err)
		}
		return err
	},
		retry.Context(ctx),
		retry.Attempts(uint(r.cfg.maxAttempts)),
		retry.LastErrorOnly(true),
		retry.MaxDelay(r.cfg.maxRetryDelay),
		retry.DelayType(func(n uint, _ error, _ *retry.Config) time.Duration {
			return r.backoff(n, host)
		}),
		retry.WithTimer(&releasingTimer{slot: slot, onWait: func(d time.Duration) {
			r.noteWait(d)
			if r.cfg.events.Retry != nil {
				r.cfg.events.Retry(Retry{Tag: tag.String(), Attempt: attempts, Fault: last.fault, Err: lastErr, Wait: d})
			}
		}}),
	)
	slot.Release()

	// A failure after a manifest PUT was sent may hide a success: the
	// registry committed the PUT and the answer was lost (a 500, a reset or
	// a timeout on the way back). The registry, read now, has the last word.
	// A refusal (401, 403, 400, a redirect loop) is no such doubt, and a tag
	// that failed verification was read already.
	lost := last.transient || last.fault == FaultTimeout
	if err != nil && put && lost && last.fault != faultNotVerified && parent.Err() == nil && r.landed(parent, tag) {
		err = nil
	}

	res := Result{Tag: tag, Attempts: attempts, Duration: r.cfg.now().Sub(start)}
	switch {
	case err == nil:
		res.Status, res.Digest = StatusPushed, r.content.digest.String()
	case parent.Err() != nil:
		res.Status = StatusCancelled
		res.Err = fmt.Errorf("cancelled after %d attempt(s): %w", attempts, context.Cause(parent))
	default:
		if lastErr == nil {
			lastErr = err
		}
		if ctx.Err() != nil && last.fault != FaultTimeout {
			last = verdict{fault: FaultTimeout}
			lastErr = fmt.Errorf("%w (timeout %s)", lastErr, r.cfg.timeout)
		}
		res.Status = StatusFailed
		res.Err = explain(last, lastErr, attempts, host, tag.Repository.String())
	}
	if r.cfg.events.TagDone != nil {
		r.cfg.events.TagDone(res)
	}
	return res
}

// landed reports whether tag holds the pushed digest, read with a budget of
// its own: the tag's timeout may be what ended its attempts. A lost answer is
// rare and a read-after-write lag short, so the window is shorter than a
// verification's: every failed tag pays it.
func (r *run) landed(parent context.Context, tag name.Tag) bool {
	window := min(r.cfg.verifyWindow, 3*time.Second)
	ctx, cancel := context.WithTimeout(parent, window+10*time.Second)
	defer cancel()
	return r.verify(ctx, tag, window) == nil
}

// backoff is the wait before attempt n+1: exponential from retry-delay with
// jitter of up to one retry-delay, or the registry's requested wait when that is
// longer. retry-go caps the result at max-retry-delay.
func (r *run) backoff(n uint, host string) time.Duration {
	base := r.cfg.retryDelay
	d := base
	for i := uint(1); i < n && d < r.cfg.maxRetryDelay; i++ {
		d *= 2
	}
	jitter := time.Duration(rand.Int64N(int64(base) + 1))
	if w := r.regs.remaining(host); w > d {
		d = w
	}
	return d + jitter
}

// releasingTimer is retry-go's timer for one tag: it gives the tag's queue
// slot back while the tag waits, so waiting tags do not hold back others.
// retry-go calls After on the tag's own goroutine, and the slot is taken
// again there, at the start of the next attempt: if the wait ends with the
// tag's context, nobody takes a slot the tag would never give back.
type releasingTimer struct {
	slot   *queue.Slot
	onWait func(time.Duration)
}

func (t *releasingTimer) After(d time.Duration) <-chan time.Time {
	t.onWait(d)
	t.slot.Release()
	return time.After(d)
}

// reportProgress reports the blob bytes sent every progress interval until
// stopped. The bytes are counted in the transport (uploadCounter).
func (r *run) reportProgress() (stop func()) {
	if r.cfg.events.Progress == nil || r.cfg.progressEvery <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.cfg.progressEvery)
		defer t.Stop()
		var last Progress
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p := r.uploads.progress()
				if p != last && p.Total > 0 {
					r.cfg.events.Progress(p)
					last = p
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

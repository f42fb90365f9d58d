// Package pusher pushes one image or index to many tags through go-containerregistry.
//
// Each destination repository first gets the image's blobs (and an index's
// child manifests), once, however many tags share it: the blob phase (see
// blobs.go). Each tag then costs one manifest PUT and one read that proves
// the tag resolves to the pushed digest. Every write (a blob upload, a
// manifest PUT) holds a slot of its registry's adaptive limit, from the queue
// package; reads hold none. Each step (a blob, a child manifest, a tag) is
// retried on its own under a policy owned by retry-go, with
// go-containerregistry's own retries turned off so the attempts reported are
// the attempts made.
package pusher

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/avast/retry-go/v4"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tagpush/tagpush/queue"
)

// Status is how a tag ended.
type Status string

const (
	StatusPushed Status = "pushed"
	// StatusUnchanged is a tag that already resolved to the digest: nothing
	// was written for it. It is a success.
	StatusUnchanged Status = "unchanged"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// OK reports whether the tag holds the digest at the end: pushed or unchanged.
func (s Status) OK() bool { return s == StatusPushed || s == StatusUnchanged }

// errExists is a tag that holds another digest while overwrite is off.
var errExists = errors.New("tag exists")

// Result is what became of one tag.
type Result struct {
	Tag      name.Tag
	Status   Status
	Digest   string
	Attempts int
	Duration time.Duration
	Err      error
	// Referrers is how many referrers (signatures, attestations, SBOMs) the
	// tag's repository holds for the image after the run.
	Referrers int
}

// Referrer is an artifact to push with the image: an OCI referrer (its
// manifest names the image, or one of its platform manifests, as subject),
// pushed by digest; or, with Tag set, a cosign-scheme tag (sha256-<hex>.sig)
// copied as that tag.
type Referrer struct {
	Taggable remote.Taggable
	Tag      string
}

// Stats describes a whole run.
type Stats struct {
	// Faults counts failed attempts by kind.
	Faults map[Fault]int
	// Retries is how many attempts of tags were followed by another.
	Retries int
	// BlobRetries is how many attempts of blob and child-manifest writes
	// (shared by the tags of a repository) were followed by another.
	BlobRetries int
	// BackoffWait is the total time tags spent waiting between attempts.
	BackoffWait time.Duration
	// PeakConcurrency is, per registry, the most writes that were in flight at once.
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
//
// refs go to every destination repository once, after its blobs, however
// many tags: on a registry without the referrers API, go-containerregistry
// adds each to the subject's fallback tag (sha256-<hex>), merging with what is
// there. A referrer that cannot be pushed fails the tags of its repository.
func (p *Pusher) Push(ctx context.Context, img remote.Taggable, tags []name.Tag, refs ...Referrer) (*Report, error) {
	c, err := contentOf(img)
	if err != nil {
		return nil, err
	}
	c.referrers = refs
	r := p.newRun()
	r.content = c

	// Blob phases run for the tags of a repository, not for one tag: they
	// end when the run does.
	var cancelPhases context.CancelFunc
	r.phaseCtx, cancelPhases = context.WithCancel(ctx)
	defer cancelPhases()

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
			rs = &repoState{repo: tag.Repository, run: r, lim: lim}
			repos[tag.Repository] = rs
		}
		jobs[i] = queue.Job[Result]{Limiter: lim, Do: func(ctx context.Context, s *queue.Slot) (Result, error) {
			return r.pushTag(ctx, s, rs, tag), nil
		}}
	}

	stopProgress := r.reportProgress()
	results := queue.Run(ctx, jobs)
	cancelPhases()
	r.phases.Wait()
	stopProgress()

	rep := &Report{Digest: c.digest.String(), Results: make([]Result, len(tags))}
	for i, res := range results {
		if !res.Started {
			res.Value = Result{Tag: tags[i], Status: StatusCancelled, Err: &TagError{Summary: "cancelled before it started", Cause: res.Err}}
			if p.cfg.events.TagDone != nil {
				p.cfg.events.TagDone(res.Value)
			}
		}
		rep.Results[i] = res.Value
	}
	rep.Stats = r.stats(limiters)
	return rep, nil
}

// newRun is the state of one call, with its HTTP layers.
func (p *Pusher) newRun() *run {
	r := &run{cfg: p.cfg, regs: newRegistries(p.cfg.now, p.cfg.maxRetryDelay), faults: make(map[Fault]int)}
	r.uploads = &uploadCounter{inner: &stallWatchdog{inner: p.cfg.transport, idle: p.cfg.stallTimeout}}
	r.transport = &redirectLimitTransport{inner: &pauseTransport{regs: r.regs, inner: &retryAfterTransport{inner: r.uploads, regs: r.regs}}}
	return r
}

// run is the state of one Push call.
type run struct {
	cfg       config
	content   *content
	transport http.RoundTripper
	uploads   *uploadCounter
	regs      *registries

	// phaseCtx bounds the blob phases, which serve several tags; phases
	// counts those running.
	phaseCtx context.Context
	phases   sync.WaitGroup

	mu          sync.Mutex
	faults      map[Fault]int
	retries     int
	blobRetries int
	waited      time.Duration
	chunked     map[string]bool // registries that refused a monolithic upload
}

func (r *run) newLimiter(reg string) *queue.Limiter {
	var alg queue.Algorithm = queue.Fixed(r.cfg.concurrency)
	if r.cfg.adaptive {
		// The ceiling was validated by WithConcurrency.
		a, _ := queue.NewAIMD(r.cfg.concurrency, r.cfg.cooldown, r.cfg.probeAfter)
		alg = a
	}
	opts := []queue.LimiterOption{queue.WithClock(r.cfg.now)}
	if f := r.cfg.events.LimitChange; f != nil {
		opts = append(opts, queue.OnChange(func(c queue.Change) {
			f(LimitChange{Registry: c.Name, Old: c.Old, New: c.New, Overload: c.Cause == queue.Overload})
		}))
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

func (r *run) noteWait(d time.Duration, blob bool) {
	r.mu.Lock()
	if blob {
		r.blobRetries++
	} else {
		r.retries++
	}
	r.waited += d
	r.mu.Unlock()
}

func (r *run) chunkedOnly(host string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.chunked[host]
}

func (r *run) noteChunkedOnly(host string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.chunked == nil {
		r.chunked = make(map[string]bool)
	}
	r.chunked[host] = true
}

func (r *run) stats(limiters map[string]*queue.Limiter) Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{
		Faults:          make(map[Fault]int, len(r.faults)),
		Retries:         r.retries,
		BlobRetries:     r.blobRetries,
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

// verify reads the tag back until it resolves to the pushed digest. ghcr.io
// and S3-backed registries can answer 404 (or the old digest) for a moment
// after a PUT they accepted, so a miss is read again, with growing waits, for
// up to window before it counts; a 404 after our own PUT is never a verdict
// on the repository's name. Other failures to read are returned as they are.
func (r *run) verify(ctx context.Context, rs *repoState, tag name.Tag, window time.Duration) error {
	deadline := r.cfg.now().Add(window)
	wait := 50 * time.Millisecond
	for {
		got, err := rs.headManifest(ctx, tag.TagStr())
		var miss error
		switch {
		case err == nil && got == r.content.digest:
			return nil
		case err == nil:
			miss = fmt.Errorf("%w: %s resolves to %s, pushed %s", errNotVerified, tag, got, r.content.digest)
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

// do runs f under the retry policy until it succeeds, fails permanently or
// runs out of attempts, and says how many attempts it made and the verdict on
// the last failure. what names the work in retry events; blob marks work of a
// blob phase. Each attempt takes the write slots it needs and gives them back
// before do waits: nothing is held between attempts.
func (r *run) do(ctx context.Context, host, what string, lim *queue.Limiter, blob bool, f func(context.Context) error) (int, verdict, error) {
	var (
		attempts int
		lastErr  error
		last     verdict
		relieved bool // the limit came down during the last attempt
	)
	err := retry.Do(func() error {
		attempts++
		limitAtStart := lim.Limit()
		err := f(ctx)
		if err == nil {
			lim.Observe(queue.Success)
			r.regs.reached(host)
			return nil
		}
		var pf *phaseFailed
		if errors.As(err, &pf) {
			// The blob phase spent its own attempts: no second layer of retries.
			lastErr, last = err, pf.last
			return retry.Unrecoverable(err)
		}
		lastErr, last = err, classify(ctx, err)
		r.noteFault(last.fault)
		lim.Observe(last.outcome)
		relieved = last.outcome == queue.Overload && lim.Limit() < limitAtStart
		switch {
		case last.refused:
			last.transient = r.regs.refused(host, r.cfg.connectGrace)
		case last.status != 0:
			r.regs.reached(host)
		}
		r.regs.noteWait(host, last.wait)
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
			return r.backoff(n, host, relieved)
		}),
		retry.WithTimer(&notingTimer{onWait: func(d time.Duration) {
			r.noteWait(d, blob)
			if r.cfg.events.Retry != nil {
				r.cfg.events.Retry(Retry{Tag: what, Attempt: attempts, Fault: last.fault, Err: lastErr, Wait: d})
			}
		}}),
	)
	if err != nil && lastErr == nil {
		lastErr = err
	}
	if err != nil && ctx.Err() != nil && last.fault != FaultTimeout && last.fault != faultCancelled {
		last = verdict{fault: FaultTimeout}
	}
	if err != nil {
		return attempts, last, lastErr
	}
	return attempts, last, nil
}

// refusesExisting is a status with which registries refuse to overwrite a tag.
func refusesExisting(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusConflict, http.StatusPreconditionFailed:
		return true
	}
	return false
}

// phaseFailed is a tag's attempt that found its repository's blob phase
// failed: the tag fails with the phase's error and attempts.
type phaseFailed struct {
	ph   *phase
	last verdict
}

func (e *phaseFailed) Error() string { return e.ph.err.Error() }
func (e *phaseFailed) Unwrap() error { return e.ph.err }

// pushTag writes one tag once its repository's blobs are in: a manifest PUT
// under a write slot, then a read that proves it. The job's queue slot is
// given back at once; each write takes its own.
func (r *run) pushTag(parent context.Context, slot *queue.Slot, rs *repoState, tag name.Tag) Result {
	slot.Release()
	start := r.cfg.now()
	ctx, cancel := context.WithTimeout(parent, r.cfg.timeout)
	defer cancel()

	host := tag.RegistryStr()
	var (
		put       bool // a manifest PUT for this tag was sent
		failedPh  *phase
		looked    bool // the tag was looked up
		unchanged bool // it already held the digest, or a refused PUT found it there
	)
	attempts, last, err := r.do(ctx, host, tag.String(), rs.lim, false, func(ctx context.Context) error {
		// A read first, outside the write limit and before the blob phase:
		// a tag already at the digest costs nothing more, and a repository
		// whose tags all are never has its blobs checked. Found missing,
		// the tag is not looked up again.
		if !looked {
			got, err := rs.headManifest(ctx, tag.TagStr())
			switch {
			case err == nil && got == r.content.digest:
				unchanged = true
				return nil
			case err == nil && !r.cfg.overwrite:
				return retry.Unrecoverable(fmt.Errorf("%w at %s; overwrite is false, so it was left as it is", errExists, got))
			case err != nil && !isNotFound(err):
				return fmt.Errorf("look up tag: %w", err)
			}
			looked = true
		}
		ph, err := rs.ready(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			failedPh = ph
			return &phaseFailed{ph: ph, last: ph.last}
		}
		put = true
		if err := rs.write(ctx, func() error { return rs.putManifest(ctx, tag.TagStr(), r.content.top) }); err != nil {
			v := classify(ctx, err)
			if v.relearnBlobs {
				rs.invalidate(ph)
			}
			// Immutable-tag registries refuse to write a tag that exists
			// (ECR 400 TAG_INVALID, Harbor 409/412, others 403): if it holds
			// our digest, nothing needed writing.
			if !v.transient && refusesExisting(v.status) {
				if got, herr := rs.headManifest(ctx, tag.TagStr()); herr == nil && got == r.content.digest {
					unchanged = true
					return nil
				}
			}
			return fmt.Errorf("put manifest: %w", err)
		}
		return r.verify(ctx, rs, tag, r.cfg.verifyWindow)
	})
	if failedPh != nil && err != nil && errors.As(err, new(*phaseFailed)) {
		attempts = failedPh.attempts
	}

	// A failure after a manifest PUT was sent may hide a success: the
	// registry committed the PUT and the answer was lost (a 500, a reset or
	// a timeout on the way back). The registry, read now, has the last word.
	// A refusal (401, 403, 400, a redirect loop) is no such doubt, and a tag
	// that failed verification was read already.
	lost := last.transient || last.fault == FaultTimeout
	if err != nil && put && lost && last.fault != faultNotVerified && parent.Err() == nil && r.landed(parent, rs, tag) {
		err = nil
	}

	// The image's signatures and attestations follow it into the repository;
	// a tag is reported once they have.
	var refs int
	if err == nil && len(r.content.referrers) > 0 {
		if refs, err = rs.referrersFollowed(ctx); err != nil {
			err = &TagError{Summary: "the tag holds the image, but its signatures, attestations or SBOMs did not follow: " + Summary(err), Cause: err}
			last = verdict{fault: FaultOther}
		}
	}

	res := Result{Tag: tag, Attempts: attempts, Duration: r.cfg.now().Sub(start), Referrers: refs}
	switch {
	case err == nil && unchanged:
		res.Status, res.Digest = StatusUnchanged, r.content.digest.String()
	case err == nil:
		res.Status, res.Digest = StatusPushed, r.content.digest.String()
	case errors.Is(err, errExists):
		res.Status, res.Err = StatusFailed, &TagError{Summary: strings.TrimPrefix(err.Error(), "tag "), Cause: err}
	case parent.Err() != nil:
		res.Status = StatusCancelled
		res.Err = &TagError{Summary: fmt.Sprintf("cancelled after %d attempt(s)", attempts), Cause: context.Cause(parent)}
	default:
		if ctx.Err() != nil && last.fault == FaultTimeout {
			err = fmt.Errorf("%w (timeout %s)", err, r.cfg.timeout)
			last.timeout = r.cfg.timeout
		}
		res.Status = StatusFailed
		res.Err = explain(last, err, attempts, host, tag.Repository.String())
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
func (r *run) landed(parent context.Context, rs *repoState, tag name.Tag) bool {
	window := min(r.cfg.verifyWindow, 3*time.Second)
	ctx, cancel := context.WithTimeout(parent, window+10*time.Second)
	defer cancel()
	return r.verify(ctx, rs, tag, window) == nil
}

// backoff is the wait before attempt n+1: exponential from retry-delay with
// jitter of up to one retry-delay, or the registry's requested wait when that is
// longer. retry-go caps the result at max-retry-delay.
//
// relieved marks an overload after which the registry's limit has already come
// down below where it stood when the attempt started: the cause is dealt with,
// and taking a write slot again waits for room, so the retry comes after a
// quarter of retry-delay. Only the attempts in flight when the limit drops get
// this; the next failure backs off as usual, so an outage cannot spend the
// attempts in its first seconds.
func (r *run) backoff(n uint, host string, relieved bool) time.Duration {
	base := r.cfg.retryDelay
	if relieved {
		base /= 4
	}
	d := base
	for i := uint(1); i < n && d < r.cfg.maxRetryDelay && !relieved; i++ {
		d *= 2
	}
	jitter := time.Duration(rand.Int64N(int64(base) + 1))
	if w := r.regs.remaining(host); w > d {
		d = w
	}
	return d + jitter
}

// notingTimer is retry-go's timer: it reports each wait (the delay after
// retry-go's cap) before it starts.
type notingTimer struct {
	onWait func(time.Duration)
}

func (t *notingTimer) After(d time.Duration) <-chan time.Time {
	t.onWait(d)
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

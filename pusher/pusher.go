// Package pusher pushes images to many tags over the registry client
// (package registry), which holds every request and HTTP layer.
//
// Each tag is looked up first (tag.go): one already at the digest costs
// nothing more. Each destination repository then gets the image's blobs (and
// an index's child manifests), once, however many tags share it: the blob
// phase (blobs.go), where a mount from another repository is an offer with a
// plain upload behind it. Each tag then costs one manifest PUT and one read
// of the tag that proves it resolves to the pushed digest; nothing else
// stands for that read. A repository's new tags are written before the ones
// that move from another digest, and with atomic the moving ones wait for the
// whole run (atomic.go). Every write holds a slot of its registry's adaptive
// limit (package queue) around the request and nothing else; reads take the
// registry's read budget inside the client, and their failures are retried
// as reads, never paid for with a write (retry.go). Each step (a blob, a
// child manifest, a tag) is retried on its own under a policy owned by
// retry-go, with go-containerregistry's own retries turned off so the
// attempts reported are the attempts made. The dry run walks a read-only
// view of each repository (plan.go).
package pusher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/queue"
	"github.com/tagpush/tagpush/registry"
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

	// A dry run's plan (Pusher.Plan): what a push would do with the tag.
	StatusWouldPush      Status = "would push"      // the tag is missing
	StatusWouldOverwrite Status = "would overwrite" // the tag holds another digest, and overwrite is on
	StatusWouldFail      Status = "would fail"      // the push would fail, for the reason in Err
)

// OK reports whether the tag holds the digest at the end (pushed or
// unchanged), or in a plan would hold it.
func (s Status) OK() bool {
	switch s {
	case StatusPushed, StatusUnchanged, StatusWouldPush, StatusWouldOverwrite:
		return true
	}
	return false
}

// Failed reports whether the tag failed, or in a plan would fail.
func (s Status) Failed() bool { return s == StatusFailed || s == StatusWouldFail }

// errExists is a tag that holds another digest while overwrite is off.
var errExists = errors.New("overwrite is false")

// Result is what became of one tag.
type Result struct {
	Tag name.Tag
	// Image names the image the tag was to get (Image.Name).
	Image  string
	Status Status
	Digest string
	// Previous is the digest the tag held before the run, when it held
	// another and the run read it (a tag overwritten, or refused).
	Previous string
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
	// Faults counts failed write attempts by kind.
	Faults map[Fault]int
	// ReadFaults counts failed reads (look-ups, verification, blob checks) by kind.
	ReadFaults map[Fault]int
	// Retries is how many write attempts of tags were followed by another.
	Retries int
	// BlobRetries is how many attempts of blob and child-manifest writes
	// (shared by the tags of a repository) were followed by another.
	BlobRetries int
	// ReadRetries is how many reads were followed by another.
	ReadRetries int
	// BackoffWait is the total time tags spent waiting between attempts.
	BackoffWait time.Duration
	// PeakConcurrency is, per registry, the most writes that were in flight at once.
	PeakConcurrency map[string]int
	// FinalLimit is, per registry, the concurrency limit at the end of the run.
	FinalLimit map[string]int
	// Wire is, per registry, what the run's blobs cost there.
	Wire map[string]Wire
}

// Wire is what went over the wire for blobs: how many were uploaded (and
// their bytes), mounted from another repository of the registry, or found
// there already (reused). A blob several tags or images share counts once
// per repository that needed it; per image, under the image that got it there.
type Wire struct {
	Uploaded      int   `json:"blobs_uploaded"`
	UploadedBytes int64 `json:"bytes_uploaded"`
	Mounted       int   `json:"blobs_mounted"`
	Reused        int   `json:"blobs_reused"`
}

func (w *Wire) add(how blobHow, size int64) {
	switch how {
	case blobUploaded:
		w.Uploaded++
		w.UploadedBytes += size
	case blobMounted:
		w.Mounted++
	case blobReused:
		w.Reused++
	}
}

// blobHow is how a blob came to be in a repository.
type blobHow int

const (
	blobUploaded blobHow = iota
	blobMounted
	blobReused
)

// Report is the outcome of a run: one result per tag, in the order of the
// images and of their tags.
type Report struct {
	// DryRun marks a plan (Pusher.Plan): nothing was written.
	DryRun bool
	// Digest is the first image's digest.
	Digest string
	// Images says what became of each image, in the order given.
	Images  []ImageResult
	Results []Result
	Stats   Stats
	// Uploads is, in a plan, what each destination repository lacks of
	// each image that would be written there.
	Uploads []Upload
}

// Upload is what a repository lacks of an image, as a plan finds it.
type Upload struct {
	Repository name.Repository
	Image      string
	// Blobs is how many blobs the image has; Missing how many of them the
	// repository lacks (to upload, or mount from another repository of the
	// registry), and MissingBytes their size.
	Blobs, Missing int
	MissingBytes   int64
	// Err is why the blobs could not be checked.
	Err error
}

// Image is one image of a run and where it goes.
type Image struct {
	// Name names the image in the results: its source, as a person wrote it.
	Name string
	// Open returns the image (a v1.Image or v1.ImageIndex) and what refers
	// to it. PushAll calls it once, on a goroutine of its own, so that one
	// image's source opens (a Docker engine's export) while others push.
	Open func(context.Context) (remote.Taggable, []Referrer, error)
	// OpenHeld, when set, is called instead of Open, with the layers the
	// destination holds already (found through ID's look-up): a Docker
	// engine image compresses only the others.
	OpenHeld func(context.Context, Held) (remote.Taggable, []Referrer, error)
	Tags     []name.Tag
	// ID, when the source knows it without opening (a Docker engine
	// image's ID), is the digest of the image's config or manifest. When
	// every tag already holds a manifest of that digest or with that config,
	// the tags are unchanged and the image is never opened: an unchanged
	// re-run of a Docker engine image costs no export.
	ID string
}

// ImageResult is what became of one image.
type ImageResult struct {
	Name string
	// Digest is the image's digest, empty when it could not be read.
	Digest string
	// Err is why the image could not be opened or read; its tags failed.
	Err error
	// Wire is what the image's blobs cost, over every registry.
	Wire Wire
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
	return p.push(ctx, []opened{{tags: tags, open: func(context.Context, Held) (*content, error) { return c, nil }}}, false), nil
}

// PushAll pushes every image to its tags in one run: one write limit and one
// read budget per registry for all of them, each blob checked and uploaded
// once per repository whichever images share it, and a blob one repository
// of a registry has mounted into the others. Each image opens on a goroutine
// of its own while the others push; one that cannot be opened or read fails
// its tags, and the others go on.
func (p *Pusher) PushAll(ctx context.Context, images []Image) *Report {
	return p.push(ctx, openers(images), false)
}

// Plan is a dry run of PushAll: it opens each image and reads, under the
// same read budgets, what each tag holds now and which blobs each
// repository lacks, and says per tag what a push would do: unchanged, would
// push, would overwrite, or would fail and why (overwrite off, credentials,
// reachability, the source). It writes nothing: no upload session, no blob,
// no manifest. The destination's sign-in asks for push access, as a push's
// does, so a token server that refuses it shows here; a registry that grants
// a token and refuses the write itself only says so when written to.
func (p *Pusher) Plan(ctx context.Context, images []Image) *Report {
	return p.push(ctx, openers(images), true)
}

// openers turns the caller's images into a run's.
func openers(images []Image) []opened {
	srcs := make([]opened, len(images))
	for i, img := range images {
		srcs[i] = opened{name: img.Name, tags: img.Tags, id: img.ID, open: func(ctx context.Context, held Held) (*content, error) {
			var t remote.Taggable
			var refs []Referrer
			var err error
			if img.OpenHeld != nil {
				t, refs, err = img.OpenHeld(ctx, held)
			} else {
				t, refs, err = img.Open(ctx)
			}
			if err != nil {
				return nil, err
			}
			c, err := contentOf(t)
			if err != nil {
				return nil, err
			}
			c.referrers = refs
			return c, nil
		}}
	}
	return srcs
}

// opened is an image of a run as the run opens it.
type opened struct {
	name string
	tags []name.Tag
	id   string
	open func(context.Context, Held) (*content, error)
}

// push runs images to their tags; with plan, only their plan.
func (p *Pusher) push(ctx context.Context, images []opened, plan bool) *Report {
	r := p.newRun(ctx)
	r.planning = plan
	defer r.cancelPhases()

	start := r.cfg.now()
	// Every destination repository is known before any image opens: a
	// repository's client asks for pull access to its siblings on the
	// registry, which mounting a blob from one of them needs.
	for _, img := range images {
		for _, tag := range img.tags {
			r.repo(tag.Repository)
		}
	}
	if !plan {
		r.barriers(images)
	}
	stopProgress := r.reportProgress()
	rep := &Report{DryRun: plan, Images: make([]ImageResult, len(images))}
	runs := make([][]*tagRun, len(images))
	var wg sync.WaitGroup
	for i, img := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.Images[i], runs[i] = r.pushImage(ctx, img, start)
		}()
	}
	wg.Wait()
	r.cancelPhases()
	r.phases.Wait()
	stopProgress()

	for _, ts := range runs {
		for _, t := range ts {
			rep.Results = append(rep.Results, *t.result)
		}
	}
	if len(rep.Images) > 0 {
		rep.Digest = rep.Images[0].Digest
	}
	rep.Uploads = r.uploadPlans
	rep.Stats = r.stats()
	r.mu.Lock()
	for i := range rep.Images {
		if w := r.imageWire[rep.Images[i].Name]; w != nil {
			rep.Images[i].Wire = *w
		}
	}
	r.mu.Unlock()
	return rep
}

// pushImage opens one image and pushes it to its tags, a destination (its
// tags in one repository) at a time, all at once.
func (r *run) pushImage(ctx context.Context, img opened, start time.Time) (ImageResult, []*tagRun) {
	open := func(ctx context.Context) (*content, error) { return img.open(ctx, nil) }
	if img.id != "" {
		res, runs, look, ok := r.heldAlready(ctx, img, start)
		switch {
		case ok:
			return res, runs
		case look != nil && look.whole != nil:
			open = func(context.Context) (*content, error) { return contentOf(look.whole) }
		case look != nil:
			open = func(ctx context.Context) (*content, error) { return r.export(ctx, img, look.cache) }
		}
	}
	res := ImageResult{Name: img.name}
	// Opening (a Docker engine's export) counts toward the tags' time
	// limit: the tags cannot end later than it. The context lives as long
	// as the image's tags: a registry: source reads its blobs with it.
	octx, cancel := context.WithDeadline(ctx, start.Add(r.cfg.timeout))
	defer cancel()
	c, err := open(octx)
	if err != nil {
		if !r.planning {
			r.passBarriers(img.tags)
		}
		res.Err = err
		runs := make([]*tagRun, len(img.tags))
		for i, tag := range img.tags {
			runs[i] = &tagRun{tag: tag, start: start}
			r.sourceFailed(runs[i], img.name, err)
		}
		return res, runs
	}
	res.Digest = c.digest.String()
	c.name = img.name
	dests := make(map[name.Repository]*destination)
	var order []*destination
	runs := make([]*tagRun, len(img.tags))
	for i, tag := range img.tags {
		d, ok := dests[tag.Repository]
		if !ok {
			dctx, cancel := context.WithDeadline(ctx, start.Add(r.cfg.timeout))
			d = &destination{rs: r.repo(tag.Repository), c: c, image: img.name, ctx: dctx, cancel: cancel}
			dests[tag.Repository] = d
			order = append(order, d)
		}
		t := &tagRun{tag: tag, d: d, start: start}
		d.tags = append(d.tags, t)
		runs[i] = t
	}
	var wg sync.WaitGroup
	for _, d := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.planning {
				r.planDestination(d, d.rs.rc)
			} else {
				r.pushDestination(d)
			}
		}()
	}
	wg.Wait()
	return res, runs
}

// export opens an engine image with the layers the destination holds and
// those earlier exports of the run compressed, one export at a time, and
// keeps the layers it compressed for the later ones. The wait is for the
// export before, which its stall watchdog and the tags' time limit bound.
func (r *run) export(ctx context.Context, img opened, cache *layerCache) (*content, error) {
	select {
	case r.exports <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-r.exports }()
	r.mu.Lock()
	cache.mu.Lock()
	for d, l := range r.compressed {
		if _, ok := cache.layers[d]; !ok {
			cache.layers[d] = l
		}
	}
	cache.mu.Unlock()
	r.mu.Unlock()
	c, err := img.open(ctx, cache)
	if err != nil {
		return nil, err
	}
	if im, ok := c.top.(v1.Image); ok {
		if layers, err := im.Layers(); err == nil {
			r.mu.Lock()
			for _, l := range layers {
				if d, err := l.DiffID(); err == nil {
					if _, ok := r.compressed[d]; !ok {
						r.compressed[d] = l
					}
				}
			}
			r.mu.Unlock()
		}
	}
	return c, nil
}

// repo returns the run's state of a destination repository, made on first use.
func (r *run) repo(repo name.Repository) *repoState {
	reg := r.destination(repo.RegistryStr())
	r.mu.Lock()
	defer r.mu.Unlock()
	rs, ok := r.repos[repo]
	if !ok {
		rs = newRepoState(r, repo, reg)
		r.repos[repo] = rs
	}
	return rs
}

// newRun is the state of one call, with its registry client.
func (p *Pusher) newRun(ctx context.Context) *run {
	r := &run{
		ctx:        ctx,
		cfg:        p.cfg,
		dests:      make(map[string]*regState),
		repos:      make(map[name.Repository]*repoState),
		faults:     make(map[Fault]int),
		readFaults: make(map[Fault]int),
		exports:    make(chan struct{}, 1),
		compressed: make(map[v1.Hash]v1.Layer),
	}
	// Blob phases run for the tags of a repository, not for one tag: they
	// end when the run does.
	r.phaseCtx, r.cancelPhases = context.WithCancel(ctx)
	r.client = registry.New(registry.Options{
		Transport:    p.cfg.transport,
		Keychain:     p.cfg.keychain,
		UserAgent:    p.cfg.userAgent,
		ReadBudget:   p.cfg.readBudget,
		StallTimeout: p.cfg.stallTimeout,
		MaxWait:      p.cfg.maxRetryDelay,
		LookupIP:     p.cfg.lookupIP,
		Now:          p.cfg.now,
	})
	return r
}

// run is the state of one Push call.
type run struct {
	ctx    context.Context // the caller's: when it ends, unfinished tags are cancelled
	cfg    config
	client *registry.Client

	// phaseCtx bounds the shared phases (blobs, referrers), which serve
	// several tags; phases counts those running.
	phaseCtx     context.Context
	cancelPhases context.CancelFunc
	phases       sync.WaitGroup

	// fresh and moved are the run's barriers, and failed says a tag of the
	// run failed: atomic runs move floating tags by them (atomic.go).
	fresh, moved sync.WaitGroup
	failed       atomic.Bool

	mu          sync.Mutex
	dests       map[string]*regState // the destination registries, by host
	wire        map[string]*Wire     // by registry
	imageWire   map[string]*Wire     // by image name
	repos       map[name.Repository]*repoState
	faults      map[Fault]int
	readFaults  map[Fault]int
	retries     int
	blobRetries int
	readRetries int
	waited      time.Duration
	chunked     map[string]bool // registries that refused a monolithic upload

	// planning is a dry run: destinations are read, never written.
	planning    bool
	uploadPlans []Upload

	// exports lets one Docker engine image export at a time, and
	// compressed holds, by diff ID, the layers those exports compressed:
	// a later image of the run on the same base reuses them rather than
	// compress them again (on 2 cores, four services on one base would
	// compress it four times at once).
	exports    chan struct{}
	compressed map[v1.Hash]v1.Layer
}

// destination returns the run's state of a destination registry, made on
// first use with its write limit.
func (r *run) destination(host string) *regState {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reg, ok := r.dests[host]; ok {
		return reg
	}
	var alg queue.Algorithm = queue.Fixed(r.cfg.concurrency)
	if r.cfg.adaptive {
		// The ceiling was validated by WithConcurrency.
		a, _ := queue.NewAIMD(r.cfg.concurrency, r.cfg.probeAfter)
		a.StartAt(StartConcurrency)
		alg = a
	}
	opts := []queue.LimiterOption{queue.WithClock(r.cfg.now)}
	if f := r.cfg.events.LimitChange; f != nil {
		opts = append(opts, queue.OnChange(func(c queue.Change) {
			f(LimitChange{Registry: c.Name, Old: c.Old, New: c.New, Overload: c.Cause == queue.Overload, SlowStart: c.SlowStart})
		}))
	}
	reg := &regState{host: host, now: r.cfg.now, homes: make(map[v1.Hash]*blobHome),
		writes: queue.NewLimiter(host, alg, opts...)}
	r.dests[host] = reg
	return reg
}

// remoteOptions configures go-containerregistry with its retries off: retry-go
// owns the policy, and two layers retrying the same failure would multiply
// attempts without anyone seeing them.
func (r *run) remoteOptions() []remote.Option {
	return []remote.Option{
		remote.WithTransport(r.client.Transport()),
		remote.WithAuthFromKeychain(r.cfg.keychain),
		remote.WithUserAgent(r.cfg.userAgent),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
	}
}

// noteWire counts how one blob came to be in a repository of host.
func (r *run) noteWire(host, image string, how blobHow, size int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wireOf(&r.wire, host).add(how, size)
	wireOf(&r.imageWire, image).add(how, size)
}

func wireOf(m *map[string]*Wire, key string) *Wire {
	if *m == nil {
		*m = make(map[string]*Wire)
	}
	w := (*m)[key]
	if w == nil {
		w = &Wire{}
		(*m)[key] = w
	}
	return w
}

func (r *run) noteFault(f Fault, read bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if read {
		r.readFaults[f]++
	} else {
		r.faults[f]++
	}
}

func (r *run) noteWait(d time.Duration, blob bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if blob {
		r.blobRetries++
	} else {
		r.retries++
	}
	r.waited += d
}

func (r *run) noteReadRetry(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readRetries++
	r.waited += d
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

func (r *run) stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{
		Faults:          make(map[Fault]int, len(r.faults)),
		ReadFaults:      make(map[Fault]int, len(r.readFaults)),
		Retries:         r.retries,
		BlobRetries:     r.blobRetries,
		ReadRetries:     r.readRetries,
		BackoffWait:     r.waited,
		PeakConcurrency: make(map[string]int),
		FinalLimit:      make(map[string]int),
		Wire:            make(map[string]Wire),
	}
	for host, w := range r.wire {
		s.Wire[host] = *w
	}
	for f, n := range r.faults {
		if f != faultCancelled {
			s.Faults[f] = n
		}
	}
	for f, n := range r.readFaults {
		if f != faultCancelled {
			s.ReadFaults[f] = n
		}
	}
	for host, reg := range r.dests {
		s.PeakConcurrency[host] = reg.writes.Peak()
		s.FinalLimit[host] = reg.writes.Limit()
	}
	return s
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
				sent, total := r.client.Uploaded()
				p := Progress{Complete: sent, Total: total}
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

// referrersFollowed pushes the image's referrers to the repository, once for
// all its tags, and returns how many the repository holds. It waits with ctx;
// the push goes on for the other tags if ctx ends.
func (rs *repoState) referrersFollowed(ctx context.Context, c *content) (int, error) {
	if _, err := join(rs, ctx, rs.refs, c, func(ctx context.Context) (int, verdict, error) { return rs.pushReferrers(ctx, c) }); err != nil {
		return 0, err
	}
	return len(c.referrers), nil
}

// pushReferrers pushes each referrer with go-containerregistry's Pusher: its
// blobs, its manifest by digest (or the cosign tag), and, for a manifest with
// a subject on a registry without the referrers API, the subject's fallback
// tag, which it reads, merges and writes back. One at a time: two updates of
// the same fallback tag at once would lose one. A referrer already in the
// repository costs a HEAD.
func (rs *repoState) pushReferrers(ctx context.Context, c *content) (int, verdict, error) {
	for _, ref := range c.referrers {
		dg, ok := ref.Taggable.(interface{ Digest() (v1.Hash, error) })
		if !ok {
			return 0, verdict{}, fmt.Errorf("referrer %T has no digest", ref.Taggable)
		}
		d, err := dg.Digest()
		if err != nil {
			return 0, verdict{}, fmt.Errorf("referrer digest: %w", err)
		}
		var dst name.Reference = rs.repo.Digest(d.String())
		what := "referrer " + d.String()
		if ref.Tag != "" {
			dst, what = rs.repo.Tag(ref.Tag), "referrer tag "+ref.Tag
		}
		a, v, err := rs.run.writes(ctx, rs.reg, rs.repo.String()+" "+what, true, func(ctx context.Context, _ int) error {
			gp, err := rs.pusher()
			if err != nil {
				return err
			}
			return rs.run.underSlot(ctx, rs.reg, func() error {
				if err := gp.Push(ctx, dst, ref.Taggable); err != nil {
					return fmt.Errorf("push %s: %w", what, err)
				}
				return nil
			})
		})
		if err != nil {
			return a, v, err
		}
	}
	return 0, verdict{}, nil
}

package pusher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/queue"
)

// A tag goes through four steps, each its own function:
//
//  1. lookUp: a read of what the tag holds now (or one read of the
//     repository's tag list for all of its tags). A tag at the digest is done
//     (unchanged) and costs nothing more.
//  2. put: once the repository holds the image's blobs, the manifest PUT
//     under a write slot, retried on its own.
//  3. verify: a read that proves the tag resolves to the digest, once the
//     repository's writes have settled. A tag still missing (or at another
//     digest) after the verification window leads to one more PUT, at most.
//  4. landed: after a failed PUT whose answer may have been lost, a read has
//     the last word before the tag is reported.
//
// Reads never hold a write slot and their failures are retried as reads.

// destination is the tags of one image in one repository: they are looked
// up together, share the image's blob phase, and start together, so they
// share one deadline.
type destination struct {
	rs    *repoState
	c     *content
	image string // the image's name, for the results
	tags  []*tagRun
	// ctx ends at the tags' deadline (the timeout input) or with the run.
	ctx    context.Context
	cancel context.CancelFunc
	// writing is how many tags needed a write.
	writing int

	mu   sync.Mutex
	list *listing // the tag list read back after the writes
}

// listing is one read of a repository's tag list, taken after the writes of
// its tags: seq orders it among the PUT answers (run.seq).
type listing struct {
	done chan struct{}
	seq  uint64
	tags map[string]bool
	err  error
}

// listed returns the tag list read back after the destination's writes,
// reading it when no one has: the first tag to be verified reads it, with
// the destination's context, for all. Nil when ctx ends first.
func (r *run) listed(ctx context.Context, d *destination) *listing {
	d.mu.Lock()
	l := d.list
	if l == nil {
		l = &listing{done: make(chan struct{}), seq: r.seq.Add(1)}
		d.list = l
		d.mu.Unlock()
		_, _, l.err = r.reads(d.ctx, d.rs.reg, "list the tags of "+d.rs.repo.String(), func(ctx context.Context) error {
			var err error
			l.tags, err = d.rs.listTags(ctx)
			return err
		})
		close(l.done)
		return l
	}
	d.mu.Unlock()
	select {
	case <-l.done:
		return l
	case <-ctx.Done():
		return nil
	}
}

// tagRun is one tag's share of a run.
type tagRun struct {
	tag   name.Tag
	d     *destination
	start time.Time

	before    v1.Hash // what the look-up found at the tag; zero when missing or unknown
	stored    v1.Hash // what the registry said the last accepted PUT stored; zero when it did not say
	putSeq    uint64  // when that PUT was answered, in run.seq
	attempts  int     // write attempts for the tag (or those of the blob step that failed it)
	last      verdict // the last failed write attempt's verdict
	sent      bool    // a manifest PUT for the tag was sent
	unchanged bool    // the tag held the digest already
	result    *Result // set when the tag has ended
}

// previous is the digest the tag held before the run when it held another,
// else "".
func (t *tagRun) previous() string {
	if t.before == (v1.Hash{}) || t.before == t.d.c.digest {
		return ""
	}
	return t.before.String()
}

// unfinished are d's tags that have not ended.
func (d *destination) unfinished() []*tagRun {
	var out []*tagRun
	for _, t := range d.tags {
		if t.result == nil {
			out = append(out, t)
		}
	}
	return out
}

// pushDestination runs the four steps for every tag of d.
func (r *run) pushDestination(d *destination) {
	defer d.cancel()
	r.lookUp(d)
	todo := d.unfinished()
	if len(todo) == 0 {
		return
	}
	d.writing = len(todo)
	// The image's blobs first; a tag's write holds a slot, so none may wait
	// for the blob phase (which needs slots) holding one.
	if ph, err := d.rs.ready(d.ctx, d.c); err != nil {
		for _, t := range todo {
			t.last = verdictOf(d.ctx, err)
			if ph != nil {
				t.attempts, t.last = ph.attempts, ph.last
			}
			r.finishTag(t, err)
		}
		return
	}
	jobs := make([]queue.Job[struct{}], len(todo))
	for i, t := range todo {
		jobs[i] = queue.Job[struct{}]{Limiter: d.rs.reg.writes, Do: func(_ context.Context, s *queue.Slot) (struct{}, error) {
			r.writeTag(t, s)
			return struct{}{}, nil
		}}
	}
	for i, res := range queue.Run(d.ctx, jobs) {
		if t := todo[i]; !res.Started && t.result == nil {
			t.last = verdictOf(d.ctx, res.Err)
			r.finishTag(t, res.Err)
		}
	}
}

// lookUp reads what each tag of d holds now, all at once (the read budget
// bounds them). A repository with several tags to write is listed once
// instead, when overwrite is on: a tag the list lacks is missing and costs no
// read of its own; a listed one is read for its digest. (A list that lags
// behind a tag only costs a PUT of the same manifest; with overwrite off each
// tag is read, because a tag wrongly thought missing would be overwritten.)
// The blob phase starts as soon as one tag needs writing (in a plan, never).
func (r *run) lookUp(d *destination) {
	rs := d.rs
	need := func() {
		if !r.planning {
			rs.start(d.c)
		}
	}
	var listed map[string]bool
	if r.cfg.overwrite && len(d.tags) > 1 {
		_, _, err := r.reads(d.ctx, rs.reg, "list the tags of "+rs.repo.String(), func(ctx context.Context) error {
			var err error
			listed, err = rs.listTags(ctx)
			return err
		})
		if err != nil {
			listed = nil // each tag is read instead
		}
	}
	var wg sync.WaitGroup
	for _, t := range d.tags {
		if listed != nil && !listed[t.tag.TagStr()] {
			need()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.lookUpTag(t) {
				need()
			}
		}()
	}
	wg.Wait()
}

// lookUpTag reads one tag and reports whether it needs writing; a tag that
// does not is ended here.
func (r *run) lookUpTag(t *tagRun) bool {
	d := t.d
	got, found, err := r.readTag(d.ctx, d.rs, t.tag, !r.cfg.overwrite)
	var signIn *signInError
	switch {
	case err != nil && isStatus(err, http.StatusForbidden) && !errors.As(err, &signIn):
		// JFrog answers a read of a tag that does not exist 403.
		return true
	case err != nil && r.cfg.overwrite && !r.planning:
		// The PUT will tell: a look-up only saves writes.
		return true
	case err != nil:
		t.last = verdictOf(d.ctx, err)
		r.finishTag(t, &lookUpError{err})
		return false
	case found && got == d.c.digest:
		t.unchanged = true
		r.finishTag(t, nil)
		return false
	case found && !r.cfg.overwrite:
		t.before = got
		r.finishTag(t, errExists)
		return false
	case found:
		t.before = got
	}
	return true
}

// lookUpError is a look-up that failed where a write may not go ahead blind
// (overwrite is off).
type lookUpError struct{ err error }

func (e *lookUpError) Error() string { return "look up the tag: " + e.err.Error() }
func (e *lookUpError) Unwrap() error { return e.err }

// readTag reads what tag resolves to, as a read with its own retries.
func (r *run) readTag(ctx context.Context, rs *repoState, tag name.Tag, confirmMiss bool) (v1.Hash, bool, error) {
	var (
		got   v1.Hash
		found bool
	)
	_, _, err := r.reads(ctx, rs.reg, "read "+tag.String(), func(ctx context.Context) error {
		var err error
		got, found, err = rs.resolve(ctx, tag.TagStr(), confirmMiss)
		return err
	})
	return got, found, err
}

// writeTag writes and verifies one tag, holding s, its job's write slot, for
// its PUTs only.
func (r *run) writeTag(t *tagRun, s *queue.Slot) {
	take := func(ctx context.Context) (*queue.Slot, error) { return s, s.Acquire(ctx) }
	err := r.put(t, take)
	if err == nil && !t.unchanged {
		err = r.verify(t.d.ctx, t, r.cfg.verifyWindow, true)
		var miss *missError
		if errors.As(err, &miss) {
			// The registry accepted the PUT and does not show it: one more
			// PUT, at most, then the registry's answer stands.
			if err = r.put(t, take); err == nil && !t.unchanged {
				err = r.verify(t.d.ctx, t, r.cfg.verifyWindow, true)
			}
		}
	}
	s.Release()
	r.finishTag(t, r.landed(t, err))
}

// put sends the tag's manifest PUT under the write retry policy.
func (r *run) put(t *tagRun, take func(context.Context) (*queue.Slot, error)) error {
	d := t.d
	rs, c := d.rs, d.c
	a, v, err := r.writes(d.ctx, rs.reg, t.tag.String(), false, func(ctx context.Context, _ int) error {
		ph, err := rs.ready(ctx, c)
		if ph == nil {
			return err // ctx ended
		}
		if err != nil {
			return &spent{attempts: ph.attempts, last: ph.last, err: err}
		}
		t.sent = true
		err = r.underSlot(ctx, rs.reg, take, func() error {
			stored, err := rs.putManifest(ctx, t.tag.TagStr(), c.raw, c.mediaType)
			if err == nil {
				t.stored, t.putSeq = stored, r.seq.Add(1)
			}
			return err
		})
		if err == nil {
			return nil
		}
		v := classify(ctx, err)
		if v.relearnBlobs {
			rs.invalidate(c, ph)
		}
		// Immutable-tag registries refuse to write a tag that exists (ECR
		// 400 TAG_INVALID, Harbor 409/412, others 403): if it holds our
		// digest, nothing needed writing.
		if !v.transient && refusesExisting(v.status) {
			if got, found, rerr := r.readTag(ctx, rs, t.tag, true); rerr == nil && found && got == c.digest {
				t.unchanged = true
				return nil
			}
		}
		return fmt.Errorf("put manifest: %w", err)
	})
	t.attempts += a
	var sp *spent
	if errors.As(err, &sp) {
		// The blob phase spent its own attempts: they are the tag's.
		t.attempts = sp.attempts
	}
	if err != nil {
		t.last = v
	}
	return err
}

// refusesExisting is a status with which registries refuse to overwrite a tag.
func refusesExisting(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusConflict, http.StatusPreconditionFailed:
		return true
	}
	return false
}

// missError is a tag that does not show the pushed digest after a PUT the
// registry accepted.
type missError struct {
	tag             name.Tag
	pushed, got     v1.Hash // got is zero when the tag was not found
	before          v1.Hash
	window          time.Duration
	anotherManifest bool // got is neither the pushed digest nor what the tag held before
}

func (e *missError) Error() string {
	switch {
	case e.anotherManifest:
		return fmt.Sprintf("%s: %s resolves to %s after an accepted PUT of %s", errNotVerified, e.tag, e.got, e.pushed)
	case e.got != v1.Hash{}:
		return fmt.Sprintf("%s: %s still resolves to %s %s after the registry accepted a PUT of %s", errNotVerified, e.tag, e.got, quote.Duration(e.window), e.pushed)
	}
	return fmt.Sprintf("%s: %s was not found %s after the registry accepted it", errNotVerified, e.tag, quote.Duration(e.window))
}

func (e *missError) Unwrap() error { return errNotVerified }

// summary is the one line for the results.
func (e *missError) summary() string {
	switch {
	case e.anotherManifest:
		return fmt.Sprintf("resolves to %s after two accepted PUTs: the registry keeps another form of it", e.got)
	case e.got != v1.Hash{}:
		return fmt.Sprintf("still resolves to the old %s %s after two accepted PUTs", e.got, quote.Duration(e.window))
	}
	return fmt.Sprintf("not found %s after each of two accepted PUTs: the registry does not show what it accepted", quote.Duration(e.window))
}

// unreadError is a tag whose PUT the registry accepted and which could not be
// read back.
type unreadError struct{ err error }

func (e *unreadError) Error() string { return "read the tag back: " + e.err.Error() }
func (e *unreadError) Unwrap() error { return e.err }

// verify reads the tag back until it resolves to the pushed digest. With
// settle, the first read waits until the repository's manifest PUTs are done
// (for at most window), and where the destination wrote several tags, one
// read of the repository's tag list, taken after the tag's PUT was answered,
// stands for all of them: a tag the registry lists, and whose PUT answer
// said it stored our digest, is there (200 tags cost one read instead of
// 200, and registries rate-limit reads too). A tag the list lacks, or whose
// answer did not say, is read on its own:
//
// ghcr.io and S3-backed registries can answer 404 (or the old digest) for a
// moment after a PUT they accepted, so a miss is read again, with growing
// waits, for up to window before it counts; a 404 after our own PUT is never
// a verdict on the repository's name, and is confirmed with GET (some
// registries answer HEAD 404 for a manifest they have). A digest that is
// neither ours nor the old one is another manifest: a few reads make sure,
// then it counts at once.
func (r *run) verify(ctx context.Context, t *tagRun, window time.Duration, settle bool) error {
	d := t.d
	if settle {
		d.rs.settle(ctx, window)
		if d.writing > 1 && t.stored == d.c.digest {
			if l := r.listed(ctx, d); l != nil && l.err == nil && t.putSeq < l.seq && l.tags[t.tag.TagStr()] {
				return nil
			}
		}
	}
	deadline := r.cfg.now().Add(window)
	wait := 50 * time.Millisecond
	others := 0
	for {
		got, found, err := r.readTag(ctx, d.rs, t.tag, true)
		miss := &missError{tag: t.tag, pushed: d.c.digest, before: t.before, window: window}
		switch {
		case err != nil:
			return &unreadError{err}
		case found && got == d.c.digest:
			return nil
		case found && got != t.before:
			miss.got, miss.anotherManifest = got, true
			if others++; others >= 3 {
				return miss
			}
		case found:
			miss.got = got
		}
		if !r.cfg.now().Add(wait).Before(deadline) {
			return miss
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(wait*2, time.Second)
	}
}

// landed has the registry say whether a tag whose last PUT failed holds the
// digest after all: the registry may have committed the PUT and lost the
// answer (a 500, a reset or a timeout on the way back). A refusal (401, 403,
// 400, a 429, a redirect loop) is no such doubt, and a verification that failed has
// read already. It reads with a budget of its own, since the tag's deadline
// may be what ended its attempts; a lost answer is rare and a read-after-
// write lag short, so the window is shorter than a verification's: every
// failed tag pays it.
func (r *run) landed(t *tagRun, err error) error {
	lost := t.last.mayHaveLanded()
	var miss *missError
	var unread *unreadError
	if err == nil || !t.sent || !lost || errors.As(err, &miss) || errors.As(err, &unread) || r.ctx.Err() != nil {
		return err
	}
	window := min(r.cfg.verifyWindow, 3*time.Second)
	ctx, cancel := context.WithTimeout(r.ctx, window+10*time.Second)
	defer cancel()
	if r.verify(ctx, t, window, false) == nil {
		return nil
	}
	return err
}

// sourceFailed ends a tag whose image could not be opened or read.
func (r *run) sourceFailed(t *tagRun, image string, err error) {
	res := Result{Tag: t.tag, Image: image, Duration: r.cfg.now().Sub(t.start), Status: StatusFailed,
		Err: &TagError{Summary: "its image could not be read from the source: " + Summary(err), Cause: err}}
	if r.ctx.Err() != nil {
		res.Status = StatusCancelled
		res.Err = &TagError{Summary: "the run was cancelled before its image was read", Cause: context.Cause(r.ctx)}
	} else if r.planning {
		res.Status = StatusWouldFail
	}
	t.result = &res
	if r.cfg.events.TagDone != nil {
		r.cfg.events.TagDone(res)
	}
}

// finishTag turns how a tag ended into its result, after the image's
// referrers have followed a tag that holds it, and reports it.
func (r *run) finishTag(t *tagRun, err error) {
	if r.planning {
		r.planned(t, err)
		return
	}
	d := t.d
	var refs int
	if err == nil && len(d.c.referrers) > 0 {
		if refs, err = d.rs.referrersFollowed(d.ctx, d.c); err != nil {
			err = &TagError{Summary: "the tag holds the image, but its signatures, attestations or SBOMs did not follow: " + Summary(err), Cause: err}
			t.last = verdict{fault: FaultOther}
		}
	}
	res := Result{Tag: t.tag, Image: d.image, Attempts: t.attempts, Duration: r.cfg.now().Sub(t.start), Referrers: refs}
	res.Previous = t.previous()
	var (
		miss   *missError
		unread *unreadError
		te     *TagError
	)
	switch {
	case err == nil && t.unchanged:
		res.Status, res.Digest = StatusUnchanged, d.c.digest.String()
	case err == nil:
		res.Status, res.Digest = StatusPushed, d.c.digest.String()
	case errors.Is(err, errExists):
		res.Status, res.Err = StatusFailed, &TagError{Summary: fmt.Sprintf("exists at %s; overwrite is false, so it was left as it is", t.before), Cause: err}
	case r.ctx.Err() != nil:
		res.Status = StatusCancelled
		res.Err = &TagError{Summary: fmt.Sprintf("the run was cancelled after %d attempt(s)", t.attempts), Cause: context.Cause(r.ctx)}
	case errors.As(err, &te):
		res.Status, res.Err = StatusFailed, err
	case errors.As(err, &miss):
		res.Status, res.Err = StatusFailed, &TagError{Summary: miss.summary(), Cause: err}
	case errors.As(err, &unread):
		v := verdictOf(d.ctx, unread.err)
		res.Status, res.Err = StatusFailed, &TagError{Summary: "the registry accepted the PUT, but reading the tag back failed: " + Summary(explain(v, unread.err, 1, d.rs.reg.host, d.rs.repo.String())), Cause: err}
	default:
		last := t.last
		if d.ctx.Err() != nil && last.fault == FaultTimeout {
			err = fmt.Errorf("%w (timeout %s)", err, r.cfg.timeout)
			last.timeout = r.cfg.timeout
		}
		res.Status = StatusFailed
		res.Err = explain(last, err, t.attempts, d.rs.reg.host, d.rs.repo.String())
		var lu *lookUpError
		if errors.As(err, &lu) {
			res.Err = &TagError{Summary: "could not look the tag up, and overwrite is false, so it was not written: " + Summary(res.Err), Cause: err}
		}
	}
	t.result = &res
	if r.cfg.events.TagDone != nil {
		r.cfg.events.TagDone(res)
	}
}

package pusher

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/registry"
)

// A tag goes through four steps, each its own function:
//
//  1. lookUp: a read of what the tag holds now, over a read-only view of the
//     repository (where several tags go to one repository, one listing of
//     its tags first spares the reads of the tags it lacks). A tag at the
//     digest is done (unchanged) and costs nothing more.
//  2. put: once the repository holds the image's blobs, the manifest PUT,
//     retried on its own; a write slot is held around the request only,
//     never while the tag waits for the blobs, a retry or a read.
//  3. verify: a read of the tag itself, once the repository's writes have
//     settled, that shows the digest. Nothing else stands for it: not the
//     PUT's answer, not the tag list. A tag still missing (or at another
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
	// passedFresh and passedMoved pass the run's barriers (atomic.go).
	passedFresh, passedMoved sync.Once
}

// tagRun is one tag's share of a run.
type tagRun struct {
	tag   name.Tag
	d     *destination
	start time.Time

	before    v1.Hash // what the look-up found at the tag; zero when missing or unknown
	missing   bool    // the look-up read the tag and the registry said it does not exist
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

// pushDestination runs the four steps for every tag of d: the tags that are
// new to the repository first, then those that move from another digest
// (floating tags: latest, 1.4), so that a release whose new tags fail has
// not moved its floating ones yet. With atomic, the moving tags wait for
// every new tag of the run, and are held back, or put back, when any tag of
// the run fails (atomic.go).
func (r *run) pushDestination(d *destination) {
	defer d.cancel()
	defer d.freshDone()
	defer d.movedDone()
	rs := d.rs
	todo := r.lookUp(d, rs.rc, func() { rs.start(d.c) })
	if len(todo) == 0 {
		return
	}
	// The image's blobs first, waited for holding nothing.
	if ph, err := rs.ready(d.ctx, d.c); err != nil {
		for _, t := range todo {
			t.last = verdictOf(d.ctx, err)
			if ph != nil {
				t.attempts, t.last = ph.attempts, ph.last
			}
			r.finishTag(t, err)
		}
		return
	}
	var fresh, moving []*tagRun
	for _, t := range todo {
		if t.before != (v1.Hash{}) {
			moving = append(moving, t)
		} else {
			fresh = append(fresh, t)
		}
	}
	for t, err := range r.writeTags(fresh) {
		r.finishTag(t, err)
	}
	d.freshDone()
	if !r.cfg.atomic {
		for t, err := range r.writeTags(moving) {
			r.finishTag(t, err)
		}
		return
	}
	r.moveAtomically(d, moving)
}

// writeTags writes and verifies tags all at once, and yields how each
// ended. The registry's write limit bounds the PUTs, each slot taken for one
// request, so a tag that waits (for a blob phase a lost blob started again,
// a retry, a read) keeps no other tag out.
func (r *run) writeTags(tags []*tagRun) iter.Seq2[*tagRun, error] {
	errs := make([]error, len(tags))
	var wg sync.WaitGroup
	for i, t := range tags {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.writeTag(t)
		}()
	}
	wg.Wait()
	return func(yield func(*tagRun, error) bool) {
		for i, t := range tags {
			if !yield(t, errs[i]) {
				return
			}
		}
	}
}

// lookUp reads what each tag of d holds now, all at once (the read budget
// bounds them), through rd, which can only read, and returns the tags that
// need writing; the others are ended here. need, when set, is called as soon
// as one tag needs writing (a push starts the blob phase then).
//
// Where several tags go to the repository and overwrite is on, the
// repository's tag list is read once, in one attempt with a short limit: a
// tag it lacks is missing and costs no read of its own, a listed one is read
// for its digest. A list that fails, hangs, is cut or unparseable, 404s or
// has too many pages is dropped at once for a read of each tag. (A list that
// lags behind a tag only costs a PUT of the same manifest; with overwrite off
// each tag is read, because a tag wrongly thought missing would be
// overwritten.)
func (r *run) lookUp(d *destination, rd registry.Reader, need func()) []*tagRun {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		todo []*tagRun
		once sync.Once
	)
	needs := func(t *tagRun) {
		mu.Lock()
		todo = append(todo, t)
		mu.Unlock()
		if need != nil {
			once.Do(need)
		}
	}
	tags := d.tags
	var listed map[string]bool
	if r.cfg.overwrite && len(tags) > 1 {
		var err error
		listed, err = rd.Tags(d.ctx) // any failure: each tag is read instead
		if errors.Is(err, registry.ErrNoRepository) && !r.planning && !r.cfg.atomic {
			// A new repository, says the registry; a registry that will not
			// list for this token says the same of one that exists. One tag
			// read tells them apart: found, each tag is read; missing, the
			// others are taken as missing too. A tag wrongly taken so costs
			// a PUT of what it gets anyway, and is still read after it; a
			// plan and an atomic run, which must know what each tag held,
			// read every one. The blob phase need not wait for the read.
			if need != nil {
				once.Do(need)
			}
			if first := tags[0]; r.lookUpTag(first, rd) {
				needs(first)
				if first.missing {
					listed = map[string]bool{}
				}
			}
			tags = tags[1:]
		}
	}
	for _, t := range tags {
		if listed != nil && !listed[t.tag.TagStr()] {
			needs(t)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.lookUpTag(t, rd) {
				needs(t)
			}
		}()
	}
	wg.Wait()
	// In the order given, as the results are.
	slices.SortFunc(todo, func(a, b *tagRun) int { return slices.Index(d.tags, a) - slices.Index(d.tags, b) })
	return todo
}

// lookUpTag reads one tag and reports whether it needs writing; a tag that
// does not is ended here.
func (r *run) lookUpTag(t *tagRun, rd registry.Reader) bool {
	d := t.d
	got, found, err := r.readTag(d.ctx, rd, d.rs.reg, t.tag, !r.cfg.overwrite)
	t.missing = err == nil && !found
	var signIn *registry.SignInError
	switch {
	case err != nil && registry.IsStatus(err, http.StatusForbidden) && !errors.As(err, &signIn):
		// JFrog answers a read of a tag that does not exist 403.
		return true
	case err != nil && registry.IsStatus(err, http.StatusPreconditionFailed) && r.cfg.overwrite:
		// Harbor answers a read of a tag whose image a vulnerability policy
		// blocks 412: it says nothing of what the tag holds. Push, and let
		// the read after the PUT tell. (With overwrite off the tag stays.)
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
func (r *run) readTag(ctx context.Context, rd registry.Reader, reg *regState, tag name.Tag, confirmMiss bool) (v1.Hash, bool, error) {
	var (
		got   v1.Hash
		found bool
	)
	_, _, err := r.reads(ctx, reg, "read "+tag.String(), func(ctx context.Context) error {
		var err error
		got, found, err = rd.Resolve(ctx, tag.TagStr(), confirmMiss)
		return err
	})
	return got, found, err
}

// writeTag writes and verifies one tag, and says how it ended.
func (r *run) writeTag(t *tagRun) error {
	err := r.put(t)
	if err == nil && !t.unchanged {
		err = r.verify(t.d.ctx, t, r.cfg.verifyWindow, true)
		var miss *missError
		if errors.As(err, &miss) {
			// The registry accepted the PUT and does not show it: one more
			// PUT, at most, then the registry's answer stands.
			if err = r.put(t); err == nil && !t.unchanged {
				err = r.verify(t.d.ctx, t, r.cfg.verifyWindow, true)
			}
		}
	}
	return r.landed(t, err)
}

// put sends the tag's manifest PUT under the write retry policy.
func (r *run) put(t *tagRun) error {
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
		err = r.underSlot(ctx, rs.reg, func() error {
			// The answer's digest is a claim: verify reads the tag.
			_, err := rs.putManifest(ctx, t.tag.TagStr(), c.raw, c.mediaType)
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
			if got, found, rerr := r.readTag(ctx, rs.rc, rs.reg, t.tag, true); rerr == nil && found && got == c.digest {
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
// (for at most window). Only a read of the tag itself, taken after its last
// PUT was answered, proves it: a PUT's answer can name a digest the registry
// (or a proxy, a virtual repository) does not keep, and a tag that existed
// before is in the tag list whatever it holds.
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
	}
	deadline := r.cfg.now().Add(window)
	wait := 50 * time.Millisecond
	others := 0
	for {
		got, found, err := r.readTag(ctx, d.rs.rc, d.rs.reg, t.tag, true)
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
		if err := registry.Sleep(ctx, wait); err != nil {
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
		Err: &TagError{Summary: "its image could not be read from the source: " + Message(err), Cause: err}}
	if r.ctx.Err() != nil {
		res.Status = StatusCancelled
		res.Err = &TagError{Summary: "the run was cancelled before its image was read", Cause: context.Cause(r.ctx)}
	} else if r.planning {
		res.Status = StatusWouldFail
	}
	t.result = &res
	if res.Status.Failed() || res.Status == StatusCancelled {
		r.failed.Store(true)
	}
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
			err = &TagError{Summary: "the tag holds the image, but its signatures, attestations or SBOMs did not follow: " + Message(err), Cause: err}
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
		res.Status, res.Err = StatusFailed, &TagError{Summary: "the registry accepted the PUT, but reading the tag back failed: " + Message(explain(v, unread.err, 1, d.rs.reg.host, d.rs.repo.String(), r.cfg.optionName)), Cause: err}
	default:
		last := t.last
		if d.ctx.Err() != nil && last.fault == FaultTimeout {
			err = fmt.Errorf("%w (timeout %s)", err, r.cfg.timeout)
			last.timeout = r.cfg.timeout
		}
		res.Status = StatusFailed
		res.Err = explain(last, err, t.attempts, d.rs.reg.host, d.rs.repo.String(), r.cfg.optionName)
		var lu *lookUpError
		if errors.As(err, &lu) {
			res.Err = &TagError{Summary: "could not look the tag up, and overwrite is false, so it was not written: " + Message(res.Err), Cause: err}
		}
	}
	t.result = &res
	if res.Status.Failed() || res.Status == StatusCancelled {
		r.failed.Store(true)
	}
	if r.cfg.events.TagDone != nil {
		r.cfg.events.TagDone(res)
	}
}

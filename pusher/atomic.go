package pusher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Atomic runs (WithAtomic) move floating tags only when the release is
// whole. A tag that holds another digest before the run (latest, 1.4) is a
// moving tag; the others are new. Two barriers span the run, each counting
// one per destination (an image's tags in one repository):
//
//  1. fresh: every destination's new tags have ended. Until then no moving
//     tag is written; if any tag of the run failed by then, every moving tag
//     is held back where it is.
//  2. moved: every destination's moving tags have been written. If any tag
//     of the run failed by then, each moving tag that was moved is put back
//     to the digest its look-up read, and read to prove it.
//
// Every destination passes each barrier exactly once on every path (deferred
// in pushDestination; at once for an image that could not be opened), so no
// destination waits for one that will never come.

// errHeldBack marks a moving tag an atomic run did not leave moved.
var errHeldBack = errors.New("atomic: a tag of the run failed")

// barriers counts the run's destinations at both barriers; a plan has none.
func (r *run) barriers(images []opened) {
	n := 0
	for _, img := range images {
		n += len(repositoriesOf(img.tags))
	}
	r.fresh.Add(n)
	r.moved.Add(n)
}

// passBarriers passes both barriers for an image's destinations that will
// not run (the image could not be opened).
func (r *run) passBarriers(tags []name.Tag) {
	for range repositoriesOf(tags) {
		r.fresh.Done()
		r.moved.Done()
	}
}

func repositoriesOf(tags []name.Tag) map[name.Repository]bool {
	repos := make(map[name.Repository]bool)
	for _, t := range tags {
		repos[t.Repository] = true
	}
	return repos
}

// freshDone and movedDone pass the destination's barriers, once each.
func (d *destination) freshDone() {
	if !d.rs.run.planning {
		d.passedFresh.Do(d.rs.run.fresh.Done)
	}
}

func (d *destination) movedDone() {
	if !d.rs.run.planning {
		d.passedMoved.Do(d.rs.run.moved.Done)
	}
}

// await waits for wg, or until ctx ends.
func await(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// moveAtomically writes d's moving tags once every new tag of the run has
// ended well, and puts them back when a tag of the run failed meanwhile.
func (r *run) moveAtomically(d *destination, moving []*tagRun) {
	if err := await(d.ctx, &r.fresh); err != nil || r.failed.Load() {
		why := "a tag of the run failed, so it was not moved"
		if err != nil {
			why = "the time limit ran out while it waited for the run's other tags"
		}
		for _, t := range moving {
			r.finishTag(t, &TagError{Summary: fmt.Sprintf("held back at %s: atomic is on and %s", t.before, why), Cause: errHeldBack})
		}
		return
	}
	errs := make(map[*tagRun]error, len(moving))
	for t, err := range r.writeTags(moving) {
		errs[t] = err
		if err != nil {
			r.failed.Store(true)
		}
	}
	d.movedDone()
	if err := await(d.ctx, &r.moved); err != nil {
		r.failed.Store(true)
	}
	for _, t := range moving {
		err := errs[t]
		if err == nil && r.failed.Load() {
			err = r.putBack(t)
		}
		r.finishTag(t, err)
	}
}

// putBack writes back the manifest a moved tag held before the run, and
// reads the tag to prove it. It says how the tag ends: put back, or still
// at the new digest when that failed.
func (r *run) putBack(t *tagRun) error {
	// The tag's own time limit may be what ended the run's wait: the put
	// back has a budget of its own, under the run's.
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	rs := t.d.rs
	var (
		raw []byte
		mt  types.MediaType
	)
	_, _, err := r.reads(ctx, rs.reg, "read "+rs.repo.String()+"@"+t.before.String(), func(ctx context.Context) error {
		var err error
		raw, mt, err = rs.rc.Manifest(ctx, t.before.String())
		return err
	})
	if err == nil {
		_, _, err = r.writes(ctx, rs.reg, t.tag.String(), false, func(ctx context.Context, _ int) error {
			return r.underSlot(ctx, rs.reg, func() error {
				_, err := rs.putManifest(ctx, t.tag.TagStr(), raw, mt)
				return err
			})
		})
	}
	if err == nil {
		rs.settle(ctx, r.cfg.verifyWindow)
		got, found, rerr := r.readTag(ctx, rs.rc, rs.reg, t.tag, true)
		switch {
		case rerr != nil:
			err = rerr
		case !found || got != t.before:
			err = fmt.Errorf("the tag reads as %s after the PUT", got)
		}
	}
	if err != nil {
		return &TagError{Summary: fmt.Sprintf("left at the new digest: atomic is on and a tag of the run failed, but putting it back to %s failed: %s", t.before, Message(err)), Cause: err}
	}
	return &TagError{Summary: fmt.Sprintf("put back to %s: atomic is on and a tag of the run failed, so no tag is left moved", t.before), Cause: errHeldBack}
}

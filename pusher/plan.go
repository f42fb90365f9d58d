package pusher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/tagpush/tagpush/registry"
)

// planDestination is a dry run's share of one destination: the tags are
// looked up as a push looks them up (lookUp), and, when one would be
// written, the repository is asked which of the image's blobs it lacks. It
// is given the repository as a registry.Reader: only reads, under the
// registry's read budget, and nothing that starts a blob phase.
func (r *run) planDestination(d *destination, rd registry.Reader) {
	defer d.cancel()
	todo := r.lookUp(d, rd, nil)
	if len(todo) == 0 {
		return
	}
	r.planUpload(d, rd)
	for _, t := range todo {
		r.finishTag(t, nil)
	}
}

// planUpload finds which of the image's blobs the repository lacks.
func (r *run) planUpload(d *destination, rd registry.Reader) {
	up := Upload{Repository: rd.Name(), Image: d.image, Blobs: len(d.c.blobs)}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for _, b := range d.c.blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var exists bool
			_, _, err := r.reads(d.ctx, d.rs.reg, fmt.Sprintf("%s@%s", rd.Name(), b.digest), func(ctx context.Context) error {
				var err error
				exists, err = rd.BlobExists(ctx, b.digest)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case !exists:
				up.Missing++
				up.MissingBytes += b.size
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		up.Err = fmt.Errorf("check %d blob(s): %w", len(errs), errs[0])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.uploadPlans = append(r.uploadPlans, up)
	slices.SortFunc(r.uploadPlans, func(a, b Upload) int {
		return cmp.Or(cmp.Compare(a.Repository.String(), b.Repository.String()), cmp.Compare(a.Image, b.Image))
	})
}

// planned is finishTag in a plan: what a push would do with the tag, from
// what its look-up found.
func (r *run) planned(t *tagRun, err error) {
	d := t.d
	res := Result{Tag: t.tag, Image: d.image, Duration: r.cfg.now().Sub(t.start)}
	res.Previous = t.previous()
	var lu *lookUpError
	switch {
	case err == nil && t.unchanged:
		res.Status, res.Digest = StatusUnchanged, d.c.digest.String()
	case err == nil && res.Previous != "":
		res.Status, res.Digest = StatusWouldOverwrite, d.c.digest.String()
	case err == nil:
		res.Status, res.Digest = StatusWouldPush, d.c.digest.String()
	case errors.Is(err, errExists):
		res.Status = StatusWouldFail
		res.Err = &TagError{Summary: fmt.Sprintf("exists at %s, and overwrite is false: a push would leave it and fail", t.before), Cause: err}
	case r.ctx.Err() != nil:
		res.Status = StatusCancelled
		res.Err = &TagError{Summary: "the run was cancelled before the tag was looked up", Cause: context.Cause(r.ctx)}
	case errors.As(err, &lu):
		res.Status = StatusWouldFail
		v := t.last
		if d.ctx.Err() != nil && v.fault == FaultTimeout {
			v.timeout = r.cfg.timeout
		}
		res.Err = &TagError{Summary: "could not look the tag up: " + Message(explain(v, lu.err, 1, d.rs.reg.host, d.rs.repo.String(), r.cfg.optionName)), Cause: err}
	default:
		res.Status, res.Err = StatusWouldFail, err
	}
	t.result = &res
	if r.cfg.events.TagDone != nil {
		r.cfg.events.TagDone(res)
	}
}

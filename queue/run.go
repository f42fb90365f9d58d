package queue

import (
	"context"
	"sync"
)

// Job is one unit of queued work. It starts holding one slot of its Limiter;
// Do may give the slot back and take it again through its Slot (a job that
// waits or reads between its writes does), and whatever it holds is
// released when Do returns.
type Job[T any] struct {
	// Limiter bounds how many jobs that share it run at once. Jobs with
	// different limiters do not wait for each other.
	Limiter *Limiter
	// Do is the work. It may report outcomes and give its slot back while it
	// waits through the Slot, which it owns: it must not hand the Slot to
	// another goroutine.
	Do func(ctx context.Context, s *Slot) (T, error)
}

// Result is what became of one job.
type Result[T any] struct {
	Value T
	Err   error
	// Started is false when the job never ran because ctx ended first.
	Started bool
}

// Run runs every job and returns their results in the order of jobs. Jobs that
// share a limiter start in the order given, each once a slot is free. When ctx
// ends, jobs not yet started are not started (their Err is ctx's cause) and Run
// returns once the running ones have returned.
func Run[T any](ctx context.Context, jobs []Job[T]) []Result[T] {
	results := make([]Result[T], len(jobs))

	order := make(map[*Limiter][]int)
	var limiters []*Limiter
	for i, j := range jobs {
		if _, seen := order[j.Limiter]; !seen {
			limiters = append(limiters, j.Limiter)
		}
		order[j.Limiter] = append(order[j.Limiter], i)
	}

	var wg sync.WaitGroup
	for _, lim := range limiters {
		wg.Add(1)
		go func(lim *Limiter, idx []int) {
			defer wg.Done()
			for n, i := range idx {
				g, err := lim.acquire(ctx)
				if err != nil {
					for _, rest := range idx[n:] {
						results[rest].Err = err
					}
					return
				}
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					s := &Slot{lim: lim, held: true, grant: g}
					defer s.Release()
					v, err := jobs[i].Do(ctx, s)
					results[i] = Result[T]{Value: v, Err: err, Started: true}
				}(i)
			}
		}(lim, order[lim])
	}
	wg.Wait()
	return results
}

// Slot is a running job's hold on its limiter. It has one owner, the job's
// own goroutine: only that goroutine releases and re-acquires it, so a slot is
// never taken by a goroutine whose caller has already given up (oras-go's
// LimitedRegion and x/sync/semaphore follow the same rule).
type Slot struct {
	lim   *Limiter
	held  bool
	grant grant // how the slot was last taken
}

// Acquire takes a slot of l for the calling goroutine, which owns it and must
// Release it. Like a job's first slot, it is never granted to a context that
// has ended.
func (l *Limiter) Acquire(ctx context.Context) (*Slot, error) {
	g, err := l.acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &Slot{lim: l, held: true, grant: g}, nil
}

// Observe reports the outcome of the work done under the slot since it was
// last taken. An overload of work that started before the limit last came
// down is ignored: it was in flight with the failures that brought it down,
// and counting it would cut the limit again for the same burst. So is one of
// work that started with fewer slots held than the limit allowed: it did not
// fail for the load the limit allows.
func (s *Slot) Observe(o Outcome) { s.lim.observe(o, s.grant) }

// Release gives the slot back, so that a job waiting (to retry, say) does not
// keep others from running. Releasing a slot that is not held does nothing.
func (s *Slot) Release() {
	if s.held {
		s.held = false
		s.lim.release()
	}
}

// Acquire takes a slot again after Release, waiting until one is free. It
// fails with ctx's cause, holding nothing, when ctx has ended, even if a slot
// is free. Acquiring a slot that is held does nothing.
func (s *Slot) Acquire(ctx context.Context) error {
	if s.held {
		return nil
	}
	g, err := s.lim.acquire(ctx)
	if err != nil {
		return err
	}
	s.held, s.grant = true, g
	return nil
}

// Held reports whether the slot is held now.
func (s *Slot) Held() bool { return s.held }

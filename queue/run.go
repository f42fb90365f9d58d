package queue

import (
	"context"
	"sync"
	"time"
)

// Job is one unit of queued work. It runs holding one slot of its Limiter.
type Job[T any] struct {
	// Limiter bounds how many jobs that share it run at once. Jobs with
	// different limiters do not wait for each other.
	Limiter *Limiter
	// Do is the work. It may report outcomes and give its slot back while it
	// waits through the Slot.
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
				if err := lim.acquire(ctx); err != nil {
					for _, rest := range idx[n:] {
						results[rest].Err = err
					}
					return
				}
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					s := &Slot{lim: lim, held: true}
					defer s.done()
					v, err := jobs[i].Do(ctx, s)
					results[i] = Result[T]{Value: v, Err: err, Started: true}
				}(i)
			}
		}(lim, order[lim])
	}
	wg.Wait()
	return results
}

// Slot is a running job's hold on its limiter.
type Slot struct {
	lim  *Limiter
	mu   sync.Mutex
	held bool
}

// Observe reports the outcome of one unit of the job's work to the limiter.
func (s *Slot) Observe(o Outcome) { s.lim.Observe(o) }

// Sleep gives the slot back for d, so that a job waiting to retry does not keep
// others from running, then takes a slot again. It returns early with ctx's
// cause when ctx ends; the slot is then no longer held.
func (s *Slot) Sleep(ctx context.Context, d time.Duration) error {
	s.giveBack()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
	}
	if err := s.lim.acquire(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.held = true
	s.mu.Unlock()
	return nil
}

func (s *Slot) giveBack() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		s.held = false
		s.lim.release()
	}
}

func (s *Slot) done() { s.giveBack() }

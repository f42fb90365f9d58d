package pusher

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/avast/retry-go/v4"

	"github.com/tagpush/tagpush/queue"
)

// Two retry loops, one for writes and one for reads, both retry-go's. A step
// is retried by exactly one of them: a read inside a write's attempt (a
// blob's existence check) spends its own read retries, and its final failure
// ends the write step (spent) instead of being retried again as a write.
//
// Writes take a slot of the registry's adaptive limit for each request
// (underSlot), and their outcomes move the limit. Reads take a slot of the
// registry's read budget (inside the registry client's reads) and move nothing: a read
// that fails says nothing about how many writes the registry can take, and
// is never paid for with a write.

// verdictOf classifies err; nil is no verdict.
func verdictOf(ctx context.Context, err error) verdict {
	if err == nil {
		return verdict{}
	}
	return classify(ctx, err)
}

// underSlot runs f, one write request or a short sequence of them sent one
// after the other with no wait between, holding a write slot of the
// registry, and reports its outcome to the limit under the slot:
// an overload of a write that started before the limit last came down is
// part of that burst, and does not cut it again.
func (r *run) underSlot(ctx context.Context, reg *regState, f func() error) error {
	s, err := reg.writes.Acquire(ctx)
	if err != nil {
		return err
	}
	defer s.Release()
	err = f()
	if err == nil {
		s.Observe(queue.Success)
		reg.served.Add(1)
	} else {
		s.Observe(classify(ctx, err).outcome)
	}
	return err
}

// writes runs a write step under the retry policy until it succeeds, fails
// permanently or runs out of attempts, and says how many attempts it made and
// the verdict on the last failure. what names the step in retry events; blob
// marks a step of a blob phase. f is the attempt (numbered from 1); it takes
// the write slots it needs through underSlot and gives them back before the
// loop waits: nothing is held between attempts.
func (r *run) writes(ctx context.Context, reg *regState, what string, blob bool, f func(ctx context.Context, attempt int) error) (int, verdict, error) {
	var (
		attempts int
		lastErr  error
		last     verdict
		relieved bool  // the last failure is dealt with, or looks like chance
		served   int64 // the registry's successful writes as of the last failure
	)
	served = reg.served.Load()
	err := retry.Do(func() error {
		attempts++
		limitAtStart := reg.writes.Limit()
		err := f(ctx, attempts)
		if err == nil {
			reg.reached()
			return nil
		}
		lastErr, last = err, classify(ctx, err)
		var sp *spent
		if errors.As(err, &sp) {
			// A read, or a blob phase, spent its own retries: no second layer.
			last = sp.last
			return retry.Unrecoverable(err)
		}
		r.noteFault(last.fault, false)
		// An overload is dealt with when the limit came down for it, and
		// looks like chance when other writes to the registry succeeded
		// since the step last failed (for its first three failures: a step
		// that keeps failing while the rest works must not spend its
		// attempts in a second), or it is the step's first: the retry is
		// quick (taking a write slot again waits for room anyway). When
		// nothing succeeds (an outage), a step backs off.
		servedNow := reg.served.Load()
		relieved = last.outcome == queue.Overload &&
			(reg.writes.Limit() < limitAtStart || servedNow > served && attempts <= 3 || attempts == 1)
		served = servedNow
		r.noteAnswer(reg, &last)
		if !last.transient {
			return retry.Unrecoverable(err)
		}
		return err
	}, r.retryOptions(ctx, reg, func(n uint) time.Duration { return r.backoff(n, reg, relieved, false) }, func(d time.Duration) {
		r.noteWait(d, blob)
		if r.cfg.events.Retry != nil {
			r.cfg.events.Retry(Retry{Registry: reg.host, Tag: what, Attempt: attempts, Fault: last.fault, Err: lastErr, Wait: d})
		}
	})...)
	return r.finish(ctx, attempts, last, lastErr, err)
}

// reads runs a read under the retry policy: a transient failure (a 5xx, a
// 429, a reset, a timeout, a local resource running out) is read again, with
// a quick first retry (a registry that answers a read 500 while it writes
// the same repository answers the next one), then the write loop's waits. It
// counts in the statistics as a read retry and never moves the write limit.
func (r *run) reads(ctx context.Context, reg *regState, what string, f func(context.Context) error) (int, verdict, error) {
	var (
		attempts int
		lastErr  error
		last     verdict
	)
	err := retry.Do(func() error {
		attempts++
		err := f(ctx)
		if err == nil {
			reg.reached()
			return nil
		}
		lastErr, last = err, classify(ctx, err)
		r.noteFault(last.fault, true)
		r.noteAnswer(reg, &last)
		if !last.transient {
			return retry.Unrecoverable(err)
		}
		return err
	}, r.retryOptions(ctx, reg, func(n uint) time.Duration { return r.backoff(n, reg, false, true) }, func(d time.Duration) {
		r.noteReadRetry(d)
		if r.cfg.events.Retry != nil {
			r.cfg.events.Retry(Retry{Registry: reg.host, Tag: what, Attempt: attempts, Fault: last.fault, Err: lastErr, Wait: d, Read: true})
		}
	})...)
	return r.finish(ctx, attempts, last, lastErr, err)
}

// noteAnswer keeps the registry's state up to date with a failed attempt's
// verdict: a refused connection is believed transient only within the
// connect grace; any answer ends a run of refusals; an announced wait holds
// every write to the registry.
func (r *run) noteAnswer(reg *regState, v *verdict) {
	switch {
	case v.refused:
		v.transient = reg.refused(r.cfg.connectGrace)
	case v.status != 0:
		reg.reached()
	}
	r.client.NoteWait(reg.host, v.wait)
}

func (r *run) retryOptions(ctx context.Context, reg *regState, delay func(uint) time.Duration, onWait func(time.Duration)) []retry.Option {
	return []retry.Option{
		retry.Context(ctx),
		retry.Attempts(uint(r.cfg.maxAttempts)),
		retry.LastErrorOnly(true),
		retry.MaxDelay(r.cfg.maxRetryDelay),
		retry.DelayType(func(n uint, _ error, _ *retry.Config) time.Duration { return delay(n) }),
		retry.WithTimer(&notingTimer{onWait: onWait}),
	}
}

// finish turns a loop's end into its result: the last attempt's error (not
// retry-go's wrapping of it), and a context that ran out named as a timeout.
func (r *run) finish(ctx context.Context, attempts int, last verdict, lastErr, err error) (int, verdict, error) {
	if err == nil {
		return attempts, last, nil
	}
	if lastErr == nil {
		lastErr = err
	}
	if ctx.Err() != nil && last.fault != FaultTimeout && last.fault != faultCancelled {
		// The time ran out while the step waited to retry.
		last = verdict{fault: FaultTimeout, betweenAttempts: true, lostBefore: last.mayHaveLanded()}
	}
	return attempts, last, lastErr
}

// backoff is the wait before attempt n+1: exponential from retry-delay with
// jitter of up to one retry-delay, or the registry's requested wait when that is
// longer. retry-go caps the result at max-retry-delay.
//
// relieved marks an overload that is dealt with or looks like chance: the
// step's first, one after which the registry's limit came down below where
// it stood when the attempt started, or one of its first three when other
// writes to the registry succeeded since the step last failed. Taking a write slot again waits for room, so the retry
// comes after a quarter of retry-delay. When every write fails (an outage),
// a step's later failures back off as usual, so an outage cannot spend the
// attempts in its first seconds. A read's first retry comes after a quarter
// of retry-delay too.
func (r *run) backoff(n uint, reg *regState, relieved, read bool) time.Duration {
	base := r.cfg.retryDelay
	quick := relieved || (read && n <= 1)
	if quick {
		base /= 4
	}
	d := base
	for i := uint(1); i < n && d < r.cfg.maxRetryDelay && !quick; i++ {
		d *= 2
	}
	jitter := time.Duration(rand.Int64N(int64(base) + 1))
	if w := r.client.Wait(reg.host); w > d {
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

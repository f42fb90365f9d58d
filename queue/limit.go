// Package queue runs jobs under a concurrency limit that can change while they run.
//
// It knows nothing about what the jobs do. A job reports the outcome of each unit of
// work it performs (success, overload, or neither) and an Algorithm turns those
// outcomes into a new limit. Fixed keeps the limit where it is; AIMD cuts it by a quarter on
// overload and raises it by one after a run of successes.
package queue

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Outcome is what one unit of work says about the health of whatever serves it.
type Outcome int

const (
	// Ignore says nothing about load: a failure such as a denied request.
	Ignore Outcome = iota
	// Success is a unit of work that completed.
	Success
	// Overload is a unit of work that was dropped because the server is busy
	// (5xx, 429, a timeout).
	Overload
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Overload:
		return "overload"
	default:
		return "ignore"
	}
}

// Algorithm turns outcomes into a limit. Implementations need not be safe for
// concurrent use: the Limiter serialises calls.
type Algorithm interface {
	// Limit is the current limit, at least 1.
	Limit() int
	// Observe records one outcome seen at now and returns the new limit.
	Observe(o Outcome, now time.Time) int
}

// Fixed is an Algorithm whose limit never changes.
type Fixed int

// Limit implements Algorithm.
func (f Fixed) Limit() int { return max(int(f), 1) }

// Observe implements Algorithm.
func (f Fixed) Observe(Outcome, time.Time) int { return f.Limit() }

// AIMD is additive-increase, multiplicative-decrease: an overload cuts the
// limit to three quarters (see decrease; at most once per cooldown, so that one burst of failures
// from requests that were all in flight together counts once), and every run of
// successes as long as the current limit raises it by one, up to the ceiling.
//
// It remembers the level that overloaded: climbing back to just below it is
// quick, but trying that level again is a probe, allowed only once probeAfter
// has passed since the last overload, and probeAfter doubles each time a probe
// fails. So under a registry that fails above a fixed number of parallel writes
// (ghcr.io) the limit settles just below that number instead of swinging into
// it again and again, and it still finds out when the registry can take more.
type AIMD struct {
	ceiling      int
	limit        int
	cooldown     time.Duration
	probeAfter   time.Duration
	lastDecrease time.Time
	successes    int
	overloadedAt int // the last level that overloaded; 0 when none has
}

// decrease is the limit after an overload: three quarters of it, rounded
// down, and at least one less. Netflix's AIMD backs off by a ratio (0.9)
// rather than by half: halving overshoots a registry that fails above N
// writes in flight (ghcr.io), dropping 4 to 2 where 3 is what it takes, and
// the run then crawls at 2 until the probe interval lets it climb back.
func decrease(limit int) int {
	return max(min(limit*3/4, limit-1), 1)
}

// NewAIMD returns an AIMD algorithm that starts at ceiling and never exceeds it.
func NewAIMD(ceiling int, cooldown, probeAfter time.Duration) (*AIMD, error) {
	if ceiling < 1 {
		return nil, fmt.Errorf("queue: AIMD ceiling must be at least 1, got %d", ceiling)
	}
	if cooldown < 0 || probeAfter < 0 {
		return nil, fmt.Errorf("queue: AIMD cooldown (%s) and probe interval (%s) must not be negative", cooldown, probeAfter)
	}
	return &AIMD{ceiling: ceiling, limit: ceiling, cooldown: cooldown, probeAfter: probeAfter}, nil
}

// Limit implements Algorithm.
func (a *AIMD) Limit() int { return a.limit }

// Observe implements Algorithm.
func (a *AIMD) Observe(o Outcome, now time.Time) int {
	switch o {
	case Overload:
		a.successes = 0
		if !a.lastDecrease.IsZero() && now.Sub(a.lastDecrease) < a.cooldown {
			return a.limit
		}
		if a.overloadedAt != 0 && a.limit >= a.overloadedAt {
			a.probeAfter *= 2 // a probe failed: wait longer before the next
		}
		a.lastDecrease = now
		a.overloadedAt = a.limit
		a.limit = decrease(a.limit)
	case Success:
		a.successes++
		if a.successes < a.limit || a.limit >= a.ceiling {
			break
		}
		probing := a.overloadedAt != 0 && a.limit+1 >= a.overloadedAt
		if probing && now.Sub(a.lastDecrease) < a.probeAfter {
			break
		}
		a.limit++
		a.successes = 0
	}
	return a.limit
}

// Change describes one change of a Limiter's limit.
type Change struct {
	Name     string
	Old, New int
	Cause    Outcome
}

// Limiter hands out slots while fewer than the algorithm's limit are held.
// A lowered limit takes effect as slots are released: work already running is
// never interrupted.
type Limiter struct {
	name     string
	onChange func(Change)
	now      func() time.Time

	mu       sync.Mutex
	alg      Algorithm
	inFlight int
	peak     int
	wake     chan struct{} // closed and replaced whenever a slot may have become free
}

// LimiterOption configures a Limiter.
type LimiterOption func(*Limiter)

// OnChange calls f, outside the limiter's lock, every time the limit changes.
func OnChange(f func(Change)) LimiterOption { return func(l *Limiter) { l.onChange = f } }

// WithClock sets the clock the algorithm sees; the default is time.Now.
func WithClock(now func() time.Time) LimiterOption { return func(l *Limiter) { l.now = now } }

// NewLimiter returns a limiter named name (the name only labels changes).
func NewLimiter(name string, alg Algorithm, opts ...LimiterOption) *Limiter {
	l := &Limiter{name: name, alg: alg, now: time.Now, wake: make(chan struct{})}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Limit returns the current limit.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.alg.Limit()
}

// InFlight returns how many slots are held now.
func (l *Limiter) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight
}

// Peak returns the most slots ever held at once.
func (l *Limiter) Peak() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peak
}

// acquire blocks until a slot is free or ctx is done. A context that has
// already ended never gets a slot, even a free one: work must not start after
// its caller gave up.
func (l *Limiter) acquire(ctx context.Context) error {
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		l.mu.Lock()
		if l.inFlight < l.alg.Limit() {
			l.inFlight++
			l.peak = max(l.peak, l.inFlight)
			l.mu.Unlock()
			return nil
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-wake:
		}
	}
}

func (l *Limiter) release() {
	l.mu.Lock()
	l.inFlight--
	l.broadcastLocked()
	l.mu.Unlock()
}

func (l *Limiter) broadcastLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
}

// Observe feeds one outcome to the algorithm.
func (l *Limiter) Observe(o Outcome) {
	l.mu.Lock()
	old := l.alg.Limit()
	now := l.alg.Observe(o, l.now())
	if now > old {
		l.broadcastLocked()
	}
	l.mu.Unlock()
	if now != old && l.onChange != nil {
		l.onChange(Change{Name: l.name, Old: old, New: now, Cause: o})
	}
}

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
// limit to three quarters (see decrease), and every run of successes as long
// as the current limit raises it by one, up to the ceiling.
//
// Which overloads count is the Limiter's to filter: one whose work started
// before the last decrease is part of the burst that caused it, and says
// nothing new (TCP ignores losses of packets sent before its window shrank
// for the same reason); one whose work started with room to spare (fewer in
// flight than the limit) did not fail for the load the limit allows. What
// AIMD itself adds:
//
//   - A level that has proven itself (a run of successes as long as the
//     limit since it was set) takes a second overload within the next two
//     runs before it is cut, and once cut it is climbed back to without a
//     probe's wait: a registry that fails one write in twenty at random
//     (ghcr.io does) must not lose a level that carries it. If it then fails
//     again before proving itself, it is a real limit, and probed as one.
//   - It remembers the level that overloaded: climbing back to just below it
//     is quick, but trying that level again is a probe, allowed only once
//     probeAfter has passed since the last decrease, and probeAfter doubles
//     each time a probe fails. Under a registry that fails above a fixed
//     number of writes in flight the limit settles just below that number
//     instead of swinging into it again and again, and it still finds out
//     when the registry can take more.
type AIMD struct {
	ceiling      int
	limit        int
	probeAfter   time.Duration
	lastDecrease time.Time
	successes    int  // since the limit was last set
	strike       bool // a proven level overloaded once
	sinceStrike  int  // successes since the strike
	overloadedAt int  // the last level that overloaded; 0 when none has
	// provenCut is set when the last cut was of a level that had proven
	// itself: chance, most likely, so climbing back to it is no probe.
	provenCut bool
	// slow is slow start (StartAt): until the first overload, every
	// success raises the limit by one, doubling it per round of writes.
	slow bool
}

// StartAt makes the algorithm start at n (at most the ceiling) rather than
// at the ceiling, and climb from there as TCP's slow start does: each
// success raises the limit by one until the ceiling or the first overload,
// after which it is AIMD as usual. A healthy registry has the ceiling's
// parallelism within a round or two of writes; one that fails above a few
// writes in flight (ghcr.io) meets the start, not the ceiling.
func (a *AIMD) StartAt(n int) *AIMD {
	a.limit = min(max(n, 1), a.ceiling)
	a.slow = a.limit < a.ceiling
	return a
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
func NewAIMD(ceiling int, probeAfter time.Duration) (*AIMD, error) {
	if ceiling < 1 {
		return nil, fmt.Errorf("queue: AIMD ceiling must be at least 1, got %d", ceiling)
	}
	if probeAfter < 0 {
		return nil, fmt.Errorf("queue: AIMD probe interval (%s) must not be negative", probeAfter)
	}
	return &AIMD{ceiling: ceiling, limit: ceiling, probeAfter: probeAfter}, nil
}

// Limit implements Algorithm.
func (a *AIMD) Limit() int { return a.limit }

// SlowStart reports whether the limit is still in slow start.
func (a *AIMD) SlowStart() bool { return a.slow }

// Observe implements Algorithm.
func (a *AIMD) Observe(o Outcome, now time.Time) int {
	if a.slow {
		if o == Success {
			a.limit = min(a.limit+1, a.ceiling)
			a.slow = a.limit < a.ceiling
			return a.limit
		}
		if o == Overload {
			a.slow = false
		}
	}
	switch o {
	case Overload:
		if a.limit == 1 {
			// The floor: there is no level below to learn, and the next
			// climb must not wait longer for it.
			break
		}
		if a.successes >= a.limit && !a.strike {
			// A proven level: one overload may be chance.
			a.strike, a.sinceStrike = true, 0
			break
		}
		proven := a.successes >= a.limit
		if a.overloadedAt != 0 && a.limit >= a.overloadedAt && !proven && !a.provenCut {
			a.probeAfter *= 2 // a probe failed: wait longer before the next
		}
		a.lastDecrease = now
		a.overloadedAt = a.limit
		a.provenCut = proven
		a.limit = decrease(a.limit)
		a.successes, a.strike = 0, false
	case Success:
		a.successes++
		if a.strike {
			if a.sinceStrike++; a.sinceStrike >= 2*a.limit {
				a.strike = false
			}
		}
		if a.successes < a.limit || a.limit >= a.ceiling {
			break
		}
		probing := a.overloadedAt != 0 && a.limit+1 >= a.overloadedAt && !a.provenCut
		if probing && now.Sub(a.lastDecrease) < a.probeAfter {
			break
		}
		a.limit++
		a.successes, a.strike, a.provenCut = 0, false, false
	}
	return a.limit
}

// Change describes one change of a Limiter's limit.
type Change struct {
	Name     string
	Old, New int
	Cause    Outcome
	// SlowStart is a rise of slow start (AIMD.StartAt): the climb every
	// run makes to the ceiling, not a recovery.
	SlowStart bool
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
	// epoch counts the limit's decreases: a slot remembers the epoch it was
	// taken in, and an overload seen in an older one is part of the burst
	// that caused the last decrease.
	epoch uint64
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

// grant is what a slot knows of its own start: the epoch it was taken in,
// and how many slots were held with it (itself included).
type grant struct {
	epoch uint64
	level int
}

// acquire blocks until a slot is free or ctx is done. A context that has
// already ended never gets a slot, even a free one: work must not start after
// its caller gave up.
func (l *Limiter) acquire(ctx context.Context) (grant, error) {
	for {
		if err := context.Cause(ctx); err != nil {
			return grant{}, err
		}
		l.mu.Lock()
		if l.inFlight < l.alg.Limit() {
			l.inFlight++
			l.peak = max(l.peak, l.inFlight)
			g := grant{epoch: l.epoch, level: l.inFlight}
			l.mu.Unlock()
			return g, nil
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return grant{}, context.Cause(ctx)
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

// Observe feeds one outcome to the algorithm, as of now: an overload always
// counts. Work that holds a slot reports through Slot.Observe instead, which
// knows how the work started.
func (l *Limiter) Observe(o Outcome) {
	l.mu.Lock()
	g := grant{epoch: l.epoch, level: l.alg.Limit()}
	l.mu.Unlock()
	l.observe(o, g)
}

// observe feeds one outcome of work that started as g says. An overload
// counts only for work that started in the current epoch (work in flight
// before the last decrease failed with the burst that caused it) and at the
// edge of the limit, as many slots held as it allows (work that started with
// room to spare did not fail for the load the limit allows).
func (l *Limiter) observe(o Outcome, g grant) {
	l.mu.Lock()
	if o == Overload && (g.epoch != l.epoch || g.level < l.alg.Limit()) {
		l.mu.Unlock()
		return
	}
	old := l.alg.Limit()
	slow := false
	if s, ok := l.alg.(interface{ SlowStart() bool }); ok {
		slow = s.SlowStart()
	}
	now := l.alg.Observe(o, l.now())
	if now > old {
		l.broadcastLocked()
	}
	if now < old {
		l.epoch++
	}
	l.mu.Unlock()
	if now != old && l.onChange != nil {
		l.onChange(Change{Name: l.name, Old: old, New: now, Cause: o, SlowStart: slow && now > old})
	}
}

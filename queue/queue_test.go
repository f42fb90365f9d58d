package queue

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestAIMD(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name    string
		ceiling int
		steps   []Outcome
		gaps    time.Duration // time between observations
		want    int
		start   int // StartAt, when set
	}{
		{"starts at ceiling", 8, nil, 0, 8, 0},
		// Slow start: from 4, each success adds one up to the ceiling; the
		// first overload cuts as usual and ends it, and the climb back is
		// AIMD's (a run of successes as long as the limit adds one).
		{"slow start begins at its start", 10, nil, 0, 4, 4},
		{"slow start adds one per success", 10, repeat(Success, 3), 0, 7, 4},
		{"slow start stops at the ceiling", 10, repeat(Success, 20), 0, 10, 4},
		{"slow start's first overload cuts", 10, []Outcome{Success, Success, Overload}, 0, 4, 4},
		{"after slow start, AIMD", 10, append([]Outcome{Success, Success, Overload}, repeat(Success, 3)...), 0, 4, 4},
		{"a start above the ceiling is the ceiling", 3, nil, 0, 3, 8},
		{"overload cuts a quarter", 8, []Outcome{Overload}, 0, 6, 0},
		{"overload at 4 leaves 3", 4, []Outcome{Overload}, 0, 3, 0},
		{"a cut is at least one", 3, []Outcome{Overload}, 0, 2, 0},
		{"overloads of an unproven level cut each time", 8, []Outcome{Overload, Overload, Overload}, 0, 3, 0},
		{"never below one", 2, []Outcome{Overload, Overload, Overload}, 2 * time.Second, 1, 0},
		{"a run of successes as long as the limit adds one", 16, append([]Outcome{Overload}, repeat(Success, 12)...), 0, 13, 0},
		{"fewer successes add nothing", 16, append([]Outcome{Overload}, repeat(Success, 11)...), 0, 12, 0},
		{"never above ceiling", 3, repeat(Success, 20), 0, 3, 0},
		{"ignore changes nothing", 8, append([]Outcome{Overload}, repeat(Ignore, 20)...), 0, 6, 0},
		{"no probe of the level that overloaded before the probe interval", 4, append([]Outcome{Overload}, repeat(Success, 40)...), 10 * time.Millisecond, 3, 0},
		{"a probe once the interval has passed", 4, append([]Outcome{Overload}, repeat(Success, 40)...), 200 * time.Millisecond, 4, 0},
		// 4 -> 3, three successes prove 3: one overload there may be chance,
		// a second one within two runs of successes is not.
		{"a proven level takes one overload", 4, []Outcome{Overload, Success, Success, Success, Overload}, 0, 3, 0},
		{"a proven level is cut by a second overload", 4, []Outcome{Overload, Success, Success, Success, Overload, Success, Overload}, 0, 2, 0},
		{"a strike is forgotten after two runs of successes", 4,
			append(append([]Outcome{Overload, Success, Success, Success, Overload}, repeat(Success, 6)...), Overload), 0, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAIMD(tt.ceiling, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if tt.start > 0 {
				a.StartAt(tt.start)
			}
			now := t0
			for _, o := range tt.steps {
				a.Observe(o, now)
				now = now.Add(tt.gaps)
			}
			if got := a.Limit(); got != tt.want {
				t.Errorf("limit = %d, want %d", got, tt.want)
			}
		})
	}
}

func repeat(o Outcome, n int) []Outcome {
	out := make([]Outcome, n)
	for i := range out {
		out[i] = o
	}
	return out
}

// TestAIMDSettlesBelowAFixedCapacity drives AIMD against a server that
// overloads above 3 at once, one outcome every 10ms for 40s: the limit spends
// the run at 3, with fewer and fewer probes of 4.
func TestAIMDSettlesBelowAFixedCapacity(t *testing.T) {
	a, _ := NewAIMD(8, 2*time.Second)
	now := time.Unix(0, 0)
	const steps = 4000
	var overloads []int
	atThree := 0
	for i := range steps {
		now = now.Add(10 * time.Millisecond)
		if a.Limit() > 3 {
			a.Observe(Overload, now)
			overloads = append(overloads, i)
		} else {
			a.Observe(Success, now)
		}
		if a.Limit() == 3 {
			atThree++
		}
	}
	if a.Limit() > 3 {
		t.Errorf("limit at end = %d, want at most 3", a.Limit())
	}
	// The first second is the initial descent; after it, each overload is a
	// probe, and probes grow rarer.
	probes, late := 0, 0
	for _, i := range overloads {
		if i >= 100 {
			probes++
		}
		if i >= steps/2 {
			late++
		}
	}
	if late > 1 || probes > 5 {
		t.Errorf("overloads at steps %v: want at most 5 probes after the first second and 1 in the second half", overloads)
	}
	if atThree < steps*9/10 {
		t.Errorf("limit was 3 for %d of %d steps, want at least 90%%", atThree, steps)
	}
}

func TestNewAIMDRejectsBadCeiling(t *testing.T) {
	if _, err := NewAIMD(0, time.Second); err == nil {
		t.Fatal("NewAIMD(0) succeeded, want an error")
	}
}

// trackingJobs returns n jobs that record how many of them run at once.
func trackingJobs(lim *Limiter, n int, hold time.Duration, inFlight, peak *atomic.Int64) []Job[int] {
	jobs := make([]Job[int], n)
	for i := range jobs {
		jobs[i] = Job[int]{Limiter: lim, Do: func(ctx context.Context, s *Slot) (int, error) {
			cur := inFlight.Add(1)
			for {
				p := peak.Load()
				if cur <= p || peak.CompareAndSwap(p, cur) {
					break
				}
			}
			time.Sleep(hold)
			inFlight.Add(-1)
			return i * 10, nil
		}}
	}
	return jobs
}

func TestRunBoundsConcurrencyAndKeepsOrder(t *testing.T) {
	for _, limit := range []int{1, 3, 8} {
		lim := NewLimiter("r", Fixed(limit))
		var inFlight, peak atomic.Int64
		res := Run(context.Background(), trackingJobs(lim, 24, 5*time.Millisecond, &inFlight, &peak))
		if got := peak.Load(); got > int64(limit) || got < 1 {
			t.Errorf("limit %d: peak concurrency %d", limit, got)
		}
		if limit > 1 && peak.Load() < 2 {
			t.Errorf("limit %d: jobs never overlapped (peak %d)", limit, peak.Load())
		}
		for i, r := range res {
			if !r.Started || r.Err != nil || r.Value != i*10 {
				t.Fatalf("limit %d: result %d = %+v, want value %d", limit, i, r, i*10)
			}
		}
	}
}

// take acquires n slots of lim.
func take(t *testing.T, lim *Limiter, n int) []*Slot {
	t.Helper()
	var out []*Slot
	for range n {
		s, err := lim.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// Writes that were in flight together and fail together are one burst: the
// limit comes down once for them, and again only for a write that started
// after it came down.
func TestOverloadsOfOneBurstCutOnce(t *testing.T) {
	alg, _ := NewAIMD(4, time.Hour)
	lim := NewLimiter("r", alg)
	for _, s := range take(t, lim, 4) {
		s.Observe(Overload)
		s.Release()
	}
	if got := lim.Limit(); got != 3 {
		t.Fatalf("limit after one burst of 4 overloads = %d, want 3 (one cut)", got)
	}
	later := take(t, lim, 3)
	later[2].Observe(Overload)
	if got := lim.Limit(); got != 2 {
		t.Errorf("limit after an overload of a write that started after the cut = %d, want 2", got)
	}
}

// A write that failed with room to spare under the limit (fewer in flight
// than it allows) did not fail for the load the limit allows: the limit
// stays. One at the edge of the limit cuts it.
func TestOnlyOverloadsAtTheEdgeCount(t *testing.T) {
	alg, _ := NewAIMD(4, time.Hour)
	lim := NewLimiter("r", alg)
	slots := take(t, lim, 3)
	slots[0].Observe(Overload) // started alone
	slots[2].Observe(Overload) // started with 3 in flight, of 4
	if got := lim.Limit(); got != 4 {
		t.Fatalf("limit after overloads with room to spare = %d, want 4", got)
	}
	edge := take(t, lim, 1)[0]
	edge.Observe(Overload)
	if got := lim.Limit(); got != 3 {
		t.Errorf("limit after an overload at the edge = %d, want 3", got)
	}
}

// At the floor an overload teaches nothing: it does not push the next
// climb further away.
func TestOverloadAtTheFloorDoesNotDelayTheClimb(t *testing.T) {
	a, _ := NewAIMD(2, time.Second)
	t0 := time.Unix(0, 0)
	a.Observe(Overload, t0) // 2 -> 1
	for i := range 10 {
		a.Observe(Overload, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	a.Observe(Success, t0.Add(1100*time.Millisecond))
	if got := a.Limit(); got != 2 {
		t.Errorf("limit = %d, want 2: overloads at the floor must not delay the probe", got)
	}
}

func TestLoweredLimitTakesEffect(t *testing.T) {
	alg, _ := NewAIMD(8, time.Hour)
	var changes []Change
	lim := NewLimiter("r", alg, OnChange(func(c Change) { changes = append(changes, c) }))
	lim.Observe(Overload) // 8 -> 6
	var inFlight, peak atomic.Int64
	Run(context.Background(), trackingJobs(lim, 20, 5*time.Millisecond, &inFlight, &peak))
	if peak.Load() > 6 {
		t.Errorf("peak %d after the limit was lowered to 6", peak.Load())
	}
	if len(changes) != 1 || changes[0].Old != 8 || changes[0].New != 6 || changes[0].Cause != Overload {
		t.Errorf("changes = %+v, want one 8->6 on overload", changes)
	}
}

func TestRaisedLimitWakesWaiters(t *testing.T) {
	alg, _ := NewAIMD(3, 0)
	lim := NewLimiter("r", alg)
	lim.Observe(Overload) // 3 -> 2
	lim.Observe(Overload) // 2 -> 1
	if lim.Limit() != 1 {
		t.Fatalf("limit = %d, want 1", lim.Limit())
	}
	release := make(chan struct{})
	started := make(chan int, 2)
	job := func(ctx context.Context, s *Slot) (int, error) {
		started <- 1
		<-release
		return 0, nil
	}
	done := make(chan struct{})
	go func() {
		Run(context.Background(), []Job[int]{{lim, job}, {lim, job}})
		close(done)
	}()
	<-started
	select {
	case <-started:
		t.Fatal("second job started above the limit of 1")
	case <-time.After(20 * time.Millisecond):
	}
	lim.Observe(Success) // one success at limit 1 raises it to 2
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("second job did not start after the limit rose to 2")
	}
	close(release)
	<-done
}

func TestLimitersAreIndependent(t *testing.T) {
	slow := NewLimiter("slow", Fixed(1))
	fast := NewLimiter("fast", Fixed(1))
	block := make(chan struct{})
	var fastDone atomic.Bool
	jobs := []Job[int]{
		{slow, func(ctx context.Context, s *Slot) (int, error) { <-block; return 0, nil }},
		{slow, func(ctx context.Context, s *Slot) (int, error) { return 0, nil }},
		{fast, func(ctx context.Context, s *Slot) (int, error) { fastDone.Store(true); close(block); return 0, nil }},
	}
	res := Run(context.Background(), jobs)
	if !fastDone.Load() {
		t.Fatal("job on the free limiter did not run")
	}
	for i, r := range res {
		if !r.Started {
			t.Errorf("job %d never started", i)
		}
	}
}

func TestCancelStopsNewWorkAndLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim := NewLimiter("r", Fixed(2))
	var ran atomic.Int64
	jobs := make([]Job[int], 10)
	for i := range jobs {
		jobs[i] = Job[int]{lim, func(ctx context.Context, s *Slot) (int, error) {
			if ran.Add(1) == 2 {
				cancel()
			}
			<-ctx.Done()
			return 0, ctx.Err()
		}}
	}
	res := Run(ctx, jobs)
	var started, notStarted int
	for _, r := range res {
		if r.Started {
			started++
		} else {
			notStarted++
			if !errors.Is(r.Err, context.Canceled) {
				t.Errorf("unstarted job err = %v, want context.Canceled", r.Err)
			}
		}
	}
	if started != 2 || notStarted != 8 {
		t.Errorf("started %d, not started %d; want 2 and 8", started, notStarted)
	}
	if lim.InFlight() != 0 {
		t.Errorf("%d slots still held after Run", lim.InFlight())
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Run, %d before", n, before)
	}
}

func TestReleaseGivesTheSlotBack(t *testing.T) {
	lim := NewLimiter("r", Fixed(1))
	var order []string
	step := make(chan struct{})
	jobs := []Job[string]{
		{lim, func(ctx context.Context, s *Slot) (string, error) {
			order = append(order, "a1")
			s.Release()
			close(step)
			time.Sleep(30 * time.Millisecond)
			if err := s.Acquire(ctx); err != nil {
				return "", err
			}
			order = append(order, "a2")
			return "a", nil
		}},
		{lim, func(ctx context.Context, s *Slot) (string, error) {
			<-step
			order = append(order, "b")
			return "b", nil
		}},
	}
	Run(context.Background(), jobs)
	if len(order) != 3 || order[1] != "b" {
		t.Errorf("order = %v, want the second job to run while the first waits", order)
	}
	if lim.InFlight() != 0 {
		t.Errorf("%d slots still held", lim.InFlight())
	}
}

// TestRunStartsNothingOnceCancelled: free slots are not a reason to start work
// the caller has given up on.
func TestRunStartsNothingOnceCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 20 {
		lim := NewLimiter("r", Fixed(4))
		var ran atomic.Int64
		jobs := make([]Job[int], 10)
		for i := range jobs {
			jobs[i] = Job[int]{lim, func(ctx context.Context, s *Slot) (int, error) { ran.Add(1); return 0, nil }}
		}
		for i, r := range Run(ctx, jobs) {
			if r.Started || !errors.Is(r.Err, context.Canceled) {
				t.Fatalf("job %d: started=%v err=%v, want not started with context.Canceled", i, r.Started, r.Err)
			}
		}
		if n := ran.Load(); n != 0 {
			t.Fatalf("%d jobs ran after the context was cancelled", n)
		}
	}
}

// TestAcquireAfterCancelHoldsNothing: a job whose context ended while it had
// given its slot back must not take one again, even a free one, or a queue
// with a limit of 1 stops for good.
func TestAcquireAfterCancelHoldsNothing(t *testing.T) {
	lim := NewLimiter("r", Fixed(1))
	ctx, cancel := context.WithCancel(context.Background())
	var second atomic.Bool
	jobs := []Job[int]{
		{lim, func(_ context.Context, s *Slot) (int, error) {
			s.Release()
			cancel()
			if err := s.Acquire(ctx); err == nil {
				t.Error("Acquire succeeded on a cancelled context")
			}
			if s.Held() {
				t.Error("slot held after a failed Acquire")
			}
			return 0, nil
		}},
		{lim, func(context.Context, *Slot) (int, error) { second.Store(true); return 0, nil }},
	}
	Run(context.Background(), jobs)
	if !second.Load() {
		t.Error("the next job never got the slot")
	}
	if lim.InFlight() != 0 {
		t.Errorf("%d slots still held after Run", lim.InFlight())
	}
}

// BenchmarkRunOverheadPerJob measures what the queue itself costs per job:
// jobs that do nothing, under an adaptive limit of 4.
func BenchmarkRunOverheadPerJob(b *testing.B) {
	alg, _ := NewAIMD(4, 5*time.Second)
	lim := NewLimiter("r", alg)
	const n = 1000
	jobs := make([]Job[int], n)
	for i := range jobs {
		jobs[i] = Job[int]{lim, func(ctx context.Context, s *Slot) (int, error) {
			s.Observe(Success)
			return i, nil
		}}
	}
	b.ReportAllocs()
	for b.Loop() {
		res := Run(context.Background(), jobs)
		if len(res) != n || !res[n-1].Started {
			b.Fatal("jobs did not run")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/job")
}

func TestAcquireOutsideRunSharesTheLimit(t *testing.T) {
	lim := NewLimiter("r", Fixed(1))
	s, err := lim.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := lim.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Acquire under a limit of 1 = %v, want it to wait until the deadline", err)
	}
	s.Release()
	s.Release() // a second release gives back nothing
	if lim.InFlight() != 0 {
		t.Fatalf("%d slots held after Release", lim.InFlight())
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := lim.Acquire(cancelled); err == nil {
		t.Fatal("a cancelled context got a free slot")
	}
}

// BenchmarkAcquireRelease is what one write pays the limiter for its slot.
func BenchmarkAcquireRelease(b *testing.B) {
	alg, _ := NewAIMD(4, 5*time.Second)
	lim := NewLimiter("r", alg)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s, err := lim.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		s.Observe(Success)
		s.Release()
	}
}

// A level that proved itself and was then cut (two failures by chance) is
// climbed back to at once; one that fails again before proving itself is a
// real limit, probed after the interval.
func TestAProvenLevelCutByChanceComesBack(t *testing.T) {
	a, _ := NewAIMD(2, 5*time.Second)
	now := time.Unix(0, 0)
	step := func(o Outcome) { a.Observe(o, now); now = now.Add(10 * time.Millisecond) }
	step(Success)
	step(Success) // 2 is proven
	step(Overload)
	step(Overload) // a second one: cut to 1
	if a.Limit() != 1 {
		t.Fatalf("limit %d after two overloads, want 1", a.Limit())
	}
	step(Success)
	if a.Limit() != 2 {
		t.Fatalf("limit %d after a success at 1, want 2 at once: 2 had proven itself", a.Limit())
	}
	step(Overload) // fails before proving itself: a real limit
	step(Success)
	step(Success)
	if a.Limit() != 1 {
		t.Errorf("limit %d, want 1 until the probe interval has passed", a.Limit())
	}
}

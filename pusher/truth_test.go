package pusher_test

// Tests that a tag's reported outcome is the truth under registry behaviour
// seen in the field: no crash, no hang, no tag reported failed that is there.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testimage"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/pusher"
)

// pushWithin runs Push and fails the test, instead of hanging it, when Push
// has not returned after limit.
func pushWithin(t *testing.T, limit time.Duration, p *pusher.Pusher, img remote.Taggable, tags []name.Tag) *pusher.Report {
	t.Helper()
	type out struct {
		rep *pusher.Report
		err error
	}
	done := make(chan out, 1)
	go func() {
		rep, err := p.Push(context.Background(), img, tags)
		done <- out{rep, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatal(o.err)
		}
		return o.rep
	case <-time.After(limit):
		t.Fatalf("Push has not returned after %s: a tag is stuck", limit)
		return nil
	}
}

// A registry (or a proxy in front of it) that answers 500 before reading a
// large upload leaves net/http reading the body after the answer is in. That
// must not crash the run (it did: progress was sent on a channel closed
// under the body writer), and the tags must end pushed.
func TestEarlyAnswerDuringUploadIsRetriedWithoutCrashing(t *testing.T) {
	// On disk: Distribution's in-memory driver takes seconds per MiB for a
	// blob sent in one PUT.
	reg := testregistry.ForTest(t, testregistry.Options{OnDisk: true, Faults: faults.Config{EarlyAnswerFirst: 6}})
	img, err := random.Image(32<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var updates int
	events := pusher.Events{Progress: func(pusher.Progress) { mu.Lock(); updates++; mu.Unlock() }}
	// Three attempts for at most six early answers over two blobs and two
	// tags: some tags fail while their bodies are still being written,
	// and the run ends right after them.
	for range 3 {
		rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(3), pusher.WithProgressInterval(time.Millisecond), pusher.WithEvents(events)),
			img, tagsOn(t, reg.Host, fmt.Sprintf("acme/early-%d", time.Now().UnixNano()), 2))
		for _, r := range rep.Results {
			if r.Status == pusher.StatusPushed {
				assertPresent(t, reg, []name.Tag{r.Tag}, rep.Digest)
			} else if !strings.Contains(fmt.Sprint(r.Err), "500") {
				t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
			}
		}
		reg.Faults.Reset(faults.Config{EarlyAnswerFirst: 6})
	}
	mu.Lock()
	if updates == 0 {
		t.Error("no progress was reported")
	}
	mu.Unlock()
	// With attempts to spare the same run pushes everything.
	tags := tagsOn(t, reg.Host, "acme/early", 3)
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(8)), img, tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	if n := reg.Faults.Stats().Injected["early-answer"]; n == 0 {
		t.Fatal("no early answer was injected")
	}
	assertPresent(t, reg, tags, rep.Digest)
}

// A tag that waits to retry holds no write slot, and its timeout ending
// during the wait leaves none held: with concurrency 1, the other tags write
// during each one's waits, every tag makes several attempts before the
// deadline, and the run ends at the deadline. A slot kept through the wait
// would leave the other tags with no attempt at all (the issue saw a run
// hang on it in 1 of 15).
func TestTimeoutDuringRetryWaitFreesTheSlot(t *testing.T) {
	// Every manifest PUT is answered 429 (without Retry-After): each tag
	// writes, waits 20ms, writes again, until its 300ms run out.
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{TooManyFirst: 1 << 20}})
	img := smallImage(t)
	for i := range 5 {
		p := newPusher(t,
			pusher.WithConcurrency(1),
			pusher.WithTimeout(300*time.Millisecond),
			pusher.WithRetry(50, 20*time.Millisecond, 20*time.Millisecond))
		start := time.Now()
		rep := pushWithin(t, 30*time.Second, p, img, tagsOn(t, reg.Host, fmt.Sprintf("acme/slot%d", i), 4))
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("run %d took %s for a 300ms timeout", i, took)
		}
		for _, r := range rep.Results {
			if r.Status != pusher.StatusFailed || r.Attempts < 2 {
				t.Errorf("run %d: %s %s after %d attempt(s): %v; want failed after several (the others' waits free the slot)", i, r.Tag, r.Status, r.Attempts, r.Err)
			}
		}
		if peak := rep.Stats.PeakConcurrency[reg.Host]; peak != 1 {
			t.Errorf("run %d: peak writes %d with concurrency 1", i, peak)
		}
	}
}

// ghcr.io and S3-backed registries can answer 404 for a tag read right after
// the PUT that created it. Every tag is there: none may be reported failed.
func TestReadAfterWriteLagIsNotAFailure(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{ReadLag: time.Second}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/lag", 5)
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(3)), img, tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed || r.Attempts != 1 {
			t.Errorf("%s: %s after %d attempt(s): %v; want pushed in 1 (the tag was there after a second)", r.Tag, r.Status, r.Attempts, r.Err)
		}
	}
	assertPresent(t, reg, tags, rep.Digest)
	if st := reg.Faults.Stats(); st.Injected["lag"] == 0 || st.ManifestPuts != len(tags) {
		t.Errorf("lagging reads %d, manifest PUTs %d; want some lag and one PUT per tag", st.Injected["lag"], st.ManifestPuts)
	}
}

// The registry commits a manifest PUT and the answer is lost (500 or a
// reset). On the last attempt too, the tag is there and must be reported so.
func TestLostAnswerOnLastAttemptIsCheckedInTheRegistry(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset=%t", reset), func(t *testing.T) {
			reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{LoseAnswerFirst: 100, LoseAnswerReset: reset}})
			img := smallImage(t)
			tags := tagsOn(t, reg.Host, "acme/lost", 4)
			rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(1)), img, tags)
			for _, r := range rep.Results {
				if r.Status != pusher.StatusPushed || r.Attempts != 1 || r.Digest != rep.Digest {
					t.Errorf("%s: %s after %d attempt(s): %v; want pushed (the registry has it)", r.Tag, r.Status, r.Attempts, r.Err)
				}
			}
			assertPresent(t, reg, tags, rep.Digest)
			if n := reg.Faults.Stats().Injected["lost-answer"]; n != len(tags) {
				t.Errorf("%d answers lost, want %d", n, len(tags))
			}
		})
	}
}

// ghcr.io's 403 "You have exceeded a secondary rate limit" is a rate limit:
// retried, and when it persists, named as one, not as missing write access.
func TestSecondaryRateLimitIsRetriedAndNamed(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{SecondaryRateLimitFirst: 3}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/rl", 6)
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(5)), img, tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	if rep.Stats.Faults[pusher.FaultRateLimited] != 3 {
		t.Errorf("faults = %v, want 3 secondary rate limits", rep.Stats.Faults)
	}

	reg.Faults.Reset(faults.Config{SecondaryRateLimitFirst: 1000})
	rep = pushWithin(t, time.Minute, newPusher(t, fastRetry(2)), img, tagsOn(t, reg.Host, "acme/rl2", 1))
	r := rep.Results[0]
	msg := fmt.Sprint(r.Err)
	if r.Status != pusher.StatusFailed || r.Attempts != 2 || !strings.Contains(msg, "rate-limited") || strings.Contains(msg, "write access") {
		t.Errorf("persistent secondary rate limit: %s after %d attempt(s): %q; want failed after 2, named a rate limit", r.Status, r.Attempts, msg)
	}
}

// Nothing listening is not overload: the limit stays, and the run ends in
// seconds with a message that names the address, not after every tag has
// spent its attempts on backoff.
func TestConnectionRefusedEndsQuicklyWithoutLoweringTheLimit(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var changes []pusher.LimitChange
	var mu sync.Mutex
	// Eight attempts 200 ms apart, doubling, would take 25 s: the defaults.
	const budget = 8
	p := newPusher(t, pusher.WithConcurrency(4), pusher.WithRetry(budget, 200*time.Millisecond, 30*time.Second), pusher.WithEvents(pusher.Events{LimitChange: func(c pusher.LimitChange) {
		mu.Lock()
		changes = append(changes, c)
		mu.Unlock()
	}}))
	tags := tagsOn(t, addr, "acme/app", 12)
	rep := pushWithin(t, time.Minute, p, smallImage(t), tags)
	for _, r := range rep.Results {
		msg := fmt.Sprint(r.Err)
		if r.Status != pusher.StatusFailed || !strings.Contains(msg, "could not connect to "+addr) {
			t.Errorf("%s: %s: %q; want failed, naming %s", r.Tag, r.Status, msg, addr)
		}
		if r.Attempts >= budget || r.Duration > 10*time.Second {
			t.Errorf("%s: %d attempts in %s; a refused connection must end the tag in seconds, not spend the budget of %d", r.Tag, r.Attempts, r.Duration, budget)
		}
	}
	if len(changes) != 0 || rep.Stats.FinalLimit[addr] != 4 {
		t.Errorf("limit changes %v, final limit %d; want none and 4", changes, rep.Stats.FinalLimit[addr])
	}
}

// A registry that redirects a manifest PUT to itself: the client must stop
// after a bounded number of redirects and say "redirect loop".
func TestRedirectLoopIsBounded(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{RedirectManifestPuts: true}})
	tags := tagsOn(t, reg.Host, "acme/loop", 2)
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(3), pusher.WithTimeout(20*time.Second)), smallImage(t), tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusFailed || r.Attempts != 1 || !strings.Contains(fmt.Sprint(r.Err), "redirect loop") {
			t.Errorf("%s: %s after %d attempt(s): %v; want failed at once with a redirect loop", r.Tag, r.Status, r.Attempts, r.Err)
		}
	}
	if puts := reg.Faults.Stats().Injected["redirect"]; puts > len(tags)*11 {
		t.Errorf("the registry saw %d redirected PUTs for %d tags", puts, len(tags))
	}
}

// An answer that stalls after its headers is abandoned after the stall
// timeout and retried, instead of holding the tag until its own timeout.
func TestStalledAnswerIsAbandonedAndRetried(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{StallFirst: 2}})
	tags := tagsOn(t, reg.Host, "acme/stall", 3)
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(5), pusher.WithStallTimeout(300*time.Millisecond), pusher.WithTimeout(20*time.Second)), smallImage(t), tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	retried := rep.Stats.Retries + rep.Stats.BlobRetries
	if reg.Faults.Stats().Injected["stall"] != 2 || retried < 2 || rep.Stats.Faults[pusher.FaultTimeout] != 2 {
		t.Errorf("stalls %d, retries %d, timeouts %d; want 2 stalls, each abandoned and retried", reg.Faults.Stats().Injected["stall"], retried, rep.Stats.Faults[pusher.FaultTimeout])
	}
	assertPresent(t, reg, tags, rep.Digest)
}

// A 429 with Retry-After speaks for every request to that registry: no new
// write may reach it until the announced wait ends, from any tag.
func TestRetryAfterPausesEveryWriteToTheRegistry(t *testing.T) {
	// 20 ms a request keeps the other tags writing well past the 429.
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{TooManyFirst: 1, RetryAfter: "2", Latency: 20 * time.Millisecond}})
	tags := tagsOn(t, reg.Host, "acme/pause", 40)
	rep := pushWithin(t, time.Minute, newPusher(t, pusher.WithConcurrency(4), pusher.WithRetry(5, 10*time.Millisecond, 10*time.Second)), smallImage(t), tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	st := reg.Faults.Stats()
	// The 429 went to the first manifest PUT the registry saw.
	var first time.Time
	for _, times := range st.ManifestPutTimes {
		for _, at := range times {
			if first.IsZero() || at.Before(first) {
				first = at
			}
		}
	}
	// Writes already on their way when the 429 was answered may arrive
	// just after it; none may start later, until the 2 s are over.
	from, until := first.Add(200*time.Millisecond), first.Add(1900*time.Millisecond)
	var during int
	for _, w := range st.Writes {
		if w.At.After(from) && w.At.Before(until) {
			during++
		}
	}
	if during != 0 {
		t.Errorf("%d writes reached the registry during its announced 2s wait", during)
	}
}

// A 6 s outage of every write, starting mid-push, is ridden out with the
// default retry settings: fast first retries must not spend the attempt
// budget in the first seconds of an incident.
func TestOutageIsRiddenOutWithDefaults(t *testing.T) {
	cfg, err := faults.Preset("outage")
	if err != nil {
		t.Fatal(err)
	}
	// The small image's blobs are in after ~60 ms at 20 ms a request: the
	// outage starts among the tags' manifest PUTs.
	cfg.Latency, cfg.OutageAfter = 20*time.Millisecond, 80*time.Millisecond
	reg := testregistry.ForTest(t, testregistry.Options{Faults: cfg})
	tags := tagsOn(t, reg.Host, "acme/outage", 20)
	rep := pushWithin(t, 2*time.Minute, newPusher(t), smallImage(t), tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s after %d attempt(s): %v", r.Tag, r.Status, r.Attempts, r.Err)
		}
	}
	if n := reg.Faults.Stats().Injected["outage"]; n == 0 {
		t.Fatal("the outage hit no write")
	}
	assertPresent(t, reg, tags, rep.Digest)
}

// Each blob costs two writes, a POST and one PUT with the whole blob (no
// PATCH), and each tag one manifest PUT; every blob goes up once.
func TestEachBlobIsTwoWrites(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/two", 10)
	rep := pushWithin(t, time.Minute, newPusher(t), img, tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	st := reg.Faults.Stats()
	blobs := blobDigests(t, img)
	assertBlobsOnce(t, st, blobs)
	if st.ByMethod[http.MethodPatch] != 0 || st.ByMethod[http.MethodPost] != len(blobs) || st.ByMethod[http.MethodPut] != len(blobs)+len(tags) {
		t.Errorf("writes by method %v; want %d POST, %d PUT (blobs and tags), no PATCH", st.ByMethod, len(blobs), len(blobs)+len(tags))
	}
}

// A registry that refuses a blob sent in one PUT gets chunked uploads from
// then on, and every tag is pushed.
func TestRegistryRefusingOnePutUploadsGetsChunks(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{RefuseMonolithic: true}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/chunks", 3)
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(3)), img, tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	st := reg.Faults.Stats()
	assertBlobsOnce(t, st, blobDigests(t, img))
	if st.ByMethod[http.MethodPatch] == 0 || st.Injected["refuse-monolithic"] == 0 {
		t.Errorf("writes %v, refusals %d; want the refusal seen and chunked uploads after it", st.ByMethod, st.Injected["refuse-monolithic"])
	}
}

// A re-run of the same tags writes nothing: every tag is unchanged, and the
// registry sees no POST, PATCH or PUT, and no blob check. Five more tags
// cost exactly five manifest PUTs.
func TestRerunWritesNothing(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/rerun", 25)
	first := pushWithin(t, time.Minute, newPusher(t), img, tags[:20])
	for _, r := range first.Results {
		if r.Status != pusher.StatusPushed {
			t.Fatalf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}

	reg.Faults.Reset(faults.Config{})
	again := pushWithin(t, time.Minute, newPusher(t), img, tags[:20])
	for _, r := range again.Results {
		if r.Status != pusher.StatusUnchanged || r.Digest != first.Digest || r.Err != nil {
			t.Errorf("re-run %s: %s (%v), want unchanged at %s", r.Tag, r.Status, r.Err, first.Digest)
		}
	}
	st := reg.Faults.Stats()
	if writes := st.ByMethod[http.MethodPost] + st.ByMethod[http.MethodPatch] + st.ByMethod[http.MethodPut]; writes != 0 {
		t.Errorf("the re-run wrote %d times (%v), want none", writes, st.ByMethod)
	}
	if st.ByMethod[http.MethodHead] != 20 {
		t.Errorf("the re-run made %d HEADs, want one per tag and no blob checks", st.ByMethod[http.MethodHead])
	}

	reg.Faults.Reset(faults.Config{})
	more := pushWithin(t, time.Minute, newPusher(t), img, tags)
	pushed := 0
	for _, r := range more.Results {
		if r.Status == pusher.StatusPushed {
			pushed++
		} else if r.Status != pusher.StatusUnchanged {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	st = reg.Faults.Stats()
	if pushed != 5 || st.ManifestPuts != 5 || st.UploadSessions != 0 || st.BlobBytes != 0 {
		t.Errorf("5 new tags: %d pushed, %d manifest PUTs, %d uploads, %d blob bytes; want 5, 5, 0, 0", pushed, st.ManifestPuts, st.UploadSessions, st.BlobBytes)
	}
	assertPresent(t, reg, tags, first.Digest)
}

// With overwrite false, a tag at another digest keeps it and fails with a
// message that says so; the others are pushed.
func TestOverwriteFalseLeavesOtherDigests(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	tags := tagsOn(t, reg.Host, "acme/keep", 10)
	old, err := testimage.Small("linux", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	prev := pushWithin(t, time.Minute, newPusher(t), old, tags[:5])
	img := smallImage(t)
	rep := pushWithin(t, time.Minute, newPusher(t, pusher.WithOverwrite(false)), img, tags)
	for i, r := range rep.Results {
		msg := fmt.Sprint(r.Err)
		switch {
		case i < 5 && (r.Status != pusher.StatusFailed || !strings.Contains(msg, "exists at "+prev.Digest) || !strings.Contains(msg, "overwrite is false")):
			t.Errorf("%s: %s: %q; want failed, naming the digest it keeps", r.Tag, r.Status, msg)
		case i >= 5 && r.Status != pusher.StatusPushed:
			t.Errorf("%s: %s: %v; want pushed", r.Tag, r.Status, r.Err)
		}
	}
	assertPresent(t, reg, tags[:5], prev.Digest)
	assertPresent(t, reg, tags[5:], rep.Digest)
}

// A registry that refuses to overwrite an existing tag (ECR: 400
// TAG_INVALID) while the tag holds our digest: nothing needed writing.
func TestImmutableTagAtOurDigestIsUnchanged(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/immutable", 3)
	pushWithin(t, time.Minute, newPusher(t), img, tags)
	// The look-ups miss the tags (a stale replica), so the PUTs go out and
	// are refused.
	reg.Faults.Reset(faults.Config{ImmutableTags: true, StaleReadsFirst: len(tags)})
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(3)), img, tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusUnchanged || r.Err != nil {
			t.Errorf("%s: %s: %v; want unchanged", r.Tag, r.Status, r.Err)
		}
	}
	if st := reg.Faults.Stats(); st.Injected["immutable"] != len(tags) || st.Injected["stale-read"] != len(tags) {
		t.Errorf("faults %v; want every tag's PUT refused after a stale look-up", st.Injected)
	}
}

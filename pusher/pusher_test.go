package pusher_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testimage"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/pusher"
)

func smallImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := testimage.Small("linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func tagsOn(t *testing.T, host, repo string, n int) []name.Tag {
	t.Helper()
	tags := make([]name.Tag, n)
	for i := range tags {
		tag, err := name.NewTag(fmt.Sprintf("%s/%s:v%d", host, repo, i))
		if err != nil {
			t.Fatal(err)
		}
		tags[i] = tag
	}
	return tags
}

// fastRetry keeps tests quick: waits of milliseconds, not seconds.
func fastRetry(attempts int) pusher.Option {
	return pusher.WithRetry(attempts, 10*time.Millisecond, 200*time.Millisecond)
}

func newPusher(t *testing.T, opts ...pusher.Option) *pusher.Pusher {
	t.Helper()
	p, err := pusher.New(append([]pusher.Option{pusher.WithKeychain(authn.NewMultiKeychain())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// blobDigests lists the digests of the image's layers and config.
func blobDigests(t *testing.T, img v1.Image) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		s, _ := l.Size()
		out[d.String()] = s
	}
	cl, err := partial.ConfigLayer(img)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := cl.Digest()
	s, _ := cl.Size()
	out[d.String()] = s
	return out
}

// assertPresent checks, straight against the registry (not through the fault
// layer), that every tag resolves to want.
func assertPresent(t *testing.T, reg *testregistry.Registry, tags []name.Tag, want string) {
	t.Helper()
	for _, tag := range tags {
		direct, err := name.NewTag(reg.Direct + "/" + tag.RepositoryStr() + ":" + tag.TagStr())
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Head(direct)
		if err != nil {
			t.Errorf("%s is not in the registry: %v", tag, err)
			continue
		}
		if desc.Digest.String() != want {
			t.Errorf("%s resolves to %s, want %s", tag, desc.Digest, want)
		}
	}
}

// assertBlobsOnce checks every blob reached the registry exactly once.
func assertBlobsOnce(t *testing.T, st faults.Stats, blobs map[string]int64) {
	t.Helper()
	var size int64
	for d, s := range blobs {
		size += s
		if n := st.BlobsCommitted[d]; n != 1 {
			t.Errorf("blob %s committed %d times, want once", d, n)
		}
	}
	if len(st.BlobsCommitted) != len(blobs) {
		t.Errorf("registry committed %d distinct blobs, the image has %d", len(st.BlobsCommitted), len(blobs))
	}
	if st.BlobBytes != size {
		t.Errorf("registry received %d blob bytes, the image's blobs are %d", st.BlobBytes, size)
	}
}

func TestPushTwentyTagsUploadsEachBlobOnce(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/app", 20)

	rep, err := newPusher(t, pusher.WithConcurrency(4)).Push(context.Background(), img, tags)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	for i, r := range rep.Results {
		if r.Status != pusher.StatusPushed || r.Digest != want.String() || r.Attempts != 1 || r.Tag != tags[i] {
			t.Errorf("result %d = %+v, want %s pushed as %s in 1 attempt", i, r, tags[i], want)
		}
	}
	assertPresent(t, reg, tags, want.String())
	st := reg.Faults.Stats()
	blobs := blobDigests(t, img)
	assertBlobsOnce(t, st, blobs)
	if st.UploadSessions != len(blobs) {
		t.Errorf("registry saw %d blob upload requests, want %d (one per blob)", st.UploadSessions, len(blobs))
	}
	if st.ManifestPuts != len(tags) {
		t.Errorf("registry saw %d manifest PUTs, want %d", st.ManifestPuts, len(tags))
	}
	if peak := rep.Stats.PeakConcurrency[reg.Host]; peak > 4 || peak < 2 {
		t.Errorf("peak concurrency %d, want between 2 and the limit of 4", peak)
	}
}

func TestPushIndexToTwoRepositories(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	idx, err := testimage.Index("linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	tags := append(tagsOn(t, reg.Host, "acme/one", 3), tagsOn(t, reg.Host, "acme/two", 3)...)
	rep, err := newPusher(t).Push(context.Background(), idx, tags)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	assertPresent(t, reg, tags, want.String())
	m, _ := idx.IndexManifest()
	for _, repo := range []string{"acme/one", "acme/two"} {
		for _, child := range m.Manifests {
			ref, _ := name.NewDigest(reg.Direct + "/" + repo + "@" + child.Digest.String())
			if _, err := remote.Image(ref); err != nil {
				t.Errorf("platform image %s missing from %s: %v", child.Digest, repo, err)
			}
		}
	}
}

func TestGHCRModeEveryTagPushedDespiteFaults(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{Seed: 7, MaxWrites: 3, WriteErrorRate: 0.05}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/app", 20)

	rep, err := newPusher(t, pusher.WithConcurrency(4), fastRetry(8)).Push(context.Background(), img, tags)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s after %d attempts: %v", r.Tag, r.Status, r.Attempts, r.Err)
		}
	}
	want, _ := img.Digest()
	assertPresent(t, reg, tags, want.String())
	st := reg.Faults.Stats()
	if st.Injected["500"] == 0 {
		t.Fatalf("no 500s were injected; the test proves nothing (stats %+v)", st.Injected)
	}
	assertBlobsOnce(t, st, blobDigests(t, img))
	retried := 0
	for _, r := range rep.Results {
		retried += r.Attempts - 1
	}
	if retried != rep.Stats.Retries || rep.Stats.Faults[pusher.Fault5xx] < 1 {
		t.Errorf("results count %d retries, stats %d, 5xx faults %d", retried, rep.Stats.Retries, rep.Stats.Faults[pusher.Fault5xx])
	}
}

func TestPermanent500FailsEveryTagWithinBudget(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{FailWrites: http.StatusInternalServerError}})
	tags := tagsOn(t, reg.Host, "acme/app", 5)
	rep, err := newPusher(t, fastRetry(3)).Push(context.Background(), smallImage(t), tags)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Status != pusher.StatusFailed || r.Attempts != 3 {
			t.Errorf("%s: %s after %d attempts, want failed after 3", r.Tag, r.Status, r.Attempts)
		}
		if r.Err == nil || !strings.Contains(r.Err.Error(), "kept failing") || !strings.Contains(r.Err.Error(), "last status 500") {
			t.Errorf("%s error = %v, want it to say the registry kept failing with 500", r.Tag, r.Err)
		}
	}
}

// TestAttemptsReportedAreAttemptsMade proves go-containerregistry's own retries
// are off: the registry sees one upload start per blob per attempt, not three,
// and the tag reports the attempts of the step that failed it.
// The attempts reported are the attempts made, whichever layer makes the
// requests: tagpush's own uploads (POST, then PUT), or go-containerregistry's
// Pusher for a registry that takes only chunked uploads (POST, PATCH, PUT),
// whose own retries must stay off. Each attempt of each blob is one upload
// start (or one PATCH) at the registry.
func TestAttemptsReportedAreAttemptsMade(t *testing.T) {
	blobs := len(blobDigests(t, smallImage(t)))
	tests := []struct {
		name   string
		faults faults.Config
		method string // one request of this method per attempt of each blob
	}{
		{"own uploads", faults.Config{FailWrites: http.StatusServiceUnavailable}, http.MethodPost},
		{"go-containerregistry's chunked uploads", faults.Config{RefuseMonolithic: true, EarlyAnswerFirst: 1 << 20}, http.MethodPatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := testregistry.ForTest(t, testregistry.Options{Faults: tt.faults})
			rep, err := newPusher(t, fastRetry(4)).Push(context.Background(), smallImage(t), tagsOn(t, reg.Host, "acme/app", 1))
			if err != nil {
				t.Fatal(err)
			}
			r := rep.Results[0]
			if r.Status != pusher.StatusFailed || r.Attempts != 4 {
				t.Fatalf("%s after %d attempts, want failed after 4: %v", r.Status, r.Attempts, r.Err)
			}
			if n := reg.Faults.Stats().ByMethod[tt.method]; n != r.Attempts*blobs {
				t.Errorf("registry saw %d %s requests for %d reported attempts of %d blobs", n, tt.method, r.Attempts, blobs)
			}
			if rep.Stats.BlobRetries != 3*blobs || rep.Stats.Retries != 0 || rep.Stats.BackoffWait <= 0 {
				t.Errorf("stats: %d blob retries, %d tag retries, %s waiting; want %d, 0 and some", rep.Stats.BlobRetries, rep.Stats.Retries, rep.Stats.BackoffWait, 3*blobs)
			}
		})
	}
}

func TestProgressIsReportedDuringLongUploads(t *testing.T) {
	// Big enough that the upload outlasts the kernel's socket buffers.
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{UploadBytesPerSec: 16 << 20}})
	img, err := random.Image(8<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []pusher.Progress
	events := pusher.Events{Progress: func(p pusher.Progress) {
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
	}}
	rep, err := newPusher(t, pusher.WithProgressInterval(50*time.Millisecond), pusher.WithEvents(events)).
		Push(context.Background(), img, tagsOn(t, reg.Host, "acme/big", 2))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Results[0].Status != pusher.StatusPushed {
		t.Fatalf("%v", rep.Results[0].Err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 {
		t.Fatalf("%d progress updates during a ~1s upload, want several", len(seen))
	}
	for i, p := range seen {
		if p.Complete > p.Total || (i > 0 && p.Complete < seen[i-1].Complete) {
			t.Errorf("update %d = %+v (previous %+v)", i, p, seen[max(i-1, 0)])
		}
	}
	// Totals grow as uploads start; by the end they cover both 8 MiB layers.
	if last := seen[len(seen)-1]; last.Total < 16<<20 {
		t.Errorf("last update %+v: total below the image's 16 MiB", last)
	}
}

// Progress counts the bytes that go over the wire: a layer the repository
// already has (pushed by an earlier build) is not in the total.
func TestProgressLeavesOutBlobsTheRegistryHas(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{UploadBytesPerSec: 32 << 20}})
	base, err := random.Image(8<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newPusher(t).Push(context.Background(), base, tagsOn(t, reg.Host, "acme/app", 1)); err != nil {
		t.Fatal(err)
	}
	extra, err := random.Layer(8<<20, "application/vnd.oci.image.layer.v1.tar")
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, extra)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last pusher.Progress
	events := pusher.Events{Progress: func(p pusher.Progress) { mu.Lock(); last = p; mu.Unlock() }}
	rep, err := newPusher(t, pusher.WithProgressInterval(20*time.Millisecond), pusher.WithEvents(events)).
		Push(context.Background(), img, tagsOn(t, reg.Host, "acme/app", 2))
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.Status != pusher.StatusPushed {
		t.Fatalf("%v", r.Err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The new layer (8 MiB) and the config: not the 16 MiB already there.
	if last.Total < 8<<20 || last.Total > 9<<20 {
		t.Errorf("last progress %+v: total should be the new 8 MiB layer and the config, not the layers the registry has", last)
	}
}

func TestUnauthorizedIsNotRetried(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{DenyRepo: "acme/app", DenyStatus: http.StatusUnauthorized}})
	tags := tagsOn(t, reg.Host, "acme/app", 2)
	rep, err := newPusher(t, fastRetry(5)).Push(context.Background(), smallImage(t), tags)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Status != pusher.StatusFailed || r.Attempts != 1 {
			t.Errorf("%s: %s after %d attempts, want failed after 1", r.Tag, r.Status, r.Attempts)
		}
		msg := fmt.Sprint(r.Err)
		if !strings.Contains(msg, "authentication failed (401) for "+reg.Host) || !strings.Contains(msg, "check username/password or token scope") {
			t.Errorf("%s error = %q, want it to name the registry and what to check", r.Tag, msg)
		}
	}
}

func TestForbiddenSaysWhatToFix(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{DenyRepo: "acme/app", DenyStatus: http.StatusForbidden}})
	tags := tagsOn(t, reg.Host, "acme/app", 1)
	rep, err := newPusher(t, fastRetry(5)).Push(context.Background(), smallImage(t), tags)
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Results[0]
	if r.Status != pusher.StatusFailed || r.Attempts != 1 || !strings.Contains(fmt.Sprint(r.Err), "permission denied (403) to push "+reg.Host+"/acme/app") {
		t.Errorf("got %s after %d attempts: %v", r.Status, r.Attempts, r.Err)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	tests := []struct {
		name    string
		cfg     faults.Config
		minWait time.Duration
	}{
		{"header seconds", faults.Config{TooManyFirst: 1, RetryAfter: "2"}, 2 * time.Second},
		{"ghcr body", faults.Config{TooManyFirst: 1, GHCRBody: "1.5s"}, 1500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := testregistry.ForTest(t, testregistry.Options{Faults: tt.cfg})
			tags := tagsOn(t, reg.Host, "acme/app", 1)
			rep, err := newPusher(t, pusher.WithRetry(3, 10*time.Millisecond, 10*time.Second)).Push(context.Background(), smallImage(t), tags)
			if err != nil {
				t.Fatal(err)
			}
			if r := rep.Results[0]; r.Status != pusher.StatusPushed || r.Attempts != 2 {
				t.Fatalf("got %s after %d attempts (%v), want pushed on the 2nd", r.Status, r.Attempts, r.Err)
			}
			puts := reg.Faults.Stats().ManifestPutTimes["/v2/acme/app/manifests/v0"]
			if len(puts) != 2 {
				t.Fatalf("registry saw %d manifest PUTs, want 2", len(puts))
			}
			if gap := puts[1].Sub(puts[0]); gap < tt.minWait {
				t.Errorf("second PUT came %s after the 429, want at least %s", gap, tt.minWait)
			}
		})
	}
}

func TestRetryAfterIsCappedByMaxRetryDelay(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{TooManyFirst: 1, RetryAfter: "3600"}})
	tags := tagsOn(t, reg.Host, "acme/app", 1)
	// An uncapped wait would hold the tag for an hour: fail in seconds instead.
	rep := pushWithin(t, 20*time.Second, newPusher(t, pusher.WithRetry(3, 10*time.Millisecond, 300*time.Millisecond)), smallImage(t), tags)
	if r := rep.Results[0]; r.Status != pusher.StatusPushed {
		t.Fatalf("got %s: %v", r.Status, r.Err)
	}
}

func TestResetMidUploadIsRetried(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{ResetFirst: 1}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/app", 1)
	rep, err := newPusher(t, fastRetry(4)).Push(context.Background(), img, tags)
	if err != nil {
		t.Fatal(err)
	}
	// The blob whose upload was reset is sent again; the tag waits for it
	// and is written once.
	r := rep.Results[0]
	if r.Status != pusher.StatusPushed || r.Attempts != 1 || rep.Stats.BlobRetries != 1 {
		t.Fatalf("got %s after %d attempt(s), %d blob retries (%v); want pushed, the blob retried once", r.Status, r.Attempts, rep.Stats.BlobRetries, r.Err)
	}
	st := reg.Faults.Stats()
	if st.Injected["reset"] != 1 {
		t.Fatalf("resets injected = %d, want 1", st.Injected["reset"])
	}
	if rep.Stats.Faults[pusher.FaultReset] != 1 {
		t.Errorf("faults = %v, want one reset", rep.Stats.Faults)
	}
	for d, n := range st.BlobsCommitted {
		if n != 1 {
			t.Errorf("blob %s committed %d times", d, n)
		}
	}
	want, _ := img.Digest()
	assertPresent(t, reg, tags, want.String())
}

func TestLostUploadSessionIsRestarted(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{LoseUploadFirst: 1}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/app", 1)
	rep, err := newPusher(t, fastRetry(3)).Push(context.Background(), img, tags)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.Status != pusher.StatusPushed || rep.Stats.BlobRetries != 1 {
		t.Fatalf("got %s, %d blob retries (%v); want pushed, the upload restarted once", r.Status, rep.Stats.BlobRetries, r.Err)
	}
	if rep.Stats.Faults[pusher.FaultUploadLost] != 1 {
		t.Errorf("faults %v, want one lost upload", rep.Stats.Faults)
	}
	want, _ := img.Digest()
	assertPresent(t, reg, tags, want.String())
}

func TestAdaptiveLimitSettlesUnderGHCRMode(t *testing.T) {
	const capacity = 2
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{Seed: 3, MaxWrites: capacity, Latency: 2 * time.Millisecond}})
	tags := tagsOn(t, reg.Host, "acme/app", 80)
	var mu sync.Mutex
	var changes []string
	events := pusher.Events{LimitChange: func(c pusher.LimitChange) {
		mu.Lock()
		changes = append(changes, fmt.Sprintf("%d->%d", c.Old, c.New))
		mu.Unlock()
	}}
	rep, err := newPusher(t, pusher.WithConcurrency(6), fastRetry(10), pusher.WithProbeInterval(5*time.Second), pusher.WithEvents(events)).
		Push(context.Background(), smallImage(t), tags)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	st := reg.Faults.Stats()
	if st.Injected["500"] == 0 || len(changes) == 0 {
		t.Fatalf("no overload happened (faults %v, limit changes %v): the test proves nothing", st.Injected, changes)
	}
	half := st.Writes[len(st.Writes)/2:]
	peak := 0
	for _, w := range half {
		peak = max(peak, w.InFlight)
	}
	if peak > capacity {
		t.Errorf("in the second half of the run, %d writes were in flight at once; the registry takes %d (limit changes %v)", peak, capacity, changes)
	}
	if got := rep.Stats.FinalLimit[reg.Host]; got > capacity {
		t.Errorf("limit at the end = %d, want at most %d", got, capacity)
	}
	t.Logf("limit changes: %v; first-half peak %d, second-half peak %d", changes, st.PeakWrites, peak)
}

// Cancel in the middle of the manifest PUTs: Push returns at once (requests
// in flight are aborted, nothing new starts), every tag it reports pushed is
// in the registry, and the others are cancelled, none failed.
func TestCancelStopsPromptlyAndReportsNothingFalse(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{Latency: 100 * time.Millisecond}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/app", 30)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelledAt atomic.Int64
	go func() {
		// A third of the tags' PUTs in: the run is well under way.
		for reg.Faults.Stats().ManifestPuts < len(tags)/3 {
			time.Sleep(5 * time.Millisecond)
		}
		cancelledAt.Store(time.Now().UnixNano())
		cancel()
	}()
	rep, err := newPusher(t, pusher.WithConcurrency(2)).Push(ctx, img, tags)
	if err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	if at := cancelledAt.Load(); at == 0 {
		t.Fatal("the run ended before it was cancelled: the test proves nothing")
	} else if d := returned.Sub(time.Unix(0, at)); d > time.Second {
		t.Errorf("Push returned %s after the cancel; requests of 100 ms were in flight", d)
	}
	want, _ := img.Digest()
	var pushed []name.Tag
	cancelled := 0
	for _, r := range rep.Results {
		switch r.Status {
		case pusher.StatusPushed:
			pushed = append(pushed, r.Tag)
		case pusher.StatusCancelled:
			cancelled++
			if r.Err == nil {
				t.Errorf("%s cancelled without an error", r.Tag)
			}
		default:
			t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	if cancelled < len(tags)/2 {
		t.Errorf("%d pushed, %d cancelled: want most cancelled", len(pushed), cancelled)
	}
	assertPresent(t, reg, pushed, want.String())
}

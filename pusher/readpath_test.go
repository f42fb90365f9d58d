package pusher_test

// Tests of the read path: look-ups, verification and blob checks are reads,
// with their own budget per registry; a read's trouble is retried as a read
// and never costs a write or a cut of the write limit.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/pusher"
)

// limitWatch records a run's limit changes.
type limitWatch struct {
	mu      sync.Mutex
	changes []pusher.LimitChange
}

func (w *limitWatch) events() pusher.Events {
	return pusher.Events{LimitChange: func(c pusher.LimitChange) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.changes = append(w.changes, c)
	}}
}

func (w *limitWatch) cuts() []pusher.LimitChange {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []pusher.LimitChange
	for _, c := range w.changes {
		if c.Overload {
			out = append(out, c)
		}
	}
	return out
}

func allPushed(t *testing.T, rep *pusher.Report) {
	t.Helper()
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed {
			t.Errorf("%s: %s after %d attempt(s): %v", r.Tag, r.Status, r.Attempts, r.Err)
		}
	}
}

// On a healthy Distribution on disk (v3.0.0 answers a manifest HEAD 500
// while another tag of the same manifest is being written), a run makes one
// PUT per manifest and per blob, retries no write, keeps its limit, and reads
// at most twice per tag (and once per blob). It did not: the verification HEAD's 500 cost a new
// PUT and a cut of the limit, several times a run.
func TestHealthyRegistryWritesEachManifestAndBlobOnce(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{OnDisk: true})
	img, err := random.Image(256<<10, 5)
	if err != nil {
		t.Fatal(err)
	}
	blobs := len(blobDigests(t, img))
	for run := range 3 {
		reg.Faults.Reset(faults.Config{})
		const n = 20
		tags := tagsOn(t, reg.Host, fmt.Sprintf("acme/healthy-%d", run), n)
		var watch limitWatch
		rep := pushWithin(t, time.Minute, newPusher(t, pusher.WithEvents(watch.events())), img, tags)
		for _, r := range rep.Results {
			if r.Status != pusher.StatusPushed || r.Attempts != 1 {
				t.Errorf("run %d: %s: %s after %d attempt(s): %v; want pushed in 1", run, r.Tag, r.Status, r.Attempts, r.Err)
			}
		}
		st := reg.Faults.Stats()
		if st.ByMethod[http.MethodPut] != blobs+n || st.ByMethod[http.MethodPost] != blobs || st.ManifestPuts != n {
			t.Errorf("run %d: writes %v, %d manifest PUTs; want %d POST and %d PUT (one per blob and per tag)", run, st.ByMethod, st.ManifestPuts, blobs, blobs+n)
		}
		if rep.Stats.Retries != 0 || rep.Stats.BlobRetries != 0 || len(watch.cuts()) != 0 || rep.Stats.FinalLimit[reg.Host] != pusher.DefaultConcurrency {
			t.Errorf("run %d: %d tag and %d blob retries, limit cuts %v, limit at end %d; want none and %d", run,
				rep.Stats.Retries, rep.Stats.BlobRetries, watch.cuts(), rep.Stats.FinalLimit[reg.Host], pusher.DefaultConcurrency)
		}
		// A verification per tag, a check per blob, the list, and one
		// look-up that tells a new repository (the list's 404) from one the
		// registry will not list.
		if st.Reads > n+blobs+2 {
			t.Errorf("run %d: %d reads for %d tags and %d blobs; want at most 1 per tag and per blob, the list and one look-up", run, st.Reads, n, blobs)
		}
	}
}

// A registry (a CDN or proxy in front of it) that answers a manifest HEAD 200
// without Docker-Content-Digest: the tags are read with GET, pushed, and a
// re-run finds them unchanged. Both runs failed every tag.
func TestManifestHeadWithoutDigestIsReadWithGet(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{HeadWithoutDigest: true}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/nodigest", 4)
	allPushed(t, pushWithin(t, time.Minute, newPusher(t, fastRetry(3)), img, tags))
	again := pushWithin(t, time.Minute, newPusher(t, fastRetry(3)), img, tags)
	for _, r := range again.Results {
		if r.Status != pusher.StatusUnchanged {
			t.Errorf("re-run %s: %s: %v; want unchanged", r.Tag, r.Status, r.Err)
		}
	}
	if reg.Faults.Stats().ByMethod[http.MethodGet] == 0 {
		t.Error("no manifest was read with GET")
	}
}

// A registry that answers manifest HEADs 404 or 405 while GET works: every
// tag is pushed with one PUT, in seconds. They were reported failed after
// 104 s and 24 PUTs.
func TestManifestHeadRefusedWhileGetWorks(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusMethodNotAllowed} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{HeadManifestStatus: status}})
			tags := tagsOn(t, reg.Host, "acme/head", 3)
			rep := pushWithin(t, 30*time.Second, newPusher(t), smallImage(t), tags)
			allPushed(t, rep)
			assertPresent(t, reg, tags, rep.Digest)
			if puts := reg.Faults.Stats().ManifestPuts; puts != len(tags) {
				t.Errorf("%d manifest PUTs for %d tags", puts, len(tags))
			}
		})
	}
}

// A registry that accepts the PUT and stores another form of the manifest:
// the tag resolves to another digest. It fails in seconds, after at most
// two PUTs, saying what the tag resolves to. It took 8 attempts of a PUT and
// 10 s of reads each, and said only that the registry kept failing.
func TestRegistryStoringAnotherFormFailsInSeconds(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{RewriteManifests: true}})
	tags := tagsOn(t, reg.Host, "acme/rewrite", 2)
	rep := pushWithin(t, 20*time.Second, newPusher(t), smallImage(t), tags)
	st := reg.Faults.Stats()
	for _, r := range rep.Results {
		msg := pusher.Summary(r.Err)
		if r.Status != pusher.StatusFailed || !strings.Contains(msg, "resolves to sha256:") || !strings.Contains(msg, "accepted PUT") {
			t.Errorf("%s: %s: %q; want failed, saying what it resolves to after an accepted PUT", r.Tag, r.Status, msg)
		}
		if r.Duration > 10*time.Second {
			t.Errorf("%s took %s", r.Tag, r.Duration)
		}
		if puts := len(st.ManifestPutTimes["/v2/acme/rewrite/manifests/"+r.Tag.TagStr()]); puts > 2 {
			t.Errorf("%s: %d PUTs, want at most 2", r.Tag, puts)
		}
	}
}

// Reads have a budget per registry: 300 tags, looked up, verified and then
// looked up again, never put more than the read budget in flight at once.
// 1,000 tags put 703 requests in flight.
func TestReadsAreBoundedPerRegistry(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{Latency: 20 * time.Millisecond}})
	img := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/many", 300)
	allPushed(t, pushWithin(t, 2*time.Minute, newPusher(t), img, tags))
	first := reg.Faults.Stats()
	reg.Faults.Reset(faults.Config{Latency: 20 * time.Millisecond})
	again := pushWithin(t, 2*time.Minute, newPusher(t), img, tags)
	for _, r := range again.Results {
		if r.Status != pusher.StatusUnchanged {
			t.Fatalf("re-run %s: %s: %v", r.Tag, r.Status, r.Err)
		}
	}
	rerun := reg.Faults.Stats()
	for what, st := range map[string]faults.Stats{"first run": first, "re-run": rerun} {
		if st.PeakReads > pusher.ReadBudget || st.PeakInFlight > pusher.ReadBudget+pusher.DefaultConcurrency {
			t.Errorf("%s: %d reads and %d requests in flight at once; the read budget is %d", what, st.PeakReads, st.PeakInFlight, pusher.ReadBudget)
		}
	}
	if rerun.PeakReads < pusher.ReadBudget/2 {
		t.Errorf("re-run: at most %d reads in flight: the look-ups did not run in parallel", rerun.PeakReads)
	}
}

// failWrites is a transport whose first n writes fail before they leave this
// machine, with err.
type failWrites struct {
	inner http.RoundTripper
	n     atomic.Int64
	err   error
}

func (f *failWrites) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead && f.n.Add(-1) >= 0 {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, f.err
	}
	return f.inner.RoundTrip(req)
}

// This machine running out of open files is no registry overload: the writes
// are retried and the limit stays. "too many open files" cut the limit to 1.
func TestLocalResourceErrorIsNotOverload(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	emfile := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	tr := &failWrites{inner: http.DefaultTransport, err: emfile}
	tr.n.Store(4)
	var watch limitWatch
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(5), pusher.WithTransport(tr), pusher.WithEvents(watch.events())), smallImage(t), tagsOn(t, reg.Host, "acme/emfile", 6))
	allPushed(t, rep)
	if cuts := watch.cuts(); len(cuts) != 0 || rep.Stats.FinalLimit[reg.Host] != pusher.DefaultConcurrency {
		t.Errorf("limit cuts %v, limit at end %d; a local error is not the registry's", cuts, rep.Stats.FinalLimit[reg.Host])
	}
	if tr.n.Load() >= 0 {
		t.Fatal("the transport failed no write: the test proves nothing")
	}
}

// Reads that fail (500 to look-ups, checks and verification) are read again:
// no tag makes a second write attempt, no PUT is repeated, the limit stays.
func TestFailedReadsCostNoWriteAndNoCut(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{FailReadsFirst: 12}})
	tags := tagsOn(t, reg.Host, "acme/reads", 5)
	var watch limitWatch
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(8), pusher.WithEvents(watch.events())), smallImage(t), tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusPushed || r.Attempts != 1 {
			t.Errorf("%s: %s after %d attempt(s): %v; want pushed in 1", r.Tag, r.Status, r.Attempts, r.Err)
		}
	}
	st := reg.Faults.Stats()
	if st.Injected["read-500"] != 12 || st.ManifestPuts != len(tags) || len(watch.cuts()) != 0 {
		t.Errorf("%d failed reads, %d manifest PUTs, limit cuts %v; want 12, %d and none", st.Injected["read-500"], st.ManifestPuts, watch.cuts(), len(tags))
	}
}

// A bearer token that expires while a PUT is on its way: go-containerregistry
// fetches a new token and sends the request again, with its body. It sent it
// empty ("ContentLength=879 with Body length 0"), and the tag failed.
func TestExpiredTokenResendsTheBody(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{TokenAuth: true, ShortLivedTokens: 1}})
	tags := tagsOn(t, reg.Host, "acme/token", 10)
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(1)), smallImage(t), tags)
	allPushed(t, rep)
	assertPresent(t, reg, tags, rep.Digest)
	if st := reg.Faults.Stats(); st.Injected["token-expired"] == 0 || st.Tokens < 2 {
		t.Errorf("%d writes found their token expired, %d tokens issued; want some, and a new token", st.Injected["token-expired"], st.Tokens)
	}
}

// An error answer whose body comes a byte a second costs seconds, not the
// minute it takes to arrive.
func TestTricklingErrorBodyCostsSeconds(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{TrickleErrorFirst: 1}})
	tags := tagsOn(t, reg.Host, "acme/trickle", 3)
	rep := pushWithin(t, 30*time.Second, newPusher(t, fastRetry(3)), smallImage(t), tags)
	allPushed(t, rep)
	if reg.Faults.Stats().Injected["trickle"] != 1 {
		t.Fatal("no trickling answer was sent")
	}
}

// Registries in front of ghcr.io's shape (a 500 to a write above 2 in
// flight, and one write in twenty at random): every tag pushed, and the
// limit settles under the level that failed instead of probing it again and
// again; tagpush caused 13-21 injected 500s for 10 tags where oras caused 2-4.
func TestLimitStaysUnderTheLevelThatFailed(t *testing.T) {
	img, err := random.Image(256<<10, 5)
	if err != nil {
		t.Fatal(err)
	}
	// Timing decides part of each run's count (a write the registry still
	// counts as in flight when the next one arrives), so the test judges the
	// median of ten seeds: 5 to 7 here, 13 to 14 where the limit probed
	// above the failed level.
	var counts []int
	for seed := range uint64(10) {
		reg := testregistry.ForTest(t, testregistry.Options{OnDisk: true, Faults: faults.Config{Seed: seed + 1, MaxWrites: 2, WriteErrorRate: 0.05}})
		rep := pushWithin(t, time.Minute, newPusher(t), img, tagsOn(t, reg.Host, "acme/ghcr", 10))
		allPushed(t, rep)
		counts = append(counts, reg.Faults.Stats().Injected["500"])
	}
	slices.Sort(counts)
	if median := counts[len(counts)/2]; median > 10 {
		t.Errorf("injected 500s per run %v, median %d; want the limit to stay under the level that failed", counts, median)
	}
	t.Logf("injected 500s per run: %v", counts)
}

// A registry: source whose blob reads fail: the failure is the source's,
// named as such, retried once (go-containerregistry's retries of the source's
// reads), and never lowers the destination's limit. A 500 from the source
// read as the destination's: 5xx, retried, a cut of the limit.
func TestSourceFailuresAreTheSources(t *testing.T) {
	src := testregistry.ForTest(t, testregistry.Options{})
	dst := testregistry.ForTest(t, testregistry.Options{})
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(src.Direct + "/acme/src:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	open := func() v1.Image {
		srcRef, _ := name.NewTag(src.Host + "/acme/src:1")
		i, err := remote.Image(srcRef)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}

	img2 := open()
	if _, err := img2.ConfigFile(); err != nil { // read before the fault starts
		t.Fatal(err)
	}
	src.Faults.Reset(faults.Config{FailBlobGetsFirst: 1000})
	var watch limitWatch
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(4), pusher.WithEvents(watch.events())), img2, tagsOn(t, dst.Host, "acme/copy", 2))
	for _, r := range rep.Results {
		if r.Status != pusher.StatusFailed || r.Attempts != 1 || !strings.Contains(pusher.Summary(r.Err), "source") {
			t.Errorf("%s: %s after %d attempt(s): %q; want failed after 1, naming the source", r.Tag, r.Status, r.Attempts, pusher.Summary(r.Err))
		}
	}
	if cuts := watch.cuts(); len(cuts) != 0 || rep.Stats.Faults[pusher.FaultSource] == 0 || rep.Stats.Faults[pusher.Fault5xx] != 0 {
		t.Errorf("limit cuts %v, faults %v; want the source's failures counted as the source's, no cut", cuts, rep.Stats.Faults)
	}

	src.Faults.Reset(faults.Config{FailBlobGetsFirst: 1})
	allPushed(t, pushWithin(t, time.Minute, newPusher(t, fastRetry(4)), open(), tagsOn(t, dst.Host, "acme/copy2", 2)))
}

// A non-distributable (foreign) layer stays where its URLs point, as
// go-containerregistry and oras leave it: only the other blobs go up.
func TestForeignLayersAreNotUploaded(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{AllowForeignURLs: true})
	base := smallImage(t)
	foreign, err := random.Layer(32<<10, types.OCIRestrictedLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: foreign, MediaType: types.OCIRestrictedLayer, URLs: []string{"https://example.com/base.tar.gz"}})
	if err != nil {
		t.Fatal(err)
	}
	tags := tagsOn(t, reg.Host, "acme/foreign", 2)
	rep := pushWithin(t, time.Minute, newPusher(t), img, tags)
	allPushed(t, rep)
	d, _ := foreign.Digest()
	if n := reg.Faults.Stats().BlobsCommitted[d.String()]; n != 0 {
		t.Errorf("the foreign layer was uploaded %d time(s)", n)
	}
	assertPresent(t, reg, tags, rep.Digest)
}

// JFrog Artifactory answers a read of a tag that does not exist 403: the
// look-up takes it for "not there", and the tags are pushed.
func TestForbiddenLookUpIsNotThere(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{ForbidMissingTags: true}})
	tags := tagsOn(t, reg.Host, "acme/jfrog", 3)
	rep := pushWithin(t, time.Minute, newPusher(t, pusher.WithOverwrite(false)), smallImage(t), tags)
	allPushed(t, rep)
	assertPresent(t, reg, tags, rep.Digest)
}

// Cancel while every read is failing: the run ends promptly, reports no tag
// pushed that is not there, and leaves no read slot or goroutine behind.
func TestCancelDuringReadRetries(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{FailReadsFirst: 1 << 30}})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	rep, err := newPusher(t).Push(ctx, smallImage(t), tagsOn(t, reg.Host, "acme/cancel", 8))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Push returned %s after its context ended", d)
	}
	for _, r := range rep.Results {
		if r.Status == pusher.StatusPushed || r.Status == pusher.StatusUnchanged {
			t.Errorf("%s: %s, with every read failing", r.Tag, r.Status)
		}
	}
}

// A registry on this machine may hand out upload Locations by another name
// for this machine: the guard resolves "localhost" and finds the registry
// there too.
func TestUploadLocationOnTheRegistrysOwnMachine(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	_, port, _ := net.SplitHostPort(reg.Host)
	reg.Faults.Reset(faults.Config{UploadLocation: "localhost:" + port})
	tags := tagsOn(t, reg.Host, "acme/local", 2)
	rep := pushWithin(t, time.Minute, newPusher(t), smallImage(t), tags)
	allPushed(t, rep)
	assertPresent(t, reg, tags, rep.Digest)
}

package pusher_test

// Every shortcut tagpush takes (the tag list, a mount, another repository's
// upload, the PUT answer's digest, a write slot kept between requests) is
// only a shortcut: when it fails, hangs or lies, the push takes the plain
// way at once and reports the truth.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testimage"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/pusher"
)

// A tag PUT answered 400 MANIFEST_BLOB_UNKNOWN (a blob lost between its
// upload and the PUT) starts the index's blob phase again, which writes the
// child manifests. No tag may hold a write slot while it waits for that
// phase: 12 tags of a 2-platform index end pushed in seconds. Tags that kept
// their slot while waiting took every slot the phase needed: 3/12 after the
// 90 s timeout.
func TestLostBlobDuringTagPutsDoesNotDeadlock(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{BlobUnknownTagPutsFirst: 1}})
	idx, err := testimage.Index("linux/amd64", "linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	tags := tagsOn(t, reg.Host, "acme/lostblob", 12)
	rep := pushWithin(t, 20*time.Second, newPusher(t, fastRetry(5), pusher.WithTimeout(15*time.Second)), idx, tags)
	allPushed(t, rep)
	assertPresent(t, reg, tags, rep.Digest)
	if n := reg.Faults.Stats().Injected["blob-unknown"]; n != 1 {
		t.Fatalf("%d lost blobs injected, want 1", n)
	}
}

// A registry (or a proxy, a virtual repository) that answers the tag PUT
// 201 with the new digest and does not keep it: the tags, which held an old
// digest, still hold it, and every one is reported failed. The PUT answer's
// digest and a tag list that lists the (old) tag were taken as proof: 3/3
// "pushed", exit 0.
func TestPutAnswerIsNotProof(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	old := smallImage(t)
	tags := tagsOn(t, reg.Host, "acme/phantom", 3)
	before := pushWithin(t, time.Minute, newPusher(t), old, tags)
	allPushed(t, before)

	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	reg.Faults.Reset(faults.Config{PhantomTagPuts: true})
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(2), pusher.WithVerifyWindow(300*time.Millisecond)), img, tags)
	for _, r := range rep.Results {
		if r.Status != pusher.StatusFailed || !strings.Contains(pusher.Summary(r.Err), before.Digest) {
			t.Errorf("%s: %s: %v; want failed, still at %s", r.Tag, r.Status, r.Err, before.Digest)
		}
	}
	assertPresent(t, reg, tags, before.Digest)
	if n := reg.Faults.Stats().Injected["phantom-put"]; n == 0 {
		t.Fatal("no PUT was dropped")
	}
}

// A tag list that fails, hangs, comes back cut or without its field, 404s
// while the manifests read, or pages with an unquoted relative Link (RFC
// 8288 allows it; olareg sends it) is dropped for per-tag reads at once: a
// re-run finds every tag unchanged, writes nothing, and takes about what
// per-tag reads take; a dry run plans unchanged. Before: a hanging list cost
// 0/4 tags in 90 s, a 500 52 s, a 404 re-PUT every tag, and the unquoted
// Link read one page of 1,100 tags.
func TestTagListShortcutFallsBack(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	img := smallImage(t)
	tests := []struct {
		name string
		cfg  faults.Config
		n    int
	}{
		{"500", faults.Config{TagList: "500"}, 4},
		{"404", faults.Config{TagList: "404"}, 5},
		{"hang", faults.Config{TagList: "hang"}, 4},
		{"cut", faults.Config{TagList: "cut"}, 4},
		{"nofield", faults.Config{TagList: "nofield"}, 4},
		{"unquoted-paged", faults.Config{TagListPage: 10}, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tags := tagsOn(t, reg.Host, "acme/list-"+tt.name, tt.n)
			reg.Faults.Reset(faults.Config{})
			allPushed(t, pushWithin(t, time.Minute, newPusher(t), img, tags))

			reg.Faults.Reset(tt.cfg)
			start := time.Now()
			rep := pushWithin(t, 15*time.Second, newPusher(t), img, tags)
			for _, r := range rep.Results {
				if r.Status != pusher.StatusUnchanged {
					t.Errorf("re-run %s: %s: %v; want unchanged", r.Tag, r.Status, r.Err)
				}
			}
			st := reg.Faults.Stats()
			if st.ByMethod[http.MethodPut] != 0 || st.Injected["tag-list"] == 0 {
				t.Errorf("re-run: %d PUTs, %d tag lists shaped; want none, and the fault injected", st.ByMethod[http.MethodPut], st.Injected["tag-list"])
			}
			// The list's own time limit (a few seconds) is the most a
			// hanging one costs; every other fault costs no wait at all.
			if took := time.Since(start); took > 6*time.Second {
				t.Errorf("re-run took %s", took)
			}
			plan := newPusher(t).Plan(context.Background(), []pusher.Image{{Name: "img", Open: opened(img), Tags: tags}})
			for _, r := range plan.Results {
				if r.Status != pusher.StatusUnchanged {
					t.Errorf("plan %s: %s: %v; want unchanged", r.Tag, r.Status, r.Err)
				}
			}
		})
	}
}

// A mount is an offer: refused with any answer (401, 403 for a token without
// pull on the other repository, 404, 405, a 500), the blob is uploaded
// plainly at once, the mount is not asked again, and every tag is pushed.
// Before: 0-2 of 6 tags, errors that blamed the token or the repository name,
// 64 mount requests in 26 s for a 500.
func TestRefusedMountIsFollowedByAnUpload(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusInternalServerError} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{MountStatus: status}})
			img, err := random.Image(64<<10, 2)
			if err != nil {
				t.Fatal(err)
			}
			var tags []name.Tag
			for _, repo := range []string{"acme/a", "acme/b", "acme/c"} {
				tags = append(tags, tagsOn(t, reg.Host, repo, 2)...)
			}
			// One write at a time, so that "not asked again" is exact.
			start := time.Now()
			rep := pushWithin(t, 30*time.Second, newPusher(t, pusher.WithConcurrency(1)), img, tags)
			allPushed(t, rep)
			assertPresent(t, reg, tags, rep.Digest)
			st := reg.Faults.Stats()
			if st.MountRequests != 1 {
				t.Errorf("%d mount requests; want one: a registry that refused a mount is not asked again", st.MountRequests)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
}

// A mount answered 202 (a registry that will not mount opens an upload
// session instead): the blob goes up in that session, no second one is
// opened, and later blobs are not offered as mounts.
func TestRefusedMountUsesTheSessionItOpened(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{RefuseMounts: true}})
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	blobs := len(blobDigests(t, img))
	tags := append(tagsOn(t, reg.Host, "acme/s1", 2), tagsOn(t, reg.Host, "acme/s2", 2)...)
	rep := pushWithin(t, 30*time.Second, newPusher(t), img, tags)
	allPushed(t, rep)
	st := reg.Faults.Stats()
	if posts := st.ByMethod[http.MethodPost]; posts != 2*blobs || st.MountRequests > 1 {
		t.Errorf("%d POSTs and %d mount requests for %d blobs in 2 repositories; want %d (one session per blob and repository) and at most one mount",
			posts, st.MountRequests, blobs, 2*blobs)
	}
}

// go-containerregistry's registry (like Artifactory) answers mounts 202 but
// keeps one blob store for every repository: three images on a common base,
// each to its own repository, upload each distinct layer once, because a
// blob another repository has just uploaded is looked for before it goes up
// again. It was 1.6-1.8x.
func TestSharedBlobStoreUploadsEachLayerOnce(t *testing.T) {
	layer := faults.New(ggcrregistry.New(), faults.Config{})
	srv := httptest.NewServer(layer)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	imgs := services(t, 3)
	distinct := make(map[string]int64)
	var images []pusher.Image
	for i, img := range imgs {
		for d, size := range blobDigests(t, img) {
			distinct[d] = size
		}
		images = append(images, pusher.Image{Name: fmt.Sprint(i), Open: opened(img), Tags: tagsOn(t, host, fmt.Sprintf("acme/svc%d", i), 2)})
	}
	rep := pushAllWithin(t, 30*time.Second, newPusher(t), images)
	allPushed(t, rep)
	var want int64
	for _, size := range distinct {
		want += size
	}
	if got := layer.Stats().BlobBytes; got > want+want/20 {
		t.Errorf("uploaded %d blob bytes for %d distinct (%.2fx); want each layer once", got, want, float64(got)/float64(want))
	}
	for _, r := range rep.Results {
		if d, err := remote.Head(r.Tag); err != nil || d.Digest.String() != r.Digest {
			t.Errorf("%s: %v, %v", r.Tag, d, err)
		}
	}
}

// One image to two repositories of a registry, one of which hangs every
// write: the healthy repository's tags are pushed in seconds (it uploads a
// blob itself once the other's upload of it has moved no byte for a few
// seconds), and only the stalled repository's tags fail. The healthy one
// waited without bound: 0/2 after 60 s.
func TestStalledRepositoryFailsOnlyItsOwnTags(t *testing.T) {
	// The healthy repository's requests come late, so that the stalled
	// one claims the blobs.
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{StallRepo: "acme/stuck", SlowRepo: "acme/fine", Slow: 300 * time.Millisecond}})
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	stuck := tagsOn(t, reg.Host, "acme/stuck", 2)
	healthy := tagsOn(t, reg.Host, "acme/fine", 2)
	rep := pushWithin(t, 40*time.Second, newPusher(t, pusher.WithTimeout(15*time.Second)), img, append(stuck, healthy...))
	for _, r := range rep.Results {
		wantOK := r.Tag.RepositoryStr() == "acme/fine"
		if r.Status.OK() != wantOK {
			t.Errorf("%s: %s after %s: %v", r.Tag, r.Status, r.Duration, r.Err)
		}
		if wantOK && r.Duration > 10*time.Second {
			t.Errorf("%s took %s: it waited on the stalled repository", r.Tag, r.Duration)
		}
	}
	assertPresent(t, reg, healthy, rep.Digest)
}

// A token service on another port of the registry's own address (docker_auth
// on :5001, GitLab reached by its IP) signs tagpush in: go-containerregistry
// refuses a loopback or private realm unless it is the registry's exact
// host:port, and tagpush lets the registry's own host through at another
// port. Every tag failed: "realm host is a private or link-local address".
func TestTokenServiceOnAnotherPortOfTheRegistrysAddress(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{TokenAuth: true}})
	tokens := httptest.NewServer(reg.Faults) // the same layer serves /token
	t.Cleanup(tokens.Close)
	reg.Faults.Reset(faults.Config{TokenAuth: true, TokenRealm: tokens.URL + "/token"})
	tags := tagsOn(t, reg.Host, "acme/realm", 3)
	rep := pushWithin(t, 30*time.Second, newPusher(t), smallImage(t), tags)
	allPushed(t, rep)
	if n := reg.Faults.Stats().Tokens; n == 0 {
		t.Error("no token was issued")
	}
}

// A registry's refusal is said in its own words in the tag's one line: an
// immutable tag's 403 DENIED "cannot overwrite tag" is not blamed on the
// token, and ECR's 400 TAG_INVALID says why. Before, the table said "check
// the token has write access" and the reason was only in the debug log.
func TestRefusalsSayTheRegistrysWords(t *testing.T) {
	tests := []struct {
		status        int
		code, message string
		not           string
	}{
		{http.StatusForbidden, "DENIED", "cannot overwrite tag v0: tag is immutable", "write access"},
		{http.StatusBadRequest, "TAG_INVALID", "The image tag already exists in the repository and cannot be overwritten", "check the image"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{TagPutStatus: tt.status, TagPutCode: tt.code, TagPutMessage: tt.message}})
			tags := tagsOn(t, reg.Host, "acme/words", 1)
			rep := pushWithin(t, 30*time.Second, newPusher(t, fastRetry(3)), smallImage(t), tags)
			for _, r := range rep.Results {
				sum := pusher.Summary(r.Err)
				if r.Status != pusher.StatusFailed || !strings.Contains(sum, tt.code) || !strings.Contains(sum, tt.message[:20]) || strings.Contains(sum, tt.not) {
					t.Errorf("%s: %s: %q; want failed with the registry's %s %q", r.Tag, r.Status, sum, tt.code, tt.message)
				}
			}
		})
	}
}

// Harbor answers a read of a tag whose image a vulnerability policy blocks
// 412: that says nothing of what the tag holds, so a push writes it and a
// dry run plans the write, instead of "would fail".
func TestPolicyBlockedLookUpIsUnknown(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	tags := tagsOn(t, reg.Host, "acme/policy", 2)
	allPushed(t, pushWithin(t, time.Minute, newPusher(t), smallImage(t), tags))
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	reg.Faults.Reset(faults.Config{PolicyBlockFirst: 2})
	plan := newPusher(t).Plan(context.Background(), []pusher.Image{{Name: "img", Open: opened(img), Tags: tags}})
	for _, r := range plan.Results {
		if !r.Status.OK() {
			t.Errorf("plan %s: %s: %v; want a write planned", r.Tag, r.Status, r.Err)
		}
	}
	reg.Faults.Reset(faults.Config{PolicyBlockFirst: 2})
	allPushed(t, pushWithin(t, time.Minute, newPusher(t), img, tags))
}

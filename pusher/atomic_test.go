package pusher_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/pusher"
)

// release is a release's tags: a new version in two repositories, and the
// floating tags of both, which hold the previous release.
func release(t *testing.T, reg *testregistry.Registry, prefix string) (fresh, floating []name.Tag, old v1.Image) {
	t.Helper()
	old = smallImage(t)
	tag := func(s string) name.Tag {
		tg, err := name.NewTag(s)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	for _, repo := range []string{prefix + "-a", prefix + "-b"} {
		for _, tg := range []string{"1.4", "latest"} {
			floating = append(floating, tag(reg.Host+"/acme/"+repo+":"+tg))
		}
		fresh = append(fresh, tag(reg.Host+"/acme/"+repo+":1.4.3"))
	}
	allPushed(t, pushWithin(t, time.Minute, newPusher(t), old, floating))
	return fresh, floating, old
}

func newImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// With atomic, a release whose new tag fails moves no floating tag: each is
// held back at the digest it held, and says so. Without it, latest moved
// while 1.4.3 failed.
func TestAtomicHoldsFloatingTagsBack(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	fresh, floating, old := release(t, reg, "hold")
	oldDigest, _ := old.Digest()
	reg.Faults.Reset(faults.Config{DenyTagPut: "acme/hold-b:1.4.3"})
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(2), pusher.WithAtomic(true)), newImage(t), append(fresh, floating...))
	for _, r := range rep.Results {
		switch {
		case r.Tag.String() == fresh[1].String():
			if r.Status != pusher.StatusFailed {
				t.Errorf("%s: %s, want failed", r.Tag, r.Status)
			}
		case r.Tag.TagStr() == "1.4.3":
			if r.Status != pusher.StatusPushed {
				t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
			}
		default:
			if r.Status != pusher.StatusFailed || !strings.Contains(pusher.Summary(r.Err), "held back at "+oldDigest.String()) {
				t.Errorf("%s: %s: %v; want held back", r.Tag, r.Status, r.Err)
			}
		}
	}
	assertPresent(t, reg, floating, oldDigest.String())
	if puts := reg.Faults.Stats().ManifestPutTimes["/v2/acme/hold-a/manifests/latest"]; len(puts) != 0 {
		t.Errorf("latest was written %d times", len(puts))
	}
}

// With atomic, a floating tag that fails after others moved: every moved one
// is put back to the digest it held, read back, and reported so.
func TestAtomicPutsMovedTagsBack(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	fresh, floating, old := release(t, reg, "back")
	oldDigest, _ := old.Digest()
	reg.Faults.Reset(faults.Config{DenyTagPut: "acme/back-b:latest"})
	rep := pushWithin(t, time.Minute, newPusher(t, fastRetry(2), pusher.WithAtomic(true)), newImage(t), append(fresh, floating...))
	putBack := 0
	for _, r := range rep.Results {
		sum := pusher.Summary(r.Err)
		switch {
		case r.Tag.TagStr() == "1.4.3":
			if r.Status != pusher.StatusPushed {
				t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
			}
		case r.Status != pusher.StatusFailed:
			t.Errorf("%s: %s; want failed (put back, or refused)", r.Tag, r.Status)
		case strings.Contains(sum, "put back to "+oldDigest.String()):
			putBack++
		}
	}
	if putBack != 3 {
		t.Errorf("%d tags put back, want the 3 that moved", putBack)
	}
	assertPresent(t, reg, floating, oldDigest.String())
}

// Without atomic, floating tags are still written after the new ones of
// their repository; and with atomic, a whole release is pushed as usual.
func TestFloatingTagsMoveLast(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	for _, atomic := range []bool{false, true} {
		prefix := "last"
		if atomic {
			prefix = "whole"
		}
		fresh, floating, _ := release(t, reg, prefix)
		reg.Faults.Reset(faults.Config{})
		img := newImage(t)
		rep := pushWithin(t, time.Minute, newPusher(t, pusher.WithAtomic(atomic)), img, append(floating, fresh...))
		allPushed(t, rep)
		d, _ := img.Digest()
		assertPresent(t, reg, append(fresh, floating...), d.String())
		times := reg.Faults.Stats().ManifestPutTimes
		for _, f := range fresh {
			newAt := times["/v2/"+f.RepositoryStr()+"/manifests/1.4.3"]
			for _, tag := range []string{"1.4", "latest"} {
				movedAt := times["/v2/"+f.RepositoryStr()+"/manifests/"+tag]
				if len(newAt) != 1 || len(movedAt) != 1 || movedAt[0].Before(newAt[0]) {
					t.Errorf("atomic %t: %s PUT at %v, %s at %v; want the new tag first", atomic, f, newAt, tag, movedAt)
				}
			}
		}
	}
}

package pusher_test

// Tests of a run with several images: one budget per registry, blobs once
// per repository and mounted across repositories, sources opening while
// others push, one image failing alone.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/pusher"
)

func opened(img v1.Image) func(context.Context) (remote.Taggable, []pusher.Referrer, error) {
	return func(context.Context) (remote.Taggable, []pusher.Referrer, error) { return img, nil, nil }
}

// service is one of four microservice images, each on a base layer they share.
func services(t *testing.T, n int) []v1.Image {
	t.Helper()
	base, err := random.Image(512<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Image
	for range n {
		own, err := random.Layer(256<<10, "application/vnd.oci.image.layer.v1.tar")
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(base, own)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, img)
	}
	return out
}

func pushAllWithin(t *testing.T, limit time.Duration, p *pusher.Pusher, images []pusher.Image) *pusher.Report {
	t.Helper()
	done := make(chan *pusher.Report, 1)
	go func() { done <- p.PushAll(context.Background(), images) }()
	select {
	case rep := <-done:
		return rep
	case <-time.After(limit):
		t.Fatalf("PushAll has not returned after %s", limit)
		return nil
	}
}

// Four images pushed at once, as four processes (one limit each) push them,
// put 4 x the limit of writes in flight at the registry; in one run, the
// writes of all of them share the registry's limit.
func TestImagesShareOneWriteLimitPerRegistry(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{Latency: 20 * time.Millisecond}})
	imgs := services(t, 4)
	const limit = 2

	var wg sync.WaitGroup
	for i, img := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pushWithin(t, time.Minute, newPusher(t, pusher.WithConcurrency(limit)), img, tagsOn(t, reg.Host, fmt.Sprintf("acme/apart-%d", i), 3))
		}()
	}
	wg.Wait()
	if apart := reg.Faults.Stats().PeakWrites; apart <= limit {
		t.Fatalf("four runs apart put at most %d writes in flight: the test proves nothing", apart)
	}

	reg.Faults.Reset(faults.Config{Latency: 20 * time.Millisecond})
	var images []pusher.Image
	for i, img := range imgs {
		images = append(images, pusher.Image{Name: fmt.Sprintf("svc-%d", i), Open: opened(img), Tags: tagsOn(t, reg.Host, fmt.Sprintf("acme/svc-%d", i), 3)})
	}
	rep := pushAllWithin(t, time.Minute, newPusher(t, pusher.WithConcurrency(limit)), images)
	allPushed(t, rep)
	if peak := reg.Faults.Stats().PeakWrites; peak > limit {
		t.Errorf("one run of four images put %d writes in flight at the registry; the limit is %d", peak, limit)
	}
	for i, res := range rep.Images {
		want, _ := imgs[i].Digest()
		if res.Name != fmt.Sprintf("svc-%d", i) || res.Digest != want.String() || res.Err != nil {
			t.Errorf("image %d: %+v, want svc-%d at %s", i, res, i, want)
		}
	}
	for _, r := range rep.Results {
		if !strings.HasPrefix(r.Image, "svc-") || !strings.Contains(r.Tag.String(), r.Image) {
			t.Errorf("%s is reported for image %q", r.Tag, r.Image)
		}
	}
}

// One image to three repositories of a registry (mirror, staging, release):
// its blobs go up once, and the other repositories mount them.
func TestOneImageToSeveralRepositoriesUploadsOnce(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	img, err := random.Image(1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	var tags []name.Tag
	for _, repo := range []string{"acme/mirror", "acme/staging", "acme/release"} {
		tags = append(tags, tagsOn(t, reg.Host, repo, 2)...)
	}
	rep := pushWithin(t, time.Minute, newPusher(t), img, tags)
	allPushed(t, rep)
	assertPresent(t, reg, tags, rep.Digest)
	st := reg.Faults.Stats()
	blobs := blobDigests(t, img)
	var size int64
	for _, s := range blobs {
		size += s
	}
	if st.BlobBytes != size || st.Mounts != 2*len(blobs) {
		t.Errorf("%d blob bytes sent and %d mounts; want the image's %d once and %d mounts", st.BlobBytes, st.Mounts, size, 2*len(blobs))
	}
	// The report says so: what the registry saw, per registry and image.
	want := pusher.Wire{Uploaded: len(blobs), UploadedBytes: size, Mounted: 2 * len(blobs)}
	if got := rep.Stats.Wire[reg.Host]; got != want {
		t.Errorf("reported %+v for the registry, want %+v", got, want)
	}
	if got := rep.Images[0].Wire; got != want {
		t.Errorf("reported %+v for the image, want %+v", got, want)
	}
	// A re-run sends nothing: every blob is already there.
	again := pushWithin(t, time.Minute, newPusher(t), img, tags)
	if got := again.Stats.Wire[reg.Host]; got.Uploaded != 0 || got.Mounted != 0 {
		t.Errorf("re-run reported %+v", got)
	}
}

// A registry that will not mount answers with an upload session: the blob
// goes up into it, and every tag is pushed.
func TestRefusedMountFallsBackToAnUpload(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{RefuseMounts: true}})
	img, err := random.Image(256<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	tags := append(tagsOn(t, reg.Host, "acme/one", 2), tagsOn(t, reg.Host, "acme/two", 2)...)
	rep := pushWithin(t, time.Minute, newPusher(t), img, tags)
	allPushed(t, rep)
	assertPresent(t, reg, tags, rep.Digest)
	st := reg.Faults.Stats()
	if st.Mounts != 0 || rep.Stats.BlobRetries != 0 {
		t.Errorf("%d mounts, %d blob retries; want the refused mounts to become uploads at once", st.Mounts, rep.Stats.BlobRetries)
	}
}

// Images on a common base, to one repository: the base's layers go up once;
// to a repository each: once, and mounted into the others.
func TestSharedBaseLayersGoUpOnce(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	imgs := services(t, 3)
	var images []pusher.Image
	for i, img := range imgs {
		images = append(images, pusher.Image{Name: fmt.Sprint(i), Open: opened(img), Tags: []name.Tag{tagsOn(t, reg.Host, "acme/app", 3)[i]}})
	}
	allPushed(t, pushAllWithin(t, time.Minute, newPusher(t), images))
	for d, n := range reg.Faults.Stats().BlobsCommitted {
		if n != 1 {
			t.Errorf("blob %s went up %d times to one repository", d, n)
		}
	}

	reg.Faults.Reset(faults.Config{})
	images = nil
	for i, img := range imgs {
		images = append(images, pusher.Image{Name: fmt.Sprint(i), Open: opened(img), Tags: tagsOn(t, reg.Host, fmt.Sprintf("acme/other-%d", i), 1)})
	}
	allPushed(t, pushAllWithin(t, time.Minute, newPusher(t), images))
	// The base's two layers go up once and are mounted into the other two
	// repositories; each image's own layer and config go up once.
	st := reg.Faults.Stats()
	for d, n := range st.BlobsCommitted {
		if n != 1 {
			t.Errorf("blob %s went up %d times", d, n)
		}
	}
	if st.Mounts != 4 || len(st.BlobsCommitted) != 2+3+3 {
		t.Errorf("%d mounts, %d blobs uploaded; want 4 (the base's 2 layers into 2 repositories) and 8", st.Mounts, len(st.BlobsCommitted))
	}
}

// An image whose source cannot be opened fails its own tags, saying why;
// the others are pushed.
func TestOneImageFailingDoesNotStopTheOthers(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	imgs := services(t, 2)
	broken := errors.New("no image api:ci in the Docker engine")
	images := []pusher.Image{
		{Name: "api", Open: func(context.Context) (remote.Taggable, []pusher.Referrer, error) { return nil, nil, broken }, Tags: tagsOn(t, reg.Host, "acme/api", 2)},
		{Name: "web", Open: opened(imgs[0]), Tags: tagsOn(t, reg.Host, "acme/web", 2)},
	}
	rep := pushAllWithin(t, time.Minute, newPusher(t), images)
	for _, r := range rep.Results {
		switch r.Image {
		case "api":
			if r.Status != pusher.StatusFailed || !strings.Contains(pusher.Summary(r.Err), "no image api:ci") {
				t.Errorf("%s: %s: %v; want failed, saying why its image could not be read", r.Tag, r.Status, r.Err)
			}
		case "web":
			if r.Status != pusher.StatusPushed {
				t.Errorf("%s: %s: %v", r.Tag, r.Status, r.Err)
			}
		}
	}
	if rep.Images[0].Err == nil || rep.Images[1].Err != nil || rep.Images[1].Digest == "" {
		t.Errorf("images %+v", rep.Images)
	}
}

// Images open while others push: an image whose source opens only once
// another image's tags are in (a Docker engine's export running beside the
// uploads) is not waited for before anything starts.
func TestSourcesOpenWhileOthersPush(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	imgs := services(t, 2)
	firstIn := make(chan struct{})
	var once sync.Once
	events := pusher.Events{TagDone: func(r pusher.Result) {
		if r.Image == "fast" {
			once.Do(func() { close(firstIn) })
		}
	}}
	images := []pusher.Image{
		{Name: "slow", Open: func(ctx context.Context) (remote.Taggable, []pusher.Referrer, error) {
			select {
			case <-firstIn:
				return imgs[0], nil, nil
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}, Tags: tagsOn(t, reg.Host, "acme/slow", 2)},
		{Name: "fast", Open: opened(imgs[1]), Tags: tagsOn(t, reg.Host, "acme/fast", 2)},
	}
	allPushed(t, pushAllWithin(t, 30*time.Second, newPusher(t, pusher.WithEvents(events)), images))
}

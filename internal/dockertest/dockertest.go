// Package dockertest gives tests a real Docker engine: the one DOCKER_HOST
// (or the default socket) names. Where CI says an engine runs
// (TAGPUSH_DOCKER=1, which .ci/run sets after starting dockerd), a test that
// finds none fails; elsewhere it is skipped, with one line saying why.
package dockertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/moby/client"

	"github.com/tagpush/tagpush/internal/testregistry"
)

// Required is the variable .ci/run sets when it has started an engine.
const Required = "TAGPUSH_DOCKER"

// Engine returns the engine's address (DOCKER_HOST, or the default socket)
// once it answers.
func Engine(t testing.TB) string {
	t.Helper()
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = client.DefaultDockerHost
	}
	cli, err := client.New(client.WithHost(host))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = cli.Ping(ctx, client.PingOptions{})
		cli.Close()
	}
	if err != nil {
		if os.Getenv(Required) == "1" {
			t.Fatalf("%s=1 says a Docker engine runs, and none answers at %s: %v", Required, host, err)
		}
		msg := fmt.Sprintf("no Docker engine at %s (start one and set DOCKER_HOST; .ci/run does): %v", host, err)
		// go test shows a passing package's skips only with -v: say it
		// once on the terminal, as the registry's first build does.
		skipOnce.Do(func() { testregistry.Say("tagpush: the Docker engine tests are skipped: " + msg + "\n") })
		t.Skip(msg)
	}
	return host
}

var skipOnce sync.Once

// Load puts images into the engine at host under their names (as `docker
// load` of a `docker save` tarball would), and removes them when the test
// ends. It returns each image's ID in the engine.
func Load(t testing.TB, host string, images map[string]v1.Image) map[string]string {
	t.Helper()
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	refs := make(map[name.Reference]v1.Image, len(images))
	for n, img := range images {
		tag, err := name.NewTag(n)
		if err != nil {
			t.Fatal(err)
		}
		refs[tag] = img
	}
	var buf bytes.Buffer
	if err := tarball.MultiRefWrite(refs, &buf); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := cli.ImageLoad(ctx, &buf)
	if err != nil {
		t.Fatalf("load images into the Docker engine: %v", err)
	}
	_, _ = io.Copy(io.Discard, res)
	res.Close()
	ids := make(map[string]string, len(images))
	for n := range images {
		inspect, err := cli.ImageInspect(ctx, n)
		if err != nil {
			t.Fatalf("image %s is not in the engine after loading it: %v", n, err)
		}
		ids[n] = inspect.ID
		t.Cleanup(func() {
			_, _ = cli.ImageRemove(context.Background(), n, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		})
	}
	return ids
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"

	"github.com/tagpush/tagpush/job"
)

// contender pushes img to tags and returns how many it says it pushed and the
// errors it met. Each runs in its own process, so its peak memory is its own.
type contender func(ctx context.Context, w worker) (int, []string)

var contenders = map[string]contender{
	"naive-seq": naiveSeq,
	"naive-par": naivePar,
	"floor":     floor,
	"oras":      orasCp,
	"tagpush":   tagpush,
}

// order is the order contenders run and are listed in.
var order = []string{"naive-seq", "naive-par", "floor", "oras", "tagpush"}

// orasCp is the best peer: `oras cp` (oras-go's copy) from the same OCI
// layout to every tag in one call, with its default settings (concurrency
// 3, its own retry policy). It says nothing per tag: exit 0 claims them all.
func orasCp(ctx context.Context, w worker) (int, []string) {
	bin := os.Getenv(orasEnv)
	if bin == "" {
		return 0, []string{orasEnv + " is not set"}
	}
	digest, err := w.digest()
	if err != nil {
		return 0, []string{err.Error()}
	}
	var names []string
	for _, t := range w.tags() {
		names = append(names, t.TagStr())
	}
	dst := fmt.Sprintf("%s/%s:%s", w.Registry, w.Repo, strings.Join(names, ","))
	cmd := exec.CommandContext(ctx, bin, "cp", "--from-oci-layout", strings.TrimPrefix(w.Source, "oci:")+"@"+digest.String(), "--to-plain-http", dst)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, []string{fmt.Sprintf("oras cp: %v: %s", err, lastLine(out.String()))}
	}
	w.childRSS(cmd)
	return len(names), nil
}

// orasEnv names the oras binary for workers; the bench installs it once
// before any run, so no run's time includes building it.
const orasEnv = "TAGPUSH_ORAS_BIN"

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// naiveSeq is a loop over `docker push`: one full push per tag, each checking
// which blobs exist and uploading the rest (go-containerregistry's remote.Write,
// with its default retries, as crane uses it).
func naiveSeq(ctx context.Context, w worker) (int, []string) {
	img, err := w.image()
	if err != nil {
		return 0, []string{err.Error()}
	}
	return eachTag(w.tags(), 1, func(t name.Tag) error { return remote.Write(t, img, remote.WithContext(ctx)) })
}

// naivePar is the same with 4 pushes at once: the ThreadPool(4) that breaks on ghcr.io.
func naivePar(ctx context.Context, w worker) (int, []string) {
	img, err := w.image()
	if err != nil {
		return 0, []string{err.Error()}
	}
	return eachTag(w.tags(), 4, func(t name.Tag) error { return remote.Write(t, img, remote.WithContext(ctx)) })
}

// eachTag runs push for every tag, limit at a time, and counts what it says.
func eachTag(tags []name.Tag, limit int, push func(name.Tag) error) (int, []string) {
	var mu sync.Mutex
	pushed, errs := 0, []string{}
	g := errgroup.Group{}
	g.SetLimit(limit)
	for _, t := range tags {
		g.Go(func() error {
			err := push(t)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
			} else {
				pushed++
			}
			return nil
		})
	}
	_ = g.Wait()
	return pushed, errs
}

// floor is the least any tool can do: each blob uploaded once in two requests
// (POST, then PUT with the body), 4 at a time, then one manifest PUT per tag,
// 4 at a time; no existence checks, no retries, no verification.
func floor(ctx context.Context, w worker) (int, []string) {
	img, err := w.image()
	if err != nil {
		return 0, []string{err.Error()}
	}
	tags := w.tags()
	repo := tags[0].Context()
	base := fmt.Sprintf("%s://%s/v2/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr())
	client := &http.Client{Transport: remote.DefaultTransport}

	layers, err := img.Layers()
	if err != nil {
		return 0, []string{err.Error()}
	}
	cfg, err := partial.ConfigLayer(img)
	if err != nil {
		return 0, []string{err.Error()}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, l := range append(layers, cfg) {
		g.Go(func() error { return uploadBlob(gctx, client, base, l) })
	}
	if err := g.Wait(); err != nil {
		return 0, []string{err.Error()}
	}

	raw, err := img.RawManifest()
	if err != nil {
		return 0, []string{err.Error()}
	}
	mt, err := img.MediaType()
	if err != nil {
		return 0, []string{err.Error()}
	}
	return eachTag(tags, 4, func(t name.Tag) error {
		return put(ctx, client, base+"/manifests/"+t.TagStr(), string(mt), raw)
	})
}

func uploadBlob(ctx context.Context, client *http.Client, base string, l v1.Layer) error {
	d, err := l.Digest()
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/blobs/uploads/", nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start upload of %s: %s", d, resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return err
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	size, err := l.Size()
	if err != nil {
		return err
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), rc)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("upload %s: %s", d, resp.Status)
	}
	return nil
}

func put(ctx context.Context, client *http.Client, u, mediaType string, body []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT %s: %s", u, resp.Status)
	}
	return nil
}

// tagpush is the real code path: the job the action runs, from its flags.
func tagpush(ctx context.Context, w worker) (int, []string) {
	var refs []string
	for _, t := range w.tags() {
		refs = append(refs, t.String())
	}
	var out bytes.Buffer
	code := job.Run(ctx, job.Env{
		Args:    []string{"--source", w.Source, "--tags", strings.Join(refs, "\n"), "--concurrency", "4"},
		Getenv:  func(string) string { return "" },
		Stdout:  &out,
		Stderr:  io.Discard,
		Version: "bench",
	})
	pushed := strings.Count(out.String(), "\npushed ")
	if strings.HasPrefix(out.String(), "pushed ") {
		pushed++
	}
	var errs []string
	if code != 0 {
		errs = append(errs, fmt.Sprintf("exit %d", code))
	}
	return pushed, errs
}

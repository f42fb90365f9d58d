package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"

	"github.com/tagpush/tagpush/internal/actiontest"
	"github.com/tagpush/tagpush/pusher"
)

// job is one contender's run: what to push, and where.
type job struct {
	Registry, Repo, Source string
	Tags                   int
	// Dir is a scratch directory of the run's own.
	Dir string
}

func (j job) tags() []name.Tag {
	out := make([]name.Tag, j.Tags)
	for i := range out {
		out[i], _ = name.NewTag(fmt.Sprintf("%s/%s:t%d", j.Registry, j.Repo, i))
	}
	return out
}

// outcome is what a contender's process did: how long it took, its peak
// memory, and what it said of itself.
type outcome struct {
	wall    time.Duration
	cpu     time.Duration // user and system, of the process
	rss     int64
	claimed int // tags it said it pushed
	errs    []string
}

// contender runs one push in a process of its own, so its wall time and peak
// memory are its own.
type contender func(ctx context.Context, env *benchEnv, j job) (outcome, error)

var contenders = map[string]contender{
	"naive-seq": inWorker("naive-seq"),
	"naive-par": inWorker("naive-par"),
	"floor":     inWorker("floor"),
	"oras":      orasCp,
	"tagpush":   tagpushAction,
}

// order is the order contenders run and are listed in.
var order = []string{"naive-seq", "naive-par", "floor", "oras", "tagpush"}

// benchEnv is what every run needs: the binaries it runs.
type benchEnv struct {
	self, tagpush, oras string
}

// timed runs cmd and measures it. Go starts a child with vfork: until it
// execs, the child shares the bench's memory, and the kernel counts the
// bench's high-water mark as the child's peak RSS. The bench gives its
// memory back and resets its mark first, so the peak is the child's own.
func timed(cmd *exec.Cmd) (outcome, error) {
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	start := time.Now()
	err := cmd.Run()
	o := outcome{wall: time.Since(start)}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			o.rss = ru.Maxrss * 1024
			o.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return o, err
}

// tagpushAction is the real thing: the built binary, started as the GitHub
// runner starts the action (INPUT_* variables, file commands), its results
// read from GITHUB_OUTPUT as a later step would.
func tagpushAction(ctx context.Context, env *benchEnv, j job) (outcome, error) {
	var refs []string
	for _, t := range j.tags() {
		refs = append(refs, t.String())
	}
	o, err := runAction(ctx, env.tagpush, j.Dir, "INPUT_SOURCE="+j.Source, "INPUT_TAGS="+strings.Join(refs, "\n"))
	if err != nil {
		return o, err
	}
	out, rerr := actiontest.ReadOutputs(filepath.Join(j.Dir, "output"))
	if rerr != nil {
		o.errs = append(o.errs, "outputs: "+rerr.Error())
		return o, nil
	}
	if p := strings.TrimSpace(out["pushed"]); p != "" {
		o.claimed = strings.Count(p, "\n") + 1
	}
	return o, nil
}

// runAction runs the tagpush binary bin as the GitHub runner runs the action:
// inputs (INPUT_NAME=value) with concurrency 4, file commands in dir
// (output, summary). A run that exits non-zero is an outcome with an error
// line, not an error.
func runAction(ctx context.Context, bin, dir string, inputs ...string) (outcome, error) {
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append([]string{
		"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "GITHUB_ACTIONS=true", "CI=true",
		"GITHUB_OUTPUT=" + filepath.Join(dir, "output"), "GITHUB_STEP_SUMMARY=" + filepath.Join(dir, "summary"),
		// The runner sets every declared input, with its default
		// when the workflow gives none.
		fmt.Sprintf("INPUT_CONCURRENCY=%d", pusher.DefaultConcurrency),
	}, inputs...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	o, err := timed(cmd)
	if err != nil {
		if _, exited := err.(*exec.ExitError); !exited {
			return o, fmt.Errorf("tagpush: %w", err)
		}
		o.errs = append(o.errs, fmt.Sprintf("tagpush: %v: %s", err, lastLine(log.String())))
	}
	return o, nil
}

// orasCp is the best peer: `oras cp` (oras-go's copy) from the same OCI
// layout to every tag in one call, with its default settings (concurrency
// 3, tags 5 at a time, its own retry policy). It says nothing per tag: exit
// 0 claims them all.
func orasCp(ctx context.Context, env *benchEnv, j job) (outcome, error) {
	digest, err := sourceDigest(j.Source)
	if err != nil {
		return outcome{}, err
	}
	var names []string
	for _, t := range j.tags() {
		names = append(names, t.TagStr())
	}
	dst := fmt.Sprintf("%s/%s:%s", j.Registry, j.Repo, strings.Join(names, ","))
	cmd := exec.CommandContext(ctx, env.oras, "cp", "--from-oci-layout", strings.TrimPrefix(j.Source, "oci:")+"@"+digest.String(), "--to-plain-http", dst)
	cmd.Env = []string{"HOME=" + j.Dir, "PATH=" + os.Getenv("PATH")}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	o, err := timed(cmd)
	if err != nil {
		o.errs = append(o.errs, fmt.Sprintf("oras cp: %v: %s", err, lastLine(log.String())))
		return o, nil
	}
	o.claimed = len(names)
	return o, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// inWorker runs an in-process contender (Go code of this file) in a worker
// process: the bench binary itself, started again.
func inWorker(name string) contender {
	return func(ctx context.Context, env *benchEnv, j job) (outcome, error) {
		cmd := exec.CommandContext(ctx, env.self, "worker", "--contender", name, "--registry", j.Registry, "--repo", j.Repo, "--source", j.Source, "--tags", fmt.Sprint(j.Tags))
		cmd.Env = []string{"HOME=" + j.Dir, "PATH=" + os.Getenv("PATH")}
		var stdout bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
		o, err := timed(cmd)
		if err != nil {
			return o, fmt.Errorf("%s worker: %w", name, err)
		}
		var res workerResult
		if err := decodeWorker(stdout.Bytes(), &res); err != nil {
			return o, fmt.Errorf("%s worker said %q: %w", name, stdout.String(), err)
		}
		o.claimed, o.errs = res.Pushed, res.Errors
		return o, nil
	}
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

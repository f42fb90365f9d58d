package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/tagpush/tagpush/internal/faults"
)

// The microservices scenario: the seed's CI runner, which pushes several
// service images built on one base, each to several tags, at once.

const (
	services    = 4
	serviceTags = 3
)

// service is one image of the scenario, in an OCI layout and, for the
// Docker engine, loaded under name.
type service struct {
	dir    string
	name   string // bench/svc-N:ci, in the Docker engine
	digest v1.Hash
}

// microContender pushes every service to its tags under prefix (one
// repository per service, prefix/svc-N), in a process (or processes) of its
// own.
type microContender func(ctx context.Context, b *bench, svcs []service, prefix string) (outcome, error)

func (b *bench) microContenders(engine bool) ([]string, map[string]microContender) {
	names := []string{"tagpush (one run)"}
	m := map[string]microContender{
		"tagpush (one run)":      tagpushOneRun(0),
		"tagpush x4 in parallel": tagpushRuns(true),
		"tagpush x4 in turn":     tagpushRuns(false),
		"oras cp x4 in parallel": orasRuns,
	}
	for _, n := range b.levels {
		c := fmt.Sprintf("tagpush (one run, concurrency %d)", n)
		names, m[c] = append(names, c), tagpushOneRun(n)
	}
	names = append(names, "oras cp x4 in parallel", "tagpush x4 in parallel", "tagpush x4 in turn")
	if engine {
		names = append(names, "docker push x4 in parallel", "docker push in turn")
		m["docker push x4 in parallel"] = dockerPush(4)
		m["docker push in turn"] = dockerPush(1)
	}
	return names, m
}

func serviceTag(registry, prefix string, svc, tag int) string {
	return fmt.Sprintf("%s/%s/svc-%d:t%d", registry, prefix, svc, tag)
}

// tagpushOneRun is the images input: one run, every service, at the
// default concurrency (0) or another.
func tagpushOneRun(concurrency int) microContender {
	return func(ctx context.Context, b *bench, svcs []service, prefix string) (outcome, error) {
		return tagpushImages(ctx, b, svcs, prefix, concurrency)
	}
}

// orasRuns is what a pipeline without tagpush does best: one `oras cp` per
// service, all at once, each to its 3 tags (each with oras's own
// concurrency of 3: the registry sees their sum).
func orasRuns(ctx context.Context, b *bench, svcs []service, prefix string) (outcome, error) {
	return perService(b, svcs, true, func(i int, s service, dir string) (outcome, error) {
		return orasCp(ctx, b.env, job{Source: "oci:" + s.dir, Registry: b.reg.Host, Repo: fmt.Sprintf("%s/svc-%d", prefix, i), Tags: serviceTags, Dir: dir})
	})
}

// perService runs push once per service, in a scratch directory of its own,
// all at once or one after another, and sums what they did.
func perService(b *bench, svcs []service, parallel bool, push func(i int, s service, dir string) (outcome, error)) (outcome, error) {
	start := time.Now()
	outs := make([]outcome, len(svcs))
	errs := make([]error, len(svcs))
	var wg sync.WaitGroup
	for i, s := range svcs {
		run := func() {
			dir, err := os.MkdirTemp(b.work, "run-")
			if err != nil {
				errs[i] = err
				return
			}
			defer os.RemoveAll(dir)
			outs[i], errs[i] = push(i, s, dir)
		}
		if parallel {
			wg.Add(1)
			go func() { defer wg.Done(); run() }()
		} else {
			run()
		}
	}
	wg.Wait()
	o := outcome{wall: time.Since(start)}
	for i := range svcs {
		if errs[i] != nil {
			return o, errs[i]
		}
		o.rss = max(o.rss, outs[i].rss)
		o.claimed += outs[i].claimed
		o.errs = append(o.errs, outs[i].errs...)
	}
	return o, nil
}

func tagpushImages(ctx context.Context, b *bench, svcs []service, prefix string, concurrency int) (outcome, error) {
	var lines []string
	for i, s := range svcs {
		var tags []string
		for t := range serviceTags {
			tags = append(tags, serviceTag(b.reg.Host, prefix, i, t))
		}
		lines = append(lines, "oci:"+s.dir+" -> "+strings.Join(tags, ", "))
	}
	dir, err := os.MkdirTemp(b.work, "run-")
	if err != nil {
		return outcome{}, err
	}
	defer os.RemoveAll(dir)
	inputs := []string{"INPUT_IMAGES=" + strings.Join(lines, "\n")}
	if concurrency > 0 {
		inputs = append(inputs, fmt.Sprintf("INPUT_CONCURRENCY=%d", concurrency))
	}
	return b.runTagpush(ctx, dir, inputs...)
}

// tagpushRuns is one tagpush run per service: all at once (each with its own
// limit: the registry sees their sum), or one after another.
func tagpushRuns(parallel bool) microContender {
	return func(ctx context.Context, b *bench, svcs []service, prefix string) (outcome, error) {
		return perService(b, svcs, parallel, func(i int, s service, dir string) (outcome, error) {
			var tags []string
			for t := range serviceTags {
				tags = append(tags, serviceTag(b.reg.Host, prefix, i, t))
			}
			return b.runTagpush(ctx, dir, "INPUT_SOURCE=oci:"+s.dir, "INPUT_TAGS="+strings.Join(tags, "\n"))
		})
	}
}

// runTagpush runs the built binary as the GitHub runner runs the action.
func (b *bench) runTagpush(ctx context.Context, dir string, inputs ...string) (outcome, error) {
	return runAction(ctx, b.env.tagpush, dir, inputs...)
}

// dockerPush is the seed's own method: `docker push` of every tag, limit at
// a time (a ThreadPool(4)), or one after another. The tags are put on the
// images in the Docker engine first, outside the time.
func dockerPush(limit int) microContender {
	return func(ctx context.Context, b *bench, svcs []service, prefix string) (outcome, error) {
		var refs []string
		for i, s := range svcs {
			for t := range serviceTags {
				ref := serviceTag(b.reg.Host, prefix, i, t)
				if out, err := exec.CommandContext(ctx, "docker", "tag", s.name, ref).CombinedOutput(); err != nil {
					return outcome{}, fmt.Errorf("docker tag: %v: %s", err, out)
				}
				refs = append(refs, ref)
			}
		}
		start := time.Now()
		var mu sync.Mutex
		o := outcome{}
		sem := make(chan struct{}, limit)
		var wg sync.WaitGroup
		for _, ref := range refs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				out, err := exec.CommandContext(ctx, "docker", "push", "--quiet", ref).CombinedOutput()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					o.errs = append(o.errs, fmt.Sprintf("docker push %s: %v: %s", ref, err, lastLine(string(out))))
					return
				}
				o.claimed++
			}()
		}
		wg.Wait()
		o.wall = time.Since(start)
		for _, ref := range refs {
			_ = exec.Command("docker", "rmi", ref).Run()
		}
		return o, nil
	}
}

// dockerEngine reports whether a Docker engine answers (DOCKER_HOST or the
// default socket).
func dockerEngine() bool {
	return exec.Command("docker", "version", "--format", "{{.Server.Version}}").Run() == nil
}

// writeServices writes the services: one base of 3 layers, and each service
// its own layer on it, as OCI layouts, and loads them into the Docker engine.
func writeServices(dir string, engine bool) ([]service, error) {
	rng := rand.New(rand.NewPCG(7, 8))
	base := empty.Image
	for range 3 {
		l, err := random.Layer(4<<20, "application/vnd.docker.image.rootfs.diff.tar.gzip")
		if err != nil {
			return nil, err
		}
		if base, err = mutate.AppendLayers(base, l); err != nil {
			return nil, err
		}
	}
	var svcs []service
	var images = make(map[name.Tag]v1.Image)
	for i := range services {
		own, err := random.Layer(2<<20+rng.Int64N(1<<20), "application/vnd.docker.image.rootfs.diff.tar.gzip")
		if err != nil {
			return nil, err
		}
		img, err := mutate.AppendLayers(base, own)
		if err != nil {
			return nil, err
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		s := service{dir: filepath.Join(dir, fmt.Sprintf("svc-%d", i)), name: fmt.Sprintf("bench/svc-%d:ci", i), digest: d}
		lp, err := layout.Write(s.dir, empty.Index)
		if err != nil {
			return nil, err
		}
		if err := lp.AppendImage(img); err != nil {
			return nil, err
		}
		tag, _ := name.NewTag(s.name)
		images[tag] = img
		svcs = append(svcs, s)
	}
	if engine {
		archive := filepath.Join(dir, "services.tar")
		refs := make(map[name.Reference]v1.Image, len(images))
		for t, img := range images {
			refs[t] = img
		}
		if err := tarball.MultiRefWriteToFile(archive, refs); err != nil {
			return nil, err
		}
		if out, err := exec.Command("docker", "load", "-i", archive).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("docker load: %v: %s", err, out)
		}
	}
	return svcs, nil
}

// verifyServices counts the tags that hold their service: at the layout's
// digest (tagpush), or, for docker push (the engine compresses the layers
// again), at one digest for all the tags of a service.
func verifyServices(b *bench, svcs []service, prefix string, anyDigest bool) int {
	n := 0
	for i, s := range svcs {
		var seen []v1.Hash
		for t := range serviceTags {
			ref, err := name.NewTag(serviceTag(b.reg.Direct, prefix, i, t))
			if err != nil {
				continue
			}
			d, err := remote.Head(ref)
			switch {
			case err != nil:
			case anyDigest && (len(seen) == 0 || seen[0] == d.Digest):
				seen = append(seen, d.Digest)
				n++
			case d.Digest == s.digest:
				n++
			}
		}
	}
	return n
}

// microBench races the contenders on the microservices scenario, healthy
// and ghcr-like.
func (b *bench) microBench(ctx context.Context, s settings) error {
	engine := dockerEngine()
	if !engine {
		fmt.Fprintln(os.Stderr, "bench: no Docker engine answers (DOCKER_HOST): the docker push contenders are left out")
	}
	svcs, err := writeServices(filepath.Join(b.work, "services"), engine)
	if err != nil {
		return err
	}
	names, fns := b.microContenders(engine)
	scenarios := []struct {
		name string
		cfg  faults.Config
	}{
		{"healthy", faults.Config{}},
		{"ghcr-like", faults.Config{MaxWrites: 2, WriteErrorRate: 0.05}},
	}
	var rows []row
	for _, sc := range scenarios {
		samples := make(map[string][]sample)
		for i := range s.runs {
			for _, c := range names {
				cfg := sc.cfg
				cfg.Seed, cfg.Latency = uint64(i+1), s.latency
				b.reg.Faults.Reset(cfg)
				prefix := fmt.Sprintf("bench/ms-%s-%s-%d", slug(sc.name), slug(c), i)
				o, err := fns[c](ctx, b, svcs, prefix)
				if err != nil {
					return err
				}
				smp := sample{outcome: o, stats: b.reg.Faults.Stats()}
				smp.pushed = verifyServices(b, svcs, prefix, strings.HasPrefix(c, "docker"))
				samples[c] = append(samples[c], smp)
				fmt.Fprintf(os.Stderr, "bench: %-9s %-26s run %d: %.2fs, %d/%d tags, %d requests, %d injected 500s %v\n",
					sc.name, c, i+1, o.wall.Seconds(), smp.pushed, services*serviceTags, smp.stats.Requests, smp.stats.Injected["500"], firstErrs(o.errs))
			}
		}
		for _, c := range names {
			rows = append(rows, summarize(sc.name, c, services*serviceTags, samples[c]))
		}
	}
	fmt.Printf("Microservices: %d images (a base of 3 x 4 MiB layers, each its own 2-3 MiB layer) x %d tags, one repository per image. Registry: Distribution %s on disk behind the fault layer, %s latency per request, no bandwidth cap. %d runs each, taking turns, median shown; a run counts the tags that hold their image afterwards.\n\n",
		services, serviceTags, s.version, s.latency, s.runs)
	fmt.Println("| scenario | contender | wall s (median) | min–max | tags verified per run | blob MiB uploaded | requests | injected 500s per run | peak RSS MiB |")
	fmt.Println("|---|---|---:|---|---|---:|---:|---|---:|")
	for _, r := range rows {
		rss := fmt.Sprintf("%.0f", r.PeakRSSMiB)
		if strings.HasPrefix(r.Contender, "docker") {
			rss = "– (the engine's)"
		}
		fmt.Printf("| %s | %s | %.2f | %.2f–%.2f | %s | %.1f | %d | %s | %s |\n",
			r.Scenario, r.Contender, r.WallSeconds, r.MinSeconds, r.MaxSeconds, joinInts(r.Pushed), float64(r.BlobBytes)/(1<<20), r.Requests, joinInts(r.Injected500), rss)
	}
	fmt.Println()
	get := func(sc, c string) *row {
		i := slices.IndexFunc(rows, func(r row) bool { return r.Scenario == sc && r.Contender == c })
		if i < 0 {
			return nil
		}
		return &rows[i]
	}
	for _, sc := range scenarios {
		one := get(sc.name, "tagpush (one run)")
		for _, other := range names[1:] {
			o := get(sc.name, other)
			if o == nil {
				continue
			}
			line := fmt.Sprintf("- %s: tagpush (one run) / %s = %.2fx", sc.name, other, one.WallSeconds/o.WallSeconds)
			if whole := o.wholeWalls(); len(whole) < len(o.Pushed) {
				line += fmt.Sprintf(" (%s pushed every tag in %d of %d runs", other, len(whole), len(o.Pushed))
				if len(whole) > 0 {
					line += fmt.Sprintf("; against those: %.2fx", one.WallSeconds/median(whole))
				}
				line += ")"
			}
			fmt.Println(line)
		}
	}
	return nil
}

func firstErrs(errs []string) string {
	if len(errs) == 0 {
		return ""
	}
	return "(" + errs[0] + ")"
}

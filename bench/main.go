// Command bench races tagpush against per-tag pushing and the best peer (oras)
// on a real registry (the CNCF Distribution registry on disk, behind the fault
// layer, shaped like a CI runner talking to a remote registry) and prints a
// markdown table.
//
//	go run ./bench                       # healthy and ghcr, 20 tags, 5 x 8 MiB, 3 runs
//	go run ./bench --suite reference     # the read-path cases, tagpush next to oras
//	go run ./bench --faults none,flaky --tags 50 --runs 5 --json
//	go run ./bench --memory              # peak memory pushing a 1 GiB image
//	go run ./bench --scale               # 100 vs 1,000 tags
//
// tagpush runs as users run it: the binary, built once per bench run, started
// as the GitHub runner starts the action (INPUT_* variables, file commands),
// its outputs read back. Each run of each contender is its own process, on a
// fresh repository, so its wall time and peak memory (max RSS) are its own;
// the runs of the contenders take turns (run 1 of each, then run 2 of each),
// so a slow spell of the machine does not land on one of them.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testimage"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/source"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(runWorker(os.Args[2:]))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type settings struct {
	tags, layers, layerMiB, runs int
	platforms                    int
	scenarios                    []string
	contenders                   []string
	latency                      time.Duration
	mbit                         float64
	asJSON, memory, scale        bool
	shaped                       bool
	memoryMiB                    int
	suite, version               string
}

// bench is one bench run's registry, binaries and scratch space.
type bench struct {
	reg  *testregistry.Registry
	env  *benchEnv
	work string
	// levels are the concurrency inputs the microservices suite tries
	// besides the default.
	levels []int
}

func run() error {
	var s settings
	var scenarios, who, levels string
	flag.IntVar(&s.tags, "tags", 20, "tags per run")
	flag.IntVar(&s.layers, "layers", 5, "layers in the generated image")
	flag.IntVar(&s.layerMiB, "layer-mib", 8, "MiB of random bytes per layer")
	flag.IntVar(&s.platforms, "platforms", 1, "platforms of the image: more than 1 pushes an index, each platform with its own layers (oras and tagpush only)")
	flag.IntVar(&s.runs, "runs", 3, "runs of each contender per scenario (the median is reported)")
	flag.StringVar(&scenarios, "faults", "none,ghcr", "fault modes to run, comma-separated ("+strings.Join(faults.Modes, ", ")+")")
	flag.StringVar(&who, "contenders", strings.Join(order, ","), "contenders to run")
	flag.DurationVar(&s.latency, "latency", 20*time.Millisecond, "latency the fault layer adds to every request")
	flag.Float64Var(&s.mbit, "bandwidth", 200, "upload bandwidth cap in Mbit/s (0: none)")
	flag.BoolVar(&s.asJSON, "json", false, "print JSON instead of a markdown table")
	flag.BoolVar(&s.memory, "memory", false, "instead: peak memory of tagpush pushing a large image from an OCI layout and a docker-archive")
	flag.IntVar(&s.memoryMiB, "memory-mib", 1024, "image size for --memory")
	flag.BoolVar(&s.scale, "scale", false, "instead: tagpush with 100 and with 1,000 tags")
	flag.StringVar(&s.suite, "suite", "", "instead: a named set of cases: reference (the read-path cases: healthy, 200 tags, ghcr-like, an index; tagpush and oras), microservices (4 images x 3 tags: tagpush in one run, in four, and docker push where an engine answers), daemon (an image of --memory-mib from the Docker engine: tagpush against docker push), engine (a service image docker build left in the engine: first push, rebuild on a fresh runner and on the same engine, unchanged re-run; tagpush against docker push)")
	flag.BoolVar(&s.shaped, "shaped", false, "engine suite: shape the registry as --latency and --bandwidth say (default: loopback, no shaping)")
	flag.StringVar(&levels, "levels", "", "microservices suite: concurrency inputs to run tagpush (one run) at besides the default, comma-separated")
	flag.StringVar(&s.version, "registry-version", testregistry.DefaultVersion, "Distribution release to run (v3.0.0, v3.1.2)")
	flag.Parse()
	s.scenarios = strings.Split(scenarios, ",")
	s.contenders = strings.Split(who, ",")
	for _, c := range s.contenders {
		if _, ok := contenders[c]; !ok {
			return fmt.Errorf("unknown contender %q (known: %s)", c, strings.Join(order, ", "))
		}
	}
	for _, sc := range s.scenarios {
		if _, err := faults.Preset(sc); err != nil {
			return err
		}
	}
	if s.suite != "" && s.suite != "reference" && s.suite != "microservices" && s.suite != "daemon" && s.suite != "engine" {
		return fmt.Errorf("unknown suite %q (known: reference, microservices, daemon, engine)", s.suite)
	}

	ctx := context.Background()
	work, err := os.MkdirTemp("", "tagpush-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	b, err := setUp(ctx, s, work)
	if err != nil {
		return err
	}
	defer b.reg.Close()
	for _, l := range strings.Split(levels, ",") {
		if l == "" {
			continue
		}
		n, err := strconv.Atoi(l)
		if err != nil {
			return fmt.Errorf("--levels: %q is not a number", l)
		}
		b.levels = append(b.levels, n)
	}

	switch {
	case s.memory:
		return b.memoryBench(ctx, s)
	case s.scale:
		return b.scaleBench(ctx, s)
	case s.suite == "reference":
		return b.referenceBench(ctx, s)
	case s.suite == "microservices":
		return b.microBench(ctx, s)
	case s.suite == "daemon":
		return b.daemonBench(ctx, s)
	case s.suite == "engine":
		return b.engineBench(ctx, s)
	}
	return b.raceBench(ctx, s)
}

// setUp builds tagpush, starts the registry and finds the peers.
func setUp(ctx context.Context, s settings, work string) (*bench, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	env := &benchEnv{self: self, tagpush: filepath.Join(work, "tagpush")}
	fmt.Fprintln(os.Stderr, "bench: building tagpush (the binary users run)")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=bench", "-o", env.tagpush, ".")
	build.Dir = moduleRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build tagpush: %w\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "bench: starting Distribution %s on disk (the first run builds it)\n", s.version)
	bin, err := testregistry.BinaryVersion(ctx, s.version)
	if err != nil {
		return nil, err
	}
	reg, err := testregistry.Start(ctx, testregistry.Options{OnDisk: true, Binary: bin})
	if err != nil {
		return nil, err
	}
	if slices.Contains(s.contenders, "oras") || s.suite == "reference" || s.suite == "microservices" {
		fmt.Fprintln(os.Stderr, "bench: installing oras (the first run builds it)")
		if env.oras, err = testregistry.Tool(ctx, testregistry.OrasModule, "oras"); err != nil {
			reg.Close()
			return nil, err
		}
	}
	return &bench{reg: reg, env: env, work: work}, nil
}

// moduleRoot is the directory of tagpush's go.mod.
func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// row is one line of the table: the median run of a contender in a scenario.
type row struct {
	Scenario      string    `json:"scenario"`
	Contender     string    `json:"contender"`
	Tags          int       `json:"tags"`
	WallSeconds   float64   `json:"wall_seconds"`
	MinSeconds    float64   `json:"min_seconds"`
	MaxSeconds    float64   `json:"max_seconds"`
	Pushed        []int     `json:"pushed_per_run"`
	BlobBytes     int64     `json:"blob_bytes"`
	Requests      int       `json:"requests"`
	Injected      int       `json:"faults_injected"`
	Injected500   []int     `json:"injected_500s_per_run"`
	Walls         []float64 `json:"wall_seconds_per_run"`
	RequestsRuns  []int     `json:"requests_per_run"`
	PeakRSSMiB    float64   `json:"peak_rss_mib"`
	Errors        []string  `json:"errors,omitempty"`
	ImageBlobByte int64     `json:"image_blob_bytes"`
}

// measure runs contender c once on a fresh repository and reads what the
// registry saw; the tags verified are counted by reading the registry
// directly, whatever the contender claimed.
func (b *bench) measure(ctx context.Context, c string, cfg faults.Config, repo, src string, tags int, digest v1.Hash) (sample, error) {
	b.reg.Faults.Reset(cfg)
	dir, err := os.MkdirTemp(b.work, "run-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(dir)
	o, err := contenders[c](ctx, b.env, job{Registry: b.reg.Host, Repo: repo, Source: src, Tags: tags, Dir: dir})
	if err != nil {
		return sample{}, err
	}
	smp := sample{outcome: o, stats: b.reg.Faults.Stats()}
	smp.pushed = verify(b.reg, repo, tags, digest)
	return smp, nil
}

// race runs every contender runs times, taking turns, and summarizes each.
func (b *bench) race(ctx context.Context, scenario string, cfg faults.Config, names []string, runs int, src string, tags int, digest v1.Hash) ([]row, error) {
	samples := make(map[string][]sample)
	for i := range runs {
		cfg.Seed = uint64(i + 1)
		for _, c := range names {
			repo := fmt.Sprintf("bench/%s-%s-%d", slug(scenario), c, i)
			smp, err := b.measure(ctx, c, cfg, repo, src, tags, digest)
			if err != nil {
				return nil, err
			}
			samples[c] = append(samples[c], smp)
			fmt.Fprintf(os.Stderr, "bench: %-28s %-9s run %d: %.2fs, %d/%d tags, %d requests, %d faults%s\n", scenario, c, i+1, smp.wall.Seconds(), smp.pushed, tags, smp.stats.Requests, smp.stats.TotalInjected(), timeline(smp.stats))
		}
	}
	var rows []row
	for _, c := range names {
		rows = append(rows, summarize(scenario, c, tags, samples[c]))
	}
	return rows, nil
}

// timeline says when the registry saw the first request, the first and
// last manifest PUT, and the last request, from the first request on.
func timeline(st faults.Stats) string {
	if os.Getenv("BENCH_TIMELINE") == "" || st.FirstRequest.IsZero() {
		return ""
	}
	var first, last time.Time
	for _, ts := range st.ManifestPutTimes {
		for _, t := range ts {
			if first.IsZero() || t.Before(first) {
				first = t
			}
			if t.After(last) {
				last = t
			}
		}
	}
	ms := func(t time.Time) string { return t.Sub(st.FirstRequest).Round(time.Millisecond).String() }
	return fmt.Sprintf(" [manifest PUTs %s..%s, last request %s, peak writes %d, peak reads %d]", ms(first), ms(last), ms(st.LastRequest), st.PeakWrites, st.PeakReads)
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

func (b *bench) raceBench(ctx context.Context, s settings) error {
	dir := filepath.Join(b.work, "image")
	platforms := []string(nil)
	if s.platforms > 1 {
		platforms = []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x", "linux/ppc64le", "linux/riscv64"}[:min(s.platforms, 6)]
	}
	fmt.Fprintf(os.Stderr, "bench: generating a %d x %d MiB image for %d platform(s)\n", s.layers, s.layerMiB, max(len(platforms), 1))
	digest, err := testimage.WriteRandomIndexLayout(dir, platforms, s.layers, int64(s.layerMiB)<<20, 1)
	if err != nil {
		return err
	}
	blobBytes, err := imageBlobBytes(dir)
	if err != nil {
		return err
	}
	var rows []row
	for _, sc := range s.scenarios {
		cfg, _ := faults.Preset(sc)
		cfg.Latency = s.latency
		cfg.UploadBytesPerSec = int64(s.mbit * 1e6 / 8)
		rs, err := b.race(ctx, sc, cfg, s.contenders, s.runs, "oci:"+dir, s.tags, digest)
		if err != nil {
			return err
		}
		for i := range rs {
			rs[i].ImageBlobByte = blobBytes
		}
		rows = append(rows, rs...)
	}
	if s.asJSON {
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	if len(platforms) > 0 {
		fmt.Printf("An index of %d platforms, each: ", len(platforms))
	}
	fmt.Printf("Image: %d x %d MiB random layers (%s of blobs). Registry: Distribution %s on disk behind the fault layer, %s latency per request, %.0f Mbit/s upload cap. %d runs each, taking turns, median shown.\n\n",
		s.layers, s.layerMiB, mib(blobBytes), s.version, s.latency, s.mbit, s.runs)
	fmt.Println("| scenario | contender | tags | wall s (median) | min–max | tags verified per run | blob MiB uploaded | requests | faults injected | peak RSS MiB |")
	fmt.Println("|---|---|---:|---:|---|---|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %d | %.2f | %.2f–%.2f | %s | %.1f | %d | %d | %.0f |\n",
			r.Scenario, r.Contender, r.Tags, r.WallSeconds, r.MinSeconds, r.MaxSeconds, joinInts(r.Pushed), float64(r.BlobBytes)/(1<<20), r.Requests, r.Injected, r.PeakRSSMiB)
	}
	printRatios(rows)
	return nil
}

// refCase is one case of the reference suite.
type refCase struct {
	name      string
	tags      int
	latency   time.Duration
	faults    faults.Config
	platforms int
}

// referenceCases are the cases the read path is measured on, as the issue
// that set its goals measured them: 5 x 8 MiB layers, no bandwidth cap
// (round trips decide), ghcr-like meaning a 500 to a write above 2 in
// flight and 5% of writes at random.
func referenceCases() []refCase {
	ghcr := faults.Config{MaxWrites: 2, WriteErrorRate: 0.05}
	harsh := faults.Config{MaxWrites: 2, WriteErrorRate: 0.10, TooManyRate: 0.05, RetryAfter: "1"}
	return []refCase{
		{"healthy, +20 ms, 20 tags", 20, 20 * time.Millisecond, faults.Config{}, 1},
		{"healthy, loopback, 200 tags", 200, 0, faults.Config{}, 1},
		{"ghcr-like, loopback, 10 tags", 10, 0, ghcr, 1},
		{"ghcr-like + 10% 500 + 5% 429, +20 ms, 20 tags", 20, 20 * time.Millisecond, harsh, 1},
		{"2-platform index, ghcr-like, +20 ms, 10 tags", 10, 20 * time.Millisecond, ghcr, 2},
		{"healthy, +20 ms, 10 tags", 10, 20 * time.Millisecond, faults.Config{}, 1},
	}
}

func (b *bench) referenceBench(ctx context.Context, s settings) error {
	sources := make(map[int]string)
	digests := make(map[int]v1.Hash)
	var rows []row
	for _, c := range referenceCases() {
		if _, ok := sources[c.platforms]; !ok {
			dir := filepath.Join(b.work, fmt.Sprintf("image-%d", c.platforms))
			var platforms []string
			if c.platforms > 1 {
				platforms = []string{"linux/amd64", "linux/arm64"}
			}
			d, err := testimage.WriteRandomIndexLayout(dir, platforms, 5, 8<<20, 1)
			if err != nil {
				return err
			}
			sources[c.platforms], digests[c.platforms] = "oci:"+dir, d
		}
		cfg := c.faults
		cfg.Latency = c.latency
		rs, err := b.race(ctx, c.name, cfg, []string{"oras", "tagpush"}, s.runs, sources[c.platforms], c.tags, digests[c.platforms])
		if err != nil {
			return err
		}
		rows = append(rows, rs...)
	}
	if s.asJSON {
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	fmt.Printf("Reference cases: 5 x 8 MiB random layers (an index: 2 platforms, each its own), no bandwidth cap. Registry: Distribution %s on disk behind the fault layer. tagpush as the built binary in GitHub mode, oras cp v1.3.6 with its defaults, %d runs each, taking turns, median shown; a run counts the tags that resolve to the digest in the registry afterwards.\n\n", s.version, s.runs)
	fmt.Println("| case | contender | wall s (median) | min–max | tags verified per run | requests per run | injected 500s per run | peak RSS MiB |")
	fmt.Println("|---|---|---:|---|---|---|---|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %.2f | %.2f–%.2f | %s | %s | %s | %.0f |\n",
			r.Scenario, r.Contender, r.WallSeconds, r.MinSeconds, r.MaxSeconds, joinInts(r.Pushed), joinInts(r.RequestsRuns), joinInts(r.Injected500), r.PeakRSSMiB)
	}
	fmt.Println()
	for i := 0; i+1 < len(rows); i += 2 {
		o, t := rows[i], rows[i+1]
		line := fmt.Sprintf("- %s: tagpush / oras = %.2fx", o.Scenario, t.WallSeconds/o.WallSeconds)
		if whole := o.wholeWalls(); len(whole) < len(o.Pushed) {
			// A run that left tags out is no time to beat: compare with
			// the peer's runs that pushed every tag, if any.
			line += fmt.Sprintf(" (oras pushed every tag in %d of %d runs", len(whole), len(o.Pushed))
			if len(whole) > 0 {
				line += fmt.Sprintf("; against those: %.2fx", t.WallSeconds/median(whole))
			}
			line += ")"
		}
		fmt.Println(line)
	}
	return nil
}

// wholeWalls is the wall times of the runs that left no tag out.
func (r row) wholeWalls() []float64 {
	var out []float64
	for i, n := range r.Pushed {
		if n == r.Tags {
			out = append(out, r.Walls[i])
		}
	}
	return out
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func printRatios(rows []row) {
	get := func(sc, c string) *row {
		for i := range rows {
			if rows[i].Scenario == sc && rows[i].Contender == c {
				return &rows[i]
			}
		}
		return nil
	}
	fmt.Println()
	for _, sc := range []string{"none"} {
		tp, fl, ns := get(sc, "tagpush"), get(sc, "floor"), get(sc, "naive-seq")
		if tp != nil && fl != nil {
			fmt.Printf("- healthy: tagpush / floor = %.2fx\n", tp.WallSeconds/fl.WallSeconds)
		}
		if tp != nil && ns != nil {
			fmt.Printf("- healthy: naive-seq / tagpush = %.2fx\n", ns.WallSeconds/tp.WallSeconds)
		}
		if tp != nil {
			fmt.Printf("- healthy: tagpush uploaded %d blob bytes; the image has %d (one repository per run)\n", tp.BlobBytes, tp.ImageBlobByte)
		}
	}
	for _, r := range rows {
		if r.Contender != "tagpush" {
			continue
		}
		if o := get(r.Scenario, "oras"); o != nil {
			fmt.Printf("- %s: tagpush / oras = %.2fx (tags pushed per run: tagpush %s, oras %s)\n", r.Scenario, r.WallSeconds/o.WallSeconds, joinInts(r.Pushed), joinInts(o.Pushed))
		}
		if h := get("none", "tagpush"); h != nil && r.Scenario != "none" {
			fmt.Printf("- %s: tagpush / tagpush healthy = %.2fx\n", r.Scenario, r.WallSeconds/h.WallSeconds)
		}
	}
}

type sample struct {
	outcome
	stats  faults.Stats
	pushed int
}

// verify counts the tags that resolve to digest, asking the registry directly.
func verify(reg *testregistry.Registry, repo string, tags int, digest v1.Hash) int {
	n := 0
	for i := range tags {
		t, err := name.NewTag(fmt.Sprintf("%s/%s:t%d", reg.Direct, repo, i))
		if err != nil {
			continue
		}
		if d, err := remote.Head(t); err == nil && d.Digest == digest {
			n++
		}
	}
	return n
}

func summarize(sc, c string, tags int, ss []sample) row {
	r := row{Scenario: sc, Contender: c, Tags: tags}
	walls := make([]float64, len(ss))
	for i, s := range ss {
		walls[i] = s.wall.Seconds()
		r.Pushed = append(r.Pushed, s.pushed)
		r.RequestsRuns = append(r.RequestsRuns, s.stats.Requests)
		r.Injected500 = append(r.Injected500, s.stats.Injected["500"])
		r.Walls = append(r.Walls, s.wall.Seconds())
		r.PeakRSSMiB = max(r.PeakRSSMiB, float64(s.rss)/(1<<20))
		for _, e := range s.errs {
			if len(r.Errors) < 5 {
				r.Errors = append(r.Errors, e)
			}
		}
	}
	sorted := slices.Clone(walls)
	slices.Sort(sorted)
	r.WallSeconds, r.MinSeconds, r.MaxSeconds = sorted[len(sorted)/2], sorted[0], sorted[len(sorted)-1]
	med := ss[slices.Index(walls, r.WallSeconds)]
	r.BlobBytes, r.Requests, r.Injected = med.stats.BlobBytes, med.stats.Requests, med.stats.TotalInjected()
	return r
}

func imageBlobBytes(dir string) (int64, error) {
	img, err := source.Open(context.Background(), "oci:"+dir, source.Options{})
	if err != nil {
		return 0, err
	}
	var images []v1.Image
	switch t := img.Taggable.(type) {
	case v1.Image:
		images = append(images, t)
	case v1.ImageIndex:
		m, err := t.IndexManifest()
		if err != nil {
			return 0, err
		}
		for _, d := range m.Manifests {
			i, err := t.Image(d.Digest)
			if err != nil {
				return 0, err
			}
			images = append(images, i)
		}
	}
	var n int64
	for _, i := range images {
		m, err := i.Manifest()
		if err != nil {
			return 0, err
		}
		n += m.Config.Size
		for _, l := range m.Layers {
			n += l.Size
		}
	}
	return n, nil
}

func (b *bench) memoryBench(ctx context.Context, s settings) error {
	work, reg := b.work, b.reg
	dir := filepath.Join(work, "big")
	const layers = 4
	fmt.Fprintf(os.Stderr, "bench: generating a %d MiB image\n", s.memoryMiB)
	digest, err := testimage.WriteRandomLayout(dir, layers, int64(s.memoryMiB)<<20/layers, 2)
	if err != nil {
		return err
	}
	archive := filepath.Join(work, "big.tar")
	if err := writeArchive(dir, digest, archive); err != nil {
		return err
	}
	fmt.Printf("Peak memory of tagpush pushing a %d MiB image (%d layers) to 3 tags, no traffic shaping.\n\n", s.memoryMiB, layers)
	fmt.Println("| source | wall s | tags pushed | blob MiB uploaded | peak RSS MiB |")
	fmt.Println("|---|---:|---:|---:|---:|")
	for _, src := range []string{"oci:" + dir, "docker-archive:" + archive} {
		repo := "bench/memory-" + strings.SplitN(src, ":", 2)[0]
		smp, err := b.measure(ctx, "tagpush", faults.Config{}, repo, src, 3, digest)
		if err != nil {
			return err
		}
		fmt.Printf("| %s | %.1f | %d | %.0f | %.0f |\n", strings.SplitN(src, ":", 2)[0], smp.wall.Seconds(), countResolving(reg, repo, 3), float64(smp.stats.BlobBytes)/(1<<20), float64(smp.rss)/(1<<20))
	}
	// Four images of a quarter of the size each, in one run (the images
	// input), every one opening while the others push: docker-archive
	// copies of the same layers under four names.
	var lines []string
	for i := range 4 {
		quarter := filepath.Join(work, fmt.Sprintf("quarter-%d", i))
		d, err := testimage.WriteRandomLayout(quarter, 1, int64(s.memoryMiB)<<20/4, uint64(10+i))
		if err != nil {
			return err
		}
		path := filepath.Join(work, fmt.Sprintf("quarter-%d.tar", i))
		if err := writeArchive(quarter, d, path); err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("docker-archive:%s -> %s/bench/memory-four-%d:t0, %s/bench/memory-four-%d:t1, %s/bench/memory-four-%d:t2", path, reg.Host, i, reg.Host, i, reg.Host, i))
	}
	reg.Faults.Reset(faults.Config{})
	dir4, err := os.MkdirTemp(work, "run-")
	if err != nil {
		return err
	}
	o, err := b.runTagpush(ctx, dir4, "INPUT_IMAGES="+strings.Join(lines, "\n"))
	if err != nil {
		return err
	}
	pushed := 0
	for i := range 4 {
		pushed += countResolving(reg, fmt.Sprintf("bench/memory-four-%d", i), 3)
	}
	fmt.Printf("| 4 x docker-archive, one run | %.1f | %d | %.0f | %.0f |\n", o.wall.Seconds(), pushed, float64(reg.Faults.Stats().BlobBytes)/(1<<20), float64(o.rss)/(1<<20))
	return nil
}

// countResolving counts the tags present, whatever digest (a docker-archive
// gets a digest of its own).
func countResolving(reg *testregistry.Registry, repo string, tags int) int {
	n := 0
	for i := range tags {
		t, _ := name.NewTag(fmt.Sprintf("%s/%s:t%d", reg.Direct, repo, i))
		if _, err := remote.Head(t); err == nil {
			n++
		}
	}
	return n
}

func writeArchive(dir string, digest v1.Hash, path string) error {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	img, err := lp.Image(digest)
	if err != nil {
		return err
	}
	tag, _ := name.NewTag("bench/big:latest")
	return tarball.WriteToFile(path, tag, img)
}

func (b *bench) scaleBench(ctx context.Context, s settings) error {
	dir := filepath.Join(b.work, "image")
	digest, err := testimage.WriteRandomLayout(dir, s.layers, int64(s.layerMiB)<<20, 1)
	if err != nil {
		return err
	}
	cfg := faults.Config{Latency: s.latency, UploadBytesPerSec: int64(s.mbit * 1e6 / 8)}
	fmt.Printf("tagpush, %d x %d MiB image, %s latency, %.0f Mbit/s, concurrency 4.\n\n", s.layers, s.layerMiB, s.latency, s.mbit)
	fmt.Println("| tags | wall s | manifest PUTs | requests | blob MiB uploaded |")
	fmt.Println("|---:|---:|---:|---:|---:|")
	var walls []float64
	for _, n := range []int{100, 1000} {
		smp, err := b.measure(ctx, "tagpush", cfg, fmt.Sprintf("bench/scale-%d", n), "oci:"+dir, n, digest)
		if err != nil {
			return err
		}
		walls = append(walls, smp.wall.Seconds())
		fmt.Printf("| %d | %.2f | %d | %d | %.1f |\n", n, smp.wall.Seconds(), smp.stats.ManifestPuts, smp.stats.Requests, float64(smp.stats.BlobBytes)/(1<<20))
	}
	fmt.Printf("\n1,000 / 100 tags wall-time ratio: %.2fx; extra time per extra tag: %.1f ms\n", walls[1]/walls[0], (walls[1]-walls[0])/900*1000)
	return nil
}

func joinInts(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, ", ")
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

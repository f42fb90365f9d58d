// Command bench races tagpush against per-tag pushing on a real registry (the
// CNCF Distribution registry behind the fault layer, shaped like a CI runner
// talking to a remote registry) and prints a markdown table.
//
//	go run ./bench                       # healthy and ghcr, 20 tags, 5 x 8 MiB, 3 runs
//	go run ./bench --faults none,flaky --tags 50 --runs 5 --json
//	go run ./bench --memory              # peak memory pushing a 1 GiB image
//	go run ./bench --scale               # 100 vs 1,000 tags
//
// Each run of each contender is its own process, on a fresh repository, so its
// wall time and peak memory (max RSS) are its own.
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
	"strings"
	"syscall"
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
	memoryMiB                    int
}

func run() error {
	var s settings
	var scenarios, who string
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

	ctx := context.Background()
	work, err := os.MkdirTemp("", "tagpush-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	fmt.Fprintln(os.Stderr, "bench: starting the Distribution registry (the first run builds it)")
	reg, err := testregistry.Start(ctx, testregistry.Options{OnDisk: true})
	if err != nil {
		return err
	}
	defer reg.Close()

	if slices.Contains(s.contenders, "oras") && os.Getenv(orasEnv) == "" {
		fmt.Fprintln(os.Stderr, "bench: installing oras (the first run builds it)")
		bin, err := testregistry.Tool(ctx, testregistry.OrasModule, "oras")
		if err != nil {
			return err
		}
		os.Setenv(orasEnv, bin)
	}

	switch {
	case s.memory:
		return memoryBench(ctx, s, reg, work)
	case s.scale:
		return scaleBench(ctx, s, reg, work)
	}
	return raceBench(ctx, s, reg, work)
}

// row is one line of the table: the median run of a contender in a scenario.
type row struct {
	Scenario      string   `json:"scenario"`
	Contender     string   `json:"contender"`
	Tags          int      `json:"tags"`
	WallSeconds   float64  `json:"wall_seconds"`
	MinSeconds    float64  `json:"min_seconds"`
	MaxSeconds    float64  `json:"max_seconds"`
	Pushed        []int    `json:"pushed_per_run"`
	BlobBytes     int64    `json:"blob_bytes"`
	Requests      int      `json:"requests"`
	Injected      int      `json:"faults_injected"`
	PeakRSSMiB    float64  `json:"peak_rss_mib"`
	Errors        []string `json:"errors,omitempty"`
	ImageBlobByte int64    `json:"image_blob_bytes"`
}

func raceBench(ctx context.Context, s settings, reg *testregistry.Registry, work string) error {
	dir := filepath.Join(work, "image")
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
		for _, c := range s.contenders {
			var samples []sample
			for i := range s.runs {
				cfg.Seed = uint64(i + 1)
				reg.Faults.Reset(cfg)
				repo := fmt.Sprintf("bench/%s-%s-%d", sc, c, i)
				smp, err := runOnce(ctx, c, reg, repo, "oci:"+dir, s.tags)
				if err != nil {
					return err
				}
				smp.pushed = verify(reg, repo, s.tags, digest)
				samples = append(samples, smp)
				fmt.Fprintf(os.Stderr, "bench: %-6s %-9s run %d: %.2fs, %d/%d tags, %d faults\n", sc, c, i+1, smp.wall.Seconds(), smp.pushed, s.tags, smp.stats.TotalInjected())
			}
			r := summarize(sc, c, s.tags, samples)
			r.ImageBlobByte = blobBytes
			rows = append(rows, r)
		}
	}
	if s.asJSON {
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	if len(platforms) > 0 {
		fmt.Printf("An index of %d platforms, each: ", len(platforms))
	}
	fmt.Printf("Image: %d x %d MiB random layers (%s of blobs). Registry: Distribution v3.1.2 behind the fault layer, %s latency per request, %.0f Mbit/s upload cap. %d runs each, median shown.\n\n",
		s.layers, s.layerMiB, mib(blobBytes), s.latency, s.mbit, s.runs)
	fmt.Println("| scenario | contender | tags | wall s (median) | min–max | tags pushed per run | blob MiB uploaded | requests | faults injected | peak RSS MiB |")
	fmt.Println("|---|---|---:|---:|---|---|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %d | %.2f | %.2f–%.2f | %s | %.1f | %d | %d | %.0f |\n",
			r.Scenario, r.Contender, r.Tags, r.WallSeconds, r.MinSeconds, r.MaxSeconds, joinInts(r.Pushed), float64(r.BlobBytes)/(1<<20), r.Requests, r.Injected, r.PeakRSSMiB)
	}
	printRatios(rows)
	return nil
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
	wall   time.Duration
	rss    int64
	stats  faults.Stats
	pushed int
	errs   []string
}

// runOnce runs one contender in a child process and reads what the registry saw.
func runOnce(ctx context.Context, contender string, reg *testregistry.Registry, repo, src string, tags int) (sample, error) {
	self, err := os.Executable()
	if err != nil {
		return sample{}, err
	}
	cmd := exec.CommandContext(ctx, self, "worker", "--contender", contender, "--registry", reg.Host, "--repo", repo, "--source", src, "--tags", fmt.Sprint(tags))
	cmd.Env = []string{"HOME=" + os.TempDir(), "PATH=" + os.Getenv("PATH"), orasEnv + "=" + os.Getenv(orasEnv)}
	cmd.Stderr = os.Stderr
	start := time.Now()
	out, err := cmd.Output()
	wall := time.Since(start)
	if err != nil {
		return sample{}, fmt.Errorf("%s worker: %w", contender, err)
	}
	var res workerResult
	if err := json.Unmarshal(out, &res); err != nil {
		return sample{}, fmt.Errorf("%s worker said %q: %w", contender, out, err)
	}
	rss := max(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss*1024, res.ChildRSS)
	return sample{wall: wall, rss: rss, stats: reg.Faults.Stats(), errs: res.Errors}, nil
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

func memoryBench(ctx context.Context, s settings, reg *testregistry.Registry, work string) error {
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
		reg.Faults.Reset(faults.Config{})
		repo := "bench/memory-" + strings.SplitN(src, ":", 2)[0]
		smp, err := runOnce(ctx, "tagpush", reg, repo, src, 3)
		if err != nil {
			return err
		}
		fmt.Printf("| %s | %.1f | %d | %.0f | %.0f |\n", strings.SplitN(src, ":", 2)[0], smp.wall.Seconds(), countResolving(reg, repo, 3), float64(smp.stats.BlobBytes)/(1<<20), float64(smp.rss)/(1<<20))
	}
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

func scaleBench(ctx context.Context, s settings, reg *testregistry.Registry, work string) error {
	dir := filepath.Join(work, "image")
	if _, err := testimage.WriteRandomLayout(dir, s.layers, int64(s.layerMiB)<<20, 1); err != nil {
		return err
	}
	cfg := faults.Config{Latency: s.latency, UploadBytesPerSec: int64(s.mbit * 1e6 / 8)}
	fmt.Printf("tagpush, %d x %d MiB image, %s latency, %.0f Mbit/s, concurrency 4.\n\n", s.layers, s.layerMiB, s.latency, s.mbit)
	fmt.Println("| tags | wall s | manifest PUTs | requests | blob MiB uploaded |")
	fmt.Println("|---:|---:|---:|---:|---:|")
	var walls []float64
	for _, n := range []int{100, 1000} {
		reg.Faults.Reset(cfg)
		smp, err := runOnce(ctx, "tagpush", reg, fmt.Sprintf("bench/scale-%d", n), "oci:"+dir, n)
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

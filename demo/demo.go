// Package demo runs a complete tagpush job with no set-up: it starts a registry
// in-process on loopback behind the fault layer, pushes the embedded test image
// to 8 tags through the same code path the action runs, and checks every tag.
package demo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/job"
)

// Run runs the demo with args (flags of the demo itself) and returns the exit code.
// image is an OCI layout.
func Run(ctx context.Context, args []string, image fs.FS, stdout, stderr io.Writer, version string) int {
	fset := flag.NewFlagSet("tagpush demo", flag.ContinueOnError)
	fset.SetOutput(stderr)
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: tagpush demo [--faults MODE] [--tags N] [--latency DURATION] [--seed N]\n\n"+
			"Pushes the embedded test image to N tags on an in-process registry, optionally\n"+
			"behind a fault mode, and checks every tag in the registry afterwards.\n\n")
		fset.SetOutput(w)
		fset.PrintDefaults()
	}
	// A flag error is its one line (the flag package prints it); the help
	// is printed only when asked for.
	fset.Usage = func() {}
	mode := fset.String("faults", "none", "fault mode of the demo registry: "+strings.Join(faults.Modes, ", "))
	ntags := fset.Int("tags", 8, "how many tags to push")
	latency := fset.Duration("latency", 5*time.Millisecond, "latency the demo registry adds to every request")
	seed := fset.Uint64("seed", 1, "seed of the fault layer")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// Help asked for is an answer, not an error: to stdout, exit 0.
			usage(stdout)
			return job.ExitOK
		}
		fmt.Fprintln(stderr, "see tagpush demo --help")
		return job.ExitBadInput
	}
	cfg, err := faults.Preset(*mode)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return job.ExitBadInput
	}
	if *ntags < 1 {
		fmt.Fprintf(stderr, "demo: --tags %d: give at least 1\n", *ntags)
		return job.ExitBadInput
	}
	cfg.Seed, cfg.Latency = *seed, *latency
	showAtDemoSize(*mode, &cfg)

	dir, err := os.MkdirTemp("", "tagpush-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return job.ExitFailed
	}
	defer os.RemoveAll(dir)
	if err := os.CopyFS(dir, image); err != nil {
		fmt.Fprintf(stderr, "demo: unpack the demo image: %v\n", err)
		return job.ExitFailed
	}

	layer := faults.New(registry.New(registry.Logger(log.New(io.Discard, "", 0))), cfg)
	srv := httptest.NewServer(layer)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	var tags []string
	for i := range *ntags {
		tags = append(tags, fmt.Sprintf("%s/demo/app:v1.%d", host, i))
	}
	fmt.Fprintf(stdout, "demo: registry on %s (fault mode %q, %s latency per request)\n", host, *mode, *latency)
	jobArgs := []string{
		"--source", "oci:" + dir,
		"--tags", strings.Join(tags, "\n"),
		"--concurrency", "4",
		"--retry-delay", "200ms",
		"--max-retry-delay", "5s",
	}
	code := job.Run(ctx, job.Env{
		Args:    jobArgs,
		Getenv:  func(string) string { return "" }, // the demo is always a terminal run
		Stdout:  stdout,
		Stderr:  stdout, // one stream, so the log and the table read in order
		Version: version,
	})

	st := layer.Stats()
	fmt.Fprintf(stdout, "\nregistry saw %d requests, %d blob upload(s), %s of blob data, %d manifest PUTs; faults injected: %s\n",
		st.Requests, st.UploadSessions, byteCount(st.BlobBytes), st.ManifestPuts, injected(st.Injected))
	verified := 0
	for _, t := range tags {
		ref, err := name.NewTag(t)
		if err != nil {
			continue
		}
		if _, err := remote.Head(ref, remote.WithContext(ctx)); err == nil {
			verified++
		}
	}
	fmt.Fprintf(stdout, "checked independently: %d of %d tags resolve in the registry\n", verified, len(tags))
	return code
}

// showAtDemoSize makes a fault mode show its fault in a demo of a few blobs
// and 8 tags, pushed in well under a second, where a rate may draw nothing:
// the first writes of each kind get the fault, then the rate goes on.
func showAtDemoSize(mode string, cfg *faults.Config) {
	switch mode {
	case "ghcr":
		// A quiet machine's 8 tags may never put 3 writes in flight.
		cfg.FailWritesFirst = max(cfg.FailWritesFirst, 2)
	case "429", "429-ghcr":
		cfg.TooManyFirst = max(cfg.TooManyFirst, 2)
	case "reset":
		cfg.ResetFirst = max(cfg.ResetFirst, 1)
	case "flaky":
		cfg.ResetFirst = max(cfg.ResetFirst, 1)
		cfg.TooManyFirst = max(cfg.TooManyFirst, 1)
	case "outage":
		// From the first request, short enough for the retries to outlast.
		cfg.OutageAfter, cfg.Outage = 0, 1500*time.Millisecond
	}
}

// injected says which faults the demo registry injected: "3 (429: 2, reset: 1)".
func injected(m map[string]int) string {
	total := 0
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		total += m[k]
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	if total == 0 {
		return "none"
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func byteCount(n int64) string {
	return fmt.Sprintf("%.1f KiB", float64(n)/1024)
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagpush/tagpush/internal/faults"
)

// engineBench is the Docker engine path as most users have it: a service
// image `docker build` left in the engine (a base of real files, the Go
// source tree and packages, ~220 MiB and compressible, and an 8 MiB app
// layer that changes with every build), pushed to 3 tags, tagpush's
// docker-daemon: source against `docker push`, in four cases:
//
//   - first push: a new repository, and an engine with no record of pushes;
//   - rebuild on a fresh runner: a new app layer, the tags holding the last
//     build, and the engine's record of its pushes wiped
//     (<data-root>/image/<driver>/distribution), as on every hosted job;
//   - rebuild on the same engine: the same, the record kept (self-hosted);
//   - unchanged re-run: the same image again (a retried job).
//
// Each row is one process; tagpush's CPU is its own (user + system), the
// engine's is dockerd's over the push. The export alone (`docker save` to
// /dev/null) is the floor of a rebuild on the same engine.
func (b *bench) engineBench(ctx context.Context, s settings) error {
	if !dockerEngine() {
		return fmt.Errorf("no Docker engine answers (set DOCKER_HOST)")
	}
	eng, err := findEngine(ctx)
	if err != nil {
		return err
	}
	const base = "bench/engine-base:1"
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return fmt.Errorf("go env GOROOT: %w", err)
	}
	goroot := strings.TrimSpace(string(out))
	fmt.Fprintf(os.Stderr, "bench: importing %s/src and %s/pkg as the base\n", goroot, goroot)
	imp := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("tar -C %q -cf - src pkg | docker import - %s", goroot, base))
	if out, err := imp.CombinedOutput(); err != nil {
		return fmt.Errorf("docker import: %v: %s", err, out)
	}
	defer exec.Command("docker", "rmi", "-f", base).Run()
	build := func(n string) (string, error) {
		dir, err := os.MkdirTemp(b.work, "build-")
		if err != nil {
			return "", err
		}
		app := make([]byte, 8<<20)
		_, _ = rand.Read(app)
		if err := os.WriteFile(filepath.Join(dir, "app.bin"), app, 0o644); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+base+"\nCOPY app.bin /app/app.bin\n"), 0o644); err != nil {
			return "", err
		}
		ref := "bench/engine-app:" + n
		if out, err := exec.CommandContext(ctx, "docker", "build", "-q", "-t", ref, dir).CombinedOutput(); err != nil {
			return "", fmt.Errorf("docker build: %v: %s", err, out)
		}
		return ref, nil
	}
	type row struct {
		kase, who         string
		run               int
		wall, cpu, engine time.Duration
		bytes, rss        int64
		holding           int
	}
	var rows []row
	cases := []string{"first push", "rebuild, fresh runner", "rebuild, same engine", "unchanged re-run"}
	var floors []time.Duration
	shape, wire := faults.Config{}, "loopback"
	if s.shaped {
		shape = faults.Config{Latency: s.latency, UploadBytesPerSec: int64(s.mbit * 1e6 / 8)}
		wire = fmt.Sprintf("%s a request, %.0f Mbit/s upload", s.latency, s.mbit)
	}
	fmt.Printf("A service image in the Docker engine (Docker %s, %s): a %s base of the Go tree's src and pkg, and an 8 MiB app layer new with every build; pushed to 3 tags on Distribution on disk, %s. %d runs; in each, the contenders take turns.\n\n", eng.version, eng.driver, mib(eng.baseSize(ctx, base)), wire, s.runs)
	for i := range s.runs {
		images := make([]string, 3)
		for k := range images {
			if images[k], err = build(fmt.Sprintf("r%d-%d", i, k)); err != nil {
				return err
			}
		}
		defer func() {
			for _, img := range images {
				_ = exec.Command("docker", "rmi", "-f", img).Run()
			}
		}()
		start := time.Now()
		if err := exec.CommandContext(ctx, "sh", "-c", "docker save "+images[2]+" > /dev/null").Run(); err != nil {
			return fmt.Errorf("docker save: %w", err)
		}
		floors = append(floors, time.Since(start))
		for ci, kase := range cases {
			img := images[min(ci, 2)]
			for _, who := range []string{"tagpush", "docker push"} {
				b.reg.Faults.Reset(shape)
				repo := fmt.Sprintf("bench/engine-%s-%d", slug(who), i)
				if kase == "first push" || kase == "rebuild, fresh runner" {
					if err := eng.forget(); err != nil {
						return err
					}
				}
				before := eng.cpu()
				var o outcome
				if who == "docker push" {
					o, err = dockerPushTags(ctx, img, b.reg.Host+"/"+repo, 3)
				} else {
					dir, _ := os.MkdirTemp(b.work, "run-")
					var tags []string
					for t := range 3 {
						tags = append(tags, fmt.Sprintf("%s/%s:t%d", b.reg.Host, repo, t))
					}
					o, err = runAction(ctx, b.env.tagpush, dir, "INPUT_SOURCE=docker-daemon:"+img, "INPUT_TAGS="+strings.Join(tags, "\n"), "DOCKER_HOST="+os.Getenv("DOCKER_HOST"))
				}
				if err != nil {
					return err
				}
				if len(o.errs) > 0 {
					return fmt.Errorf("%s, %s: %s", kase, who, strings.Join(o.errs, "; "))
				}
				rows = append(rows, row{kase: kase, who: who, run: i + 1, wall: o.wall, cpu: o.cpu, engine: eng.cpu() - before,
					bytes: b.reg.Faults.Stats().BlobBytes, rss: o.rss, holding: holding(b, repo, 3)})
			}
		}
	}
	fmt.Println("| case | contender | run | wall s | its CPU s | engine CPU s | blob MiB uploaded | peak RSS MiB | tags holding the image |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		cpu, rss := fmt.Sprintf("%.2f", r.cpu.Seconds()), fmt.Sprintf("%.0f", float64(r.rss)/(1<<20))
		if r.who == "docker push" {
			cpu, rss = "–", "–"
		}
		fmt.Printf("| %s | %s | %d | %.2f | %s | %.2f | %.1f | %s | %d |\n", r.kase, r.who, r.run, r.wall.Seconds(), cpu, r.engine.Seconds(), float64(r.bytes)/(1<<20), rss, r.holding)
	}
	median := func(kase, who string) time.Duration {
		var d []time.Duration
		for _, r := range rows {
			if r.kase == kase && r.who == who {
				d = append(d, r.wall)
			}
		}
		return medianOf(d)
	}
	fmt.Println("\n| case | tagpush / docker push (medians) | goal |")
	fmt.Println("|---|---:|---|")
	goals := map[string]string{"first push": "≤ 0.6x, ≤ 1.0x its bytes", "rebuild, fresh runner": "≤ 0.3x, only the new layer", "rebuild, same engine": "report; the export is its floor"}
	for _, kase := range cases[:3] {
		fmt.Printf("| %s | %.2fx | %s |\n", kase, median(kase, "tagpush").Seconds()/median(kase, "docker push").Seconds(), goals[kase])
	}
	fmt.Printf("| unchanged re-run, against tagpush's first push | %.3fx | ≤ 0.1x, no export |\n", median("unchanged re-run", "tagpush").Seconds()/median("first push", "tagpush").Seconds())
	fmt.Printf("\nThe export alone (`docker save` of the image to /dev/null): %.2f s (median); tagpush's rebuild on the same engine: %.2f s.\n", medianOf(floors).Seconds(), median("rebuild, same engine", "tagpush").Seconds())
	return nil
}

func medianOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

// engine is the Docker engine the bench runs against, on this machine.
type engine struct {
	version, driver, root string
	pid                   int
}

// findEngine finds the engine's data root and storage driver, and its
// process: the dockerd whose command line names DOCKER_HOST's socket (or
// the only one).
func findEngine(ctx context.Context) (*engine, error) {
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}} {{.Driver}} {{.DockerRootDir}}").Output()
	if err != nil {
		return nil, fmt.Errorf("docker info: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 3 {
		return nil, fmt.Errorf("docker info said %q", out)
	}
	e := &engine{version: f[0], driver: f[1], root: f[2]}
	sock := strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://")
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(cmd, []byte("dockerd")) {
			continue
		}
		if sock == "" || bytes.Contains(cmd, []byte(sock)) || e.pid == 0 {
			e.pid, _ = strconv.Atoi(strings.Split(p, "/")[2])
		}
	}
	if _, err := os.Stat(filepath.Join(e.root, "image", e.driver)); err != nil {
		return nil, fmt.Errorf("the engine's data root %s is not readable here: the fresh-runner case wipes its record of pushes: %w", e.root, err)
	}
	return e, nil
}

// forget wipes the engine's record of what it pushed where, as a fresh
// runner has none.
func (e *engine) forget() error {
	return os.RemoveAll(filepath.Join(e.root, "image", e.driver, "distribution"))
}

// cpu is the engine process's CPU time so far.
func (e *engine) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func (e *engine) baseSize(ctx context.Context, ref string) int64 {
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Size}}", ref).Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	return n
}

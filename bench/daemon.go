package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/tagpush/tagpush/internal/dockertest"
	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testimage"
)

// daemonBench pushes one image from the Docker engine to 3 tags: tagpush's
// docker-daemon: source (export, compress, push) against `docker push` of
// the same image, and the action's container cold start: `docker run` to
// the registry's first request.
func (b *bench) daemonBench(ctx context.Context, s settings) error {
	if !dockerEngine() {
		return fmt.Errorf("no Docker engine answers (set DOCKER_HOST)")
	}
	const ref = "bench/daemon:ci"
	img := empty.Image
	for range 3 {
		l, err := random.Layer(int64(s.memoryMiB/3)<<20, "application/vnd.docker.image.rootfs.diff.tar.gzip")
		if err != nil {
			return err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return err
		}
	}
	archive := b.work + "/daemon.tar"
	tag, _ := name.NewTag(ref)
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "docker", "load", "-i", archive).CombinedOutput(); err != nil {
		return fmt.Errorf("docker load: %v: %s", err, out)
	}
	defer exec.Command("docker", "rmi", "-f", ref).Run()
	fmt.Printf("One %d MiB image (3 layers of random bytes) in the Docker engine, pushed to 3 tags; registry on loopback, no shaping. %d runs each, taking turns.\n\n", s.memoryMiB, s.runs)
	fmt.Println("| contender | run | wall s | tags holding the image | blob MiB uploaded | peak RSS MiB |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for i := range s.runs {
		for _, c := range []string{"tagpush docker-daemon:", "docker push"} {
			b.reg.Faults.Reset(faults.Config{})
			repo := fmt.Sprintf("bench/daemon-%s-%d", slug(c), i)
			var o outcome
			var err error
			if c == "docker push" {
				o, err = dockerPushTags(ctx, ref, b.reg.Host+"/"+repo, 3)
			} else {
				dir, _ := os.MkdirTemp(b.work, "run-")
				var tags string
				for t := range 3 {
					tags += fmt.Sprintf("%s/%s:t%d\n", b.reg.Host, repo, t)
				}
				o, err = runAction(ctx, b.env.tagpush, dir, "INPUT_SOURCE=docker-daemon:"+ref, "INPUT_TAGS="+tags, "DOCKER_HOST="+os.Getenv("DOCKER_HOST"))
			}
			if err != nil {
				return err
			}
			rss := fmt.Sprintf("%.0f", float64(o.rss)/(1<<20))
			if c == "docker push" {
				rss = "– (the engine's)"
			}
			fmt.Printf("| %s | %d | %.2f | %d | %.0f | %s |\n", c, i+1, o.wall.Seconds(), holding(b, repo, 3), float64(b.reg.Faults.Stats().BlobBytes)/(1<<20), rss)
		}
	}
	return b.coldStart(ctx, s)
}

// coldStart builds the action's image (the Dockerfile's final stage on a
// stand-in base) and times `docker run` of it, as the GitHub runner starts a
// container action, to the registry's first request and to its end.
func (b *bench) coldStart(ctx context.Context, s settings) error {
	host := os.Getenv("DOCKER_HOST")
	sock, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		return fmt.Errorf("the cold start mounts the engine's socket; DOCKER_HOST is %s", host)
	}
	const base, image = "bench/distroless-standin:latest", "bench/tagpush-action:bench"
	if err := dockertest.StandInBase(ctx, host, base); err != nil {
		return err
	}
	if err := dockertest.BuildAction(ctx, host, filepath.Join(moduleRoot(), "Dockerfile"), b.env.tagpush, base, image); err != nil {
		return err
	}
	defer exec.Command("docker", "rmi", "-f", image, base).Run()
	layout := filepath.Join(b.work, "cold")
	if _, err := testimage.WriteRandomLayout(layout, 1, 1<<20, 3); err != nil {
		return err
	}
	fmt.Printf("\nThe action's cold start: `docker run` of its image (as the GitHub runner starts a container action: inputs by name, file commands, the workspace and the docker socket mounted), an OCI layout of 1 MiB in the workspace to 3 tags.\n\n")
	fmt.Println("| run | to the first registry request, ms | whole step, ms |")
	fmt.Println("|---:|---:|---:|")
	for i := range s.runs {
		b.reg.Faults.Reset(faults.Config{})
		dir, _ := os.MkdirTemp(b.work, "run-")
		var tags []string
		for t := range 3 {
			tags = append(tags, fmt.Sprintf("%s/bench/cold-%d:t%d", b.reg.Host, i, t))
		}
		args := []string{"run", "--rm", "--network", "host", "--workdir", "/github/workspace",
			"-e", "GITHUB_ACTIONS=true", "-e", "INPUT_SOURCE=oci:image", "-e", "INPUT_TAGS=" + strings.Join(tags, "\n"),
			"-e", "GITHUB_OUTPUT=/github/file_commands/set_output", "-e", "GITHUB_STEP_SUMMARY=/github/file_commands/step_summary",
			"-v", sock + ":/var/run/docker.sock", "-v", dir + ":/github/file_commands", "-v", layout + ":/github/workspace/image", image}
		start := time.Now()
		out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
		whole := time.Since(start)
		if err != nil {
			return fmt.Errorf("docker run: %v: %s", err, out)
		}
		first := b.reg.Faults.Stats().FirstRequest.Sub(start)
		fmt.Printf("| %d | %d | %d |\n", i+1, first.Milliseconds(), whole.Milliseconds())
	}
	return nil
}

// dockerPushTags tags the engine's image and pushes each tag, one after
// another (a later tag costs a manifest PUT: the engine knows the blobs are
// there).
func dockerPushTags(ctx context.Context, ref, repo string, tags int) (outcome, error) {
	var refs []string
	for t := range tags {
		r := fmt.Sprintf("%s:t%d", repo, t)
		if out, err := exec.CommandContext(ctx, "docker", "tag", ref, r).CombinedOutput(); err != nil {
			return outcome{}, fmt.Errorf("docker tag: %v: %s", err, out)
		}
		refs = append(refs, r)
	}
	start := time.Now()
	o := outcome{}
	for _, r := range refs {
		if out, err := exec.CommandContext(ctx, "docker", "push", "--quiet", r).CombinedOutput(); err != nil {
			o.errs = append(o.errs, fmt.Sprintf("docker push: %v: %s", err, out))
		}
	}
	o.wall = time.Since(start)
	for _, r := range refs {
		_ = exec.Command("docker", "rmi", r).Run()
	}
	return o, nil
}

// holding counts the tags t0..tN-1 of repo that hold one image.
func holding(b *bench, repo string, tags int) int {
	n := 0
	var first v1.Hash
	for t := range tags {
		r, _ := name.NewTag(fmt.Sprintf("%s/%s:t%d", b.reg.Direct, repo, t))
		d, err := remote.Head(r)
		if err != nil || (t > 0 && d.Digest != first) {
			continue
		}
		first = d.Digest
		n++
	}
	return n
}

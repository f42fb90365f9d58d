package main

// The action's container, run as the runners run it: the image the
// Dockerfile's final stage builds (on a stand-in base: nothing can be pulled
// here), started with the GitHub runner's own `docker run` line and as
// Bitbucket starts a pipe, against the test registry.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tagpush/tagpush/config"
	"github.com/tagpush/tagpush/internal/actiontest"
	"github.com/tagpush/tagpush/internal/dockertest"
	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testimage"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/report"
)

var (
	actionOnce  sync.Once
	actionImage string
	actionErr   error
)

// action builds the action's image once for these tests.
func action(t *testing.T, host string) string {
	t.Helper()
	actionOnce.Do(func() {
		ctx := context.Background()
		base := "tagpush-test/distroless-standin:latest"
		if actionErr = dockertest.StandInBase(ctx, host, base); actionErr != nil {
			return
		}
		actionImage = "tagpush-test/action:e2e"
		actionErr = dockertest.BuildAction(ctx, host, "Dockerfile", binary, base, actionImage)
	})
	if actionErr != nil {
		t.Fatal(actionErr)
	}
	return actionImage
}

func socketPath(t *testing.T, host string) string {
	t.Helper()
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		t.Skipf("the container tests mount the engine's socket; DOCKER_HOST is %s", host)
	}
	return path
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// githubRun is one container action step, as actions/runner starts it.
type githubRun struct {
	name, dir, workspace, fileCommands, id string
	args                                   []string
	env                                    []string
}

// newGitHubRun lays out the runner's directories and builds its docker run
// line: every input the action declares is passed by name (-e INPUT_X, hyphens
// kept), with its default when the step does not set it; the file commands,
// the workspace, the home and the docker socket are mounted.
func newGitHubRun(t *testing.T, host, image string, inputs map[string]string) *githubRun {
	t.Helper()
	g := &githubRun{name: "tagpush_" + uuid()[:12], dir: t.TempDir(), id: uuid()}
	g.workspace = filepath.Join(g.dir, "workspace")
	g.fileCommands = filepath.Join(g.dir, "_runner_file_commands")
	for _, d := range []string{g.workspace, g.fileCommands, filepath.Join(g.dir, "_github_home"), filepath.Join(g.dir, "_github_workflow")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	vars := map[string]string{
		"HOME": "/github/home", "GITHUB_ACTIONS": "true", "CI": "true",
		"GITHUB_WORKSPACE":    "/github/workspace",
		"GITHUB_OUTPUT":       "/github/file_commands/set_output_" + g.id,
		"GITHUB_STEP_SUMMARY": "/github/file_commands/step_summary_" + g.id,
		"GITHUB_ENV":          "/github/file_commands/set_env_" + g.id,
		"GITHUB_PATH":         "/github/file_commands/add_path_" + g.id,
		"GITHUB_STATE":        "/github/file_commands/save_state_" + g.id,
		"RUNNER_OS":           "Linux", "RUNNER_TEMP": "/home/runner/work/_temp",
	}
	for _, o := range config.Options() {
		v, ok := inputs[o.Name]
		if !ok {
			v = o.Default
		}
		vars["INPUT_"+strings.ToUpper(strings.ReplaceAll(o.Name, " ", "_"))] = v
	}
	g.args = []string{"run", "--name", g.name, "--label", "tagpush-e2e", "--workdir", "/github/workspace", "--rm", "--network", "host"}
	for k, v := range vars {
		g.args = append(g.args, "-e", k)
		g.env = append(g.env, k+"="+v)
	}
	g.args = append(g.args,
		"-v", socketPath(t, host)+":/var/run/docker.sock",
		"-v", filepath.Join(g.dir, "_github_home")+":/github/home",
		"-v", filepath.Join(g.dir, "_github_workflow")+":/github/workflow",
		"-v", g.fileCommands+":/github/file_commands",
		"-v", g.workspace+":/github/workspace",
		image)
	g.env = append(g.env, "PATH="+os.Getenv("PATH"), "DOCKER_HOST="+host)
	return g
}

func (g *githubRun) cmd() *exec.Cmd {
	cmd := exec.Command("docker", g.args...)
	cmd.Env = g.env
	return cmd
}

func (g *githubRun) outputs(t *testing.T) map[string]string {
	t.Helper()
	out, err := actiontest.ReadOutputs(filepath.Join(g.fileCommands, "set_output_"+g.id))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// The action's container as the GitHub runner runs it: a docker-daemon:
// source through the mounted socket, credentials masked, outputs parsed as
// the runner parses them, the summary; a workspace-relative source; SIGINT
// (a cancelled workflow) ends it with exit 1 and its outputs written.
func TestContainerActionAsTheGitHubRunnerRunsIt(t *testing.T) {
	host := dockertest.Engine(t)
	image := action(t, host)
	const secret = "e2e-S3cret-T0ken"
	reg := testregistry.ForTest(t, testregistry.Options{Users: map[string]string{"ci": secret}})
	img, _ := testimage.Small("linux", "amd64")
	dockertest.Load(t, host, map[string]v1.Image{"tagpush-test/e2e-app:ci": img})

	g := newGitHubRun(t, host, image, map[string]string{
		"source":        "docker-daemon:tagpush-test/e2e-app:ci",
		"tags":          "1.4.2\n1.4, latest",
		"repository":    reg.Host + "/acme/app",
		"registry-auth": reg.Host + "=ci:" + secret,
		"max-attempts":  "3",
	})
	start := time.Now()
	out, err := g.cmd().CombinedOutput()
	took := time.Since(start)
	if code := exitCode(t, err); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	st := reg.Faults.Stats()
	t.Logf("docker run to the first registry request: %s; whole step %s", st.FirstRequest.Sub(start).Round(time.Millisecond), took.Round(time.Millisecond))
	log := string(out)
	if !strings.Contains(log, "::add-mask::"+secret) || strings.Count(log, secret) != 1 {
		t.Errorf("the secret is not masked first and only:\n%s", log)
	}
	outputs := g.outputs(t)
	var results []report.Entry
	if err := json.Unmarshal([]byte(outputs["results"]), &results); err != nil || len(results) != 3 {
		t.Fatalf("results output %q: %v", outputs["results"], err)
	}
	for _, r := range results {
		if r.Status != "pushed" || r.Digest != outputs["digest"] || r.Source != "docker-daemon:tagpush-test/e2e-app:ci" {
			t.Errorf("result %+v, want pushed at %s", r, outputs["digest"])
		}
	}
	summary, _ := os.ReadFile(filepath.Join(g.fileCommands, "step_summary_"+g.id))
	if !strings.Contains(string(summary), "3 of 3 tags pushed") {
		t.Errorf("summary:\n%s", summary)
	}

	// A source relative to the workspace, as a step after checkout names it.
	g2 := newGitHubRun(t, host, image, map[string]string{"source": "oci:build/image", "tags": "oci", "repository": reg.Host + "/acme/app", "registry-auth": reg.Host + "=ci:" + secret})
	if err := os.CopyFS(filepath.Join(g2.workspace, "build", "image"), os.DirFS("testdata/oci")); err != nil {
		t.Fatal(err)
	}
	if out, err := g2.cmd().CombinedOutput(); exitCode(t, err) != 0 {
		t.Fatalf("workspace-relative source: %s", out)
	}
}

// A cancelled workflow: the runner sends the container SIGINT; the step
// ends with exit 1, and its outputs say which tags are in and which were
// cancelled.
func TestContainerActionCancelled(t *testing.T) {
	host := dockertest.Engine(t)
	image := action(t, host)
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{Latency: 150 * time.Millisecond}})
	var tags []string
	for i := range 30 {
		tags = append(tags, fmt.Sprintf("%s/acme/app:v%d", reg.Host, i))
	}
	g := newGitHubRun(t, host, image, map[string]string{"source": "oci:build/image", "tags": strings.Join(tags, "\n"), "concurrency": "1"})
	if err := os.CopyFS(filepath.Join(g.workspace, "build", "image"), os.DirFS("testdata/oci")); err != nil {
		t.Fatal(err)
	}
	cmd := g.cmd()
	stdout, log := startUntilWritten(t, cmd, true, reg, 3)
	if out, err := exec.Command("docker", "kill", "--signal", "SIGINT", g.name).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v: %s", err, out)
	}
	_, _ = io.Copy(log, stdout)
	if code := exitCode(t, cmd.Wait()); code != 1 {
		t.Errorf("exit %d after SIGINT, want 1\n%s", code, log.String())
	}
	var results []report.Entry
	if err := json.Unmarshal([]byte(g.outputs(t)["results"]), &results); err != nil || len(results) != len(tags) {
		t.Fatalf("results after SIGINT: %v\n%s", err, log.String())
	}
	cancelled := 0
	for _, r := range results {
		if r.Status == "cancelled" {
			cancelled++
		} else if r.Status != "pushed" {
			t.Errorf("%s: %s", r.Tag, r.Status)
		}
	}
	if cancelled == 0 {
		t.Errorf("no tag was cancelled:\n%s", log.String())
	}
}

// tcpToUnix forwards a TCP port on loopback to the engine's socket: the
// docker service a Bitbucket step reaches over tcp.
func tcpToUnix(t *testing.T, socket string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", socket)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return "tcp://" + l.Addr().String()
}

// The pipe as Bitbucket runs it: every variable as --env (a YAML list as
// NAME_COUNT, NAME_0...), the clone as the working directory with the pipes'
// storage in it, the docker service over tcp; results.json in shared
// storage, the coloured result line with no terminal, exit 1 for a refused
// tag.
func TestContainerPipeAsBitbucketRunsIt(t *testing.T) {
	host := dockertest.Engine(t)
	image := action(t, host)
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{DenyRepo: "acme/locked", DenyStatus: 403}})
	img, _ := testimage.Small("linux", "arm64")
	dockertest.Load(t, host, map[string]v1.Image{"tagpush-test/pipe-app:ci": img})
	clone := t.TempDir()
	const build = "/opt/atlassian/pipelines/agent/build"
	shared := build + "/.bitbucket/pipelines/generated/pipeline/pipes"
	env := []string{
		"BITBUCKET_BUILD_NUMBER=7", "BITBUCKET_CLONE_DIR=" + build, "BITBUCKET_REPO_SLUG=app",
		"BITBUCKET_PIPE_STORAGE_DIR=" + shared + "/tagpush/tagpush", "BITBUCKET_PIPE_SHARED_STORAGE_DIR=" + shared,
		"DOCKER_HOST=" + tcpToUnix(t, socketPath(t, host)),
		"SOURCE=docker-daemon:tagpush-test/pipe-app:ci",
		"TAGS_COUNT=3", "TAGS_0=" + reg.Host + "/acme/app:1", "TAGS_1=" + reg.Host + "/acme/app:latest", "TAGS_2=" + reg.Host + "/acme/locked:1",
		"MAX_ATTEMPTS=2",
	}
	args := []string{"container", "run", "--rm", "--network", "host", "--workdir", build, "-v", clone + ":" + build}
	for _, kv := range env {
		args = append(args, "--env", kv)
	}
	out, err := exec.Command("docker", append(args, image)...).CombinedOutput()
	if code := exitCode(t, err); code != 1 {
		t.Fatalf("exit %d, want 1 (one tag refused)\n%s", code, out)
	}
	if !strings.Contains(string(out), "\x1b[31m✖ Failed: 2 of 3 tags pushed, 1 failed\x1b[0m") {
		t.Errorf("no red result line:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(clone, ".bitbucket/pipelines/generated/pipeline/pipes/tagpush/results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var results []report.Entry
	if err := json.Unmarshal(b, &results); err != nil || len(results) != 3 || results[0].Status != "pushed" || results[2].Status != "failed" {
		t.Errorf("results.json %s (%v)", b, err)
	}
}

// The real Dockerfile builds, when its bases are in the engine (nothing can
// be pulled here, so this runs where they have been loaded or can be pulled).
func TestDockerfileBuildsWithItsBases(t *testing.T) {
	host := dockertest.Engine(t)
	for _, base := range []string{"golang:1.26-bookworm", "gcr.io/distroless/static-debian12"} {
		if exec.Command("docker", "image", "inspect", base).Run() != nil {
			t.Skipf("%s is not in the Docker engine at %s, and nothing can be pulled here: the Dockerfile's final stage is built on a stand-in in the other tests", base, host)
		}
	}
	out, err := exec.Command("docker", "build", "--pull=false", "-t", "tagpush-test/action:dockerfile", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	if out, err := exec.Command("docker", "run", "--rm", "tagpush-test/action:dockerfile", "--version").CombinedOutput(); err != nil {
		t.Fatalf("run the built image: %v\n%s", err, out)
	}
}

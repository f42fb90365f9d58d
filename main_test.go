package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/actiontest"
	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/report"
)

const testVersion = "v0.0.0-e2e"

// binary is the release build of tagpush, made once for these tests with the
// Dockerfile's flags.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tagpush-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "tagpush")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion, "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build tagpush: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the binary with exactly env (no inherited variables) and returns
// stdout, stderr and the exit code.
func runBinary(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func readOutputs(t *testing.T, path string) map[string]string {
	t.Helper()
	out, err := actiontest.ReadOutputs(path)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVersion(t *testing.T) {
	for _, flag := range []string{"--version", "-v", "version"} {
		stdout, _, code := runBinary(t, nil, flag)
		if want := "tagpush " + testVersion + " (go1."; code != 0 || !strings.HasPrefix(stdout, want) || strings.Count(stdout, "\n") != 1 {
			t.Errorf("%s printed %q (exit %d), want one line starting %q", flag, stdout, code, want)
		}
	}
}

// A build without a stamped version says what the build info knows: the
// module's version (go install), or the pseudo-version and revision of the
// work tree it was built from; never "dev" when there is more to say.
func TestVersionsFromBuildInfo(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "6f0473bb99251c2e7a0c3b3f9cdd0f4e2b1a9c8d"}, {Key: "vcs.modified", Value: "true"}}
	tests := []struct {
		name, stamped string
		info          *debug.BuildInfo
		short, long   string
	}{
		{"stamped release", "v1.2.3", &debug.BuildInfo{GoVersion: "go1.25.1", Main: debug.Module{Version: "(devel)"}}, "v1.2.3", "v1.2.3 (go1.25.1)"},
		{"go install", "", &debug.BuildInfo{GoVersion: "go1.25.1", Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0", "v1.4.0 (go1.25.1)"},
		{"work tree", "", &debug.BuildInfo{GoVersion: "go1.25.1", Main: debug.Module{Version: "v0.0.0-20261202014441-6f0473bb9925+dirty"}, Settings: vcs},
			"v0.0.0-20261202014441-6f0473bb9925+dirty", "v0.0.0-20261202014441-6f0473bb9925+dirty (revision 6f0473bb9925, modified, go1.25.1)"},
		{"no vcs stamp", "", &debug.BuildInfo{GoVersion: "go1.25.1", Main: debug.Module{Version: "(devel)"}}, "dev", "dev (go1.25.1)"},
		{"no build info", "", nil, "dev", "dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			short, long := versions(tt.stamped, tt.info)
			if short != tt.short || long != tt.long {
				t.Errorf("versions = %q, %q; want %q, %q", short, long, tt.short, tt.long)
			}
		})
	}
}

func TestReleaseBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %s program header: it is dynamically linked", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs %v", libs)
	}
	out, err := exec.Command("go", "version", "-m", binary).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "CGO_ENABLED=0") || !strings.Contains(string(out), "-trimpath=true") {
		t.Errorf("go version -m does not show a static, trimmed build:\n%s", out)
	}
}

// TestDockerfileEntrypointIsTheBuiltBinary reads the Dockerfile: what it
// builds is what it runs, with the release's flags, and as root. The image
// itself is built and run by the container tests.
func TestDockerfileEntrypointIsTheBuiltBinary(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	built := regexp.MustCompile(`go build [^\n]*-o (\S+) \.`).FindStringSubmatch(df)
	copied := regexp.MustCompile(`COPY --from=build (\S+) (\S+)`).FindStringSubmatch(df)
	entry := regexp.MustCompile(`ENTRYPOINT \["([^"]+)"\]`).FindStringSubmatch(df)
	if built == nil || copied == nil || entry == nil {
		t.Fatalf("Dockerfile lacks a go build -o, a COPY --from=build or an exec-form ENTRYPOINT")
	}
	if copied[1] != built[1] || entry[1] != copied[2] {
		t.Errorf("build writes %s, COPY takes %s to %s, ENTRYPOINT runs %s", built[1], copied[1], copied[2], entry[1])
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-s -w`, "-X main.version=", "RUN go mod download"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^USER `).MatchString(df) {
		t.Error("Dockerfile sets USER: GitHub container actions must run as root")
	}
}

func TestGitHubActionEndToEnd(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	dir := t.TempDir()
	env := map[string]string{
		"GITHUB_ACTIONS":      "true",
		"GITHUB_OUTPUT":       filepath.Join(dir, "output"),
		"GITHUB_STEP_SUMMARY": filepath.Join(dir, "summary"),
		"INPUT_SOURCE":        "oci:testdata/oci",
		"INPUT_TAGS":          "1.0\n1\nlatest",
		"INPUT_REPOSITORY":    reg.Host + "/acme/app",
		"INPUT_MAX-ATTEMPTS":  "2",
	}
	stdout, stderr, code := runBinary(t, env)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	out := readOutputs(t, env["GITHUB_OUTPUT"])
	var results []report.Entry
	if err := json.Unmarshal([]byte(out["results"]), &results); err != nil || len(results) != 3 {
		t.Fatalf("results output %q: %v", out["results"], err)
	}
	for _, r := range results {
		if r.Status != "pushed" || r.Digest != out["digest"] {
			t.Errorf("result %+v, want pushed as %s", r, out["digest"])
		}
		ref, _ := name.NewTag(r.Tag)
		if desc, err := remote.Head(ref); err != nil || desc.Digest.String() != out["digest"] {
			t.Errorf("%s not in the registry as %s: %v", r.Tag, out["digest"], err)
		}
	}
	summary, _ := os.ReadFile(env["GITHUB_STEP_SUMMARY"])
	if !strings.Contains(string(summary), "3 of 3 tags pushed") {
		t.Errorf("summary:\n%s", summary)
	}
}

func TestGitHubWithoutFileCommandsStillRuns(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	env := map[string]string{"GITHUB_ACTIONS": "true", "INPUT_SOURCE": "oci:testdata/oci", "INPUT_TAGS": reg.Host + "/acme/app:x"}
	stdout, stderr, code := runBinary(t, env)
	if code != 0 || !strings.Contains(stdout, "GITHUB_OUTPUT is not set") {
		t.Errorf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

func TestBitbucketPipeEndToEnd(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{DenyRepo: "acme/locked", DenyStatus: 403}})
	storage := t.TempDir()
	env := map[string]string{
		"BITBUCKET_BUILD_NUMBER":            "7",
		"BITBUCKET_PIPE_SHARED_STORAGE_DIR": storage,
		"SOURCE":                            "docker-archive:testdata/image.tar",
		"TAGS_COUNT":                        "3",
		"TAGS_0":                            reg.Host + "/acme/app:1",
		"TAGS_1":                            reg.Host + "/acme/app:2",
		"TAGS_2":                            reg.Host + "/acme/locked:1",
		"MAX_ATTEMPTS":                      "2",
	}
	stdout, stderr, code := runBinary(t, env)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (one tag denied)\n%s\n%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(filepath.Join(storage, "tagpush", "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var results []report.Entry
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, r := range results {
		got = append(got, r.Tag+"="+r.Status)
	}
	want := []string{reg.Host + "/acme/app:1=pushed", reg.Host + "/acme/app:2=pushed", reg.Host + "/acme/locked:1=failed"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("results.json = %v, want %v", got, want)
	}
	// A pipe has no terminal, and its log page shows colours.
	if !strings.Contains(stdout, "\x1b[31m✖ Failed: 2 of 3 tags pushed, 1 failed\x1b[0m") {
		t.Errorf("no red failure line:\n%s", stdout)
	}

	env["TAGS_COUNT"] = "2"
	env["NO_COLOR"] = "1"
	stdout, _, code = runBinary(t, env)
	// The same two tags again: both already hold the digest.
	if code != 0 || !strings.Contains(stdout, "✔ Success: 2 of 2 tags at the digest (0 pushed, 2 unchanged)") || strings.Contains(stdout, "\x1b[") {
		t.Errorf("exit %d; want an uncoloured (NO_COLOR) success line with both tags unchanged:\n%s", code, stdout)
	}
}

func TestTerminalEndToEnd(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	stdout, stderr, code := runBinary(t, nil, "--source", "oci:testdata/oci", "--tags", reg.Host+"/acme/app:1,"+reg.Host+"/acme/app:2", "--fail-on-error", "true")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.HasPrefix(stdout, "STATUS") || strings.Count(stdout, "\npushed ") != 2 || strings.Contains(stdout, "::") {
		t.Errorf("stdout is not a plain table of 2 pushed tags:\n%s", stdout)
	}
	if !strings.Contains(stderr, "2 of 2 tags pushed") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestBadInputFromTheCLI(t *testing.T) {
	_, stderr, code := runBinary(t, nil, "--source", "oci:testdata/oci", "--tags", "localhost:5000/app:1", "--concurrency", "-3")
	if code != 2 || !strings.Contains(stderr, `concurrency: -3 is less than 1`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// TestInterruptCancelsPromptly sends SIGINT to a run in progress, as a
// cancelled workflow does: the process exits soon, writes its outputs, and
// reports no unfinished tag as pushed.
func TestInterruptCancelsPromptly(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{Latency: 150 * time.Millisecond}})
	dir := t.TempDir()
	var tags []string
	for i := range 40 {
		tags = append(tags, fmt.Sprintf("%s/acme/app:v%d", reg.Host, i))
	}
	cmd := exec.Command(binary)
	cmd.Env = []string{
		"HOME=" + dir, "GITHUB_ACTIONS=true",
		"GITHUB_OUTPUT=" + filepath.Join(dir, "output"), "GITHUB_STEP_SUMMARY=" + filepath.Join(dir, "summary"),
		"INPUT_SOURCE=oci:testdata/oci", "INPUT_TAGS=" + strings.Join(tags, "\n"), "INPUT_CONCURRENCY=1",
	}
	rest, log := startUntilWritten(t, cmd, false, reg, 3)
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		<-ctx.Done()
		_ = cmd.Process.Kill()
	}()
	_, _ = io.Copy(log, rest)
	err := cmd.Wait()
	took := time.Since(sent)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want exit code 1", err)
	}
	if took > 5*time.Second {
		t.Errorf("exited %s after SIGINT, want within 5s", took)
	}
	out := readOutputs(t, filepath.Join(dir, "output"))
	var results []report.Entry
	if err := json.Unmarshal([]byte(out["results"]), &results); err != nil || len(results) != len(tags) {
		t.Fatalf("results output after SIGINT: %v\n%s", err, log.String())
	}
	cancelled := 0
	for _, r := range results {
		switch r.Status {
		case "pushed":
			ref, _ := name.NewTag(strings.Replace(r.Tag, reg.Host, reg.Direct, 1))
			if _, err := remote.Head(ref); err != nil {
				t.Errorf("%s reported pushed but is not in the registry: %v", r.Tag, err)
			}
		case "cancelled":
			cancelled++
		default:
			t.Errorf("%s: %s %s", r.Tag, r.Status, r.Error)
		}
	}
	if cancelled < len(tags)/2 {
		t.Errorf("%d of %d tags cancelled, want most", cancelled, len(tags))
	}
	// A workflow that retries what failed reads the failed output: every
	// tag that does not hold the image, cancelled ones included, is there.
	failed := make(map[string]bool)
	for _, line := range strings.Split(out["failed"], "\n") {
		failed[line] = true
	}
	for _, r := range results {
		if r.Status != "pushed" && !failed[r.Tag] {
			t.Errorf("%s is %s but not in the failed output", r.Tag, r.Status)
		}
	}
}

// What a new user types first: --help (and -h) answer on stdout with exit
// 0, source and tags first, every source form named, real placeholders; a
// mistyped flag is one line with a suggestion and exit 2, not the manual.
func TestHelpAndMistypedFlags(t *testing.T) {
	for _, flag := range []string{"--help", "-h"} {
		stdout, stderr, code := runBinary(t, nil, flag)
		if code != 0 || stderr != "" {
			t.Fatalf("%s: exit %d, stderr %q; want the help on stdout and exit 0", flag, code, stderr)
		}
		src, tags := strings.Index(stdout, "--source SOURCE"), strings.Index(stdout, "--tags TAGS\n")
		if src < 0 || tags < 0 || strings.Index(stdout, "--concurrency") < tags || src > tags {
			t.Errorf("%s: --source and --tags do not come first:\n%s", flag, stdout)
		}
		folded := strings.Join(strings.Fields(stdout), " ")
		for _, want := range []string{"oci:", "docker-archive:", "docker-daemon:", "registry:", "--password TOKEN", "Speed and retries:", "Examples:", "(default 200ms)"} {
			if !strings.Contains(folded, want) {
				t.Errorf("%s: help lacks %q", flag, want)
			}
		}
	}

	stdout, stderr, code := runBinary(t, nil, "--sorce", "oci:x", "--tags", "a.io/x:1")
	out := strings.TrimSpace(stdout + stderr)
	if code != 2 || strings.Count(out, "\n") > 1 || !strings.Contains(out, "unknown flag --sorce; did you mean --source? see tagpush --help") {
		t.Errorf("mistyped flag: exit %d, output %q; want one line with a suggestion and exit 2", code, out)
	}

	stdout, stderr, code = runBinary(t, nil, "demo", "--help")
	if code != 0 || stderr != "" || !strings.Contains(stdout, "Usage: tagpush demo") {
		t.Errorf("demo --help: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// startUntilWritten starts cmd and returns once the registry has been sent
// at least n manifest PUTs: the run is mid-push. It returns cmd's stdout
// (with stderr, when asked) to read to the end, and a log to add it to.
// (Tags report when the repository's writes have settled, so no "pushed"
// line comes mid-push to wait for.)
func startUntilWritten(t *testing.T, cmd *exec.Cmd, stderr bool, reg *testregistry.Registry, n int) (io.Reader, *strings.Builder) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if stderr {
		cmd.Stderr = cmd.Stdout
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for reg.Faults.Stats().ManifestPuts < n {
		if time.Now().After(deadline) {
			t.Fatalf("the registry got no %d manifest PUTs in 30s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return stdout, new(strings.Builder)
}

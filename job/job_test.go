package job_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/actiontest"
	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/job"
	"github.com/tagpush/tagpush/report"
)

const ociSource = "oci:../testdata/oci"

// runner is a simulated GitHub Actions runner: INPUT_* variables and temp
// files for GITHUB_OUTPUT and GITHUB_STEP_SUMMARY.
type runner struct {
	env            map[string]string
	output, report string
	stdout, stderr bytes.Buffer
}

func newRunner(t *testing.T, inputs map[string]string) *runner {
	t.Helper()
	dir := t.TempDir()
	r := &runner{
		env: map[string]string{
			"GITHUB_ACTIONS":      "true",
			"GITHUB_OUTPUT":       filepath.Join(dir, "output"),
			"GITHUB_STEP_SUMMARY": filepath.Join(dir, "summary"),
		},
		output: filepath.Join(dir, "output"),
		report: filepath.Join(dir, "summary"),
	}
	// Quick retries, unless the test sets its own: through the inputs, as
	// a workflow would.
	quick := map[string]string{"max-attempts": "3", "retry-delay": "10ms", "max-retry-delay": "100ms"}
	for k, v := range quick {
		r.env["INPUT_"+strings.ToUpper(k)] = v
	}
	for k, v := range inputs {
		r.env["INPUT_"+strings.ToUpper(k)] = v
	}
	return r
}

func (r *runner) run(t *testing.T, args ...string) int {
	t.Helper()
	return job.Run(context.Background(), job.Env{
		Args:         args,
		Getenv:       func(k string) string { return r.env[k] },
		Environ:      environ(r.env),
		Stdout:       &r.stdout,
		Stderr:       &r.stderr,
		Version:      "test",
		DockerConfig: authn.NewMultiKeychain(), // not this machine's ~/.docker/config.json
	})
}

// environ lists env as os.Environ does.
func environ(env map[string]string) func() []string {
	return func() []string {
		var out []string
		for k, v := range env {
			out = append(out, k+"="+v)
		}
		return out
	}
}

func (r *runner) outputs(t *testing.T) map[string]string {
	t.Helper()
	out, err := actiontest.ReadOutputs(r.output)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sourceDigest(t *testing.T) string {
	t.Helper()
	lp, err := layout.FromPath("../testdata/oci")
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := lp.ImageIndex()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return m.Manifests[0].Digest.String()
}

func TestGitHubRunWritesOutputsAndSummary(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	tags := []string{reg.Host + "/acme/app:1.4.2", "1.4", "latest", reg.Host + "/acme/app:sha-abc123"}
	r := newRunner(t, map[string]string{
		"source":      ociSource,
		"tags":        "# release\r\n" + tags[0] + "\r\n1.4, latest\r\n\r\n" + tags[3] + "\r\n",
		"repository":  reg.Host + "/acme/app",
		"concurrency": "2",
	})
	if code := r.run(t); code != job.ExitOK {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, &r.stdout, &r.stderr)
	}
	want := sourceDigest(t)
	out := r.outputs(t)
	if out["digest"] != want {
		t.Errorf("digest output = %q, want %q", out["digest"], want)
	}
	var results []report.Entry
	if err := json.Unmarshal([]byte(out["results"]), &results); err != nil {
		t.Fatalf("results output is not JSON: %v\n%s", err, out["results"])
	}
	full := []string{tags[0], reg.Host + "/acme/app:1.4", reg.Host + "/acme/app:latest", tags[3]}
	if len(results) != len(full) {
		t.Fatalf("%d results, want %d", len(results), len(full))
	}
	for i, e := range results {
		if e.Tag != full[i] || e.Status != "pushed" || e.Digest != want || e.Attempts != 1 || e.Error != "" || e.DurationMS < 0 {
			t.Errorf("result %d = %+v, want %s pushed", i, e, full[i])
		}
	}
	if got := strings.Split(out["pushed"], "\n"); strings.Join(got, ",") != strings.Join(full, ",") {
		t.Errorf("pushed output = %q, want %q", got, full)
	}
	if out["failed"] != "" {
		t.Errorf("failed output = %q, want empty", out["failed"])
	}

	summary, err := os.ReadFile(r.report)
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, line := range strings.Split(string(summary), "\n") {
		if strings.HasPrefix(line, "| ✅ pushed | `") {
			rows++
			cells := strings.Split(line, " | ")
			if len(cells) != 6 || !strings.Contains(cells[2], report.ShortDigest(want)) {
				t.Errorf("summary row %q: want 6 cells with the short digest", line)
			}
		}
	}
	if rows != len(full) || !strings.Contains(string(summary), "4 of 4 tags pushed") {
		t.Errorf("summary has %d pushed rows, want %d:\n%s", rows, len(full), summary)
	}
	for _, tag := range full {
		if !strings.Contains(r.stdout.String(), "pushed "+tag+" (") {
			t.Errorf("log has no line for %s:\n%s", tag, &r.stdout)
		}
	}
}

func TestBadInputExitsTwoAndPushesNothing(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	good := reg.Host + "/acme/app:1"
	tests := []struct {
		name   string
		inputs map[string]string
		want   string
	}{
		{"empty tags", map[string]string{"source": ociSource, "tags": "\n  \n"}, "tags is required"},
		{"only comments", map[string]string{"source": ociSource, "tags": "# nothing\n"}, "tags is empty"},
		{"invalid reference on line 3", map[string]string{"source": ociSource, "tags": good + "\n\n" + reg.Host + "/Acme/App:1"}, `tags line 3: "` + reg.Host + `/Acme/App:1"`},
		{"digest reference", map[string]string{"source": ociSource, "tags": good + "\n" + reg.Host + "/acme/app@sha256:" + strings.Repeat("0", 64)}, "a digest reference cannot be a destination"},
		{"concurrency zero", map[string]string{"source": ociSource, "tags": good, "concurrency": "0"}, `concurrency: 0 is less than 1`},
		{"retry delays the wrong way round", map[string]string{"source": ociSource, "tags": good, "retry-delay": "1m", "max-retry-delay": "1s"}, `max-retry-delay (1s) is less than retry-delay (1m0s)`},
		{"timeout zero", map[string]string{"source": ociSource, "tags": good, "timeout": "0s"}, `timeout: 0s is not a positive duration`},
		{"concurrency words", map[string]string{"source": ociSource, "tags": good, "concurrency": "four"}, `concurrency: "four"`},
		{"bad duration", map[string]string{"source": ociSource, "tags": good, "retry-delay": "soon"}, `retry-delay: "soon" is not a duration`},
		{"bad bool", map[string]string{"source": ociSource, "tags": good, "dry-run": "maybe"}, `dry-run: "maybe" is not true or false`},
		{"missing source", map[string]string{"source": "oci:./no/such/dir", "tags": good}, "oci:./no/such/dir"},
		{"no Docker engine", map[string]string{"source": "docker-daemon:app:1", "tags": good}, "cannot reach Docker engine at unix:///nonexistent.sock"},
		{"bare tag without repository", map[string]string{"source": ociSource, "tags": "latest"}, "set repository (or"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg.Faults.Reset(faults.Config{})
			r := newRunner(t, tt.inputs)
			r.env["DOCKER_HOST"] = "unix:///nonexistent.sock"
			if code := r.run(t); code != job.ExitBadInput {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(r.stdout.String(), "::error") || !strings.Contains(r.stdout.String(), tt.want) {
				t.Errorf("log does not annotate the error %q:\n%s", tt.want, &r.stdout)
			}
			if n := reg.Faults.Stats().Requests; n != 0 {
				t.Errorf("registry got %d requests; bad input must push nothing", n)
			}
		})
	}
}

func TestFailedTagExitsOneUnlessFailOnErrorIsFalse(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{DenyRepo: "acme/denied", DenyStatus: 403}})
	tags := reg.Host + "/acme/app:1\n" + reg.Host + "/acme/denied:1"
	for _, tt := range []struct {
		failOnError string
		want        int
	}{{"true", job.ExitFailed}, {"false", job.ExitOK}} {
		t.Run("fail-on-error="+tt.failOnError, func(t *testing.T) {
			r := newRunner(t, map[string]string{"source": ociSource, "tags": tags, "fail-on-error": tt.failOnError})
			if code := r.run(t); code != tt.want {
				t.Errorf("exit %d, want %d", code, tt.want)
			}
			out := r.outputs(t)
			if out["pushed"] != reg.Host+"/acme/app:1" || out["failed"] != reg.Host+"/acme/denied:1" {
				t.Errorf("pushed %q, failed %q", out["pushed"], out["failed"])
			}
			if !strings.Contains(r.stdout.String(), "::error title=") ||
				!regexp.MustCompile(`::failed `+regexp.QuoteMeta(reg.Host)+`/acme/denied:1 after [^:]+: permission denied`).MatchString(r.stdout.String()) ||
				!strings.Contains(r.stdout.String(), "permission denied (403) to push "+reg.Host+"/acme/denied") {
				t.Errorf("no error annotation for the denied tag:\n%s", &r.stdout)
			}
		})
	}
}

func TestFlagsWinOverInputs(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	r := newRunner(t, map[string]string{"source": "oci:./nowhere", "tags": "not a tag"})
	code := r.run(t, "--source", "docker-archive:../testdata/image.tar", "--tags", reg.Host+"/acme/app:from-flag", "--dry-run")
	if code != job.ExitOK {
		t.Fatalf("exit %d:\n%s", code, &r.stdout)
	}
	if !strings.Contains(r.stdout.String(), "would push "+reg.Host+"/acme/app:from-flag") {
		t.Errorf("dry run did not plan the flag's tag:\n%s", &r.stdout)
	}
}

// A dry run is a plan: each tag is reported unchanged, would push, would
// overwrite or would fail (with the reason) in the log, the outputs and the
// summary, as a real run reports it, marked as a dry run; it exits 1 when a
// tag would fail; and it writes nothing at all, not even an upload session.
func TestDryRunIsAPlan(t *testing.T) {
	const secret = "s3cr3t-Pa55word"
	reg := testregistry.ForTest(t, testregistry.Options{Users: map[string]string{"ci": secret}})
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	other, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	creds := map[string]string{"username": "ci", "password": secret}
	// acme/app:same holds the image already; acme/app:old another one.
	push := func(ref string, im v1.Image) {
		t.Helper()
		tag, _ := name.NewTag(ref)
		if err := remote.Write(tag, im, remote.WithAuth(&authn.Basic{Username: "ci", Password: secret})); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if _, err := layout.Write(dir, empty.Index); err != nil {
		t.Fatal(err)
	}
	p, _ := layout.FromPath(dir)
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	push(reg.Host+"/acme/app:same", img)
	push(reg.Host+"/acme/app:old", other)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	digest, _ := img.Digest()

	type want struct {
		status string
		reason string // in the result's error
	}
	tests := []struct {
		name     string
		inputs   map[string]string
		code     int
		want     map[string]want
		headline string
	}{
		{"overwrite on", map[string]string{"overwrite": "true"}, job.ExitOK, map[string]want{
			reg.Host + "/acme/app:new":  {"would push", ""},
			reg.Host + "/acme/app:same": {"unchanged", ""},
			reg.Host + "/acme/app:old":  {"would overwrite", ""},
		}, "dry run of 3 tags, nothing written: 1 would push, 1 would overwrite, 1 unchanged"},
		{"overwrite off", map[string]string{"overwrite": "false"}, job.ExitFailed, map[string]want{
			reg.Host + "/acme/app:new":  {"would push", ""},
			reg.Host + "/acme/app:same": {"unchanged", ""},
			reg.Host + "/acme/app:old":  {"would fail", "overwrite is false"},
		}, "1 would fail"},
		{"wrong password", map[string]string{"password": "wrong-one"}, job.ExitFailed, map[string]want{
			reg.Host + "/acme/app:new": {"would fail", "authentication failed (401) for " + reg.Host},
		}, "1 would fail"},
		{"nothing listening", map[string]string{"username": "", "password": ""}, job.ExitFailed, map[string]want{
			dead + "/acme/app:new": {"would fail", "could not connect to " + dead},
		}, "1 would fail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tags []string
			for tag := range tt.want {
				tags = append(tags, tag)
			}
			slices.Sort(tags)
			inputs := map[string]string{"source": "oci:" + dir, "tags": strings.Join(tags, "\n"), "dry-run": "true"}
			maps.Copy(inputs, creds)
			maps.Copy(inputs, tt.inputs)
			if inputs["username"] == "" {
				delete(inputs, "username")
				delete(inputs, "password")
			}
			// A round trip of 20 ms, as to a remote registry: a plan
			// that started a blob phase would have sent its POSTs by the
			// time the look-ups end (on loopback it might not yet).
			reg.Faults.Reset(faults.Config{Latency: 20 * time.Millisecond})
			r := newRunner(t, inputs)
			if code := r.run(t); code != tt.code {
				t.Errorf("exit %d, want %d:\n%s", code, tt.code, &r.stdout)
			}
			out := r.outputs(t)
			if out["dry-run"] != "true" {
				t.Errorf("dry-run output %q", out["dry-run"])
			}
			var results []struct{ Tag, Status, Digest, Error string }
			if err := json.Unmarshal([]byte(out["results"]), &results); err != nil {
				t.Fatal(err)
			}
			if len(results) != len(tt.want) {
				t.Fatalf("%d results, want %d: %s", len(results), len(tt.want), out["results"])
			}
			for _, res := range results {
				w := tt.want[res.Tag]
				if res.Status != w.status || !strings.Contains(res.Error, w.reason) {
					t.Errorf("%s: %s (%q), want %s (%q)", res.Tag, res.Status, res.Error, w.status, w.reason)
				}
				if w.status != "would fail" && res.Digest != digest.String() {
					t.Errorf("%s: digest %q, want %s", res.Tag, res.Digest, digest)
				}
				if !strings.Contains(r.stdout.String(), w.status+" "+res.Tag) {
					t.Errorf("log lacks %q:\n%s", w.status+" "+res.Tag, &r.stdout)
				}
			}
			summary, _ := os.ReadFile(r.report)
			if !strings.Contains(string(summary), tt.headline) || !strings.Contains(string(summary), "nothing was written") {
				t.Errorf("summary lacks %q:\n%s", tt.headline, summary)
			}
			// The annotation is the sentence that says what to fix, not
			// the library's https-then-http chain (that is in the debug log).
			for _, line := range strings.Split(r.stdout.String(), "\n") {
				if strings.HasPrefix(line, "::error") && (strings.Contains(line, `Get "`) || len(line) > 300) {
					t.Errorf("annotation carries the library's chain: %s", line)
				}
			}
			if strings.Contains(r.stdout.String(), "\npushing ") {
				t.Errorf("a dry run's log says it is pushing:\n%s", &r.stdout)
			}
			st := reg.Faults.Stats()
			if n := st.ByMethod[http.MethodPost] + st.ByMethod[http.MethodPatch] + st.ByMethod[http.MethodPut] + st.ByMethod[http.MethodDelete]; n != 0 {
				t.Errorf("dry run wrote: %v", st.ByMethod)
			}
			// One check per blob, the plan's own: a blob phase (which would
			// upload what it finds missing) checks them again.
			if blobs := 3; st.BlobChecks > blobs {
				t.Errorf("dry run checked blobs %d times for %d blobs: a blob phase ran", st.BlobChecks, blobs)
			}
		})
	}
}

func TestTerminalRunFromDockerArchive(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	var stdout, stderr bytes.Buffer
	code := job.Run(context.Background(), job.Env{
		Args:         []string{"--source", "../testdata/image.tar", "--tags", fmt.Sprintf("%s/acme/app:a,%s/acme/app:b", reg.Host, reg.Host)},
		Getenv:       func(string) string { return "" },
		Stdout:       &stdout,
		Stderr:       &stderr,
		DockerConfig: authn.NewMultiKeychain(),
	})
	if code != job.ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, &stdout, &stderr)
	}
	for _, want := range []string{"STATUS", "pushed     " + reg.Host + "/acme/app:a", "pushed     " + reg.Host + "/acme/app:b"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, &stdout)
		}
	}
	if st := reg.Faults.Stats(); st.ManifestPuts != 2 {
		t.Errorf("registry accepted %d manifests, want 2", st.ManifestPuts)
	}
}

// A registry's error text must never become a workflow command: a message
// holding "\n::add-mask::" or "\n::error" reached stdout raw through the
// retry and tag-done lines.
func TestRegistryTextIsNeverAWorkflowCommand(t *testing.T) {
	evil := "boom\n::add-mask::tagpush\r::error title=pwned::injected\n  ::stop-commands::x"
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{FailWrites: http.StatusInternalServerError, FailMessage: evil}})
	r := newRunner(t, map[string]string{"source": ociSource, "tags": reg.Host + "/acme/app:1", "debug": "true"})
	if code := r.run(t); code != job.ExitFailed {
		t.Fatalf("exit %d, want 1\n%s", code, &r.stdout)
	}
	out := strings.ReplaceAll(r.stdout.String(), "\r", "\n")
	if !strings.Contains(out, "injected") {
		t.Fatalf("the registry's message is not in the log at all; the test proves nothing:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		cmd := strings.TrimLeft(line, " \t")
		for _, bad := range []string{"::add-mask::tagpush", "::error title=pwned", "::stop-commands::"} {
			if strings.HasPrefix(cmd, bad) {
				t.Errorf("stdout has a line the runner would run as a command: %q", line)
			}
		}
	}
}

// A registry with a private CA: refused, with a message that names the two
// inputs that fix it, and not retried; pushed with ca-file; pushed with
// insecure-registries and a warning.
func TestPrivateCARegistry(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{TLS: true})
	tag := reg.Host + "/acme/app:1"

	t.Run("untrusted", func(t *testing.T) {
		r := newRunner(t, map[string]string{"source": ociSource, "tags": tag})
		if code := r.run(t); code != job.ExitFailed {
			t.Fatalf("exit %d, want 1\n%s", code, &r.stdout)
		}
		res := r.outputs(t)["results"]
		for _, want := range []string{"TLS certificate of " + reg.Host + " is not trusted", "ca-file", "insecure-registries", `"attempts":1,`} {
			if !strings.Contains(res, want) {
				t.Errorf("results lack %q: %s", want, res)
			}
		}
		if strings.Contains(res, "invalid") {
			t.Errorf("a certificate failure is reported as an invalid request: %s", res)
		}
	})
	t.Run("ca-file", func(t *testing.T) {
		r := newRunner(t, map[string]string{"source": ociSource, "tags": tag, "ca-file": reg.CAFile})
		mustRun(t, r)
		if got := r.outputs(t)["pushed"]; got != tag {
			t.Errorf("pushed = %q, want %s", got, tag)
		}
	})
	t.Run("insecure-registries", func(t *testing.T) {
		r := newRunner(t, map[string]string{"source": ociSource, "tags": reg.Host + "/acme/app:2", "insecure-registries": reg.Host})
		mustRun(t, r)
		if !strings.Contains(r.stdout.String(), "::warning::insecure-registries: TLS certificates of "+reg.Host+" are not checked") {
			t.Errorf("no warning for the insecure registry:\n%s", &r.stdout)
		}
	})
}

// Per-tag errors in the results and the summary are one short sentence that
// says what is wrong; the library's chain (URLs, blob digests) is in the log.
func TestPerTagErrorsAreShortAndTheLogHasTheChain(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{FailWrites: http.StatusInternalServerError}})
	r := newRunner(t, map[string]string{"source": ociSource, "tags": reg.Host + "/acme/app:1"})
	if code := r.run(t); code != job.ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	var results []report.Entry
	if err := json.Unmarshal([]byte(r.outputs(t)["results"]), &results); err != nil {
		t.Fatal(err)
	}
	want := reg.Host + " kept failing: gave up after 3 attempt(s) (last status 500 Internal Server Error)"
	if e := results[0].Error; e != want {
		t.Errorf("results error = %q (%d characters), want %q", e, len(e), want)
	}
	summary, err := os.ReadFile(r.report)
	if err != nil {
		t.Fatal(err)
	}
	// The image's own digest may head the summary; no other digest may appear.
	if !strings.Contains(string(summary), want) || strings.Count(string(summary), "sha256:") != strings.Count(string(summary), "Digest: `sha256:") {
		t.Errorf("summary:\n%s\nwant the short error and no blob digests", summary)
	}
	if !strings.Contains(r.stdout.String(), want+": upload blob sha256:") {
		t.Errorf("the log lacks the whole chain under the summary:\n%s", &r.stdout)
	}
}

// A configuration error is on the run page, not only in the raw log: the
// GitHub job summary and the Bitbucket result line say it.
func TestBadInputReachesTheRunPage(t *testing.T) {
	r := newRunner(t, map[string]string{"source": ociSource, "tags": "a.io/x:1", "concurrency": "zero"})
	if code := r.run(t); code != job.ExitBadInput {
		t.Fatalf("exit %d, want 2", code)
	}
	summary, err := os.ReadFile(r.report)
	if err != nil {
		t.Fatalf("no job summary for a bad input: %v", err)
	}
	if !strings.Contains(string(summary), "tagpush: bad input") || !strings.Contains(string(summary), `concurrency: &#34;zero&#34; is not a whole number`) {
		t.Errorf("job summary:\n%s", summary)
	}

	var out bytes.Buffer
	code := job.Run(context.Background(), job.Env{
		Args: []string{"--concurrency", "zero"},
		Getenv: func(k string) string {
			return map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "SOURCE": ociSource, "TAGS": "a.io/x:1"}[k]
		},
		Stdout: &out, Stderr: &out, Version: "test",
	})
	if code != job.ExitBadInput || !strings.Contains(out.String(), `✖ Failed: bad input: CONCURRENCY: "zero" is not a whole number`) || strings.Count(out.String(), "is not a whole number") != 1 {
		t.Errorf("Bitbucket: exit %d, output:\n%s", code, &out)
	}
}

// A tag that runs out of time says which input bounds it, in the summary and
// the results output, so the person knows what to raise: named as the front
// end names it (the GitHub input here, --timeout on a terminal). The advice
// said "the timeout input" on every front end.
func TestTimeoutFailureNamesTheTimeoutInput(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{Latency: time.Second}})
	r := newRunner(t, map[string]string{"source": ociSource, "tags": reg.Host + "/acme/app:1", "timeout": "300ms"})
	if code := r.run(t); code != job.ExitFailed {
		t.Fatalf("exit %d, want 1", code)
	}
	var results []struct{ Status, Error string }
	if err := json.Unmarshal([]byte(r.outputs(t)["results"]), &results); err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Status != "failed" || !strings.Contains(results[0].Error, "(timeout 300ms)") || !strings.Contains(results[0].Error, "raise timeout,") {
		t.Errorf("results: %+v; want the tag failed, naming the timeout input and its value", results)
	}
	summary, _ := os.ReadFile(r.report)
	if !strings.Contains(string(summary), "raise timeout,") {
		t.Errorf("summary does not name the timeout input:\n%s", summary)
	}
	var stdout, stderr bytes.Buffer
	code := job.Run(context.Background(), job.Env{
		Args:   []string{"--source", ociSource, "--tags", reg.Host + "/acme/app:2", "--timeout", "300ms"},
		Getenv: func(string) string { return "" }, Stdout: &stdout, Stderr: &stderr, Version: "test",
		DockerConfig: authn.NewMultiKeychain(),
	})
	if code != job.ExitFailed || !strings.Contains(stdout.String()+stderr.String(), "(--timeout 300ms)") || strings.Contains(stdout.String()+stderr.String(), "raise timeout") {
		t.Errorf("terminal: exit %d; want --timeout named as the flag:\n%s%s", code, &stdout, &stderr)
	}
}

package job_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/job"
)

// terminal runs tagpush as a shell would, with stdin.
func terminal(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errw bytes.Buffer
	code = job.Run(context.Background(), job.Env{
		Args:         args,
		Getenv:       func(string) string { return "" },
		Stdin:        strings.NewReader(stdin),
		Stdout:       &out,
		Stderr:       &errw,
		Version:      "test",
		DockerConfig: authn.NewMultiKeychain(),
	})
	return code, out.String(), errw.String()
}

func deadAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The log grows with the distinct problems, not with tags times attempts:
// 200 tags to a refused port, or 40 tags through a registry that answers
// 500 to parallel writes, take a handful of lines; each tag is still in the
// table, and the retries' detail is in the debug log.
func TestLogGrowsWithProblemsNotTags(t *testing.T) {
	dead := deadAddress(t)
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{MaxWrites: 3, WriteErrorRate: 0.1, Seed: 7}})
	tests := []struct {
		name     string
		host     string
		n        int
		code     int
		maxLines int
	}{
		{"refused port", dead, 200, job.ExitFailed, 10},
		// A line per tag pushed, and a few for the faults.
		{"500s under parallel writes", reg.Host, 40, job.ExitOK, 40 + 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := func(repo string) []string {
				var tags []string
				for i := range tt.n {
					tags = append(tags, fmt.Sprintf("%s/%s:%d", tt.host, repo, i))
				}
				return []string{"--source", ociSource, "--tags", strings.Join(tags, ","), "--retry-delay", "10ms", "--max-retry-delay", "50ms", "--max-attempts", "8"}
			}
			code, stdout, stderr := terminal(t, "", args("acme/app")...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.code, stderr)
			}
			if lines := strings.Count(stderr, "\n"); lines > tt.maxLines {
				t.Errorf("%d log lines (%d bytes) for %d tags, want at most %d:\n%s", lines, len(stderr), tt.n, tt.maxLines, stderr)
			}
			if rows := strings.Count(stdout, "\n") - 1; rows < tt.n {
				t.Errorf("the table has %d rows, want one per tag (%d):\n%s", rows, tt.n, stdout)
			}
			_, _, debug := terminal(t, "", append(args("acme/debug"), "--debug")...)
			if !strings.Contains(debug, "debug: retrying ") {
				t.Errorf("the debug log lacks the retries' detail:\n%s", debug)
			}
		})
	}
}

// Each input form a user tries is honoured or refused, exit 2, naming it
// as the front end names it.
func TestBadInputNamesTheInputAsTheFrontEndDoes(t *testing.T) {
	code, _, stderr := terminal(t, "", "--source", ociSource, "--tags", "latest")
	if code != job.ExitBadInput || !strings.Contains(stderr, "set --repository") {
		t.Errorf("terminal: exit %d:\n%s", code, stderr)
	}
	bitbucket := func(vars map[string]string) (int, string) {
		var out bytes.Buffer
		vars["BITBUCKET_BUILD_NUMBER"] = "1"
		code := job.Run(context.Background(), job.Env{
			Getenv: func(k string) string { return vars[k] }, Environ: environ(vars),
			Stdout: &out, Stderr: &out, Version: "test",
		})
		return code, out.String()
	}
	for _, tt := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"SOURCE": ociSource, "TAGS": "latest"}, "set REPOSITORY"},
		{map[string]string{"SOURCE": ociSource, "TAGS": "a.io/x:1", "CONCURRENCY": "1000000"}, "CONCURRENCY: 1000000 is more than"},
		{map[string]string{"SOURCE": ociSource, "TAGS": "a.io/x:1", "TAGS_COUNT": "2", "TAGS_0": "a.io/x:2"}, "TAGS and TAGS_COUNT are both set"},
		{map[string]string{"SOURCE": ociSource, "TAGS_COUNT": "2", "TAGS_0": "a.io/x:2"}, "TAGS_COUNT is 2, and TAGS_1 is missing"},
	} {
		code, out := bitbucket(tt.vars)
		if code != job.ExitBadInput || !strings.Contains(out, tt.want) {
			t.Errorf("Bitbucket %v: exit %d, lacks %q:\n%s", tt.vars, code, tt.want, out)
		}
		if strings.Count(out, "\n") != 1 {
			t.Errorf("Bitbucket: the failure is not said once:\n%s", out)
		}
	}
}

// --tags given twice adds to the list, as docker, crane and oras take -t;
// --password-stdin reads the password from stdin; --output json is the
// result for a script.
func TestTerminalFlagsAsTheEcosystemTakesThem(t *testing.T) {
	const secret = "s3cr3t-Pa55word"
	reg := testregistry.ForTest(t, testregistry.Options{Users: map[string]string{"ci": secret}})
	code, stdout, stderr := terminal(t, secret+"\n", "--source", ociSource,
		"--tags", reg.Host+"/acme/app:a", "--tags", reg.Host+"/acme/app:b",
		"--username", "ci", "--password-stdin", "--output", "json")
	if code != job.ExitOK {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	var doc struct {
		OK      bool `json:"ok"`
		DryRun  bool `json:"dry_run"`
		Results []struct{ Tag, Status string }
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("stdout is not the JSON result: %v\n%s", err, stdout)
	}
	if !doc.OK || doc.DryRun || len(doc.Results) != 2 || doc.Results[0].Tag != reg.Host+"/acme/app:a" || doc.Results[1].Status != "pushed" {
		t.Errorf("result %+v", doc)
	}
	for _, tag := range []string{"a", "b"} {
		ref, _ := name.NewTag(reg.Host + "/acme/app:" + tag)
		if _, err := remote.Head(ref, remote.WithAuth(&authn.Basic{Username: "ci", Password: secret})); err != nil {
			t.Errorf("%s was not pushed: %v", ref, err)
		}
	}
	if strings.Contains(stderr, secret) {
		t.Error("the password reached the log")
	}
	code, _, stderr = terminal(t, "", "--source", ociSource, "--source", "oci:./other", "--tags", reg.Host+"/acme/app:c")
	if code != job.ExitBadInput || !strings.Contains(stderr, "--source is given twice") {
		t.Errorf("a flag given twice: exit %d:\n%s", code, stderr)
	}
}

// An action input or pipe variable one edit away from tagpush's own, or one
// spelt another way, is refused before anything is read or pushed, naming
// the one meant: `dryrun: true` on GitHub and DRYRUN on Bitbucket pushed
// for real (GitHub said only "Unexpected input(s)"; Bitbucket "✔ Success").
// Other unknown inputs are a warning; the runner's own variables are not
// looked at.
func TestMistypedInputsAreRefused(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	tag := reg.Host + "/acme/typo:1"
	for _, tt := range []struct {
		name string
		env  map[string]string
		code int
		want string
	}{
		{"github dryrun", map[string]string{"GITHUB_ACTIONS": "true", "INPUT_SOURCE": ociSource, "INPUT_TAGS": tag, "INPUT_DRYRUN": "true"}, job.ExitBadInput, "input dryrun is not one of tagpush's: did you mean dry-run?"},
		{"github dry_run", map[string]string{"GITHUB_ACTIONS": "true", "INPUT_SOURCE": ociSource, "INPUT_TAGS": tag, "INPUT_DRY_RUN": "true"}, job.ExitBadInput, "did you mean dry-run?"},
		{"github concurency", map[string]string{"GITHUB_ACTIONS": "true", "INPUT_SOURCE": ociSource, "INPUT_TAGS": tag, "INPUT_CONCURENCY": "2"}, job.ExitBadInput, "did you mean concurrency?"},
		{"bitbucket DRYRUN", map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "SOURCE": ociSource, "TAGS": tag, "DRYRUN": "true"}, job.ExitBadInput, "variable DRYRUN is not one of the pipe's: did you mean DRY_RUN?"},
		{"bitbucket OVERWRTE", map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "SOURCE": ociSource, "TAGS": tag, "OVERWRTE": "false"}, job.ExitBadInput, "did you mean OVERWRITE?"},
		{"github unknown", map[string]string{"GITHUB_ACTIONS": "true", "INPUT_SOURCE": ociSource, "INPUT_TAGS": tag, "INPUT_LABELS": "x"}, job.ExitOK, "input labels is not one of tagpush's, and is ignored"},
		{"bitbucket runner variables", map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "BITBUCKET_TAG": "v1", "SOURCE": ociSource, "TAGS": tag, "TAGS_X": "", "HOME": "/root", "PIPELINE": "x"}, job.ExitOK, "1 of 1 tags"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg.Faults.Reset(faults.Config{})
			var out bytes.Buffer
			code := job.Run(context.Background(), job.Env{
				Getenv: func(k string) string { return tt.env[k] }, Environ: environ(tt.env),
				Stdout: &out, Stderr: &out, Version: "test", DockerConfig: authn.NewMultiKeychain(),
			})
			if code != tt.code || !strings.Contains(out.String(), tt.want) {
				t.Errorf("exit %d, want %d saying %q:\n%s", code, tt.code, tt.want, &out)
			}
			if n := reg.Faults.Stats().Requests; tt.code == job.ExitBadInput && n != 0 {
				t.Errorf("the registry got %d requests", n)
			}
		})
	}
}

// --output json prints one JSON document on every path: on bad input (exit
// 2) too, where it printed nothing and `| jq` read empty input; and a failed
// tag's error is whole there, with the chain under it in detail: it was cut
// at 150 characters, inside the value.
func TestOutputJSONOnEveryPath(t *testing.T) {
	code, stdout, stderr := terminal(t, "", "--source", ociSource, "--tags", "127.0.0.1:1/acme/app:a", "--concurrency", "0", "--output", "json")
	var bad struct {
		OK       bool   `json:"ok"`
		BadInput bool   `json:"bad_input"`
		Error    string `json:"error"`
		Results  []any  `json:"results"`
	}
	if err := json.Unmarshal([]byte(stdout), &bad); err != nil || code != job.ExitBadInput {
		t.Fatalf("bad input: exit %d, stdout not one JSON document (%v):\n%s\n%s", code, err, stdout, stderr)
	}
	if bad.OK || !bad.BadInput || !strings.Contains(bad.Error, "--concurrency") || bad.Results == nil {
		t.Errorf("bad input document %+v", bad)
	}

	long := "acme/" + strings.Repeat("a-long-service-name-", 6) + "x"
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{DenyRepo: long, DenyStatus: 403}})
	code, stdout, _ = terminal(t, "", "--source", ociSource, "--tags", reg.Host+"/"+long+":1", "--output", "json", "--max-attempts", "1")
	var doc struct {
		Results []struct{ Status, Error, Detail string }
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || code != job.ExitFailed || len(doc.Results) != 1 {
		t.Fatalf("exit %d, %v:\n%s", code, err, stdout)
	}
	r := doc.Results[0]
	if r.Status != "failed" || !strings.HasSuffix(r.Error, "check the token has write access to this repository") || len(r.Error) < 160 || strings.Contains(r.Error, "…") || r.Detail == "" {
		t.Errorf("failed tag's error %q, detail %q; want the whole sentence and its chain", r.Error, r.Detail)
	}
}

// registry-auth for the host a registry: source reads from is used, with no
// warning that no tag is bound for it; without credentials, the source's
// refusal says what to give, not the registry's raw error.
func TestSourceRegistryCredentials(t *testing.T) {
	const secret = "s3cr3t-Pa55word"
	src := testregistry.ForTest(t, testregistry.Options{Users: map[string]string{"reader": secret}})
	dst := testregistry.ForTest(t, testregistry.Options{})
	lp, err := layout.FromPath("../testdata/oci")
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := lp.ImageIndex()
	m, _ := idx.IndexManifest()
	img, _ := idx.Image(m.Manifests[0].Digest)
	ref, _ := name.NewTag(src.Host + "/acme/app:1")
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "reader", Password: secret})); err != nil {
		t.Fatal(err)
	}

	r := newRunner(t, map[string]string{"source": "registry:" + ref.String(), "tags": dst.Host + "/mirror/app:1", "registry-auth": src.Host + "=reader:" + secret})
	if code := r.run(t); code != job.ExitOK {
		t.Fatalf("exit %d:\n%s", code, &r.stdout)
	}
	if strings.Contains(r.stdout.String(), "no tag is bound") {
		t.Errorf("registry-auth for the source's registry drew a warning:\n%s", &r.stdout)
	}

	r = newRunner(t, map[string]string{"source": "registry:" + ref.String(), "tags": dst.Host + "/mirror/app:2"})
	if code := r.run(t); code != job.ExitBadInput {
		t.Fatalf("exit %d, want 2:\n%s", code, &r.stdout)
	}
	if !strings.Contains(r.stdout.String(), "asks for credentials to read it (401): give them in registry-auth ("+src.Host+"=USER:TOKEN)") || strings.Contains(r.stdout.String(), "map[") {
		t.Errorf("the source's refusal is not explained:\n%s", &r.stdout)
	}
}

// Every line true and said once: a re-run says each tag is unchanged (no
// "1 attempt: <nil>", no statistics of writes it did not make); a tag left
// as it was because overwrite is false says so once, and is no fault of the
// registry's.
func TestLinesSayWhatHappenedOnce(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	tags := reg.Host + "/acme/app:1," + reg.Host + "/acme/app:2"
	if code, _, stderr := terminal(t, "", "--source", ociSource, "--tags", tags); code != job.ExitOK {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	code, stdout, stderr := terminal(t, "", "--source", ociSource, "--tags", tags)
	if code != job.ExitOK {
		t.Fatalf("re-run: exit %d:\n%s", code, stderr)
	}
	for _, bad := range []string{"<nil>", "1 attempt", "peak writes", "faults seen", "pushed " + reg.Host} {
		if strings.Contains(stderr+stdout, bad) {
			t.Errorf("a re-run that wrote nothing says %q:\n%s%s", bad, stderr, stdout)
		}
	}
	if n := strings.Count(stderr, "unchanged "+reg.Host+"/acme/app:"); n != 2 {
		t.Errorf("%d unchanged lines for 2 unchanged tags:\n%s", n, stderr)
	}

	code, stdout, stderr = terminal(t, "", "--source", "../testdata/image.tar", "--tags", reg.Host+"/acme/app:1", "--overwrite=false")
	if code != job.ExitFailed {
		t.Fatalf("overwrite false: exit %d, want 1:\n%s", code, stderr)
	}
	if n := strings.Count(stderr, "overwrite is false"); n != 1 {
		t.Errorf("the refusal is said %d times in the log, want once:\n%s", n, stderr)
	}
	if strings.Contains(stdout, "faults seen") {
		t.Errorf("a tag left as it was counts as a registry fault:\n%s", stdout)
	}
}

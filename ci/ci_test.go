package ci

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) Env {
	var out bytes.Buffer
	return Env{Getenv: func(k string) string { return m[k] }, Stdout: &out, Stderr: &out}
}

func TestDetect(t *testing.T) {
	for want, m := range map[Kind]map[string]string{
		GitHub:    {"GITHUB_ACTIONS": "true"},
		Bitbucket: {"BITBUCKET_BUILD_NUMBER": "12"},
		Terminal:  {"CI": "true"},
	} {
		if got := Detect(env(m)).Kind(); got != want {
			t.Errorf("Detect(%v) = %s, want %s", m, got, want)
		}
	}
}

func TestInputs(t *testing.T) {
	inputs := []Input{{Name: "source"}, {Name: "tags", List: true}, {Name: "max-attempts"}, {Name: "timeout"}}
	tests := []struct {
		env  map[string]string
		want map[string]string
	}{
		{map[string]string{"GITHUB_ACTIONS": "true", "INPUT_SOURCE": " oci:x ", "INPUT_MAX-ATTEMPTS": "3", "INPUT_TIMEOUT": ""},
			map[string]string{"source": "oci:x", "max-attempts": "3"}},
		{map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "SOURCE": "oci:x", "TAGS_COUNT": "2", "TAGS_0": "a.io/x:1", "TAGS_1": "a.io/x:2", "MAX_ATTEMPTS": "3"},
			map[string]string{"source": "oci:x", "tags": "a.io/x:1\na.io/x:2", "max-attempts": "3"}},
		{map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "TAGS": "a.io/x:1\na.io/x:2"},
			map[string]string{"tags": "a.io/x:1\na.io/x:2"}},
		// A terminal takes flags only: variables that look like inputs are not read.
		{map[string]string{"SOURCE": "oci:x", "INPUT_SOURCE": "oci:y"}, map[string]string{}},
	}
	for _, tt := range tests {
		got, err := Detect(env(tt.env)).Inputs(inputs)
		if err != nil {
			t.Errorf("%v: %v", tt.env, err)
		}
		if len(got) != len(tt.want) {
			t.Errorf("%v: inputs %v, want %v", tt.env, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%v: %s = %q, want %q", tt.env, k, got[k], v)
			}
		}
	}
}

// A Bitbucket list with a hole, or a list beside the plain variable, would
// push some of the tags and say nothing: it is an error that names them.
func TestBitbucketListsWithHolesAreRefused(t *testing.T) {
	inputs := []Input{{Name: "tags", List: true}}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"TAGS_COUNT": "3", "TAGS_0": "a.io/x:1", "TAGS_2": "a.io/x:3"}, "TAGS_COUNT is 3, and TAGS_1 is missing or empty"},
		{map[string]string{"TAGS_COUNT": "2"}, "TAGS_0, TAGS_1 are missing or empty"},
		{map[string]string{"TAGS_COUNT": "1", "TAGS_0": "a.io/x:1", "TAGS": "a.io/x:2"}, "TAGS and TAGS_COUNT are both set"},
		{map[string]string{"TAGS_COUNT": "two", "TAGS_0": "a.io/x:1"}, `TAGS_COUNT: "two" is not a whole number`},
	} {
		tt.env["BITBUCKET_BUILD_NUMBER"] = "1"
		_, err := Detect(env(tt.env)).Inputs(inputs)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error saying %q", tt.env, err, tt.want)
		}
	}
}

func TestFacts(t *testing.T) {
	tests := []struct {
		env   map[string]string
		debug bool
	}{
		{map[string]string{"GITHUB_ACTIONS": "true", "RUNNER_DEBUG": "1"}, true},
		{map[string]string{"GITHUB_ACTIONS": "true", "DEBUG": "true"}, false},
		{map[string]string{"DEBUG": "true"}, true},
		{map[string]string{"DEBUG": "0"}, false},
		// Bitbucket's DEBUG is the debug input itself.
		{map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "DEBUG": "true"}, false},
	}
	for _, tt := range tests {
		tt.env["GITHUB_TOKEN"] = "tok"
		f := Detect(env(tt.env)).Facts()
		if f.Debug != tt.debug || f.GitHubToken != "tok" {
			t.Errorf("%v: facts %+v, want debug %v and the token", tt.env, f, tt.debug)
		}
	}
}

func TestBitbucketPublish(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	sys := Detect(Env{Getenv: func(k string) string {
		return map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "BITBUCKET_PIPE_SHARED_STORAGE_DIR": dir, "NO_COLOR": "1", "TERM": "xterm"}[k]
	}, Stdout: &out, Stderr: &out})
	if err := sys.Publish(Results{OK: false, Headline: "1 of 2 tags pushed", Text: "TABLE\n", JSON: `[{"tag":"a"}]`}, sys.Logger(false)); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "TABLE\n✖ Failed: 1 of 2 tags pushed\n" {
		t.Errorf("output %q", got)
	}
	b, err := os.ReadFile(filepath.Join(dir, "tagpush", "results.json"))
	if err != nil || strings.TrimSpace(string(b)) != `[{"tag":"a"}]` {
		t.Errorf("results.json = %q, %v", b, err)
	}
}

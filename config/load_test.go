package config

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tagpush/tagpush/ci"
)

// sample gives, for every option, a valid value other than its default and the
// Config field it must land in. A new option without a row here fails
// TestEveryOptionIsReadByEveryFrontEnd.
var sample = map[string]struct {
	value string
	got   func(*Config) string
}{
	"source":              {"oci:./img", func(c *Config) string { return c.Source }},
	"tags":                {"a.io/x:1\na.io/x:2", func(c *Config) string { return c.Tags }},
	"images":              {"a.tar -> a.io/x:1, a.io/x:2\nb.tar -> a.io/y:1", func(c *Config) string { return c.Images }},
	"repository":          {"a.io/x", func(c *Config) string { return c.Repository }},
	"platform":            {"linux/arm64", func(c *Config) string { return c.Platform }},
	"username":            {"robot", func(c *Config) string { return c.Username }},
	"password":            {"hunter2", func(c *Config) string { return c.Password }},
	"registry-auth":       {"a.io=u:t", func(c *Config) string { return c.RegistryAuth }},
	"ca-file":             {"load_test.go", func(c *Config) string { return c.CAFile }},
	"insecure-registries": {"registry.corp:5000", func(c *Config) string { return strings.Join(c.Insecure, ",") }},
	"concurrency":         {"7", func(c *Config) string { return fmt.Sprint(c.Concurrency) }},
	"adaptive":            {"false", func(c *Config) string { return fmt.Sprint(c.Adaptive) }},
	"max-attempts":        {"9", func(c *Config) string { return fmt.Sprint(c.MaxAttempts) }},
	"retry-delay":         {"3s", func(c *Config) string { return c.RetryDelay.String() }},
	"max-retry-delay":     {"1m0s", func(c *Config) string { return c.MaxRetryDelay.String() }},
	"timeout":             {"2m0s", func(c *Config) string { return c.Timeout.String() }},
	"referrers":           {"false", func(c *Config) string { return fmt.Sprint(c.Referrers) }},
	"overwrite":           {"false", func(c *Config) string { return fmt.Sprint(c.Overwrite) }},
	"atomic":              {"true", func(c *Config) string { return fmt.Sprint(c.Atomic) }},
	"fail-on-error":       {"false", func(c *Config) string { return fmt.Sprint(c.FailOnError) }},
	"dry-run":             {"true", func(c *Config) string { return fmt.Sprint(c.DryRun) }},
	"debug":               {"true", func(c *Config) string { return fmt.Sprint(c.Debug) }},
}

func load(t *testing.T, args []string, env map[string]string) *Config {
	t.Helper()
	sys := ci.Detect(ci.Env{Getenv: func(k string) string { return env[k] }})
	inputs, err := sys.Inputs(Inputs())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(args, inputs, &bytes.Buffer{}, nil)
	if err != nil {
		t.Fatalf("Load(%v, %v): %v", args, env, err)
	}
	return c
}

func TestEveryOptionIsReadByEveryFrontEnd(t *testing.T) {
	if len(sample) != len(Options()) {
		t.Fatalf("sample has %d rows, the table %d options", len(sample), len(Options()))
	}
	base := map[string]string{"source": "oci:./base", "tags": "a.io/x:base"}
	for _, o := range Options() {
		s, ok := sample[o.Name]
		if !ok {
			t.Errorf("no sample for option %s", o.Name)
			continue
		}
		if s.value == o.Default {
			t.Errorf("sample for %s equals its default", o.Name)
		}
		t.Run(o.Name, func(t *testing.T) {
			gh := map[string]string{"GITHUB_ACTIONS": "true"}
			bb := map[string]string{"BITBUCKET_BUILD_NUMBER": "1"}
			var args []string
			for k, v := range base {
				if o.Name == "images" {
					break // images replaces source and tags
				}
				if k == o.Name {
					continue // a list flag given twice would add to the list
				}
				gh["INPUT_"+strings.ToUpper(k)] = v
				bb[strings.ToUpper(k)] = v
				args = append(args, "--"+k, v)
			}
			gh["INPUT_"+strings.ToUpper(o.Name)] = s.value
			bb[o.Variable()] = s.value
			args = append(args, "--"+o.Name, s.value)
			for fe, c := range map[string]*Config{
				"github":    load(t, nil, gh),
				"bitbucket": load(t, nil, bb),
				"cli":       load(t, args, nil),
			} {
				if got := s.got(c); got != s.value {
					t.Errorf("%s: %s = %q, want %q", fe, o.Name, got, s.value)
				}
			}
		})
	}
}

// The defaults land in the Config as written in the table (they come from
// the pusher's, see pusher's TestDefaultsMatchTheTable).
func TestDefaultsLandInTheConfig(t *testing.T) {
	c := load(t, []string{"--source", "x", "--tags", "y"}, nil)
	for _, o := range Options() {
		if o.Default == "" {
			continue
		}
		if got := sample[o.Name].got(c); got != o.Default && !(o.Kind == Duration && mustDuration(t, o.Default).String() == got) {
			t.Errorf("%s default = %q, table says %q", o.Name, got, o.Default)
		}
	}
}

func mustDuration(t *testing.T, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// images is one form, source and tags the other: both at once, or
// neither, is bad input that names what to give.
func TestImagesOrSourceAndTags(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"both", []string{"--images", "a.tar -> a.io/x:1", "--source", "b.tar"}, "images is given with source or tags"},
		{"both, tags", []string{"--images", "a.tar -> a.io/x:1", "--tags", "a.io/x:2"}, "images is given with source or tags"},
		{"neither", nil, "source is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, nil, &bytes.Buffer{}, nil)
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want a usage error saying %q", err, tt.want)
			}
		})
	}
	// A Bitbucket YAML list arrives as IMAGES_COUNT, IMAGES_0...: one image an item.
	c := load(t, nil, map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "IMAGES_COUNT": "2", "IMAGES_0": "a.tar -> a.io/x:1, a.io/x:2", "IMAGES_1": "b.tar -> a.io/y:1"})
	if c.Images != "a.tar -> a.io/x:1, a.io/x:2\nb.tar -> a.io/y:1" {
		t.Errorf("images from a Bitbucket list = %q", c.Images)
	}
}

func TestFlagsWinOverInputs(t *testing.T) {
	c := load(t, []string{"--concurrency", "2"}, map[string]string{"GITHUB_ACTIONS": "true", "INPUT_SOURCE": "s", "INPUT_TAGS": "t", "INPUT_CONCURRENCY": "8"})
	if c.Concurrency != 2 {
		t.Errorf("concurrency = %d, want the flag's 2", c.Concurrency)
	}
}

func TestBitbucketListVariable(t *testing.T) {
	c := load(t, nil, map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "SOURCE": "s", "TAGS_COUNT": "2", "TAGS_0": "a.io/x:1", "TAGS_1": "a.io/x:2"})
	if c.Tags != "a.io/x:1\na.io/x:2" {
		t.Errorf("tags = %q", c.Tags)
	}
	c = load(t, nil, map[string]string{"BITBUCKET_BUILD_NUMBER": "1", "SOURCE": "s", "TAGS": "a.io/x:1\na.io/x:2"})
	if c.Tags != "a.io/x:1\na.io/x:2" {
		t.Errorf("multiline tags = %q", c.Tags)
	}
}

// A list flag given again adds to the list, as crane, oras and docker users
// repeat -t; any other flag given twice is an error that says so.
func TestRepeatedFlags(t *testing.T) {
	c := load(t, []string{"--source", "s", "--tags", "a.io/x:1", "--tags", "a.io/x:2, a.io/x:3"}, nil)
	if c.Tags != "a.io/x:1\na.io/x:2, a.io/x:3" {
		t.Errorf("tags = %q, want every --tags", c.Tags)
	}
	_, err := Load([]string{"--source", "a", "--source", "b", "--tags", "x"}, nil, &bytes.Buffer{}, nil)
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), `--source is given twice ("a", then "b"): give it once`) {
		t.Errorf("--source twice: %v", err)
	}
}

// --password-stdin reads the password as docker login does; with --password
// too, or an empty stdin, it is an error.
func TestPasswordStdin(t *testing.T) {
	c, err := Load([]string{"--source", "s", "--tags", "x", "--username", "ci", "--password-stdin"}, nil, &bytes.Buffer{}, strings.NewReader("s3cr3t\n"))
	if err != nil || c.Password != "s3cr3t" {
		t.Fatalf("password %q, %v", c.Password, err)
	}
	for _, tt := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"--password", "p", "--password-stdin"}, "q", "--password and --password-stdin are both given"},
		{[]string{"--password-stdin"}, "", "--password-stdin: stdin is empty"},
	} {
		_, err := Load(append([]string{"--source", "s", "--tags", "x"}, tt.args...), nil, &bytes.Buffer{}, strings.NewReader(tt.stdin))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}

func TestBadValuesAreUsageErrorsNamingTheValue(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--tags", "t"}, "source is required"},
		{[]string{"--source", "s"}, "tags is required"},
		{[]string{"--source", "s", "--tags", "t", "--concurrency", "four"}, `concurrency: "four" is not a whole number`},
		{[]string{"--source", "s", "--tags", "t", "--max-attempts", "x"}, `max-attempts: "x"`},
		{[]string{"--source", "s", "--tags", "t", "--timeout", "10"}, `timeout: "10" is not a duration`},
		{[]string{"--source", "s", "--tags", "t", "--timeout", "1\n::error::x"}, `timeout: "1\n::error::x" is not a duration`},
		{[]string{"--source", "s", "--tags", "t", "--platform", "x", "--timeout", strings.Repeat("9", 400)}, `timeout: "` + strings.Repeat("9", 60) + `"… (400 characters) is not a duration`},
		{[]string{"--source", "s", "--tags", "t", "--adaptive=maybe"}, `adaptive: "maybe" is not true or false`},
		{[]string{"--source", "s", "--tags", "t", "extra"}, `unexpected argument "extra"`},
		{[]string{"--nope"}, "unknown flag --nope; see tagpush --help"},
		{[]string{"--sorce", "x"}, "unknown flag --sorce; did you mean --source? see tagpush --help"},
		{[]string{"--tags"}, "flag --tags needs a value; see tagpush --help"},
	}
	for _, tt := range tests {
		_, err := Load(tt.args, nil, &bytes.Buffer{}, nil)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%v) = %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestHelpListsEveryOption(t *testing.T) {
	var help bytes.Buffer
	if _, err := Load([]string{"--help"}, nil, &help, nil); !errors.Is(err, ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, o := range Options() {
		if !strings.Contains(help.String(), "-"+o.Name) {
			t.Errorf("--help does not list --%s", o.Name)
		}
	}
}

func TestTLSInputsAreChecked(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--ca-file", "/no/such/ca.pem"}, `ca-file: "/no/such/ca.pem" is not a readable file`},
		{[]string{"--insecure-registries", "ok.io, ghcr.io/acme/app"}, `insecure-registries item 2: "ghcr.io/acme/app" is not a registry host`},
	}
	for _, tt := range tests {
		args := append([]string{"--source", "oci:x", "--tags", "a.io/x:1"}, tt.args...)
		_, err := Load(args, nil, &bytes.Buffer{}, nil)
		var uerr *usageError
		if !errors.As(err, &uerr) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%v) = %v, want a usage error saying %q", tt.args, err, tt.want)
		}
	}
}

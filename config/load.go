package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sethvargo/go-githubactions"
)

// FrontEnd is where a run's configuration comes from and its results go.
type FrontEnd int

const (
	Terminal FrontEnd = iota
	GitHub
	Bitbucket
)

func (f FrontEnd) String() string {
	return [...]string{"terminal", "github", "bitbucket"}[f]
}

// Detect tells the front end from the environment.
func Detect(getenv func(string) string) FrontEnd {
	switch {
	case getenv("GITHUB_ACTIONS") == "true":
		return GitHub
	case getenv("BITBUCKET_BUILD_NUMBER") != "" || getenv("BITBUCKET_PIPE_STORAGE_DIR") != "":
		return Bitbucket
	}
	return Terminal
}

// Config is a validated configuration.
type Config struct {
	Source        string
	Tags          string
	Repository    string
	Platform      string
	Username      string
	Password      string
	RegistryAuth  string
	CAFile        string
	Insecure      []string // insecure-registries, as registry hosts
	Concurrency   int
	Adaptive      bool
	Overwrite     bool
	Referrers     bool
	MaxAttempts   int
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	Timeout       time.Duration
	FailOnError   bool
	DryRun        bool
	Debug         bool
}

// UsageError is bad input: the run exits 2 and pushes nothing.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usage(format string, args ...any) error {
	return &UsageError{fmt.Errorf(format, args...)}
}

// ErrHelp is returned when -h or --help was asked for.
var ErrHelp = flag.ErrHelp

// Load reads the configuration: defaults, then the front end's environment,
// then flags, each overriding the one before.
func Load(args []string, getenv func(string) string, fe FrontEnd, help io.Writer) (*Config, error) {
	values := make(map[string]string)
	for _, o := range Options() {
		values[o.Name] = o.Default
	}
	switch fe {
	case GitHub:
		action := githubactions.New(githubactions.WithGetenv(getenv), githubactions.WithWriter(io.Discard))
		for _, o := range Options() {
			if v := action.GetInput(o.Name); v != "" {
				values[o.Name] = v
			}
		}
	case Bitbucket:
		for _, o := range Options() {
			if v := bitbucketVariable(o, getenv); v != "" {
				values[o.Name] = v
			}
		}
	}

	fs := flag.NewFlagSet("tagpush", flag.ContinueOnError)
	// The flag package would print its own usage on every error: the help
	// is ours, and an error is one line (see flagError).
	fs.SetOutput(io.Discard)
	set := make(map[string]*string)
	for _, o := range Options() {
		v := new(string)
		*v = o.Default
		set[o.Name] = v
		fs.Var(&flagValue{s: v, isBool: o.Kind == Bool}, o.Name, o.Description)
	}
	debug := fs.Bool("debug", false, "Log every retry and limit change in detail.")
	fs.Usage = func() {}
	if err := fs.Parse(joinBoolValues(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			Help(help)
			return nil, ErrHelp
		}
		return nil, flagError(err)
	}
	if fs.NArg() > 0 {
		return nil, usage("unexpected argument %q: every setting is a flag (--source, --tags, ...)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		if v, ok := set[f.Name]; ok {
			values[f.Name] = *v
		}
	})
	cfg, err := parse(values)
	if err != nil {
		return nil, err
	}
	cfg.Debug = *debug || isTrue(getenv("DEBUG")) || getenv("RUNNER_DEBUG") == "1"
	return cfg, nil
}

// bitbucketVariable reads a pipe variable; a list given as a YAML list arrives
// as NAME_COUNT and NAME_0, NAME_1, ...
func bitbucketVariable(o Option, getenv func(string) string) string {
	name := o.Variable()
	if o.Kind == List {
		if n, err := strconv.Atoi(getenv(name + "_COUNT")); err == nil && n > 0 {
			items := make([]string, 0, n)
			for i := range n {
				items = append(items, getenv(fmt.Sprintf("%s_%d", name, i)))
			}
			return strings.Join(items, "\n")
		}
	}
	return strings.TrimSpace(getenv(name))
}

func isTrue(s string) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	return err == nil && b
}

func parse(v map[string]string) (*Config, error) {
	c := &Config{
		Source:       strings.TrimSpace(v["source"]),
		Tags:         v["tags"],
		Repository:   strings.TrimSpace(v["repository"]),
		Platform:     strings.TrimSpace(v["platform"]),
		Username:     strings.TrimSpace(v["username"]),
		Password:     v["password"],
		RegistryAuth: v["registry-auth"],
		CAFile:       strings.TrimSpace(v["ca-file"]),
	}
	var errs []error
	if c.Source == "" {
		errs = append(errs, usage("source is required: the image to push, e.g. oci:./build/image"))
	}
	if strings.TrimSpace(c.Tags) == "" {
		errs = append(errs, usage("tags is required: where to push, e.g. ghcr.io/acme/app:1.4"))
	}
	intOpt := func(name string, min int) int {
		n, err := strconv.Atoi(strings.TrimSpace(v[name]))
		if err != nil || n < min {
			errs = append(errs, usage("%s: %q is not a whole number >= %d", name, v[name], min))
		}
		return n
	}
	durOpt := func(name string) time.Duration {
		d, err := time.ParseDuration(strings.TrimSpace(v[name]))
		if err != nil || d <= 0 {
			errs = append(errs, usage("%s: %q is not a positive duration (e.g. 500ms, 2s, 10m)", name, v[name]))
		}
		return d
	}
	boolOpt := func(name string) bool {
		b, err := strconv.ParseBool(strings.TrimSpace(v[name]))
		if err != nil {
			errs = append(errs, usage("%s: %q is not true or false", name, v[name]))
		}
		return b
	}
	for i, item := range splitList(v["insecure-registries"]) {
		reg, err := name.NewRegistry(item, name.StrictValidation)
		if err != nil || strings.ContainsAny(item, "/@") {
			errs = append(errs, usage("insecure-registries item %d: %q is not a registry host (host or host:port, e.g. registry.corp:5000)", i+1, item))
			continue
		}
		c.Insecure = append(c.Insecure, reg.RegistryStr())
	}
	if c.CAFile != "" {
		if st, err := os.Stat(c.CAFile); err != nil || st.IsDir() {
			errs = append(errs, usage("ca-file: %q is not a readable file", c.CAFile))
		}
	}
	c.Concurrency = intOpt("concurrency", 1)
	c.MaxAttempts = intOpt("max-attempts", 1)
	c.RetryDelay = durOpt("retry-delay")
	c.MaxRetryDelay = durOpt("max-retry-delay")
	c.Timeout = durOpt("timeout")
	c.Adaptive = boolOpt("adaptive")
	c.Overwrite = boolOpt("overwrite")
	c.Referrers = boolOpt("referrers")
	c.FailOnError = boolOpt("fail-on-error")
	c.DryRun = boolOpt("dry-run")
	if c.MaxRetryDelay > 0 && c.RetryDelay > c.MaxRetryDelay {
		errs = append(errs, usage("max-retry-delay (%s) is less than retry-delay (%s)", c.MaxRetryDelay, c.RetryDelay))
	}
	if len(errs) > 0 {
		return nil, &UsageError{errors.Join(errs...)}
	}
	return c, nil
}

// flagError turns the flag package's error into one line that says what to
// do: "unknown flag --sorce; did you mean --source? see tagpush --help".
func flagError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		name = strings.TrimLeft(name, "-")
		if s := suggest(name); s != "" {
			return usage("unknown flag --%s; did you mean --%s? see tagpush --help", name, s)
		}
		return usage("unknown flag --%s; see tagpush --help", name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return usage("flag --%s needs a value; see tagpush --help", strings.TrimLeft(name, "-"))
	}
	return usage("%s; see tagpush --help", msg)
}

// splitList splits a list input at newlines and commas, trimmed, blanks dropped.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == ',' || r == '\r' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// flagValue is a string flag that can also be given bare (--dry-run).
type flagValue struct {
	s      *string
	isBool bool
}

func (f *flagValue) String() string {
	if f == nil || f.s == nil {
		return ""
	}
	return *f.s
}

func (f *flagValue) Set(v string) error { *f.s = v; return nil }

func (f *flagValue) IsBoolFlag() bool { return f.isBool }

// joinBoolValues lets a bool flag take its value as the next word
// (--dry-run false), as every other flag does; Go's flag package would read
// "false" as the first non-flag argument.
func joinBoolValues(args []string) []string {
	isBool := make(map[string]bool)
	for _, o := range Options() {
		isBool[o.Name] = o.Kind == Bool
	}
	isBool["debug"] = true
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		name := strings.TrimLeft(a, "-")
		if strings.HasPrefix(a, "-") && !strings.Contains(name, "=") && isBool[name] && i+1 < len(args) {
			if _, err := strconv.ParseBool(args[i+1]); err == nil {
				out = append(out, a+"="+args[i+1])
				i++
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

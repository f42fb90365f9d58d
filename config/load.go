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

	"github.com/tagpush/tagpush/ci"
	"github.com/tagpush/tagpush/internal/quote"
)

// Config is a validated configuration.
type Config struct {
	Source string
	Tags   string
	// Images is the images input: several images, one per line, instead of
	// Source and Tags.
	Images        string
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

// Load reads the configuration: each option's default, then inputs (the
// values the CI system sets, by option name), then flags in args, each
// overriding the one before. help receives the help when args ask for it.
func Load(args []string, inputs map[string]string, help io.Writer) (*Config, error) {
	values := make(map[string]string)
	for _, o := range Options() {
		values[o.Name] = o.Default
		if v, ok := inputs[o.Name]; ok {
			values[o.Name] = v
		}
	}

	fs := flag.NewFlagSet("tagpush", flag.ContinueOnError)
	// The flag package would print its own usage on every error: the help
	// is ours, and an error is one line (see flagError).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	set := make(map[string]*string)
	for _, o := range Options() {
		v := new(string)
		*v = o.Default
		set[o.Name] = v
		fs.Var(&flagValue{s: v, isBool: o.Kind == Bool}, o.Name, o.Description)
	}
	if err := fs.Parse(joinBoolValues(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			Help(help)
			return nil, ErrHelp
		}
		return nil, flagError(err)
	}
	if fs.NArg() > 0 {
		return nil, usage("unexpected argument %s: every setting is a flag (--source, --tags, ...)", quote.Value(fs.Arg(0)))
	}
	fs.Visit(func(f *flag.Flag) {
		if v, ok := set[f.Name]; ok {
			values[f.Name] = *v
		}
	})
	return parse(values)
}

// Inputs are the options as the CI system's inputs.
func Inputs() []ci.Input {
	var in []ci.Input
	for _, o := range Options() {
		in = append(in, ci.Input{Name: o.Name, List: o.Kind == List || o.Kind == Lines})
	}
	return in
}

func parse(v map[string]string) (*Config, error) {
	c := &Config{
		Source:       strings.TrimSpace(v["source"]),
		Tags:         v["tags"],
		Images:       v["images"],
		Repository:   strings.TrimSpace(v["repository"]),
		Platform:     strings.TrimSpace(v["platform"]),
		Username:     strings.TrimSpace(v["username"]),
		Password:     v["password"],
		RegistryAuth: v["registry-auth"],
		CAFile:       strings.TrimSpace(v["ca-file"]),
	}
	var errs []error
	switch {
	case strings.TrimSpace(c.Images) != "":
		if c.Source != "" || strings.TrimSpace(c.Tags) != "" {
			errs = append(errs, usage("images is given with source or tags: give images (several images, SOURCE -> TAGS per line) or source and tags (one image), not both"))
		}
	default:
		if c.Source == "" {
			errs = append(errs, usage("source is required: the image to push, e.g. oci:./build/image (or images: several, SOURCE -> TAGS per line)"))
		}
		if strings.TrimSpace(c.Tags) == "" {
			errs = append(errs, usage("tags is required: where to push, e.g. ghcr.io/acme/app:1.4"))
		}
	}
	// Values are checked for their kind here; what range a number or a
	// duration may take is the pusher's rule (pusher.New says, naming the
	// option), so it is written once.
	intOpt := func(name string) int {
		n, err := strconv.Atoi(strings.TrimSpace(v[name]))
		if err != nil {
			errs = append(errs, usage("%s: %s is not a whole number", name, quote.Value(v[name])))
		}
		return n
	}
	durOpt := func(name string) time.Duration {
		d, err := time.ParseDuration(strings.TrimSpace(v[name]))
		if err != nil {
			errs = append(errs, usage("%s: %s is not a duration (e.g. 500ms, 2s, 10m)", name, quote.Value(v[name])))
		}
		return d
	}
	boolOpt := func(name string) bool {
		b, err := strconv.ParseBool(strings.TrimSpace(v[name]))
		if err != nil {
			errs = append(errs, usage("%s: %s is not true or false", name, quote.Value(v[name])))
		}
		return b
	}
	for i, item := range splitList(v["insecure-registries"]) {
		reg, err := name.NewRegistry(item, name.StrictValidation)
		if err != nil || strings.ContainsAny(item, "/@") {
			errs = append(errs, usage("insecure-registries item %d: %s is not a registry host (host or host:port, e.g. registry.corp:5000)", i+1, quote.Value(item)))
			continue
		}
		c.Insecure = append(c.Insecure, reg.RegistryStr())
	}
	if c.CAFile != "" {
		if st, err := os.Stat(c.CAFile); err != nil || st.IsDir() {
			errs = append(errs, usage("ca-file: %s is not a readable file", quote.Value(c.CAFile)))
		}
	}
	c.Concurrency = intOpt("concurrency")
	c.MaxAttempts = intOpt("max-attempts")
	c.RetryDelay = durOpt("retry-delay")
	c.MaxRetryDelay = durOpt("max-retry-delay")
	c.Timeout = durOpt("timeout")
	c.Adaptive = boolOpt("adaptive")
	c.Overwrite = boolOpt("overwrite")
	c.Referrers = boolOpt("referrers")
	c.FailOnError = boolOpt("fail-on-error")
	c.DryRun = boolOpt("dry-run")
	c.Debug = boolOpt("debug")
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

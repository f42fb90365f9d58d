package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tagpush/tagpush/ci"
	"github.com/tagpush/tagpush/internal/option"
	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/taglist"
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
	Atomic        bool
	Referrers     bool
	MaxAttempts   int
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	Timeout       time.Duration
	FailOnError   bool
	DryRun        bool
	Debug         bool
	// Output is how a terminal run writes its result on stdout: text (the
	// table) or json.
	Output string
}

// usageError is bad input in the configuration (every error Load returns
// but ErrHelp is one); the caller says so and exits 2. Its tests tell it
// from a failure of the code.
type usageError struct{ Err error }

func (e *usageError) Error() string { return e.Err.Error() }
func (e *usageError) Unwrap() error { return e.Err }

func usage(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// named is bad input whose message names options, for each front end to
// name in its own words (option.Render).
func named(parts ...any) error {
	return &usageError{option.Errorf(parts...)}
}

// ErrHelp is returned when -h or --help was asked for.
var ErrHelp = flag.ErrHelp

// Load reads the configuration: each option's default, then inputs (the
// values the CI system sets, by option name), then flags in args, each
// overriding the one before. A list flag given again adds to the list
// (--tags a --tags b, as crane, oras and docker take -t); any other flag
// given twice is an error. help receives the help when args ask for it;
// stdin is read for --password-stdin.
func Load(args []string, inputs map[string]string, help io.Writer, stdin io.Reader) (*Config, error) {
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
		fs.Var(&flagValue{s: v, name: o.Name, isBool: o.Kind == Bool, list: o.Kind == List || o.Kind == Lines}, o.Name, o.Description)
	}
	// Flags of the terminal only: they make no sense as a CI input.
	passwordStdin := fs.Bool("password-stdin", false, "")
	output := fs.String("output", "text", "")
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
	if *passwordStdin {
		if values["password"] != "" {
			return nil, usage("--password and --password-stdin are both given: give the password one way")
		}
		b, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return nil, usage("--password-stdin: read stdin: %v", err)
		}
		values["password"] = strings.TrimRight(string(b), "\r\n")
		if values["password"] == "" {
			return nil, usage("--password-stdin: stdin is empty: pipe the password in (echo \"$TOKEN\" | tagpush ... --password-stdin)")
		}
	}
	c, err := parse(values)
	if err != nil {
		return nil, err
	}
	switch *output {
	case "text", "json":
		c.Output = *output
	default:
		return nil, usage("--output: %s is not text or json", quote.Value(*output))
	}
	return c, nil
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
			errs = append(errs, named(option.Ref("images"), " is given with ", option.Ref("source"), " or ", option.Ref("tags"), ": give ", option.Ref("images"), " (several images, SOURCE -> TAGS per line) or ", option.Ref("source"), " and ", option.Ref("tags"), " (one image), not both"))
		}
	default:
		if c.Source == "" {
			errs = append(errs, named(option.Ref("source"), " is required: the image to push, e.g. oci:./build/image (or ", option.Ref("images"), ": several, SOURCE -> TAGS per line)"))
		}
		if strings.TrimSpace(c.Tags) == "" {
			errs = append(errs, named(option.Ref("tags"), " is required: where to push, e.g. ghcr.io/acme/app:1.4"))
		}
	}
	// Values are checked for their kind here; what range a number or a
	// duration may take is the pusher's rule (pusher.New says, naming the
	// option), so it is written once.
	intOpt := func(name string) int {
		n, err := strconv.Atoi(strings.TrimSpace(v[name]))
		if err != nil {
			errs = append(errs, named(option.Ref(name), ": "+quote.Value(v[name])+" is not a whole number"))
		}
		return n
	}
	durOpt := func(name string) time.Duration {
		d, err := time.ParseDuration(strings.TrimSpace(v[name]))
		if err != nil {
			errs = append(errs, named(option.Ref(name), ": "+quote.Value(v[name])+" is not a duration (e.g. 500ms, 2s, 10m)"))
		}
		return d
	}
	boolOpt := func(name string) bool {
		b, err := strconv.ParseBool(strings.TrimSpace(v[name]))
		if err != nil {
			errs = append(errs, named(option.Ref(name), ": "+quote.Value(v[name])+" is not true or false"))
		}
		return b
	}
	for i, item := range splitList(v["insecure-registries"]) {
		if err := taglist.ASCII(item); err != nil {
			errs = append(errs, named(option.Ref("insecure-registries"), fmt.Sprintf(" item %d: %s %v", i+1, quote.Value(item), err)))
			continue
		}
		reg, err := name.NewRegistry(item, name.StrictValidation)
		if err != nil || strings.ContainsAny(item, "/@") {
			errs = append(errs, named(option.Ref("insecure-registries"), fmt.Sprintf(" item %d: %s is not a registry host (host or host:port, e.g. registry.corp:5000)", i+1, quote.Value(item))))
			continue
		}
		c.Insecure = append(c.Insecure, reg.RegistryStr())
	}
	if c.CAFile != "" {
		if st, err := os.Stat(c.CAFile); err != nil || st.IsDir() {
			errs = append(errs, named(option.Ref("ca-file"), ": "+quote.Value(c.CAFile)+" is not a readable file"))
		}
	}
	c.Concurrency = intOpt("concurrency")
	c.MaxAttempts = intOpt("max-attempts")
	c.RetryDelay = durOpt("retry-delay")
	c.MaxRetryDelay = durOpt("max-retry-delay")
	c.Timeout = durOpt("timeout")
	c.Adaptive = boolOpt("adaptive")
	c.Overwrite = boolOpt("overwrite")
	c.Atomic = boolOpt("atomic")
	c.Referrers = boolOpt("referrers")
	c.FailOnError = boolOpt("fail-on-error")
	c.DryRun = boolOpt("dry-run")
	c.Debug = boolOpt("debug")
	if len(errs) > 0 {
		return nil, &usageError{errors.Join(errs...)}
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
	if m := invalidValue.FindStringSubmatch(msg); m != nil {
		return usage("%s", m[1])
	}
	return usage("%s; see tagpush --help", msg)
}

// invalidValue is the flag package's wrapping of an error from Set.
var invalidValue = regexp.MustCompile(`^invalid value .* for flag -[^:]+: (.*)$`)

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

// flagValue is a string flag that can also be given bare (--dry-run). A
// list's value given again is added to it; any other's is an error.
type flagValue struct {
	s            *string
	name         string
	isBool, list bool
	given        bool
}

func (f *flagValue) String() string {
	if f == nil || f.s == nil {
		return ""
	}
	return *f.s
}

func (f *flagValue) Set(v string) error {
	switch {
	case !f.given:
		*f.s = v
	case f.list:
		*f.s += "\n" + v
	default:
		return fmt.Errorf("--%s is given twice (%s, then %s): give it once", f.name, quote.Value(*f.s), quote.Value(v))
	}
	f.given = true
	return nil
}

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

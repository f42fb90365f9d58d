// Package ci owns the CI environment tagpush runs in: it tells GitHub
// Actions, Bitbucket Pipelines and a terminal apart, reads their inputs and
// variables (INPUT_*, NAME / NAME_COUNT / NAME_n, GITHUB_TOKEN, DOCKER_HOST,
// RUNNER_DEBUG, NO_COLOR, ...), logs in their dialect (annotations, masking)
// and publishes results where each one shows them (outputs and job summary,
// the pipe's result line and shared storage, a table on a terminal).
//
// It is the only package that reads the environment or switches on the CI
// system; the others get plain values. It knows nothing of images or
// registries: what it publishes is already rendered text.
package ci

import (
	"io"
	"strconv"
	"strings"
)

// Kind is the CI system a run is in.
type Kind int

const (
	Terminal Kind = iota
	GitHub
	Bitbucket
)

func (k Kind) String() string {
	return [...]string{"terminal", "github", "bitbucket"}[k]
}

// Env is the process's environment and output streams (or a test's).
type Env struct {
	Getenv func(string) string
	// Environ lists the environment as KEY=VALUE, for Strays; nil lists
	// nothing.
	Environ func() []string
	Stdout  io.Writer
	Stderr  io.Writer
}

// Input is one setting the CI system may give.
type Input struct {
	Name string // kebab-case: the GitHub input; UPPER_SNAKE for Bitbucket
	List bool   // Bitbucket may give it as NAME_COUNT, NAME_0, NAME_1, ...
}

// Facts are what tagpush reads from the environment besides its inputs.
type Facts struct {
	// GitHubToken and GitHubActor are the workflow's GITHUB_TOKEN and
	// GITHUB_ACTOR (ghcr.io's credentials when no other is given).
	GitHubToken, GitHubActor string
	// Docker is what the docker CLI reads to find the Docker engine, for
	// docker-daemon: sources.
	Docker Docker
	// Debug is the CI system's own debug switch: the runner's debug logging
	// (RUNNER_DEBUG=1) on GitHub, DEBUG=true on a terminal. Bitbucket's
	// DEBUG variable is the `debug` input itself.
	Debug bool
}

// Docker is the docker CLI's environment: DOCKER_HOST, DOCKER_TLS_VERIFY,
// DOCKER_CERT_PATH, DOCKER_CONTEXT, DOCKER_CONFIG, and HOME (whose .docker
// is the config without DOCKER_CONFIG).
type Docker struct {
	Host, CertPath, Context, ConfigDir, Home string
	TLSVerify                                bool
}

// System is one CI system.
type System interface {
	Kind() Kind
	// Inputs returns the values the CI system sets for inputs, by name;
	// inputs it does not set are absent. An input given in a shape the
	// system cannot mean (a Bitbucket list with a hole) is an error.
	Inputs(inputs []Input) (map[string]string, error)
	// Name is how the CI system names an input to a person: the GitHub
	// input, the Bitbucket variable (MAX_ATTEMPTS), the flag (--max-attempts).
	Name(input string) string
	Facts() Facts
	// Logger returns the run's log; debug shows debug lines.
	Logger(debug bool) Logger
	// Publish writes a run's results where this CI system shows them.
	Publish(r Results, log Logger) error
	// BadInput reports a configuration error, once, where a person looks
	// first: the log (an annotation on GitHub, with the job summary), or
	// Bitbucket's red result line.
	BadInput(message string, log Logger)
}

// Results are a finished run's results, rendered.
type Results struct {
	// OK is true when every tag holds the digest.
	OK bool
	// Headline is one line: "20 of 20 tags pushed".
	Headline string
	// Text is the table and its notes, for the log.
	Text string
	// Markdown is the job summary.
	Markdown string
	// JSON is the results array (the results output, results.json).
	JSON string
	// Outputs are the step's outputs, in order.
	Outputs []Output
}

// Output is one step output.
type Output struct{ Name, Value string }

// badInputTitle is the annotation title of a configuration error.
const badInputTitle = "tagpush: bad input"

// Detect tells the CI system from env.
func Detect(env Env) System {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	b := base{env}
	switch {
	case env.Getenv("GITHUB_ACTIONS") == "true":
		return &github{base: b}
	case env.Getenv("BITBUCKET_BUILD_NUMBER") != "" || env.Getenv("BITBUCKET_PIPE_STORAGE_DIR") != "":
		return &bitbucket{base: b}
	}
	return &terminal{base: b}
}

// base is what every system shares.
type base struct{ env Env }

func (b base) facts() Facts {
	return Facts{
		GitHubToken: strings.TrimSpace(b.env.Getenv("GITHUB_TOKEN")),
		GitHubActor: strings.TrimSpace(b.env.Getenv("GITHUB_ACTOR")),
		Docker: Docker{
			Host:      b.env.Getenv("DOCKER_HOST"),
			TLSVerify: b.env.Getenv("DOCKER_TLS_VERIFY") != "",
			CertPath:  b.env.Getenv("DOCKER_CERT_PATH"),
			Context:   b.env.Getenv("DOCKER_CONTEXT"),
			ConfigDir: b.env.Getenv("DOCKER_CONFIG"),
			Home:      b.env.Getenv("HOME"),
		},
	}
}

func isTrue(s string) bool {
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	return err == nil && v
}

// terminal is a run from a shell: flags only, a plain log on stderr, the
// table on stdout.
type terminal struct{ base }

func (t *terminal) Kind() Kind                                { return Terminal }
func (t *terminal) Inputs([]Input) (map[string]string, error) { return map[string]string{}, nil }
func (t *terminal) Name(input string) string                  { return "--" + input }

func (t *terminal) Facts() Facts {
	f := t.facts()
	f.Debug = isTrue(t.env.Getenv("DEBUG"))
	return f
}

func (t *terminal) Logger(debug bool) Logger { return &plainLogger{w: t.env.Stderr, debug: debug} }

func (t *terminal) Publish(r Results, _ Logger) error {
	_, err := io.WriteString(t.env.Stdout, r.Text)
	return err
}

func (t *terminal) BadInput(message string, log Logger) { log.Failf(badInputTitle, "%s", message) }

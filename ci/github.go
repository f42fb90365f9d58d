package ci

import (
	"fmt"
	"html"
	"io"
	"strings"

	"github.com/sethvargo/go-githubactions"
)

// github is a GitHub Actions step: INPUT_* inputs, workflow commands in the
// log, outputs in GITHUB_OUTPUT and the job summary in GITHUB_STEP_SUMMARY.
type github struct{ base }

func (g *github) Kind() Kind { return GitHub }

// action is go-githubactions bound to this environment, writing commands to w.
func (g *github) action(w io.Writer) *githubactions.Action {
	return githubactions.New(githubactions.WithGetenv(g.env.Getenv), githubactions.WithWriter(w))
}

func (g *github) Name(input string) string { return input }

func (g *github) Inputs(inputs []Input) (map[string]string, error) {
	action := g.action(io.Discard)
	values := make(map[string]string)
	for _, in := range inputs {
		// GetInput trims, and an empty input is the same as an absent one:
		// action.yml's defaults reach the container as empty strings when
		// the workflow does not set them.
		if v := action.GetInput(in.Name); v != "" {
			values[in.Name] = v
		}
	}
	return values, nil
}

func (g *github) Facts() Facts {
	f := g.facts()
	f.Debug = g.env.Getenv("RUNNER_DEBUG") == "1"
	return f
}

func (g *github) Logger(debug bool) Logger {
	return &githubLogger{action: g.action(g.env.Stdout), debug: debug}
}

func (g *github) Publish(r Results, log Logger) error {
	if _, err := io.WriteString(g.env.Stdout, r.Text); err != nil {
		return err
	}
	action := g.action(g.env.Stdout)
	if g.env.Getenv("GITHUB_OUTPUT") != "" {
		for _, o := range r.Outputs {
			if err := call(func() { action.SetOutput(o.Name, o.Value) }); err != nil {
				return fmt.Errorf("set output %s: %w", o.Name, err)
			}
		}
	} else {
		log.Warnf("GITHUB_OUTPUT is not set: outputs not written")
	}
	if g.env.Getenv("GITHUB_STEP_SUMMARY") != "" {
		if err := call(func() { action.AddStepSummary(r.Markdown) }); err != nil {
			return fmt.Errorf("write job summary: %w", err)
		}
	}
	return nil
}

func (g *github) BadInput(message string, log Logger) {
	log.Failf(badInputTitle, "%s", message)
	if g.env.Getenv("GITHUB_STEP_SUMMARY") == "" {
		return
	}
	md := "### tagpush: bad input\n\n" + markdownQuote(message) + "\n\nSee `tagpush --help` or the action's inputs.\n"
	if err := call(func() { g.action(io.Discard).AddStepSummary(md) }); err != nil {
		log.Warnf("write job summary: %v", err)
	}
}

// call turns go-githubactions' panics on file command errors into errors.
func call(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	f()
	return nil
}

// markdownQuote shows text as a quote, each line its own, with nothing in it
// read as markdown or HTML.
func markdownQuote(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		lines = append(lines, "> "+html.EscapeString(strings.NewReplacer("`", "\\`", "*", "\\*", "_", "\\_", "|", "\\|").Replace(l)))
	}
	return strings.Join(lines, "\n")
}

package job

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sethvargo/go-githubactions"

	"github.com/tagpush/tagpush/config"
	"github.com/tagpush/tagpush/pusher"
	"github.com/tagpush/tagpush/report"
)

// publish writes the results where the front end wants them.
func publish(fe config.FrontEnd, env Env, log logger, rep *pusher.Report) error {
	for _, r := range rep.Results {
		if !r.Status.OK() {
			log.Failf("tagpush: "+r.Tag.String()+" "+string(r.Status), "%s %s: %s", r.Status, r.Tag, pusher.Summary(r.Err))
		}
	}
	results, err := report.JSON(rep.Results)
	if err != nil {
		return err
	}
	switch fe {
	case config.GitHub:
		return publishGitHub(env, log, rep, results)
	default:
		fmt.Fprint(env.Stdout, report.Table(rep))
		if line := report.ReferrersLine(rep.Results); line != "" {
			fmt.Fprintln(env.Stdout, line)
		}
		fmt.Fprintln(env.Stdout, report.StatsLine(rep.Stats))
		if fe == config.Bitbucket {
			if err := publishBitbucket(env, results); err != nil {
				return err
			}
			fmt.Fprintln(env.Stdout, statusLine(env, rep))
		}
	}
	return nil
}

func publishGitHub(env Env, log logger, rep *pusher.Report, results string) error {
	action := githubactions.New(githubactions.WithGetenv(env.Getenv), githubactions.WithWriter(env.Stdout))
	fmt.Fprint(env.Stdout, report.Table(rep))
	if env.Getenv("GITHUB_OUTPUT") != "" {
		failed := report.Refs(rep.Results, pusher.StatusFailed)
		if c := report.Refs(rep.Results, pusher.StatusCancelled); c != "" {
			failed = joinLines(failed, c)
		}
		outputs := [][2]string{
			{"digest", rep.Digest},
			{"results", results},
			// pushed lists every tag that holds the digest now, unchanged
			// ones included; unchanged lists those that needed no write.
			{"pushed", okRefs(rep)},
			{"unchanged", report.Refs(rep.Results, pusher.StatusUnchanged)},
			{"failed", failed},
		}
		for _, o := range outputs {
			if err := setOutput(action, o[0], o[1]); err != nil {
				return err
			}
		}
	} else {
		log.Warnf("GITHUB_OUTPUT is not set: outputs not written")
	}
	if env.Getenv("GITHUB_STEP_SUMMARY") != "" {
		if err := call(func() { action.AddStepSummary(report.Markdown(rep)) }); err != nil {
			return fmt.Errorf("write job summary: %w", err)
		}
	}
	return nil
}

func joinLines(a, b string) string {
	if a == "" {
		return b
	}
	return a + "\n" + b
}

func setOutput(action *githubactions.Action, k, v string) error {
	if err := call(func() { action.SetOutput(k, v) }); err != nil {
		return fmt.Errorf("set output %s: %w", k, err)
	}
	return nil
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

func publishBitbucket(env Env, results string) error {
	dir := env.Getenv("BITBUCKET_PIPE_SHARED_STORAGE_DIR")
	if dir == "" {
		return nil
	}
	dir = filepath.Join(dir, "tagpush")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "results.json")
	if err := os.WriteFile(path, []byte(results+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// allOK reports whether every tag holds the digest: pushed or unchanged.
func allOK(rep *pusher.Report) bool {
	for _, r := range rep.Results {
		if !r.Status.OK() {
			return false
		}
	}
	return true
}

// okRefs lists, in input order, the tags that hold the digest.
func okRefs(rep *pusher.Report) string {
	var refs []string
	for _, r := range rep.Results {
		if r.Status.OK() {
			refs = append(refs, r.Tag.String())
		}
	}
	return strings.Join(refs, "\n")
}

// statusLine is the pipe's last line: green on success, red on failure, in
// colour only when the output is a terminal or TERM asks for it (and NO_COLOR
// does not forbid it).
func statusLine(env Env, rep *pusher.Report) string {
	ok := allOK(rep)
	text, code := "✔ Success: "+report.Headline(rep), "32"
	if !ok {
		text, code = "✖ Failed: "+report.Headline(rep), "31"
	}
	return colored(env, text, code)
}

// colored wraps text in an ANSI colour when the output takes colours.
func colored(env Env, text, code string) string {
	if !useColor(env) {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

func useColor(env Env) bool {
	if env.Getenv("NO_COLOR") != "" {
		return false
	}
	if f, ok := env.Stdout.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return true
		}
	}
	term := env.Getenv("TERM")
	return term != "" && term != "dumb"
}

// Package job runs one tagpush job end to end, as a short pipeline: plan
// (configuration, tags, credentials, pusher, source), push, publish. It turns
// what went wrong into one exit code. The CI environment is package ci's:
// job gets its inputs and facts as plain values and logs through its Logger.
package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/logs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/ci"
	"github.com/tagpush/tagpush/config"
	"github.com/tagpush/tagpush/internal/option"
	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/pusher"
	"github.com/tagpush/tagpush/report"
	"github.com/tagpush/tagpush/source"
	"github.com/tagpush/tagpush/taglist"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitFailed   = 1 // a tag failed, a dry-run check failed, or results could not be written
	ExitBadInput = 2 // the configuration or the source is wrong; nothing was pushed
)

// Env is everything a job reads and writes: the process's, or a test's.
type Env struct {
	Args   []string
	Getenv func(string) string
	// Environ lists the environment (KEY=VALUE), to find inputs and
	// variables tagpush does not know; nil lists none.
	Environ func() []string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	// Version is stamped into the User-Agent.
	Version string
	// PusherOptions are applied after those from the configuration (the demo
	// and tests use them to point at their own transport).
	PusherOptions []pusher.Option
	// DockerConfig is the keychain of Docker config files and credential
	// helpers; nil means the user's (~/.docker/config.json, DOCKER_CONFIG).
	DockerConfig authn.Keychain
}

// inputError is a configuration (or source) the run cannot start with.
type inputError struct{ err error }

func (e *inputError) Error() string { return e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

func badInput(err error) error { return &inputError{err} }

// failedError says some tags (or dry-run checks) failed; each was reported
// where it happened.
type failedError struct{ what string }

func (e *failedError) Error() string { return e.what }

// Run runs the job and returns the process exit code.
func Run(ctx context.Context, env Env) int {
	sys := ci.Detect(ci.Env{Getenv: env.Getenv, Environ: env.Environ, Stdout: env.Stdout, Stderr: env.Stderr})
	j := &job{env: env, sys: sys, facts: sys.Facts()}
	j.log = sys.Logger(j.facts.Debug)
	// plan may point go-containerregistry's package-level loggers at this
	// run's log; they are the process's, so they are put back.
	progress, warn := logs.Progress, logs.Warn
	defer func() { logs.Progress, logs.Warn = progress, warn }()
	return j.exit(j.run(ctx))
}

type job struct {
	env   Env
	sys   ci.System
	facts ci.Facts
	log   ci.Logger
}

func (j *job) run(ctx context.Context) error {
	pl, err := j.plan(ctx)
	if err != nil {
		return err
	}
	defer pl.close()
	rep := j.push(ctx, pl)
	if err := j.publish(rep, pl.cfg); err != nil {
		return fmt.Errorf("cannot write results: %w", err)
	}
	switch {
	case report.AllOK(rep):
		return nil
	case rep.DryRun:
		// A plan with a tag that would fail fails, whatever fail-on-error
		// says: it is a check, and the real run would fail there.
		return &failedError{report.Headline(rep)}
	case !pl.cfg.FailOnError && ctx.Err() == nil:
		return nil
	}
	return &failedError{report.Headline(rep)}
}

// exit reports err where it belongs and maps it to the exit code: the one
// place that does.
func (j *job) exit(err error) int {
	var in *inputError
	var failed *failedError
	switch {
	case err == nil, errors.Is(err, config.ErrHelp):
		return ExitOK
	case errors.As(err, &in):
		msg := option.Render(err, j.sys.Name) + " (nothing was pushed)"
		j.sys.BadInput(msg, j.log)
		j.document(true, errors.New(msg))
		return ExitBadInput
	case errors.As(err, &failed):
		return ExitFailed
	default:
		j.log.Failf("tagpush", "%v", err)
		j.document(false, err)
		return ExitFailed
	}
}

// document prints the one JSON document --output json promises on a path
// that ends before there are results, so that `| jq` never reads nothing.
func (j *job) document(badInput bool, err error) {
	if wantsJSON(j.env.Args) && j.env.Stdout != nil {
		_, _ = io.WriteString(j.env.Stdout, report.ErrorDocument(badInput, err))
	}
}

// wantsJSON reports whether the command line asks for --output json (a flag
// only: no input or variable sets it). It is read from the arguments, since
// the configuration that would say so may be what was wrong.
func wantsJSON(args []string) bool {
	for i, a := range args {
		a = "-" + strings.TrimLeft(a, "-")
		switch {
		case a == "-output=json":
			return true
		case a == "-output" && i+1 < len(args) && args[i+1] == "json":
			return true
		}
	}
	return false
}

// plan is a run ready to push.
type plan struct {
	cfg   *config.Config
	items []taglist.Item // every destination, in the order given
	tags  []name.Tag
	// images are what to push: the one image of source and tags, opened
	// already, or the images input's, each opened as the push runs.
	images []pusher.Image
	pusher *pusher.Pusher
	events *eventLog

	mu     sync.Mutex
	opened []*source.Image // to close when the run ends
}

// opener opens one image of the plan when the push asks for it, logs what
// it opened, and keeps it to be closed (its export removed) when the run
// ends.
func (pl *plan) opener(j *job, spec string, prep *source.Prepared) func(context.Context, pusher.Held) (remote.Taggable, []pusher.Referrer, error) {
	return func(ctx context.Context, held pusher.Held) (remote.Taggable, []pusher.Referrer, error) {
		start := time.Now()
		img, err := prep.OpenHeld(ctx, held)
		if err != nil {
			return nil, nil, err
		}
		pl.mu.Lock()
		pl.opened = append(pl.opened, img)
		pl.mu.Unlock()
		if len(pl.images) > 1 {
			j.log.Infof("%s: %s, opened in %s", spec, img.Description, quote.Duration(time.Since(start)))
		} else {
			j.log.Infof("opened %s in %s", img.Description, quote.Duration(time.Since(start)))
		}
		j.logReferrers(img)
		return img.Taggable, referrersOf(img), nil
	}
}

// close closes every image the run opened.
func (pl *plan) close() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, img := range pl.opened {
		img.Close()
	}
	pl.opened = nil
}

// images are the images input's images. Every source is found before any
// is opened, all at once (a Docker engine's image is asked for, an archive
// or layout read far enough to know it holds an image, a registry's image
// looked up): a wrong one is bad input naming its line, and nothing is
// pushed. Each then opens as the push runs, beside the others' uploads (a
// Docker engine's export).
func (j *job) images(ctx context.Context, pl *plan, lines []taglist.Image, tags []name.Tag, o source.Options) ([]pusher.Image, error) {
	preps := make([]*source.Prepared, len(lines))
	errs := make([]error, len(lines))
	var wg sync.WaitGroup
	for i, l := range lines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := source.Prepare(ctx, l.Source, o)
			if err != nil {
				errs[i] = &option.Error{Msg: option.Message{option.Ref("images"), fmt.Sprintf(" line %d", l.Line)}, Err: err}
			}
			preps[i] = p
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, badInput(err)
	}
	// tags are the items' tags, in order, with insecure registries allowed.
	var out []pusher.Image
	next := 0
	for i, l := range lines {
		out = append(out, pusher.Image{Name: l.Source, Tags: tags[next : next+len(l.Items)], OpenHeld: pl.opener(j, l.Source, preps[i]), ID: preps[i].ID})
		next += len(l.Items)
	}
	return out, nil
}

func sourcesOf(lines []taglist.Image) []string {
	var out []string
	for _, l := range lines {
		out = append(out, l.Source)
	}
	return out
}

// referrersOf is what travels with img, as the pusher takes it.
func referrersOf(img *source.Image) []pusher.Referrer {
	refs := make([]pusher.Referrer, len(img.Referrers))
	for i, ref := range img.Referrers {
		refs[i] = pusher.Referrer{Taggable: ref.Taggable, Tag: ref.Tag}
	}
	return refs
}

func (j *job) logReferrers(img *source.Image) {
	for _, ref := range img.Referrers {
		what := "referrer " + ref.Digest.String()
		if ref.Tag != "" {
			what = "referrer tag " + ref.Tag
		}
		j.log.Infof("with %s", what)
	}
}

// push pushes the plan's images, or in a dry run plans them.
func (j *job) push(ctx context.Context, pl *plan) *pusher.Report {
	start := time.Now()
	var rep *pusher.Report
	if pl.cfg.DryRun {
		rep = pl.pusher.Plan(ctx, pl.images)
	} else {
		rep = pl.pusher.PushAll(ctx, pl.images)
	}
	pl.events.end()
	j.log.Infof("%s, in %s", report.Headline(rep), quote.Duration(time.Since(start)))
	return rep
}

// allowInsecure re-reads the tags bound for an insecure registry so that
// plain HTTP may be used with it (go-containerregistry tries https first).
func allowInsecure(tags []name.Tag, insecure []string) ([]name.Tag, error) {
	if len(insecure) == 0 {
		return tags, nil
	}
	out := make([]name.Tag, len(tags))
	for i, t := range tags {
		out[i] = t
		if slices.Contains(insecure, t.RegistryStr()) {
			it, err := name.NewTag(t.String(), name.Insecure)
			if err != nil {
				return nil, fmt.Errorf("tag %s: %w", t, err)
			}
			out[i] = it
		}
	}
	return out, nil
}

func distinct(s []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(s)))
}

func (j *job) logPlan(pl *plan) {
	repos := make(map[string]bool)
	regs := make(map[string]bool)
	for _, t := range pl.tags {
		repos[t.Repository.String()] = true
		regs[t.RegistryStr()] = true
	}
	mode := "adaptive"
	if !pl.cfg.Adaptive {
		mode = "fixed"
	}
	what := pl.cfg.Source
	switch {
	case len(pl.images) > 1:
		what = fmt.Sprintf("%d images", len(pl.images))
	case len(pl.images) == 1:
		what = pl.images[0].Name // the images input's one line, too
	}
	verb := "pushing"
	if pl.cfg.DryRun {
		verb = "dry run, reading only: planning"
	}
	j.log.Infof("%s %s to %d tag(s) in %d repositor%s on %s; concurrency %d per registry (%s), up to %d attempt(s) per tag",
		verb, what, len(pl.tags), len(repos), plural(len(repos), "y", "ies"),
		strings.Join(slices.Sorted(maps.Keys(regs)), ", "), pl.cfg.Concurrency, mode, pl.cfg.MaxAttempts)
	for _, it := range pl.items {
		j.log.Debugf("tag from line %d: %s", it.Line, it.Tag)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// debugWriter turns go-containerregistry's log lines into debug lines.
type debugWriter struct{ log ci.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debugf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

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
	stdlog "log"
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
	"github.com/tagpush/tagpush/credentials"
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
	Stdout io.Writer
	Stderr io.Writer
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
	sys := ci.Detect(ci.Env{Getenv: env.Getenv, Stdout: env.Stdout, Stderr: env.Stderr})
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
	if pl.cfg.DryRun {
		return j.dryRun(ctx, pl)
	}
	rep, err := j.push(ctx, pl)
	if err != nil {
		return err
	}
	if err := j.publish(rep); err != nil {
		return fmt.Errorf("cannot write results: %w", err)
	}
	if allOK(rep) || !pl.cfg.FailOnError && ctx.Err() == nil {
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
		msg := err.Error() + " (nothing was pushed)"
		j.log.Failf("tagpush: bad input", "%s", msg)
		j.sys.BadInput(msg, j.log)
		return ExitBadInput
	case errors.As(err, &failed):
		return ExitFailed
	default:
		j.log.Failf("tagpush", "%v", err)
		return ExitFailed
	}
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

	mu     sync.Mutex
	opened []*source.Image // to close when the run ends
}

// plan reads and checks everything a push needs, in the order a person
// fixes it: configuration, tags, credentials, pusher settings, source.
func (j *job) plan(ctx context.Context) (*plan, error) {
	cfg, err := config.Load(j.env.Args, j.sys.Inputs(config.Inputs()), j.env.Stdout)
	if errors.Is(err, config.ErrHelp) {
		return nil, err
	}
	if err != nil {
		return nil, badInput(err)
	}
	debug := cfg.Debug || j.facts.Debug
	if debug {
		j.log = j.sys.Logger(true)
		// go-containerregistry reports each blob it finds, mounts or pushes
		// through its package-level loggers.
		logs.Progress = stdlog.New(debugWriter{j.log}, "", 0)
		logs.Warn = stdlog.New(debugWriter{j.log}, "warning: ", 0)
	}

	var (
		items  []taglist.Item
		dups   []taglist.Duplicate
		tagErr error
		lines  []taglist.Image
	)
	if cfg.Images != "" {
		lines, dups, tagErr = taglist.ParseImages(cfg.Images)
		for _, l := range lines {
			items = append(items, l.Items...)
		}
	} else {
		items, dups, tagErr = taglist.Parse(cfg.Tags, cfg.Repository)
	}
	var regs []string
	for _, it := range items {
		regs = append(regs, it.Tag.RegistryStr())
	}
	creds, credErr := credentials.Read(credentials.Config{
		Username:     cfg.Username,
		Password:     cfg.Password,
		RegistryAuth: cfg.RegistryAuth,
		Registries:   regs,
		GitHubToken:  j.facts.GitHubToken,
		GitHubActor:  j.facts.GitHubActor,
		DockerConfig: j.env.DockerConfig,
	})
	// Masked before anything else is logged, so no later line can show
	// them: even when the tags or the credentials are wrong.
	for _, s := range creds.Secrets() {
		j.log.Mask(s)
	}
	if tagErr != nil {
		return nil, badInput(tagErr)
	}
	if credErr != nil {
		return nil, badInput(credErr)
	}
	for _, d := range dups {
		j.log.Warnf("%s", d)
	}
	tags, err := allowInsecure(taglist.Tags(items), cfg.Insecure)
	if err != nil {
		return nil, badInput(err)
	}
	for _, reg := range cfg.Insecure {
		j.log.Warnf("insecure-registries: TLS certificates of %s are not checked, and plain HTTP is allowed: anyone on the network path can read or change what is pushed there", reg)
	}
	regs = distinct(regs)
	for _, reg := range creds.Unused() {
		j.log.Warnf("registry-auth names %s, but no tag is bound for it: check the registry's name (tags name %s)", reg, strings.Join(regs, ", "))
	}
	if debug {
		// Only when asked: finding the source may run a Docker credential
		// helper, which the push itself runs again.
		for _, reg := range regs {
			j.log.Debugf("credentials for %s: %s", reg, creds.Source(reg))
		}
	}

	transport, err := pusher.NewTransport(pusher.TLS{CAFile: cfg.CAFile, Insecure: cfg.Insecure})
	if err != nil {
		return nil, badInput(err)
	}
	keychain := creds.Keychain()
	opts := []pusher.Option{
		pusher.WithConcurrency(cfg.Concurrency),
		pusher.WithAdaptive(cfg.Adaptive),
		pusher.WithOverwrite(cfg.Overwrite),
		pusher.WithRetry(cfg.MaxAttempts, cfg.RetryDelay, cfg.MaxRetryDelay),
		pusher.WithTimeout(cfg.Timeout),
		pusher.WithUserAgent("tagpush/" + j.env.Version),
		pusher.WithKeychain(keychain),
		pusher.WithTransport(transport),
		pusher.WithEvents(events(j.log)),
	}
	p, err := pusher.New(append(opts, j.env.PusherOptions...)...)
	if err != nil {
		return nil, badInput(err)
	}
	d := j.facts.Docker
	srcOpts := source.Options{
		Keychain:  keychain,
		Transport: transport,
		Referrers: cfg.Referrers,
		Platform:  cfg.Platform,
		Docker:    source.Docker{Host: d.Host, TLSVerify: d.TLSVerify, CertPath: d.CertPath, Context: d.Context, ConfigDir: d.ConfigDir, Home: d.Home},
		Export: func(p source.ExportProgress) {
			j.log.Infof("%s: exporting from the Docker engine: %s of about %s", p.Image, bytes(p.Written), bytes(p.Size))
		},
	}
	pl := &plan{cfg: cfg, items: items, tags: tags, pusher: p}
	if lines == nil {
		// One image: found now, so that a wrong source is bad input and
		// nothing is pushed; a Docker engine's export runs in the push.
		prep, err := source.Prepare(ctx, cfg.Source, srcOpts)
		if err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, badInput(err)
		}
		pl.images = []pusher.Image{{Name: cfg.Source, Tags: tags, Open: pl.opener(j, cfg.Source, prep.Open)}}
	} else if pl.images, err = j.images(pl, lines, tags, srcOpts); err != nil {
		return nil, badInput(err)
	}
	j.logPlan(pl)
	return pl, nil
}

// opener opens one image of the plan when the push asks for it, logs what
// it opened, and keeps it to be closed (its export removed) when the run
// ends.
func (pl *plan) opener(j *job, spec string, open func(context.Context) (*source.Image, error)) func(context.Context) (remote.Taggable, []pusher.Referrer, error) {
	return func(ctx context.Context) (remote.Taggable, []pusher.Referrer, error) {
		start := time.Now()
		img, err := open(ctx)
		if err != nil {
			return nil, nil, err
		}
		pl.mu.Lock()
		pl.opened = append(pl.opened, img)
		pl.mu.Unlock()
		if len(pl.images) > 1 {
			j.log.Infof("%s: %s, opened in %s", spec, img.Description, report.Duration(time.Since(start)))
		} else {
			j.log.Infof("opened %s in %s", img.Description, report.Duration(time.Since(start)))
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

// images are the images input's images: every source is checked before any
// is opened (a wrong one is bad input, and nothing is pushed), and each opens
// as the push runs, beside the others' uploads.
func (j *job) images(pl *plan, lines []taglist.Image, tags []name.Tag, o source.Options) ([]pusher.Image, error) {
	var errs []error
	for _, l := range lines {
		if err := source.Check(l.Source); err != nil {
			errs = append(errs, fmt.Errorf("images line %d: %w", l.Line, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// tags are the items' tags, in order, with insecure registries allowed.
	var out []pusher.Image
	next := 0
	for _, l := range lines {
		spec := l.Source
		out = append(out, pusher.Image{Name: spec, Tags: tags[next : next+len(l.Items)], Open: pl.opener(j, spec, func(ctx context.Context) (*source.Image, error) {
			return source.Open(ctx, spec, o)
		})})
		next += len(l.Items)
	}
	return out, nil
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

func (j *job) push(ctx context.Context, pl *plan) (*pusher.Report, error) {
	start := time.Now()
	rep := pl.pusher.PushAll(ctx, pl.images)
	j.log.Infof("%s in %s", report.Headline(rep), report.Duration(time.Since(start)))
	return rep, nil
}

// dryRun checks what can be checked without writing content (each
// destination answers, takes the credentials for a push, and opens an upload
// session, which is cancelled), then prints the plan. A failed check is exit
// 1: a dry run that says "would push" to a dead port proves nothing.
func (j *job) dryRun(ctx context.Context, pl *plan) error {
	failed := pl.pusher.Check(ctx, pl.tags)
	checked := make(map[name.Repository]bool)
	for _, t := range pl.tags {
		if checked[t.Repository] {
			continue
		}
		checked[t.Repository] = true
		if err := failed[t.Repository]; err != nil {
			j.log.Failf("tagpush: dry run: "+t.Repository.String(), "%s: %s", t.Repository, pusher.Summary(err))
			j.log.Debugf("%s: %s", t.Repository, quote.OneLine(err.Error()))
		} else {
			j.log.Infof("%s: registry answers, credentials accepted for push", t.Repository)
		}
	}
	for _, t := range pl.tags {
		j.log.Infof("  would push %s", t)
	}
	if len(failed) > 0 {
		j.log.Infof("dry run: nothing pushed; %d of %d repositories failed the check", len(failed), len(checked))
		return &failedError{"dry run check failed"}
	}
	j.log.Infof("dry run: nothing pushed; every check passed")
	return nil
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
	if len(pl.images) > 1 {
		what = fmt.Sprintf("%d images", len(pl.images))
	}
	j.log.Infof("pushing %s to %d tag(s) in %d repositor%s on %s; concurrency %d per registry (%s), up to %d attempt(s) per tag",
		what, len(pl.tags), len(repos), plural(len(repos), "y", "ies"),
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

func events(log ci.Logger) pusher.Events {
	return pusher.Events{
		TagDone: func(r pusher.Result) { log.Infof("%s", report.LogLine(r)) },
		Retry: func(r pusher.Retry) {
			log.Infof("retrying %s: attempt %d failed (%s): %s; next attempt in %s", r.Tag, r.Attempt, r.Fault, quote.OneLine(fmt.Sprint(r.Err)), report.Duration(r.Wait))
		},
		LimitChange: func(c pusher.LimitChange) {
			why := "registry healthy again"
			if c.Overload {
				why = "registry overloaded (5xx/429/timeout)"
			}
			log.Infof("%s: concurrency %d -> %d (%s)", c.Registry, c.Old, c.New, why)
		},
		Progress: func(p pusher.Progress) {
			log.Infof("uploaded %s of %s", bytes(p.Complete), bytes(p.Total))
		},
	}
}

func bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// debugWriter turns go-containerregistry's log lines into debug lines.
type debugWriter struct{ log ci.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debugf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

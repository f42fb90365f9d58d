// Package job runs one tagpush job end to end: it reads the configuration from
// the front end, opens the source, parses the tags, pushes through the pusher
// and writes the results where the front end wants them. It decides the exit code.
package job

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	stdlog "log"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/logs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sethvargo/go-githubactions"

	"github.com/tagpush/tagpush/config"
	"github.com/tagpush/tagpush/credentials"
	"github.com/tagpush/tagpush/pusher"
	"github.com/tagpush/tagpush/queue"
	"github.com/tagpush/tagpush/report"
	"github.com/tagpush/tagpush/source"
	"github.com/tagpush/tagpush/taglist"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitFailed   = 1
	ExitBadInput = 2
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

// Run runs the job and returns the process exit code.
func Run(ctx context.Context, env Env) int {
	fe := config.Detect(env.Getenv)
	log := newLogger(fe, env, false)
	cfg, err := config.Load(env.Args, env.Getenv, fe, env.Stdout)
	if errors.Is(err, config.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		return badInput(fe, env, log, err)
	}
	log = newLogger(fe, env, cfg.Debug)
	if cfg.Debug {
		// go-containerregistry reports each blob it finds, mounts or pushes
		// through its package-level loggers.
		logs.Progress = stdlog.New(debugWriter{log}, "", 0)
		logs.Warn = stdlog.New(debugWriter{log}, "warning: ", 0)
	}
	creds := credentials.Config{
		Username:     cfg.Username,
		Password:     cfg.Password,
		RegistryAuth: cfg.RegistryAuth,
		Getenv:       env.Getenv,
		DockerConfig: env.DockerConfig,
	}
	// Masked before anything else is logged, so no later line can show them.
	for _, s := range credentials.Secrets(creds) {
		log.Mask(s)
	}

	items, dups, err := taglist.Parse(cfg.Tags, cfg.Repository)
	if err != nil {
		return badInput(fe, env, log, err)
	}
	for _, d := range dups {
		log.Warnf("%s", d)
	}
	tags := taglist.Tags(items)
	tags, err = allowInsecure(tags, cfg.Insecure)
	if err != nil {
		return badInput(fe, env, log, err)
	}
	for _, reg := range cfg.Insecure {
		log.Warnf("insecure-registries: TLS certificates of %s are not checked, and plain HTTP is allowed: anyone on the network path can read or change what is pushed there", reg)
	}
	for _, t := range tags {
		creds.Registries = append(creds.Registries, t.RegistryStr())
	}
	transport, err := pusher.NewTransport(pusher.TLS{CAFile: cfg.CAFile, Insecure: cfg.Insecure})
	if err != nil {
		return badInput(fe, env, log, err)
	}
	keychain, err := credentials.Keychain(creds)
	if err != nil {
		return badInput(fe, env, log, err)
	}
	img, err := source.Open(ctx, cfg.Source, source.Options{
		Keychain:   keychain,
		Transport:  transport,
		Referrers:  cfg.Referrers,
		Platform:   cfg.Platform,
		DockerHost: env.Getenv("DOCKER_HOST"),
	})
	if err != nil {
		return badInput(fe, env, log, err)
	}
	logPlan(log, img, tags, cfg)
	for _, it := range items {
		log.Debugf("tag from line %d: %s", it.Line, it.Tag)
	}
	opts := []pusher.Option{
		pusher.WithConcurrency(cfg.Concurrency),
		pusher.WithAdaptive(cfg.Adaptive),
		pusher.WithOverwrite(cfg.Overwrite),
		pusher.WithRetry(cfg.MaxAttempts, cfg.RetryDelay, cfg.MaxRetryDelay),
		pusher.WithTimeout(cfg.Timeout),
		pusher.WithUserAgent("tagpush/" + env.Version),
		pusher.WithKeychain(keychain),
		pusher.WithTransport(transport),
		pusher.WithEvents(events(log)),
	}
	p, err := pusher.New(append(opts, env.PusherOptions...)...)
	if err != nil {
		return badInput(fe, env, log, err)
	}
	if cfg.DryRun {
		return dryRun(ctx, log, p, tags)
	}
	start := time.Now()
	refs := make([]pusher.Referrer, len(img.Referrers))
	for i, ref := range img.Referrers {
		refs[i] = pusher.Referrer{Taggable: ref.Taggable, Tag: ref.Tag}
		what := "referrer " + ref.Digest.String()
		if ref.Tag != "" {
			what = "referrer tag " + ref.Tag
		}
		log.Infof("with %s", what)
	}
	rep, err := p.Push(ctx, img.Taggable, tags, refs...)
	if err != nil {
		log.Failf("tagpush: cannot read the source", "%v (nothing was pushed)", err)
		return ExitBadInput
	}
	log.Infof("%s in %s", report.Headline(rep), report.Duration(time.Since(start)))

	if err := publish(fe, env, log, rep); err != nil {
		log.Failf("tagpush: cannot write results", "%v", err)
		return ExitFailed
	}
	if allOK(rep) {
		return ExitOK
	}
	if cfg.FailOnError || ctx.Err() != nil {
		return ExitFailed
	}
	return ExitOK
}

// badInput reports a configuration error where the person will look (the
// log, and the run page: GitHub's job summary, the Bitbucket result line)
// and returns the exit code for it. Nothing was pushed.
func badInput(fe config.FrontEnd, env Env, log logger, err error) int {
	msg := err.Error() + " (nothing was pushed)"
	log.Failf("tagpush: bad input", "%s", msg)
	switch fe {
	case config.GitHub:
		if env.Getenv("GITHUB_STEP_SUMMARY") != "" {
			action := githubactions.New(githubactions.WithGetenv(env.Getenv), githubactions.WithWriter(io.Discard))
			md := "### tagpush: bad input\n\n" + markdownQuote(msg) + "\n\nSee `tagpush --help` or the action's inputs.\n"
			if serr := call(func() { action.AddStepSummary(md) }); serr != nil {
				log.Warnf("write job summary: %v", serr)
			}
		}
	case config.Bitbucket:
		fmt.Fprintln(env.Stdout, colored(env, "✖ Failed: bad input: "+report.OneLine(msg), "31"))
	}
	return ExitBadInput
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

// dryRun checks what can be checked without writing content (each
// destination answers, takes the credentials for a push, and opens an upload
// session, which is cancelled), then prints the plan. Exit 1 when a check
// failed: a dry run that says "would push" to a dead port proves nothing.
func dryRun(ctx context.Context, log logger, p *pusher.Pusher, tags []name.Tag) int {
	failed := p.Check(ctx, tags)
	checked := make(map[name.Repository]bool)
	for _, t := range tags {
		if checked[t.Repository] {
			continue
		}
		checked[t.Repository] = true
		if err := failed[t.Repository]; err != nil {
			log.Failf("tagpush: dry run: "+t.Repository.String(), "%s: %s", t.Repository, report.OneLine(err.Error()))
		} else {
			log.Infof("%s: registry answers, credentials accepted for push", t.Repository)
		}
	}
	for _, t := range tags {
		log.Infof("  would push %s", t)
	}
	if len(failed) > 0 {
		log.Infof("dry run: nothing pushed; %d of %d repositories failed the check", len(failed), len(checked))
		return ExitFailed
	}
	log.Infof("dry run: nothing pushed; every check passed")
	return ExitOK
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

func newLogger(fe config.FrontEnd, env Env, debug bool) logger {
	if fe == config.GitHub {
		return &githubLogger{action: githubactions.New(githubactions.WithGetenv(env.Getenv), githubactions.WithWriter(env.Stdout)), debug: debug}
	}
	return &plainLogger{w: env.Stderr, debug: debug}
}

func logPlan(log logger, img *source.Image, tags []name.Tag, cfg *config.Config) {
	repos := make(map[string]bool)
	regs := make(map[string]bool)
	for _, t := range tags {
		repos[t.Repository.String()] = true
		regs[t.RegistryStr()] = true
	}
	mode := "adaptive"
	if !cfg.Adaptive {
		mode = "fixed"
	}
	log.Infof("pushing %s to %d tag(s) in %d repositor%s on %s; concurrency %d (%s), up to %d attempt(s) per tag",
		img.Description, len(tags), len(repos), plural(len(repos), "y", "ies"),
		strings.Join(slices.Sorted(maps.Keys(regs)), ", "), cfg.Concurrency, mode, cfg.MaxAttempts)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func events(log logger) pusher.Events {
	return pusher.Events{
		TagDone: func(r pusher.Result) { log.Infof("%s", report.LogLine(r)) },
		Retry: func(r pusher.Retry) {
			log.Infof("retrying %s: attempt %d failed (%s): %s; next attempt in %s", r.Tag, r.Attempt, r.Fault, report.OneLine(fmt.Sprint(r.Err)), report.Duration(r.Wait))
		},
		LimitChange: func(c queue.Change) {
			why := "registry healthy again"
			if c.Cause == queue.Overload {
				why = "registry overloaded (5xx/429/timeout)"
			}
			log.Infof("%s: concurrency %d -> %d (%s)", c.Name, c.Old, c.New, why)
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
type debugWriter struct{ log logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debugf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

package job

import (
	"context"
	"errors"
	stdlog "log"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/logs"

	"github.com/tagpush/tagpush/ci"
	"github.com/tagpush/tagpush/config"
	"github.com/tagpush/tagpush/credentials"
	"github.com/tagpush/tagpush/pusher"
	"github.com/tagpush/tagpush/report"
	"github.com/tagpush/tagpush/source"
	"github.com/tagpush/tagpush/taglist"
)

// plan reads and checks everything a push needs, in the order a person
// fixes it: configuration, destinations, credentials, warnings, the pusher,
// the sources. Each step is its own function; a failed one is bad input and
// nothing is pushed.
func (j *job) plan(ctx context.Context) (*plan, error) {
	cfg, err := j.configure()
	if err != nil {
		return nil, err
	}
	d, err := destinations(cfg)
	// Credentials are read (and their secrets masked) before a tag error
	// is reported: no later line may show them.
	creds, credErr := j.credentials(cfg, d)
	if err != nil {
		return nil, badInput(err)
	}
	if credErr != nil {
		return nil, badInput(credErr)
	}
	tags, err := allowInsecure(taglist.Tags(d.items), cfg.Insecure)
	if err != nil {
		return nil, badInput(err)
	}
	j.warn(cfg, d, creds)
	p, srcOpts, err := j.pusher(cfg, creds)
	if err != nil {
		return nil, badInput(err)
	}
	pl := &plan{cfg: cfg, items: d.items, tags: tags, pusher: p.pusher, events: p.events}
	if pl.images, err = j.sources(ctx, pl, d.lines, srcOpts); err != nil {
		return nil, err
	}
	j.logPlan(pl)
	return pl, nil
}

// configure reads the inputs (refusing one mistyped), the flags and the
// configuration, and turns the debug log on when asked.
func (j *job) configure() (*config.Config, error) {
	inputs, err := j.sys.Inputs(config.Inputs())
	if err != nil {
		return nil, badInput(err)
	}
	strays, unknown := ci.Strays(j.sys, ci.Env{Getenv: j.env.Getenv, Environ: j.env.Environ}, config.Inputs())
	if len(strays) > 0 {
		return nil, badInput(errors.Join(strays...))
	}
	for _, w := range unknown {
		j.log.Warnf("%s", w)
	}
	stdin := j.env.Stdin
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	cfg, err := config.Load(j.env.Args, inputs, j.env.Stdout, stdin)
	if errors.Is(err, config.ErrHelp) {
		return nil, err
	}
	if err != nil {
		return nil, badInput(err)
	}
	if cfg.Debug || j.facts.Debug {
		cfg.Debug = true
		j.log = j.sys.Logger(true)
		// go-containerregistry reports each blob it finds, mounts or pushes
		// through its package-level loggers.
		logs.Progress = stdlog.New(debugWriter{j.log}, "", 0)
		logs.Warn = stdlog.New(debugWriter{j.log}, "warning: ", 0)
	}
	return cfg, nil
}

// dests are a run's destinations: every tag, and with the images input its
// lines; the registries the tags and sources name.
type dests struct {
	items   []taglist.Item
	lines   []taglist.Image
	dups    []taglist.Duplicate
	regs    []string // the tags' registries, in order, repeated
	sources []string // the registries registry: sources read from
}

// destinations parses the tags (or the images input). The registries are
// known even when a tag is bad, for the credentials' masking.
func destinations(cfg *config.Config) (dests, error) {
	var (
		d   dests
		err error
	)
	if cfg.Images != "" {
		d.lines, d.dups, err = taglist.ParseImages(cfg.Images)
		for _, l := range d.lines {
			d.items = append(d.items, l.Items...)
		}
	} else {
		d.items, d.dups, err = taglist.Parse(cfg.Tags, cfg.Repository)
	}
	for _, it := range d.items {
		d.regs = append(d.regs, it.Tag.RegistryStr())
	}
	for _, spec := range append([]string{cfg.Source}, sourcesOf(d.lines)...) {
		if reg := source.Registry(spec); reg != "" {
			d.sources = append(d.sources, reg)
		}
	}
	return d, err
}

// credentials reads which credentials go to which registry, and masks
// their secrets at once, even when they are wrong.
func (j *job) credentials(cfg *config.Config, d dests) (*credentials.Set, error) {
	creds, err := credentials.Read(credentials.Config{
		Username:     cfg.Username,
		Password:     cfg.Password,
		RegistryAuth: cfg.RegistryAuth,
		Registries:   d.regs,
		Sources:      d.sources,
		GitHubToken:  j.facts.GitHubToken,
		GitHubActor:  j.facts.GitHubActor,
		DockerConfig: j.env.DockerConfig,
	})
	for _, s := range creds.Secrets() {
		j.log.Mask(s)
	}
	return creds, err
}

// warn says what is allowed but likely a mistake: a tag given twice, a
// registry whose certificates are not checked, credentials or insecure
// registries no tag is bound for; with debug, each registry's credential
// source.
func (j *job) warn(cfg *config.Config, d dests, creds *credentials.Set) {
	for _, dup := range d.dups {
		j.log.Warnf("%s", dup)
	}
	for _, reg := range cfg.Insecure {
		j.log.Warnf("insecure-registries: TLS certificates of %s are not checked, and plain HTTP is allowed: anyone on the network path can read or change what is pushed there", reg)
	}
	regs := distinct(d.regs)
	for _, reg := range creds.Unused() {
		j.log.Warnf("registry-auth names %s, but no tag is bound for it and no source is read from it: check the registry's name (tags name %s)", reg, strings.Join(regs, ", "))
	}
	for _, w := range creds.Twice() {
		j.log.Warnf("%s", w)
	}
	for _, reg := range cfg.Insecure {
		if !slices.Contains(regs, reg) {
			j.log.Warnf("insecure-registries names %s, but no tag is bound for it: check the registry's name (tags name %s)", reg, strings.Join(regs, ", "))
		}
	}
	if cfg.Debug {
		// Only when asked: finding the source may run a Docker credential
		// helper, which the push itself runs again.
		for _, reg := range regs {
			j.log.Debugf("credentials for %s: %s", reg, creds.Source(reg))
		}
	}
}

// built is the pusher a plan pushes with, and its event log.
type built struct {
	pusher *pusher.Pusher
	events *eventLog
}

// pusher builds the pusher from the configuration, and the options the
// sources open with (the same transport and credentials).
func (j *job) pusher(cfg *config.Config, creds *credentials.Set) (built, source.Options, error) {
	transport, err := pusher.NewTransport(pusher.TLS{CAFile: cfg.CAFile, Insecure: cfg.Insecure})
	if err != nil {
		return built{}, source.Options{}, err
	}
	keychain := creds.Keychain()
	ev := newEventLog(j.log)
	opts := []pusher.Option{
		pusher.WithConcurrency(cfg.Concurrency),
		pusher.WithAdaptive(cfg.Adaptive),
		pusher.WithOverwrite(cfg.Overwrite),
		pusher.WithAtomic(cfg.Atomic),
		pusher.WithRetry(cfg.MaxAttempts, cfg.RetryDelay, cfg.MaxRetryDelay),
		pusher.WithTimeout(cfg.Timeout),
		pusher.WithUserAgent("tagpush/" + j.env.Version),
		pusher.WithKeychain(keychain),
		pusher.WithTransport(transport),
		pusher.WithEvents(ev.events()),
		pusher.WithOptionNames(j.sys.Name),
	}
	p, err := pusher.New(append(opts, j.env.PusherOptions...)...)
	if err != nil {
		return built{}, source.Options{}, err
	}
	dk := j.facts.Docker
	srcOpts := source.Options{
		Keychain:  keychain,
		Transport: transport,
		Referrers: cfg.Referrers,
		Platform:  cfg.Platform,
		Docker:    source.Docker{Host: dk.Host, TLSVerify: dk.TLSVerify, CertPath: dk.CertPath, Context: dk.Context, ConfigDir: dk.ConfigDir, Home: dk.Home},
		Export: func(p source.ExportProgress) {
			j.log.Infof("%s: exporting from the Docker engine: %s of about %s", p.Image, report.Bytes(p.Written), report.Bytes(p.Size))
		},
	}
	return built{pusher: p, events: ev}, srcOpts, nil
}

// sources finds every source before anything is pushed: the one image of
// source and tags, or each line of the images input.
func (j *job) sources(ctx context.Context, pl *plan, lines []taglist.Image, o source.Options) ([]pusher.Image, error) {
	if lines != nil {
		return j.images(ctx, pl, lines, pl.tags, o)
	}
	// A Docker engine's export runs in the push, beside the uploads.
	prep, err := source.Prepare(ctx, pl.cfg.Source, o)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, badInput(err)
	}
	return []pusher.Image{{Name: pl.cfg.Source, Tags: pl.tags, OpenHeld: pl.opener(j, pl.cfg.Source, prep), ID: prep.ID}}, nil
}

// Package credentials decides which credentials go to which registry: the
// registry-auth list, then username/password, then the Docker config (and its
// credential helpers), then GITHUB_TOKEN for ghcr.io, then anonymous. It reads
// what the user gave once, lists every secret so the log can mask them before
// anything is logged, and says where each registry's credentials come from.
package credentials

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tagpush/tagpush/internal/option"
)

// Config is what the user gave, and what the CI system holds.
type Config struct {
	Username string
	Password string
	// RegistryAuth is a list, one REGISTRY=USER:TOKEN per line.
	RegistryAuth string
	// Registries are the destination registries; username and password go to
	// them, and only when there is exactly one.
	Registries []string
	// Sources are the registries images are read from (registry: sources):
	// registry-auth may name them, but username and password never go there.
	Sources []string
	// GitHubToken and GitHubActor go to ghcr.io when nothing else does.
	GitHubToken, GitHubActor string
	// DockerConfig is the keychain for docker config files and credential
	// helpers; nil means go-containerregistry's default keychain.
	DockerConfig authn.Keychain
}

// Set is the credentials of a run, read once.
type Set struct {
	static  map[string]entry
	twice   []string // registry-auth lines that name a registry again
	secrets []string
	docker  authn.Keychain
	github  githubKeychain
	regs    []string
}

// entry is one registry's static credentials and where they came from.
type entry struct {
	auth authn.AuthConfig
	from string
}

// Read reads c. The Set is never nil: its Secrets are there even when the
// configuration is wrong, so they can be masked before the error is logged.
// Errors never contain a secret.
func Read(c Config) (*Set, error) {
	s := &Set{
		static: make(map[string]entry),
		docker: c.DockerConfig,
		github: githubKeychain{token: strings.TrimSpace(c.GitHubToken), actor: strings.TrimSpace(c.GitHubActor)},
		regs:   append(slices.Clone(c.Registries), c.Sources...),
	}
	if s.docker == nil {
		s.docker = authn.DefaultKeychain
	}
	add := func(v string) {
		if v = strings.TrimSpace(v); v != "" {
			s.secrets = append(s.secrets, v)
		}
	}
	add(c.Password)
	add(s.github.token)
	var errs []error
	for i, line := range strings.Split(strings.ReplaceAll(c.RegistryAuth, "\r\n", "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		reg, user, token, ok := parseAuthLine(line)
		if !ok {
			// A line of the wrong shape ("user:TOKEN=ghcr.io", a missing
			// part) may hold its secret anywhere: every part of it is a
			// secret, and the line is never quoted.
			for _, part := range strings.FieldsFunc(line, func(r rune) bool { return r == '=' || r == ':' }) {
				add(part)
			}
			errs = append(errs, option.Errorf(option.Ref("registry-auth"), fmt.Sprintf(" line %d: expected REGISTRY=USER:TOKEN, with a registry host before \"=\" (the line is not shown: it may hold a secret)", i+1)))
			continue
		}
		add(token)
		if prev, ok := s.static[reg]; ok {
			s.twice = append(s.twice, fmt.Sprintf("registry-auth line %d names %s again (after %s): the later line is used", i+1, reg, prev.from))
		}
		s.static[reg] = entry{authn.AuthConfig{Username: user, Password: token}, fmt.Sprintf("registry-auth line %d (user %s)", i+1, user)}
	}
	if len(errs) > 0 {
		return s, errors.Join(errs...)
	}

	user, pass := strings.TrimSpace(c.Username), strings.TrimSpace(c.Password)
	switch {
	case (user == "") != (pass == ""):
		return s, option.Errorf(option.Ref("username"), " and ", option.Ref("password"), " go together: give both or neither")
	case user != "":
		regs := make(map[string]bool)
		for _, r := range c.Registries {
			regs[r] = true
		}
		if len(regs) != 1 {
			return s, fmt.Errorf("username/password given, but the tags name %d registries (%s): use registry-auth (REGISTRY=USER:TOKEN per line) to say which credentials go where",
				len(regs), strings.Join(slices.Sorted(maps.Keys(regs)), ", "))
		}
		for r := range regs {
			if _, set := s.static[r]; !set {
				s.static[r] = entry{authn.AuthConfig{Username: user, Password: pass}, "username/password (user " + user + ")"}
			}
		}
	}
	return s, nil
}

// Secrets returns every secret, for masking.
func (s *Set) Secrets() []string { return s.secrets }

// Keychain returns the keychain: the static credentials for their registries
// only, then the Docker config, then GITHUB_TOKEN for ghcr.io.
func (s *Set) Keychain() authn.Keychain {
	static := make(staticKeychain, len(s.static))
	for r, e := range s.static {
		static[r] = e.auth
	}
	return authn.NewMultiKeychain(static, s.docker, s.github)
}

// Source says where registry's credentials come from, never what they are:
// "registry-auth line 2 (user ci)", "Docker config", "GITHUB_TOKEN (user
// octocat)", or "none (anonymous)".
func (s *Set) Source(registry string) string {
	if e, ok := s.static[registry]; ok {
		return e.from
	}
	reg, err := name.NewRegistry(registry)
	if err != nil {
		return "none (anonymous)"
	}
	if a, err := s.docker.Resolve(reg); err == nil && a != authn.Anonymous {
		return "Docker config (~/.docker/config.json, DOCKER_CONFIG or a credential helper)"
	}
	if a, _ := s.github.Resolve(reg); a != authn.Anonymous {
		return "GITHUB_TOKEN (user " + s.github.user() + ")"
	}
	return "none (anonymous)"
}

// Twice lists the registry-auth lines that name a registry another line
// named: one of them is most often stale.
func (s *Set) Twice() []string { return s.twice }

// Unused lists the registry-auth registries that no destination or source
// names: most often a typo in the registry's name.
func (s *Set) Unused() []string {
	var out []string
	for r, e := range s.static {
		if strings.HasPrefix(e.from, "registry-auth") && !slices.Contains(s.regs, r) {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return out
}

// parseAuthLine reads one REGISTRY=USER:TOKEN line. ok is false for any
// other shape, including a part before "=" that is not a registry host.
func parseAuthLine(line string) (reg, user, token string, ok bool) {
	r, cred, ok1 := strings.Cut(line, "=")
	u, t, ok2 := strings.Cut(cred, ":")
	r, u, t = strings.TrimSpace(r), strings.TrimSpace(u), strings.TrimSpace(t)
	if !ok1 || !ok2 || r == "" || u == "" || t == "" || strings.Contains(r, ":") && !hostPort(r) || !isASCII(r) {
		return "", "", "", false
	}
	registry, err := name.NewRegistry(r, name.StrictValidation)
	if err != nil {
		return "", "", "", false
	}
	return registry.RegistryStr(), u, t, true
}

// isASCII is a host of ASCII only: a look-alike pasted from a document is
// no registry's name.
func isASCII(s string) bool {
	for _, r := range s {
		if r > 127 {
			return false
		}
	}
	return true
}

// hostPort is "host:port" with a numeric port: the one place a registry
// host has a colon.
func hostPort(s string) bool {
	_, port, ok := strings.Cut(s, ":")
	if !ok || port == "" {
		return false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// staticKeychain answers for the registries it was given, and only those.
type staticKeychain map[string]authn.AuthConfig

func (s staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if cfg, ok := s[r.RegistryStr()]; ok {
		return authn.FromConfig(cfg), nil
	}
	return authn.Anonymous, nil
}

// githubKeychain gives ghcr.io the workflow's GITHUB_TOKEN.
type githubKeychain struct{ token, actor string }

func (g githubKeychain) user() string {
	if g.actor == "" {
		return "github-actions"
	}
	return g.actor
}

func (g githubKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() != "ghcr.io" || g.token == "" {
		return authn.Anonymous, nil
	}
	return &authn.Basic{Username: g.user(), Password: g.token}, nil
}

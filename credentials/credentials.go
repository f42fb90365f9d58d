// Package credentials decides which credentials go to which registry: the
// registry-auth list, then username/password, then the Docker config (and its
// credential helpers), then GITHUB_TOKEN for ghcr.io, then anonymous. It also
// lists every secret so the front end can mask them before anything is logged.
package credentials

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Config is what the user gave.
type Config struct {
	Username string
	Password string
	// RegistryAuth is a list, one REGISTRY=USER:TOKEN per line.
	RegistryAuth string
	// Registries are the destination registries; username and password go to
	// them, and only when there is exactly one.
	Registries []string
	// Getenv reads GITHUB_TOKEN and GITHUB_ACTOR.
	Getenv func(string) string
	// DockerConfig is the keychain for docker config files and credential
	// helpers; nil means go-containerregistry's default keychain.
	DockerConfig authn.Keychain
}

// Secrets returns every secret in c, for masking. It never fails, so that
// even a configuration that Keychain rejects has its secrets masked first.
func Secrets(c Config) []string {
	var out []string
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	add(c.Password)
	for _, line := range strings.Split(strings.ReplaceAll(c.RegistryAuth, "\r\n", "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, token, ok := parseAuthLine(line); ok {
			add(token)
			continue
		}
		// A line of the wrong shape ("user:TOKEN=ghcr.io", a missing part)
		// may hold its secret anywhere: every part of it is masked.
		for _, part := range strings.FieldsFunc(line, func(r rune) bool { return r == '=' || r == ':' }) {
			add(part)
		}
	}
	if c.Getenv != nil {
		add(c.Getenv("GITHUB_TOKEN"))
	}
	return out
}

// parseAuthLine reads one REGISTRY=USER:TOKEN line. ok is false for any
// other shape, including a part before "=" that is not a registry host.
func parseAuthLine(line string) (reg, user, token string, ok bool) {
	r, cred, ok1 := strings.Cut(line, "=")
	u, t, ok2 := strings.Cut(cred, ":")
	r, u, t = strings.TrimSpace(r), strings.TrimSpace(u), strings.TrimSpace(t)
	if !ok1 || !ok2 || r == "" || u == "" || t == "" || strings.Contains(r, ":") && !hostPort(r) {
		return "", "", "", false
	}
	registry, err := name.NewRegistry(r, name.StrictValidation)
	if err != nil {
		return "", "", "", false
	}
	return registry.RegistryStr(), u, t, true
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

// Keychain returns the keychain for c. Its errors never contain a secret.
func Keychain(c Config) (authn.Keychain, error) {
	static := make(map[string]authn.AuthConfig)
	for i, line := range strings.Split(strings.ReplaceAll(c.RegistryAuth, "\r\n", "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		reg, user, token, ok := parseAuthLine(line)
		if !ok {
			// Never quote the line: written the wrong way round, its first
			// part is the secret.
			return nil, fmt.Errorf("registry-auth line %d: expected REGISTRY=USER:TOKEN, with a registry host before \"=\" (the line is not shown: it may hold a secret)", i+1)
		}
		static[reg] = authn.AuthConfig{Username: user, Password: token}
	}

	user, pass := strings.TrimSpace(c.Username), strings.TrimSpace(c.Password)
	switch {
	case (user == "") != (pass == ""):
		return nil, fmt.Errorf("username and password go together: give both or neither")
	case user != "":
		regs := make(map[string]bool)
		for _, r := range c.Registries {
			regs[r] = true
		}
		if len(regs) != 1 {
			return nil, fmt.Errorf("username/password given, but the tags name %d registries (%s): use registry-auth (REGISTRY=USER:TOKEN per line) to say which credentials go where",
				len(regs), strings.Join(slices.Sorted(maps.Keys(regs)), ", "))
		}
		for r := range regs {
			if _, set := static[r]; !set {
				static[r] = authn.AuthConfig{Username: user, Password: pass}
			}
		}
	}

	docker := c.DockerConfig
	if docker == nil {
		docker = authn.DefaultKeychain
	}
	getenv := c.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	return authn.NewMultiKeychain(staticKeychain(static), docker, githubKeychain{getenv}), nil
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
type githubKeychain struct{ getenv func(string) string }

func (g githubKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	token := g.getenv("GITHUB_TOKEN")
	if r.RegistryStr() != "ghcr.io" || token == "" {
		return authn.Anonymous, nil
	}
	actor := g.getenv("GITHUB_ACTOR")
	if actor == "" {
		actor = "github-actions"
	}
	return &authn.Basic{Username: actor, Password: token}, nil
}

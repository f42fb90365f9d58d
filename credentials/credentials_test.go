package credentials

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func resolve(t *testing.T, kc authn.Keychain, registry string) authn.AuthConfig {
	t.Helper()
	r, err := name.NewRegistry(registry)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kc.Resolve(r)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return *cfg
}

func keychain(t *testing.T, c Config) authn.Keychain {
	t.Helper()
	set, err := Read(c)
	if err != nil {
		t.Fatal(err)
	}
	return set.Keychain()
}

func TestKeychainSendsEachCredentialOnlyToItsRegistry(t *testing.T) {
	kc := keychain(t, Config{
		RegistryAuth: "ghcr.io=octo:ghp_one\n# comment\n\nquay.io = robot : tok:with:colons\r\n",
		GitHubToken:  "gh_token", GitHubActor: "octocat",
		DockerConfig: authn.NewMultiKeychain(),
	})
	tests := []struct {
		registry, user, pass string
	}{
		{"ghcr.io", "octo", "ghp_one"}, // registry-auth wins over GITHUB_TOKEN
		{"quay.io", "robot", "tok:with:colons"},
		{"docker.io", "", ""},
		{"127.0.0.1:5000", "", ""},
	}
	for _, tt := range tests {
		got := resolve(t, kc, tt.registry)
		if got.Username != tt.user || got.Password != tt.pass {
			t.Errorf("%s got %q/%q, want %q/%q", tt.registry, got.Username, got.Password, tt.user, tt.pass)
		}
	}
}

func TestGitHubTokenForGHCR(t *testing.T) {
	kc := keychain(t, Config{GitHubToken: "gh_token", GitHubActor: "octocat", DockerConfig: authn.NewMultiKeychain()})
	if got := resolve(t, kc, "ghcr.io"); got.Username != "octocat" || got.Password != "gh_token" {
		t.Errorf("ghcr.io got %+v", got)
	}
	if got := resolve(t, kc, "quay.io"); got.Password != "" {
		t.Errorf("GITHUB_TOKEN went to quay.io")
	}
}

func TestUsernamePasswordGoToTheOneRegistry(t *testing.T) {
	kc := keychain(t, Config{Username: "me", Password: "s3cret", Registries: []string{"127.0.0.1:5000", "127.0.0.1:5000"}, DockerConfig: authn.NewMultiKeychain()})
	if got := resolve(t, kc, "127.0.0.1:5000"); got.Username != "me" || got.Password != "s3cret" {
		t.Errorf("got %+v", got)
	}
	if got := resolve(t, kc, "ghcr.io"); got.Password != "" {
		t.Errorf("password went to ghcr.io")
	}
}

func TestKeychainErrorsHideSecrets(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{RegistryAuth: "ghcr.io:topsecret"}, "registry-auth line 1: expected REGISTRY=USER:TOKEN"},
		{Config{RegistryAuth: "ghcr.io=topsecret"}, "registry-auth line 1"},
		{Config{RegistryAuth: "ghcr.io=u:"}, "registry-auth line 1"},
		{Config{RegistryAuth: "user:topsecret=ghcr.io"}, "registry-auth line 1: expected REGISTRY=USER:TOKEN"},
		{Config{RegistryAuth: "user:topsecret=ghcr.io:443"}, "registry-auth line 1: expected REGISTRY=USER:TOKEN"},
		{Config{RegistryAuth: "# comment\nghcr.io=u:t\nuser:topsecret=quay.io"}, "registry-auth line 3"},
		{Config{Password: "topsecret"}, "username and password go together"},
		{Config{Username: "u", Password: "topsecret", Registries: []string{"ghcr.io", "quay.io"}}, "the tags name 2 registries (ghcr.io, quay.io): use registry-auth"},
	}
	for _, tt := range tests {
		set, err := Read(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "topsecret") {
			t.Errorf("Read(%+v) error = %v, want %q without the secret", tt.cfg.RegistryAuth, err, tt.want)
		}
		// Even a configuration Read rejects has its secret listed, so it
		// is masked before the error is logged.
		if strings.Contains(tt.cfg.RegistryAuth+tt.cfg.Password, "topsecret") && !slices.Contains(set.Secrets(), "topsecret") {
			t.Errorf("Read(%+v): secrets %v lack the token", tt.cfg.RegistryAuth, set.Secrets())
		}
	}
}

func TestSecrets(t *testing.T) {
	set, _ := Read(Config{Password: "p1", RegistryAuth: "a.io=u:t1\nb.io=u:t2:x\nbad\n# note", GitHubToken: "g1"})
	got := set.Secrets()
	want := "p1,g1,t1,t2:x,bad"
	if strings.Join(got, ",") != want {
		t.Errorf("Secrets = %v, want %s", got, want)
	}
	// Written the wrong way round, the token comes first: every part of
	// the line is masked, so the token is.
	set, _ = Read(Config{RegistryAuth: "ci:topsecret=ghcr.io:443"})
	got = set.Secrets()
	if !slices.Contains(got, "topsecret") {
		t.Errorf("Secrets of a line written the wrong way round = %v, want the token among them", got)
	}
}

func TestSourceNamesWhereCredentialsComeFrom(t *testing.T) {
	set, err := Read(Config{
		RegistryAuth: "a.io=ci:tok1\nunused.io=ci:tok2",
		Registries:   []string{"a.io", "ghcr.io", "b.io"},
		GitHubToken:  "gh_token", GitHubActor: "octocat",
		DockerConfig: authn.NewMultiKeychain(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for reg, want := range map[string]string{
		"a.io":    "registry-auth line 1 (user ci)",
		"ghcr.io": "GITHUB_TOKEN (user octocat)",
		"b.io":    "none (anonymous)",
	} {
		got := set.Source(reg)
		if got != want {
			t.Errorf("Source(%s) = %q, want %q", reg, got, want)
		}
		for _, secret := range set.Secrets() {
			if strings.Contains(got, secret) {
				t.Errorf("Source(%s) = %q shows a secret", reg, got)
			}
		}
	}
	if got := set.Unused(); !slices.Equal(got, []string{"unused.io"}) {
		t.Errorf("Unused() = %v, want [unused.io]", got)
	}
}

package job_test

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/job"
)

// everything a user or a later step can see of a run, less the ::add-mask::
// commands, whose whole point is to carry the secret to the runner.
func visible(t *testing.T, r *runner) string {
	t.Helper()
	var parts []string
	for _, line := range strings.Split(r.stdout.String()+r.stderr.String(), "\n") {
		if !strings.HasPrefix(line, "::add-mask::") {
			parts = append(parts, line)
		}
	}
	for _, f := range []string{r.output, r.report} {
		b, err := os.ReadFile(f)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		parts = append(parts, string(b))
	}
	return strings.Join(parts, "\n")
}

func TestCredentialsForAnHtpasswdRegistry(t *testing.T) {
	const secret = "s3cr3t-Pa55word"
	reg := testregistry.ForTest(t, testregistry.Options{Users: map[string]string{"ci": secret}})
	tags := reg.Host + "/acme/app:1\n" + reg.Host + "/acme/app:2"

	t.Run("right password pushes", func(t *testing.T) {
		r := newRunner(t, map[string]string{"source": ociSource, "tags": tags, "username": "ci", "password": secret})
		mustRun(t, r)
		if !strings.Contains(r.stdout.String(), "::add-mask::"+secret+"\n") {
			t.Errorf("the password was not masked")
		}
		if strings.Contains(visible(t, r), secret) {
			t.Errorf("the password appears in the log, outputs or summary")
		}
		auth := remote.WithAuth(&authn.Basic{Username: "ci", Password: secret})
		if got := resolves(t, reg, "acme/app:2", auth); got != sourceDigest(t) {
			t.Errorf("acme/app:2 = %s, want %s", got, sourceDigest(t))
		}
	})

	t.Run("wrong password fails once with a clear 401", func(t *testing.T) {
		const wrong = "wrong-Pa55word-xyz"
		r := newRunner(t, map[string]string{"source": ociSource, "tags": tags, "username": "ci", "password": wrong, "max-attempts": "4"})
		if code := r.run(t); code != job.ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
		out := r.outputs(t)
		if !strings.Contains(out["results"], `"attempts":1,`) || strings.Contains(out["results"], `"attempts":2`) {
			t.Errorf("a 401 was retried: %s", out["results"])
		}
		if !strings.Contains(out["results"], "authentication failed (401) for "+reg.Host+": check username/password or token scope") {
			t.Errorf("results do not say what to check: %s", out["results"])
		}
		if strings.Contains(visible(t, r), wrong) {
			t.Errorf("the password appears in the log, outputs or summary")
		}
	})

	t.Run("no credentials is a 401 too", func(t *testing.T) {
		r := newRunner(t, map[string]string{"source": ociSource, "tags": tags})
		if code := r.run(t); code != job.ExitFailed {
			t.Fatalf("exit %d, want 1", code)
		}
	})
}

func TestRegistryAuthGoesOnlyToItsRegistry(t *testing.T) {
	const tokenA, tokenB = "tokenA-9f8e7d", "tokenB-1a2b3c"
	a := testregistry.ForTest(t, testregistry.Options{Users: map[string]string{"alice": tokenA}})
	b := testregistry.ForTest(t, testregistry.Options{Users: map[string]string{"bob": tokenB}})
	r := newRunner(t, map[string]string{
		"source":        ociSource,
		"tags":          a.Host + "/acme/app:1\n" + b.Host + "/acme/app:1",
		"registry-auth": a.Host + "=alice:" + tokenA + "\n" + b.Host + "=bob:" + tokenB + "\n",
	})
	mustRun(t, r)
	if users := a.Faults.Stats().AuthUsers; users["bob"] != 0 || users["alice"] == 0 {
		t.Errorf("registry A saw users %v", users)
	}
	if users := b.Faults.Stats().AuthUsers; users["alice"] != 0 || users["bob"] == 0 {
		t.Errorf("registry B saw users %v", users)
	}
	v := visible(t, r)
	for _, s := range []string{tokenA, tokenB} {
		if !strings.Contains(r.stdout.String(), "::add-mask::"+s) {
			t.Errorf("token %s not masked", s)
		}
		if strings.Contains(v, s) {
			t.Errorf("token %s appears in the log, outputs or summary", s)
		}
	}
}

func TestUsernamePasswordWithSeveralRegistriesIsBadInput(t *testing.T) {
	r := newRunner(t, map[string]string{"source": ociSource, "tags": "a.example/x:1\nb.example/x:1", "username": "u", "password": "p4ssw0rd-long"})
	if code := r.run(t); code != job.ExitBadInput {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(r.stdout.String(), "use registry-auth") {
		t.Errorf("log:\n%s", &r.stdout)
	}
}

// With --debug the log says where each registry's credentials come from, so
// a person can tell "wrong token" from "no token"; it never shows a secret.
// A registry-auth entry for a registry no tag names is most often a typo:
// it gets a warning whether or not debug is on.
func TestDebugNamesTheCredentialSourceAndUnusedEntriesWarn(t *testing.T) {
	const token = "tok-5e6f7a8b9c"
	a := testregistry.ForTest(t, testregistry.Options{Users: map[string]string{"alice": token}})
	b := testregistry.ForTest(t, testregistry.Options{})
	r := newRunner(t, map[string]string{
		"source":              ociSource,
		"tags":                a.Host + "/acme/app:1\n" + b.Host + "/acme/app:1",
		"registry-auth":       "registry.typo.example=alice:stale\n" + a.Host + "=alice:" + token + "\nregistry.typo.example=alice:" + token,
		"insecure-registries": "registry.typo.example",
		"debug":               "true",
	})
	mustRun(t, r)
	log := r.stdout.String()
	for _, want := range []string{
		"debug: credentials for " + a.Host + ": registry-auth line 2 (user alice)",
		"debug: credentials for " + b.Host + ": none (anonymous)",
		"::warning::registry-auth names registry.typo.example, but no tag is bound for it",
		"::warning::registry-auth line 3 names registry.typo.example again (after registry-auth line 1 (user alice)): the later line is used",
		"::warning::insecure-registries names registry.typo.example, but no tag is bound for it",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(visible(t, r), token) {
		t.Errorf("the token appears in the log, outputs or summary")
	}
}

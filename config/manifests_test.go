package config

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite action.yml and pipe.yml from the options table")

const (
	actionImage = "Dockerfile"
	pipeImage   = "ghcr.io/tagpush/tagpush:v1"
)

// TestManifestsAreCurrent keeps action.yml and pipe.yml generated from the
// one options table: a changed option without a regenerated file fails here.
func TestManifestsAreCurrent(t *testing.T) {
	for path, want := range map[string]string{"../action.yml": ActionYAML(actionImage), "../pipe.yml": PipeYAML(pipeImage)} {
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s is out of date with config/options.go: run go test ./config -update", path)
		}
	}
}

type actionFile struct {
	Name     string
	Branding struct{ Icon, Color string }
	Inputs   map[string]struct {
		Description string
		Required    bool
		Default     *string
	}
	Outputs map[string]struct{ Description string }
	Runs    struct{ Using, Image string }
}

// TestActionYAMLDeclaresEveryOption parses action.yml as GitHub does and
// checks it against the table: every input with its default, every output.
func TestActionYAMLDeclaresEveryOption(t *testing.T) {
	b, err := os.ReadFile("../action.yml")
	if err != nil {
		t.Fatal(err)
	}
	var a actionFile
	if err := yaml.Unmarshal(b, &a); err != nil {
		t.Fatalf("action.yml: %v", err)
	}
	if a.Runs.Using != "docker" || a.Runs.Image != "Dockerfile" || a.Branding.Icon == "" || a.Branding.Color == "" {
		t.Errorf("runs = %+v, branding = %+v", a.Runs, a.Branding)
	}
	if len(a.Inputs) != len(Options()) {
		t.Errorf("action.yml has %d inputs, the table %d", len(a.Inputs), len(Options()))
	}
	for _, o := range Options() {
		in, ok := a.Inputs[o.Name]
		switch {
		case !ok:
			t.Errorf("input %s missing", o.Name)
		case in.Description == "" || in.Required != o.Required:
			t.Errorf("input %s: %+v", o.Name, in)
		case o.Default == "" && in.Default != nil, o.Default != "" && (in.Default == nil || *in.Default != o.Default):
			t.Errorf("input %s default %v, table %q", o.Name, in.Default, o.Default)
		}
	}
	for _, o := range Outputs() {
		if out, ok := a.Outputs[o.Name]; !ok || out.Description == "" {
			t.Errorf("output %s missing", o.Name)
		}
	}
	if len(a.Outputs) != len(Outputs()) {
		t.Errorf("action.yml has %d outputs, the table %d", len(a.Outputs), len(Outputs()))
	}
}

// TestPipeYAMLDeclaresEveryOption checks pipe.yml's variables against the
// table: the same options in UPPER_SNAKE case with the same defaults, plus DEBUG.
func TestPipeYAMLDeclaresEveryOption(t *testing.T) {
	b, err := os.ReadFile("../pipe.yml")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Name, Image, Description, Category, Repository string
		Variables                                      []struct {
			Name, Description string
			Required          bool
			Default           *string
		}
	}
	if err := yaml.Unmarshal(b, &p); err != nil {
		t.Fatalf("pipe.yml: %v", err)
	}
	if p.Name == "" || p.Image == "" || p.Description == "" || p.Category == "" || p.Repository == "" {
		t.Errorf("pipe.yml header incomplete: %+v", p)
	}
	vars := make(map[string]int)
	for i, v := range p.Variables {
		if _, twice := vars[v.Name]; twice {
			t.Errorf("pipe.yml declares %s twice", v.Name)
		}
		vars[v.Name] = i
	}
	for _, o := range Options() {
		i, ok := vars[o.Variable()]
		if !ok {
			t.Errorf("variable %s missing", o.Variable())
			continue
		}
		v := p.Variables[i]
		if v.Description == "" || v.Required != o.Required || (o.Default != "" && (v.Default == nil || *v.Default != o.Default)) {
			t.Errorf("variable %s = %+v, table %+v", v.Name, v, o)
		}
	}
	if len(p.Variables) != len(Options()) {
		t.Errorf("pipe.yml has %d variables, want %d", len(p.Variables), len(Options()))
	}
}

// The image the pipe and the README name is one the release publishes: the
// release tags the image vX.Y.Z, vX.Y and vX (release.yml), so a major
// version is spelled v1, never 1.
func TestImageTagsAreOnesTheReleasePublishes(t *testing.T) {
	release, err := os.ReadFile("../.github/workflows/release.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(release), "major=${minor%.*}") || !strings.Contains(string(release), "tags: ['v[0-9]+.[0-9]+.[0-9]+']") {
		t.Fatal("release.yml no longer derives the major tag (v1) from a v1.2.3 tag: update this test")
	}
	published := regexp.MustCompile(`^ghcr\.io/tagpush/tagpush:v[0-9]+(\.[0-9]+){0,2}$`)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := os.ReadFile("../pipe.yml")
	if err != nil {
		t.Fatal(err)
	}
	refs := regexp.MustCompile(`ghcr\.io/tagpush/tagpush:[^\s"'`+"`"+`)]+`).FindAllString(string(readme)+string(pipe), -1)
	if len(refs) == 0 {
		t.Fatal("no image reference found in README.md or pipe.yml")
	}
	for _, ref := range refs {
		if !published.MatchString(ref) && !strings.HasSuffix(ref, ":vX.Y.Z") {
			t.Errorf("%s is not a tag the release publishes (vX.Y.Z, vX.Y, vX)", ref)
		}
	}
}

package taglist

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		input string
		repo  string
		want  []string
		lines []int
		dups  int
	}{
		{"newlines", "ghcr.io/acme/app:1.4.2\nghcr.io/acme/app:1.4\n", "", []string{"ghcr.io/acme/app:1.4.2", "ghcr.io/acme/app:1.4"}, []int{1, 2}, 0},
		{"commas", "ghcr.io/acme/app:1, ghcr.io/acme/app:2", "", []string{"ghcr.io/acme/app:1", "ghcr.io/acme/app:2"}, []int{1, 1}, 0},
		{"crlf, blanks, comments", "# release tags\r\n\r\n  ghcr.io/acme/app:1  # major\r\n\r\nghcr.io/acme/app:latest\r\n", "", []string{"ghcr.io/acme/app:1", "ghcr.io/acme/app:latest"}, []int{3, 5}, 0},
		{"bare tags join repository", "1.4.2\n1.4\nlatest", "ghcr.io/acme/app", []string{"ghcr.io/acme/app:1.4.2", "ghcr.io/acme/app:1.4", "ghcr.io/acme/app:latest"}, []int{1, 2, 3}, 0},
		{"mixed bare and full", "1.4\nquay.io/acme/app:1.4", "ghcr.io/acme/app", []string{"ghcr.io/acme/app:1.4", "quay.io/acme/app:1.4"}, []int{1, 2}, 0},
		{"duplicates collapse", "ghcr.io/acme/app:1\nghcr.io/acme/app:1, 1", "ghcr.io/acme/app", []string{"ghcr.io/acme/app:1"}, []int{1}, 2},
		{"loopback registry with port", "127.0.0.1:5000/app:v1", "", []string{"127.0.0.1:5000/app:v1"}, []int{1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, dups, err := Parse(tt.input, tt.repo)
			if err != nil {
				t.Fatal(err)
			}
			if len(items) != len(tt.want) {
				t.Fatalf("got %d items %v, want %v", len(items), items, tt.want)
			}
			for i, it := range items {
				if got := it.Tag.String(); got != tt.want[i] {
					t.Errorf("item %d = %s, want %s", i, got, tt.want[i])
				}
				if it.Line != tt.lines[i] {
					t.Errorf("item %d line = %d, want %d", i, it.Line, tt.lines[i])
				}
			}
			if len(dups) != tt.dups {
				t.Errorf("got %d duplicates %v, want %d", len(dups), dups, tt.dups)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, input, repo string
		line              int
		item, why         string
	}{
		{"digest reference", "ghcr.io/acme/app:1\nghcr.io/acme/app@sha256:" + strings.Repeat("a", 64), "", 2, "ghcr.io/acme/app@sha256:", "give a tag like ghcr.io/acme/app:TAG"},
		{"build metadata, bare", "v1.2.3+build", "ghcr.io/acme/app", 1, "v1.2.3+build", `tag "v1.2.3+build" has "+" (semver build metadata), which registries do not take in a tag: write v1.2.3-build`},
		{"build metadata, full", "ghcr.io/acme/app:v1.2.3+build.7", "", 1, "ghcr.io/acme/app:v1.2.3+build.7", "write v1.2.3-build.7"},
		{"fullwidth host", "ｇｈｃｒ.io/acme/app:1", "", 1, "ｇｈｃｒ.io/acme/app:1", `has "ｇ" at character 1, which is not ASCII`},
		{"cyrillic look-alike", "gһcr.io/acme/app:1", "", 1, "gһcr.io/acme/app:1", `has "һ" at character 2, which is not ASCII`},
		{"tag and digest", "ghcr.io/acme/app:1.4@sha256:" + strings.Repeat("a", 64), "", 1, "ghcr.io/acme/app:1.4@", "drop the @... part and write ghcr.io/acme/app:1.4 "},
		{"port, tag and digest", "localhost:5000/app:1.4@sha256:" + strings.Repeat("a", 64), "", 1, "localhost:5000/app:1.4@", "write localhost:5000/app:1.4 "},
		{"port and digest", "localhost:5000/app@sha256:" + strings.Repeat("a", 64), "", 1, "localhost:5000/app@", "give a tag like localhost:5000/app:TAG"},
		{"bare tag and digest", "1.4@sha256:" + strings.Repeat("a", 64), "ghcr.io/acme/app", 1, "1.4@", "write ghcr.io/acme/app:1.4 "},
		{"third item of a line", "ghcr.io/acme/app:1, ghcr.io/acme/app:2, ghcr.io/acme/app:-x", "", 1, "ghcr.io/acme/app:-x", "tags line 1, item 3: "},
		{"invalid reference", "ghcr.io/acme/app:1\n\nghcr.io/Acme/App:1", "", 3, "ghcr.io/Acme/App:1", "not a valid image reference"},
		{"bare tag without repository", "latest", "", 1, "latest", "set repository (or"},
		{"bad tag characters", "ghcr.io/acme/app:-bad", "", 1, "ghcr.io/acme/app:-bad", "not a valid image reference"},
		{"white space inside", "ghcr.io/acme/app:1 ghcr.io/acme/app:2", "", 1, "ghcr.io/acme/app:1 ghcr.io/acme/app:2", "white space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse(tt.input, tt.repo)
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if perr.Line != tt.line || !strings.Contains(perr.Item, tt.item) || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("err = %v; want line %d, item containing %q, reason containing %q", err, tt.line, tt.item, tt.why)
			}
		})
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# only a comment\n  ,  ,"} {
		if _, _, err := Parse(in, "ghcr.io/acme/app"); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Errorf("Parse(%q) err = %v, want an 'empty' error", in, err)
		}
	}
}

func TestParseBadRepository(t *testing.T) {
	_, _, err := Parse("1.0", "ghcr.io/Bad Repo")
	if err == nil || !strings.Contains(err.Error(), `"ghcr.io/Bad Repo"`) {
		t.Errorf("err = %v, want it to name the repository", err)
	}
}

func BenchmarkParse10000(b *testing.B) {
	var sb strings.Builder
	for i := range 10000 {
		if i%2 == 0 {
			fmt.Fprintf(&sb, "ghcr.io/acme/app:v%d # release\n", i)
		} else {
			fmt.Fprintf(&sb, "v%d,\n", i)
		}
	}
	in := sb.String()
	b.ReportAllocs()
	for b.Loop() {
		items, _, err := Parse(in, "ghcr.io/acme/app")
		if err != nil || len(items) != 10000 {
			b.Fatalf("parsed %d items, err %v", len(items), err)
		}
	}
}

// An item is shown quoted, control characters escaped and a long one cut, so
// a pasted escape sequence or a whole file cannot garble the log.
func TestErrorShowsTheItemSafely(t *testing.T) {
	for _, in := range []string{"ghcr.io/acme/app:1\x1b[2J", "ghcr.io/acme/app:" + strings.Repeat("x", 300) + " y"} {
		_, _, err := Parse(in, "")
		if err == nil {
			t.Fatalf("Parse(%.30q) took it", in)
		}
		msg := err.Error()
		if strings.ContainsRune(msg, '\x1b') || len(msg) > 250 {
			t.Errorf("error for %.30q: %q", in, msg)
		}
	}
}

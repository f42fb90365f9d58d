package ci

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tagpush/tagpush/internal/quote"
)

// bitbucket is a Bitbucket Pipe: UPPER_SNAKE variables (a YAML list arrives
// as NAME_COUNT and NAME_0, NAME_1, ...), a plain log, a coloured result line
// and results.json in the pipe's shared storage.
type bitbucket struct{ base }

func (b *bitbucket) Kind() Kind { return Bitbucket }

// Variable is an input's pipe variable: max-attempts is MAX_ATTEMPTS.
func Variable(input string) string {
	return strings.ToUpper(strings.ReplaceAll(input, "-", "_"))
}

func (b *bitbucket) Inputs(inputs []Input) map[string]string {
	values := make(map[string]string)
	for _, in := range inputs {
		if v := b.variable(in); v != "" {
			values[in.Name] = v
		}
	}
	return values
}

func (b *bitbucket) variable(in Input) string {
	name := Variable(in.Name)
	if in.List {
		if n, err := strconv.Atoi(b.env.Getenv(name + "_COUNT")); err == nil && n > 0 {
			items := make([]string, 0, n)
			for i := range n {
				items = append(items, b.env.Getenv(fmt.Sprintf("%s_%d", name, i)))
			}
			return strings.Join(items, "\n")
		}
	}
	return strings.TrimSpace(b.env.Getenv(name))
}

func (b *bitbucket) Facts() Facts { return b.facts() }

// Logger is plain: Bitbucket masks secured variables itself.
func (b *bitbucket) Logger(debug bool) Logger { return &plainLogger{w: b.env.Stderr, debug: debug} }

func (b *bitbucket) Publish(r Results, _ Logger) error {
	if _, err := io.WriteString(b.env.Stdout, r.Text); err != nil {
		return err
	}
	if dir := b.env.Getenv("BITBUCKET_PIPE_SHARED_STORAGE_DIR"); dir != "" {
		dir = filepath.Join(dir, "tagpush")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		path := filepath.Join(dir, "results.json")
		if err := os.WriteFile(path, []byte(r.JSON+"\n"), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	// The pipe's last line: green on success, red on failure.
	line := b.color("✔ Success: "+r.Headline, "32")
	if !r.OK {
		line = b.color("✖ Failed: "+r.Headline, "31")
	}
	_, err := fmt.Fprintln(b.env.Stdout, line)
	return err
}

func (b *bitbucket) BadInput(message string, _ Logger) {
	fmt.Fprintln(b.env.Stdout, b.color("✖ Failed: bad input: "+quote.OneLine(message), "31"))
}

// color colours the pipe's result line unless NO_COLOR forbids it: a pipe
// never has a terminal, and Bitbucket's log page shows the colours, as the
// official pipes' toolkit prints them.
func (b *bitbucket) color(text, code string) string {
	if b.env.Getenv("NO_COLOR") != "" {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

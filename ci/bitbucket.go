package ci

import (
	"errors"
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

func (b *bitbucket) Name(input string) string { return Variable(input) }

func (b *bitbucket) Inputs(inputs []Input) (map[string]string, error) {
	values := make(map[string]string)
	var errs []error
	for _, in := range inputs {
		v, err := b.variable(in)
		if err != nil {
			errs = append(errs, err)
		}
		if v != "" {
			values[in.Name] = v
		}
	}
	return values, errors.Join(errs...)
}

// variable reads one input: NAME, or, for a list, the YAML list Bitbucket
// hands over as NAME_COUNT, NAME_0, NAME_1... A list with a hole, or both
// forms at once, is an error: half a list must not push half the tags.
func (b *bitbucket) variable(in Input) (string, error) {
	name := Variable(in.Name)
	plain := strings.TrimSpace(b.env.Getenv(name))
	count := strings.TrimSpace(b.env.Getenv(name + "_COUNT"))
	if !in.List || count == "" {
		return plain, nil
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 {
		return "", fmt.Errorf("%s_COUNT: %s is not a whole number", name, quote.Value(count))
	}
	if plain != "" {
		return "", fmt.Errorf("%s and %s_COUNT are both set: give %s as a YAML list or as one value, not both", name, name, name)
	}
	items := make([]string, 0, n)
	var missing []string
	for i := range n {
		item := b.env.Getenv(fmt.Sprintf("%s_%d", name, i))
		if strings.TrimSpace(item) == "" {
			missing = append(missing, fmt.Sprintf("%s_%d", name, i))
		}
		items = append(items, item)
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%s_COUNT is %d, and %s %s missing or empty", name, n, strings.Join(missing, ", "), plural(len(missing), "is", "are"))
	}
	return strings.Join(items, "\n"), nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
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

// BadInput is the pipe's red result line only: Bitbucket shows one log, and
// the message said twice is noise.
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

package pusher_test

import (
	"io"
	"testing"

	"github.com/tagpush/tagpush/config"
	"github.com/tagpush/tagpush/pusher"
)

// The options table's defaults are what a Pusher does when nobody sets
// anything: the demo, the bench and library users get the same behaviour as
// a run with no inputs. A default changed in one place only fails here.
func TestDefaultsMatchTheTable(t *testing.T) {
	cfg, err := config.Load([]string{"--source", "x", "--tags", "y"}, nil, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pusher.New()
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]any{
		"concurrency":     cfg.Concurrency,
		"adaptive":        cfg.Adaptive,
		"overwrite":       cfg.Overwrite,
		"atomic":          cfg.Atomic,
		"max-attempts":    cfg.MaxAttempts,
		"retry-delay":     cfg.RetryDelay,
		"max-retry-delay": cfg.MaxRetryDelay,
		"timeout":         cfg.Timeout,
	}
	uses := pusher.Settings(p)
	if len(uses) != len(table) {
		t.Fatalf("the pusher has %d settings, the test compares %d", len(uses), len(table))
	}
	for name, want := range table {
		if got := uses[name]; got != want {
			t.Errorf("%s: the table's default is %v, a Pusher with no options uses %v", name, want, got)
		}
	}
	for _, o := range config.Options() {
		if _, ok := uses[o.Name]; ok && o.Default == "" {
			t.Errorf("%s: the table has no default", o.Name)
		}
	}
}

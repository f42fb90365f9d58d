package option

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	flag := func(n string) string { return "--" + n }
	one := Errorf(Ref("concurrency"), ": 0 is less than 1")
	two := Errorf(Ref("max-retry-delay"), " (1s) is less than ", Ref("retry-delay"), " (2s)")
	// A value a person gave that reads like an option stays as it is.
	val := Errorf(Ref("tags"), ` line 1: "timeout" is not a reference`)
	err := fmt.Errorf("bad input: %w", &wrapper{errors.Join(one, two, val)})
	got := Render(err, flag)
	want := "bad input: --concurrency: 0 is less than 1\n--max-retry-delay (1s) is less than --retry-delay (2s)\n" + `--tags line 1: "timeout" is not a reference`
	if got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
	if plain := err.Error(); !strings.HasPrefix(plain, "bad input: concurrency: 0") {
		t.Errorf("Error() = %q", plain)
	}
}

type wrapper struct{ err error }

func (w *wrapper) Error() string { return w.err.Error() }
func (w *wrapper) Unwrap() error { return w.err }

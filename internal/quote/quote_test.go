package quote

import (
	"strings"
	"testing"
	"time"
)

func TestValue(t *testing.T) {
	long := strings.Repeat("a", 500)
	tests := []struct{ in, want string }{
		{"ghcr.io/acme/app", `"ghcr.io/acme/app"`},
		{"bad\n::add-mask::x", `"bad\n::add-mask::x"`},
		{"esc\x1b[31mred", `"esc\x1b[31mred"`},
		{long, `"` + strings.Repeat("a", Max) + `"… (500 characters)`},
		{strings.Repeat("é", 70), `"` + strings.Repeat("é", Max) + `"… (70 characters)`},
	}
	for _, tt := range tests {
		if got := Value(tt.in); got != tt.want {
			t.Errorf("Value(%.20q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.ContainsAny(Value(tt.in), "\n\r\x1b") {
			t.Errorf("Value(%.20q) holds a control character", tt.in)
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Minute:        "10m",
		30 * time.Second:        "30s",
		200 * time.Millisecond:  "200ms",
		90 * time.Second:        "1m30s",
		2 * time.Hour:           "2h",
		time.Hour + time.Minute: "1h1m",
		// Rounded to what matters at its size.
		1234567891 * time.Nanosecond: "1.23s",
		1234567 * time.Nanosecond:    "1ms",
		61700 * time.Millisecond:     "1m2s",
		500 * time.Microsecond:       "500µs",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestCut(t *testing.T) {
	if got := Cut("✅✅✅✅", 3); got != "✅✅…" {
		t.Errorf("Cut = %q", got)
	}
	if got := Cut("short", 5); got != "short" {
		t.Errorf("Cut = %q", got)
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"a\nb\rc\r\nd\te", "a b c d e"},
		{"bell\a and escape \x1b[2J", "bell and escape [2J"},
		{"  padded\n\n", "padded"},
		{"unicode ✅ stays", "unicode ✅ stays"},
	}
	for _, tt := range tests {
		if got := OneLine(tt.in); got != tt.want {
			t.Errorf("OneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

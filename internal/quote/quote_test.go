package quote

import (
	"strings"
	"testing"
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

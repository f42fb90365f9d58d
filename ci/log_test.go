package ci

import "testing"

func TestNeutralise(t *testing.T) {
	tests := []struct{ in, want string }{
		{"retrying x: 500 boom", "retrying x: 500 boom"},
		{"a::b", "a::b"},
		{"boom\n::add-mask::secret", "boom\n> ::add-mask::secret"},
		{"boom\r::error::x", "boom\n> ::error::x"},
		{"boom\r\n  ::stop-commands::t", "boom\n>   ::stop-commands::t"},
		{"::warning::first line too", "> ::warning::first line too"},
		{"boom\n\t::debug::x", "boom\n> \t::debug::x"},
	}
	for _, tt := range tests {
		if got := neutralise(tt.in); got != tt.want {
			t.Errorf("neutralise(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

package spell

import "testing"

func TestDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"dry-run", "dry-run", 0}, {"dryrun", "dry-run", 1}, {"sorce", "source", 1},
		{"DRYRUN", "DRY_RUN", 1}, {"tags", "tag", 1}, {"kitten", "sitting", 3}, {"", "abc", 3},
	} {
		if got := Distance(tt.a, tt.b); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

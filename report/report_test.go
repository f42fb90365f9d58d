package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tagpush/tagpush/pusher"
)

const digest = "sha256:2128de341499548ec15d2a6fef7059cd80df6b2142d1d65d772fb2cc7965300e"

func sample(t testing.TB, n int) *pusher.Report {
	t.Helper()
	rep := &pusher.Report{Digest: digest, Stats: pusher.Stats{
		Faults:          map[pusher.Fault]int{pusher.Fault5xx: 3, pusher.Fault429: 1},
		Retries:         4,
		BackoffWait:     3200 * time.Millisecond,
		PeakConcurrency: map[string]int{"ghcr.io": 4},
		FinalLimit:      map[string]int{"ghcr.io": 2},
	}}
	for i := range n {
		tag, _ := name.NewTag(fmt.Sprintf("ghcr.io/acme/app:v%d", i))
		r := pusher.Result{Tag: tag, Status: pusher.StatusPushed, Digest: digest, Attempts: 1, Duration: 1234 * time.Millisecond}
		if i%3 == 2 {
			r = pusher.Result{Tag: tag, Status: pusher.StatusFailed, Attempts: 5, Duration: time.Second, Err: errors.New("ghcr.io kept failing | line one\nline two")}
		}
		rep.Results = append(rep.Results, r)
	}
	return rep
}

func TestJSONShape(t *testing.T) {
	rep := sample(t, 3)
	s, err := JSON(rep.Results)
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(s), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, k := range []string{"tag", "status", "digest", "attempts", "duration_ms", "error"} {
		if _, ok := rows[0][k]; !ok {
			t.Errorf("row lacks %q: %v", k, rows[0])
		}
	}
	if rows[0]["tag"] != "ghcr.io/acme/app:v0" || rows[0]["status"] != "pushed" || rows[0]["duration_ms"] != 1234.0 || rows[0]["error"] != "" {
		t.Errorf("row 0 = %v", rows[0])
	}
	if rows[2]["status"] != "failed" || rows[2]["attempts"] != 5.0 || !strings.Contains(rows[2]["error"].(string), "kept failing") {
		t.Errorf("row 2 = %v", rows[2])
	}
}

func TestMarkdownTableIsWellFormed(t *testing.T) {
	md := Markdown(sample(t, 3))
	var rows []string
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| ✅") || strings.HasPrefix(line, "| ❌") {
			rows = append(rows, line)
		}
	}
	if len(rows) != 3 {
		t.Fatalf("%d tag rows in:\n%s", len(rows), md)
	}
	for _, r := range rows {
		// An escaped pipe is not a cell boundary.
		if cells := strings.Count(strings.ReplaceAll(r, `\|`, ""), "|"); cells != 7 {
			t.Errorf("row has %d cell borders, want 7: %s", cells, r)
		}
	}
	for _, want := range []string{"2 of 3 tags pushed, 1 failed", "`2128de341499`", "kept failing \\| line one line two", "5xx: 3", "429: 1", "time waiting in backoff: 3.2s", "ghcr.io: peak writes in flight 4, limit at end 2"} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
}

func TestRefs(t *testing.T) {
	rep := sample(t, 4)
	if got := Refs(rep.Results, pusher.StatusFailed); got != "ghcr.io/acme/app:v2" {
		t.Errorf("failed = %q", got)
	}
	if got := Refs(rep.Results, pusher.StatusPushed); got != "ghcr.io/acme/app:v0\nghcr.io/acme/app:v1\nghcr.io/acme/app:v3" {
		t.Errorf("pushed = %q", got)
	}
}

func BenchmarkRender1000(b *testing.B) {
	rep := sample(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := JSON(rep.Results); err != nil {
			b.Fatal(err)
		}
		_ = Markdown(rep)
		_ = Table(rep)
	}
}

func TestMarkdownGroupsByRegistry(t *testing.T) {
	rep := sample(t, 2)
	other, _ := name.NewTag("quay.io/acme/app:v0")
	rep.Results = append(rep.Results, pusher.Result{Tag: other, Status: pusher.StatusPushed, Digest: digest, Attempts: 1})
	md := Markdown(rep)
	gh, quay := strings.Index(md, "#### ghcr.io: 2 of 2 pushed"), strings.Index(md, "#### quay.io: 1 of 1 pushed")
	if gh < 0 || quay < gh || strings.Index(md, "`quay.io/acme/app:v0`") < quay {
		t.Errorf("rows not grouped by registry:\n%s", md)
	}
	if strings.Contains(Markdown(sample(t, 2)), "####") {
		t.Error("a single registry got a group heading")
	}
}

// Reads that were retried are counted apart from writes: they cost no write.
func TestStatsLineCountsReadsApart(t *testing.T) {
	line := StatsLine(pusher.Stats{
		Faults:      map[pusher.Fault]int{pusher.Fault5xx: 2},
		ReadFaults:  map[pusher.Fault]int{pusher.Fault5xx: 3},
		Retries:     2,
		ReadRetries: 3,
	})
	for _, want := range []string{"faults seen: 5xx: 2", "failed reads: 5xx: 3", "retries: 2 of tags, 0 of blob uploads, 3 of reads"} {
		if !strings.Contains(line, want) {
			t.Errorf("stats line %q lacks %q", line, want)
		}
	}
	if strings.Contains(StatsLine(pusher.Stats{}), "reads") {
		t.Error("a run with no failed read mentions reads")
	}
}

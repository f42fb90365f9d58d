package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tagpush/tagpush/config"
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

// The outputs are the options table's, each with its value.
func TestRenderOutputs(t *testing.T) {
	rep := sample(t, 4)
	res, err := Render(rep)
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]string)
	for _, o := range res.Outputs {
		got[o.Name] = o.Value
	}
	if len(res.Outputs) != len(config.Outputs()) {
		t.Errorf("%d outputs, the table has %d", len(res.Outputs), len(config.Outputs()))
	}
	want := map[string]string{
		"failed":    "ghcr.io/acme/app:v2",
		"pushed":    "ghcr.io/acme/app:v0\nghcr.io/acme/app:v1\nghcr.io/acme/app:v3",
		"unchanged": "",
		"dry-run":   "false",
		"digest":    digest,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("output %s = %q, want %q", k, got[k], v)
		}
	}
	if res.OK || !strings.HasPrefix(res.Headline, "3 of 4 tags pushed, 1 failed") {
		t.Errorf("OK %v, headline %q", res.OK, res.Headline)
	}
}

// A plan says what a push would do, in the same shapes, marked as a dry run.
func TestRenderPlan(t *testing.T) {
	tag := func(s string) name.Tag { t.Helper(); tg, _ := name.NewTag(s); return tg }
	rep := &pusher.Report{DryRun: true, Digest: digest, Results: []pusher.Result{
		{Tag: tag("ghcr.io/acme/app:1"), Status: pusher.StatusWouldPush, Digest: digest},
		{Tag: tag("ghcr.io/acme/app:2"), Status: pusher.StatusWouldOverwrite, Digest: digest, Previous: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
		{Tag: tag("ghcr.io/acme/app:3"), Status: pusher.StatusUnchanged, Digest: digest},
		{Tag: tag("ghcr.io/acme/app:4"), Status: pusher.StatusWouldFail, Err: &pusher.TagError{Summary: "exists at sha256:bbbb, and overwrite is false: a push would leave it and fail", Cause: errors.New("overwrite is false")}},
	}, Uploads: []pusher.Upload{{Repository: tag("ghcr.io/acme/app:1").Repository, Blobs: 3, Missing: 2, MissingBytes: 3 << 20}}}
	res, err := Render(rep)
	if err != nil {
		t.Fatal(err)
	}
	if want := "dry run of 4 tags, nothing written: 1 would push, 1 would overwrite, 1 unchanged, 1 would fail"; res.Headline != want {
		t.Errorf("headline %q, want %q", res.Headline, want)
	}
	if res.OK {
		t.Error("a plan with a tag that would fail is OK")
	}
	outs := make(map[string]string)
	for _, o := range res.Outputs {
		outs[o.Name] = o.Value
	}
	if outs["dry-run"] != "true" || outs["failed"] != "ghcr.io/acme/app:4" || outs["pushed"] != "ghcr.io/acme/app:1\nghcr.io/acme/app:2\nghcr.io/acme/app:3" {
		t.Errorf("outputs %v", outs)
	}
	for _, want := range []string{"would overwrite", "ghcr.io/acme/app: lacks 2 of 3 blobs (3.0 MiB)", "A dry run"} {
		if !strings.Contains(res.Markdown, want) {
			t.Errorf("summary lacks %q:\n%s", want, res.Markdown)
		}
	}
	if !strings.Contains(res.Text, "lacks 2 of 3 blobs") || strings.Contains(res.Text, "peak writes") {
		t.Errorf("text:\n%s", res.Text)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(res.JSON), &rows); err != nil {
		t.Fatal(err)
	}
	if rows[1]["status"] != "would overwrite" || rows[1]["previous_digest"] == nil || rows[0]["previous_digest"] != nil {
		t.Errorf("results %v", rows)
	}

	// With several images, each heading counts what the plan says: no tag
	// holds a digest that was not written. They said "1 of 1 tags at the
	// digest (1 would push)".
	rep.Images = []pusher.ImageResult{{Name: "oci:a", Digest: digest}, {Name: "oci:b", Digest: digest}}
	for i := range rep.Results {
		rep.Results[i].Image = "oci:a"
	}
	rep.Results[3].Image = "oci:b"
	res, err = Render(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"oci:a: 3 tags: 1 would push, 1 would overwrite, 1 unchanged", "oci:b: 1 tag: 1 would fail"} {
		if !strings.Contains(res.Markdown, want) || !strings.Contains(res.Text, want) {
			t.Errorf("headings lack %q:\n%s\n%s", want, res.Markdown, res.Text)
		}
	}
	if strings.Contains(res.Markdown, "at the digest") {
		t.Errorf("a plan's heading says tags are at the digest:\n%s", res.Markdown)
	}
}

// Each tag's line says what became of it once: no "<nil>", no attempts for
// a tag that needed none, no cause repeated.
func TestLogLine(t *testing.T) {
	tag, _ := name.NewTag("ghcr.io/acme/app:1.4")
	exists := &pusher.TagError{Summary: "exists at sha256:aaaa; overwrite is false, so it was left as it is", Cause: errors.New("overwrite is false")}
	tests := []struct {
		r    pusher.Result
		want string
	}{
		{pusher.Result{Tag: tag, Status: pusher.StatusPushed, Digest: digest, Attempts: 1, Duration: 1234567 * time.Microsecond},
			"pushed ghcr.io/acme/app:1.4 (2128de341499) in 1.23s"},
		{pusher.Result{Tag: tag, Status: pusher.StatusPushed, Digest: digest, Attempts: 3, Duration: time.Second, Previous: "sha256:bbbbbbbbbbbbbbbb"},
			"pushed ghcr.io/acme/app:1.4 (2128de341499) in 1s, replacing bbbbbbbbbbbb, 3 attempts"},
		{pusher.Result{Tag: tag, Status: pusher.StatusUnchanged, Digest: digest, Attempts: 0},
			"unchanged ghcr.io/acme/app:1.4: already at 2128de341499, nothing written"},
		{pusher.Result{Tag: tag, Status: pusher.StatusFailed, Attempts: 0, Err: exists},
			"failed ghcr.io/acme/app:1.4 after 0s: exists at sha256:aaaa; overwrite is false, so it was left as it is"},
		{pusher.Result{Tag: tag, Status: pusher.StatusCancelled, Attempts: 1, Duration: 2 * time.Second, Err: &pusher.TagError{Summary: "the run was cancelled after 1 attempt(s)", Cause: errors.New("context canceled")}},
			"cancelled ghcr.io/acme/app:1.4 after 2s, 1 attempt made"},
		{pusher.Result{Tag: tag, Status: pusher.StatusWouldFail, Err: exists},
			"would fail ghcr.io/acme/app:1.4: exists at sha256:aaaa; overwrite is false, so it was left as it is"},
	}
	for _, tt := range tests {
		got := LogLine(tt.r)
		if got != tt.want {
			t.Errorf("LogLine(%s) =\n  %q\nwant\n  %q", tt.r.Status, got, tt.want)
		}
		for _, bad := range []string{"<nil>", "overwrite is false: overwrite is false"} {
			if strings.Contains(got, bad) {
				t.Errorf("LogLine(%s) = %q has %q", tt.r.Status, got, bad)
			}
		}
	}
	if got := exists.Error(); got != exists.Summary {
		t.Errorf("TagError.Error() = %q repeats what the summary says", got)
	}
}

// A run that met no fault and wrote nothing has no statistics to show.
func TestStatsLineOnlyWhatHappened(t *testing.T) {
	quiet := pusher.Stats{PeakConcurrency: map[string]int{"ghcr.io": 0}, FinalLimit: map[string]int{"ghcr.io": 4}}
	if got := StatsLine(quiet); got != "" {
		t.Errorf("StatsLine of a quiet run = %q", got)
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
	gh, quay := strings.Index(md, "#### ghcr.io: 2 of 2 tags at the digest (2 pushed)"), strings.Index(md, "#### quay.io: 1 of 1 tags at the digest (1 pushed)")
	if gh < 0 || quay < gh || strings.Index(md, "`quay.io/acme/app:v0`") < quay {
		t.Errorf("rows not grouped by registry:\n%s", md)
	}
	if strings.Contains(Markdown(sample(t, 2)), "####") {
		t.Error("a single registry got a group heading")
	}
	// A re-run wrote nothing: its heading does not say "pushed".
	for i := range rep.Results {
		rep.Results[i].Status = pusher.StatusUnchanged
	}
	if md := Markdown(rep); !strings.Contains(md, "#### ghcr.io: 2 of 2 tags at the digest (2 unchanged)") {
		t.Errorf("unchanged tags under a heading that does not say so:\n%s", md)
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
	for _, want := range []string{"faults seen: 5xx: 2", "failed reads: 5xx: 3", "retries: 2 of tags, 3 of reads"} {
		if !strings.Contains(line, want) {
			t.Errorf("stats line %q lacks %q", line, want)
		}
	}
	if strings.Contains(StatsLine(pusher.Stats{}), "reads") {
		t.Error("a run with no failed read mentions reads")
	}
}

// Package report renders the results of a run for people and machines: the
// JSON results output, the markdown job summary, the terminal table and the
// per-tag log lines. It only formats; writing them is the front end's job.
package report

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/pusher"
)

// Entry is one tag in the JSON results.
type Entry struct {
	Tag string `json:"tag"`
	// Source is the image's source, as given.
	Source     string `json:"source"`
	Status     string `json:"status"`
	Digest     string `json:"digest"`
	Attempts   int    `json:"attempts"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error"`
	// Referrers is how many signatures, attestations and SBOMs went with the
	// image to the tag's repository.
	Referrers int `json:"referrers,omitempty"`
}

// Entries converts results, keeping their order.
func Entries(results []pusher.Result) []Entry {
	out := make([]Entry, len(results))
	for i, r := range results {
		out[i] = Entry{
			Tag:        r.Tag.String(),
			Source:     r.Image,
			Status:     string(r.Status),
			Digest:     r.Digest,
			Attempts:   r.Attempts,
			DurationMS: r.Duration.Milliseconds(),
			Referrers:  r.Referrers,
		}
		if r.Err != nil {
			out[i].Error = pusher.Summary(r.Err)
		}
	}
	return out
}

// JSON is the results output: an array in input order.
func JSON(results []pusher.Result) (string, error) {
	b, err := json.Marshal(Entries(results))
	if err != nil {
		return "", fmt.Errorf("encode results: %w", err)
	}
	return string(b), nil
}

// Digests is the digests output: each image's digest by its source, as a
// JSON object; an image that could not be read has none.
func Digests(rep *pusher.Report) (string, error) {
	m := make(map[string]string, len(rep.Images))
	for _, img := range rep.Images {
		if img.Digest != "" {
			m[img.Name] = img.Digest
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode digests: %w", err)
	}
	return string(b), nil
}

// Refs returns the references whose status is s, one per line.
func Refs(results []pusher.Result, s pusher.Status) string {
	var refs []string
	for _, r := range results {
		if r.Status == s {
			refs = append(refs, r.Tag.String())
		}
	}
	return strings.Join(refs, "\n")
}

// Count returns how many results have status s.
func Count(results []pusher.Result, s pusher.Status) int {
	n := 0
	for _, r := range results {
		if r.Status == s {
			n++
		}
	}
	return n
}

// ShortDigest is the first 12 hex digits of a digest, as registries' UIs show it.
func ShortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) < 12 {
		return d
	}
	return hex[:12]
}

// Duration rounds a duration for people.
func Duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// Headline says how the run went in one line.
func Headline(rep *pusher.Report) string {
	pushed := Count(rep.Results, pusher.StatusPushed)
	s := fmt.Sprintf("%d of %d tags pushed", pushed, len(rep.Results))
	if n := Count(rep.Results, pusher.StatusUnchanged); n > 0 {
		s = fmt.Sprintf("%d of %d tags at the digest (%d pushed, %d unchanged)", pushed+n, len(rep.Results), pushed, n)
	}
	if n := Count(rep.Results, pusher.StatusFailed); n > 0 {
		s += fmt.Sprintf(", %d failed", n)
	}
	if n := Count(rep.Results, pusher.StatusCancelled); n > 0 {
		s += fmt.Sprintf(", %d cancelled", n)
	}
	if n := len(rep.Images); n > 1 {
		s += fmt.Sprintf(" (%d images)", n)
	}
	return s
}

// byImage splits the results per image, in the order of rep.Images.
func byImage(rep *pusher.Report) [][]pusher.Result {
	out := make([][]pusher.Result, len(rep.Images))
	at := make(map[string]int, len(rep.Images))
	for i, img := range rep.Images {
		at[img.Name] = i
	}
	for _, r := range rep.Results {
		i := at[r.Image]
		out[i] = append(out[i], r)
	}
	return out
}

// imageLine is the heading of one image's rows: how many of its tags hold it,
// and its digest (or why it could not be read).
func imageLine(img pusher.ImageResult, rs []pusher.Result) string {
	ok := Count(rs, pusher.StatusPushed) + Count(rs, pusher.StatusUnchanged)
	s := fmt.Sprintf("%s: %d of %d tags at the digest", img.Name, ok, len(rs))
	switch {
	case img.Err != nil:
		s += ", not read: " + pusher.Summary(img.Err)
	case img.Digest != "":
		s += " " + ShortDigest(img.Digest)
	}
	return s
}

// StatsLine describes the faults, retries and concurrency of a run, or is empty
// when there is nothing to say.
func StatsLine(s pusher.Stats) string {
	var parts []string
	faults := func(label string, m map[pusher.Fault]int) {
		if len(m) == 0 {
			return
		}
		var fs []string
		for _, f := range slices.Sorted(maps.Keys(m)) {
			fs = append(fs, fmt.Sprintf("%s: %d", f, m[f]))
		}
		parts = append(parts, label+strings.Join(fs, ", "))
	}
	faults("faults seen: ", s.Faults)
	faults("failed reads: ", s.ReadFaults)
	retries := fmt.Sprintf("retries: %d of tags, %d of blob uploads", s.Retries, s.BlobRetries)
	if s.ReadRetries > 0 {
		retries += fmt.Sprintf(", %d of reads", s.ReadRetries)
	}
	parts = append(parts, retries, "time waiting in backoff: "+Duration(s.BackoffWait))
	for _, reg := range slices.Sorted(maps.Keys(s.PeakConcurrency)) {
		parts = append(parts, fmt.Sprintf("%s: peak writes in flight %d, limit at end %d", reg, s.PeakConcurrency[reg], s.FinalLimit[reg]))
	}
	return strings.Join(parts, " · ")
}

var statusIcon = map[pusher.Status]string{
	pusher.StatusPushed:    "✅",
	pusher.StatusUnchanged: "☑️",
	pusher.StatusFailed:    "❌",
	pusher.StatusCancelled: "⏹️",
}

// mdCell makes s safe inside a markdown table cell.
func mdCell(s string) string {
	return strings.ReplaceAll(quote.OneLine(s), "|", `\|`)
}

// Markdown is the job summary: a headline, one row per tag (grouped per
// image when there are several, else by registry when the tags name
// several), and the run's faults.
func Markdown(rep *pusher.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### tagpush: %s\n\n", Headline(rep))
	if len(rep.Images) > 1 {
		for i, rs := range byImage(rep) {
			img := rep.Images[i]
			fmt.Fprintf(&b, "#### %s\n\n", mdCell(imageLine(img, rs)))
			if img.Digest != "" {
				fmt.Fprintf(&b, "Digest: `%s`\n\n", img.Digest)
			}
			markdownRows(&b, rs)
		}
		markdownFooter(&b, rep)
		return b.String()
	}
	if rep.Digest != "" {
		fmt.Fprintf(&b, "Digest: `%s`\n\n", rep.Digest)
	}
	groups := make(map[string][]pusher.Result)
	var order []string
	for _, r := range rep.Results {
		reg := r.Tag.RegistryStr()
		if _, ok := groups[reg]; !ok {
			order = append(order, reg)
		}
		groups[reg] = append(groups[reg], r)
	}
	for _, reg := range order {
		if len(order) > 1 {
			rs := groups[reg]
			fmt.Fprintf(&b, "#### %s: %d of %d pushed\n\n", reg, Count(rs, pusher.StatusPushed)+Count(rs, pusher.StatusUnchanged), len(rs))
		}
		markdownRows(&b, groups[reg])
	}
	markdownFooter(&b, rep)
	return b.String()
}

// markdownRows is a table of results, one row per tag.
func markdownRows(b *strings.Builder, rs []pusher.Result) {
	b.WriteString("| Status | Tag | Digest | Attempts | Time | Error |\n")
	b.WriteString("|---|---|---|---:|---:|---|\n")
	for _, r := range rs {
		errText := ""
		if r.Err != nil {
			errText = mdCell(pusher.Summary(r.Err))
		}
		digest := ""
		if r.Digest != "" {
			digest = "`" + ShortDigest(r.Digest) + "`"
		}
		fmt.Fprintf(b, "| %s %s | `%s` | %s | %d | %s | %s |\n",
			statusIcon[r.Status], r.Status, mdCell(r.Tag.String()), digest, r.Attempts, Duration(r.Duration), errText)
	}
	b.WriteString("\n")
}

func markdownFooter(b *strings.Builder, rep *pusher.Report) {
	if line := ReferrersLine(rep.Results); line != "" {
		fmt.Fprintf(b, "%s\n\n", line)
	}
	fmt.Fprintf(b, "%s\n", StatsLine(rep.Stats))
}

// ReferrersLine says how many signatures, attestations and SBOMs each
// repository holds for the image after the run, or is empty when none went.
func ReferrersLine(results []pusher.Result) string {
	per := make(map[string]int)
	for _, r := range results {
		if r.Referrers > 0 {
			per[r.Tag.Repository.String()] = r.Referrers
		}
	}
	if len(per) == 0 {
		return ""
	}
	var parts []string
	for _, repo := range slices.Sorted(maps.Keys(per)) {
		parts = append(parts, fmt.Sprintf("%s: %d", repo, per[repo]))
	}
	return "referrers (signatures, attestations, SBOMs) with the image: " + strings.Join(parts, ", ")
}

// Table is the per-tag table for a terminal: with several images, each
// image's rows under a line that names it.
func Table(rep *pusher.Report) string {
	width := len("TAG")
	for _, r := range rep.Results {
		width = max(width, len(r.Tag.String()))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-9s  %-*s  %-12s  %8s  %9s  %s\n", "STATUS", width, "TAG", "DIGEST", "ATTEMPTS", "TIME", "ERROR")
	if len(rep.Images) > 1 {
		for i, rs := range byImage(rep) {
			fmt.Fprintf(&b, "%s\n", quote.OneLine(imageLine(rep.Images[i], rs)))
			tableRows(&b, rs, width)
		}
		return b.String()
	}
	tableRows(&b, rep.Results, width)
	return b.String()
}

func tableRows(b *strings.Builder, rs []pusher.Result, width int) {
	for _, r := range rs {
		errText := ""
		if r.Err != nil {
			errText = pusher.Summary(r.Err)
		}
		fmt.Fprintf(b, "%-9s  %-*s  %-12s  %8d  %9s  %s\n",
			r.Status, width, r.Tag.String(), ShortDigest(r.Digest), r.Attempts, Duration(r.Duration), errText)
	}
}

// LogLine is the line logged when a tag ends.
func LogLine(r pusher.Result) string {
	switch r.Status {
	case pusher.StatusPushed:
		return fmt.Sprintf("pushed %s (%s) in %s, %s", r.Tag, ShortDigest(r.Digest), Duration(r.Duration), attempts(r.Attempts))
	default:
		return fmt.Sprintf("%s %s after %s, %s: %s", r.Status, r.Tag, Duration(r.Duration), attempts(r.Attempts), quote.OneLine(fmt.Sprint(r.Err)))
	}
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

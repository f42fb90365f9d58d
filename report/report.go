// Package report renders the results of a run (or a dry run's plan) for
// people and machines, in one place, Render: the JSON results, the step's
// outputs, the markdown job summary and the table; and the lines the log
// shows as tags end. It only formats; writing them is the CI system's job.
package report

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tagpush/tagpush/ci"
	"github.com/tagpush/tagpush/config"
	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/pusher"
)

// Render renders rep every way a CI system shows it.
func Render(rep *pusher.Report) (ci.Results, error) {
	results, err := JSON(rep.Results)
	if err != nil {
		return ci.Results{}, err
	}
	digests, err := Digests(rep)
	if err != nil {
		return ci.Results{}, err
	}
	transfer, err := Transfer(rep)
	if err != nil {
		return ci.Results{}, err
	}
	text := Table(rep)
	for _, line := range notes(rep) {
		text += line + "\n"
	}
	out := ci.Results{
		OK:       AllOK(rep),
		Headline: Headline(rep),
		Text:     text,
		Markdown: Markdown(rep),
		JSON:     results,
	}
	dryRun := "false"
	if rep.DryRun {
		dryRun = "true"
	}
	values := map[string]string{
		config.OutputDigest:  rep.Digest,
		config.OutputDigests: digests,
		config.OutputResults: results,
		// pushed lists every tag that holds the digest now (in a plan:
		// would hold it), unchanged ones included; unchanged lists those
		// that needed no write.
		config.OutputPushed:    refs(rep.Results, pusher.Status.OK),
		config.OutputUnchanged: refs(rep.Results, func(s pusher.Status) bool { return s == pusher.StatusUnchanged }),
		config.OutputFailed:    refs(rep.Results, func(s pusher.Status) bool { return !s.OK() && s != pusher.StatusUnchanged }),
		config.OutputDryRun:    dryRun,
		config.OutputTransfer:  transfer,
	}
	for _, o := range config.Outputs() {
		v, ok := values[o.Name]
		if !ok {
			return ci.Results{}, fmt.Errorf("output %s has no value", o.Name)
		}
		out.Outputs = append(out.Outputs, ci.Output{Name: o.Name, Value: v})
	}
	return out, nil
}

// Document is the whole result as one JSON object, for a script reading a
// terminal run's stdout (--output json): whether every tag holds the digest,
// whether it was a dry run, the headline, the digests, and the results.
func Document(rep *pusher.Report) (string, error) {
	b, err := json.MarshalIndent(struct {
		OK       bool              `json:"ok"`
		DryRun   bool              `json:"dry_run"`
		Headline string            `json:"headline"`
		Digest   string            `json:"digest"`
		Digests  map[string]string `json:"digests"`
		Results  []Entry           `json:"results"`
	}{AllOK(rep), rep.DryRun, Headline(rep), rep.Digest, digestsOf(rep), Entries(rep.Results)}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode the result: %w", err)
	}
	return string(b) + "\n", nil
}

// ErrorDocument is the JSON object --output json prints when a run ends
// before it has results (bad input, exit 2, or an error of its own): ok is
// false, error says why, whole, and results is empty, so a script piping the
// output into jq always gets one document.
func ErrorDocument(badInput bool, err error) string {
	b, _ := json.MarshalIndent(struct {
		OK       bool     `json:"ok"`
		BadInput bool     `json:"bad_input"`
		Error    string   `json:"error"`
		Results  []string `json:"results"`
	}{false, badInput, quote.OneLine(err.Error()), []string{}}, "", "  ")
	return string(b) + "\n"
}

// AllOK reports whether every tag holds the digest (pushed or unchanged),
// or in a plan would hold it.
func AllOK(rep *pusher.Report) bool {
	for _, r := range rep.Results {
		if !r.Status.OK() {
			return false
		}
	}
	return true
}

// notes are the lines under the table: what a plan would upload, the
// referrers that went, and the run's statistics, each when there is
// something to say.
func notes(rep *pusher.Report) []string {
	var out []string
	out = append(out, UploadLines(rep)...)
	out = append(out, WireLines(rep)...)
	if line := ReferrersLine(rep.Results); line != "" {
		out = append(out, line)
	}
	if line := StatsLine(rep.Stats); line != "" {
		out = append(out, line)
	}
	return out
}

// WireLines say what went over the wire for blobs, per registry and, with
// several images, per image: "ghcr.io: 3 blobs uploaded (48.3 MiB), 2
// mounted, 5 already there". A plan, which sends nothing, has none.
func WireLines(rep *pusher.Report) []string {
	if rep.DryRun {
		return nil
	}
	var out []string
	for _, reg := range slices.Sorted(maps.Keys(rep.Stats.Wire)) {
		out = append(out, "sent to "+reg+": "+wireText(rep.Stats.Wire[reg]))
	}
	if len(rep.Images) > 1 {
		for _, img := range rep.Images {
			if img.Wire != (pusher.Wire{}) {
				out = append(out, "sent for "+img.Name+": "+wireText(img.Wire))
			}
		}
	}
	return out
}

func wireText(w pusher.Wire) string {
	parts := []string{fmt.Sprintf("%d blob%s uploaded (%s)", w.Uploaded, plural(w.Uploaded), Bytes(w.UploadedBytes))}
	if w.Mounted > 0 {
		parts = append(parts, fmt.Sprintf("%d mounted from another repository", w.Mounted))
	}
	if w.Reused > 0 {
		parts = append(parts, fmt.Sprintf("%d already there", w.Reused))
	}
	return strings.Join(parts, ", ")
}

// Transfer is the transfer output: what went over the wire for blobs, per
// registry, as a JSON object.
func Transfer(rep *pusher.Report) (string, error) {
	w := rep.Stats.Wire
	if w == nil || rep.DryRun {
		w = map[string]pusher.Wire{}
	}
	b, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("encode transfer: %w", err)
	}
	return string(b), nil
}

// UploadLines say, in a plan, what each repository lacks of each image.
func UploadLines(rep *pusher.Report) []string {
	var out []string
	for _, u := range rep.Uploads {
		what := ""
		if len(rep.Images) > 1 {
			what = " of " + u.Image
		}
		switch {
		case u.Err != nil:
			out = append(out, fmt.Sprintf("%s: could not check which blobs%s it lacks: %s", u.Repository, what, pusher.Summary(u.Err)))
		case u.Missing == 0:
			out = append(out, fmt.Sprintf("%s: has all %d blobs%s; only manifests would be written", u.Repository, u.Blobs, what))
		default:
			out = append(out, fmt.Sprintf("%s: lacks %d of %d blobs%s (%s), to upload or mount", u.Repository, u.Missing, u.Blobs, what, Bytes(u.MissingBytes)))
		}
	}
	return out
}

// Bytes writes a size for people: 12.4 MiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Entry is one tag in the JSON results.
type Entry struct {
	Tag string `json:"tag"`
	// Source is the image's source, as given.
	Source string `json:"source"`
	Status string `json:"status"`
	Digest string `json:"digest"`
	// Previous is the digest the tag held before, when it held another
	// (overwritten, or left as it was).
	Previous   string `json:"previous_digest,omitempty"`
	Attempts   int    `json:"attempts"`
	DurationMS int64  `json:"duration_ms"`
	// Error is what went wrong and what to do, whole (tables and
	// annotations shorten it; a script gets it all); Detail is the whole
	// chain of causes under it, when it says more.
	Error  string `json:"error"`
	Detail string `json:"detail,omitempty"`
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
			Previous:   r.Previous,
			Attempts:   r.Attempts,
			DurationMS: r.Duration.Milliseconds(),
			Referrers:  r.Referrers,
		}
		if r.Err != nil {
			out[i].Error = pusher.Message(r.Err)
			if full := quote.OneLine(r.Err.Error()); full != out[i].Error {
				out[i].Detail = full
			}
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
	b, err := json.Marshal(digestsOf(rep))
	if err != nil {
		return "", fmt.Errorf("encode digests: %w", err)
	}
	return string(b), nil
}

// digestsOf is each image's digest by its name; an image that could not be
// read has none.
func digestsOf(rep *pusher.Report) map[string]string {
	m := make(map[string]string, len(rep.Images))
	for _, img := range rep.Images {
		if img.Digest != "" {
			m[img.Name] = img.Digest
		}
	}
	return m
}

// refs returns, one per line in input order, the references whose status
// is one that keep says.
func refs(results []pusher.Result, keep func(pusher.Status) bool) string {
	var out []string
	for _, r := range results {
		if keep(r.Status) {
			out = append(out, r.Tag.String())
		}
	}
	return strings.Join(out, "\n")
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

// Headline says how the run went (or, in a plan, would go) in one line.
func Headline(rep *pusher.Report) string {
	n := func(s pusher.Status) int { return Count(rep.Results, s) }
	var s string
	if rep.DryRun {
		var parts []string
		for _, st := range []pusher.Status{pusher.StatusWouldPush, pusher.StatusWouldOverwrite, pusher.StatusUnchanged, pusher.StatusWouldFail, pusher.StatusCancelled} {
			if n(st) > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n(st), st))
			}
		}
		s = fmt.Sprintf("dry run of %d tags, nothing written: %s", len(rep.Results), strings.Join(parts, ", "))
	} else {
		pushed, unchanged := n(pusher.StatusPushed), n(pusher.StatusUnchanged)
		s = fmt.Sprintf("%d of %d tags pushed", pushed, len(rep.Results))
		if unchanged > 0 {
			s = fmt.Sprintf("%d of %d tags at the digest (%d pushed, %d unchanged)", pushed+unchanged, len(rep.Results), pushed, unchanged)
		}
		if f := n(pusher.StatusFailed); f > 0 {
			s += fmt.Sprintf(", %d failed", f)
		}
		if c := n(pusher.StatusCancelled); c > 0 {
			s += fmt.Sprintf(", %d cancelled", c)
		}
	}
	if len(rep.Images) > 1 {
		s += fmt.Sprintf(" (%d images)", len(rep.Images))
	}
	return s
}

// atDigest says how many of rs hold the digest: "2 of 3 tags at the digest
// (1 pushed, 1 unchanged)", naming only the statuses there are. In a plan,
// where nothing holds what was not written, it counts what the plan says:
// "3 tags: 1 would push, 1 would overwrite, 1 unchanged".
func atDigest(rs []pusher.Result, plan bool) string {
	statuses := []pusher.Status{pusher.StatusPushed, pusher.StatusUnchanged}
	if plan {
		statuses = []pusher.Status{pusher.StatusWouldPush, pusher.StatusWouldOverwrite, pusher.StatusUnchanged, pusher.StatusWouldFail, pusher.StatusCancelled}
	}
	ok := 0
	var parts []string
	for _, st := range statuses {
		if c := Count(rs, st); c > 0 {
			ok += c
			parts = append(parts, fmt.Sprintf("%d %s", c, st))
		}
	}
	if plan {
		return fmt.Sprintf("%d tag%s: %s", len(rs), plural(len(rs)), strings.Join(parts, ", "))
	}
	s := fmt.Sprintf("%d of %d tags at the digest", ok, len(rs))
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
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
func imageLine(img pusher.ImageResult, rs []pusher.Result, plan bool) string {
	s := img.Name + ": " + atDigest(rs, plan)
	switch {
	case img.Err != nil:
		s += ", not read: " + pusher.Summary(img.Err)
	case img.Digest != "":
		s += " " + ShortDigest(img.Digest)
	}
	return s
}

// StatsLine describes the faults, retries, waits and concurrency of a run:
// only what happened, so empty for a run that met no fault and wrote
// nothing.
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
	var retries []string
	for _, c := range []struct {
		n    int
		what string
	}{{s.Retries, "of tags"}, {s.BlobRetries, "of blob uploads"}, {s.ReadRetries, "of reads"}} {
		if c.n > 0 {
			retries = append(retries, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	if len(retries) > 0 {
		parts = append(parts, "retries: "+strings.Join(retries, ", "))
	}
	if s.BackoffWait > 0 {
		parts = append(parts, "time waiting in backoff: "+quote.Duration(s.BackoffWait))
	}
	for _, reg := range slices.Sorted(maps.Keys(s.PeakConcurrency)) {
		if peak := s.PeakConcurrency[reg]; peak > 0 {
			parts = append(parts, fmt.Sprintf("%s: peak writes in flight %d, limit at end %d", reg, peak, s.FinalLimit[reg]))
		}
	}
	return strings.Join(parts, " · ")
}

var statusIcon = map[pusher.Status]string{
	pusher.StatusPushed:         "✅",
	pusher.StatusUnchanged:      "☑️",
	pusher.StatusFailed:         "❌",
	pusher.StatusCancelled:      "⏹️",
	pusher.StatusWouldPush:      "🔜",
	pusher.StatusWouldOverwrite: "🔁",
	pusher.StatusWouldFail:      "❌",
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
	if rep.DryRun {
		b.WriteString("A dry run: the tags and blobs were read, nothing was written. Each row says what a push would do.\n\n")
	}
	if len(rep.Images) > 1 {
		for i, rs := range byImage(rep) {
			img := rep.Images[i]
			fmt.Fprintf(&b, "#### %s\n\n", mdCell(imageLine(img, rs, rep.DryRun)))
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
			fmt.Fprintf(&b, "#### %s: %s\n\n", reg, atDigest(groups[reg], rep.DryRun))
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
			statusIcon[r.Status], r.Status, mdCell(r.Tag.String()), digest, r.Attempts, quote.Duration(r.Duration), errText)
	}
	b.WriteString("\n")
}

func markdownFooter(b *strings.Builder, rep *pusher.Report) {
	for _, line := range notes(rep) {
		fmt.Fprintf(b, "%s\n\n", mdCell(line))
	}
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
	width, swidth := len("TAG"), len("cancelled")
	for _, r := range rep.Results {
		width = max(width, len(r.Tag.String()))
		swidth = max(swidth, len(r.Status))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s  %-*s  %-12s  %8s  %9s  %s\n", swidth, "STATUS", width, "TAG", "DIGEST", "ATTEMPTS", "TIME", "ERROR")
	if len(rep.Images) > 1 {
		for i, rs := range byImage(rep) {
			fmt.Fprintf(&b, "%s\n", quote.OneLine(imageLine(rep.Images[i], rs, rep.DryRun)))
			tableRows(&b, rs, swidth, width)
		}
		return b.String()
	}
	tableRows(&b, rep.Results, swidth, width)
	return b.String()
}

func tableRows(b *strings.Builder, rs []pusher.Result, swidth, width int) {
	for _, r := range rs {
		errText := ""
		if r.Err != nil {
			errText = pusher.Summary(r.Err)
		}
		fmt.Fprintf(b, "%-*s  %-*s  %-12s  %8d  %9s  %s\n",
			swidth, r.Status, width, r.Tag.String(), ShortDigest(r.Digest), r.Attempts, quote.Duration(r.Duration), errText)
	}
}

// LogLine is the line logged when a tag ends: what became of it, once. The
// error's whole chain is for the debug log (Detail).
func LogLine(r pusher.Result) string {
	took := quote.Duration(r.Duration)
	switch r.Status {
	case pusher.StatusPushed:
		s := fmt.Sprintf("pushed %s (%s) in %s", r.Tag, ShortDigest(r.Digest), took)
		if r.Previous != "" {
			s += ", replacing " + ShortDigest(r.Previous)
		}
		if r.Attempts > 1 {
			s += fmt.Sprintf(", %d attempts", r.Attempts)
		}
		return s
	case pusher.StatusUnchanged:
		return fmt.Sprintf("unchanged %s: already at %s, nothing written", r.Tag, ShortDigest(r.Digest))
	case pusher.StatusWouldPush:
		return fmt.Sprintf("would push %s (%s): the tag does not exist yet", r.Tag, ShortDigest(r.Digest))
	case pusher.StatusWouldOverwrite:
		return fmt.Sprintf("would overwrite %s: it holds %s, would get %s", r.Tag, ShortDigest(r.Previous), ShortDigest(r.Digest))
	case pusher.StatusWouldFail:
		return fmt.Sprintf("would fail %s: %s", r.Tag, pusher.Summary(r.Err))
	case pusher.StatusCancelled:
		if r.Attempts == 0 {
			return fmt.Sprintf("cancelled %s after %s, before any write", r.Tag, took)
		}
		return fmt.Sprintf("cancelled %s after %s, %s made", r.Tag, took, attempts(r.Attempts))
	}
	if r.Attempts == 0 {
		return fmt.Sprintf("%s %s after %s: %s", r.Status, r.Tag, took, pusher.Summary(r.Err))
	}
	return fmt.Sprintf("%s %s after %s, %s: %s", r.Status, r.Tag, took, attempts(r.Attempts), pusher.Summary(r.Err))
}

// Detail is the whole error of a tag that did not end well, for the debug
// log, or empty when the summary already says it all.
func Detail(r pusher.Result) string {
	if r.Err == nil {
		return ""
	}
	full := quote.OneLine(r.Err.Error())
	if full == pusher.Summary(r.Err) || full == pusher.Message(r.Err) {
		return ""
	}
	return r.Tag.String() + ": " + full
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

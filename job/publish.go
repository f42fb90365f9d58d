package job

import (
	"strings"

	"github.com/tagpush/tagpush/ci"
	"github.com/tagpush/tagpush/pusher"
	"github.com/tagpush/tagpush/report"
)

// publish logs each tag that failed and hands the rendered results to the CI
// system.
func (j *job) publish(rep *pusher.Report) error {
	for _, r := range rep.Results {
		if !r.Status.OK() {
			j.log.Failf("tagpush: "+r.Tag.String()+" "+string(r.Status), "%s %s: %s", r.Status, r.Tag, pusher.Summary(r.Err))
		}
	}
	results, err := report.JSON(rep.Results)
	if err != nil {
		return err
	}
	digests, err := report.Digests(rep)
	if err != nil {
		return err
	}
	text := report.Table(rep)
	if line := report.ReferrersLine(rep.Results); line != "" {
		text += line + "\n"
	}
	text += report.StatsLine(rep.Stats) + "\n"
	failed := report.Refs(rep.Results, pusher.StatusFailed)
	if c := report.Refs(rep.Results, pusher.StatusCancelled); c != "" {
		failed = joinLines(failed, c)
	}
	return j.sys.Publish(ci.Results{
		OK:       allOK(rep),
		Headline: report.Headline(rep),
		Text:     text,
		Markdown: report.Markdown(rep),
		JSON:     results,
		Outputs: []ci.Output{
			{Name: "digest", Value: rep.Digest},
			{Name: "digests", Value: digests},
			{Name: "results", Value: results},
			// pushed lists every tag that holds the digest now, unchanged
			// ones included; unchanged lists those that needed no write.
			{Name: "pushed", Value: okRefs(rep)},
			{Name: "unchanged", Value: report.Refs(rep.Results, pusher.StatusUnchanged)},
			{Name: "failed", Value: failed},
		},
	}, j.log)
}

func joinLines(a, b string) string {
	if a == "" {
		return b
	}
	return a + "\n" + b
}

// allOK reports whether every tag holds the digest: pushed or unchanged.
func allOK(rep *pusher.Report) bool {
	for _, r := range rep.Results {
		if !r.Status.OK() {
			return false
		}
	}
	return true
}

// okRefs lists, in input order, the tags that hold the digest.
func okRefs(rep *pusher.Report) string {
	var refs []string
	for _, r := range rep.Results {
		if r.Status.OK() {
			refs = append(refs, r.Tag.String())
		}
	}
	return strings.Join(refs, "\n")
}

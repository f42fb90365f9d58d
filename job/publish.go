package job

import (
	"fmt"
	"strings"

	"github.com/tagpush/tagpush/config"
	"github.com/tagpush/tagpush/pusher"
	"github.com/tagpush/tagpush/report"
)

// maxNamed is the most tags one failure line names.
const maxNamed = 5

// publish reports the tags that did not end well, one line (an annotation on
// GitHub) per distinct reason, and hands the rendered results to the CI
// system.
func (j *job) publish(rep *pusher.Report, cfg *config.Config) error {
	var order []string
	groups := make(map[string][]pusher.Result)
	for _, r := range rep.Results {
		if r.Status.OK() || r.Status == pusher.StatusUnchanged {
			continue
		}
		key := string(r.Status) + "\x00" + pusher.Summary(r.Err)
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], r)
	}
	for _, key := range order {
		rs := groups[key]
		status, sum := rs[0].Status, pusher.Summary(rs[0].Err)
		if len(rs) == 1 {
			j.log.Failf(fmt.Sprintf("tagpush: %s %s", rs[0].Tag, status), "%s", report.LogLine(rs[0]))
			continue
		}
		var names []string
		for _, r := range rs[:min(len(rs), maxNamed)] {
			names = append(names, r.Tag.String())
		}
		if more := len(rs) - len(names); more > 0 {
			names = append(names, fmt.Sprintf("and %d more", more))
		}
		j.log.Failf(fmt.Sprintf("tagpush: %d tags %s", len(rs), status), "%d tags %s (%s): %s", len(rs), status, strings.Join(names, ", "), sum)
	}
	res, err := report.Render(rep)
	if err != nil {
		return err
	}
	if cfg.Output == "json" {
		if res.Text, err = report.Document(rep); err != nil {
			return err
		}
	}
	return j.sys.Publish(res, j.log)
}

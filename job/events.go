package job

import (
	"fmt"
	"sync"

	"github.com/tagpush/tagpush/ci"
	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/pusher"
	"github.com/tagpush/tagpush/report"
)

// maxExample is the most characters of an error shown as an example.
const maxExample = 200

// eventLog turns a run's events into log lines whose number grows with the
// distinct problems, not with tags times attempts: the first retry of each
// kind of fault on each registry is shown, the others counted (each one is a
// debug line), and the end says how many there were, with the last. Tags
// that fail are reported at the end, once per reason (publish); every tag's
// result is in the table and the outputs.
type eventLog struct {
	log ci.Logger

	mu      sync.Mutex
	retries map[retryKind]*seen
	order   []retryKind
}

// retryKind is one kind of fault on one registry, for reads or writes.
type retryKind struct {
	registry string
	fault    pusher.Fault
	read     bool
}

// seen is how often a kind of retry was seen, and its last example.
type seen struct {
	n    int
	last string
}

func newEventLog(log ci.Logger) *eventLog {
	return &eventLog{log: log, retries: make(map[retryKind]*seen)}
}

func (e *eventLog) events() pusher.Events {
	return pusher.Events{
		TagDone: e.tagDone,
		Retry:   e.retry,
		LimitChange: func(c pusher.LimitChange) {
			why := "registry healthy again"
			switch {
			case c.SlowStart:
				// Every healthy run climbs to the ceiling: not news.
				e.log.Debugf("%s: concurrency %d -> %d (climbing to the ceiling)", c.Registry, c.Old, c.New)
				return
			case c.Overload:
				why = "registry overloaded (5xx/429/timeout)"
			}
			e.log.Infof("%s: concurrency %d -> %d (%s)", c.Registry, c.Old, c.New, why)
		},
		Progress: func(p pusher.Progress) {
			e.log.Infof("uploaded %s of %s", report.Bytes(p.Complete), report.Bytes(p.Total))
		},
	}
}

func (e *eventLog) retry(r pusher.Retry) {
	example := fmt.Sprintf("%s: %s", r.Tag, quote.Cut(quote.OneLine(fmt.Sprint(r.Err)), maxExample))
	e.log.Debugf("retrying %s in %s: attempt %d failed (%s): %s", r.Tag, quote.Duration(r.Wait), r.Attempt, r.Fault, quote.OneLine(fmt.Sprint(r.Err)))
	k := retryKind{registry: r.Registry, fault: r.Fault, read: r.Read}
	e.mu.Lock()
	s, ok := e.retries[k]
	if !ok {
		s = &seen{}
		e.retries[k] = s
		e.order = append(e.order, k)
	}
	s.n++
	s.last = example
	e.mu.Unlock()
	if !ok {
		e.log.Infof("%s: retrying %s after a %s failure, in %s (more like it are counted, and summed up at the end): %s",
			r.Registry, k.what(), r.Fault, quote.Duration(r.Wait), example)
	}
}

func (k retryKind) what() string {
	if k.read {
		return "a read"
	}
	return "a write"
}

func (k retryKind) plural() string {
	if k.read {
		return "reads"
	}
	return "writes"
}

// tagDone logs a tag that holds the digest (or in a plan would) as it
// ends. One that failed or was cancelled is logged at the end, once per
// reason (publish), with its detail here under debug.
func (e *eventLog) tagDone(r pusher.Result) {
	if r.Status.OK() || r.Status == pusher.StatusUnchanged {
		e.log.Infof("%s", report.LogLine(r))
	}
	if d := report.Detail(r); d != "" {
		e.log.Debugf("%s", d)
	}
}

// end logs what was counted and not shown: per kind, how many retries
// there were, with the last.
func (e *eventLog) end() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range e.order {
		s := e.retries[k]
		if s.n < 2 {
			continue
		}
		e.log.Infof("%s: %d %s retried after %s failures; the last: %s", k.registry, s.n, k.plural(), k.fault, s.last)
	}
}

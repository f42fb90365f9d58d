package ci

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/sethvargo/go-githubactions"
)

// Logger writes the run's log in the CI system's dialect. Calls may come from
// several goroutines.
type Logger interface {
	Infof(format string, args ...any)
	Warnf(format string, args ...any)
	// Failf logs an error; on GitHub it becomes an annotation with title.
	Failf(title, format string, args ...any)
	Debugf(format string, args ...any)
	// Mask hides s from the rest of the log where the CI system can.
	Mask(s string)
}

// plainLogger writes lines to a terminal or a Bitbucket log.
type plainLogger struct {
	mu    sync.Mutex
	w     io.Writer
	debug bool
}

func (l *plainLogger) line(prefix, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, prefix+format+"\n", args...)
}

func (l *plainLogger) Infof(format string, args ...any) { l.line("", format, args...) }
func (l *plainLogger) Warnf(format string, args ...any) { l.line("warning: ", format, args...) }
func (l *plainLogger) Failf(title, format string, args ...any) {
	l.line("error: ", format, args...)
}
func (l *plainLogger) Debugf(format string, args ...any) {
	if l.debug {
		l.line("debug: ", format, args...)
	}
}

// Mask does nothing: a terminal has no masking, and Bitbucket masks secured
// variables itself.
func (l *plainLogger) Mask(string) {}

// githubLogger issues workflow commands through go-githubactions.
type githubLogger struct {
	mu     sync.Mutex
	action *githubactions.Action
	debug  bool
}

func (l *githubLogger) Infof(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.action.Infof("%s", neutralise(fmt.Sprintf(format, args...)))
}

// neutralise keeps text from elsewhere in a log line (a registry's error
// message, a value the user gave) from being run as a workflow command. The
// runner reads every line of a step's output, split at "\n" or a lone "\r",
// whose text starts with "::" after leading white space as a command
// (::add-mask::, ::error::, ::stop-commands::...). tagpush's own commands go
// through go-githubactions, which escapes their data; plain lines go through
// here, and any line of them that could read as a command is marked "> ".
func neutralise(s string) string {
	if !strings.Contains(s, "::") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	lines := strings.Split(s, "\n")
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimLeft(line, " \t\v\f"), "::") {
			lines[i] = "> " + line
		}
	}
	return strings.Join(lines, "\n")
}

func (l *githubLogger) Warnf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.action.Warningf(format, args...)
}

func (l *githubLogger) Failf(title, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.action.WithFieldsMap(map[string]string{"title": title}).Errorf(format, args...)
}

func (l *githubLogger) Debugf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.debug {
		l.action.Infof("%s", neutralise("debug: "+fmt.Sprintf(format, args...)))
		return
	}
	l.action.Debugf(format, args...)
}

func (l *githubLogger) Mask(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.action.AddMask(s)
}

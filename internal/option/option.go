// Package option lets a message name tagpush's options as values, so that
// each front end renders them in its own words: --max-attempts on a
// terminal, max-attempts on GitHub, MAX_ATTEMPTS on Bitbucket. No message is
// renamed by matching its text.
package option

import (
	"errors"
	"strings"
)

// Ref is an option, by its name in the options table (kebab-case).
type Ref string

// Message is text that names options: strings and Refs, in order.
type Message []any

// Render writes the message with each option named by name.
func (m Message) Render(name func(string) string) string {
	var b strings.Builder
	for _, p := range m {
		switch v := p.(type) {
		case Ref:
			b.WriteString(name(string(v)))
		case string:
			b.WriteString(v)
		}
	}
	return b.String()
}

// Plain names an option as the options table does.
func Plain(name string) string { return name }

// Error is an error whose text names options.
type Error struct {
	Msg Message
	// Err is the cause, when there is one; its text follows the message.
	Err error
}

// Errorf is an Error of the message parts.
func Errorf(parts ...any) *Error { return &Error{Msg: parts} }

func (e *Error) Error() string { return e.Render(Plain) }

// Render writes the error with each option named by name.
func (e *Error) Render(name func(string) string) string {
	s := e.Msg.Render(name)
	if e.Err != nil {
		s += ": " + Render(e.Err, name)
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Renderer is an error that can name options in a front end's words.
type Renderer interface {
	error
	Render(name func(string) string) string
}

// Render writes err for a person with each option it names named by name:
// joined errors one per line, an Error in its own words, and an error that
// wraps one with its own text around the wrapped one's.
func Render(err error, name func(string) string) string {
	if err == nil {
		return ""
	}
	if r, ok := err.(Renderer); ok {
		return r.Render(name)
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var lines []string
		for _, e := range j.Unwrap() {
			lines = append(lines, Render(e, name))
		}
		return strings.Join(lines, "\n")
	}
	inner := errors.Unwrap(err)
	if inner == nil {
		return err.Error()
	}
	// The wrapper's own words stay; the wrapped error's text in them is
	// the wrapped error's, rendered.
	text, plain := err.Error(), inner.Error()
	if i := strings.LastIndex(text, plain); i >= 0 {
		return text[:i] + Render(inner, name) + text[i+len(plain):]
	}
	return text
}

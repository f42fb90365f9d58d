// Package quote writes values for a person to read in messages and docs. A
// value a person gave is quoted, with control characters escaped (a pasted
// newline or escape sequence cannot break the log line or start a workflow
// command), and shortened when long, so that a whole pasted file is not
// echoed back. Text from elsewhere (a registry's error) is kept on one line.
// A duration is written as a person would write it.
package quote

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Duration writes d as a person would: rounded to what matters at its size
// (1.234s, not 1.234567891s) and without empty units (10m, not 10m0s).
func Duration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
	case d < time.Second:
		d = d.Round(time.Millisecond)
	case d < time.Minute:
		d = d.Round(10 * time.Millisecond)
	default:
		d = d.Round(time.Second)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Max is the most characters of a value shown.
const Max = 60

// Value returns s quoted for an error message.
func Value(s string) string {
	n := utf8.RuneCountInString(s)
	if n <= Max {
		return strconv.Quote(s)
	}
	cut := 0
	for range Max {
		_, size := utf8.DecodeRuneInString(s[cut:])
		cut += size
	}
	return fmt.Sprintf("%s… (%d characters)", strconv.Quote(s[:cut]), n)
}

// OneLine turns every run of control characters (line breaks, a lone
// carriage return, tabs, escapes) and spaces in s into one space, and trims
// it. Error text comes from registries: in a table cell or a log line it
// must stay on its line, where no part of it can start a line of its own (a
// CI runner reads "::" at a line's start as a command) or move the
// terminal's cursor.
func OneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == ' ' }), " ")
}

// Cut shortens s to at most n characters, ending a cut line with "…".
func Cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)[:n-1]
	// At a space where one is near the end, so that the cut falls between
	// words rather than inside a name, an address or a digest.
	for i := len(r) - 1; i >= len(r)*2/3; i-- {
		if r[i] == ' ' {
			return strings.TrimRight(string(r[:i]), " ,;:") + " …"
		}
	}
	return string(r) + "…"
}

// Package quote shows a value a person gave inside an error message: quoted,
// with control characters escaped (a pasted newline or escape sequence cannot
// break the log line or start a workflow command), and shortened when long,
// so that a whole pasted file is not echoed back.
package quote

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

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

// Package actiontest reads what a GitHub Actions step wrote to its file
// commands, as the runner does, so tests can check outputs by parsing them.
package actiontest

import (
	"fmt"
	"os"
	"strings"
)

// ReadOutputs parses a GITHUB_OUTPUT file: name=value lines and
// name<<DELIMITER blocks ending at a line holding only DELIMITER.
func ReadOutputs(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if line == "" {
			continue
		}
		if name, delim, ok := strings.Cut(line, "<<"); ok {
			var value []string
			for i++; i < len(lines) && lines[i] != delim; i++ {
				value = append(value, lines[i])
			}
			if i == len(lines) {
				return nil, fmt.Errorf("%s: output %s has no closing %s", path, name, delim)
			}
			out[name] = strings.Join(value, "\n")
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: line %d is neither name=value nor name<<delimiter: %q", path, i+1, line)
		}
		out[name] = value
	}
	return out, nil
}

package ci

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tagpush/tagpush/internal/spell"
)

// Strays looks through the environment for settings meant for tagpush that
// it does not know: an action input or pipe variable one edit away from a
// known one, or a known one spelt another way (dryrun, DRYRUN, dry_run for
// dry-run and DRY_RUN), is refused (errs, naming the one meant): a typo in
// dry-run must not push for real. Other unknown action inputs are warnings.
// On Bitbucket only near misses count: the pipe's environment also holds the
// runner's own variables, which cannot be told from a pipe variable nobody
// declared.
func Strays(sys System, env Env, inputs []Input) (errs []error, warnings []string) {
	if env.Environ == nil {
		return nil, nil
	}
	var known []string
	for _, in := range inputs {
		known = append(known, in.Name)
	}
	switch sys.Kind() {
	case GitHub:
		for _, kv := range env.Environ() {
			key, _, _ := strings.Cut(kv, "=")
			raw, ok := strings.CutPrefix(key, "INPUT_")
			if !ok {
				continue
			}
			// The runner upper-cases an input's name and keeps its hyphens.
			in := strings.ToLower(raw)
			if slices.Contains(known, in) {
				continue
			}
			if meant := nearest(in, known); meant != "" {
				errs = append(errs, fmt.Errorf("input %s is not one of tagpush's: did you mean %s?", in, meant))
			} else {
				warnings = append(warnings, fmt.Sprintf("input %s is not one of tagpush's, and is ignored", in))
			}
		}
	case Bitbucket:
		vars := make([]string, len(known))
		for i, k := range known {
			vars[i] = Variable(k)
		}
		for _, kv := range env.Environ() {
			key, _, _ := strings.Cut(kv, "=")
			if slices.Contains(vars, key) || isListPart(key, inputs) || strings.HasPrefix(key, "BITBUCKET_") {
				continue
			}
			if meant := nearest(key, vars); meant != "" {
				errs = append(errs, fmt.Errorf("variable %s is not one of the pipe's: did you mean %s?", key, meant))
			}
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	slices.Sort(warnings)
	return errs, warnings
}

// isListPart is NAME_COUNT or NAME_n of a list input: a YAML list variable.
func isListPart(key string, inputs []Input) bool {
	for _, in := range inputs {
		if !in.List {
			continue
		}
		rest, ok := strings.CutPrefix(key, Variable(in.Name)+"_")
		if !ok {
			continue
		}
		if rest == "COUNT" || strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

// nearest is the known name s means, when it is one: the same letters with
// other separators (dryrun, dry_run), or one edit away from a name of at
// least four letters; else "".
func nearest(s string, known []string) string {
	squash := func(s string) string {
		return strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(s))
	}
	for _, k := range known {
		if squash(s) == squash(k) {
			return k
		}
	}
	for _, k := range known {
		if len(k) >= 4 && spell.Distance(strings.ToLower(s), strings.ToLower(k)) <= 1 {
			return k
		}
	}
	return ""
}

package config

import (
	"fmt"
	"io"
	"strings"

	"github.com/tagpush/tagpush/internal/spell"
)

// Help writes tagpush's help: how to call it, every option by group with a
// placeholder for its value, and a few examples.
func Help(w io.Writer) {
	fmt.Fprint(w, `Usage: tagpush --source SOURCE --tags TAGS [flags]
       tagpush --images 'SOURCE -> TAG, TAG' [--images ...] [flags]
       tagpush demo [--faults MODE]
       tagpush --version | -v

Pushes one image to many tags: each blob once per repository, one manifest per
tag, through a bounded, adaptive queue, and reports every tag. Every flag is
also the GitHub input of the same name and the Bitbucket variable in
UPPER_SNAKE_CASE (--max-attempts: MAX_ATTEMPTS).
`)
	for _, g := range []string{GroupWhat, GroupCredentials, GroupSpeed, GroupBehaviour} {
		fmt.Fprintf(w, "\n%s:\n", g)
		for _, o := range Options() {
			if o.Group == g {
				writeOption(w, "--"+o.Name+" "+o.Placeholder, o.Description, o.Default)
			}
		}
		if g == GroupCredentials {
			writeOption(w, "--password-stdin", "Read the password for --username from stdin, so it is not on the command line or in the shell's history (terminal only).", "")
		}
		if g == GroupBehaviour {
			writeOption(w, "--output text|json", "What stdout gets: the table, or one JSON object (ok, dry_run, headline, digest, digests, results) for a script (terminal only).", "text")
			writeOption(w, "-h, --help", "Show this help.", "")
		}
	}
	_, _ = io.WriteString(w, `
Examples:
  tagpush --source oci:./build/image --tags ghcr.io/acme/app:1.4.2 --tags ghcr.io/acme/app:latest
  echo "$GITHUB_TOKEN" | tagpush --source docker-archive:app.tar --repository ghcr.io/acme/app \
          --tags "1.4.2, 1.4, latest" --username "$GITHUB_ACTOR" --password-stdin
  tagpush --source registry:ghcr.io/acme/app-staging:sha-3f9c2e1 --overwrite false \
          --tags ghcr.io/acme/app:1.4.2,registry.example.com/acme/app:1.4.2 \
          --registry-auth "$(printf 'ghcr.io=ci:%s\nregistry.example.com=ci:%s' "$T1" "$T2")"
  tagpush --source oci:./build/image --tags localhost:5000/app:dev --dry-run
  tagpush --images "docker-daemon:api:ci -> ghcr.io/acme/api:1.4.3, ghcr.io/acme/api:latest" \
          --images "docker-daemon:web:ci -> ghcr.io/acme/web:1.4.3, ghcr.io/acme/web:latest" --atomic
`)
}

// writeOption writes one option: its flag, then its description wrapped and
// indented, with its default.
func writeOption(w io.Writer, flag, desc, def string) {
	fmt.Fprintf(w, "  %s\n", strings.TrimSpace(flag))
	if def != "" {
		desc += " (default " + def + ")"
	}
	line := "       "
	for _, word := range strings.Fields(desc) {
		if len(line)+len(word) > 79 && strings.TrimSpace(line) != "" {
			fmt.Fprintln(w, strings.TrimRight(line, " "))
			line = "       "
		}
		line += word + " "
	}
	fmt.Fprintln(w, strings.TrimRight(line, " "))
}

// suggest is the option name closest to a mistyped one, or "" when none is
// close: at most two edits, or one for short names.
func suggest(typed string) string {
	best, bestD := "", 3
	names := []string{"help", "password-stdin", "output"}
	for _, o := range Options() {
		names = append(names, o.Name)
	}
	for _, n := range names {
		if d := spell.Distance(typed, n); d < bestD && d <= max(1, len(n)/4) {
			best, bestD = n, d
		}
	}
	return best
}

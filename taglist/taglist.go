// Package taglist parses the list of destination tags a user gives: items
// separated by newlines or commas, blank lines and # comments ignored, each a
// full reference or a bare tag joined to a default repository.
package taglist

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tagpush/tagpush/internal/option"
	"github.com/tagpush/tagpush/internal/quote"
)

// Item is one destination, with the line of the input it came from.
type Item struct {
	Tag  name.Tag
	Line int
}

// Duplicate reports a reference given more than once; later ones are dropped.
type Duplicate struct {
	Ref   string
	Line  int // the line kept
	Again int // the line dropped
}

func (d Duplicate) String() string {
	return fmt.Sprintf("line %d: %s is already listed on line %d; pushing it once", d.Again, d.Ref, d.Line)
}

// Error is an invalid item.
type Error struct {
	// Input names the input: tags (the default) or images.
	Input string
	Line  int
	// Index is the item's place on its line (1-based) when the line holds
	// several, else 0.
	Index int
	Item  string
	// Why is what is wrong with the item; or Err, when it names options.
	Why string
	Err error
}

func (e *Error) Error() string { return e.Render(option.Plain) }

// Render writes the error with the inputs it names named by name.
func (e *Error) Render(name func(string) string) string {
	input := e.Input
	if input == "" {
		input = "tags"
	}
	where := fmt.Sprintf("%s line %d", name(input), e.Line)
	if e.Index > 0 {
		where += fmt.Sprintf(", item %d", e.Index)
	}
	why := e.Why
	if e.Err != nil {
		why = option.Render(e.Err, name)
	}
	return fmt.Sprintf("%s: %s: %s", where, quote.Value(e.Item), why)
}

func (e *Error) Unwrap() error { return e.Err }

var bareTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Parse parses input. repository, when not empty, is the repository bare tags
// are joined to. An empty list is an error: a run must push somewhere.
func Parse(input, repository string) ([]Item, []Duplicate, error) {
	var repo *name.Repository
	if strings.TrimSpace(repository) != "" {
		r, err := name.NewRepository(strings.TrimSpace(repository))
		if err != nil {
			return nil, nil, &option.Error{Msg: option.Message{option.Ref("repository"), ": " + quote.Value(repository) + " is not a valid repository"}, Err: err}
		}
		repo = &r
	}

	var (
		items []Item
		dups  []Duplicate
		seen  = make(map[string]int)
	)
	input = strings.ReplaceAll(input, "\r\n", "\n")
	for i, line := range strings.Split(input, "\n") {
		lineNo := i + 1
		if hash := strings.IndexByte(line, '#'); hash >= 0 {
			line = line[:hash]
		}
		var onLine []string
		for _, raw := range strings.Split(line, ",") {
			if item := strings.TrimSpace(raw); item != "" {
				onLine = append(onLine, item)
			}
		}
		for n, item := range onLine {
			tag, err := parseItem(item, repo)
			if err != nil {
				e := &Error{Line: lineNo, Item: item, Err: err}
				if len(onLine) > 1 {
					e.Index = n + 1
				}
				return nil, nil, e
			}
			key := tag.String()
			if first, ok := seen[key]; ok {
				dups = append(dups, Duplicate{Ref: key, Line: first, Again: lineNo})
				continue
			}
			seen[key] = lineNo
			items = append(items, Item{Tag: tag, Line: lineNo})
		}
	}
	if len(items) == 0 {
		return nil, nil, option.Errorf(option.Ref("tags"), " is empty: give at least one tag (one per line, or separated by commas)")
	}
	return items, dups, nil
}

// withoutEcho drops the part of go-containerregistry's message that repeats
// (part of) the item, raw, after its last ": ": the error already shows the
// item, quoted and escaped.
func withoutEcho(msg, item string) string {
	if i := strings.LastIndex(msg, ": "); i >= 0 && msg[i+2:] != "" && strings.Contains(item, msg[i+2:]) {
		return msg[:i]
	}
	return msg
}

func parseItem(item string, repo *name.Repository) (name.Tag, error) {
	if err := ASCII(item); err != nil {
		return name.Tag{}, err
	}
	if tag := tagPart(item); strings.Contains(tag, "+") {
		return name.Tag{}, fmt.Errorf("tag %s has \"+\" (semver build metadata), which registries do not take in a tag: write %s", quote.Value(tag), strings.ReplaceAll(tag, "+", "-"))
	}
	if strings.Contains(item, "@") {
		return name.Tag{}, digestError(item, repo)
	}
	if strings.ContainsAny(item, " \t") {
		return name.Tag{}, fmt.Errorf("contains white space")
	}
	if bareTag.MatchString(item) && !strings.ContainsAny(item, "/:") {
		if repo == nil {
			return name.Tag{}, option.Errorf("a bare tag needs a repository to join: set ", option.Ref("repository"), " (or write the full reference, e.g. ghcr.io/OWNER/IMAGE:"+item+")")
		}
		return repo.Tag(item), nil
	}
	tag, err := name.NewTag(item)
	if err != nil {
		return name.Tag{}, fmt.Errorf("not a valid image reference: %s", withoutEcho(err.Error(), item))
	}
	if !bareTag.MatchString(tag.TagStr()) {
		return name.Tag{}, fmt.Errorf("not a valid image reference: tag %s must start with a letter, digit or _ and hold at most 128 of [A-Za-z0-9_.-]", quote.Value(tag.TagStr()))
	}
	return tag, nil
}

// digestError says what to write instead of a reference with a digest:
// the same reference without it when it has a tag (ghcr.io/acme/app:1.4@sha256:...
// is ghcr.io/acme/app:1.4), else the repository with a tag.
func digestError(item string, repo *name.Repository) error {
	ref := item[:strings.Index(item, "@")]
	if ref == "" {
		return fmt.Errorf("a digest cannot be a destination: tags name where to push (e.g. 1.4 or ghcr.io/OWNER/IMAGE:1.4); the digest pushed is the source's")
	}
	if hasTag(ref) {
		t, err := parseItem(ref, repo)
		if err != nil {
			return fmt.Errorf("a destination cannot pin a digest (drop the @... part), and without it: %w", err)
		}
		return fmt.Errorf("a destination cannot pin a digest: drop the @... part and write %s (the digest pushed is the source's)", t)
	}
	return fmt.Errorf("a digest reference cannot be a destination: tags name where to push, give a tag like %s:TAG", ref)
}

// ASCII refuses a reference with a character that is not ASCII: registry
// hosts, repositories and tags are ASCII, and a look-alike pasted from a
// document (a fullwidth "ｇ", a Cyrillic "һ") would pass as a name and fail
// later, on DNS or at the registry.
func ASCII(s string) error {
	for i, r := range s {
		if r > unicode.MaxASCII {
			return fmt.Errorf("has %s at character %d, which is not ASCII (a look-alike pasted from a document?): write it in ASCII, an international host name in punycode", quote.Value(string(r)), utf8.RuneCountInString(s[:i])+1)
		}
	}
	return nil
}

// tagPart is what a reference has as its tag: all of a bare tag, or what
// follows the last ":" after the last "/".
func tagPart(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	last := ref[strings.LastIndex(ref, "/")+1:]
	if !strings.Contains(ref, "/") {
		if _, tag, ok := strings.Cut(last, ":"); ok {
			return tag
		}
		return last
	}
	if _, tag, ok := strings.Cut(last, ":"); ok {
		return tag
	}
	return ""
}

// hasTag reports whether ref names a tag: a ':' after its last '/' (a
// registry's port comes before the first one).
func hasTag(ref string) bool {
	return strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") || !strings.Contains(ref, "/") && bareTag.MatchString(ref)
}

// Tags returns the items' tags.
func Tags(items []Item) []name.Tag {
	tags := make([]name.Tag, len(items))
	for i, it := range items {
		tags[i] = it.Tag
	}
	return tags
}

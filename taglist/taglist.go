// Package taglist parses the list of destination tags a user gives: items
// separated by newlines or commas, blank lines and # comments ignored, each a
// full reference or a bare tag joined to a default repository.
package taglist

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
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
	Line int
	Item string
	Why  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("tags line %d: %q: %s", e.Line, e.Item, e.Why)
}

var bareTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Parse parses input. repository, when not empty, is the repository bare tags
// are joined to. An empty list is an error: a run must push somewhere.
func Parse(input, repository string) ([]Item, []Duplicate, error) {
	var repo *name.Repository
	if strings.TrimSpace(repository) != "" {
		r, err := name.NewRepository(strings.TrimSpace(repository))
		if err != nil {
			return nil, nil, fmt.Errorf("repository %q is not a valid repository: %w", repository, err)
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
		for _, raw := range strings.Split(line, ",") {
			item := strings.TrimSpace(raw)
			if item == "" {
				continue
			}
			tag, err := parseItem(item, repo)
			if err != nil {
				return nil, nil, &Error{Line: lineNo, Item: item, Why: err.Error()}
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
		return nil, nil, fmt.Errorf("tags is empty: give at least one tag (one per line, or separated by commas)")
	}
	return items, dups, nil
}

func parseItem(item string, repo *name.Repository) (name.Tag, error) {
	if strings.Contains(item, "@") {
		return name.Tag{}, fmt.Errorf("a digest reference cannot be a destination: tags name where to push, give a tag like %s", suggestTag(item))
	}
	if strings.ContainsAny(item, " \t") {
		return name.Tag{}, fmt.Errorf("contains white space")
	}
	if bareTag.MatchString(item) && !strings.ContainsAny(item, "/:") {
		if repo == nil {
			return name.Tag{}, fmt.Errorf("a bare tag needs the repository input (or write the full reference, e.g. ghcr.io/OWNER/IMAGE:%s)", item)
		}
		return repo.Tag(item), nil
	}
	tag, err := name.NewTag(item)
	if err != nil {
		return name.Tag{}, fmt.Errorf("not a valid image reference: %w", err)
	}
	if !bareTag.MatchString(tag.TagStr()) {
		return name.Tag{}, fmt.Errorf("not a valid image reference: tag %q must start with a letter, digit or _ and hold at most 128 of [A-Za-z0-9_.-]", tag.TagStr())
	}
	return tag, nil
}

func suggestTag(item string) string {
	return item[:strings.Index(item, "@")] + ":TAG"
}

// Tags returns the items' tags.
func Tags(items []Item) []name.Tag {
	tags := make([]name.Tag, len(items))
	for i, it := range items {
		tags[i] = it.Tag
	}
	return tags
}

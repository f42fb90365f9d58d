package taglist

import (
	"fmt"
	"strings"

	"github.com/tagpush/tagpush/internal/option"
)

// Image is one image of the images input: a source and where it goes.
type Image struct {
	// Source is the image's source, as the user wrote it
	// (docker-daemon:api:ci).
	Source string
	// Line is the first line that names the source.
	Line  int
	Items []Item
}

// ParseImages parses the images input: one image per line,
// "SOURCE -> TAG, TAG, ...", each TAG a full reference; blank lines and
// # comments are ignored. Lines that name the same source are one image. A
// destination named twice for one image is pushed once (a Duplicate); one
// named for two images is an error: a tag holds one image. The errors name
// the line and the item.
func ParseImages(input string) ([]Image, []Duplicate, error) {
	var (
		images []Image
		dups   []Duplicate
		bySrc  = make(map[string]int)
		owner  = make(map[string]int) // destination -> index of its image
		seenAt = make(map[string]int) // destination -> its line
	)
	input = strings.ReplaceAll(input, "\r\n", "\n")
	for i, line := range strings.Split(input, "\n") {
		lineNo := i + 1
		if hash := strings.IndexByte(line, '#'); hash >= 0 {
			line = line[:hash]
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		src, dests, ok := strings.Cut(line, "->")
		src = strings.TrimSpace(src)
		switch {
		case !ok:
			return nil, nil, &Error{Input: "images", Line: lineNo, Item: strings.TrimSpace(line), Why: "no \"->\": write SOURCE -> TAG, TAG (e.g. docker-daemon:api:ci -> ghcr.io/acme/api:1.4)"}
		case src == "":
			return nil, nil, &Error{Input: "images", Line: lineNo, Item: strings.TrimSpace(line), Why: "no source before \"->\""}
		}
		var onLine []string
		for _, raw := range strings.Split(dests, ",") {
			if item := strings.TrimSpace(raw); item != "" {
				onLine = append(onLine, item)
			}
		}
		if len(onLine) == 0 {
			return nil, nil, &Error{Input: "images", Line: lineNo, Item: src, Why: "no tag after \"->\""}
		}
		idx, known := bySrc[src]
		if !known {
			idx = len(images)
			bySrc[src] = idx
			images = append(images, Image{Source: src, Line: lineNo})
		}
		for n, item := range onLine {
			e := &Error{Input: "images", Line: lineNo, Item: item}
			if len(onLine) > 1 {
				e.Index = n + 1
			}
			tag, err := parseItem(item, nil)
			if err != nil {
				e.Err = err
				if !strings.ContainsAny(item, "/:@") {
					e.Err = nil
					e.Why = "images take full references (e.g. ghcr.io/OWNER/IMAGE:" + item + ")"
				}
				return nil, nil, e
			}
			key := tag.String()
			if other, taken := owner[key]; taken {
				if other != idx {
					e.Why = fmt.Sprintf("already a destination of %s on line %d: a tag holds one image", images[other].Source, seenAt[key])
					return nil, nil, e
				}
				dups = append(dups, Duplicate{Ref: key, Line: seenAt[key], Again: lineNo})
				continue
			}
			owner[key], seenAt[key] = idx, lineNo
			images[idx].Items = append(images[idx].Items, Item{Tag: tag, Line: lineNo})
		}
	}
	if len(images) == 0 {
		return nil, nil, option.Errorf(option.Ref("images"), " is empty: give at least one line SOURCE -> TAG, TAG")
	}
	return images, dups, nil
}

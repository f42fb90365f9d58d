package taglist

import (
	"strings"
	"testing"
)

func TestParseImages(t *testing.T) {
	input := `# the seed's microservices
docker-daemon:api:ci -> ghcr.io/acme/api:1.4.2, ghcr.io/acme/api:latest

docker-daemon:web:ci   ->   ghcr.io/acme/web:1.4.2   # the front end
docker-daemon:api:ci -> registry.example.com/acme/api:1.4.2, ghcr.io/acme/api:latest
`
	images, dups, err := ParseImages(input)
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 2 {
		t.Fatalf("%d images, want 2 (the api's two lines are one image): %+v", len(images), images)
	}
	var got []string
	for _, img := range images {
		var tags []string
		for _, it := range img.Items {
			tags = append(tags, it.Tag.String())
		}
		got = append(got, img.Source+" -> "+strings.Join(tags, ","))
	}
	want := []string{
		"docker-daemon:api:ci -> ghcr.io/acme/api:1.4.2,ghcr.io/acme/api:latest,registry.example.com/acme/api:1.4.2",
		"docker-daemon:web:ci -> ghcr.io/acme/web:1.4.2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("images:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if images[0].Line != 2 || images[1].Line != 4 {
		t.Errorf("lines %d, %d; want 2 and 4", images[0].Line, images[1].Line)
	}
	if len(dups) != 1 || dups[0].Ref != "ghcr.io/acme/api:latest" || dups[0].Line != 2 || dups[0].Again != 5 {
		t.Errorf("duplicates %+v, want ghcr.io/acme/api:latest on lines 2 and 5", dups)
	}
}

func TestParseImagesRejects(t *testing.T) {
	tests := []struct {
		name, input, want string
	}{
		{"no arrow", "docker-daemon:api:ci ghcr.io/acme/api:1", `images line 1: "docker-daemon:api:ci ghcr.io/acme/api:1": no "->"`},
		{"no source", "\n -> ghcr.io/acme/api:1", `images line 2: "-> ghcr.io/acme/api:1": no source before "->"`},
		{"no tags", "api.tar -> , ", `images line 1: "api.tar": no tag after "->"`},
		{"bare tag", "api.tar -> 1.4", `images line 1: "1.4": images take full references (e.g. ghcr.io/OWNER/IMAGE:1.4)`},
		{"bad item", "api.tar -> ghcr.io/acme/api:1, ghcr.io/Acme/api:1", `images line 1, item 2: "ghcr.io/Acme/api:1": not a valid image reference`},
		{"one tag, two images", "api.tar -> ghcr.io/acme/app:1\nweb.tar -> ghcr.io/acme/app:2, ghcr.io/acme/app:1", `images line 2, item 2: "ghcr.io/acme/app:1": already a destination of api.tar on line 1: a tag holds one image`},
		{"only comments", "# nothing\n\n", "images is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseImages(tt.input)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to say %q", err, tt.want)
			}
		})
	}
}

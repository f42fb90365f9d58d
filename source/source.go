// Package source opens the image a run pushes, from wherever a CI job has it,
// as a v1.Image or v1.ImageIndex. The pusher never cares where an image came from.
//
// Forms: oci:PATH (an OCI image layout; oci:PATH@sha256:... or oci:PATH:REF picks
// one manifest of several), docker-archive:PATH (a `docker save` tarball;
// docker-archive:PATH:NAME:TAG picks one image of several), docker-daemon:NAME[:TAG]
// (the local Docker engine), registry:REF (an image already in a registry), or
// plainly a path to a layout or tarball, a reference whose first part is a
// registry host (ghcr.io/acme/app:1), or a local image name (app:1).
package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/tagpush/tagpush/internal/option"
	"github.com/tagpush/tagpush/internal/quote"
)

// Image is an opened source.
type Image struct {
	// Taggable is a v1.Image or a v1.ImageIndex.
	Taggable remote.Taggable
	// Description says what was opened, for the log.
	Description string
	// Referrers are the artifacts that refer to the image, when
	// Options.Referrers asked for them (registry and OCI layout sources).
	Referrers []Referrer

	// discover finds the referrers of subjects in the source, where the
	// source can hold them.
	discover func(ctx context.Context, subjects []v1.Hash) ([]Referrer, error)
	// close removes what opening the image left behind (an export).
	close func()
}

// Close removes what opening the image left behind: a Docker engine image's
// export. The image cannot be read after it.
func (img *Image) Close() {
	if img != nil && img.close != nil {
		img.close()
		img.close = nil
	}
}

// Referrer is an artifact that travels with the image: an OCI referrer (a
// manifest whose subject is the image or one of its platform manifests: a
// signature, an attestation, an SBOM) or a tag of cosign's scheme
// (sha256-<hex>.sig, .att, .sbom) in the image's repository.
type Referrer struct {
	// Taggable is the artifact's manifest, with its blobs.
	Taggable remote.Taggable
	Digest   v1.Hash
	// Tag is the cosign-scheme tag to copy, empty for an OCI referrer
	// (which is pushed by digest and listed under its subject).
	Tag string
}

// Forms lists the source forms, for error messages.
const Forms = "oci:PATH[:REF|@sha256:DIGEST], docker-archive:PATH[:NAME:TAG], docker-daemon:NAME[:TAG], registry:REF, or a path to an OCI layout or docker-archive"

// Options are what opening a source may need besides its spec.
type Options struct {
	// Keychain gives credentials for registry sources. Default: anonymous.
	Keychain authn.Keychain
	// Transport carries requests to registry sources. Default: go-containerregistry's.
	Transport http.RoundTripper
	// Platform, when set (linux/amd64, linux/arm64/v8), picks one image out of an index.
	Platform string
	// Docker is where the Docker engine is.
	Docker Docker
	// Export, when set, hears how far an export from the Docker engine
	// has come, every few seconds.
	Export func(ExportProgress)
	// Referrers asks for the artifacts that refer to the image.
	Referrers bool
	// ExportStall abandons an export from the Docker engine that sends no
	// byte for that long. Default 30s, as the uploads' stall watchdog.
	ExportStall time.Duration
}

// Open opens spec: Prepare, then Prepared.Open.
func Open(ctx context.Context, spec string, o Options) (*Image, error) {
	p, err := Prepare(ctx, spec, o)
	if err != nil {
		return nil, err
	}
	return p.Open(ctx)
}

// Prepared is a source found and checked, and not yet opened where opening
// is work of its own: a Docker engine image is found (a missing one is an
// error here) and exported by Open.
type Prepared struct {
	o    Options
	open func(context.Context, Held) (*Image, error)
	// ID is what the source says the image is without opening it: a
	// Docker engine image's ID, which is its config's digest (the classic
	// image store) or its manifest's (the containerd store). Empty for
	// other sources, which are open already.
	ID string
}

// Prepare finds spec and checks it can be opened: a layout or archive is
// read, a registry's image is looked up, a Docker engine's image is asked
// for. What only opening can do waits for Open: a Docker engine's export,
// which a run does beside the other images' uploads.
func Prepare(ctx context.Context, spec string, o Options) (*Prepared, error) {
	f, err := parse(strings.TrimSpace(spec))
	if err != nil {
		return nil, err
	}
	if f.kind == kindDaemon {
		d, err := prepareDaemon(ctx, f.rest, o)
		if err != nil {
			return nil, err
		}
		return &Prepared{o: o, open: d.open, ID: d.id}, nil
	}
	img, err := open(ctx, f, o)
	if err != nil {
		return nil, err
	}
	return &Prepared{o: o, open: func(context.Context, Held) (*Image, error) { return img, nil }}, nil
}

// Open opens the image: it exports a Docker engine's image, picks the
// platform asked for, and finds what refers to the image. Close the image
// when done with it.
func (p *Prepared) Open(ctx context.Context) (*Image, error) {
	return p.OpenHeld(ctx, nil)
}

// OpenHeld is Open, told what the destination already holds: a Docker
// engine image's layers found there are not compressed, and are pushed as
// the blobs that are there. Other sources are open already.
func (p *Prepared) OpenHeld(ctx context.Context, held Held) (*Image, error) {
	img, err := p.open(ctx, held)
	if err != nil {
		return nil, err
	}
	o := p.o
	if o.Platform != "" {
		picked, err := pickPlatform(img, o.Platform)
		if err != nil {
			img.Close()
			return nil, err
		}
		picked.discover, picked.close = img.discover, img.close
		img = picked
	}
	if o.Referrers && img.discover != nil {
		subjects, err := subjectsOf(img.Taggable)
		if err != nil {
			return nil, err
		}
		if img.Referrers, err = img.discover(ctx, subjects); err != nil {
			img.Close()
			return nil, fmt.Errorf("find the signatures, attestations and SBOMs of the source: %w (referrers: false pushes the image without them)", err)
		}
	}
	return img, nil
}

// subjectsOf is the digest of t and, for an index, of every manifest in it:
// what referrers may name as their subject.
func subjectsOf(t remote.Taggable) ([]v1.Hash, error) {
	d, ok := t.(interface{ Digest() (v1.Hash, error) })
	if !ok {
		return nil, fmt.Errorf("%T has no digest", t)
	}
	top, err := d.Digest()
	if err != nil {
		return nil, err
	}
	out := []v1.Hash{top}
	if idx, ok := t.(v1.ImageIndex); ok {
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, c := range m.Manifests {
			out = append(out, c.Digest)
		}
	}
	return out, nil
}

// cosignTag is the tag cosign gives an artifact of a subject: sha256-<hex>.sig.
func cosignTag(subject v1.Hash, suffix string) string {
	return subject.Algorithm + "-" + subject.Hex + suffix
}

// cosignSuffixes are cosign's tag suffixes: signatures, attestations, SBOMs.
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// open opens a source that needs no work of its own to open.
func open(ctx context.Context, f form, o Options) (*Image, error) {
	switch f.kind {
	case kindOCI:
		return openOCI(f.rest, o)
	case kindArchive:
		return openArchive(f.rest)
	}
	return openRemote(ctx, f.rest, o)
}

// The kinds of source.
const (
	kindOCI = iota
	kindArchive
	kindDaemon
	kindRegistry
)

// form is a source spec read: its kind, and what the kind's opener takes.
type form struct {
	kind int
	rest string
}

// parse reads spec's form without opening anything.
func parse(spec string) (form, error) {
	if spec == "" {
		return form{}, option.Errorf(option.Ref("source"), " is empty: give "+Forms)
	}
	if scheme, rest, ok := strings.Cut(spec, ":"); ok {
		switch scheme {
		case "oci", "oci-layout":
			return form{kindOCI, rest}, nil
		case "docker-archive":
			return form{kindArchive, rest}, nil
		case "docker-daemon":
			return form{kindDaemon, rest}, nil
		case "registry", "docker":
			return form{kindRegistry, strings.TrimPrefix(rest, "//")}, nil
		}
	}
	if st, err := os.Stat(spec); err == nil {
		if st.IsDir() {
			return form{kindOCI, spec}, nil
		}
		return form{kindArchive, spec}, nil
	}
	ref, err := name.ParseReference(spec)
	if err != nil || looksLikePath(spec) {
		return form{}, fmt.Errorf("source %s: no such file or directory, and not an image reference: give %s", quote.Value(spec), Forms)
	}
	if namesRegistry(spec) {
		return form{kindRegistry, ref.String()}, nil
	}
	return form{kindDaemon, spec}, nil
}

func looksLikePath(s string) bool {
	return strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../") || strings.HasPrefix(s, "/") ||
		strings.HasPrefix(s, "~") || strings.HasSuffix(s, ".tar") || strings.HasSuffix(s, ".tar.gz")
}

// namesRegistry tells ghcr.io/acme/app (a registry) from acme/app (a local
// name), as docker does: the first part is a host if it has a dot or a port,
// or is localhost.
func namesRegistry(ref string) bool {
	first, _, ok := strings.Cut(ref, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

// pickPlatform narrows an index to the image for platform.
func pickPlatform(img *Image, platform string) (*Image, error) {
	want, err := v1.ParsePlatform(platform)
	if err == nil && (want.OS == "" || want.Architecture == "") {
		err = errors.New("OS and architecture are both needed")
	}
	if err != nil {
		return nil, fmt.Errorf("platform %s is not OS/ARCH[/VARIANT]", quote.Value(platform))
	}
	switch t := img.Taggable.(type) {
	case v1.ImageIndex:
		m, err := t.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("read index of %s: %w", img.Description, err)
		}
		var have []string
		for _, d := range m.Manifests {
			if d.Platform == nil || !d.MediaType.IsImage() {
				continue
			}
			if d.Platform.Satisfies(*want) {
				child, err := t.Image(d.Digest)
				if err != nil {
					return nil, fmt.Errorf("read %s image of %s: %w", platform, img.Description, err)
				}
				return &Image{Taggable: child, Description: fmt.Sprintf("%s, platform %s (%s)", img.Description, d.Platform, d.Digest)}, nil
			}
			have = append(have, d.Platform.String())
		}
		return nil, fmt.Errorf("platform %s is not in %s (it has %s)", platform, img.Description, strings.Join(have, ", "))
	case v1.Image:
		cf, err := t.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("read config of %s: %w", img.Description, err)
		}
		if p := cf.Platform(); p == nil || !p.Satisfies(*want) {
			return nil, fmt.Errorf("platform %s asked, but %s is a single %s/%s image", platform, img.Description, cf.OS, cf.Architecture)
		}
		return img, nil
	}
	return img, nil
}

// splitRef splits PATH[:REF] where PATH itself may contain colons and REF may
// too (app:1.0): the shortest prefix that exists on disk is the path.
func splitRef(s string) (path, ref string) {
	for i := 0; i < len(s); i++ {
		if s[i] != ':' {
			continue
		}
		if _, err := os.Stat(s[:i]); err == nil {
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

func openOCI(spec string, o Options) (*Image, error) {
	path, pick := spec, ""
	if i := strings.Index(spec, "@sha256:"); i >= 0 {
		path, pick = spec[:i], spec[i+1:]
	} else {
		path, pick = splitRef(spec)
	}
	lp, err := layout.FromPath(path)
	if err != nil {
		return nil, fmt.Errorf("source oci:%s: not an OCI image layout (no readable index.json): %w", path, err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("source oci:%s: %w", path, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("source oci:%s: read index.json: %w", path, err)
	}
	var chosen *v1.Descriptor
	switch {
	case pick != "" && strings.HasPrefix(pick, "sha256:"):
		for i, d := range m.Manifests {
			if d.Digest.String() == pick {
				chosen = &m.Manifests[i]
			}
		}
	case pick != "":
		for i, d := range m.Manifests {
			if d.Annotations["org.opencontainers.image.ref.name"] == pick {
				chosen = &m.Manifests[i]
			}
		}
	case len(m.Manifests) == 1:
		chosen = &m.Manifests[0]
	case len(m.Manifests) > 1 && oneNonReferrer(idx, m) >= 0:
		// A layout that holds the image and what refers to it (a
		// signature, an SBOM) names the image without a pick.
		chosen = &m.Manifests[oneNonReferrer(idx, m)]
	case len(m.Manifests) == 0:
		return nil, fmt.Errorf("source oci:%s: the layout holds no manifest", path)
	default:
		return nil, fmt.Errorf("source oci:%s holds %d manifests: pick one with oci:%s@DIGEST or oci:%s:REF (%s)", path, len(m.Manifests), path, path, listManifests(m))
	}
	if chosen == nil {
		return nil, fmt.Errorf("source oci:%s: no manifest matches %s (%s)", path, quote.Value(pick), listManifests(m))
	}
	desc := fmt.Sprintf("OCI layout %s (%s)", path, chosen.Digest)
	discover := func(_ context.Context, subjects []v1.Hash) ([]Referrer, error) {
		return layoutReferrers(idx, m, chosen.Digest, subjects)
	}
	switch {
	case chosen.MediaType.IsIndex():
		sub, err := idx.ImageIndex(chosen.Digest)
		if err != nil {
			return nil, fmt.Errorf("source oci:%s: %w", path, err)
		}
		return &Image{Taggable: sub, Description: desc + ", an index", discover: discover}, nil
	case chosen.MediaType.IsImage():
		img, err := idx.Image(chosen.Digest)
		if err != nil {
			return nil, fmt.Errorf("source oci:%s: %w", path, err)
		}
		return &Image{Taggable: img, Description: desc, discover: discover}, nil
	}
	return nil, fmt.Errorf("source oci:%s: manifest %s has media type %q, not an image or index", path, chosen.Digest, chosen.MediaType)
}

// oneNonReferrer is the index of the one entry of a layout that is neither
// an OCI referrer (it has a subject) nor a cosign-scheme tag, or -1.
func oneNonReferrer(idx v1.ImageIndex, m *v1.IndexManifest) int {
	found := -1
	for i, d := range m.Manifests {
		if isCosignTag(d.Annotations[ociRefName]) {
			continue
		}
		if sub, _ := subjectOf(idx, d); sub != nil {
			continue
		}
		if found >= 0 {
			return -1
		}
		found = i
	}
	return found
}

const ociRefName = "org.opencontainers.image.ref.name"

func isCosignTag(ref string) bool {
	if !strings.HasPrefix(ref, "sha256-") {
		return false
	}
	for _, suf := range cosignSuffixes {
		if strings.HasSuffix(ref, suf) {
			return true
		}
	}
	return false
}

// subjectOf reads the subject of a layout entry's manifest, nil when none.
func subjectOf(idx v1.ImageIndex, d v1.Descriptor) (*v1.Descriptor, remote.Taggable) {
	var t remote.Taggable
	var err error
	switch {
	case d.MediaType.IsIndex():
		t, err = idx.ImageIndex(d.Digest)
	case d.MediaType.IsImage():
		t, err = idx.Image(d.Digest)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, nil
	}
	raw, err := t.RawManifest()
	if err != nil {
		return nil, nil
	}
	var mf struct {
		Subject *v1.Descriptor `json:"subject"`
	}
	if json.Unmarshal(raw, &mf) != nil {
		return nil, t
	}
	return mf.Subject, t
}

// layoutReferrers finds, among a layout's entries other than the image, the
// manifests whose subject is one of subjects and the cosign-scheme tags of
// them.
func layoutReferrers(idx v1.ImageIndex, m *v1.IndexManifest, image v1.Hash, subjects []v1.Hash) ([]Referrer, error) {
	var out []Referrer
	for _, d := range m.Manifests {
		if d.Digest == image {
			continue
		}
		sub, t := subjectOf(idx, d)
		if t == nil {
			continue
		}
		ref := d.Annotations[ociRefName]
		for _, s := range subjects {
			switch {
			case sub != nil && sub.Digest == s:
				out = append(out, Referrer{Taggable: t, Digest: d.Digest})
			case isCosignTag(ref) && strings.HasPrefix(ref, cosignTag(s, "")):
				out = append(out, Referrer{Taggable: t, Digest: d.Digest, Tag: ref})
			default:
				continue
			}
			break
		}
	}
	return out, nil
}

func listManifests(m *v1.IndexManifest) string {
	var parts []string
	for _, d := range m.Manifests {
		s := d.Digest.String()
		if r := d.Annotations["org.opencontainers.image.ref.name"]; r != "" {
			s = r + " " + s
		}
		parts = append(parts, s)
	}
	return "it has: " + strings.Join(parts, ", ")
}

func openArchive(spec string) (*Image, error) {
	path, ref := splitRef(spec)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("source docker-archive:%s: %w", path, err)
	}
	var tag *name.Tag
	if ref != "" {
		// A REF is an image name inside the archive, e.g. app:1.0.
		t, err := name.NewTag(ref)
		if err != nil {
			return nil, fmt.Errorf("source docker-archive:%s: %s is not an image name in the archive", path, quote.Value(ref))
		}
		tag = &t
	}
	img, err := tarball.ImageFromPath(path, tag)
	if err != nil {
		return nil, fmt.Errorf("source docker-archive:%s: %w (a docker-archive holding several images needs docker-archive:PATH:NAME:TAG)", path, err)
	}
	// Reading the manifest now turns a corrupt archive into an error here,
	// before anything is pushed.
	if _, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("source docker-archive:%s: %w", path, err)
	}
	return &Image{Taggable: img, Description: "docker-archive " + filepath.Clean(path)}, nil
}

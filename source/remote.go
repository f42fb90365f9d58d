package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// openRemote opens an image already in a registry. Its layers stream from the
// source as they are pushed and, on the same registry, are mounted instead of
// copied (go-containerregistry's MountableLayer).
func openRemote(ctx context.Context, spec string, o Options) (*Image, error) {
	ref, err := name.ParseReference(spec)
	if err != nil {
		return nil, fmt.Errorf("source registry:%s: not an image reference: %w", spec, err)
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.NewMultiKeychain()
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
	if o.Transport != nil {
		opts = append(opts, remote.WithTransport(o.Transport))
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("source registry:%s: %w", ref, explainRemote(err, ref))
	}
	what := fmt.Sprintf("%s (%s)", ref, desc.Digest)
	discover := func(ctx context.Context, subjects []v1.Hash) ([]Referrer, error) {
		return remoteReferrers(ctx, ref.Context(), subjects, opts)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("source registry:%s: %w", ref, err)
		}
		return &Image{Taggable: idx, Description: what + ", an index", discover: discover}, nil
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("source registry:%s: %w", ref, err)
	}
	return &Image{Taggable: img, Description: what, discover: discover}, nil
}

// explainRemote says what to do about a source registry's refusal, before
// its raw answer (go-containerregistry prints the error body's details as a
// Go map).
func explainRemote(err error, ref name.Reference) error {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return err
	}
	host := ref.Context().RegistryStr()
	var what string
	switch terr.StatusCode {
	case http.StatusUnauthorized:
		what = fmt.Sprintf("%s asks for credentials to read it (401): give them in registry-auth (%s=USER:TOKEN), or docker login %s", host, host, host)
	case http.StatusForbidden:
		what = fmt.Sprintf("%s refused to let these credentials read it (403): check they can pull %s", host, ref.Context())
	case http.StatusNotFound:
		what = fmt.Sprintf("%s has no such image (404): check the name and the tag", host)
	default:
		return err
	}
	var codes []string
	for _, d := range terr.Errors {
		codes = append(codes, string(d.Code))
	}
	if len(codes) > 0 {
		what += " [" + strings.Join(codes, ", ") + "]"
	}
	return &explained{what: what, err: err}
}

// explained is an error whose text says what to do, and wraps the original.
type explained struct {
	what string
	err  error
}

func (e *explained) Error() string { return e.what }
func (e *explained) Unwrap() error { return e.err }

// Registry returns the registry a registry: source reads from, or "" for a
// source of another form (or one that does not parse).
func Registry(spec string) string {
	f, err := parse(strings.TrimSpace(spec))
	if err != nil || f.kind != kindRegistry {
		return ""
	}
	ref, err := name.ParseReference(f.rest)
	if err != nil {
		return ""
	}
	return ref.Context().RegistryStr()
}

// remoteReferrers finds the referrers of subjects in repo: through the
// referrers API, or the fallback tag sha256-<hex> where the registry has no
// API (ghcr.io, Distribution), as go-containerregistry reads them; and the
// cosign-scheme tags sha256-<hex>.sig, .att and .sbom. Referrers of
// referrers (a signature of an SBOM) are not followed.
func remoteReferrers(ctx context.Context, repo name.Repository, subjects []v1.Hash, opts []remote.Option) ([]Referrer, error) {
	var out []Referrer
	seen := make(map[string]bool)
	add := func(d v1.Hash, tag string, get name.Reference) error {
		key := d.String() + " " + tag
		if seen[key] {
			return nil
		}
		seen[key] = true
		desc, err := remote.Get(get, opts...)
		if err != nil {
			return fmt.Errorf("read %s: %w", get, err)
		}
		var t remote.Taggable
		if desc.MediaType.IsIndex() {
			t, err = desc.ImageIndex()
		} else {
			t, err = desc.Image()
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", get, err)
		}
		out = append(out, Referrer{Taggable: t, Digest: desc.Digest, Tag: tag})
		return nil
	}
	for _, s := range subjects {
		idx, err := remote.Referrers(repo.Digest(s.String()), opts...)
		if err != nil {
			return nil, fmt.Errorf("list the referrers of %s: %w", s, err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("list the referrers of %s: %w", s, err)
		}
		for _, d := range m.Manifests {
			if err := add(d.Digest, "", repo.Digest(d.Digest.String())); err != nil {
				return nil, err
			}
		}
		for _, suf := range cosignSuffixes {
			tag := repo.Tag(cosignTag(s, suf))
			head, err := remote.Head(tag, opts...)
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("look up %s: %w", tag, err)
			}
			if err := add(head.Digest, tag.TagStr(), tag); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

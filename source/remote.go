package source

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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
		return nil, fmt.Errorf("source registry:%s: %w", ref, err)
	}
	what := fmt.Sprintf("%s (%s)", ref, desc.Digest)
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("source registry:%s: %w", ref, err)
		}
		return &Image{Taggable: idx, Description: what + ", an index"}, nil
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("source registry:%s: %w", ref, err)
	}
	return &Image{Taggable: img, Description: what}, nil
}

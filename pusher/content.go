package pusher

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// content is what a push writes to every repository: the blobs, an index's
// child manifests (children before parents), and the manifest the tags name.
type content struct {
	// name is the image's name in the results (Image.Name).
	name      string
	top       remote.Taggable
	digest    v1.Hash
	raw       []byte
	mediaType types.MediaType
	blobs     []blob
	children  []child
	// referrers travel with the image to every repository.
	referrers []Referrer
}

type blob struct {
	digest v1.Hash
	size   int64
	layer  v1.Layer
}

type child struct {
	digest    v1.Hash
	raw       []byte
	mediaType types.MediaType
	isIndex   bool
}

// manifest is what a manifest PUT needs of an image or index.
type manifest interface {
	RawManifest() ([]byte, error)
	MediaType() (types.MediaType, error)
	Digest() (v1.Hash, error)
}

func readManifest(t any) (v1.Hash, []byte, types.MediaType, error) {
	m, ok := t.(manifest)
	if !ok {
		return v1.Hash{}, nil, "", fmt.Errorf("%T is neither an image nor an index", t)
	}
	d, err := m.Digest()
	if err != nil {
		return v1.Hash{}, nil, "", fmt.Errorf("compute manifest digest: %w", err)
	}
	raw, err := m.RawManifest()
	if err != nil {
		return v1.Hash{}, nil, "", fmt.Errorf("read manifest: %w", err)
	}
	mt, err := m.MediaType()
	if err != nil {
		return v1.Hash{}, nil, "", fmt.Errorf("read manifest media type: %w", err)
	}
	return d, raw, mt, nil
}

func contentOf(t remote.Taggable) (*content, error) {
	d, raw, mt, err := readManifest(t)
	if err != nil {
		return nil, err
	}
	c := &content{top: t, digest: d, raw: raw, mediaType: mt}
	seen := make(map[v1.Hash]bool)
	switch v := t.(type) {
	case v1.Image:
		err = c.addImage(v, seen)
	case v1.ImageIndex:
		err = c.addIndex(v, seen)
	default:
		err = fmt.Errorf("%T is neither an image nor an index", t)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// addBlob adds a layer or config. A non-distributable layer (Windows base
// layers: "foreign", or OCI's "nondistributable") stays where its URLs
// point: registries refuse it or must not hold it, and go-containerregistry
// and oras skip it too.
func (c *content) addBlob(l v1.Layer, seen map[v1.Hash]bool) error {
	h, err := l.Digest()
	if err != nil {
		return fmt.Errorf("compute blob digest: %w", err)
	}
	if seen[h] {
		return nil
	}
	if mt, err := l.MediaType(); err == nil && !mt.IsDistributable() {
		seen[h] = true
		return nil
	}
	size, err := l.Size()
	if err != nil {
		return fmt.Errorf("blob %s size: %w", h, err)
	}
	seen[h] = true
	c.blobs = append(c.blobs, blob{digest: h, size: size, layer: l})
	return nil
}

func (c *content) addImage(img v1.Image, seen map[v1.Hash]bool) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("read layers: %w", err)
	}
	for _, l := range layers {
		if err := c.addBlob(l, seen); err != nil {
			return err
		}
	}
	cfg, err := partial.ConfigLayer(img)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return c.addBlob(cfg, seen)
}

func (c *content) addIndex(idx v1.ImageIndex, seen map[v1.Hash]bool) error {
	m, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("read index manifest: %w", err)
	}
	for _, desc := range m.Manifests {
		if seen[desc.Digest] {
			continue
		}
		var t any
		switch {
		case desc.MediaType.IsIndex():
			sub, err := idx.ImageIndex(desc.Digest)
			if err != nil {
				return fmt.Errorf("read index %s: %w", desc.Digest, err)
			}
			if err := c.addIndex(sub, seen); err != nil {
				return err
			}
			t = sub
		case desc.MediaType.IsImage():
			img, err := idx.Image(desc.Digest)
			if err != nil {
				return fmt.Errorf("read image %s: %w", desc.Digest, err)
			}
			if err := c.addImage(img, seen); err != nil {
				return err
			}
			t = img
		default:
			return fmt.Errorf("index entry %s has media type %q, which tagpush cannot push", desc.Digest, desc.MediaType)
		}
		d, raw, mt, err := readManifest(t)
		if err != nil {
			return err
		}
		c.children = append(c.children, child{digest: d, raw: raw, mediaType: mt, isIndex: desc.MediaType.IsIndex()})
		seen[desc.Digest] = true
	}
	return nil
}

// childrenByKind splits an index's children into platform images, which can
// be written in any order, and indexes, which must follow their own children
// (they are listed after them).
func (c *content) childrenByKind() (images, indexes []child) {
	for _, ch := range c.children {
		if ch.isIndex {
			indexes = append(indexes, ch)
		} else {
			images = append(images, ch)
		}
	}
	return images, indexes
}

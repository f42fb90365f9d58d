package pusher

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// content is what a push writes to every repository: the blobs, an index's
// child manifests (children before parents), and the manifest the tags name.
type content struct {
	top      remote.Taggable
	digest   v1.Hash
	blobs    []blob
	children []child
	// referrers travel with the image to every repository.
	referrers []Referrer
}

type blob struct {
	digest v1.Hash
	size   int64
	layer  v1.Layer
}

type child struct {
	digest v1.Hash
	t      remote.Taggable
}

func contentOf(t remote.Taggable) (*content, error) {
	d, ok := t.(interface{ Digest() (v1.Hash, error) })
	if !ok {
		return nil, fmt.Errorf("%T is neither an image nor an index", t)
	}
	digest, err := d.Digest()
	if err != nil {
		return nil, fmt.Errorf("compute manifest digest: %w", err)
	}
	c := &content{top: t, digest: digest}
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

func (c *content) addBlob(l v1.Layer, seen map[v1.Hash]bool) error {
	h, err := l.Digest()
	if err != nil {
		return fmt.Errorf("compute blob digest: %w", err)
	}
	if seen[h] {
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
		switch {
		case desc.MediaType.IsIndex():
			sub, err := idx.ImageIndex(desc.Digest)
			if err != nil {
				return fmt.Errorf("read index %s: %w", desc.Digest, err)
			}
			if err := c.addIndex(sub, seen); err != nil {
				return err
			}
			c.children = append(c.children, child{digest: desc.Digest, t: sub})
		case desc.MediaType.IsImage():
			img, err := idx.Image(desc.Digest)
			if err != nil {
				return fmt.Errorf("read image %s: %w", desc.Digest, err)
			}
			if err := c.addImage(img, seen); err != nil {
				return err
			}
			c.children = append(c.children, child{digest: desc.Digest, t: img})
		default:
			return fmt.Errorf("index entry %s has media type %q, which tagpush cannot push", desc.Digest, desc.MediaType)
		}
		seen[desc.Digest] = true
	}
	return nil
}

// childrenByKind splits an index's children into platform images, which can
// be written in any order, and indexes, which must follow their own children
// (they are listed after them).
func (c *content) childrenByKind() (images, indexes []child) {
	for _, ch := range c.children {
		if _, ok := ch.t.(v1.ImageIndex); ok {
			indexes = append(indexes, ch)
		} else {
			images = append(images, ch)
		}
	}
	return images, indexes
}

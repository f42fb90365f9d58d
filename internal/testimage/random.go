package testimage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// WriteRandomLayout writes an OCI image layout at dir holding one image of
// layers layers, each layerBytes of seeded random bytes (incompressible, like
// the build output that dominates real images). Blobs are streamed to disk, so
// an image of any size takes little memory to make. It returns the manifest digest.
func WriteRandomLayout(dir string, layers int, layerBytes int64, seed uint64) (v1.Hash, error) {
	return WriteRandomIndexLayout(dir, nil, layers, layerBytes, seed)
}

// WriteRandomIndexLayout is WriteRandomLayout for a multi-platform image: an
// index of one image per platform ("linux/arm64"), each with its own random
// layers. With no platforms it writes a single linux/amd64 image. It returns
// the digest of what index.json names: the index, or the single image.
func WriteRandomIndexLayout(dir string, platforms []string, layers int, layerBytes int64, seed uint64) (v1.Hash, error) {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return v1.Hash{}, err
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	top := v1.Descriptor{}
	if len(platforms) == 0 {
		d, err := writeRandomImage(blobs, rng, "linux/amd64", layers, layerBytes)
		if err != nil {
			return v1.Hash{}, err
		}
		top = d
	} else {
		idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
		for _, p := range platforms {
			d, err := writeRandomImage(blobs, rng, p, layers, layerBytes)
			if err != nil {
				return v1.Hash{}, err
			}
			pl, err := v1.ParsePlatform(p)
			if err != nil {
				return v1.Hash{}, err
			}
			d.Platform = pl
			idx.Manifests = append(idx.Manifests, d)
		}
		raw, err := json.Marshal(idx)
		if err != nil {
			return v1.Hash{}, err
		}
		h, err := writeBlob(blobs, bytes.NewReader(raw))
		if err != nil {
			return v1.Hash{}, err
		}
		top = v1.Descriptor{MediaType: types.OCIImageIndex, Size: int64(len(raw)), Digest: h}
	}
	outer := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{top}}
	idxBytes, err := json.Marshal(outer)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idxBytes, 0o644); err != nil {
		return v1.Hash{}, err
	}
	return top.Digest, os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// writeRandomImage writes one image's layers, config and manifest into blobs
// and returns the manifest's descriptor.
func writeRandomImage(blobs string, rng *rand.Rand, platform string, layers int, layerBytes int64) (v1.Descriptor, error) {
	pl, err := v1.ParsePlatform(platform)
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfg := v1.ConfigFile{OS: pl.OS, Architecture: pl.Architecture, Variant: pl.Variant, RootFS: v1.RootFS{Type: "layers"}}
	var descs []v1.Descriptor
	for i := range layers {
		h, err := writeBlob(blobs, &randomReader{rng: rng, left: layerBytes})
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("layer %d: %w", i, err)
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, h)
		descs = append(descs, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: layerBytes, Digest: h})
	}
	cfgBytes, err := json.Marshal(cfg)
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfgHash, err := writeBlob(blobs, bytes.NewReader(cfgBytes))
	if err != nil {
		return v1.Descriptor{}, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfgBytes)), Digest: cfgHash},
		Layers:        descs,
	}
	mBytes, err := json.Marshal(m)
	if err != nil {
		return v1.Descriptor{}, err
	}
	mHash, err := writeBlob(blobs, bytes.NewReader(mBytes))
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(mBytes)), Digest: mHash}, nil
}

func writeBlob(dir string, r io.Reader) (v1.Hash, error) {
	tmp, err := os.CreateTemp(dir, "tmp-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.Remove(tmp.Name())
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, sum), r); err != nil {
		tmp.Close()
		return v1.Hash{}, err
	}
	if err := tmp.Close(); err != nil {
		return v1.Hash{}, err
	}
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum.Sum(nil))}
	return h, os.Rename(tmp.Name(), filepath.Join(dir, h.Hex))
}

type randomReader struct {
	rng  *rand.Rand
	left int64
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for i := 0; i < len(p); i += 8 {
		v := r.rng.Uint64()
		for j := 0; j < 8 && i+j < len(p); j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	r.left -= int64(len(p))
	return len(p), nil
}

package source

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// engineImage is an image read from a Docker engine's export: its config as
// the engine keeps it, and layers that are spooled files, blobs the
// destination holds (whatever compressed them: docker push, tagpush), or
// blobs as the engine kept them.
type engineImage struct {
	rawConfig   []byte
	config      *v1.ConfigFile
	layers      []v1.Layer
	rawManifest []byte
	manifest    *v1.Manifest
	digest      v1.Hash
}

var _ v1.Image = (*engineImage)(nil)

// writeManifest writes the manifest docker push would for these layers: the
// Docker media types, unless a layer is only an OCI one (zstd, or a blob the
// destination holds under an OCI type), when the manifest, its config and
// every gzip layer take the OCI types instead.
func (img *engineImage) writeManifest() error {
	oci := false
	for _, l := range img.layers {
		mt, err := l.MediaType()
		if err != nil {
			return err
		}
		oci = oci || (mt != types.DockerLayer && mt != types.DockerForeignLayer && mt != types.DockerUncompressedLayer)
	}
	m := &v1.Manifest{SchemaVersion: 2, MediaType: types.DockerManifestSchema2}
	m.Config = v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(img.rawConfig)), Digest: sha256Of(img.rawConfig)}
	if oci {
		m.MediaType, m.Config.MediaType = types.OCIManifestSchema1, types.OCIConfigJSON
	}
	for i, l := range img.layers {
		d, err := partial.Descriptor(l)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		desc := v1.Descriptor{MediaType: d.MediaType, Size: d.Size, Digest: d.Digest, URLs: d.URLs}
		if oci && desc.MediaType == types.DockerLayer {
			desc.MediaType = types.OCILayer
		}
		if s, ok := l.(*spooledLayer); ok {
			s.mediaType = desc.MediaType
		}
		m.Layers = append(m.Layers, desc)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return img.useManifest(raw, m)
}

func (img *engineImage) useManifest(raw []byte, m *v1.Manifest) error {
	img.rawManifest, img.manifest, img.digest = raw, m, sha256Of(raw)
	return nil
}

func sha256Of(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func (img *engineImage) Layers() ([]v1.Layer, error)         { return img.layers, nil }
func (img *engineImage) MediaType() (types.MediaType, error) { return img.manifest.MediaType, nil }
func (img *engineImage) Size() (int64, error)                { return int64(len(img.rawManifest)), nil }
func (img *engineImage) ConfigName() (v1.Hash, error)        { return img.manifest.Config.Digest, nil }
func (img *engineImage) ConfigFile() (*v1.ConfigFile, error) { return img.config.DeepCopy(), nil }
func (img *engineImage) RawConfigFile() ([]byte, error)      { return img.rawConfig, nil }
func (img *engineImage) Digest() (v1.Hash, error)            { return img.digest, nil }
func (img *engineImage) Manifest() (*v1.Manifest, error)     { return img.manifest.DeepCopy(), nil }
func (img *engineImage) RawManifest() ([]byte, error)        { return img.rawManifest, nil }
func (img *engineImage) LayerByDiffID(d v1.Hash) (v1.Layer, error) {
	for i, l := range img.config.RootFS.DiffIDs {
		if l == d {
			return img.layers[i], nil
		}
	}
	return nil, fmt.Errorf("the image has no layer %s", d)
}

func (img *engineImage) LayerByDigest(d v1.Hash) (v1.Layer, error) {
	if d == img.manifest.Config.Digest {
		return partial.ConfigLayer(img)
	}
	for i, desc := range img.manifest.Layers {
		if desc.Digest == d {
			return img.layers[i], nil
		}
	}
	return nil, fmt.Errorf("the image has no blob %s", d)
}

// spooledLayer is a layer of an export in a file of its own, compressed.
type spooledLayer struct {
	s         spooled
	diffID    v1.Hash
	mediaType types.MediaType
}

func (l *spooledLayer) Digest() (v1.Hash, error)            { return l.s.digest, nil }
func (l *spooledLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *spooledLayer) Size() (int64, error)                { return l.s.size, nil }
func (l *spooledLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *spooledLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.s.file) }

func (l *spooledLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.s.file)
	if err != nil {
		return nil, err
	}
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	if !isGzip(head[:n]) {
		f.Close()
		return nil, fmt.Errorf("layer %s is not gzip: only its compressed form is kept", l.s.digest)
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &readCloser{Reader: z, close: f.Close}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

// Package testimage builds the images tests, the demo and the benchmark push:
// a small deterministic image (the one in testdata/), multi-platform indexes,
// and large images of random bytes written straight to disk.
package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// tarLayer returns an uncompressed-tar layer holding files, with fixed times
// so that the same files always give the same digest.
func tarLayer(files map[string]string, order ...string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range order {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer), nil
}

// Small returns the small image in testdata/: two layers and a config, a few
// kilobytes, for platform os/arch. variant makes images of other platforms differ.
func Small(os, arch string) (v1.Image, error) {
	base, err := tarLayer(map[string]string{
		"etc/os-release": "NAME=tagpush-test\nID=tagpush\n",
	}, "etc/os-release")
	if err != nil {
		return nil, err
	}
	app, err := tarLayer(map[string]string{
		"app/hello.txt": "hello from tagpush's test image\n",
		"app/platform":  os + "/" + arch + "\n",
	}, "app/hello.txt", "app/platform")
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, base, app)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = os, arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Cmd = []string{"/bin/cat", "/app/hello.txt"}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.title": "tagpush test image"}
	for i := range cf.History {
		cf.History[i].Created = v1.Time{Time: epoch}
	}
	return mutate.ConfigFile(img, cf)
}

// Index returns an index of Small images, one per platform ("linux/amd64").
func Index(platforms ...string) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			return nil, err
		}
		img, err := Small(plat.OS, plat.Architecture)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	return idx, nil
}

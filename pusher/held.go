package pusher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tagpush/tagpush/registry"
)

// heldAlready reads each tag of an image whose source knows its ID without
// opening it, one at a time, and stops at the first that does not hold the
// image: a manifest whose digest is the ID, or whose config's is (a Docker
// engine's image ID, which docker push and tagpush both keep as the config).
// When every tag holds it, the tags are unchanged (each at the digest the
// read showed) and the image is never opened: no export, no compression.
// Otherwise the run goes on as usual, having spent a read or two.
func (r *run) heldAlready(ctx context.Context, img opened, start time.Time) (ImageResult, []*tagRun, bool) {
	id, err := v1.NewHash(img.id)
	if err != nil || len(img.tags) == 0 {
		return ImageResult{}, nil, false
	}
	digests := make([]v1.Hash, len(img.tags))
	for i, tag := range img.tags {
		rs := r.repo(tag.Repository)
		var d v1.Hash
		held := false
		_, _, err := r.reads(ctx, rs.reg, "read "+tag.String(), func(ctx context.Context) error {
			raw, _, err := rs.rc.Manifest(ctx, tag.TagStr())
			if registry.IsStatus(err, http.StatusNotFound) {
				return nil // not there: not held, and no failure
			}
			if err != nil {
				return err
			}
			d, held = holds(raw, id)
			return nil
		})
		if err != nil || !held {
			return ImageResult{}, nil, false
		}
		digests[i] = d
	}
	if !r.planning {
		r.passBarriers(img.tags)
	}
	runs := make([]*tagRun, len(img.tags))
	for i, tag := range img.tags {
		res := Result{Tag: tag, Image: img.name, Status: StatusUnchanged, Digest: digests[i].String(), Duration: r.cfg.now().Sub(start)}
		runs[i] = &tagRun{tag: tag, start: start, unchanged: true, result: &res}
		if r.cfg.events.TagDone != nil {
			r.cfg.events.TagDone(res)
		}
	}
	return ImageResult{Name: img.name, Digest: digests[0].String()}, runs, true
}

// holds reports whether the manifest raw is the image id names: its digest,
// or its config's. It returns the manifest's digest.
func holds(raw []byte, id v1.Hash) (v1.Hash, bool) {
	sum := sha256.Sum256(raw)
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if d == id {
		return d, true
	}
	var m struct {
		Config *v1.Descriptor `json:"config"`
	}
	if json.Unmarshal(raw, &m) != nil || m.Config == nil {
		return d, false
	}
	return d, m.Config.Digest == id
}

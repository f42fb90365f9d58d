package job_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tagpush/tagpush/internal/testimage"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/job"
	"github.com/tagpush/tagpush/report"
)

// artifact is an OCI artifact about subject, as cosign and in-toto tools
// attach them: a small image whose config says what it is.
func artifact(t *testing.T, kind types.MediaType, subject v1.Descriptor) v1.Image {
	t.Helper()
	base, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Subject(mutate.ConfigMediaType(base, kind), subject).(v1.Image)
}

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Signatures, attestations and SBOMs travel with the image: a registry:
// source with a signature and an attestation attached (OCI referrers, on a
// registry without the referrers API, so through the fallback tag) and a
// cosign-scheme .sig tag, pushed to another repository of the same registry
// and to a second registry. A second push adds no duplicate entries.
func TestReferrersTravelWithTheImage(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	other := testregistry.ForTest(t, testregistry.Options{})
	img, err := testimage.Small("linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	src, _ := name.NewTag(reg.Host + "/src/app:1")
	if err := remote.Write(src, img); err != nil {
		t.Fatal(err)
	}
	subject, err := partial.Descriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	sig := artifact(t, "application/vnd.dev.cosign.simplesigning.v1+json", *subject)
	att := artifact(t, "application/vnd.in-toto+json", *subject)
	for _, a := range []v1.Image{sig, att} {
		if err := remote.Write(src.Context().Digest(digestOf(t, a).String()), a); err != nil {
			t.Fatal(err)
		}
	}
	cosignSig, err := random.Image(32, 1)
	if err != nil {
		t.Fatal(err)
	}
	sigTag := "sha256-" + subject.Digest.Hex + ".sig"
	if err := remote.Write(src.Context().Tag(sigTag), cosignSig); err != nil {
		t.Fatal(err)
	}

	tags := []string{reg.Host + "/dst/app:1", reg.Host + "/dst/app:2", other.Host + "/dst/app:1"}
	for run := 1; run <= 2; run++ {
		r := newRunner(t, map[string]string{"source": "registry:" + src.String(), "tags": strings.Join(tags, "\n")})
		if code := r.run(t); code != job.ExitOK {
			t.Fatalf("run %d: exit %d\n%s", run, code, &r.stdout)
		}
		var results []report.Entry
		if err := json.Unmarshal([]byte(r.outputs(t)["results"]), &results); err != nil {
			t.Fatal(err)
		}
		for _, e := range results {
			if e.Referrers != 3 {
				t.Errorf("run %d: %s reports %d referrers, want 3 (signature, attestation, .sig tag)", run, e.Tag, e.Referrers)
			}
		}
		for _, repo := range []string{reg.Host + "/dst/app", other.Host + "/dst/app"} {
			dst, _ := name.NewRepository(repo)
			idx, err := remote.Referrers(dst.Digest(subject.Digest.String()))
			if err != nil {
				t.Fatal(err)
			}
			m, _ := idx.IndexManifest()
			got := map[string]bool{}
			for _, d := range m.Manifests {
				got[d.Digest.String()] = true
			}
			if len(m.Manifests) != 2 || !got[digestOf(t, sig).String()] || !got[digestOf(t, att).String()] {
				t.Errorf("run %d: %s lists %d referrers %v, want the signature and the attestation once each", run, repo, len(m.Manifests), got)
			}
			if d, err := remote.Head(dst.Tag(sigTag)); err != nil || d.Digest != digestOf(t, cosignSig) {
				t.Errorf("run %d: %s has no %s tag at the signature's digest: %v", run, repo, sigTag, err)
			}
		}
	}
}

// overwrite: false through the job: the tag that points elsewhere keeps its
// digest and fails, the new one is pushed, and the step exits 1.
func TestOverwriteFalseExitsOne(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	other, err := testimage.Small("linux", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	taken, _ := name.NewTag(reg.Host + "/acme/app:1.4")
	if err := remote.Write(taken, other); err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, map[string]string{"source": ociSource, "tags": taken.String() + "\n" + reg.Host + "/acme/app:1.5", "overwrite": "false"})
	if code := r.run(t); code != job.ExitFailed {
		t.Fatalf("exit %d, want 1\n%s", code, &r.stdout)
	}
	out := r.outputs(t)
	if out["failed"] != taken.String() || out["pushed"] != reg.Host+"/acme/app:1.5" || !strings.Contains(out["results"], "exists at "+digestOf(t, other).String()+"; overwrite is false") {
		t.Errorf("outputs: failed %q, pushed %q, results %s", out["failed"], out["pushed"], out["results"])
	}
	if d, err := remote.Head(taken); err != nil || d.Digest != digestOf(t, other) {
		t.Errorf("%s now resolves to %v (%v), want it left at %s", taken, d, err, digestOf(t, other))
	}
}

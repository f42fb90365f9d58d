package job_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/tagpush/tagpush/internal/faults"
	"github.com/tagpush/tagpush/internal/testregistry"
	"github.com/tagpush/tagpush/job"
	"github.com/tagpush/tagpush/report"
)

// Two images in one step: each tag names its source in the results, the
// digests output maps each source to its digest, the summary has a heading
// per image; one image whose repository refuses the push fails its own tags
// (exit 1), the other is pushed.
func TestImagesInOneStep(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{Faults: faults.Config{DenyRepo: "acme/locked", DenyStatus: 403}})
	const archive = "docker-archive:../testdata/image.tar"
	r := newRunner(t, map[string]string{"images": "# two services\n" +
		ociSource + " -> " + reg.Host + "/acme/api:1.4, " + reg.Host + "/acme/api:latest\n" +
		archive + " -> " + reg.Host + "/acme/web:1.4\n"})
	mustRun(t, r)
	out := r.outputs(t)
	var digests map[string]string
	if err := json.Unmarshal([]byte(out["digests"]), &digests); err != nil || len(digests) != 2 || digests[ociSource] != sourceDigest(t) || digests[archive] == "" {
		t.Errorf("digests output %q (%v); want both sources, %s for %s", out["digests"], err, sourceDigest(t), ociSource)
	}
	var results []report.Entry
	if err := json.Unmarshal([]byte(out["results"]), &results); err != nil || len(results) != 3 {
		t.Fatalf("results %q: %v", out["results"], err)
	}
	for _, e := range results {
		want := ociSource
		if strings.Contains(e.Tag, "/acme/web:") {
			want = archive
		}
		if e.Source != want || e.Status != "pushed" || e.Digest != digests[want] {
			t.Errorf("result %+v, want pushed from %s", e, want)
		}
	}
	var transfer map[string]struct {
		Uploaded int   `json:"blobs_uploaded"`
		Bytes    int64 `json:"bytes_uploaded"`
	}
	if err := json.Unmarshal([]byte(out["transfer"]), &transfer); err != nil || transfer[reg.Host].Uploaded == 0 || transfer[reg.Host].Bytes == 0 {
		t.Errorf("transfer output %q (%v); want the blobs uploaded to %s", out["transfer"], err, reg.Host)
	}
	summary, _ := os.ReadFile(r.report)
	for _, want := range []string{"3 of 3 tags pushed (2 images)", "sent to " + reg.Host + ": ", "sent for " + ociSource + ": ", "#### " + ociSource + ": 2 of 2 tags at the digest", "#### " + archive + ": 1 of 1 tags at the digest"} {
		if !strings.Contains(string(summary), want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}

	r = newRunner(t, map[string]string{"images": ociSource + " -> " + reg.Host + "/acme/api:2\n" + archive + " -> " + reg.Host + "/acme/locked:2\n"})
	if code := r.run(t); code != job.ExitFailed {
		t.Fatalf("exit %d, want 1 (one image's tag refused)\n%s", code, &r.stdout)
	}
	out = r.outputs(t)
	if out["pushed"] != reg.Host+"/acme/api:2" || out["failed"] != reg.Host+"/acme/locked:2" {
		t.Errorf("pushed %q, failed %q", out["pushed"], out["failed"])
	}
}

// Every line is checked before anything is pushed: a source that does not
// exist, or images beside source and tags, is bad input (exit 2) that
// names the line, and the registry sees nothing.
func TestImagesBadInputPushesNothing(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	good := ociSource + " -> " + reg.Host + "/acme/api:1"
	for _, tt := range []struct {
		name   string
		inputs map[string]string
		want   string
	}{
		{"missing source on line 2", map[string]string{"images": good + "\noci:./no/such/dir -> " + reg.Host + "/acme/web:1"}, "images line 2: source"},
		{"no arrow", map[string]string{"images": good + "\n" + ociSource + " " + reg.Host + "/acme/web:1"}, `images line 2`},
		{"with source and tags", map[string]string{"images": good, "source": ociSource, "tags": reg.Host + "/acme/x:1"}, "images is given with source or tags"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg.Faults.Reset(faults.Config{})
			r := newRunner(t, tt.inputs)
			if code := r.run(t); code != job.ExitBadInput {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(r.stdout.String(), tt.want) {
				t.Errorf("log does not say %q:\n%s", tt.want, &r.stdout)
			}
			if n := reg.Faults.Stats().Requests; n != 0 {
				t.Errorf("the registry got %d requests", n)
			}
		})
	}
}

// atomic: true holds a release's floating tags back when one of its new
// tags fails: the workflow's latest keeps the previous release, the log and
// the results say so, and the run fails.
func TestAtomicInputHoldsFloatingTags(t *testing.T) {
	reg := testregistry.ForTest(t, testregistry.Options{})
	const archive = "docker-archive:../testdata/image.tar"
	mustRun(t, newRunner(t, map[string]string{"source": archive, "tags": reg.Host + "/acme/rel:latest"}))
	reg.Faults.Reset(faults.Config{DenyTagPut: "acme/rel:1.4.3"})
	r := newRunner(t, map[string]string{"source": ociSource, "tags": reg.Host + "/acme/rel:1.4.3\n" + reg.Host + "/acme/rel:latest", "atomic": "true"})
	if code := r.run(t); code != job.ExitFailed {
		t.Fatalf("exit %d, want 1:\n%s", code, &r.stdout)
	}
	out := r.outputs(t)
	var results []report.Entry
	if err := json.Unmarshal([]byte(out["results"]), &results); err != nil || len(results) != 2 {
		t.Fatalf("results %q: %v", out["results"], err)
	}
	if e := results[1]; e.Status != "failed" || !strings.Contains(e.Error, "held back at sha256:") {
		t.Errorf("latest: %+v; want failed, held back", e)
	}
	if !strings.Contains(r.stdout.String(), "held back at") {
		t.Errorf("the log does not say latest was held back:\n%s", &r.stdout)
	}
	if puts := reg.Faults.Stats().ManifestPutTimes["/v2/acme/rel/manifests/latest"]; len(puts) != 0 {
		t.Errorf("latest was written %d times", len(puts))
	}
}

// Package faults is an HTTP layer in front of a registry that injects the
// failures real registries produce (ghcr.io's 500s under parallel writes, 429
// with Retry-After, connections reset mid-upload, slow answers, denied
// repositories) and shapes traffic like a CI runner talking to a remote
// registry (latency per request, an upload bandwidth cap). Faults are drawn
// from a seeded source, so a run can be repeated. It counts requests, bytes and
// injected faults so tests and the benchmark can assert on them.
//
// It is test and demo support: tagpush itself never uses it.
package faults

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Config says which faults to inject and how to shape traffic.
type Config struct {
	// Seed makes random faults repeatable.
	Seed uint64
	// MaxWrites, when positive, answers 500 to a write (POST, PATCH, PUT) that
	// arrives while MaxWrites others are in flight: ghcr.io under parallel pushes.
	MaxWrites int
	// WriteErrorRate is the chance that any write gets a 500.
	WriteErrorRate float64
	// TooManyRate is the chance that a write gets a 429.
	TooManyRate float64
	// TooManyFirst answers 429 to the first n manifest PUTs, whatever the rate.
	TooManyFirst int
	// RetryAfter is sent as the Retry-After header of a 429, and of the
	// answers FailWrites sends ("2", an HTTP date).
	RetryAfter string
	// GHCRBody puts the wait in the error body as ghcr.io does
	// ("retry-after: 12.5ms, allowed: 2000/minute") instead of the header.
	GHCRBody string
	// ResetFirst resets the connection in the middle of the first n requests
	// that carry blob content (a PATCH, or a PUT with the whole blob).
	ResetFirst int
	// ResetRate is the chance that a request carrying blob content is reset midway.
	ResetRate float64
	// LoseUploadFirst answers the first n requests carrying blob content with 404
	// BLOB_UPLOAD_UNKNOWN: ghcr.io losing an upload session under load.
	LoseUploadFirst int
	// FailWrites answers every write with this status (e.g. 500).
	FailWrites int
	// FailWritesFirst answers the first n writes 500, whatever MaxWrites
	// and WriteErrorRate draw.
	FailWritesFirst int
	// FailMessage, when set, is the message of the errors FailWrites sends:
	// registry text that reaches the log.
	FailMessage string
	// FailAll answers every request, reads included, with this status (e.g. 503).
	FailAll int
	// SecondaryRateLimitFirst answers the first n manifest PUTs with ghcr.io's
	// 403 DENIED "You have exceeded a secondary rate limit".
	SecondaryRateLimitFirst int
	// ReadLag answers GET and HEAD of a manifest path with 404, and leaves the
	// tag out of the repository's tag list, for this long
	// after a PUT to it was accepted: ghcr.io and S3-backed registries.
	ReadLag time.Duration
	// LoseAnswerFirst lets the first n manifest PUTs reach the registry, which
	// commits them, and answers the client 500 instead (or resets the
	// connection, with LoseAnswerReset): an answer lost on the way back.
	LoseAnswerFirst int
	LoseAnswerReset bool
	// RedirectManifestPuts answers every manifest PUT with a 307 to itself.
	RedirectManifestPuts bool
	// EarlyAnswerFirst answers the first n requests carrying blob content with 500 before
	// reading any of their body, as a registry or proxy that is overloaded does.
	EarlyAnswerFirst int
	// Outage answers every write with 503 for Outage, starting OutageAfter
	// after the first request the layer sees: a registry incident mid-push.
	OutageAfter, Outage time.Duration
	// StaleReadsFirst answers the first n GET or HEAD of a manifest by tag
	// with 404, as a replica that has not seen the tag yet.
	StaleReadsFirst int
	// ImmutableTags answers a manifest PUT to a tag that exists with 400
	// TAG_INVALID, as ECR does for an immutable repository.
	ImmutableTags bool
	// RefuseMonolithic answers a PUT that carries a whole blob with 405, as
	// a registry that only takes chunked uploads (PATCH, then an empty PUT).
	RefuseMonolithic bool
	// StallFirst answers the first n writes with the headers and the first
	// bytes of a 500, then sends nothing more until the client goes away.
	StallFirst int
	// Deny answers every request for repository DenyRepo with DenyStatus (401 or 403).
	DenyRepo   string
	DenyStatus int
	// SlowRate is the chance that a request is delayed by Slow first; every
	// request for repository SlowRepo is.
	SlowRate float64
	SlowRepo string
	Slow     time.Duration
	// Latency is added to every request, like a round trip to a remote registry.
	Latency time.Duration
	// HeadWithoutDigest answers manifest HEADs without Docker-Content-Digest,
	// as CDNs and proxies in front of registries do (GET keeps it).
	HeadWithoutDigest bool
	// HeadManifestStatus answers every manifest HEAD with this status (404
	// or 405) while GET works.
	HeadManifestStatus int
	// RewriteManifests stores another form of every manifest PUT by tag (the
	// same JSON, indented), so the tag resolves to another digest than the
	// one pushed, as a registry that converts manifests does.
	RewriteManifests bool
	// FailReadsFirst answers the first n reads (GET or HEAD of a manifest or
	// a blob) with 500.
	FailReadsFirst int
	// FailBlobGetsFirst answers the first n blob GETs with 500: a source
	// registry failing while its blobs are copied.
	FailBlobGetsFirst int
	// TokenAuth puts Bearer token auth in front of the registry (a token
	// server at /token on the layer itself): every request under /v2/ needs
	// a token, and one without a good token is answered 401 with a challenge.
	TokenAuth bool
	// TokenUses, when positive, makes a token good for that many requests,
	// then expired.
	TokenUses int
	// ShortLivedTokens makes the first n tokens the server issues expire
	// while in use: a write that carries a body (a manifest or blob PUT, a
	// PATCH) with one of them, after its first use, is read and answered 401
	// with a challenge, as a token that expired in flight is. Later tokens
	// last.
	ShortLivedTokens int
	// TrickleErrorFirst answers the first n writes with a 500 whose body
	// comes one byte a second.
	TrickleErrorFirst int
	// ForbidMissingTags answers a read of a tag that does not exist 403
	// DENIED instead of 404, as JFrog Artifactory does.
	ForbidMissingTags bool
	// UploadLocation, when set, replaces the host of the Location the
	// registry gives an upload session (e.g. localhost:PORT).
	UploadLocation string
	// RefuseMounts answers a cross-repository mount with an upload session
	// (202) instead of the mount, as registries that do not mount do.
	RefuseMounts bool
	// UploadBytesPerSec caps the bandwidth of all request bodies together.
	UploadBytesPerSec int64

	// TagList changes the answers to GET .../tags/list: "500"; "404"
	// (NAME_UNKNOWN, while the manifests read); "hang" (no answer until the
	// client goes away: a huge repository, a front that drops the path);
	// "cut" (the JSON cut short); "nofield" (JSON without a tags field).
	TagList string
	// TagListPage, when positive, serves the tag list that many tags a page,
	// with an unquoted, relative Link header (<...>; rel=next), as olareg does.
	TagListPage int
	// PhantomTagPuts answers a manifest PUT by tag 201 with the digest of
	// its body and does not pass it on: a proxy or virtual repository that
	// says it stored what it drops.
	PhantomTagPuts bool
	// BlobUnknownTagPutsFirst answers the first n manifest PUTs by tag 400
	// MANIFEST_BLOB_UNKNOWN: a blob lost between its upload and the PUT.
	BlobUnknownTagPutsFirst int
	// MountStatus answers every cross-repository mount with this status
	// (401, 403, 404, 405, 500) and no upload session.
	MountStatus int
	// StallRepo holds every write to this repository unanswered until the
	// client goes away: a repository whose storage hangs.
	StallRepo string
	// TagPutStatus answers every manifest PUT by tag with this status and
	// an error of TagPutCode and TagPutMessage: an immutable tag, a policy.
	TagPutStatus  int
	TagPutCode    string
	TagPutMessage string
	// DenyTagPut answers every manifest PUT to this tag (REPO:TAG) 403
	// DENIED: one tag of a release that the registry refuses.
	DenyTagPut string
	// PolicyBlockFirst answers the first n reads of a manifest by tag 412,
	// as Harbor does under a vulnerability policy.
	PolicyBlockFirst int
	// TokenRealm, with TokenAuth, is the realm the challenge names instead
	// of the layer's own /token (a token service on another port).
	TokenRealm string
}

// Modes are the names Preset knows.
var Modes = []string{"none", "ghcr", "429", "429-ghcr", "reset", "slow", "flaky", "outage", "lag", "lost-answer", "403-rate-limit"}

// Preset returns the configuration of a named fault mode.
func Preset(mode string) (Config, error) {
	switch mode {
	case "", "none":
		return Config{}, nil
	case "ghcr":
		return Config{MaxWrites: 3, WriteErrorRate: 0.02}, nil
	case "429":
		return Config{TooManyRate: 0.1, RetryAfter: "1"}, nil
	case "429-ghcr":
		return Config{TooManyRate: 0.1, GHCRBody: "250ms"}, nil
	case "reset":
		return Config{ResetRate: 0.2}, nil
	case "slow":
		return Config{SlowRate: 0.2, Slow: 500 * time.Millisecond}, nil
	case "flaky":
		return Config{MaxWrites: 3, WriteErrorRate: 0.02, TooManyRate: 0.03, RetryAfter: "1", ResetRate: 0.05}, nil
	case "outage":
		return Config{OutageAfter: 200 * time.Millisecond, Outage: 6 * time.Second}, nil
	case "lag":
		return Config{ReadLag: time.Second}, nil
	case "lost-answer":
		return Config{LoseAnswerFirst: 3}, nil
	case "403-rate-limit":
		return Config{SecondaryRateLimitFirst: 3}, nil
	}
	return Config{}, fmt.Errorf("unknown fault mode %q (known: %s)", mode, strings.Join(Modes, ", "))
}

// Stats counts what the layer saw and did.
type Stats struct {
	Requests int
	// ByMethod counts requests per HTTP method.
	ByMethod map[string]int
	// UploadSessions counts blob upload starts (POST .../blobs/uploads/) that
	// were not cross-repository mounts.
	UploadSessions int
	// Mounts counts cross-repository mounts the registry made (201);
	// MountRequests every mount asked for.
	Mounts, MountRequests int
	// BlobBytes is the number of blob bytes that reached the registry.
	BlobBytes int64
	// BlobsCommitted counts, per digest, uploads the registry accepted.
	BlobsCommitted map[string]int
	// ManifestPuts counts manifest PUTs the registry accepted.
	ManifestPuts int
	// Injected counts injected faults by kind ("500", "429", "reset",
	// "upload-lost", "slow", "deny").
	Injected map[string]int
	// AuthUsers counts requests per user name in a Basic Authorization header.
	AuthUsers map[string]int
	// PeakWrites is the most writes that were in flight at once.
	PeakWrites int
	// PeakReads is the most reads (GET, HEAD) that were in flight at once;
	// PeakInFlight the most requests of any kind.
	PeakReads, PeakInFlight int
	// Tokens counts the tokens the token server issued (TokenAuth).
	Tokens int
	// Reads counts GETs and HEADs of manifests, blobs and tag lists (not
	// the ping, /v2/); BlobChecks the HEADs of blobs among them.
	Reads, BlobChecks int
	// FirstRequest and LastRequest are when the first and the last request
	// since Reset arrived.
	FirstRequest, LastRequest time.Time
	// Writes records, for every write in arrival order, how many were in
	// flight as it arrived (itself included) and when.
	Writes []WriteSample
	// ManifestPutTimes records when each manifest PUT arrived, per path.
	ManifestPutTimes map[string][]time.Time
}

// WriteSample is one write's view of the load.
type WriteSample struct {
	At       time.Time
	InFlight int
}

// TotalInjected is the number of faults injected, all kinds together.
func (s Stats) TotalInjected() int {
	n := 0
	for _, v := range s.Injected {
		n += v
	}
	return n
}

// Layer is an http.Handler that injects faults before handing requests on.
type Layer struct {
	next http.Handler

	mu       sync.Mutex
	cfg      Config
	rng      *rand.Rand
	inFlight int // writes
	reads    int
	all      int
	tokens   map[string]int // uses left per token; -1 no limit
	used     map[string]bool
	short    map[string]bool // tokens that expire in flight
	stats    Stats
	bw       bandwidth
	putAt    map[string]time.Time // when each manifest path was last written
	first    time.Time            // the first request since Reset
}

// New returns a layer in front of next.
func New(next http.Handler, cfg Config) *Layer {
	l := &Layer{next: next}
	l.Reset(cfg)
	return l
}

// Reset replaces the configuration and zeroes the counters.
func (l *Layer) Reset(cfg Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg = cfg
	l.rng = rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	l.stats = Stats{
		ByMethod:         make(map[string]int),
		BlobsCommitted:   make(map[string]int),
		Injected:         make(map[string]int),
		AuthUsers:        make(map[string]int),
		ManifestPutTimes: make(map[string][]time.Time),
	}
	l.bw = bandwidth{rate: cfg.UploadBytesPerSec}
	l.tokens = make(map[string]int)
	l.used = make(map[string]bool)
	l.short = make(map[string]bool)
	if l.putAt == nil {
		// Kept across resets: it mirrors what the registry holds.
		l.putAt = make(map[string]time.Time)
	}
	l.first = time.Time{}
}

// Stats returns a copy of the counters.
func (l *Layer) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.ByMethod = clone(s.ByMethod)
	s.BlobsCommitted = clone(s.BlobsCommitted)
	s.Injected = clone(s.Injected)
	s.AuthUsers = clone(s.AuthUsers)
	s.Writes = append([]WriteSample(nil), s.Writes...)
	s.ManifestPutTimes = make(map[string][]time.Time, len(l.stats.ManifestPutTimes))
	for k, v := range l.stats.ManifestPutTimes {
		s.ManifestPutTimes[k] = append([]time.Time(nil), v...)
	}
	return s
}

func clone[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func isWrite(method string) bool {
	return method == http.MethodPost || method == http.MethodPatch || method == http.MethodPut
}

// what a request is, from the registry API's paths.
type kind struct {
	repo          string
	blobUpload    bool // POST/PATCH/PUT under /blobs/uploads/
	manifest      bool // under /manifests/
	mount         bool
	commitsDigest string
	// blobContent is a request that carries blob bytes: a PATCH of an
	// upload, or a PUT that sends the whole blob at once.
	blobContent bool
	blob        bool // /v2/<name>/blobs/<digest>
}

func classify(r *http.Request) kind {
	var k kind
	p := r.URL.Path
	if !strings.HasPrefix(p, "/v2/") {
		return k
	}
	p = strings.TrimPrefix(p, "/v2/")
	switch {
	case strings.Contains(p, "/blobs/uploads"):
		k.repo = p[:strings.Index(p, "/blobs/uploads")]
		k.blobUpload = true
		q := r.URL.Query()
		k.mount = r.Method == http.MethodPost && q.Get("mount") != "" && q.Get("from") != ""
		if r.Method == http.MethodPut {
			k.commitsDigest = q.Get("digest")
		}
		k.blobContent = r.Method == http.MethodPatch || (r.Method == http.MethodPut && r.ContentLength != 0)
	case strings.Contains(p, "/manifests/"):
		k.repo = p[:strings.Index(p, "/manifests/")]
		k.manifest = true
	case strings.Contains(p, "/blobs/"):
		k.repo = p[:strings.Index(p, "/blobs/")]
		k.blob = true
	}
	return k
}

// decision is what the layer does to one request.
type decision struct {
	status     int
	body       string
	retryAfter string
	resetAfter int64 // reset the connection after reading this many body bytes; -1 never
	slow       time.Duration
	fault      string
	early      bool // answer without reading the body
	stall      bool // send headers and a little of the body, then nothing
	trickle    bool // send the body a byte a second
	redirect   bool // 307 to the same URL
	loseAnswer bool // pass to the registry, answer 500 (or reset) instead
	hang       bool // no answer until the client goes away
	phantom    bool // answer a manifest PUT 201 without passing it on
}

func (l *Layer) decide(r *http.Request, k kind, write bool) decision {
	d := decision{resetAfter: -1}
	c := l.cfg
	chance := func(p float64) bool { return p > 0 && l.rng.Float64() < p }

	manifestPut := k.manifest && r.Method == http.MethodPut
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	manifestRead := read && k.manifest
	tagList := r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/tags/list")
	switch {
	case tagList && c.TagList == "500":
		d.status, d.fault = http.StatusInternalServerError, "tag-list"
		d.body = ociError("UNKNOWN", "unknown error")
	case tagList && c.TagList == "404":
		d.status, d.fault = http.StatusNotFound, "tag-list"
		d.body = ociError("NAME_UNKNOWN", "repository name not known to registry")
	case tagList && c.TagList == "hang":
		d.fault, d.hang = "tag-list", true
	case write && c.StallRepo != "" && k.repo == c.StallRepo:
		d.fault, d.hang = "stall-repo", true
	case k.mount && c.MountStatus != 0:
		d.status, d.fault = c.MountStatus, "mount-refused"
		d.body = ociError("DENIED", "requested access to the resource is denied")
	case manifestPut && c.DenyTagPut != "" && r.URL.Path == "/v2/"+strings.Replace(c.DenyTagPut, ":", "/manifests/", 1):
		d.status, d.fault = http.StatusForbidden, "deny-tag"
		d.body = ociError("DENIED", "tag is protected")
	case manifestPut && !isDigest(r.URL.Path) && c.TagPutStatus != 0:
		d.status, d.fault = c.TagPutStatus, "tag-put"
		d.body = ociError(cmp.Or(c.TagPutCode, "DENIED"), cmp.Or(c.TagPutMessage, "denied"))
	case manifestPut && !isDigest(r.URL.Path) && l.stats.Injected["blob-unknown"] < c.BlobUnknownTagPutsFirst:
		d.status, d.fault = http.StatusBadRequest, "blob-unknown"
		d.body = ociError("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry")
	case manifestPut && !isDigest(r.URL.Path) && c.PhantomTagPuts:
		d.fault, d.phantom = "phantom-put", true
	case manifestRead && !isDigest(r.URL.Path) && l.stats.Injected["policy-412"] < c.PolicyBlockFirst:
		d.status, d.fault = http.StatusPreconditionFailed, "policy-412"
		d.body = ociError("PRECONDITION", "current image with 1 vulnerabilities cannot be pulled due to configured policy")
	case write && l.stats.Injected["trickle"] < c.TrickleErrorFirst:
		d.status, d.fault, d.trickle = http.StatusInternalServerError, "trickle", true
		d.body = ociError("UNKNOWN", "unknown error")
	case read && (k.manifest || k.blob) && l.stats.Injected["read-500"] < c.FailReadsFirst:
		d.status, d.fault = http.StatusInternalServerError, "read-500"
		d.body = ociError("UNKNOWN", "unknown error")
	case r.Method == http.MethodGet && k.blob && l.stats.Injected["blob-get-500"] < c.FailBlobGetsFirst:
		d.status, d.fault = http.StatusInternalServerError, "blob-get-500"
		d.body = ociError("UNKNOWN", "unknown error")
	case manifestRead && r.Method == http.MethodHead && c.HeadManifestStatus != 0:
		d.status, d.fault = c.HeadManifestStatus, "head-status"
	case write && c.Outage > 0 && inWindow(time.Since(l.first), c.OutageAfter, c.Outage):
		d.status, d.fault = http.StatusServiceUnavailable, "outage"
		d.body = ociError("UNAVAILABLE", "service unavailable")
	case read && k.manifest && !isDigest(r.URL.Path) && l.stats.Injected["stale-read"] < c.StaleReadsFirst:
		d.status, d.fault = http.StatusNotFound, "stale-read"
		d.body = ociError("MANIFEST_UNKNOWN", "manifest unknown")
	case manifestPut && c.ImmutableTags && !isDigest(r.URL.Path) && !l.putAt[r.URL.Path].IsZero():
		d.status, d.fault = http.StatusBadRequest, "immutable"
		d.body = ociError("TAG_INVALID", "The image tag already exists in the repository and cannot be overwritten because the repository is immutable.")
	case c.RefuseMonolithic && k.blobContent && r.Method == http.MethodPut:
		d.status, d.fault = http.StatusMethodNotAllowed, "refuse-monolithic"
		d.body = ociError("UNSUPPORTED", "monolithic uploads are not supported")
	case c.FailAll != 0:
		d.status, d.fault = c.FailAll, fmt.Sprint(c.FailAll)
		d.body = ociError("UNAVAILABLE", "service unavailable")
	case read && k.manifest && c.ReadLag > 0 && time.Since(l.putAt[r.URL.Path]) < c.ReadLag:
		d.status, d.fault = http.StatusNotFound, "lag"
		d.body = ociError("MANIFEST_UNKNOWN", "manifest unknown")
	case manifestPut && c.RedirectManifestPuts:
		d.status, d.fault, d.redirect = http.StatusTemporaryRedirect, "redirect", true
	case manifestPut && l.stats.Injected["403-rate-limit"] < c.SecondaryRateLimitFirst:
		d.status, d.fault = http.StatusForbidden, "403-rate-limit"
		d.body = ociError("DENIED", `permission_denied: Error from intermediary with HTTP status code 403 "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."`)
	case manifestPut && l.stats.Injected["lost-answer"] < c.LoseAnswerFirst:
		d.fault, d.loseAnswer = "lost-answer", true
	case k.blobContent && l.stats.Injected["early-answer"] < c.EarlyAnswerFirst:
		d.status, d.fault, d.early = http.StatusInternalServerError, "early-answer", true
		d.body = ociError("UNKNOWN", "unknown error")
	case write && l.stats.Injected["stall"] < c.StallFirst:
		d.status, d.fault, d.stall = http.StatusInternalServerError, "stall", true
		d.body = ociError("UNKNOWN", "unknown error")
	case c.DenyRepo != "" && k.repo == c.DenyRepo && c.DenyStatus != 0:
		d.status, d.fault = c.DenyStatus, "deny"
		code, msg := "DENIED", "requested access to the resource is denied"
		if c.DenyStatus == http.StatusUnauthorized {
			code, msg = "UNAUTHORIZED", "authentication required"
		}
		d.body = ociError(code, msg)
	case write && c.FailWrites != 0:
		d.status, d.fault = c.FailWrites, fmt.Sprint(c.FailWrites)
		d.retryAfter = c.RetryAfter
		d.body = ociError("UNKNOWN", cmp.Or(c.FailMessage, "unknown error"))
	case write && l.stats.Injected["500"] < c.FailWritesFirst:
		d.status, d.fault = http.StatusInternalServerError, "500"
		d.body = ociError("UNKNOWN", "unknown error")
	case write && c.MaxWrites > 0 && l.inFlight > c.MaxWrites:
		d.status, d.fault = http.StatusInternalServerError, "500"
		d.body = ociError("UNKNOWN", "unknown error")
	case write && chance(c.WriteErrorRate):
		d.status, d.fault = http.StatusInternalServerError, "500"
		d.body = ociError("UNKNOWN", "unknown error")
	case write && ((k.manifest && r.Method == http.MethodPut && l.stats.Injected["429"] < c.TooManyFirst) || chance(c.TooManyRate)):
		d.status, d.fault = http.StatusTooManyRequests, "429"
		d.retryAfter = c.RetryAfter
		msg := "rate limit exceeded"
		if c.GHCRBody != "" {
			msg = fmt.Sprintf("retry-after: %s, allowed: 2000/minute", c.GHCRBody)
		}
		d.body = ociError("TOOMANYREQUESTS", msg)
	case k.blobContent && l.stats.Injected["upload-lost"] < c.LoseUploadFirst:
		d.status, d.fault = http.StatusNotFound, "upload-lost"
		d.body = ociError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
	case k.blobContent && (l.stats.Injected["reset"] < c.ResetFirst || chance(c.ResetRate)):
		d.resetAfter, d.fault = max(r.ContentLength/2, 1), "reset"
		if r.ContentLength <= 0 {
			d.resetAfter = 16 << 10
		}
	}
	if chance(c.SlowRate) || (c.SlowRepo != "" && k.repo == c.SlowRepo) {
		d.slow = c.Slow
	}
	return d
}

// isDigest is a manifest path by digest rather than by tag.
func isDigest(path string) bool { return strings.Contains(path, "/manifests/sha256:") }

func inWindow(t, from, length time.Duration) bool { return t >= from && t < from+length }

func ociError(code, msg string) string {
	b, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	return string(b)
}

func (l *Layer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := classify(r)
	write := isWrite(r.Method)
	read := r.Method == http.MethodGet || r.Method == http.MethodHead

	if r.URL.Path == "/token" {
		l.issueToken(w)
		return
	}
	l.mu.Lock()
	if l.first.IsZero() {
		l.first = time.Now()
		l.stats.FirstRequest = l.first
	}
	l.stats.LastRequest = time.Now()
	l.stats.Requests++
	l.stats.ByMethod[r.Method]++
	if user, _, ok := r.BasicAuth(); ok {
		l.stats.AuthUsers[user]++
	}
	l.all++
	l.stats.PeakInFlight = max(l.stats.PeakInFlight, l.all)
	if read {
		l.reads++
		l.stats.PeakReads = max(l.stats.PeakReads, l.reads)
		if k.repo != "" {
			l.stats.Reads++
		}
		if k.blob && r.Method == http.MethodHead {
			l.stats.BlobChecks++
		}
	}
	defer func() {
		l.mu.Lock()
		l.all--
		if read {
			l.reads--
		}
		l.mu.Unlock()
	}()
	if l.cfg.TokenAuth && !l.spendToken(r, write && r.ContentLength != 0) {
		realm := cmp.Or(l.cfg.TokenRealm, "http://"+r.Host+"/token")
		l.mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		scope := ""
		if k.repo != "" {
			scope = fmt.Sprintf(`,scope="repository:%s:pull,push"`, k.repo)
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s",service="faults"%s`, realm, scope))
		writeError(w, http.StatusUnauthorized, ociError("UNAUTHORIZED", "authentication required"))
		return
	}
	if write {
		l.inFlight++
		l.stats.PeakWrites = max(l.stats.PeakWrites, l.inFlight)
		l.stats.Writes = append(l.stats.Writes, WriteSample{At: time.Now(), InFlight: l.inFlight})
	}
	if k.manifest && r.Method == http.MethodPut {
		l.stats.ManifestPutTimes[r.URL.Path] = append(l.stats.ManifestPutTimes[r.URL.Path], time.Now())
	}
	d := l.decide(r, k, write)
	if k.mount && d.status != 0 {
		l.stats.MountRequests++
	}
	if d.fault != "" {
		l.stats.Injected[d.fault]++
	}
	if d.slow > 0 {
		l.stats.Injected["slow"]++
	}
	latency := l.cfg.Latency
	l.mu.Unlock()
	if write {
		defer func() {
			l.mu.Lock()
			l.inFlight--
			l.mu.Unlock()
		}()
	}

	if wait := latency + d.slow; wait > 0 {
		select {
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
	}

	switch {
	case d.hang:
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
		return
	case d.phantom:
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		w.Header().Set("Docker-Content-Digest", "sha256:"+hex.EncodeToString(sum[:]))
		w.Header().Set("Location", r.URL.Path)
		w.WriteHeader(http.StatusCreated)
		return
	case d.resetAfter >= 0:
		l.reset(w, r, d.resetAfter)
		return
	case d.trickle:
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(d.body)))
		w.WriteHeader(d.status)
		for i := range len(d.body) {
			if _, err := io.WriteString(w, d.body[i:i+1]); err != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second):
			}
		}
		return
	case d.early:
		// Answer before reading the body; net/http then closes the
		// connection under the client's body writer.
		w.Header().Set("Connection", "close")
		writeError(w, d.status, d.body)
		return
	case d.stall:
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(d.body)+1024))
		w.WriteHeader(d.status)
		_, _ = io.WriteString(w, d.body[:len(d.body)/2])
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return
	case d.redirect:
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Location", r.URL.RequestURI())
		w.WriteHeader(d.status)
		return
	case d.loseAnswer:
		l.loseAnswer(w, r)
		return
	case d.status != 0:
		_, _ = io.Copy(io.Discard, r.Body)
		if d.retryAfter != "" {
			w.Header().Set("Retry-After", d.retryAfter)
		}
		writeError(w, d.status, d.body)
		return
	}

	l.mu.Lock()
	c := l.cfg
	l.mu.Unlock()
	if c.RefuseMounts && k.mount {
		q := r.URL.Query()
		q.Del("mount")
		q.Del("from")
		r.URL.RawQuery = q.Encode()
		k.mount = false
	}
	if c.RewriteManifests && k.manifest && r.Method == http.MethodPut && !isDigest(r.URL.Path) {
		if err := rewriteManifest(r); err != nil {
			writeError(w, http.StatusBadRequest, ociError("MANIFEST_INVALID", err.Error()))
			return
		}
	}
	counted := &countingBody{rc: r.Body, layer: l, blob: k.blobUpload && r.Method != http.MethodPost}
	r.Body = counted
	var out http.ResponseWriter = w
	if (c.HeadWithoutDigest && k.manifest && r.Method == http.MethodHead) ||
		(c.UploadLocation != "" && k.blobUpload && r.Method == http.MethodPost) {
		out = &headerRewriter{ResponseWriter: w, dropDigest: c.HeadWithoutDigest, location: c.UploadLocation}
	}
	if c.ForbidMissingTags && k.manifest && read && !isDigest(r.URL.Path) {
		out = &missingAsForbidden{ResponseWriter: out}
	}
	if c.ReadLag > 0 && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/tags/list") {
		l.lagTagList(w, r, c.ReadLag)
		return
	}
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/tags/list") && (c.TagList != "" || c.TagListPage > 0) {
		l.shapeTagList(w, r, c)
		return
	}
	rec := &statusRecorder{ResponseWriter: out, status: http.StatusOK}
	l.next.ServeHTTP(rec, r)

	l.mu.Lock()
	defer l.mu.Unlock()
	if k.mount {
		l.stats.MountRequests++
	}
	switch {
	case k.mount && rec.status == http.StatusCreated:
		l.stats.Mounts++
	case k.blobUpload && r.Method == http.MethodPost && !k.mount:
		l.stats.UploadSessions++
	}
	if k.commitsDigest != "" && rec.status == http.StatusCreated {
		l.stats.BlobsCommitted[k.commitsDigest]++
	}
	if k.manifest && r.Method == http.MethodPut && rec.status == http.StatusCreated {
		l.stats.ManifestPuts++
		l.putAt[r.URL.Path] = time.Now()
	}
}

// lagTagList serves the repository's tag list without the tags written less
// than lag ago: a replica that has not seen them.
func (l *Layer) lagTagList(w http.ResponseWriter, r *http.Request, lag time.Duration) {
	rec := &bufferRecorder{header: make(http.Header), status: http.StatusOK}
	l.next.ServeHTTP(rec, r)
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if rec.status != http.StatusOK || json.Unmarshal(rec.body.Bytes(), &list) != nil {
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
		return
	}
	repo := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v2/"), "/tags/list")
	kept := list.Tags[:0]
	l.mu.Lock()
	for _, t := range list.Tags {
		if at := l.putAt["/v2/"+repo+"/manifests/"+t]; time.Since(at) >= lag {
			kept = append(kept, t)
		} else {
			l.stats.Injected["lag"]++
		}
	}
	l.mu.Unlock()
	list.Tags = kept
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(list)
}

// shapeTagList serves the registry's tag list cut short, without its tags
// field, or a page at a time with an unquoted relative Link header.
func (l *Layer) shapeTagList(w http.ResponseWriter, r *http.Request, c Config) {
	if c.TagListPage > 0 {
		q := r.URL.Query()
		q.Set("n", fmt.Sprint(c.TagListPage))
		r.URL.RawQuery = q.Encode()
	}
	rec := &bufferRecorder{header: make(http.Header), status: http.StatusOK}
	l.next.ServeHTTP(rec, r)
	body := rec.body.Bytes()
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	if link := w.Header().Get("Link"); link != "" {
		w.Header().Set("Link", strings.Replace(link, `rel="next"`, "rel=next", 1))
	}
	l.mu.Lock()
	l.stats.Injected["tag-list"]++
	l.mu.Unlock()
	switch c.TagList {
	case "cut":
		body = body[:len(body)/2]
	case "nofield":
		body = []byte(`{"name":"x","repositories":[]}`)
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(body)
}

// bufferRecorder keeps the registry's answer for the layer to change.
type bufferRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferRecorder) Header() http.Header         { return b.header }
func (b *bufferRecorder) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferRecorder) WriteHeader(code int)        { b.status = code }

// issueToken is the token server: a new token, good for TokenUses requests.
func (l *Layer) issueToken(w http.ResponseWriter) {
	l.mu.Lock()
	l.stats.Tokens++
	tok := fmt.Sprintf("tok-%d", l.stats.Tokens)
	l.tokens[tok] = l.cfg.TokenUses
	if l.tokens[tok] <= 0 {
		l.tokens[tok] = -1 // no limit
	}
	l.short[tok] = l.stats.Tokens <= l.cfg.ShortLivedTokens
	l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": tok, "access_token": tok})
}

// spendToken uses one request of the request's token, and takes the header
// off (the registry behind has no auth). A body-carrying write may find its
// token expired (ShortLivedTokens). Called with l.mu held.
func (l *Layer) spendToken(r *http.Request, carriesBody bool) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || l.tokens[tok] == 0 {
		return false
	}
	if carriesBody && l.used[tok] && l.short[tok] {
		l.stats.Injected["token-expired"]++
		l.tokens[tok] = 0
		return false
	}
	if l.tokens[tok] > 0 {
		l.tokens[tok]--
	}
	l.used[tok] = true
	r.Header.Del("Authorization")
	return true
}

// rewriteManifest replaces a manifest PUT's body with the same JSON,
// indented: another form, another digest.
func rewriteManifest(r *http.Request) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	r.Body = io.NopCloser(&out)
	r.ContentLength = int64(out.Len())
	r.Header.Set("Content-Length", fmt.Sprint(out.Len()))
	return nil
}

// headerRewriter changes the registry's answer headers: it drops
// Docker-Content-Digest, or moves an upload's Location to another host.
type headerRewriter struct {
	http.ResponseWriter
	dropDigest bool
	location   string
}

func (h *headerRewriter) WriteHeader(code int) {
	if h.dropDigest {
		h.Header().Del("Docker-Content-Digest")
	}
	if h.location != "" {
		if u, err := url.Parse(h.Header().Get("Location")); err == nil && h.Header().Get("Location") != "" {
			u.Scheme, u.Host = "http", h.location
			h.Header().Set("Location", u.String())
		}
	}
	h.ResponseWriter.WriteHeader(code)
}

// missingAsForbidden answers 403 DENIED where the registry answers 404.
type missingAsForbidden struct {
	http.ResponseWriter
	denied bool
}

func (m *missingAsForbidden) WriteHeader(code int) {
	if code == http.StatusNotFound {
		m.denied = true
		m.Header().Set("Content-Type", "application/json")
		m.Header().Del("Content-Length")
		m.ResponseWriter.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(m.ResponseWriter, ociError("DENIED", "forbidden"))
		return
	}
	m.ResponseWriter.WriteHeader(code)
}

func (m *missingAsForbidden) Write(p []byte) (int, error) {
	if m.denied {
		return len(p), nil // the 404's own body
	}
	return m.ResponseWriter.Write(p)
}

// loseAnswer hands a manifest PUT to the registry, which commits it, and
// answers the client 500, or resets the connection, instead of the registry's
// answer.
func (l *Layer) loseAnswer(w http.ResponseWriter, r *http.Request) {
	rec := &discardRecorder{header: make(http.Header), status: http.StatusOK}
	l.next.ServeHTTP(rec, r)
	l.mu.Lock()
	if rec.status == http.StatusCreated {
		l.stats.ManifestPuts++
		l.putAt[r.URL.Path] = time.Now()
	}
	reset := l.cfg.LoseAnswerReset
	l.mu.Unlock()
	if reset {
		l.reset(w, r, 0)
		return
	}
	writeError(w, http.StatusInternalServerError, ociError("UNKNOWN", "unknown error"))
}

// writeError answers with status and an OCI error body.
func writeError(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// discardRecorder takes the registry's answer and sends it nowhere.
type discardRecorder struct {
	header http.Header
	status int
}

func (d *discardRecorder) Header() http.Header         { return d.header }
func (d *discardRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardRecorder) WriteHeader(code int)        { d.status = code }

// reset reads part of the body, then drops the connection with an RST, as a
// load balancer does when it gives up on an upload.
func (l *Layer) reset(w http.ResponseWriter, r *http.Request, after int64) {
	_, _ = io.CopyN(io.Discard, r.Body, after)
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// countingBody counts blob bytes as the registry reads them, at the shaped bandwidth.
type countingBody struct {
	rc    io.ReadCloser
	layer *Layer
	blob  bool
}

func (c *countingBody) Read(p []byte) (int, error) {
	if len(p) > 32<<10 {
		p = p[:32<<10]
	}
	n, err := c.rc.Read(p)
	if n > 0 {
		c.layer.mu.Lock()
		if c.blob {
			c.layer.stats.BlobBytes += int64(n)
		}
		wait := c.layer.bw.reserve(int64(n), time.Now())
		c.layer.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
	}
	return n, err
}

func (c *countingBody) Close() error { return c.rc.Close() }

// bandwidth is a shared pipe: each chunk waits for the pipe to be free.
type bandwidth struct {
	rate int64 // bytes per second; 0 is unlimited
	free time.Time
}

func (b *bandwidth) reserve(n int64, now time.Time) time.Duration {
	if b.rate <= 0 {
		return 0
	}
	// A sleep overshoots by a timer tick or so; without credit for it, the
	// pipe would count as idle meanwhile and one stream alone would get
	// about half the rate (many streams hide it). A link does not do that:
	// up to pipeBurst of time lost is made up.
	if earliest := now.Add(-pipeBurst); b.free.Before(earliest) {
		b.free = earliest
	}
	b.free = b.free.Add(time.Duration(float64(n) / float64(b.rate) * float64(time.Second)))
	return max(b.free.Sub(now), 0)
}

// pipeBurst is how much time the pipe may make up after a late reader.
const pipeBurst = 10 * time.Millisecond

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Proxy returns a handler that forwards to the registry at target, keeping the
// Host header so the Location URLs the registry writes point back at the layer.
func Proxy(target *url.URL) http.Handler {
	return &httputilProxy{target: target}
}

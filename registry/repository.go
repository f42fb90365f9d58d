package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Reader is what can be read of a repository: a dry run's plan takes one, so
// a write in a plan does not compile.
type Reader interface {
	Name() name.Repository
	Resolve(ctx context.Context, ref string, confirmMiss bool) (v1.Hash, bool, error)
	Tags(ctx context.Context) (map[string]bool, error)
	BlobExists(ctx context.Context, d v1.Hash) (bool, error)
}

var _ Reader = (*Repository)(nil)

// Repository is one repository of a registry: the distribution API's reads
// and writes on it, on one authenticated client (one ping and token
// exchange for all of them). Reads take a slot of the registry's read budget
// for the request and its body, and a time limit; writes are sent once, as
// asked. Nothing is retried here.
type Repository struct {
	name name.Repository
	c    *Client
	host *host

	mu   sync.Mutex
	conn *clientInit
}

// Name is the repository's name.
func (r *Repository) Name() name.Repository { return r.name }

const (
	// maxManifestBytes bounds a manifest read by GET; registries refuse
	// larger ones (4 MiB is the usual limit, and oras-go's).
	maxManifestBytes = 4 << 20
	// readTimeout bounds one read request, its body included: a read moves a
	// few KiB, and one that takes longer is retried as a read.
	readTimeout = 30 * time.Second
	// maxTagPages and tagListTimeout bound one listing of a repository's
	// tags: the list is a shortcut, and one that takes longer than a few
	// per-tag reads is not worth waiting for.
	maxTagPages    = 5
	tagListTimeout = 5 * time.Second
)

// manifestAccept is every manifest media type tagpush pushes.
var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")

func (r *Repository) base() string {
	return fmt.Sprintf("%s://%s/v2/%s", r.name.Scheme(), r.name.RegistryStr(), r.name.RepositoryStr())
}

func (r *Repository) manifestURL(ref string) string { return r.base() + "/manifests/" + ref }

// SignInError is a failure to sign in to a repository: the ping, or the
// token exchange that asks for push access. A 403 here refuses the
// credentials; it is never a missing tag.
type SignInError struct{ Err error }

func (e *SignInError) Error() string { return "sign in: " + e.Err.Error() }
func (e *SignInError) Unwrap() error { return e.Err }

// clientInit is one attempt to make the repository's client; done is closed
// when it has ended.
type clientInit struct {
	done   chan struct{}
	client *http.Client
	err    error
}

// client returns the repository's authenticated client, made once for all
// of the repository's requests. No lock is held over the sign-in: the first
// caller makes the client, the others wait for it with their own contexts,
// and a failed attempt is forgotten so the next caller tries again
// (go-containerregistry's Pusher does the same with sync.Once and
// CompareAndDelete).
func (r *Repository) client(ctx context.Context) (*http.Client, error) {
	for {
		r.mu.Lock()
		ci := r.conn
		mine := ci == nil
		if mine {
			ci = &clientInit{done: make(chan struct{})}
			r.conn = ci
		}
		r.mu.Unlock()
		if mine {
			ci.client, ci.err = r.signIn(ctx)
			if ci.err != nil {
				r.mu.Lock()
				r.conn = nil
				r.mu.Unlock()
			}
			close(ci.done)
			return ci.client, ci.err
		}
		select {
		case <-ci.done:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		if ci.err == nil {
			return ci.client, nil
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		// The attempt we waited for failed, with its caller's context or
		// for a reason ours may not share: try again.
	}
}

func (r *Repository) signIn(ctx context.Context) (*http.Client, error) {
	auth, err := authn.Resolve(ctx, r.c.opts.Keychain, r.name)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", r.name, err)
	}
	t := transport.NewUserAgent(r.c.transport, r.c.opts.UserAgent)
	// Push to the repository, and pull from the client's other
	// repositories on the registry: mounting a blob from one of them needs it.
	scopes := []string{r.name.Scope(transport.PushScope)}
	for _, sib := range r.c.siblings(r.name) {
		scopes = append(scopes, sib.Scope(transport.PullScope))
	}
	var tr http.RoundTripper
	// The ping is a read.
	err = r.host.read(ctx, func() error {
		var err error
		tr, err = transport.NewWithContext(ctx, r.name.Registry, auth, t, scopes)
		return err
	})
	if err != nil {
		return nil, &SignInError{err}
	}
	return &http.Client{Transport: tr, CheckRedirect: r.c.checkRedirect}, nil
}

// errHeadUnusable is a manifest HEAD whose answer does not say the digest:
// no Docker-Content-Digest (CDNs and proxies drop it), 405 or 501.
var errHeadUnusable = errors.New("manifest HEAD answer has no usable digest")

// Resolve reads the digest ref (a tag or digest) points at. found is false
// when the registry says there is no such manifest (404). HEAD is tried
// first (no body); GET reads the manifest and hashes it where HEAD cannot be
// used, as crane and oras do: a HEAD without Docker-Content-Digest, a HEAD the
// registry refuses (405, 501), and, with confirmMiss, a 404 to HEAD (some
// registries answer HEAD 404 for manifests GET finds). A registry whose HEAD
// failed once in one of these ways is read with GET from then on.
func (r *Repository) Resolve(ctx context.Context, ref string, confirmMiss bool) (d v1.Hash, found bool, err error) {
	h := r.host
	if !h.flag(&h.headUnusable) {
		d, err = r.headManifest(ctx, ref)
		switch {
		case err == nil:
			return d, true, nil
		case IsStatus(err, http.StatusNotFound) && !confirmMiss:
			return v1.Hash{}, false, nil
		case !errors.Is(err, errHeadUnusable) && !IsStatus(err, http.StatusNotFound):
			return v1.Hash{}, false, err
		}
	}
	headMissed := err != nil && IsStatus(err, http.StatusNotFound)
	if err != nil && !headMissed {
		h.set(&h.headUnusable)
	}
	d, err = r.getManifest(ctx, ref)
	switch {
	case err == nil:
		if headMissed {
			h.set(&h.headUnusable)
		}
		return d, true, nil
	case IsStatus(err, http.StatusNotFound):
		return v1.Hash{}, false, nil
	}
	return v1.Hash{}, false, err
}

func (r *Repository) headManifest(ctx context.Context, ref string) (v1.Hash, error) {
	var d v1.Hash
	err := r.read(ctx, http.MethodHead, r.manifestURL(ref), readTimeout, func(resp *http.Response) error {
		switch resp.StatusCode {
		case http.StatusMethodNotAllowed, http.StatusNotImplemented:
			return fmt.Errorf("HEAD %s: %w (status %d)", ref, errHeadUnusable, resp.StatusCode)
		}
		if err := transport.CheckError(resp, http.StatusOK); err != nil {
			return err
		}
		h, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
		if err != nil {
			return fmt.Errorf("HEAD %s: %w", ref, errHeadUnusable)
		}
		d = h
		return nil
	})
	return d, err
}

// getManifest returns the digest of the manifest ref names: the hash of the
// body the registry sends, which is what a client pulling the tag gets.
func (r *Repository) getManifest(ctx context.Context, ref string) (v1.Hash, error) {
	raw, _, err := r.Manifest(ctx, ref)
	if err != nil {
		return v1.Hash{}, err
	}
	return digestOf(raw), nil
}

// Manifest reads the manifest ref names (GET), with its media type.
func (r *Repository) Manifest(ctx context.Context, ref string) ([]byte, types.MediaType, error) {
	var (
		raw []byte
		mt  types.MediaType
	)
	err := r.read(ctx, http.MethodGet, r.manifestURL(ref), readTimeout, func(resp *http.Response) error {
		b, err := readWhole(resp, maxManifestBytes, "manifest "+ref)
		raw, mt = b, types.MediaType(resp.Header.Get("Content-Type"))
		return err
	})
	return raw, mt, err
}

// readWhole reads a 200's body whole, refusing one over max bytes.
func readWhole(resp *http.Response, max int, what string) ([]byte, error) {
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(b) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", what, max)
	}
	return b, nil
}

// BlobExists reports whether the repository has the blob.
func (r *Repository) BlobExists(ctx context.Context, d v1.Hash) (bool, error) {
	var exists bool
	err := r.read(ctx, http.MethodHead, r.base()+"/blobs/"+d.String(), readTimeout, func(resp *http.Response) error {
		if err := transport.CheckError(resp, http.StatusOK, http.StatusNotFound); err != nil {
			return err
		}
		exists = resp.StatusCode == http.StatusOK
		return nil
	})
	return exists, err
}

// ErrTagListUnusable is a tag list that cannot stand for the repository's
// tags: it failed, was cut short or unparseable, said the repository does not
// exist (404: a new repository, or a front that does not serve the path), or
// had more pages than one listing reads. The caller reads each tag instead.
var ErrTagListUnusable = errors.New("the tag list cannot be used")

// ErrNoRepository is a tag list answered 404 NAME_UNKNOWN: the registry
// says the repository does not exist (yet). It comes wrapped with
// ErrTagListUnusable: a registry that will not list for this token says the
// same of a repository that exists.
var ErrNoRepository = errors.New("the registry says the repository does not exist")

// Tags lists the repository's tags (GET /v2/<name>/tags/list, every page
// its Link headers name, in any RFC 8288 form), in one attempt with a short
// time limit: the list only saves reads, and any failure is
// ErrTagListUnusable (wrapping the cause), for the caller to read each tag.
func (r *Repository) Tags(ctx context.Context) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, tagListTimeout)
	defer cancel()
	tags := make(map[string]bool)
	next := r.base() + "/tags/list?n=1000"
	for page := 0; next != ""; page++ {
		if page == maxTagPages {
			return nil, fmt.Errorf("%w: more than %d pages", ErrTagListUnusable, maxTagPages)
		}
		u := next
		next = ""
		err := r.read(ctx, http.MethodGet, u, tagListTimeout, func(resp *http.Response) error {
			if err := transport.CheckError(resp, http.StatusOK); err != nil {
				return err
			}
			// Distribution answers a repository without tags "tags": null;
			// an answer without the field at all is no tag list (a front
			// that serves something else on the path).
			b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
			if err != nil {
				return fmt.Errorf("read the tag list: %w", err)
			}
			var list struct {
				Tags json.RawMessage `json:"tags"`
			}
			var names []string
			if err := json.Unmarshal(b, &list); err != nil {
				return fmt.Errorf("read the tag list: %w", err)
			}
			if list.Tags == nil {
				return errors.New("read the tag list: the answer has no tags field")
			}
			if err := json.Unmarshal(list.Tags, &names); err != nil {
				return fmt.Errorf("read the tag list: %w", err)
			}
			for _, t := range names {
				tags[t] = true
			}
			for _, link := range resp.Header.Values("Link") {
				n, err := nextPage(resp.Request.URL, link)
				if err != nil {
					return err
				}
				if n != "" {
					next = n
					break
				}
			}
			return nil
		})
		if err != nil {
			if page == 0 && nameUnknown(err) {
				return nil, fmt.Errorf("%w: %w: %w", ErrTagListUnusable, ErrNoRepository, err)
			}
			return nil, fmt.Errorf("%w: %w", ErrTagListUnusable, err)
		}
	}
	return tags, nil
}

// nextPage reads the next page's URL from a Link header: every link-value
// (`<url>; rel="next"`, `<url>; rel=next`, several rels in one), resolved
// against the request's URL (registries send relative ones). A next page on
// another host is refused: a registry lists its own tags.
func nextPage(base *url.URL, header string) (string, error) {
	for _, part := range splitLinks(header) {
		target, params, _ := strings.Cut(part, ";")
		target = strings.TrimSpace(target)
		if !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
			continue
		}
		if !relIsNext(params) {
			continue
		}
		u, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(target, "<"), ">"))
		if err != nil {
			return "", fmt.Errorf("tag list Link %q: %w", header, err)
		}
		next := base.ResolveReference(u)
		if next.Host != base.Host {
			return "", fmt.Errorf("tag list Link points at another host, %s", next.Host)
		}
		return next.String(), nil
	}
	return "", nil
}

// splitLinks splits a Link header into its link-values, at the commas
// outside <...> and quotes.
func splitLinks(h string) []string {
	var out []string
	inURL, inQuote, start := false, false, 0
	for i, ch := range h {
		switch {
		case ch == '<' && !inQuote:
			inURL = true
		case ch == '>' && !inQuote:
			inURL = false
		case ch == '"' && !inURL:
			inQuote = !inQuote
		case ch == ',' && !inURL && !inQuote:
			out = append(out, strings.TrimSpace(h[start:i]))
			start = i + 1
		}
	}
	return append(out, strings.TrimSpace(h[start:]))
}

// relIsNext reports whether a link-value's parameters hold rel=next, quoted
// or not, alone or among other relation types.
func relIsNext(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
			continue
		}
		for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(v), `"`)) {
			if strings.EqualFold(rel, "next") {
				return true
			}
		}
	}
	return false
}

// read sends one read request holding a slot of the registry's read budget,
// with a time limit, and hands the answer to f; the body is closed after it.
func (r *Repository) read(ctx context.Context, method, u string, limit time.Duration, f func(*http.Response) error) error {
	client, err := r.client(ctx)
	if err != nil {
		return err
	}
	return r.host.read(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return err
		}
		if strings.Contains(u, "/manifests/") {
			req.Header.Set("Accept", manifestAccept)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return f(resp)
	})
}

// PutManifest writes raw as ref (a tag or a digest) and returns the digest
// the registry says it stored (Docker-Content-Digest; zero when it does not
// say), which is a claim, not a proof: read the tag back. The body can be
// sent again (http.NewRequest sets GetBody for a bytes.Reader), which a
// re-authentication needs.
func (r *Repository) PutManifest(ctx context.Context, ref string, raw []byte, mediaType types.MediaType) (v1.Hash, error) {
	client, err := r.client(ctx)
	if err != nil {
		return v1.Hash{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, r.manifestURL(ref), bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, err
	}
	req.Header.Set("Content-Type", string(mediaType))
	resp, err := client.Do(req)
	if err != nil {
		return v1.Hash{}, err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK, http.StatusCreated, http.StatusAccepted); err != nil {
		return v1.Hash{}, err
	}
	stored, _ := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
	return stored, nil
}

// Session is an open blob upload.
type Session struct {
	r   *Repository
	loc *url.URL
}

// Mount asks the registry to mount blob d from the repository from, another
// of the registry's (POST .../blobs/uploads/?mount=d&from=from). A mount is
// an offer: mounted is true only when the registry answered 201. A 202 is a
// registry that will not mount and opened an upload session instead, which
// is returned for the blob to go up in. Any other answer is returned as its
// error, for a plain upload to follow. Either refusal marks the registry:
// MountsRefused says so from then on.
func (r *Repository) Mount(ctx context.Context, d v1.Hash, from string) (mounted bool, s *Session, err error) {
	u := r.base() + "/blobs/uploads/?" + url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	s, status, err := r.post(ctx, u)
	switch {
	case status == http.StatusCreated:
		return true, nil, nil
	case status != 0:
		r.host.set(&r.host.mountsRefused)
	}
	return false, s, err
}

// StartUpload opens an upload session (POST .../blobs/uploads/).
func (r *Repository) StartUpload(ctx context.Context) (*Session, error) {
	s, _, err := r.post(ctx, r.base()+"/blobs/uploads/")
	return s, err
}

// post opens an upload session, or mounts: the session of a 202, the status
// of any answer (0 when there was none).
func (r *Repository) post(ctx context.Context, u string) (*Session, int, error) {
	client, err := r.client(ctx)
	if err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		return nil, resp.StatusCode, nil
	}
	if err := transport.CheckError(resp, http.StatusAccepted); err != nil {
		return nil, resp.StatusCode, err
	}
	loc, err := r.c.uploadLocation(ctx, resp)
	if err != nil {
		return nil, resp.StatusCode, err
	}
	return &Session{r: r, loc: loc}, resp.StatusCode, nil
}

// Put sends the whole blob in one PUT into the session (the registry API's
// monolithic upload). open gives the blob's bytes, as often as the request
// must be sent (a re-authentication sends it again); its errors are the
// caller's to mark.
func (s *Session) Put(ctx context.Context, d v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	loc := s.withDigest(d)
	client, err := s.r.client(ctx)
	if err != nil {
		return err
	}
	body, err := open()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), body)
	if err != nil {
		body.Close()
		return err
	}
	req.ContentLength = size
	req.GetBody = open
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusCreated)
}

// Patch sends a blob whose digest is not known yet, as it is made: one
// PATCH of body, of no announced length, ending when body does (the
// registry API's chunked upload, in one chunk, which every registry takes
// as the first). Commit then names the digest. body cannot be sent again:
// a re-authentication fails the PATCH, and the caller uploads plainly.
func (s *Session) Patch(ctx context.Context, body io.Reader) error {
	client, err := s.r.client(ctx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, s.loc.String(), io.NopCloser(body))
	if err != nil {
		return err
	}
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusAccepted, http.StatusNoContent); err != nil {
		return err
	}
	if resp.Header.Get("Location") != "" {
		loc, err := s.r.c.uploadLocation(ctx, resp)
		if err != nil {
			return err
		}
		s.loc = loc
	}
	return nil
}

// Commit ends a session whose bytes went up by Patch: a PUT with no body,
// naming the blob's digest, which the registry checks against what it got.
func (s *Session) Commit(ctx context.Context, d v1.Hash) error {
	loc := s.withDigest(d)
	client, err := s.r.client(ctx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), http.NoBody)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusCreated)
}

// withDigest is the session's location with ?digest=d, which ends it.
func (s *Session) withDigest(d v1.Hash) url.URL {
	loc := *s.loc
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	return loc
}

// nameUnknown is a 404 whose error code is NAME_UNKNOWN.
func nameUnknown(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
		return false
	}
	for _, d := range terr.Errors {
		if d.Code == transport.NameUnknownErrorCode {
			return true
		}
	}
	return false
}

// IsStatus reports whether err is the registry's answer with status code.
func IsStatus(err error, code int) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == code
}

// maxConfigBytes bounds a config read whole.
const maxConfigBytes = 8 << 20

// Config reads a small blob whole: an image's config.
func (r *Repository) Config(ctx context.Context, d v1.Hash) ([]byte, error) {
	var raw []byte
	err := r.read(ctx, http.MethodGet, r.base()+"/blobs/"+d.String(), readTimeout, func(resp *http.Response) error {
		b, err := readWhole(resp, maxConfigBytes, "config "+d.String())
		if err != nil {
			return err
		}
		if got := digestOf(b); got != d {
			return fmt.Errorf("blob %s read back as %s", d, got)
		}
		raw = b
		return nil
	})
	return raw, err
}

// OpenBlob opens a blob for reading, to copy it elsewhere. The read budget
// is held until the answer's headers, not while the body is read: the
// caller reads it at the pace of where it writes it. Its digest is for the
// registry the blob goes to to check.
func (r *Repository) OpenBlob(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	client, err := r.client(ctx)
	if err != nil {
		return nil, err
	}
	var body io.ReadCloser
	err = r.host.read(ctx, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base()+"/blobs/"+d.String(), nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		if err := transport.CheckError(resp, http.StatusOK); err != nil {
			resp.Body.Close()
			return err
		}
		body = resp.Body
		return nil
	})
	return body, err
}

// digestOf is the sha256 digest of b.
func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

package pusher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tagpush/tagpush/queue"
)

// The blob phase: what a repository needs before any of its tags can be
// written (every blob, then an index's child manifests). It runs once per
// repository however many tags share it, and every tag of the repository
// waits for it without holding a write slot.
//
// Blobs go up with two writes each, a POST that opens an upload and one PUT
// that carries the whole blob (the registry API's monolithic upload), where
// go-containerregistry's Pusher sends a POST, a PATCH with the body and an
// empty PUT: one write fewer per blob, and each write is one more chance for
// a registry that fails above N writes in flight to fail. The existence
// checks (HEAD) of all blobs go out at once: they are reads, and hold no slot.
// The requests travel on go-containerregistry's authenticated transport (ping,
// token exchange, scopes are its). Blobs that can be mounted from another
// repository of the registry (a registry: source) go through its Pusher, which
// knows how to mount.

// phase is one run of a repository's blob phase.
type phase struct {
	done chan struct{} // closed when the phase has ended
	// Set before done is closed: how the phase ended.
	err      error
	attempts int     // attempts of the step that failed
	last     verdict // its verdict
}

// ready returns the repository's blob phase once it has ended, starting it
// when no phase is current. A tag whose context ends first stops waiting;
// the phase goes on for the others.
func (rs *repoState) ready(ctx context.Context) (*phase, error) {
	return rs.join(ctx, &rs.phase, rs.writeContent)
}

// join waits, with ctx, for the phase in *current, first starting it with work
// when there is none. A phase belongs to the repository, not to the tag that
// started it: it runs under the run's phase context, and Push waits for it.
func (rs *repoState) join(ctx context.Context, current **phase, work func(context.Context) (int, verdict, error)) (*phase, error) {
	rs.mu.Lock()
	ph := *current
	if ph == nil {
		ph = &phase{done: make(chan struct{})}
		*current = ph
		r := rs.run
		r.phases.Add(1)
		go func() {
			defer r.phases.Done()
			defer close(ph.done)
			ph.attempts, ph.last, ph.err = work(r.phaseCtx)
		}()
	}
	rs.mu.Unlock()
	select {
	case <-ph.done:
		return ph, ph.err
	case <-ctx.Done():
		return ph, context.Cause(ctx)
	}
}

// invalidate drops a phase whose result the registry contradicted (it lost a
// blob it had accepted): the next tag to ask starts a new one, which checks
// every blob again.
func (rs *repoState) invalidate(ph *phase) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.phase == ph {
		rs.phase, rs.gp = nil, nil
	}
}

// writeContent is the blob phase: all blobs at once, each retried on its own,
// then the child manifests of an index. It reports the failing step.
func (rs *repoState) writeContent(ctx context.Context) (int, verdict, error) {
	c := rs.run.content
	type outcome struct {
		attempts int
		last     verdict
		err      error
	}
	out := make([]outcome, len(c.blobs))
	var wg sync.WaitGroup
	for i, b := range c.blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &out[i]
			o.attempts, o.last, o.err = rs.run.do(ctx, rs.repo.RegistryStr(), rs.label(b.digest), rs.lim, true,
				func(ctx context.Context) error { return rs.writeBlob(ctx, b) })
		}()
	}
	wg.Wait()
	for _, o := range out {
		if o.err != nil {
			return o.attempts, o.last, o.err
		}
	}
	// Children before parents: every platform image at once, then indexes
	// (whose children are images or indexes written before them) in order.
	images, indexes := c.childrenByKind()
	outs := make([]outcome, len(images))
	for i, ch := range images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &outs[i]
			o.attempts, o.last, o.err = rs.putChild(ctx, ch)
		}()
	}
	wg.Wait()
	for _, o := range outs {
		if o.err != nil {
			return o.attempts, o.last, o.err
		}
	}
	for _, ch := range indexes {
		if a, v, err := rs.putChild(ctx, ch); err != nil {
			return a, v, err
		}
	}
	return 0, verdict{}, nil
}

func (rs *repoState) label(d v1.Hash) string {
	return fmt.Sprintf("%s@%s", rs.repo, d)
}

// putChild writes one child manifest of an index, by digest.
func (rs *repoState) putChild(ctx context.Context, ch child) (int, verdict, error) {
	return rs.run.do(ctx, rs.repo.RegistryStr(), rs.label(ch.digest), rs.lim, true, func(ctx context.Context) error {
		return rs.write(ctx, func() error {
			if err := rs.putManifest(ctx, ch.digest.String(), ch.t); err != nil {
				return fmt.Errorf("put manifest %s: %w", ch.digest, err)
			}
			return nil
		})
	})
}

// write runs f, one write request or a short sequence of them, holding a
// write slot of the registry.
func (rs *repoState) write(ctx context.Context, f func() error) error {
	s, err := rs.lim.Acquire(ctx)
	if err != nil {
		return err
	}
	defer s.Release()
	return f()
}

// writeBlob makes sure one blob is in the repository: a HEAD, then, when it is
// missing, an upload under a write slot.
func (rs *repoState) writeBlob(ctx context.Context, b blob) error {
	host := rs.repo.RegistryStr()
	if _, ok := b.layer.(*remote.MountableLayer); ok || rs.run.chunkedOnly(host) {
		return rs.write(ctx, func() error { return rs.uploadWithPusher(ctx, b) })
	}
	client, err := rs.httpClient(ctx)
	if err != nil {
		return err
	}
	base := fmt.Sprintf("%s://%s/v2/%s/blobs/", rs.repo.Scheme(), host, rs.repo.RepositoryStr())
	exists, err := blobExists(ctx, client, base+b.digest.String())
	if err != nil {
		return fmt.Errorf("check blob %s: %w", b.digest, err)
	}
	if exists {
		return nil
	}
	return rs.write(ctx, func() error {
		err := uploadBlob(ctx, client, base+"uploads/", b)
		if refusesMonolithic(err) {
			// Take the registry at its word: chunked uploads from now on,
			// starting with this blob, in this attempt.
			rs.run.noteChunkedOnly(host)
			return rs.uploadWithPusher(ctx, b)
		}
		if err != nil {
			return fmt.Errorf("upload blob %s: %w", b.digest, err)
		}
		return nil
	})
}

// uploadWithPusher uploads a blob through go-containerregistry's Pusher: a
// mount when the blob can be mounted from another repository of the registry,
// else POST, PATCH and PUT. The caller holds a write slot.
func (rs *repoState) uploadWithPusher(ctx context.Context, b blob) error {
	gp, err := rs.pusher()
	if err != nil {
		return err
	}
	if err := gp.Upload(ctx, rs.repo, b.layer); err != nil {
		return fmt.Errorf("upload blob %s: %w", b.digest, err)
	}
	return nil
}

// refusesMonolithic is an answer to a PUT with the whole blob that says the
// registry does not take uploads that way (rather than that it failed).
func refusesMonolithic(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.Request == nil || terr.Request.Method != http.MethodPut {
		return false
	}
	switch terr.StatusCode {
	case http.StatusMethodNotAllowed, http.StatusRequestedRangeNotSatisfiable, http.StatusNotImplemented, http.StatusLengthRequired:
		return true
	}
	return false
}

// httpClient returns the repository's authenticated client, made once per
// phase (it pings the registry and fetches a push token).
func (rs *repoState) httpClient(ctx context.Context) (*http.Client, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.client != nil {
		return rs.client, nil
	}
	r := rs.run
	auth, err := authn.Resolve(ctx, r.cfg.keychain, rs.repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", rs.repo, err)
	}
	t := transport.NewUserAgent(r.transport, r.cfg.userAgent)
	tr, err := transport.NewWithContext(ctx, rs.repo.Registry, auth, t, []string{rs.repo.Scope(transport.PushScope)})
	if err != nil {
		return nil, err
	}
	rs.client = &http.Client{Transport: tr, CheckRedirect: checkRedirect}
	return rs.client, nil
}

func blobExists(ctx context.Context, client *http.Client, u string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK, http.StatusNotFound); err != nil {
		return false, err
	}
	return resp.StatusCode == http.StatusOK, nil
}

// openUpload opens an upload session (POST .../blobs/uploads/) and returns
// where its content goes.
func openUpload(ctx context.Context, client *http.Client, uploads string) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, uploads, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	err = transport.CheckError(resp, http.StatusAccepted)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	return uploadLocation(resp)
}

// uploadBlob opens an upload session and sends the whole blob in one PUT.
func uploadBlob(ctx context.Context, client *http.Client, uploads string, b blob) error {
	loc, err := openUpload(ctx, client, uploads)
	if err != nil {
		return err
	}
	q := loc.Query()
	q.Set("digest", b.digest.String())
	loc.RawQuery = q.Encode()

	body, err := b.layer.Compressed()
	if err != nil {
		return fmt.Errorf("read blob: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), body)
	if err != nil {
		body.Close()
		return err
	}
	req.ContentLength = b.size
	req.GetBody = b.layer.Compressed
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusCreated)
}

// uploadLocation resolves the upload session's Location. Like
// go-containerregistry, it refuses a Location that moves the upload to
// another host with a private or loopback address: a registry must not be
// able to point our blob at an internal service.
func uploadLocation(resp *http.Response) (*url.URL, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil, fmt.Errorf("registry opened an upload without a Location")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("upload Location %q: %w", loc, err)
	}
	u = resp.Request.URL.ResolveReference(u)
	if u.Hostname() != resp.Request.URL.Hostname() && privateIP(u.Hostname()) {
		return nil, fmt.Errorf("registry sent the upload to a private address %s: refused", u.Hostname())
	}
	return u, nil
}

// checkRedirect follows redirects as go-containerregistry does, refusing one
// that moves a request to another host with a private or loopback address;
// how many redirects a request may follow is redirectLimitTransport's to say.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > 0 && req.URL.Hostname() != via[0].URL.Hostname() && privateIP(req.URL.Hostname()) {
		return fmt.Errorf("registry redirected a request to a private address %s: refused", req.URL.Hostname())
	}
	return nil
}

func privateIP(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast())
}

// pusher returns the repository's go-containerregistry Pusher, for mountable
// blobs and chunked uploads.
func (rs *repoState) pusher() (*remote.Pusher, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.gp == nil {
		gp, err := remote.NewPusher(rs.run.remoteOptions()...)
		if err != nil {
			return nil, err
		}
		rs.gp = gp
	}
	return rs.gp, nil
}

// repoState is one destination repository's share of a run.
type repoState struct {
	repo name.Repository
	run  *run
	lim  *queue.Limiter // the registry's write limit

	mu     sync.Mutex
	phase  *phase
	gp     *remote.Pusher
	client *http.Client
	refs   *phase // the referrers' push, once per run
}

// manifestAccept is every manifest media type tagpush pushes, for HEAD.
var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")

// manifestURL is where a manifest of the repository lives, by tag or digest.
func (rs *repoState) manifestURL(ref string) string {
	return fmt.Sprintf("%s://%s/v2/%s/manifests/%s", rs.repo.Scheme(), rs.repo.RegistryStr(), rs.repo.RepositoryStr(), ref)
}

// putManifest writes t's manifest as ref (a tag or a digest) with the
// repository's client, which the blob phase has already authenticated: a
// Pusher or Puller of go-containerregistry would ping the registry (and fetch
// a token) first, on the critical path of every run.
func (rs *repoState) putManifest(ctx context.Context, ref string, t remote.Taggable) error {
	client, err := rs.httpClient(ctx)
	if err != nil {
		return err
	}
	raw, err := t.RawManifest()
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	mt, err := t.(interface {
		MediaType() (types.MediaType, error)
	}).MediaType()
	if err != nil {
		return fmt.Errorf("read manifest media type: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, rs.manifestURL(ref), bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", string(mt))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusOK, http.StatusCreated, http.StatusAccepted)
}

// headManifest returns the digest ref resolves to in the repository.
func (rs *repoState) headManifest(ctx context.Context, ref string) (v1.Hash, error) {
	client, err := rs.httpClient(ctx)
	if err != nil {
		return v1.Hash{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, rs.manifestURL(ref), nil)
	if err != nil {
		return v1.Hash{}, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := client.Do(req)
	if err != nil {
		return v1.Hash{}, err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return v1.Hash{}, err
	}
	h, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("registry answered HEAD %s without a usable Docker-Content-Digest: %w", ref, err)
	}
	return h, nil
}

// referrersFollowed pushes the image's referrers to the repository, once for
// all its tags, and returns how many the repository holds. It waits with ctx;
// the push goes on for the other tags if ctx ends.
func (rs *repoState) referrersFollowed(ctx context.Context) (int, error) {
	if _, err := rs.join(ctx, &rs.refs, rs.pushReferrers); err != nil {
		return 0, err
	}
	return len(rs.run.content.referrers), nil
}

// pushReferrers pushes each referrer with go-containerregistry's Pusher: its
// blobs, its manifest by digest (or the cosign tag), and, for a manifest with
// a subject on a registry without the referrers API, the subject's fallback
// tag, which it reads, merges and writes back. One at a time: two updates of
// the same fallback tag at once would lose one. A referrer already in the
// repository costs a HEAD.
func (rs *repoState) pushReferrers(ctx context.Context) (int, verdict, error) {
	for _, ref := range rs.run.content.referrers {
		dg, ok := ref.Taggable.(interface{ Digest() (v1.Hash, error) })
		if !ok {
			return 0, verdict{}, fmt.Errorf("referrer %T has no digest", ref.Taggable)
		}
		d, err := dg.Digest()
		if err != nil {
			return 0, verdict{}, fmt.Errorf("referrer digest: %w", err)
		}
		var dst name.Reference = rs.repo.Digest(d.String())
		what := "referrer " + d.String()
		if ref.Tag != "" {
			dst, what = rs.repo.Tag(ref.Tag), "referrer tag "+ref.Tag
		}
		a, v, err := rs.run.do(ctx, rs.repo.RegistryStr(), rs.repo.String()+" "+what, rs.lim, true, func(ctx context.Context) error {
			gp, err := rs.pusher()
			if err != nil {
				return err
			}
			return rs.write(ctx, func() error {
				if err := gp.Push(ctx, dst, ref.Taggable); err != nil {
					return fmt.Errorf("push %s: %w", what, err)
				}
				return nil
			})
		})
		if err != nil {
			return a, v, err
		}
	}
	return 0, verdict{}, nil
}

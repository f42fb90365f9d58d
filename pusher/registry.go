package pusher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Every request tagpush writes by hand to a destination registry is in this
// file: manifest reads and writes, blob existence checks, upload sessions,
// the tag list. They travel on the repository's authenticated client (the
// ping, token exchange and scopes are go-containerregistry's). Reads take a
// slot of the registry's read budget for the request and its body; writes
// are called under a write slot by their caller, which owns the retries.

// manifestAccept is every manifest media type tagpush pushes.
var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")

const (
	// maxManifestBytes bounds a manifest read by GET; registries refuse
	// larger ones (4 MiB is the usual limit, and oras-go's).
	maxManifestBytes = 4 << 20
	// readTimeout bounds one read request, its body included: a read moves a
	// few KiB, and one that takes longer is retried as a read.
	readTimeout = 30 * time.Second
)

func (rs *repoState) base() string {
	return fmt.Sprintf("%s://%s/v2/%s", rs.repo.Scheme(), rs.repo.RegistryStr(), rs.repo.RepositoryStr())
}

// manifestURL is where a manifest of the repository lives, by tag or digest.
func (rs *repoState) manifestURL(ref string) string { return rs.base() + "/manifests/" + ref }

// errHeadUnusable is a manifest HEAD whose answer does not say the digest:
// no Docker-Content-Digest (CDNs and proxies drop it), 405 or 501.
var errHeadUnusable = errors.New("manifest HEAD answer has no usable digest")

// resolve reads the digest ref points at. found is false when the registry
// says there is no such manifest (404). HEAD is tried first (no body); GET
// reads the manifest and hashes it where HEAD cannot be used, as crane and
// oras do: a HEAD without Docker-Content-Digest, a HEAD the registry refuses
// (405, 501), and, with confirmMiss, a 404 to HEAD (some registries answer
// HEAD 404 for manifests GET finds). A registry whose HEAD failed once in one
// of these ways is read with GET from then on.
func (rs *repoState) resolve(ctx context.Context, ref string, confirmMiss bool) (d v1.Hash, found bool, err error) {
	reg := rs.reg
	if !reg.headIsUnusable() {
		d, err = rs.headManifest(ctx, ref)
		switch {
		case err == nil:
			return d, true, nil
		case isStatus(err, http.StatusNotFound) && !confirmMiss:
			return v1.Hash{}, false, nil
		case !errors.Is(err, errHeadUnusable) && !isStatus(err, http.StatusNotFound):
			return v1.Hash{}, false, err
		}
	}
	headMissed := err != nil && isStatus(err, http.StatusNotFound)
	if err != nil && !headMissed {
		reg.noteHeadUnusable()
	}
	d, err = rs.getManifest(ctx, ref)
	switch {
	case err == nil:
		if headMissed {
			reg.noteHeadUnusable()
		}
		return d, true, nil
	case isStatus(err, http.StatusNotFound):
		return v1.Hash{}, false, nil
	}
	return v1.Hash{}, false, err
}

// headManifest returns the digest ref resolves to, from a HEAD.
func (rs *repoState) headManifest(ctx context.Context, ref string) (v1.Hash, error) {
	var d v1.Hash
	err := rs.readRequest(ctx, http.MethodHead, rs.manifestURL(ref), func(resp *http.Response) error {
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
func (rs *repoState) getManifest(ctx context.Context, ref string) (v1.Hash, error) {
	var d v1.Hash
	err := rs.readRequest(ctx, http.MethodGet, rs.manifestURL(ref), func(resp *http.Response) error {
		if err := transport.CheckError(resp, http.StatusOK); err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, io.LimitReader(resp.Body, maxManifestBytes+1))
		if err != nil {
			return fmt.Errorf("read manifest %s: %w", ref, err)
		}
		if n > maxManifestBytes {
			return fmt.Errorf("manifest %s is larger than %d bytes", ref, maxManifestBytes)
		}
		d = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
		return nil
	})
	return d, err
}

// blobExists reports whether the repository has the blob.
func (rs *repoState) blobExists(ctx context.Context, d v1.Hash) (bool, error) {
	var exists bool
	err := rs.readRequest(ctx, http.MethodHead, rs.base()+"/blobs/"+d.String(), func(resp *http.Response) error {
		if err := transport.CheckError(resp, http.StatusOK, http.StatusNotFound); err != nil {
			return err
		}
		exists = resp.StatusCode == http.StatusOK
		return nil
	})
	return exists, err
}

// maxTagPages bounds how many pages of the tag list a look-up reads; a
// repository with more tags than that is looked up tag by tag.
const maxTagPages = 5

// errTooManyTags is a tag list longer than a look-up reads.
var errTooManyTags = errors.New("the repository has more tags than one look-up lists")

// listTags returns the repository's tags (GET /v2/<name>/tags/list, following
// its pages). A repository that does not exist yet has none.
func (rs *repoState) listTags(ctx context.Context) (map[string]bool, error) {
	tags := make(map[string]bool)
	next := rs.base() + "/tags/list?n=1000"
	for page := 0; next != ""; page++ {
		if page == maxTagPages {
			return nil, errTooManyTags
		}
		u := next
		next = ""
		err := rs.readRequest(ctx, http.MethodGet, u, func(resp *http.Response) error {
			if resp.StatusCode == http.StatusNotFound {
				return nil // NAME_UNKNOWN: a new repository
			}
			if err := transport.CheckError(resp, http.StatusOK); err != nil {
				return err
			}
			var list struct {
				Tags []string `json:"tags"`
			}
			if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&list); err != nil {
				return fmt.Errorf("read the tag list: %w", err)
			}
			for _, t := range list.Tags {
				tags[t] = true
			}
			if link := resp.Header.Get("Link"); link != "" {
				n, err := nextPage(resp.Request.URL, link)
				if err != nil {
					return err
				}
				next = n
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return tags, nil
}

// nextPage reads the next page's URL from a Link header (<url>; rel="next").
func nextPage(base *url.URL, link string) (string, error) {
	for _, part := range strings.Split(link, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
			continue
		}
		u, err := url.Parse(strings.Trim(strings.TrimSpace(target), "<>"))
		if err != nil {
			return "", fmt.Errorf("tag list Link %q: %w", link, err)
		}
		next := base.ResolveReference(u)
		if next.Host != base.Host {
			return "", fmt.Errorf("tag list Link points at another host, %s", next.Host)
		}
		return next.String(), nil
	}
	return "", nil
}

// readRequest sends one read request holding a slot of the registry's read
// budget, with a time limit, and hands the answer to read; the body is closed
// after it.
func (rs *repoState) readRequest(ctx context.Context, method, u string, read func(*http.Response) error) error {
	client, err := rs.client(ctx)
	if err != nil {
		return err
	}
	return rs.reg.read(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, readTimeout)
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
		return read(resp)
	})
}

// putManifest writes raw as ref (a tag or a digest) and returns the digest
// the registry says it stored (Docker-Content-Digest; zero when it does not
// say). The caller holds a write slot. The body can be sent again
// (http.NewRequest sets GetBody for a bytes.Reader), which a
// re-authentication needs.
func (rs *repoState) putManifest(ctx context.Context, ref string, raw []byte, mediaType types.MediaType) (v1.Hash, error) {
	client, err := rs.client(ctx)
	if err != nil {
		return v1.Hash{}, err
	}
	rs.putStarted()
	defer rs.putEnded()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, rs.manifestURL(ref), bytes.NewReader(raw))
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

// mountOrOpen asks the registry to mount blob d from the repository from
// (POST .../blobs/uploads/?mount=d&from=from): mounted when it did (201),
// else the upload session it opened instead (202), as a registry that cannot
// or will not mount does. With no from, it only opens a session. The caller
// holds a write slot.
func (rs *repoState) mountOrOpen(ctx context.Context, d v1.Hash, from string) (loc *url.URL, mounted bool, err error) {
	client, err := rs.client(ctx)
	if err != nil {
		return nil, false, err
	}
	u := rs.base() + "/blobs/uploads/"
	if from != "" {
		u += "?" + url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if from != "" && resp.StatusCode == http.StatusCreated {
		return nil, true, nil
	}
	if err := transport.CheckError(resp, http.StatusAccepted); err != nil {
		return nil, false, err
	}
	loc, err = rs.run.uploadLocation(ctx, resp)
	return loc, false, err
}

// uploadBlob puts one blob in the repository: mounted from the repository
// from (another of the registry's that holds it) when from is set and the
// registry mounts it, else sent whole in one PUT into the upload session.
// The caller holds a write slot. A failure to read the blob from the source
// is a SourceError, never the registry's.
func (rs *repoState) uploadBlob(ctx context.Context, b blob, from string) (mounted bool, err error) {
	loc, mounted, err := rs.mountOrOpen(ctx, b.digest, from)
	if err != nil || mounted {
		return mounted, err
	}
	return false, rs.putBlob(ctx, loc, b)
}

// putBlob sends the whole blob in one PUT into an upload session.
func (rs *repoState) putBlob(ctx context.Context, loc *url.URL, b blob) error {
	q := loc.Query()
	q.Set("digest", b.digest.String())
	loc.RawQuery = q.Encode()

	open := func() (io.ReadCloser, error) {
		rc, err := b.layer.Compressed()
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("open blob %s: %w", b.digest, err)}
		}
		return &sourceReader{rc: rc}, nil
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
	req.ContentLength = b.size
	req.GetBody = open
	req.Header.Set("Content-Type", "application/octet-stream")
	client, err := rs.client(ctx)
	if err != nil {
		body.Close()
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusCreated)
}

// uploadLocation resolves the upload session's Location and refuses one that
// moves the upload to another host at a loopback, unspecified, private or
// link-local address where the registry itself is not: a registry must not
// be able to point our blob at a service on the runner or its network.
func (r *run) uploadLocation(ctx context.Context, resp *http.Response) (*url.URL, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil, fmt.Errorf("registry opened an upload without a Location")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("upload Location %q: %w", loc, err)
	}
	u = resp.Request.URL.ResolveReference(u)
	if err := r.targetAllowed(ctx, resp.Request.URL.Host, u.Host); err != nil {
		return nil, fmt.Errorf("registry sent the upload to %s: %w", u.Host, err)
	}
	return u, nil
}

// checkRedirect follows redirects as go-containerregistry does, refusing one
// that moves a request to another host at an address of the kinds
// uploadLocation refuses; how many redirects a request may follow is
// redirectLimitTransport's to say.
func (r *run) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 {
		return nil
	}
	if err := r.targetAllowed(req.Context(), via[0].URL.Host, req.URL.Host); err != nil {
		return fmt.Errorf("registry redirected a request to %s: %w", req.URL.Host, err)
	}
	return nil
}

// ErrInternalTarget is an upload or redirect the registry pointed at an
// address tagpush does not send to.
var ErrInternalTarget = errors.New("refused: an internal address the registry is not at")

// targetAllowed checks a host a registry (at from) sends a request to. The
// same host is always allowed. Another host is resolved: each of its
// addresses must be public, or of a kind (this machine, a private network)
// the registry's own addresses include, so a registry on a private network
// may send uploads within it and one on the runner (a test registry) to the
// runner, and no other may.
func (r *run) targetAllowed(ctx context.Context, from, to string) error {
	if strings.EqualFold(from, to) {
		return nil
	}
	toIPs, err := r.addresses(ctx, hostOf(to))
	if err != nil {
		return fmt.Errorf("resolve %s: %w", hostOf(to), err)
	}
	var fromIPs []net.IP
	for _, ip := range toIPs {
		kind := addressKind(ip)
		if kind == "" {
			continue
		}
		if fromIPs == nil {
			if fromIPs, err = r.addresses(ctx, hostOf(from)); err != nil {
				return fmt.Errorf("resolve %s: %w", hostOf(from), err)
			}
		}
		shared := false
		for _, f := range fromIPs {
			shared = shared || addressKind(f) == kind
		}
		if !shared {
			return fmt.Errorf("%w (%s is %s)", ErrInternalTarget, ip, kind)
		}
	}
	return nil
}

func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// addresses resolves host (an IP literal is its own address).
func (r *run) addresses(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	addrs, err := r.cfg.lookupIP(ctx, host)
	if err != nil {
		return nil, err
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips, nil
}

// addressKind is "this machine" for loopback and unspecified addresses (both
// reach the runner itself), "a private address" for private, shared (CGNAT)
// and link-local ones, and "" for a public address.
func addressKind(ip net.IP) string {
	switch {
	case ip.IsLoopback() || ip.IsUnspecified():
		return "this machine"
	case ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || cgnat.Contains(ip):
		return "a private address"
	}
	return ""
}

var cgnat = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

func isStatus(err error, code int) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == code
}

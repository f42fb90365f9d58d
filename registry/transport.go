package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTP layers under go-containerregistry's own transport (auth, scheme,
// user agent). Each wrapper has one concern and sees every request a client
// sends, including those go-containerregistry makes on its own (ping, token,
// referrers). None of them retries: the caller owns retries.
//
// From the outside in: rewind -> redirectLimit -> pause -> retryAfter ->
// errorBodyLimit -> uploadCounter -> stallWatchdog -> the HTTP transport.

var (
	_ http.RoundTripper = (*rewindTransport)(nil)
	_ http.RoundTripper = (*redirectLimitTransport)(nil)
	_ http.RoundTripper = (*pauseTransport)(nil)
	_ http.RoundTripper = (*retryAfterTransport)(nil)
	_ http.RoundTripper = (*errorBodyLimit)(nil)
	_ http.RoundTripper = (*uploadCounter)(nil)
	_ http.RoundTripper = (*stallWatchdog)(nil)
)

// rewindTransport makes a request that is sent a second time carry its body
// again. go-containerregistry's bearer transport answers a 401 challenge (an
// expired token) by fetching a token and sending the same *http.Request
// again, whose body the first send consumed: net/http then fails it
// ("ContentLength=879 with Body length 0"). A request with GetBody (every
// manifest PUT and blob upload tagpush sends; go-containerregistry's own,
// made from a bytes.Buffer) is remembered while its answer is a 401, the one
// answer after which it is sent again, and a second send gets a fresh body.
type rewindTransport struct {
	inner http.RoundTripper
	mu    sync.Mutex
	sent  map[*http.Request]bool
}

func (t *rewindTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.GetBody == nil || req.Body == nil || req.Body == http.NoBody {
		return t.inner.RoundTrip(req)
	}
	t.mu.Lock()
	again := t.sent[req]
	delete(t.sent, req)
	t.mu.Unlock()
	out := req
	if again {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("send the request again after a re-authentication: %w", err)
		}
		out = cloneWithBody(req, body)
	}
	resp, err := t.inner.RoundTrip(out)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		t.mu.Lock()
		if t.sent == nil {
			t.sent = make(map[*http.Request]bool)
		}
		t.sent[req] = true
		t.mu.Unlock()
	}
	return resp, err
}

// errorBodyLimit reads the body of an error answer (a status of 400 or more)
// at once, at most maxErrorBody bytes and for at most wait, and hands on what
// it got: go-containerregistry reads an error body whole to build its error,
// and an answer that trickles a byte a second never trips the stall
// watchdog, so one such answer would hold a tag for minutes. The status is
// what the error needs; its text is a bonus. A body that the stall watchdog
// abandons is a stall, as before.
type errorBodyLimit struct {
	inner http.RoundTripper
	wait  time.Duration
}

const (
	maxErrorBody  = 64 << 10
	errorBodyWait = 3 * time.Second
)

func (t *errorBodyLimit) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.inner.RoundTrip(req)
	if err != nil || resp.StatusCode < 400 || req.Method == http.MethodHead {
		return resp, err
	}
	type read struct {
		b   []byte
		err error
	}
	done := make(chan read, 1)
	body := resp.Body
	go func() {
		b, err := io.ReadAll(io.LimitReader(body, maxErrorBody))
		done <- read{b, err}
	}()
	timer := time.NewTimer(t.wait)
	defer timer.Stop()
	var got read
	select {
	case got = <-done:
	case <-timer.C:
		body.Close() // ends the read under way
		got = <-done
		got.err = nil
	}
	body.Close()
	var stall *StallError
	if errors.As(got.err, &stall) {
		return nil, got.err
	}
	resp.Body = io.NopCloser(bytes.NewReader(got.b))
	resp.ContentLength = int64(len(got.b))
	return resp, nil
}

// MaxRedirects is how many redirects one request may follow, as net/http's
// default. go-containerregistry's client replaces net/http's redirect policy
// with an SSRF check that has no count, so a registry that redirects a request
// to itself would otherwise be asked again forever.
const MaxRedirects = 10

// RedirectLoopError is a request that was redirected more than MaxRedirects times.
type RedirectLoopError struct {
	URL       string
	Redirects int
}

func (e *RedirectLoopError) Error() string {
	return fmt.Sprintf("redirect loop: %s was redirected more than %d times", e.URL, e.Redirects-1)
}

// redirectLimitTransport refuses the request that would be redirect number
// MaxRedirects+1. net/http records the redirect chain in Request.Response, so
// a RoundTripper can count it.
type redirectLimitTransport struct {
	inner http.RoundTripper
}

func (t *redirectLimitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	n := 0
	for r := req.Response; r != nil && r.Request != nil; r = r.Request.Response {
		n++
	}
	if n > MaxRedirects {
		closeBody(req)
		return nil, &RedirectLoopError{URL: redactURL(req), Redirects: n}
	}
	return t.inner.RoundTrip(req)
}

// pauseTransport holds every write (POST, PATCH, PUT) to a registry that
// announced a wait (a 429, or a 503 with Retry-After, to any request of this
// run) until the wait ends. The announcement speaks for the client, not for
// the one request that got it: other tags writing meanwhile would only earn
// more 429s. Reads are not held; they are what registries rate-limit least and
// verification needs them.
type pauseTransport struct {
	inner http.RoundTripper
	c     *Client
}

func (t *pauseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost || req.Method == http.MethodPatch || req.Method == http.MethodPut {
		h := t.c.host(req.URL.Host)
		for {
			wait := h.remaining()
			if wait <= 0 {
				break
			}
			if err := Sleep(req.Context(), wait); err != nil {
				closeBody(req)
				return nil, err
			}
		}
	}
	return t.inner.RoundTrip(req)
}

// retryAfterTransport notes the Retry-After header of 429 and 503 answers.
// go-containerregistry turns responses into errors without their headers, so
// this is the one place the header can be read.
type retryAfterTransport struct {
	inner http.RoundTripper
	c     *Client
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.inner.RoundTrip(req)
	if err == nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := RetryAfter(resp.Header.Get("Retry-After"), t.c.now()); ok {
			t.c.host(req.URL.Host).noteWait(d)
		}
	}
	return resp, err
}

// uploadCounter counts blob bytes as they are sent, for progress. It counts in
// the request body itself, with atomics and no channel: net/http may still be
// reading a body after RoundTrip has returned (a registry that answers before
// reading the whole upload), and nothing here can be closed under it.
type uploadCounter struct {
	inner http.RoundTripper
	// total is the size of every blob upload request started; sent is the
	// bytes of them read so far.
	total, sent atomic.Int64
}

func (t *uploadCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if isBlobUpload(req) && req.Body != nil && req.Body != http.NoBody {
		if req.ContentLength > 0 {
			t.total.Add(req.ContentLength)
		}
		req = cloneWithBody(req, &countingReader{rc: req.Body, n: &t.sent})
	}
	return t.inner.RoundTrip(req)
}

func (t *uploadCounter) progress() (sent, total int64) {
	// A streamed upload has no length to add to the total.
	sent = t.sent.Load()
	return sent, max(t.total.Load(), sent)
}

// isBlobUpload is a request that carries blob content: PATCH or PUT under
// /v2/<name>/blobs/uploads/.
func isBlobUpload(req *http.Request) bool {
	return (req.Method == http.MethodPatch || req.Method == http.MethodPut) &&
		strings.HasPrefix(req.URL.Path, "/v2/") && strings.Contains(req.URL.Path, "/blobs/uploads/")
}

type countingReader struct {
	rc io.ReadCloser
	n  *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }

// StallError is a request abandoned because it made no progress, sending its
// body or reading the answer's, for the stall timeout.
type StallError struct {
	Host string
	Idle time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("no data moved to or from %s for %s: request abandoned", e.Host, e.Idle)
}

// Timeout marks a stall as a timeout (net.Error), which is transient.
func (e *StallError) Timeout() bool { return true }

// Temporary implements net.Error.
func (e *StallError) Temporary() bool { return true }

var errStalled = errors.New("stalled")

// stallWatchdog abandons a request when no bytes of its body are taken, or no
// bytes of its answer's body arrive, for idle. The wait between the end of the
// body and the answer's headers is the HTTP transport's ResponseHeaderTimeout,
// since a registry may take long to commit a large blob; without this, a
// response that stalls after its headers would hold a tag until its timeout.
type stallWatchdog struct {
	inner http.RoundTripper
	idle  time.Duration
}

func (t *stallWatchdog) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.idle <= 0 {
		return t.inner.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	w := &watch{idle: t.idle, cancel: cancel}
	w.timer = time.AfterFunc(t.idle, func() { cancel(errStalled) })
	w.timer.Stop()
	hasBody := req.Body != nil && req.Body != http.NoBody
	out := req.WithContext(ctx)
	if hasBody {
		w.set(&w.sending, true)
		out = cloneWithBody(out, &watchedBody{rc: req.Body, w: w, ctx: ctx, host: req.URL.Host, request: true})
	}
	resp, err := t.inner.RoundTrip(out)
	if err != nil {
		stalled := context.Cause(ctx) == errStalled
		w.stop()
		if stalled {
			return nil, &StallError{Host: req.URL.Host, Idle: t.idle}
		}
		return nil, err
	}
	w.set(&w.receiving, true)
	resp.Body = &watchedBody{rc: resp.Body, w: w, ctx: ctx, host: req.URL.Host}
	return resp, nil
}

// watch is one request's watchdog. The request body is read by net/http's
// writer goroutine, the answer by the caller: both touch it, under mu.
type watch struct {
	idle   time.Duration
	cancel context.CancelCauseFunc
	timer  *time.Timer

	mu                 sync.Mutex
	sending, receiving bool
	stopped            bool
}

// set marks a phase as running or over and arms the timer while one runs.
func (w *watch) set(phase *bool, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	*phase = on
	if w.stopped {
		return
	}
	if w.sending || w.receiving {
		w.timer.Reset(w.idle)
	} else {
		w.timer.Stop()
	}
}

// touch records progress.
func (w *watch) touch() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped && (w.sending || w.receiving) {
		w.timer.Reset(w.idle)
	}
}

// stop ends the watch and releases the request's context.
func (w *watch) stop() {
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
	w.cancel(context.Canceled)
}

type watchedBody struct {
	rc      io.ReadCloser
	w       *watch
	ctx     context.Context
	host    string
	request bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.w.touch()
	}
	if err != nil {
		if context.Cause(b.ctx) == errStalled {
			err = &StallError{Host: b.host, Idle: b.w.idle}
		}
		if b.request {
			b.w.set(&b.w.sending, false)
		}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.rc.Close()
	if b.request {
		b.w.set(&b.w.sending, false)
	} else {
		// The caller is done with the answer: whatever is still being sent
		// goes to nobody, so the request ends here.
		b.w.stop()
	}
	return err
}

// cloneWithBody returns a shallow copy of req with another body. A
// RoundTripper must not modify the request it was given.
func cloneWithBody(req *http.Request, body io.ReadCloser) *http.Request {
	out := new(http.Request)
	*out = *req
	out.Body = body
	return out
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// redactURL is the request's URL without its query, which may carry upload
// session state or signed parameters.
func redactURL(req *http.Request) string {
	u := *req.URL
	u.RawQuery = ""
	return u.String()
}

// realmTransport lets a registry's token service live on another port of the
// registry's own address (docker_auth on :5001, GitLab reached by its IP).
// go-containerregistry refuses a token realm at a loopback or private address
// unless it is the registry's exact host:port, a guard against a registry
// sending credentials to a service on the runner's network; a realm on the
// registry's own host name (or IP) and scheme, at another port, is the
// registry's own service, and every other realm still meets the guard. The
// challenge's realm is rewritten to a path on the registry's host:port, and
// requests to that path are sent on to the realm itself.
type realmTransport struct {
	inner http.RoundTripper
}

var _ http.RoundTripper = (*realmTransport)(nil)

// realmPrefix starts the rewritten realm's path: /.tagpush-realm/<port>/<path>.
const realmPrefix = "/.tagpush-realm/"

var realmParam = regexp.MustCompile(`(?i)(realm\s*=\s*")([^"]*)(")`)

func (t *realmTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if rest, ok := strings.CutPrefix(req.URL.Path, realmPrefix); ok {
		port, path, _ := strings.Cut(rest, "/")
		out := req.Clone(req.Context())
		out.URL.Host = net.JoinHostPort(req.URL.Hostname(), port)
		out.URL.Path = "/" + path
		out.URL.RawPath = ""
		out.Host = ""
		return t.inner.RoundTrip(out)
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	for i, ch := range resp.Header.Values("WWW-Authenticate") {
		m := realmParam.FindStringSubmatchIndex(ch)
		if m == nil {
			continue
		}
		realm, err := url.Parse(ch[m[4]:m[5]])
		if err != nil || realm.Scheme != req.URL.Scheme || realm.Host == req.URL.Host ||
			!strings.EqualFold(realm.Hostname(), req.URL.Hostname()) || realm.Port() == "" {
			continue
		}
		moved := *req.URL
		moved.Path = realmPrefix + realm.Port() + realm.Path
		moved.RawPath = ""
		moved.RawQuery = realm.RawQuery
		resp.Header["Www-Authenticate"][i] = ch[:m[4]] + moved.String() + ch[m[5]:]
	}
	return resp, nil
}

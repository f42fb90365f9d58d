package pusher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/queue"
	"github.com/tagpush/tagpush/registry"
)

// Fault is the kind of a failure, as counted in a run's statistics.
type Fault string

const (
	Fault5xx Fault = "5xx"
	Fault429 Fault = "429"
	// FaultRateLimited is a 403 that is a rate limit, not a refusal: ghcr.io's
	// "You have exceeded a secondary rate limit".
	FaultRateLimited Fault = "403-rate-limit"
	FaultReset       Fault = "reset"
	FaultTimeout     Fault = "timeout"
	FaultUploadLost  Fault = "upload-lost"
	FaultAuth        Fault = "auth"
	FaultDenied      Fault = "denied"
	FaultNotFound    Fault = "not-found"
	FaultInvalid     Fault = "invalid"
	FaultConnect     Fault = "connect"
	FaultTLS         Fault = "tls"
	FaultRedirect    Fault = "redirect"
	// FaultSource is a failure to read the image from its source (a
	// registry: source's blob): never the destination's fault.
	FaultSource Fault = "source"
	// FaultLocal is this machine running out of something (open files,
	// ports, buffers): never the registry's fault.
	FaultLocal       Fault = "local"
	FaultOther       Fault = "other"
	faultCancelled   Fault = "cancelled"
	faultNotVerified Fault = "not-verified"
)

// verdict is what one failed attempt means for the tag and for the registry.
type verdict struct {
	fault     Fault
	transient bool
	outcome   queue.Outcome
	// status is the HTTP status behind the failure, 0 when there was none.
	status int
	// wait is how long the registry asked us to wait, 0 when it did not say.
	wait time.Duration
	// refused is set for a refused connection: transient only while the
	// registry has been refusing for less than the connect grace.
	refused bool
	// relearnBlobs is set when the registry lost blobs we believed it had, so
	// the next attempt must check every blob again instead of trusting what
	// this run already uploaded.
	relearnBlobs bool
	// timeout is the tag's time limit, set when it is what ended the tag.
	timeout time.Duration
	// betweenAttempts marks a timeout that came while the step waited to
	// retry; lostBefore says whether the attempt before may have landed.
	betweenAttempts, lostBefore bool
}

// mayHaveLanded reports whether the write the verdict is about may have
// been committed with its answer lost: a 5xx or a reset on the way back, or
// a request its time limit cut. A rate limit (429, ghcr.io's 403) or a
// refusal is the registry saying it did not take the write.
func (v verdict) mayHaveLanded() bool {
	switch {
	case v.betweenAttempts:
		return v.lostBefore
	case v.fault == FaultTimeout:
		return true
	case v.fault == Fault429 || v.fault == FaultRateLimited:
		return false
	}
	return v.transient
}

// errNotVerified marks a tag that did not resolve to the pushed digest after its PUT.
var errNotVerified = errors.New("tag does not resolve to the pushed digest")

// ghcr.io states its wait in the error body: "retry-after: 12.5ms, allowed: 2000/minute".
var bodyRetryAfter = regexp.MustCompile(`(?i)retry-after:\s*([0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))`)

// classify is the one place that decides which failures are transient. own is
// the attempt's context: a cancellation that is not ours (a blob upload shared
// with another tag whose context ended) is transient for us.
func classify(own context.Context, err error) verdict {
	if own.Err() != nil {
		if errors.Is(own.Err(), context.DeadlineExceeded) {
			return verdict{fault: FaultTimeout, outcome: queue.Ignore}
		}
		return verdict{fault: faultCancelled, outcome: queue.Ignore}
	}
	if errors.Is(err, errNotVerified) {
		return verdict{fault: faultNotVerified, outcome: queue.Ignore}
	}
	// A failure to read the source is the source's: it never moves the
	// destination's limit, and it is not retried here. A registry: source
	// has go-containerregistry's own retries; a file or the Docker engine
	// does not mend by asking again.
	var src *SourceError
	if errors.As(err, &src) {
		return verdict{fault: FaultSource, outcome: queue.Ignore}
	}
	// This machine running out of open files, ports or buffers says nothing
	// about the registry: retried, and the limit stays.
	if localResource(err) {
		return verdict{fault: FaultLocal, transient: true, outcome: queue.Ignore}
	}

	// Before any status: on a localhost registry go-containerregistry pings
	// https and http together, and a TLS registry answers the http ping with
	// 400, joined to the https ping's certificate error. The certificate is
	// what is wrong.
	if isCertificateError(err) {
		return verdict{fault: FaultTLS, outcome: queue.Ignore}
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return classifyStatus(terr)
	}

	// Failures to reach the registry at all say nothing about its load: they
	// never lower the limit. A refused connection may be a registry that is
	// restarting (noteAnswer believes so for the connect grace); a name that does
	// not resolve, or a certificate that is not trusted, does not mend itself.
	var (
		redirect *registry.RedirectLoopError
		dnsErr   *net.DNSError
		stall    *registry.StallError
	)
	switch {
	case errors.As(err, &redirect):
		return verdict{fault: FaultRedirect, outcome: queue.Ignore}
	case errors.As(err, &stall):
		return verdict{fault: FaultTimeout, transient: true, outcome: queue.Overload}
	case errors.Is(err, syscall.ECONNREFUSED):
		return verdict{fault: FaultConnect, transient: true, refused: true, outcome: queue.Ignore}
	case errors.As(err, &dnsErr):
		return verdict{fault: FaultConnect, transient: dnsErr.IsTemporary || dnsErr.IsTimeout, outcome: queue.Ignore}
	case errors.Is(err, context.Canceled):
		return verdict{fault: FaultOther, transient: true, outcome: queue.Ignore}
	case errors.Is(err, context.DeadlineExceeded):
		return verdict{fault: FaultTimeout, transient: true, outcome: queue.Overload}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return verdict{fault: FaultReset, transient: true, outcome: queue.Overload}
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		if nerr.Timeout() {
			return verdict{fault: FaultTimeout, transient: true, outcome: queue.Overload}
		}
		return verdict{fault: FaultReset, transient: true, outcome: queue.Overload}
	}
	return verdict{fault: FaultOther, outcome: queue.Ignore}
}

func localResource(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// SourceError is a failure to read the image being pushed from its source:
// a registry: source's blob, a layer file. It is named as the source's, is
// not retried by the pusher (the source has its own retries where they make
// sense), and never lowers a destination's limit.
type SourceError struct{ Err error }

func (e *SourceError) Error() string { return "read the source: " + e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// sourceReader marks the errors of a blob read from the source, and counts
// the bytes read into sent when it is set.
type sourceReader struct {
	rc   io.ReadCloser
	sent *atomic.Int64
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if s.sent != nil {
		s.sent.Add(int64(n))
	}
	if err != nil && err != io.EOF {
		err = &SourceError{Err: err}
	}
	return n, err
}

func (s *sourceReader) Close() error { return s.rc.Close() }

// sourceLayer is a layer whose reads are marked as the source's.
type sourceLayer struct{ v1.Layer }

func (l sourceLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, &SourceError{Err: err}
	}
	return &sourceReader{rc: rc}, nil
}

// spent is a step that spent its own retries (a blob phase, a read) inside
// another step's attempt: the other step does not retry it again.
type spent struct {
	attempts int
	last     verdict
	err      error
}

func (e *spent) Error() string { return e.err.Error() }
func (e *spent) Unwrap() error { return e.err }

// isCertificateError is a TLS certificate the client does not trust. A
// registry that does not speak TLS at all (go-containerregistry tries https
// first on localhost) is not one.
func isCertificateError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

func classifyStatus(terr *transport.Error) verdict {
	v := verdict{status: terr.StatusCode, outcome: queue.Ignore}
	codes := make(map[transport.ErrorCode]bool, len(terr.Errors))
	for _, d := range terr.Errors {
		codes[d.Code] = true
		if m := bodyRetryAfter.FindStringSubmatch(d.Message); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil && d > v.wait {
				v.wait = d
			}
		}
	}
	switch {
	case codes[transport.BlobUploadUnknownErrorCode], codes[transport.BlobUnknownErrorCode],
		codes[transport.ManifestBlobUnknownErrorCode]:
		// The registry lost an upload session or a blob it had accepted: what
		// ghcr.io answers when an upload is dropped under load.
		v.fault, v.transient, v.relearnBlobs = FaultUploadLost, true, true
		v.outcome = queue.Overload
	case terr.StatusCode == http.StatusTooManyRequests || codes[transport.TooManyRequestsErrorCode]:
		v.fault, v.transient, v.outcome = Fault429, true, queue.Overload
	case terr.StatusCode == http.StatusForbidden && secondaryRateLimit(terr):
		v.fault, v.transient, v.outcome = FaultRateLimited, true, queue.Overload
	case terr.StatusCode == http.StatusRequestTimeout || terr.StatusCode == http.StatusGatewayTimeout:
		v.fault, v.transient, v.outcome = FaultTimeout, true, queue.Overload
	case terr.StatusCode >= 500:
		v.fault, v.transient, v.outcome = Fault5xx, true, queue.Overload
	case terr.StatusCode == http.StatusUnauthorized:
		v.fault = FaultAuth
	case terr.StatusCode == http.StatusForbidden || codes[transport.DeniedErrorCode]:
		v.fault = FaultDenied
	case terr.StatusCode == http.StatusNotFound:
		v.fault = FaultNotFound
	case terr.StatusCode >= 400:
		v.fault = FaultInvalid
	default:
		v.fault = FaultOther
	}
	return v
}

// secondaryRateLimit is ghcr.io's 403 DENIED "You have exceeded a secondary
// rate limit": a rate limit sent as a refusal. Neither the status nor the code
// tells it from a real permission problem, so the message is the one signal
// (the only place tagpush reads a registry's words); the same token pushes
// other tags of the repository meanwhile.
func secondaryRateLimit(terr *transport.Error) bool {
	// Error() holds every diagnostic's message, or the body when it had none.
	return strings.Contains(strings.ToLower(terr.Error()), "rate limit")
}

// TagError is why a tag failed: Summary is one sentence that says what is
// wrong and what to do, for the summary, the table and the results; Error()
// adds the whole chain under it, for the log.
type TagError struct {
	Summary string
	Cause   error
}

// Error is the summary and, when it says more, the cause's text.
func (e *TagError) Error() string {
	if e.Cause == nil {
		return e.Summary
	}
	c := e.Cause.Error()
	if c == "" || strings.Contains(e.Summary, c) {
		return e.Summary
	}
	return e.Summary + ": " + c
}
func (e *TagError) Unwrap() error { return e.Cause }

// maxSummary is the longest summary shown, in characters.
const maxSummary = 150

// Summary is the one line to show a person for err, in a table or an
// annotation: Message, cut at maxSummary with "…".
func Summary(err error) string {
	return quote.Cut(Message(err), maxSummary)
}

// Message is what went wrong, whole, on one line, for scripts: a TagError's
// Summary, or else the error's text; control characters become spaces.
func Message(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	var te *TagError
	if errors.As(err, &te) {
		s = te.Summary
	}
	return quote.OneLine(s)
}

// explain turns the last error of a failed tag into a TagError whose summary
// says what to fix. reg and repo name the destination; name names an option
// as the front end in use does (WithOptionNames).
func explain(v verdict, err error, attempts int, reg, repo string, name func(string) string) error {
	say := func(format string, args ...any) error {
		return &TagError{Summary: fmt.Sprintf(format, args...), Cause: err}
	}
	switch v.fault {
	case FaultAuth:
		return say("authentication failed (401) for %s: check username/password or token scope", reg)
	case FaultDenied:
		if words := registryWords(err); words != "" {
			return say("the registry refused to write to %s (%s)", repo, words)
		}
		return say("permission denied (403) to push %s: check the token has write access to this repository", repo)
	case FaultNotFound:
		return say("%s was not found on %s (or the credentials cannot see it): check the repository name", repo, reg)
	case FaultInvalid:
		if v.status == http.StatusMethodNotAllowed {
			return say("%s answered 405 Method Not Allowed: a read-only mirror or pull-through cache takes no pushes; push to the registry itself", reg)
		}
		if words := registryWords(err); words != "" {
			return say("%s rejected the request (%s), not retried", reg, words)
		}
		return say("%s rejected the request as invalid (%d, not retried): check the image and the tag", reg, v.status)
	case FaultRateLimited, Fault429:
		return say("%s rate-limited the push (%s) through %d attempt(s): lower %s or push again later", reg, rateLimitKind(v), attempts, name("concurrency"))
	case FaultConnect:
		if v.refused {
			return say("could not connect to %s (connection refused): is the address right, and is the registry running?", reg)
		}
		return say("could not reach %s: is the registry name right?", reg)
	case FaultTLS:
		return say("the TLS certificate of %s is not trusted: give its CA in %s (or SSL_CERT_FILE), or list the registry in %s", reg, name("ca-file"), name("insecure-registries"))
	case FaultRedirect:
		return say("%s redirected the request in a loop (more than %d redirects): check the registry address and any proxy in front of it", reg, registry.MaxRedirects)
	case FaultSource:
		return say("reading the image from its source failed: %s", Message(errors.Unwrap(sourceOf(err))))
	case FaultLocal:
		return say("this machine ran out of open files, ports or buffers after %d attempt(s): raise the limit (ulimit -n) or lower %s", attempts, name("concurrency"))
	case faultCancelled:
		return say("cancelled")
	case FaultTimeout:
		if !v.transient {
			if v.timeout > 0 {
				return say("the tag's time limit (%s %s) ran out after %d attempt(s): raise %s, or check the network to %s", name("timeout"), quote.Duration(v.timeout), attempts, name("timeout"), reg)
			}
			return say("timed out after %d attempt(s): check the network to %s", attempts, reg)
		}
	}
	if v.transient {
		last := "last error"
		if v.status != 0 {
			last = fmt.Sprintf("last status %d %s", v.status, http.StatusText(v.status))
		}
		return say("%s kept failing: gave up after %d attempt(s) (%s)", reg, attempts, last)
	}
	return err
}

// registryWords is what the registry said of a refusal, for a person:
// `403 DENIED: "cannot overwrite tag"`, with its first error's code and
// message. It is empty where the registry said nothing of its own (no body,
// or the distribution spec's stock sentence for the code).
func registryWords(err error) string {
	var terr *transport.Error
	if !errors.As(err, &terr) || len(terr.Errors) == 0 {
		return ""
	}
	d := terr.Errors[0]
	msg := strings.TrimSpace(quote.OneLine(d.Message))
	switch strings.ToLower(msg) {
	case "", "denied", "requested access to the resource is denied", "access denied", "unauthorized", "authentication required":
		return ""
	}
	return fmt.Sprintf("%d %s: %q", terr.StatusCode, d.Code, quote.Cut(msg, 70))
}

func sourceOf(err error) error {
	var src *SourceError
	if errors.As(err, &src) {
		return src
	}
	return err
}

func rateLimitKind(v verdict) string {
	if v.fault == FaultRateLimited {
		return "403 secondary rate limit"
	}
	return "429 Too Many Requests"
}

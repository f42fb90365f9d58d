package pusher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tagpush/tagpush/internal/option"
	"github.com/tagpush/tagpush/queue"
	"github.com/tagpush/tagpush/registry"
)

func statusErr(code int, diag ...transport.Diagnostic) error {
	return fmt.Errorf("put manifest: %w", &transport.Error{StatusCode: code, Errors: diag})
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		fault     Fault
		transient bool
		outcome   queue.Outcome
		relearn   bool
	}{
		{"500", statusErr(500), Fault5xx, true, queue.Overload, false},
		{"502", statusErr(502), Fault5xx, true, queue.Overload, false},
		{"503", statusErr(503), Fault5xx, true, queue.Overload, false},
		{"504", statusErr(504), FaultTimeout, true, queue.Overload, false},
		{"408", statusErr(408), FaultTimeout, true, queue.Overload, false},
		{"429", statusErr(429), Fault429, true, queue.Overload, false},
		{"TOOMANYREQUESTS body", statusErr(403, transport.Diagnostic{Code: transport.TooManyRequestsErrorCode}), Fault429, true, queue.Overload, false},
		{"401", statusErr(401), FaultAuth, false, queue.Ignore, false},
		{"403", statusErr(403), FaultDenied, false, queue.Ignore, false},
		{"DENIED code", statusErr(400, transport.Diagnostic{Code: transport.DeniedErrorCode}), FaultDenied, false, queue.Ignore, false},
		{"404", statusErr(404, transport.Diagnostic{Code: transport.NameUnknownErrorCode}), FaultNotFound, false, queue.Ignore, false},
		{"MANIFEST_INVALID", statusErr(400, transport.Diagnostic{Code: transport.ManifestInvalidErrorCode}), FaultInvalid, false, queue.Ignore, false},
		{"NAME_INVALID", statusErr(400, transport.Diagnostic{Code: transport.NameInvalidErrorCode}), FaultInvalid, false, queue.Ignore, false},
		{"BLOB_UPLOAD_UNKNOWN", statusErr(404, transport.Diagnostic{Code: transport.BlobUploadUnknownErrorCode}), FaultUploadLost, true, queue.Overload, true},
		{"MANIFEST_BLOB_UNKNOWN", statusErr(400, transport.Diagnostic{Code: transport.ManifestBlobUnknownErrorCode}), FaultUploadLost, true, queue.Overload, true},
		{"reset", &url.Error{Op: "Patch", URL: "http://r/v2", Err: syscall.ECONNRESET}, FaultReset, true, queue.Overload, false},
		{"refused is not overload", &url.Error{Op: "Get", URL: "http://r/v2", Err: syscall.ECONNREFUSED}, FaultConnect, true, queue.Ignore, false},
		{"unknown host", &url.Error{Op: "Get", URL: "http://r/v2", Err: &net.DNSError{Err: "no such host", Name: "r", IsNotFound: true}}, FaultConnect, false, queue.Ignore, false},
		{"untrusted certificate", untrustedCertificateError(t), FaultTLS, false, queue.Ignore, false},
		{"redirect loop", &url.Error{Op: "Put", URL: "http://r/v2", Err: &registry.RedirectLoopError{URL: "http://r/v2", Redirects: 11}}, FaultRedirect, false, queue.Ignore, false},
		{"stalled answer", fmt.Errorf("read: %w", &registry.StallError{Host: "r", Idle: time.Second}), FaultTimeout, true, queue.Overload, false},
		{"ghcr secondary rate limit", statusErr(403, transport.Diagnostic{Code: transport.DeniedErrorCode, Message: "permission_denied: Error from intermediary with HTTP status code 403 \"You have exceeded a secondary rate limit\""}), FaultRateLimited, true, queue.Overload, false},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), FaultReset, true, queue.Overload, false},
		{"someone else's cancel", fmt.Errorf("upload: %w", context.Canceled), FaultOther, true, queue.Ignore, false},
		{"unknown error", errors.New("layer file vanished"), FaultOther, false, queue.Ignore, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := classify(context.Background(), tt.err)
			if v.fault != tt.fault || v.transient != tt.transient || v.outcome != tt.outcome || v.relearnBlobs != tt.relearn {
				t.Errorf("classify = %+v, want fault %s transient %t outcome %s relearn %t", v, tt.fault, tt.transient, tt.outcome, tt.relearn)
			}
		})
	}
}

// untrustedCertificateError is what a client that does not trust a server's
// certificate really gets.
func untrustedCertificateError(t *testing.T) error {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	resp, err := (&http.Client{Transport: &http.Transport{}}).Get(srv.URL + "/v2/")
	if err == nil {
		resp.Body.Close()
		t.Fatal("a self-signed certificate was trusted")
	}
	return err
}

func TestClassifyOwnContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if v := classify(ctx, statusErr(500)); v.transient || v.fault != faultCancelled {
		t.Errorf("cancelled run: %+v, want not transient", v)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if v := classify(ctx, statusErr(500)); v.transient || v.fault != FaultTimeout {
		t.Errorf("timed-out tag: %+v, want a timeout that is not retried", v)
	}
}

func TestGHCRBodyWait(t *testing.T) {
	err := statusErr(http.StatusTooManyRequests, transport.Diagnostic{Code: transport.TooManyRequestsErrorCode, Message: "retry-after: 12.5ms, allowed: 2000/minute"})
	if v := classify(context.Background(), err); v.wait != 12500*time.Microsecond {
		t.Errorf("wait = %s, want 12.5ms", v.wait)
	}
}

func TestExplain(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		v    verdict
		want string
	}{
		{verdict{fault: FaultAuth}, "authentication failed (401) for ghcr.io: check username/password or token scope"},
		{verdict{fault: FaultDenied}, "permission denied (403) to push ghcr.io/acme/app: check the token has write access to this repository"},
		{verdict{fault: Fault5xx, transient: true, status: 500}, "ghcr.io kept failing: gave up after 5 attempt(s) (last status 500 Internal Server Error)"},
		{verdict{fault: FaultReset, transient: true}, "ghcr.io kept failing: gave up after 5 attempt(s) (last error)"},
		{verdict{fault: FaultRateLimited, transient: true, status: 403}, "ghcr.io rate-limited the push (403 secondary rate limit) through 5 attempt(s): lower concurrency or push again later"},
		{verdict{fault: FaultConnect, refused: true}, "could not connect to ghcr.io (connection refused): is the address right, and is the registry running?"},
	}
	for _, tt := range tests {
		err := explain(tt.v, base, 5, "ghcr.io", "ghcr.io/acme/app", option.Plain)
		if got := Summary(err); got != tt.want {
			t.Errorf("Summary(explain(%s)) = %q, want %q", tt.v.fault, got, tt.want)
		}
		// The log gets the whole chain under the summary.
		if got := err.Error(); got != tt.want+": boom" {
			t.Errorf("explain(%s).Error() = %q, want the summary and the cause", tt.v.fault, got)
		}
	}
}

func TestSummaryIsOneShortLine(t *testing.T) {
	long := errors.New(strings.Repeat("upload blob sha256:0123456789abcdef: PUT https://registry/v2/x: ", 6) + "\n::error::x")
	got := Summary(long)
	if n := len([]rune(got)); n > maxSummary || strings.ContainsAny(got, "\n\r") || !strings.HasSuffix(got, "…") {
		t.Errorf("Summary = %q (%d characters), want one line of at most %d ending in …", got, n, maxSummary)
	}
	if got := Summary(&TagError{Summary: "short", Cause: long}); got != "short" {
		t.Errorf("Summary of a TagError = %q, want its summary", got)
	}
}

func TestBackoff(t *testing.T) {
	r := &run{cfg: defaults(), client: registry.New(registry.Options{})}
	reg := &regState{host: "r"}
	base := r.cfg.retryDelay
	for range 50 {
		// Waits grow from retry-delay, with up to one retry-delay of jitter.
		if d := r.backoff(1, reg, false, false); d < base || d > 2*base {
			t.Fatalf("first wait %s, want %s to %s", d, base, 2*base)
		}
		if d := r.backoff(4, reg, false, false); d < 8*base || d > 9*base {
			t.Fatalf("fourth wait %s, want %s to %s", d, 8*base, 9*base)
		}
		// Once the limit came down under an attempt, its retry is quick,
		// however many attempts went before: the limiter spaces it.
		if d := r.backoff(4, reg, true, false); d < base/4 || d > base/2 {
			t.Fatalf("wait after the limit came down %s, want %s to %s", d, base/4, base/2)
		}
		// A read's first retry is quick; its later ones wait as a write's.
		if d := r.backoff(1, reg, false, true); d < base/4 || d > base/2 {
			t.Fatalf("first wait of a read %s, want %s to %s", d, base/4, base/2)
		}
		if d := r.backoff(3, reg, false, true); d < 4*base || d > 5*base {
			t.Fatalf("third wait of a read %s, want %s to %s", d, 4*base, 5*base)
		}
	}
	// A registry's announced wait wins over a quick retry.
	r.client.NoteWait("r", 5*time.Second)
	if d := r.backoff(1, reg, true, false); d < 4*time.Second {
		t.Errorf("wait with a Retry-After of 5s pending = %s", d)
	}
}

// The one-line reasons a tag that does not show what was pushed fails with
// fit the results (150 characters) whole: the digest is never cut.
func TestMissSummariesFit(t *testing.T) {
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	for _, e := range []*missError{
		{got: d, anotherManifest: true, window: 10 * time.Second},
		{got: d, window: 10 * time.Second},
		{window: 10 * time.Second},
	} {
		if s := e.summary(); len([]rune(s)) > maxSummary || Summary(&TagError{Summary: s, Cause: e}) != s {
			t.Errorf("summary %q (%d characters) does not fit %d", s, len([]rune(s)), maxSummary)
		}
	}
}

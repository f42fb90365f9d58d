package registry

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

type answer201 struct{}

func (answer201) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusCreated, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
}

// BenchmarkTransportStack is what tagpush's own HTTP layers (re-send after
// re-authentication, redirect bound, registry pause, Retry-After, error body
// cap, upload counting, stall watchdog) cost per request, around a transport
// that answers at once: the stack a run uses.
func BenchmarkTransportStack(b *testing.B) {
	rt := New(Options{Transport: answer201{}}).Transport()
	body := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPut, "http://r/v2/a/blobs/uploads/x?digest=sha256:0", bytes.NewReader(body))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
)

// A registry may point an upload (or a redirect) at another host only where
// that host's addresses are public, or of a kind the registry itself is at.
// Names are resolved: "localhost" and "0.0.0.0" reach the runner itself.
func TestUploadLocationGuardResolvesNames(t *testing.T) {
	hosts := map[string][]string{
		"registry.example": {"203.0.113.5"},
		"storage.example":  {"198.51.100.7"},
		"localhost":        {"127.0.0.1", "::1"},
		"internal.corp":    {"10.1.2.3"},
		"metadata.cloud":   {"169.254.169.254"},
		"registry.corp":    {"10.0.0.5"},
		"rebind.example":   {"198.51.100.8", "127.0.0.1"},
	}
	lookup := func(_ context.Context, host string) ([]net.IPAddr, error) {
		ips, ok := hosts[host]
		if !ok {
			return nil, fmt.Errorf("no such host %s", host)
		}
		var out []net.IPAddr
		for _, ip := range ips {
			out = append(out, net.IPAddr{IP: net.ParseIP(ip)})
		}
		return out, nil
	}
	r := New(Options{LookupIP: lookup})
	tests := []struct {
		registry, location string
		allowed            bool
	}{
		{"registry.example", "https://registry.example/v2/a/blobs/uploads/1", true},
		{"registry.example", "https://storage.example/upload/1", true},
		{"registry.example", "http://localhost:5000/v2/a/blobs/uploads/1", false},
		{"registry.example", "http://0.0.0.0:5000/upload", false},
		{"registry.example", "http://[::1]:5000/upload", false},
		{"registry.example", "http://internal.corp/upload", false},
		{"registry.example", "http://metadata.cloud/latest/meta-data", false},
		{"registry.example", "http://rebind.example/upload", false},
		{"registry.example", "http://nowhere.example/upload", false},
		// A registry on a private network may upload within it; one on
		// the runner (a test registry) to the runner.
		{"registry.corp", "http://internal.corp/upload", true},
		{"127.0.0.1:5000", "http://localhost:5000/v2/a/blobs/uploads/1", true},
		{"127.0.0.1:5000", "http://internal.corp/upload", false},
	}
	for _, tt := range tests {
		t.Run(tt.registry+" -> "+tt.location, func(t *testing.T) {
			req := &http.Request{URL: &url.URL{Scheme: "https", Host: tt.registry, Path: "/v2/a/blobs/uploads/"}}
			resp := &http.Response{Request: req, Header: http.Header{"Location": {tt.location}}}
			_, err := r.uploadLocation(context.Background(), resp)
			if tt.allowed && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tt.allowed && err == nil {
				t.Error("allowed")
			}
			if err != nil && !errors.Is(err, ErrInternalTarget) && tt.location != "http://nowhere.example/upload" {
				t.Errorf("error %v does not say the target is internal", err)
			}
		})
	}
}

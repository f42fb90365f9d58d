package registry

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// Every RFC 8288 form registries send for the tag list's next page: quoted
// and unquoted rel (olareg sends rel=next), several relations in one, several
// link-values in one header, relative and whole URLs. Unquoted rel=next was
// not followed: a repository of 1,100 tags was read as its first 1,000.
func TestNextPage(t *testing.T) {
	base, _ := url.Parse("https://r.example/v2/acme/app/tags/list?n=1000")
	tests := []struct {
		header, want string
		err          bool
	}{
		{`</v2/acme/app/tags/list?last=b&n=1000>; rel="next"`, "https://r.example/v2/acme/app/tags/list?last=b&n=1000", false},
		{`</v2/acme/app/tags/list?last=b&n=1000>; rel=next`, "https://r.example/v2/acme/app/tags/list?last=b&n=1000", false},
		{`<tags/list?last=b>;rel=next`, "https://r.example/v2/acme/app/tags/tags/list?last=b", false},
		{`<?last=b>; rel="next"`, "https://r.example/v2/acme/app/tags/list?last=b", false},
		{`</v2/acme/app/tags/list?last=b>; rel="prev next"`, "https://r.example/v2/acme/app/tags/list?last=b", false},
		{`</first>; rel="prev", </v2/acme/app/tags/list?last=c>; REL=Next`, "https://r.example/v2/acme/app/tags/list?last=c", false},
		{`<https://r.example/v2/acme/app/tags/list?last=d>; title="a, b"; rel=next`, "https://r.example/v2/acme/app/tags/list?last=d", false},
		{`</v2/acme/app/tags/list?last=b>; rel="prev"`, "", false},
		{`</v2/acme/app/tags/list?last=b>; rel="nextish"`, "", false},
		{`<https://elsewhere.example/v2/acme/app/tags/list?last=b>; rel=next`, "", true},
	}
	for _, tt := range tests {
		got, err := nextPage(base, tt.header)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("nextPage(%s) = %q, %v; want %q, error %t", tt.header, got, err, tt.want, tt.err)
		}
	}
}

// A 401 whose Bearer realm is the registry's own host and scheme at another
// port has its realm moved onto the registry's host:port (so
// go-containerregistry's realm guard passes it), and requests to that path
// reach the realm itself. A realm at another host is left as it is, for the
// guard to judge.
func TestRealmOnTheRegistrysOwnHost(t *testing.T) {
	var asked string
	inner := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		asked = req.URL.String()
		resp := &http.Response{StatusCode: http.StatusUnauthorized, Header: http.Header{}, Body: http.NoBody, Request: req}
		switch req.URL.Host {
		case "127.0.0.1:5000":
			resp.Header.Set("WWW-Authenticate", `Bearer realm="http://127.0.0.1:5001/auth?x=1",service="registry"`)
		case "10.0.0.5:5000":
			resp.Header.Set("WWW-Authenticate", `Bearer realm="http://10.0.0.9:5001/auth",service="registry"`)
		default:
			resp.StatusCode = http.StatusOK
		}
		return resp, nil
	})
	rt := &realmTransport{inner: inner}
	resp, err := rt.RoundTrip(httptest.NewRequest(http.MethodGet, "http://127.0.0.1:5000/v2/", nil))
	if err != nil {
		t.Fatal(err)
	}
	moved := `Bearer realm="http://127.0.0.1:5000/.tagpush-realm/5001/auth?x=1",service="registry"`
	if got := resp.Header.Get("WWW-Authenticate"); got != moved {
		t.Fatalf("challenge %s, want %s", got, moved)
	}
	if _, err := rt.RoundTrip(httptest.NewRequest(http.MethodGet, "http://127.0.0.1:5000/.tagpush-realm/5001/auth?x=1", nil)); err != nil {
		t.Fatal(err)
	}
	if asked != "http://127.0.0.1:5001/auth?x=1" {
		t.Errorf("the token request went to %s", asked)
	}
	resp, _ = rt.RoundTrip(httptest.NewRequest(http.MethodGet, "http://10.0.0.5:5000/v2/", nil))
	if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, "http://10.0.0.9:5001/auth") {
		t.Errorf("a realm on another host was changed: %s", got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

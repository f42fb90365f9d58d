package faults

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowOK answers 201 after a pause, so requests overlap.
func slowOK(d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(d)
		w.WriteHeader(http.StatusCreated)
	})
}

func TestMaxWritesAnswers500AboveTheLimit(t *testing.T) {
	l := New(slowOK(100*time.Millisecond), Config{MaxWrites: 2})
	srv := httptest.NewServer(l)
	defer srv.Close()
	var wg sync.WaitGroup
	codes := make(chan int, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(srv.URL+"/v2/a/blobs/uploads/", "application/octet-stream", nil)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	n500 := 0
	for c := range codes {
		if c == 500 {
			n500++
		}
	}
	st := l.Stats()
	if n500 == 0 || st.Injected["500"] != n500 || st.PeakWrites < 3 {
		t.Errorf("%d 500s, stats %+v", n500, st.Injected)
	}
	// GETs are never counted as writes.
	resp, err := http.Get(srv.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if l.Stats().ByMethod["GET"] != 1 {
		t.Errorf("GET not counted")
	}
}

func TestTooManyRequestsCarriesRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		cfg        Config
		header     string
		bodySubstr string
	}{
		{Config{TooManyFirst: 1, RetryAfter: "2"}, "2", "TOOMANYREQUESTS"},
		{Config{TooManyFirst: 1, GHCRBody: "12.5ms"}, "", "retry-after: 12.5ms, allowed: 2000/minute"},
	} {
		srv := httptest.NewServer(New(slowOK(0), tt.cfg))
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/a/manifests/v1", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != tt.header || !strings.Contains(string(body), tt.bodySubstr) {
			t.Errorf("got %d, Retry-After %q, body %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
		// Only the first manifest PUT is refused.
		req, _ = http.NewRequest(http.MethodPut, srv.URL+"/v2/a/manifests/v1", strings.NewReader("{}"))
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Errorf("second PUT got %d", resp.StatusCode)
		}
		srv.Close()
	}
}

func TestResetDropsTheConnectionMidUpload(t *testing.T) {
	l := New(slowOK(0), Config{ResetFirst: 1})
	srv := httptest.NewServer(l)
	defer srv.Close()
	body := bytes.Repeat([]byte("x"), 1<<20)
	req, _ := http.NewRequest(http.MethodPatch, srv.URL+"/v2/a/blobs/uploads/123", bytes.NewReader(body))
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("PATCH succeeded, want a dropped connection")
	}
	if l.Stats().Injected["reset"] != 1 {
		t.Errorf("stats %+v", l.Stats().Injected)
	}
}

func TestBandwidthCap(t *testing.T) {
	l := New(slowOK(0), Config{UploadBytesPerSec: 4 << 20})
	srv := httptest.NewServer(l)
	defer srv.Close()
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPatch, srv.URL+"/v2/a/blobs/uploads/1", bytes.NewReader(make([]byte, 2<<20)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// 2 MiB at 4 MiB/s takes at least half a second; an upper bound would be
	// a timing assertion on a shared machine, so there is none.
	if d := time.Since(start); d < 450*time.Millisecond {
		t.Errorf("2 MiB went through in %s at a 4 MiB/s cap", d)
	}
	if got := l.Stats().BlobBytes; got != 2<<20 {
		t.Errorf("counted %d blob bytes", got)
	}
}

func TestPresets(t *testing.T) {
	for _, m := range Modes {
		if _, err := Preset(m); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
	if _, err := Preset("chaos"); err == nil || !strings.Contains(err.Error(), `"chaos"`) {
		t.Errorf("unknown mode: %v", err)
	}
}

// TestBandwidthOneLateReaderGetsTheRate: a reader whose every sleep overshoots
// a little (as time.Sleep does) still gets the configured rate. Without
// credit for the overshoot, one stream alone got about half of it.
func TestBandwidthOneLateReaderGetsTheRate(t *testing.T) {
	b := bandwidth{rate: 25_000_000}
	now := time.Unix(1000, 0)
	start := now
	const chunk, chunks = 32 << 10, 800 // 26 MB: 1.05 s at 25 MB/s
	for range chunks {
		now = now.Add(b.reserve(chunk, now) + time.Millisecond) // each sleep 1 ms late
	}
	ideal := time.Duration(float64(chunk*chunks) / 25e6 * float64(time.Second))
	if got := now.Sub(start); got > ideal+50*time.Millisecond {
		t.Errorf("%d bytes took %s of simulated time, the rate allows %s", chunk*chunks, got, ideal)
	}
	// The credit is bounded: a reader idle for a second does not get a
	// second's worth of bytes for free.
	b = bandwidth{rate: 25_000_000}
	b.reserve(chunk, now)
	later := now.Add(time.Second)
	if wait := b.reserve(25_000_000/10, later); wait < 90*time.Millisecond {
		t.Errorf("after an idle second, a tenth of a second's bytes waited %s; want about 100ms", wait)
	}
}

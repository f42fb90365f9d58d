package testregistry

import (
	"context"
	"testing"
	"time"
)

// ForTest starts a registry for t and stops it when t ends. The first call on
// a machine builds the registry binary, which takes a few minutes.
func ForTest(t testing.TB, opts Options) *Registry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start the Distribution registry: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("registry log:\n%s", r.Log())
		}
		r.Close()
	})
	return r
}

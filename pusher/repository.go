package pusher

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// repoState is one destination repository's share of a run: its
// authenticated client, the blobs it has been given, the phases its tags
// share, and how many of its manifest PUTs are in flight.
type repoState struct {
	repo name.Repository
	run  *run
	reg  *registry

	mu      sync.Mutex
	conn    *clientInit
	blobs   map[v1.Hash]*phase // each blob's upload (or check), once per run
	phases  map[*content]*phase
	refs    map[*content]*phase // the referrers' push, once per image
	gp      *remote.Pusher
	puts    int           // manifest PUTs in flight
	settled chan struct{} // closed and replaced whenever puts drops to 0
}

func newRepoState(r *run, repo name.Repository) *repoState {
	return &repoState{
		repo:    repo,
		run:     r,
		reg:     r.regs.destination(repo.RegistryStr()),
		blobs:   make(map[v1.Hash]*phase),
		phases:  make(map[*content]*phase),
		refs:    make(map[*content]*phase),
		settled: make(chan struct{}),
	}
}

// clientInit is one attempt to make the repository's client; done is closed
// when it has ended.
type clientInit struct {
	done   chan struct{}
	client *http.Client
	err    error
}

// client returns the repository's authenticated client: it pings the
// registry and fetches a push token, once for all of the repository's
// requests. No lock is held over those requests: the first caller makes the
// client, the others wait for it with their own contexts, and a failed
// attempt is forgotten so the next caller tries again (go-containerregistry's
// Pusher does the same with sync.Once and CompareAndDelete).
func (rs *repoState) client(ctx context.Context) (*http.Client, error) {
	for {
		rs.mu.Lock()
		ci := rs.conn
		mine := ci == nil
		if mine {
			ci = &clientInit{done: make(chan struct{})}
			rs.conn = ci
		}
		rs.mu.Unlock()
		if mine {
			ci.client, ci.err = rs.newClient(ctx)
			if ci.err != nil {
				rs.mu.Lock()
				rs.conn = nil
				rs.mu.Unlock()
			}
			close(ci.done)
			return ci.client, ci.err
		}
		select {
		case <-ci.done:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		if ci.err == nil {
			return ci.client, nil
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		// The attempt we waited for failed: with its caller's context, or
		// for a reason ours may not share. Try again; a registry that keeps
		// failing fails our own attempt.
	}
}

func (rs *repoState) newClient(ctx context.Context) (*http.Client, error) {
	r := rs.run
	auth, err := authn.Resolve(ctx, r.cfg.keychain, rs.repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", rs.repo, err)
	}
	t := transport.NewUserAgent(r.transport, r.cfg.userAgent)
	// Push to the repository, and pull from the run's other repositories
	// on the registry: mounting a blob from one of them needs it.
	scopes := []string{rs.repo.Scope(transport.PushScope)}
	for _, sib := range r.siblings(rs) {
		scopes = append(scopes, sib.Scope(transport.PullScope))
	}
	var tr http.RoundTripper
	// The ping is a read.
	err = rs.reg.read(ctx, func() error {
		var err error
		tr, err = transport.NewWithContext(ctx, rs.repo.Registry, auth, t, scopes)
		return err
	})
	if err != nil {
		return nil, &signInError{err}
	}
	return &http.Client{Transport: tr, CheckRedirect: r.checkRedirect}, nil
}

// pusher returns the repository's go-containerregistry Pusher, for mountable
// blobs, chunked uploads and referrers.
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

func (rs *repoState) putStarted() {
	rs.mu.Lock()
	rs.puts++
	rs.mu.Unlock()
}

func (rs *repoState) putEnded() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.puts--; rs.puts == 0 {
		close(rs.settled)
		rs.settled = make(chan struct{})
	}
}

// settle waits until none of the repository's manifest PUTs is in flight, for
// at most limit. A read that races a write of the same repository can fail
// where neither would alone (Distribution answers such a HEAD 500, "invalid
// checksum digest format", as it rewrites the link files the read follows):
// verification reads once the writes are done.
func (rs *repoState) settle(ctx context.Context, limit time.Duration) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		rs.mu.Lock()
		if rs.puts == 0 {
			rs.mu.Unlock()
			return
		}
		ch := rs.settled
		rs.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

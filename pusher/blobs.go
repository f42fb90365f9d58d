package pusher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tagpush/tagpush/registry"
)

// The blob phase: what a repository needs before any of an image's tags can
// be written (every blob, then an index's child manifests). It runs once per
// repository and image however many tags share it, and every tag waits for it
// holding no slot. A blob is checked and uploaded once per repository however
// many images of the run share it.
//
// Each blob is first looked for (HEAD, a read: the read budget bounds it,
// and its failures are retried as reads). A missing blob goes up with two
// writes, a POST that opens an upload and one PUT that carries the whole
// blob (the registry API's monolithic upload), where go-containerregistry's
// Pusher sends a POST, a PATCH with the body and an empty PUT: one write
// fewer per blob, and each write is one more chance for a registry that
// fails above N writes in flight to fail. A registry that refuses one-PUT
// uploads gets go-containerregistry's chunked upload from then on.
//
// A blob another repository of the registry holds is mounted from it: an
// offer, never the only way. Any answer but 201 is followed by a plain
// upload in the same attempt (in the session a 202 opened), the mount is not
// asked again for the blob, and a registry that refused one is not asked for
// mounts again in the run.

// phase is one run of shared work: a blob's upload, an image's blob phase,
// a push of referrers.
type phase struct {
	done chan struct{} // closed when the phase has ended
	// Set before done is closed: how the phase ended.
	err      error
	attempts int     // attempts of the step that failed
	last     verdict // its verdict
}

// join waits, with ctx, for the phase m[key], first starting it with work
// when there is none, and returns it once it has ended. A phase belongs to
// the repository, not to the tag that started it: it runs under the run's
// phase context, and Push waits for it. A caller whose ctx ends stops
// waiting, and gets no phase (it is still running): the phase goes on for
// the others.
func join[K comparable](rs *repoState, ctx context.Context, m map[K]*phase, key K, work func(context.Context) (int, verdict, error)) (*phase, error) {
	ph := begin(rs, m, key, work)
	select {
	case <-ph.done:
		return ph, ph.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// begin returns the phase m[key], starting it with work when there is none.
func begin[K comparable](rs *repoState, m map[K]*phase, key K, work func(context.Context) (int, verdict, error)) *phase {
	ph, _ := beginFresh(rs, m, key, work)
	return ph
}

// beginFresh is begin, saying whether it started the phase.
func beginFresh[K comparable](rs *repoState, m map[K]*phase, key K, work func(context.Context) (int, verdict, error)) (*phase, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if ph := m[key]; ph != nil {
		return ph, false
	}
	ph := &phase{done: make(chan struct{})}
	m[key] = ph
	r := rs.run
	r.phases.Add(1)
	go func() {
		defer r.phases.Done()
		defer close(ph.done)
		ph.attempts, ph.last, ph.err = work(r.phaseCtx)
	}()
	return ph, true
}

// start starts c's blob phase in the repository, unless one is current,
// without waiting for it.
func (rs *repoState) start(c *content) {
	begin(rs, rs.phases, c, rs.contentWork(c))
}

func (rs *repoState) contentWork(c *content) func(context.Context) (int, verdict, error) {
	return func(ctx context.Context) (int, verdict, error) { return rs.writeContent(ctx, c) }
}

// ready returns once the repository holds c's blobs and child manifests,
// starting the phase when none is current.
func (rs *repoState) ready(ctx context.Context, c *content) (*phase, error) {
	return join(rs, ctx, rs.phases, c, rs.contentWork(c))
}

// invalidate drops a phase whose result the registry contradicted (it lost a
// blob it had accepted), with the blobs it checked: the next tag to ask
// starts a new phase, which checks every blob again.
func (rs *repoState) invalidate(c *content, ph *phase) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.phases[c] != ph {
		return
	}
	delete(rs.phases, c)
	for _, b := range c.blobs {
		if bp, ok := rs.blobs[b.digest]; ok {
			select {
			case <-bp.done:
				delete(rs.blobs, b.digest)
			default: // still running: it checks afresh anyway
			}
		}
	}
	rs.gp = nil
}

// writeContent is the blob phase: all blobs at once, each retried on its own,
// then the child manifests of an index. It reports the failing step.
func (rs *repoState) writeContent(ctx context.Context, c *content) (int, verdict, error) {
	type outcome struct {
		attempts int
		last     verdict
		err      error
	}
	run := func(n int, f func(i int) (int, verdict, error)) error {
		out := make([]outcome, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := &out[i]
				o.attempts, o.last, o.err = f(i)
			}()
		}
		wg.Wait()
		for _, o := range out {
			if o.err != nil {
				return &spent{attempts: o.attempts, last: o.last, err: o.err}
			}
		}
		return nil
	}
	err := run(len(c.blobs), func(i int) (int, verdict, error) {
		b := c.blobs[i]
		ph, err := join(rs, ctx, rs.blobs, b.digest, func(ctx context.Context) (int, verdict, error) {
			return rs.ensureBlob(ctx, b, c.name)
		})
		if ph == nil {
			return 0, verdictOf(ctx, err), err
		}
		return ph.attempts, ph.last, err
	})
	if err == nil {
		// Children before parents: every platform image at once, then
		// indexes (whose children are images or indexes written before
		// them) in order.
		images, indexes := c.childrenByKind()
		err = run(len(images), func(i int) (int, verdict, error) { return rs.putChild(ctx, images[i]) })
		for _, ch := range indexes {
			if err != nil {
				break
			}
			if a, v, cerr := rs.putChild(ctx, ch); cerr != nil {
				err = &spent{attempts: a, last: v, err: cerr}
			}
		}
	}
	var sp *spent
	if errors.As(err, &sp) {
		return sp.attempts, sp.last, sp.err
	}
	return 0, verdict{}, err
}

func (rs *repoState) label(d v1.Hash) string {
	return fmt.Sprintf("%s@%s", rs.repo, d)
}

// putChild writes one child manifest of an index, by digest.
func (rs *repoState) putChild(ctx context.Context, ch child) (int, verdict, error) {
	return rs.run.writes(ctx, rs.reg, rs.label(ch.digest), true, func(ctx context.Context, _ int) error {
		return rs.run.underSlot(ctx, rs.reg, func() error {
			if _, err := rs.putManifest(ctx, ch.digest.String(), ch.raw, ch.mediaType); err != nil {
				return fmt.Errorf("put manifest %s: %w", ch.digest, err)
			}
			return nil
		})
	})
}

// ensureBlob makes sure the repository has one blob: a read, then, when it
// is missing, a mount from another repository of the registry that holds it,
// or an upload, under a write slot, retried on its own. An attempt after one
// whose answer was lost or ambiguous reads again first: the registry may
// have committed the blob.
//
// The registry keeps each blob's home: the repository that holds it, or is
// having it uploaded. A repository that needs a blob another one is getting
// waits for that upload (holding no slot), checks the blob again (registries
// that keep one store for every repository have it now) and mounts it from
// there, so one image pushed to several repositories of a registry goes up
// about once. The wait ends when the home's upload moves no byte for
// homeIdle: a stalled repository fails its own tags, never another's, which
// then uploads the blob itself. A registry: source on the same registry is a
// home too.
func (rs *repoState) ensureBlob(ctx context.Context, b blob, image string) (int, verdict, error) {
	r := rs.run
	what := rs.label(b.digest)
	if r.chunkedOnly(rs.reg.host) {
		a, v, err := r.writes(ctx, rs.reg, what, true, func(ctx context.Context, _ int) error {
			return r.underSlot(ctx, rs.reg, func() error { return rs.uploadWithPusher(ctx, b) })
		})
		if err == nil {
			r.noteWire(rs.reg.host, image, blobUploaded, b.size)
		}
		return a, v, err
	}
	exists := func(ctx context.Context) (bool, error) {
		var found bool
		_, _, err := r.reads(ctx, rs.reg, "check blob "+what, func(ctx context.Context) error {
			var err error
			found, err = rs.rc.BlobExists(ctx, b.digest)
			return err
		})
		if err != nil {
			err = fmt.Errorf("check blob %s: %w", b.digest, err)
			return false, &spent{attempts: 1, last: verdictOf(ctx, err), err: err}
		}
		if found {
			rs.reg.noteHome(b.digest, rs.repo.RepositoryStr())
		}
		return found, nil
	}
	reused := func(found bool, err error) bool {
		if err == nil && found {
			r.noteWire(rs.reg.host, image, blobReused, b.size)
		}
		return err != nil || found
	}
	if found, err := exists(ctx); reused(found, err) {
		return 1, verdictOf(ctx, err), err
	}
	from := sourceRepository(b.layer, rs.reg.host)
	var home *blobHome
	if from == "" {
		h, mine := rs.reg.claim(b.digest, rs.repo.RepositoryStr())
		switch {
		case mine:
			home = h
		default:
			ok, err := awaitHome(ctx, h)
			if err != nil {
				return 0, verdictOf(ctx, err), err
			}
			if ok {
				from = h.repo
			}
			if found, err := exists(ctx); reused(found, err) {
				return 1, verdictOf(ctx, err), err
			}
		}
	}
	how := blobUploaded
	a, v, err := r.writes(ctx, rs.reg, what, true, func(ctx context.Context, attempt int) error {
		if attempt > 1 {
			// Found now, it is the earlier attempt's upload, whose answer
			// was lost: it went over the wire.
			if found, err := exists(ctx); err != nil || found {
				return err
			}
		}
		return r.underSlot(ctx, rs.reg, func() error {
			mounted, err := rs.upload(ctx, b, &from, home)
			if mounted {
				how = blobMounted
			}
			if refusesMonolithic(err) {
				// Take the registry at its word: chunked uploads from now
				// on, starting with this blob, in this attempt.
				r.noteChunkedOnly(rs.reg.host)
				return rs.uploadWithPusher(ctx, b)
			}
			if err != nil {
				return fmt.Errorf("upload blob %s: %w", b.digest, err)
			}
			return nil
		})
	})
	if home != nil {
		rs.reg.settle(home, err == nil)
	} else if err == nil {
		rs.reg.noteHome(b.digest, rs.repo.RepositoryStr())
	}
	if err == nil {
		r.noteWire(rs.reg.host, image, how, b.size)
	}
	return a, v, err
}

// homeIdle is how long a repository waits for another's upload of a blob
// that moves no byte before it uploads the blob itself.
const homeIdle = 3 * time.Second

// awaitHome waits for a blob's home to end its upload, reporting whether the
// blob is there; it stops waiting (not ok) when the upload has moved no byte
// for homeIdle.
func awaitHome(ctx context.Context, h *blobHome) (ok bool, err error) {
	tick := time.NewTicker(homeIdle / 10)
	defer tick.Stop()
	last, moved := h.sent.Load(), time.Now()
	for {
		select {
		case <-h.done:
			return h.ok, nil
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case <-tick.C:
			if n := h.sent.Load(); n != last {
				last, moved = n, time.Now()
			} else if time.Since(moved) >= homeIdle {
				return false, nil
			}
		}
	}
}

// upload puts one blob in the repository under the caller's write slot:
// mounted from *from when it is set and the registry mounts, else sent whole
// in one PUT into an upload session (the one a refused mount opened, or a new
// one). A mount is asked once: *from is cleared, so a later attempt uploads.
// Bytes sent count as the progress of home, when the blob's home is ours.
func (rs *repoState) upload(ctx context.Context, b blob, from *string, home *blobHome) (mounted bool, err error) {
	rc := rs.rc
	var s *registry.Session
	if *from != "" && !rs.run.client.MountsRefused(rs.reg.host) {
		mounted, sess, err := rc.Mount(ctx, b.digest, *from)
		*from = ""
		if mounted {
			return true, nil
		}
		var terr *transport.Error
		if err != nil && !errors.As(err, &terr) {
			return false, err // no answer: the next attempt uploads
		}
		s = sess // nil after a refusal with another status: upload plainly
	}
	if s == nil {
		var err error
		if s, err = rc.StartUpload(ctx); err != nil {
			return false, err
		}
	}
	return false, s.Put(ctx, b.digest, b.size, func() (io.ReadCloser, error) {
		rc, err := b.layer.Compressed()
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("open blob %s: %w", b.digest, err)}
		}
		var sent *atomic.Int64
		if home != nil {
			sent = &home.sent
		}
		return &sourceReader{rc: rc, sent: sent}, nil
	})
}

// sourceRepository is the repository a registry: source's layer comes from,
// when it is on the destination's registry: a blob to mount, not to copy.
func sourceRepository(l v1.Layer, host string) string {
	ml, ok := l.(*remote.MountableLayer)
	if !ok || ml.Reference == nil || ml.Reference.Context().RegistryStr() != host {
		return ""
	}
	return ml.Reference.Context().RepositoryStr()
}

// uploadWithPusher uploads a blob through go-containerregistry's Pusher: a
// mount when the blob can be mounted from another repository of the registry,
// else POST, PATCH and PUT. The caller holds a write slot.
func (rs *repoState) uploadWithPusher(ctx context.Context, b blob) error {
	gp, err := rs.pusher()
	if err != nil {
		return err
	}
	// What is read from the source fails as the source's; a mountable
	// layer stays one (go-containerregistry mounts only what it sees as
	// mountable), with its reads, for when the mount is refused, marked.
	var l v1.Layer = sourceLayer{b.layer}
	if ml, ok := b.layer.(*remote.MountableLayer); ok {
		l = &remote.MountableLayer{Layer: sourceLayer{ml.Layer}, Reference: ml.Reference}
	}
	if err := gp.Upload(ctx, rs.repo, l); err != nil {
		return fmt.Errorf("upload blob %s: %w", b.digest, err)
	}
	return nil
}

// refusesMonolithic is an answer to a PUT with the whole blob that says the
// registry does not take uploads that way (rather than that it failed).
func refusesMonolithic(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.Request == nil || terr.Request.Method != http.MethodPut {
		return false
	}
	switch terr.StatusCode {
	case http.StatusMethodNotAllowed, http.StatusRequestedRangeNotSatisfiable, http.StatusNotImplemented, http.StatusLengthRequired:
		return true
	}
	return false
}

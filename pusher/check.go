package pusher

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
)

// Check is a dry run's look at the destinations: for each repository the
// tags name, the registry answers, the credentials get a push token (the
// token exchange asks for push), and an upload session can be opened, which
// is then cancelled. It writes no content: no PATCH, no PUT. It returns one
// error per repository that failed, explained as a failed push would be.
func (p *Pusher) Check(ctx context.Context, tags []name.Tag) map[name.Repository]error {
	r := p.newRun(ctx)
	defer r.cancelPhases()

	repos := make(map[name.Repository]bool)
	for _, t := range tags {
		repos[t.Repository] = true
	}
	var (
		mu   sync.Mutex
		errs = make(map[name.Repository]error)
		wg   sync.WaitGroup
	)
	for repo := range repos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.checkRepository(ctx, repo); err != nil {
				v := classify(ctx, err)
				if v.refused {
					v.transient = false // one look, no grace: say what is wrong
				}
				mu.Lock()
				errs[repo] = explain(v, err, 1, repo.RegistryStr(), repo.String())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

func (r *run) checkRepository(ctx context.Context, repo name.Repository) error {
	rs := newRepoState(r, repo)
	loc, err := rs.openUpload(ctx)
	if err != nil {
		return fmt.Errorf("open an upload session: %w", err)
	}
	// Cancel the session; a registry that cannot is not a failed check.
	rs.cancelUpload(ctx, loc)
	return nil
}

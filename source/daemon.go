package source

import (
	"context"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/moby/moby/client"
)

// openDaemon opens an image from the Docker engine at o.DockerHost (or the
// default socket). The image is saved once to a temporary file, not into memory.
func openDaemon(ctx context.Context, spec string, o Options) (*Image, error) {
	ref, err := name.ParseReference(spec)
	if err != nil {
		return nil, fmt.Errorf("source docker-daemon:%s: not an image name: %w", spec, err)
	}
	host := o.DockerHost
	if host == "" {
		host = client.DefaultDockerHost
	}
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		return nil, fmt.Errorf("source docker-daemon:%s: Docker engine address %q: %w", spec, host, err)
	}
	img, err := daemon.Image(ref, daemon.WithContext(ctx), daemon.WithClient(cli), daemon.WithFileBufferedOpener())
	switch {
	case client.IsErrConnectionFailed(err):
		return nil, fmt.Errorf("source docker-daemon:%s: cannot reach Docker engine at %s: is the docker service enabled? (GitHub runners mount /var/run/docker.sock; Bitbucket needs `services: [docker]`): %w", spec, host, err)
	case cerrdefs.IsNotFound(err):
		return nil, fmt.Errorf("source docker-daemon:%s: no image %s in the Docker engine at %s (was it built or pulled in this job?): %w", spec, ref, host, err)
	case err != nil:
		return nil, fmt.Errorf("source docker-daemon:%s: %w", spec, err)
	}
	// Saving the image here turns a missing or broken image into an error
	// before anything is pushed.
	if _, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("source docker-daemon:%s: save the image from %s: %w", spec, host, err)
	}
	return &Image{Taggable: img, Description: fmt.Sprintf("Docker engine image %s", ref)}, nil
}

// Command tagpush pushes one container image to many tags, reliably and fast.
// It runs as a GitHub Action, a Bitbucket Pipe, or from a terminal; see README.md.
package main

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/tagpush/tagpush/demo"
	"github.com/tagpush/tagpush/job"
)

// version is stamped at release: -ldflags "-X main.version=v1.2.3".
var version = "dev"

//go:embed testdata/oci
var demoImage embed.FS

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal the run winds down; a second one ends it at once.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "--version", "-version", "version":
			fmt.Println("tagpush", version)
			return job.ExitOK
		case "demo":
			img, err := fs.Sub(demoImage, "testdata/oci")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return job.ExitFailed
			}
			return demo.Run(ctx, args[1:], img, os.Stdout, os.Stderr, version)
		}
	}
	return job.Run(ctx, job.Env{
		Args:    args,
		Getenv:  os.Getenv,
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Version: version,
	})
}

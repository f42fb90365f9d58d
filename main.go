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
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/tagpush/tagpush/demo"
	"github.com/tagpush/tagpush/job"
)

// version is stamped at release: -ldflags "-X main.version=v1.2.3". A
// build without it (go install, go build) takes the module's version from
// the build info.
var version = ""

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
	info, _ := debug.ReadBuildInfo()
	version, long := versions(version, info)
	if len(args) > 0 {
		switch args[0] {
		case "--version", "-version", "-v", "version":
			fmt.Println("tagpush", long)
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
		Environ: os.Environ,
		Stdin:   os.Stdin,
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Version: version,
	})
}

// versions returns the version for the User-Agent and the one --version
// prints, which adds the VCS revision the binary was built from and the Go
// release: "v1.2.3 (revision 0123456789ab, go1.25.1)". stamped wins over
// the build info's module version; a build from a work tree has only
// "(devel)" there, or a pseudo-version with the revision in it.
func versions(stamped string, info *debug.BuildInfo) (short, long string) {
	short = stamped
	if info == nil {
		if short == "" {
			short = "dev"
		}
		return short, short
	}
	if short == "" {
		short = info.Main.Version
	}
	if short == "" || short == "(devel)" {
		short = "dev"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	var extra []string
	if rev != "" {
		extra = append(extra, "revision "+rev[:min(len(rev), 12)]+modified)
	}
	if info.GoVersion != "" {
		extra = append(extra, info.GoVersion)
	}
	long = short
	if len(extra) > 0 {
		long += " (" + strings.Join(extra, ", ") + ")"
	}
	return short, long
}

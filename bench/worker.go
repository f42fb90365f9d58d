package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tagpush/tagpush/source"
)

// worker is one contender's run, in a process of its own.
type worker struct {
	Contender, Registry, Repo, Source string
	Tags                              int
}

type workerResult struct {
	Pushed int      `json:"pushed"`
	Errors []string `json:"errors"`
	// ChildRSS is the peak memory of a program the worker ran (oras), in bytes.
	ChildRSS int64 `json:"child_rss"`
}

// childRSS is where a contender that runs another program leaves its peak memory.
var childRSS int64

func (worker) childRSS(cmd *exec.Cmd) {
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		childRSS = ru.Maxrss * 1024
	}
}

func (w worker) tags() []name.Tag {
	out := make([]name.Tag, w.Tags)
	for i := range out {
		out[i], _ = name.NewTag(fmt.Sprintf("%s/%s:t%d", w.Registry, w.Repo, i))
	}
	return out
}

func (w worker) image() (v1.Image, error) {
	img, err := source.Open(context.Background(), w.Source, source.Options{})
	if err != nil {
		return nil, err
	}
	i, ok := img.Taggable.(v1.Image)
	if !ok {
		return nil, fmt.Errorf("%s is not a single image", w.Source)
	}
	return i, nil
}

// digest is the digest of the source: an image's or an index's.
func (w worker) digest() (v1.Hash, error) {
	img, err := source.Open(context.Background(), w.Source, source.Options{})
	if err != nil {
		return v1.Hash{}, err
	}
	d, ok := img.Taggable.(interface{ Digest() (v1.Hash, error) })
	if !ok {
		return v1.Hash{}, fmt.Errorf("%s has no digest", w.Source)
	}
	return d.Digest()
}

func runWorker(args []string) int {
	var w worker
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.StringVar(&w.Contender, "contender", "", "")
	fs.StringVar(&w.Registry, "registry", "", "")
	fs.StringVar(&w.Repo, "repo", "", "")
	fs.StringVar(&w.Source, "source", "", "")
	fs.IntVar(&w.Tags, "tags", 20, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, ok := contenders[w.Contender]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown contender %q\n", w.Contender)
		return 2
	}
	pushed, errs := c(context.Background(), w)
	if err := json.NewEncoder(os.Stdout).Encode(workerResult{Pushed: pushed, Errors: errs, ChildRSS: childRSS}); err != nil {
		return 1
	}
	return 0
}

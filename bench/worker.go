package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tagpush/tagpush/source"
)

// worker is an in-process contender's run, in a process of its own.
type worker struct {
	Contender, Registry, Repo, Source string
	Tags                              int
}

type workerResult struct {
	Pushed int      `json:"pushed"`
	Errors []string `json:"errors"`
}

func decodeWorker(b []byte, res *workerResult) error { return json.Unmarshal(b, res) }

// workers are the contenders that run as Go code in a worker process.
var workers = map[string]func(context.Context, worker) (int, []string){
	"naive-seq": naiveSeq,
	"naive-par": naivePar,
	"floor":     floor,
}

func (w worker) tags() []name.Tag {
	return job{Registry: w.Registry, Repo: w.Repo, Tags: w.Tags}.tags()
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

// sourceDigest is the digest of the source: an image's or an index's.
func sourceDigest(src string) (v1.Hash, error) {
	img, err := source.Open(context.Background(), src, source.Options{})
	if err != nil {
		return v1.Hash{}, err
	}
	d, ok := img.Taggable.(interface{ Digest() (v1.Hash, error) })
	if !ok {
		return v1.Hash{}, fmt.Errorf("%s has no digest", src)
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
	c, ok := workers[w.Contender]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown worker contender %q\n", w.Contender)
		return 2
	}
	pushed, errs := c(context.Background(), w)
	if err := json.NewEncoder(os.Stdout).Encode(workerResult{Pushed: pushed, Errors: errs}); err != nil {
		return 1
	}
	return 0
}

// Package config holds tagpush's one table of options and reads them from
// whichever front end runs it: CLI flags, GitHub Actions inputs (INPUT_*), or
// Bitbucket Pipe variables (UPPER_SNAKE, lists as NAME_COUNT/NAME_0...).
// action.yml and pipe.yml are checked against this table by tests.
package config

import (
	"strconv"

	"github.com/tagpush/tagpush/ci"
	"github.com/tagpush/tagpush/internal/quote"
	"github.com/tagpush/tagpush/pusher"
)

// Kind is the type of an option's value.
type Kind int

const (
	String Kind = iota
	List        // items separated by newlines or commas
	Lines       // items one per line (an item may hold commas)
	Int
	Bool
	Duration
)

// Option is one input of the action, flag of the CLI, and variable of the pipe.
type Option struct {
	Name        string // the action input and the CLI flag, kebab-case
	Kind        Kind
	Default     string
	Required    bool
	Secret      bool
	Description string
	// Group is the help section the option is listed under.
	Group string
	// Placeholder names the flag's value in the help (--password TOKEN).
	Placeholder string
}

// The help sections, in order.
const (
	GroupWhat        = "What to push, and where"
	GroupCredentials = "Destination registries and credentials"
	GroupSpeed       = "Speed and retries"
	GroupBehaviour   = "Behaviour"
)

// Variable is the option's Bitbucket Pipe variable name.
func (o Option) Variable() string {
	return ci.Variable(o.Name)
}

// Options returns the options, in the order the docs list them.
func Options() []Option {
	return []Option{
		{Name: "source", Group: GroupWhat, Placeholder: "SOURCE", Kind: String,
			Description: "The image to push: oci:PATH[:REF|@DIGEST] (an OCI layout), docker-archive:PATH[:NAME:TAG] (docker save), docker-daemon:NAME[:TAG] (the local Docker engine), registry:REF (an image in a registry), or a path to a layout or archive."},
		{Name: "tags", Group: GroupWhat, Placeholder: "TAGS", Kind: List,
			Description: "Destination tags, one per line or separated by commas: full references (ghcr.io/acme/app:1.4) or bare tags joined to `repository`. Blank lines and # comments are ignored."},
		{Name: "images", Group: GroupWhat, Placeholder: "IMAGES", Kind: Lines,
			Description: "Several images in one run, instead of source and tags: one per line, SOURCE -> TAG, TAG, ... with full references (docker-daemon:api:ci -> ghcr.io/acme/api:1.4, ghcr.io/acme/api:latest). They share one write limit per registry, and a layer goes up once per registry."},
		{Name: "repository", Group: GroupWhat, Placeholder: "REPO", Kind: String,
			Description: "Default repository for bare tags, e.g. ghcr.io/acme/app."},
		{Name: "platform", Group: GroupWhat, Placeholder: "OS/ARCH", Kind: String,
			Description: "Push only this platform (linux/amd64, linux/arm64/v8) out of a multi-platform source; by default an index is pushed whole."},
		{Name: "username", Group: GroupCredentials, Placeholder: "USER", Kind: String,
			Description: "Username for the destination registry (when the tags name one registry)."},
		{Name: "password", Group: GroupCredentials, Placeholder: "TOKEN", Kind: String, Secret: true,
			Description: "Password or token for `username`. Masked in logs."},
		{Name: "registry-auth", Group: GroupCredentials, Placeholder: "REGISTRY=USER:TOKEN", Kind: List, Secret: true,
			Description: "Credentials per registry, one REGISTRY=USER:TOKEN per line; each goes only to its registry. Masked in logs."},
		{Name: "ca-file", Group: GroupCredentials, Placeholder: "PATH", Kind: String,
			Description: "A PEM file of CA certificates to trust besides the system's, for a registry with a private CA (SSL_CERT_FILE works too)."},
		{Name: "insecure-registries", Group: GroupCredentials, Placeholder: "HOST[:PORT]", Kind: List,
			Description: "Registries (host or host:port), one per line or separated by commas, whose TLS certificates are not checked and which may be reached over plain HTTP. Logged as a warning."},
		{Name: "concurrency", Group: GroupSpeed, Placeholder: "N", Kind: Int, Default: strconv.Itoa(pusher.DefaultConcurrency),
			Description: "The most writes (blob uploads, manifest PUTs) in flight at once per registry (the ceiling when adaptive); 1 to 32."},
		{Name: "adaptive", Group: GroupSpeed, Placeholder: "true|false", Kind: Bool, Default: strconv.FormatBool(pusher.DefaultAdaptive),
			Description: "Lower concurrency when a registry answers 5xx/429 and raise it again when it recovers."},
		{Name: "max-attempts", Group: GroupSpeed, Placeholder: "N", Kind: Int, Default: strconv.Itoa(pusher.DefaultMaxAttempts),
			Description: "Attempts per tag for transient failures (5xx, 429, 408, resets, timeouts); 1 to 50. Permanent failures are not retried."},
		{Name: "retry-delay", Group: GroupSpeed, Placeholder: "DURATION", Kind: Duration, Default: quote.Duration(pusher.DefaultRetryDelay),
			Description: "First wait between attempts (at most 1m); it doubles each time, with jitter. With the defaults a tag keeps trying through about 25s of failures."},
		{Name: "max-retry-delay", Group: GroupSpeed, Placeholder: "DURATION", Kind: Duration, Default: quote.Duration(pusher.DefaultMaxRetryDelay),
			Description: "Longest wait between attempts (at most 10m), also the cap on a registry's Retry-After."},
		{Name: "timeout", Group: GroupSpeed, Placeholder: "DURATION", Kind: Duration, Default: quote.Duration(pusher.DefaultTimeout),
			Description: "Time limit for one tag, all attempts included (at most 24h)."},
		{Name: "referrers", Group: GroupWhat, Placeholder: "true|false", Kind: Bool, Default: "true",
			Description: "Push the image's signatures, attestations and SBOMs with it: OCI referrers and cosign's sha256-<hex>.sig/.att/.sbom tags, from registry: and oci: sources, to every destination repository."},
		{Name: "overwrite", Group: GroupBehaviour, Placeholder: "true|false", Kind: Bool, Default: strconv.FormatBool(pusher.DefaultOverwrite),
			Description: "Write a tag that already points at another digest. With false, such a tag is left as it is and reported failed (exit 1); tags already at this digest are unchanged either way."},
		{Name: "atomic", Group: GroupBehaviour, Placeholder: "true|false", Kind: Bool, Default: "false",
			Description: "Move tags that already point at another digest (the floating ones: latest, 1.4) only after every other tag of the run is pushed and verified; when any tag fails, none is left moved (one already moved is put back to the digest it held, and verified). Without it, such tags are still written after the new ones."},
		{Name: "fail-on-error", Group: GroupBehaviour, Placeholder: "true|false", Kind: Bool, Default: "true",
			Description: "Exit 1 when any tag failed."},
		{Name: "dry-run", Group: GroupBehaviour, Placeholder: "true|false", Kind: Bool, Default: "false",
			Description: "Plan without writing: the source opens, each tag is read, and each is reported unchanged, would push, would overwrite or would fail (with the reason: overwrite is false, credentials, reachability), in the log, the table, the summary and the outputs. Exit 1 when a tag would fail."},
		{Name: "debug", Group: GroupBehaviour, Placeholder: "true|false", Kind: Bool, Default: "false",
			Description: "Log every request decision, retry, limit change and credential source in detail (never a secret). Also on with GitHub's runner debug logging, or DEBUG=true on a terminal."},
	}
}

// Output is one output of the action.
type Output struct {
	Name        string
	Description string
}

// The outputs' names: the table below is the one place that says what each
// holds; report fills them.
const (
	OutputDigest    = "digest"
	OutputDigests   = "digests"
	OutputResults   = "results"
	OutputPushed    = "pushed"
	OutputUnchanged = "unchanged"
	OutputFailed    = "failed"
	OutputDryRun    = "dry-run"
	OutputTransfer  = "transfer"
)

// Outputs returns the action's outputs.
func Outputs() []Output {
	return []Output{
		{OutputDigest, "The manifest digest pushed (with images: the first image's)."},
		{OutputDigests, `JSON object of each image's digest by its source, e.g. {"docker-daemon:api:ci":"sha256:..."}.`},
		{OutputResults, `JSON array, in input order, of {"tag","source","status","digest","previous_digest","attempts","duration_ms","error","referrers"}; status is pushed, unchanged, failed or cancelled (in a dry run: would push, would overwrite, unchanged, would fail); previous_digest is what the tag held before when it held another; source is the image's; referrers counts the signatures, attestations and SBOMs that went with the image to the tag's repository.`},
		{OutputPushed, "References that hold the digest now, one per line: those pushed and those unchanged (in a dry run: those that would hold it)."},
		{OutputUnchanged, "References that already held the digest, so nothing was written for them, one per line."},
		{OutputFailed, "References that failed or were cancelled, one per line (in a dry run: those that would fail)."},
		{OutputDryRun, "true when the run was a dry run: the other outputs are its plan, and nothing was written."},
		{OutputTransfer, `JSON object of what went over the wire for blobs, per registry: {"ghcr.io":{"blobs_uploaded":2,"bytes_uploaded":1048576,"blobs_mounted":1,"blobs_reused":4}} (empty in a dry run).`},
	}
}

package dockertest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/moby/moby/client"
)

// Nothing can be pulled where tagpush is tested: the action's image is built
// on a stand-in for its base, from the Dockerfile's own final stage.

// StandInBase puts a stand-in for gcr.io/distroless/static-debian12 into the
// engine at host as ref: what a static binary needs of its base, the CA
// certificates (this machine's), /etc/passwd, /etc/group and /tmp.
func StandInBase(ctx context.Context, host, ref string) error {
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		return err
	}
	defer cli.Close()
	certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		return fmt.Errorf("the stand-in base takes this machine's CA certificates: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []struct {
		name string
		mode int64
	}{{"etc/", 0o755}, {"etc/ssl/", 0o755}, {"etc/ssl/certs/", 0o755}, {"tmp/", 0o1777}, {"root/", 0o700}}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Name: d.name, Typeflag: tar.TypeDir, Mode: d.mode, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	files := []struct {
		name string
		body []byte
	}{
		{"etc/ssl/certs/ca-certificates.crt", certs},
		{"etc/passwd", []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{"etc/group", []byte("root:x:0:\nnonroot:x:65532:\n")},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := tw.Write(f.body); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := cli.ImageImport(ctx, client.ImageImportSource{Source: &buf, SourceName: "-"}, ref, client.ImageImportOptions{})
	if err != nil {
		return fmt.Errorf("import the stand-in base: %w", err)
	}
	defer res.Close()
	_, err = io.Copy(io.Discard, res)
	return err
}

var (
	fromLine = regexp.MustCompile(`(?im)^FROM\s`)
	copyFrom = regexp.MustCompile(`(?im)^COPY\s+--from=\S+\s+(\S+)\s+(\S+)\s*$`)
)

// BuildAction builds, in the engine at host, the image the Dockerfile's
// final stage builds: its instructions as written, FROM base instead of its
// own, and the file its COPY --from copies from the build stage taken from
// binary (built with the Dockerfile's flags). It tags the image ref.
func BuildAction(ctx context.Context, host, dockerfile, binary, base, ref string) error {
	df, err := os.ReadFile(dockerfile)
	if err != nil {
		return err
	}
	froms := fromLine.FindAllIndex(df, -1)
	if len(froms) == 0 {
		return fmt.Errorf("%s has no FROM", dockerfile)
	}
	final := string(df[froms[len(froms)-1][0]:])
	var stage strings.Builder
	fmt.Fprintf(&stage, "FROM %s\n", base)
	sc := bufio.NewScanner(strings.NewReader(final))
	sc.Scan() // the final stage's own FROM
	copied := false
	for sc.Scan() {
		line := sc.Text()
		if m := copyFrom.FindStringSubmatch(line); m != nil {
			line, copied = "COPY tagpush "+m[2], true
		}
		stage.WriteString(line + "\n")
	}
	if !copied {
		return fmt.Errorf("%s's final stage copies nothing from the build stage", dockerfile)
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		body []byte
	}{{"Dockerfile", 0o644, []byte(stage.String())}, {"tagpush", 0o755, bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := tw.Write(f.body); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		return err
	}
	defer cli.Close()
	res, err := cli.ImageBuild(ctx, &buf, client.ImageBuildOptions{Tags: []string{ref}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("build the action's image: %w", err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("build the action's image: %w", err)
		}
		if msg.Error != "" {
			return fmt.Errorf("build the action's image: %s", msg.Error)
		}
	}
}

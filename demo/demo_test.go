package demo

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func TestDemoPushesEightTags(t *testing.T) {
	for _, mode := range []string{"none", "ghcr"} {
		t.Run(mode, func(t *testing.T) {
			var out bytes.Buffer
			code := Run(context.Background(), []string{"--faults", mode, "--latency", "1ms"}, os.DirFS("../testdata/oci"), &out, &out, "test")
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, &out)
			}
			for _, want := range []string{"8 of 8 tags pushed", "checked independently: 8 of 8 tags resolve"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, &out)
				}
			}
			if rows := strings.Count(out.String(), "\npushed     "); rows != 8 {
				t.Errorf("%d pushed rows in the table, want 8", rows)
			}
		})
	}
}

func TestDemoRejectsUnknownFaultMode(t *testing.T) {
	var out bytes.Buffer
	if code := Run(context.Background(), []string{"--faults", "chaos"}, os.DirFS("../testdata/oci"), &out, &out, "test"); code != 2 || !strings.Contains(out.String(), `"chaos"`) {
		t.Errorf("exit %d: %s", code, &out)
	}
}

// Every fault mode shows its fault at the demo's default size (8 tags), and
// the demo still ends with every tag pushed.
func TestDemoFaultModesInjectAtDefaultSize(t *testing.T) {
	for _, mode := range []string{"ghcr", "429", "429-ghcr", "reset", "slow", "flaky", "outage", "lag", "lost-answer", "403-rate-limit"} {
		t.Run(mode, func(t *testing.T) {
			var out bytes.Buffer
			code := Run(context.Background(), []string{"--faults", mode, "--latency", "1ms"}, os.DirFS("../testdata/oci"), &out, &out, "test")
			if code != 0 || !strings.Contains(out.String(), "8 of 8 tags") {
				t.Fatalf("exit %d:\n%s", code, &out)
			}
			if strings.Contains(out.String(), "faults injected: none") || strings.Contains(out.String(), "map[") {
				t.Errorf("mode %s injected nothing at the default size:\n%s", mode, &out)
			}
		})
	}
}

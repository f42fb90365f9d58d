// Command install-registry builds the Distribution registry the tests start
// (once, into the user cache) and prints its path. Tests build it themselves
// when needed; CI runs this first so a failed build is reported on its own.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tagpush/tagpush/internal/testregistry"
)

func main() {
	bin, err := testregistry.Binary(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(bin)
}

// Command fakefc is banger's Firecracker test double (see package
// fakefc): it takes Firecracker's command line and serves its API.
package main

import (
	"os"

	"github.com/banger-dev/banger/internal/vmm/firecracker/fakefc"
)

func main() { os.Exit(fakefc.Main(os.Args[1:], os.Stdout, os.Stderr)) }

// Command banger is the banger daemon and its command-line client in one
// binary: `banger daemon` runs the daemon; every other subcommand talks to
// it over its Unix socket. All logic lives in internal/.
package main

import (
	"os"

	"github.com/banger-dev/banger/internal/cli"
)

func main() { os.Exit(cli.Main()) }

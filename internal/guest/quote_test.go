package guest

import (
	"os/exec"
	"strings"
	"testing"
)

var shellQuoteSeeds = []string{
	"", "a", "a b", "$(x)", "'", "''", "it's", "\n", "a\nb", "`id`", "\\", "\\'", "*", "~", "~root",
	"-n", "--", "a=b", "if", "!", "\"", "$HOME", "${x:-y}", ";", "&&", "|", "#c", "\t", "\xff\xfe", "ü",
}

// sh runs one command line with the real /bin/sh and returns its stdout.
func sh(t *testing.T, cmdline string) string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", cmdline).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", cmdline, err)
	}
	return string(out)
}

// FuzzShellQuote checks that the shell turns ShellQuote(s) back into
// exactly s. The seeds run in every `go test`.
func FuzzShellQuote(f *testing.F) {
	for _, s := range shellQuoteSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsRune(s, 0) {
			t.Skip("argv cannot carry NUL bytes")
		}
		if got := sh(t, "printf %s "+ShellQuote(s)); got != s {
			t.Fatalf("round trip changed %q into %q", s, got)
		}
	})
}

func TestCommandLineKeepsWords(t *testing.T) {
	args := []string{"printf", `%s\n`}
	args = append(args, shellQuoteSeeds[1:]...) // "" would print an empty line, covered below
	args = append(args, "")
	want := strings.Join(args[2:], "\n") + "\n"
	if got := sh(t, CommandLine(args)); got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// A first word that looks like shell syntax is still a command name.
	if got := sh(t, CommandLine([]string{"if"})+" 2>/dev/null; echo $?"); got != "127\n" {
		t.Fatalf("'if' was not run as a command: %q", got)
	}
}

package guest

import "strings"

// ShellQuote quotes s as one word for a POSIX shell, in single quotes; an
// embedded quote ends the quoted part, is added escaped (\') and the quoted
// part starts again. Every string is quoted, even "safe" ones: a bare
// word could still be a reserved word (if) or an assignment (a=b) when it
// ends up first on the command line.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CommandLine joins argv into one shell command line whose words, after the
// remote shell parses it, are exactly argv.
func CommandLine(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = ShellQuote(a)
	}
	return strings.Join(quoted, " ")
}

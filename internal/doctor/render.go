package doctor

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/banger-dev/banger/internal/api"
)

// statusLabel is the first column: a symbol for scanning and a word for
// terminals without the symbol or readers who do not know it.
func statusLabel(s api.CheckStatus) string {
	switch s {
	case api.CheckOK:
		return "✓ ok"
	case api.CheckWarn:
		return "! warn"
	case api.CheckFail:
		return "✗ fail"
	}
	return "? " + string(s)
}

// Render writes the report as an aligned table, a "fix:" line under each
// finding that is not ok, and a one-line summary.
func Render(w io.Writer, r api.DoctorReport) error {
	statusWidth, nameWidth := utf8.RuneCountInString("STATUS"), len("CHECK")
	for _, ch := range r.Checks {
		statusWidth = max(statusWidth, utf8.RuneCountInString(statusLabel(ch.Status)))
		nameWidth = max(nameWidth, utf8.RuneCountInString(ch.Name))
	}
	pad := func(s string, width int) string {
		return s + strings.Repeat(" ", width-utf8.RuneCountInString(s))
	}
	var b strings.Builder
	indent := strings.Repeat(" ", statusWidth+2+nameWidth+2)
	fmt.Fprintf(&b, "%s  %s  %s\n", pad("STATUS", statusWidth), pad("CHECK", nameWidth), "MESSAGE")
	for _, ch := range r.Checks {
		fmt.Fprintf(&b, "%s  %s  %s\n", pad(statusLabel(ch.Status), statusWidth), pad(ch.Name, nameWidth), ch.Message)
		if ch.Status != api.CheckOK && ch.Fix != "" {
			fmt.Fprintf(&b, "%sfix: %s\n", indent, ch.Fix)
		}
	}
	okN, warnN, failN := Summary(r)
	fmt.Fprintf(&b, "\n%d checks: %d ok, %d warn, %d fail\n", len(r.Checks), okN, warnN, failN)
	_, err := io.WriteString(w, b.String())
	return err
}

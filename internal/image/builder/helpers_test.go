package builder

import (
	"os"
	"testing"
)

// requireOrSkip skips when a prerequisite is missing, or fails when
// BANGER_REQUIRE_ALL=1 says every test must run.
func requireOrSkip(t *testing.T, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("BANGER_REQUIRE_ALL") == "1" {
		t.Fatalf("missing prerequisite (BANGER_REQUIRE_ALL=1): %s", why)
	}
	t.Skip("missing prerequisite: " + why)
}

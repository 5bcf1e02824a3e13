// Package testenv holds the one rule every banger test follows when the
// host lacks something: skip and name the missing prerequisite, unless
// BANGER_REQUIRE_ALL=1 says this host must have everything, then fail.
package testenv

import (
	"os"
	"testing"
)

// Require skips t (or fails it under BANGER_REQUIRE_ALL=1) when ok is
// false; why names the missing prerequisite and how to get it.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("BANGER_REQUIRE_ALL") == "1" {
		t.Fatalf("missing prerequisite (BANGER_REQUIRE_ALL=1): %s", why)
	}
	t.Skipf("missing prerequisite: %s", why)
}

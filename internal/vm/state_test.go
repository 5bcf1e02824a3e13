package vm

import (
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestTransitionTable(t *testing.T) {
	legal := map[[2]State]bool{
		{Creating, Stopped}: true, {Creating, Running}: true, {Creating, Error}: true,
		{Stopped, Starting}: true, {Stopped, Error}: true,
		{Starting, Running}: true, {Starting, Stopped}: true, {Starting, Error}: true,
		{Running, Stopping}: true, {Running, Paused}: true, {Running, Stopped}: true, {Running, Error}: true,
		{Paused, Running}: true, {Paused, Stopping}: true, {Paused, Stopped}: true, {Paused, Error}: true,
		{Stopping, Stopped}: true, {Stopping, Error}: true,
		{Error, Starting}: true, {Error, Stopped}: true,
	}
	for _, from := range AllStates {
		for _, to := range AllStates {
			want := legal[[2]State{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("%s -> %s: got %v want %v", from, to, got, want)
			}
		}
	}
	// Nothing may go back to creating.
	if len(Sources(Creating)) != 0 {
		t.Fatal("creating must not be reachable")
	}
}

func TestTransitionErrorIsConflict(t *testing.T) {
	err := Transition("dev", Stopped, Paused)
	if !api.IsKind(err, api.KindConflict) || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("got %v", err)
	}
}

func TestStatesMatchWire(t *testing.T) {
	wire := []api.VMState{api.VMCreating, api.VMStopped, api.VMStarting, api.VMRunning, api.VMPaused, api.VMStopping, api.VMError}
	for i, s := range AllStates {
		if string(s) != string(wire[i]) {
			t.Fatalf("state %d: %s vs %s", i, s, wire[i])
		}
		if p, err := Parse(string(s)); err != nil || p != s {
			t.Fatal(err)
		}
	}
	if _, err := Parse("zombie"); err == nil {
		t.Fatal("unknown state parsed")
	}
}

func TestValidateName(t *testing.T) {
	good := []string{"a", "dev", "dev-2", "a" + strings.Repeat("b", 62)}
	bad := []string{"", "Dev", "1dev", "-dev", "dev_2", "dev.x", "a" + strings.Repeat("b", 63), "../x", "dév"}
	for _, n := range good {
		if err := ValidateName("VM", n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName("VM", n); !api.IsKind(err, api.KindInvalidName) {
			t.Errorf("%q: want invalid_name, got %v", n, err)
		}
	}
}

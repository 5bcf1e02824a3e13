// Package vm owns a VM's identity rules and lifecycle state machine: which
// names are legal, which states exist, and which transitions between them
// are allowed. The daemon's lifecycle service drives VMs through these
// transitions; the store enforces them with compare-and-swap updates.
package vm

import (
	"fmt"
	"regexp"

	"github.com/banger-dev/banger/internal/api"
)

// State is a VM lifecycle state.
type State string

const (
	Creating State = "creating"
	Stopped  State = "stopped"
	Starting State = "starting"
	Running  State = "running"
	Paused   State = "paused"
	Stopping State = "stopping"
	Error    State = "error"
)

// AllStates lists every state, in lifecycle order.
var AllStates = []State{Creating, Stopped, Starting, Running, Paused, Stopping, Error}

// transitions is the table of legal moves. Every other move is a bug or a
// conflicting concurrent operation, and is refused.
var transitions = map[State][]State{
	Creating: {Stopped, Running, Error},
	Stopped:  {Starting, Error},
	Starting: {Running, Stopped, Error},
	Running:  {Stopping, Paused, Stopped, Error},
	Paused:   {Running, Stopping, Stopped, Error},
	Stopping: {Stopped, Error},
	Error:    {Starting, Stopped},
}

// Parse converts a stored or wire state name.
func Parse(s string) (State, error) {
	for _, st := range AllStates {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown VM state %q", s)
}

// CanTransition reports whether from -> to is legal.
func CanTransition(from, to State) bool {
	for _, t := range transitions[from] {
		if t == to {
			return true
		}
	}
	return false
}

// Sources returns the states from which to is reachable.
func Sources(to State) []State {
	var out []State
	for _, from := range AllStates {
		if CanTransition(from, to) {
			out = append(out, from)
		}
	}
	return out
}

// Transition validates a move and returns a conflict error naming both states.
func Transition(name string, from, to State) error {
	if CanTransition(from, to) {
		return nil
	}
	return api.Errorf(api.KindConflict, "VM %q is %s; cannot move to %s", name, from, to)
}

// Busy reports whether a state belongs to an operation in progress.
func (s State) Busy() bool { return s == Creating || s == Starting || s == Stopping }

// Live reports whether a VMM process should exist.
func (s State) Live() bool { return s == Starting || s == Running || s == Paused || s == Stopping }

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ValidateName checks a VM or image name.
func ValidateName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return api.Errorf(api.KindInvalidName,
			"invalid %s name %q: use 1-63 lowercase letters, digits and '-', starting with a letter", kind, name)
	}
	return nil
}

//go:build race

package store

// raceEnabled: the race detector slows the pure-Go SQLite engine about 20x,
// so wall-clock budgets do not apply.
const raceEnabled = true

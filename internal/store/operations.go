package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// OpRunning and OpFailed are the operation states the store itself writes
// (see FailInterruptedOperations); the full set belongs to internal/opstate.
const (
	OpRunning = "running"
	OpFailed  = "failed"
)

// Operation is the persisted record of an asynchronous operation.
type Operation struct {
	ID, Kind, Target, State, Stage, Error string
	Stages                                []string
	Progress                              float64
	Result                                []byte // JSON owned by the caller
	LogTail                               []string

	CreatedAt, UpdatedAt, FinishedAt time.Time
}

const opColumns = `id, kind, target, state, stage, stages, progress, error, result, log_tail,
	created_at, updated_at, finished_at`

func scanOperation(sc scanner) (Operation, error) {
	var op Operation
	var stages, logTail string
	var created, updated, finished int64
	if err := sc.Scan(&op.ID, &op.Kind, &op.Target, &op.State, &op.Stage, &stages, &op.Progress,
		&op.Error, &op.Result, &logTail, &created, &updated, &finished); err != nil {
		return Operation{}, err
	}
	if err := json.Unmarshal([]byte(stages), &op.Stages); err != nil {
		return Operation{}, fmt.Errorf("operation %s: decode stages: %w", op.ID, err)
	}
	if err := json.Unmarshal([]byte(logTail), &op.LogTail); err != nil {
		return Operation{}, fmt.Errorf("operation %s: decode log tail: %w", op.ID, err)
	}
	if len(op.Stages) == 0 {
		op.Stages = nil
	}
	if len(op.LogTail) == 0 {
		op.LogTail = nil
	}
	op.CreatedAt, op.UpdatedAt, op.FinishedAt = fromNanos(created), fromNanos(updated), fromNanos(finished)
	return op, nil
}

// jsonList encodes a string list; nil and empty both become "[]" and read
// back as nil.
func jsonList(l []string) (string, error) {
	if len(l) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(l)
	return string(b), err
}

// PutOperation inserts op or replaces the stored one with the same ID. An
// empty ID is generated; CreatedAt is set when zero and kept from the stored
// row on replace; UpdatedAt is always set to now. Changes are written back.
func (s *Store) PutOperation(ctx context.Context, op *Operation) error {
	if op.Kind == "" || op.State == "" {
		return fmt.Errorf("put operation %s: kind and state are required", op.ID)
	}
	rec := *op
	if rec.ID == "" {
		rec.ID = NewID()
	}
	now := s.nowUTC()
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = now
	}
	rec.UpdatedAt = now
	stages, err := jsonList(rec.Stages)
	if err != nil {
		return fmt.Errorf("put operation %s: encode stages: %w", rec.ID, err)
	}
	logTail, err := jsonList(rec.LogTail)
	if err != nil {
		return fmt.Errorf("put operation %s: encode log tail: %w", rec.ID, err)
	}
	var created int64
	err = s.db.QueryRowContext(ctx, `INSERT INTO operations (`+opColumns+`)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT(id) DO UPDATE SET
			kind = excluded.kind, target = excluded.target, state = excluded.state,
			stage = excluded.stage, stages = excluded.stages, progress = excluded.progress,
			error = excluded.error, result = excluded.result, log_tail = excluded.log_tail,
			updated_at = excluded.updated_at, finished_at = excluded.finished_at
		RETURNING created_at`,
		rec.ID, rec.Kind, rec.Target, rec.State, rec.Stage, stages, rec.Progress, rec.Error,
		nullBytes(rec.Result), logTail, toNanos(rec.CreatedAt), toNanos(rec.UpdatedAt), toNanos(rec.FinishedAt),
	).Scan(&created)
	if err != nil {
		return fmt.Errorf("put operation %s: %w", rec.ID, err)
	}
	rec.CreatedAt = fromNanos(created)
	*op = rec
	return nil
}

// GetOperation returns the operation with exactly this ID.
func (s *Store) GetOperation(ctx context.Context, id string) (Operation, error) {
	op, err := scanOperation(s.db.QueryRowContext(ctx, `SELECT `+opColumns+` FROM operations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Operation{}, notFound("operation", id)
	}
	if err != nil {
		return Operation{}, fmt.Errorf("get operation %s: %w", id, err)
	}
	return op, nil
}

// FindOperation resolves ref as an exact ID or a unique ID prefix.
func (s *Store) FindOperation(ctx context.Context, ref string) (Operation, error) {
	id, err := s.resolveID(ctx, "operations", "operation", ref, false)
	if err != nil {
		return Operation{}, err
	}
	return s.GetOperation(ctx, id)
}

// ListOperations returns operations newest first; limit <= 0 means all.
func (s *Store) ListOperations(ctx context.Context, limit int) ([]Operation, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+opColumns+` FROM operations
		ORDER BY created_at DESC, id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	defer rows.Close()
	ops := []Operation{}
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			return nil, fmt.Errorf("list operations: %w", err)
		}
		ops = append(ops, op)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	return ops, nil
}

// FailInterruptedOperations marks every running operation failed with
// reason, finished now. The daemon calls it at start-up: nothing survives a
// restart still running. It returns how many were marked.
func (s *Store) FailInterruptedOperations(ctx context.Context, reason string) (int, error) {
	now := toNanos(s.nowUTC())
	res, err := s.db.ExecContext(ctx, `UPDATE operations
		SET state = ?, error = ?, finished_at = ?, updated_at = ? WHERE state = ?`,
		OpFailed, reason, now, now, OpRunning)
	if err != nil {
		return 0, fmt.Errorf("fail interrupted operations: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("fail interrupted operations: %w", err)
	}
	return int(n), nil
}

// PruneOperations deletes finished operations except the newest keep of
// them. Running operations are never pruned.
func (s *Store) PruneOperations(ctx context.Context, keep int) error {
	if keep < 0 {
		keep = 0
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM operations WHERE state != ?1 AND id NOT IN (
		SELECT id FROM operations WHERE state != ?1 ORDER BY created_at DESC, id DESC LIMIT ?2)`,
		OpRunning, keep)
	if err != nil {
		return fmt.Errorf("prune operations: %w", err)
	}
	return nil
}

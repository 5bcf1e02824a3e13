package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// VM is a VM's persisted record. State values and their legal transitions
// belong to internal/vm; the store only compares strings.
type VM struct {
	ID, Name, State, StateReason, ImageID, VMM string

	CPUs, MemoryMiB, DiskSizeMiB int
	// Pending* are resources to apply at next start; 0 means no change.
	PendingCPUs, PendingMemoryMiB, PendingDiskSizeMiB int

	// IP is the caller's copy of the address; the allocation itself lives
	// in ip_allocations (see AllocateIP).
	IP, MAC, TAP, Overlay, Accel string

	Handle       []byte // opaque JSON owned by the caller (vmm.Handle)
	Capabilities []byte // opaque JSON owned by the caller

	CreatedAt, UpdatedAt, StartedAt time.Time
}

const vmColumns = `id, name, state, state_reason, image_id, vmm, cpus, memory_mib, disk_size_mib,
	pending_cpus, pending_memory_mib, pending_disk_size_mib, ip, mac, tap, overlay, accel,
	handle, capabilities, created_at, updated_at, started_at`

func scanVM(sc scanner) (VM, error) {
	var v VM
	var imageID sql.NullString
	var created, updated, started int64
	err := sc.Scan(&v.ID, &v.Name, &v.State, &v.StateReason, &imageID, &v.VMM,
		&v.CPUs, &v.MemoryMiB, &v.DiskSizeMiB,
		&v.PendingCPUs, &v.PendingMemoryMiB, &v.PendingDiskSizeMiB,
		&v.IP, &v.MAC, &v.TAP, &v.Overlay, &v.Accel,
		&v.Handle, &v.Capabilities, &created, &updated, &started)
	v.ImageID = imageID.String
	v.CreatedAt, v.UpdatedAt, v.StartedAt = fromNanos(created), fromNanos(updated), fromNanos(started)
	return v, err
}

func (v *VM) args() []any {
	return []any{v.ID, v.Name, v.State, v.StateReason, nullString(v.ImageID), v.VMM,
		v.CPUs, v.MemoryMiB, v.DiskSizeMiB,
		v.PendingCPUs, v.PendingMemoryMiB, v.PendingDiskSizeMiB,
		v.IP, v.MAC, v.TAP, v.Overlay, v.Accel,
		nullBytes(v.Handle), nullBytes(v.Capabilities),
		toNanos(v.CreatedAt), toNanos(v.UpdatedAt), toNanos(v.StartedAt)}
}

func validateVM(v *VM) error {
	if v.Name == "" {
		return api.Errorf(api.KindInvalidName, "vm name is empty")
	}
	if v.State == "" {
		return api.Errorf(api.KindInvalidInput, "vm %q has no state", v.Name)
	}
	return nil
}

// CreateVM inserts v. An empty ID is generated; zero CreatedAt/UpdatedAt are
// set to now. Both are written back into v. A duplicate name or ID is
// ErrConflict; an ImageID that names no image is ErrNotFound.
func (s *Store) CreateVM(ctx context.Context, v *VM) error {
	if err := validateVM(v); err != nil {
		return err
	}
	rec := *v
	if rec.ID == "" {
		rec.ID = NewID()
	}
	now := s.nowUTC()
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = now
	}
	if rec.UpdatedAt.IsZero() {
		rec.UpdatedAt = rec.CreatedAt
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, rec.args()...)
	if err != nil {
		return s.vmWriteError("create", &rec, err)
	}
	*v = rec
	return nil
}

// vmWriteError maps a constraint failure of an insert or update of v.
func (s *Store) vmWriteError(verb string, v *VM, err error) error {
	switch {
	case isUniqueViolation(err):
		if strings.Contains(err.Error(), "vms.name") {
			return conflict("a vm named %q already exists", v.Name)
		}
		return conflict("a vm with id %q already exists", v.ID)
	case isForeignKeyViolation(err):
		return newError(ErrNotFound, api.NotFound("image", v.ImageID).
			WithHint("register or build the image first"))
	}
	return fmt.Errorf("%s vm %q: %w", verb, v.Name, err)
}

// GetVM returns the VM with exactly this ID.
func (s *Store) GetVM(ctx context.Context, id string) (VM, error) {
	v, err := scanVM(s.db.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, notFound("vm", id)
	}
	if err != nil {
		return VM{}, fmt.Errorf("get vm %s: %w", id, err)
	}
	return v, nil
}

// FindVM resolves ref as an exact name, an exact ID, else a unique ID prefix
// of at least 4 characters. It returns ErrAmbiguous or ErrNotFound.
func (s *Store) FindVM(ctx context.Context, ref string) (VM, error) {
	id, err := s.resolveID(ctx, "vms", "vm", ref, true)
	if err != nil {
		return VM{}, err
	}
	return s.GetVM(ctx, id)
}

// ListVMs returns VMs ordered by name, all of them when state is "", else
// only those in that state.
func (s *Store) ListVMs(ctx context.Context, state string) ([]VM, error) {
	q := `SELECT ` + vmColumns + ` FROM vms`
	var args []any
	if state != "" {
		q += ` WHERE state = ?`
		args = append(args, state)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	defer rows.Close()
	vms := []VM{}
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return nil, fmt.Errorf("list vms: %w", err)
		}
		vms = append(vms, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	return vms, nil
}

// UpdateVM overwrites every column of the VM with v.ID (CreatedAt included)
// and sets v.UpdatedAt to now. A taken name is ErrConflict, an unknown ID
// ErrNotFound.
func (s *Store) UpdateVM(ctx context.Context, v *VM) error {
	if err := validateVM(v); err != nil {
		return err
	}
	rec := *v
	rec.UpdatedAt = s.nowUTC()
	res, err := s.db.ExecContext(ctx, `UPDATE vms SET
		name = ?2, state = ?3, state_reason = ?4, image_id = ?5, vmm = ?6,
		cpus = ?7, memory_mib = ?8, disk_size_mib = ?9,
		pending_cpus = ?10, pending_memory_mib = ?11, pending_disk_size_mib = ?12,
		ip = ?13, mac = ?14, tap = ?15, overlay = ?16, accel = ?17,
		handle = ?18, capabilities = ?19, created_at = ?20, updated_at = ?21, started_at = ?22
		WHERE id = ?1`, rec.args()...)
	if err != nil {
		return s.vmWriteError("update", &rec, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update vm %q: %w", rec.Name, err)
	} else if n == 0 {
		return notFound("vm", rec.ID)
	}
	*v = rec
	return nil
}

// TransitionVM moves VM id to state to (with reason) only if its current
// state is one of from, atomically. Otherwise it returns ErrNotFound, or
// ErrStale together with the current record (its state is in the message). Only state, state_reason and
// updated_at change; other fields are the caller's to update.
func (s *Store) TransitionVM(ctx context.Context, id string, from []string, to, reason string) (VM, error) {
	if len(from) == 0 {
		return VM{}, fmt.Errorf("transition vm %s: no source states given", id)
	}
	args := []any{to, reason, toNanos(s.nowUTC()), id}
	marks := make([]string, len(from))
	for i, st := range from {
		marks[i] = "?"
		args = append(args, st)
	}
	row := s.db.QueryRowContext(ctx, `UPDATE vms SET state = ?, state_reason = ?, updated_at = ?
		WHERE id = ? AND state IN (`+strings.Join(marks, ",")+`) RETURNING `+vmColumns, args...)
	v, err := scanVM(row)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return VM{}, fmt.Errorf("transition vm %s to %s: %w", id, to, err)
	}
	cur, err := s.GetVM(ctx, id)
	if err != nil {
		return VM{}, err
	}
	return cur, newError(ErrStale, api.Errorf(api.KindConflict,
		"vm %q is %s, not %s: cannot move it to %s", cur.Name, cur.State, strings.Join(from, " or "), to))
}

// DeleteVM removes VM id; its IP allocation goes with it.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete vm %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete vm %s: %w", id, err)
	} else if n == 0 {
		return notFound("vm", id)
	}
	return nil
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Workspace is the record of a host repository copied into a VM. A VM has
// at most one; it goes when the VM is deleted.
type Workspace struct {
	VMID       string
	GuestPath  string
	HostRepo   string
	RepoName   string
	BaseCommit string
	Branch     string // host branch at push time; empty when detached
	PushedAt   time.Time
	LastExport time.Time // zero until the first export
	ExportedTo string    // branch or patch file of the last export
	ExportHead string    // guest commit of the last export
}

const workspaceColumns = `vm_id, guest_path, host_repo, repo_name, base_commit, branch, pushed_at,
	last_export, exported_to, export_head`

// PutWorkspace records a push, replacing the VM's previous workspace
// record (and with it the export history).
func (s *Store) PutWorkspace(ctx context.Context, w *Workspace) error {
	if w.VMID == "" || w.GuestPath == "" || w.BaseCommit == "" {
		return errors.New("put workspace: vm id, guest path and base commit are required")
	}
	if w.PushedAt.IsZero() {
		w.PushedAt = s.nowUTC()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO workspaces(`+workspaceColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(vm_id) DO UPDATE SET guest_path = excluded.guest_path, host_repo = excluded.host_repo,
			repo_name = excluded.repo_name, base_commit = excluded.base_commit, branch = excluded.branch,
			pushed_at = excluded.pushed_at, last_export = excluded.last_export,
			exported_to = excluded.exported_to, export_head = excluded.export_head`,
		w.VMID, w.GuestPath, w.HostRepo, w.RepoName, w.BaseCommit, w.Branch, toNanos(w.PushedAt),
		toNanos(w.LastExport), w.ExportedTo, w.ExportHead)
	if isForeignKeyViolation(err) {
		return notFound("vm", w.VMID)
	}
	if err != nil {
		return fmt.Errorf("put workspace of vm %s: %w", w.VMID, err)
	}
	return nil
}

// GetWorkspace returns the VM's workspace record, or ErrNotFound.
func (s *Store) GetWorkspace(ctx context.Context, vmID string) (Workspace, error) {
	var w Workspace
	var pushed, exported int64
	err := s.db.QueryRowContext(ctx, `SELECT `+workspaceColumns+` FROM workspaces WHERE vm_id = ?`, vmID).Scan(
		&w.VMID, &w.GuestPath, &w.HostRepo, &w.RepoName, &w.BaseCommit, &w.Branch, &pushed,
		&exported, &w.ExportedTo, &w.ExportHead)
	if errors.Is(err, sql.ErrNoRows) {
		return Workspace{}, notFound("workspace", vmID)
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("get workspace of vm %s: %w", vmID, err)
	}
	w.PushedAt, w.LastExport = fromNanos(pushed), fromNanos(exported)
	return w, nil
}

// RecordWorkspaceExport notes an export of the VM's workspace.
func (s *Store) RecordWorkspaceExport(ctx context.Context, vmID, to, head string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE workspaces SET last_export = ?, exported_to = ?, export_head = ? WHERE vm_id = ?`,
		toNanos(at), to, head, vmID)
	if err != nil {
		return fmt.Errorf("record export of workspace of vm %s: %w", vmID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("workspace", vmID)
	}
	return nil
}

package daemon

import (
	"context"

	"github.com/banger-dev/banger/internal/api"
)

// SessionService is what the daemon needs of guest sessions and auth sync
// (internal/session).
type SessionService interface {
	Start(ctx context.Context, p api.SessionStartParams) (api.Session, error)
	List(ctx context.Context, p api.VMRef) (api.SessionListResult, error)
	Show(ctx context.Context, p api.SessionRef) (api.Session, error)
	Send(ctx context.Context, p api.SessionSendParams) (api.Empty, error)
	Signal(ctx context.Context, p api.SessionSignalParams) (api.Session, error)
	Stop(ctx context.Context, p api.SessionStopParams) (api.Session, error)
	Kill(ctx context.Context, p api.SessionRef) (api.Session, error)
	Remove(ctx context.Context, p api.SessionRef) (api.Empty, error)
	Logs(ctx context.Context, p api.SessionLogsParams) (api.SessionLogsResult, error)
	SyncAuth(ctx context.Context, p api.VMSyncAuthParams) (api.VMSyncAuthResult, error)
}

// WorkspaceService is what the daemon needs of workspaces (internal/workspace).
type WorkspaceService interface {
	Push(ctx context.Context, p api.WorkspacePushParams) (api.WorkspaceStatus, error)
	Export(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error)
	Status(ctx context.Context, p api.VMRef) (api.WorkspaceStatus, error)
}

func unavailable(what string) error {
	return api.Errorf(api.KindUnavailable, "%s are not available in this daemon", what)
}

func (h *handler) VMPause(ctx context.Context, p api.VMRef) (api.VM, error) {
	return h.vms.Pause(ctx, p)
}
func (h *handler) VMResume(ctx context.Context, p api.VMRef) (api.VM, error) {
	return h.vms.Resume(ctx, p)
}

func (h *handler) VMSyncAuth(ctx context.Context, p api.VMSyncAuthParams) (api.VMSyncAuthResult, error) {
	if h.sessions == nil {
		return api.VMSyncAuthResult{}, unavailable("auth sync")
	}
	return h.sessions.SyncAuth(ctx, p)
}

func (h *handler) SessionStart(ctx context.Context, p api.SessionStartParams) (api.Session, error) {
	if h.sessions == nil {
		return api.Session{}, unavailable("sessions")
	}
	return h.sessions.Start(ctx, p)
}
func (h *handler) SessionList(ctx context.Context, p api.VMRef) (api.SessionListResult, error) {
	if h.sessions == nil {
		return api.SessionListResult{}, unavailable("sessions")
	}
	return h.sessions.List(ctx, p)
}
func (h *handler) SessionShow(ctx context.Context, p api.SessionRef) (api.Session, error) {
	if h.sessions == nil {
		return api.Session{}, unavailable("sessions")
	}
	return h.sessions.Show(ctx, p)
}
func (h *handler) SessionSend(ctx context.Context, p api.SessionSendParams) (api.Empty, error) {
	if h.sessions == nil {
		return api.Empty{}, unavailable("sessions")
	}
	return h.sessions.Send(ctx, p)
}
func (h *handler) SessionSignal(ctx context.Context, p api.SessionSignalParams) (api.Session, error) {
	if h.sessions == nil {
		return api.Session{}, unavailable("sessions")
	}
	return h.sessions.Signal(ctx, p)
}
func (h *handler) SessionStop(ctx context.Context, p api.SessionStopParams) (api.Session, error) {
	if h.sessions == nil {
		return api.Session{}, unavailable("sessions")
	}
	return h.sessions.Stop(ctx, p)
}
func (h *handler) SessionKill(ctx context.Context, p api.SessionRef) (api.Session, error) {
	if h.sessions == nil {
		return api.Session{}, unavailable("sessions")
	}
	return h.sessions.Kill(ctx, p)
}
func (h *handler) SessionRemove(ctx context.Context, p api.SessionRef) (api.Empty, error) {
	if h.sessions == nil {
		return api.Empty{}, unavailable("sessions")
	}
	return h.sessions.Remove(ctx, p)
}
func (h *handler) SessionLogs(ctx context.Context, p api.SessionLogsParams) (api.SessionLogsResult, error) {
	if h.sessions == nil {
		return api.SessionLogsResult{}, unavailable("sessions")
	}
	return h.sessions.Logs(ctx, p)
}

func (h *handler) WorkspacePush(ctx context.Context, p api.WorkspacePushParams) (api.WorkspaceStatus, error) {
	if h.workspaces == nil {
		return api.WorkspaceStatus{}, unavailable("workspaces")
	}
	return h.workspaces.Push(ctx, p)
}
func (h *handler) WorkspaceExport(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	if h.workspaces == nil {
		return api.WorkspaceExportResult{}, unavailable("workspaces")
	}
	return h.workspaces.Export(ctx, p)
}
func (h *handler) WorkspaceStatus(ctx context.Context, p api.VMRef) (api.WorkspaceStatus, error) {
	if h.workspaces == nil {
		return api.WorkspaceStatus{}, unavailable("workspaces")
	}
	return h.workspaces.Status(ctx, p)
}

func (h *handler) ImagePromote(ctx context.Context, p api.ImagePromoteParams) (api.Operation, error) {
	return wireOp(h.images.Promote(ctx, p))
}

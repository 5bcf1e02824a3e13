// Package client is the typed client of the banger daemon: one method per
// method of api.Service, each a call over the daemon's Unix socket.
package client

import (
	"context"
	"errors"
	"os"
	"syscall"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/rpc"
)

// SocketEnv names the environment variable that overrides the socket path.
const SocketEnv = "BANGER_SOCKET"

// startHint is what users should do when no daemon answers.
const startHint = "start it with: sudo banger daemon (or `make up` in a checkout)"

// Client is safe for concurrent use.
type Client struct {
	rpc *rpc.Client
}

var _ api.Service = (*Client)(nil)

// SocketPath picks the daemon socket: the flag value if set, else
// $BANGER_SOCKET, else the system default.
func SocketPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv(SocketEnv); env != "" {
		return env
	}
	return paths.DefaultSocket
}

// Dial connects to the daemon at socketPath. When no daemon is there, the
// error is an *api.Error of kind unavailable that says how to start one.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	c, err := rpc.Dial(ctx, socketPath)
	if err != nil {
		return nil, dialError(ctx, socketPath, err)
	}
	return &Client{rpc: c}, nil
}

func dialError(ctx context.Context, socketPath string, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return api.Errorf(api.KindUnavailable, "the banger daemon is not running: nothing answers on %s", socketPath).
			WithHint(startHint)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return api.Errorf(api.KindUnavailable, "permission denied connecting to the banger daemon at %s", socketPath).
			WithHint("run banger with sudo, or point --socket / " + SocketEnv + " at a daemon you may use")
	default:
		return api.Errorf(api.KindUnavailable, "cannot connect to the banger daemon at %s: %v", socketPath, err).
			WithHint(startHint)
	}
}

// Close closes the connection; calls in progress fail.
func (c *Client) Close() error { return c.rpc.Close() }

// call sends one request; nil params send no params member.
func call[R any](ctx context.Context, c *Client, method string, params any) (R, error) {
	var result R
	err := c.rpc.Call(ctx, method, params, &result)
	return result, err
}

func (c *Client) DaemonVersion(ctx context.Context) (api.VersionInfo, error) {
	return call[api.VersionInfo](ctx, c, api.MethodDaemonVersion, nil)
}

func (c *Client) DaemonPing(ctx context.Context) (api.Empty, error) {
	return call[api.Empty](ctx, c, api.MethodDaemonPing, nil)
}

func (c *Client) VMList(ctx context.Context, p api.VMListParams) (api.VMListResult, error) {
	return call[api.VMListResult](ctx, c, api.MethodVMList, p)
}

func (c *Client) VMShow(ctx context.Context, p api.VMRef) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMShow, p)
}

func (c *Client) VMCreate(ctx context.Context, p api.VMCreateParams) (api.Operation, error) {
	return call[api.Operation](ctx, c, api.MethodVMCreate, p)
}

func (c *Client) VMStart(ctx context.Context, p api.VMRef) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMStart, p)
}

func (c *Client) VMStop(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMStop, p)
}

func (c *Client) VMRestart(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMRestart, p)
}

func (c *Client) VMKill(ctx context.Context, p api.VMRef) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMKill, p)
}

func (c *Client) VMDelete(ctx context.Context, p api.VMDeleteParams) (api.Empty, error) {
	return call[api.Empty](ctx, c, api.MethodVMDelete, p)
}

func (c *Client) VMSet(ctx context.Context, p api.VMSetParams) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMSet, p)
}

func (c *Client) VMStats(ctx context.Context, p api.VMRef) (api.VMStats, error) {
	return call[api.VMStats](ctx, c, api.MethodVMStats, p)
}

func (c *Client) VMHealth(ctx context.Context, p api.VMRef) (api.VMHealth, error) {
	return call[api.VMHealth](ctx, c, api.MethodVMHealth, p)
}

func (c *Client) VMLogs(ctx context.Context, p api.VMLogsParams) (api.VMLogsResult, error) {
	return call[api.VMLogsResult](ctx, c, api.MethodVMLogs, p)
}

func (c *Client) VMExec(ctx context.Context, p api.VMExecParams) (api.VMExecResult, error) {
	return call[api.VMExecResult](ctx, c, api.MethodVMExec, p)
}

func (c *Client) VMSSHInfo(ctx context.Context, p api.VMRef) (api.SSHInfo, error) {
	return call[api.SSHInfo](ctx, c, api.MethodVMSSHInfo, p)
}

func (c *Client) ImageList(ctx context.Context) (api.ImageListResult, error) {
	return call[api.ImageListResult](ctx, c, api.MethodImageList, nil)
}

func (c *Client) ImageShow(ctx context.Context, p api.ImageRef) (api.Image, error) {
	return call[api.Image](ctx, c, api.MethodImageShow, p)
}

func (c *Client) ImageRegister(ctx context.Context, p api.ImageRegisterParams) (api.Image, error) {
	return call[api.Image](ctx, c, api.MethodImageRegister, p)
}

func (c *Client) ImageDelete(ctx context.Context, p api.ImageRef) (api.Empty, error) {
	return call[api.Empty](ctx, c, api.MethodImageDelete, p)
}

func (c *Client) ImageBuild(ctx context.Context, p api.ImageBuildParams) (api.Operation, error) {
	return call[api.Operation](ctx, c, api.MethodImageBuild, p)
}

func (c *Client) OpList(ctx context.Context, p api.OpListParams) (api.OpListResult, error) {
	return call[api.OpListResult](ctx, c, api.MethodOpList, p)
}

func (c *Client) OpStatus(ctx context.Context, p api.OpRef) (api.Operation, error) {
	return call[api.Operation](ctx, c, api.MethodOpStatus, p)
}

func (c *Client) OpWait(ctx context.Context, p api.OpWaitParams) (api.Operation, error) {
	return call[api.Operation](ctx, c, api.MethodOpWait, p)
}

func (c *Client) OpCancel(ctx context.Context, p api.OpRef) (api.Operation, error) {
	return call[api.Operation](ctx, c, api.MethodOpCancel, p)
}

func (c *Client) DoctorRun(ctx context.Context) (api.DoctorReport, error) {
	return call[api.DoctorReport](ctx, c, api.MethodDoctorRun, nil)
}

func (c *Client) VMPause(ctx context.Context, p api.VMRef) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMPause, p)
}

func (c *Client) VMResume(ctx context.Context, p api.VMRef) (api.VM, error) {
	return call[api.VM](ctx, c, api.MethodVMResume, p)
}

func (c *Client) VMSyncAuth(ctx context.Context, p api.VMSyncAuthParams) (api.VMSyncAuthResult, error) {
	return call[api.VMSyncAuthResult](ctx, c, api.MethodVMSyncAuth, p)
}

func (c *Client) SessionStart(ctx context.Context, p api.SessionStartParams) (api.Session, error) {
	return call[api.Session](ctx, c, api.MethodSessionStart, p)
}

func (c *Client) SessionList(ctx context.Context, p api.VMRef) (api.SessionListResult, error) {
	return call[api.SessionListResult](ctx, c, api.MethodSessionList, p)
}

func (c *Client) SessionShow(ctx context.Context, p api.SessionRef) (api.Session, error) {
	return call[api.Session](ctx, c, api.MethodSessionShow, p)
}

func (c *Client) SessionSend(ctx context.Context, p api.SessionSendParams) (api.Empty, error) {
	return call[api.Empty](ctx, c, api.MethodSessionSend, p)
}

func (c *Client) SessionSignal(ctx context.Context, p api.SessionSignalParams) (api.Session, error) {
	return call[api.Session](ctx, c, api.MethodSessionSignal, p)
}

func (c *Client) SessionStop(ctx context.Context, p api.SessionStopParams) (api.Session, error) {
	return call[api.Session](ctx, c, api.MethodSessionStop, p)
}

func (c *Client) SessionKill(ctx context.Context, p api.SessionRef) (api.Session, error) {
	return call[api.Session](ctx, c, api.MethodSessionKill, p)
}

func (c *Client) SessionRemove(ctx context.Context, p api.SessionRef) (api.Empty, error) {
	return call[api.Empty](ctx, c, api.MethodSessionRemove, p)
}

func (c *Client) SessionLogs(ctx context.Context, p api.SessionLogsParams) (api.SessionLogsResult, error) {
	return call[api.SessionLogsResult](ctx, c, api.MethodSessionLogs, p)
}

func (c *Client) WorkspacePush(ctx context.Context, p api.WorkspacePushParams) (api.WorkspaceStatus, error) {
	return call[api.WorkspaceStatus](ctx, c, api.MethodWorkspacePush, p)
}

func (c *Client) WorkspaceExport(ctx context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	return call[api.WorkspaceExportResult](ctx, c, api.MethodWorkspaceExport, p)
}

func (c *Client) WorkspaceStatus(ctx context.Context, p api.VMRef) (api.WorkspaceStatus, error) {
	return call[api.WorkspaceStatus](ctx, c, api.MethodWorkspaceStatus, p)
}

func (c *Client) ImagePromote(ctx context.Context, p api.ImagePromoteParams) (api.Operation, error) {
	return call[api.Operation](ctx, c, api.MethodImagePromote, p)
}

// Package apirpc binds an api.Service to an rpc.Server: one registration
// per api.Method* constant. The daemon registers its service with it, and
// the client tests register a fake, so both sides agree on every method
// name by construction.
package apirpc

import (
	"slices"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/rpc"
)

// methods lists every method Register registers, in api.go's order.
var methods = []string{
	api.MethodDaemonVersion,
	api.MethodDaemonPing,

	api.MethodVMList,
	api.MethodVMShow,
	api.MethodVMCreate,
	api.MethodVMStart,
	api.MethodVMStop,
	api.MethodVMRestart,
	api.MethodVMKill,
	api.MethodVMDelete,
	api.MethodVMSet,
	api.MethodVMStats,
	api.MethodVMHealth,
	api.MethodVMLogs,
	api.MethodVMExec,
	api.MethodVMSSHInfo,
	api.MethodVMPause,
	api.MethodVMResume,
	api.MethodVMSyncAuth,

	api.MethodSessionStart,
	api.MethodSessionList,
	api.MethodSessionShow,
	api.MethodSessionSend,
	api.MethodSessionSignal,
	api.MethodSessionStop,
	api.MethodSessionKill,
	api.MethodSessionRemove,
	api.MethodSessionLogs,

	api.MethodWorkspacePush,
	api.MethodWorkspaceExport,
	api.MethodWorkspaceStatus,

	api.MethodImageList,
	api.MethodImageShow,
	api.MethodImageRegister,
	api.MethodImageDelete,
	api.MethodImageBuild,
	api.MethodImagePromote,

	api.MethodOpList,
	api.MethodOpStatus,
	api.MethodOpWait,
	api.MethodOpCancel,

	api.MethodDoctorRun,
}

// Methods returns the name of every method of api.Service on the wire.
func Methods() []string { return slices.Clone(methods) }

// Register registers every method of svc on s.
func Register(s *rpc.Server, svc api.Service) {
	rpc.RegisterNoParams(s, api.MethodDaemonVersion, svc.DaemonVersion)
	rpc.RegisterNoParams(s, api.MethodDaemonPing, svc.DaemonPing)

	rpc.Register(s, api.MethodVMList, svc.VMList)
	rpc.Register(s, api.MethodVMShow, svc.VMShow)
	rpc.Register(s, api.MethodVMCreate, svc.VMCreate)
	rpc.Register(s, api.MethodVMStart, svc.VMStart)
	rpc.Register(s, api.MethodVMStop, svc.VMStop)
	rpc.Register(s, api.MethodVMRestart, svc.VMRestart)
	rpc.Register(s, api.MethodVMKill, svc.VMKill)
	rpc.Register(s, api.MethodVMDelete, svc.VMDelete)
	rpc.Register(s, api.MethodVMSet, svc.VMSet)
	rpc.Register(s, api.MethodVMStats, svc.VMStats)
	rpc.Register(s, api.MethodVMHealth, svc.VMHealth)
	rpc.Register(s, api.MethodVMLogs, svc.VMLogs)
	rpc.Register(s, api.MethodVMExec, svc.VMExec)
	rpc.Register(s, api.MethodVMSSHInfo, svc.VMSSHInfo)
	rpc.Register(s, api.MethodVMPause, svc.VMPause)
	rpc.Register(s, api.MethodVMResume, svc.VMResume)
	rpc.Register(s, api.MethodVMSyncAuth, svc.VMSyncAuth)

	rpc.Register(s, api.MethodSessionStart, svc.SessionStart)
	rpc.Register(s, api.MethodSessionList, svc.SessionList)
	rpc.Register(s, api.MethodSessionShow, svc.SessionShow)
	rpc.Register(s, api.MethodSessionSend, svc.SessionSend)
	rpc.Register(s, api.MethodSessionSignal, svc.SessionSignal)
	rpc.Register(s, api.MethodSessionStop, svc.SessionStop)
	rpc.Register(s, api.MethodSessionKill, svc.SessionKill)
	rpc.Register(s, api.MethodSessionRemove, svc.SessionRemove)
	rpc.Register(s, api.MethodSessionLogs, svc.SessionLogs)

	rpc.Register(s, api.MethodWorkspacePush, svc.WorkspacePush)
	rpc.Register(s, api.MethodWorkspaceExport, svc.WorkspaceExport)
	rpc.Register(s, api.MethodWorkspaceStatus, svc.WorkspaceStatus)

	rpc.RegisterNoParams(s, api.MethodImageList, svc.ImageList)
	rpc.Register(s, api.MethodImageShow, svc.ImageShow)
	rpc.Register(s, api.MethodImageRegister, svc.ImageRegister)
	rpc.Register(s, api.MethodImageDelete, svc.ImageDelete)
	rpc.Register(s, api.MethodImageBuild, svc.ImageBuild)
	rpc.Register(s, api.MethodImagePromote, svc.ImagePromote)

	rpc.Register(s, api.MethodOpList, svc.OpList)
	rpc.Register(s, api.MethodOpStatus, svc.OpStatus)
	rpc.Register(s, api.MethodOpWait, svc.OpWait)
	rpc.Register(s, api.MethodOpCancel, svc.OpCancel)

	rpc.RegisterNoParams(s, api.MethodDoctorRun, svc.DoctorRun)
}

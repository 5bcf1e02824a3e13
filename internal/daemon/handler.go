package daemon

import (
	"context"
	"os"
	"runtime"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/doctor"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/vm"
	"github.com/banger-dev/banger/internal/vmm"
)

// handler maps each RPC method onto the service that owns it. It holds no
// logic of its own beyond converting operation snapshots to wire form.
type handler struct {
	version   string
	startedAt time.Time
	stateDir  string
	drivers   map[string]vmm.Driver
	vms       *vm.Service
	images    *image.Service
	ops       *opService
	doctor    *doctor.Checker
	// sessions and workspaces are nil when their subsystem is not wired.
	sessions   SessionService
	workspaces WorkspaceService
}

var _ api.Service = (*handler)(nil)

func (h *handler) DaemonVersion(ctx context.Context) (api.VersionInfo, error) {
	info := api.VersionInfo{Version: h.version, GoVersion: runtime.Version(), PID: os.Getpid(),
		StartedAt: h.startedAt, StateDir: h.stateDir, Backends: []api.Backend{}}
	for _, name := range []string{"qemu", "firecracker", "fake"} {
		d, ok := h.drivers[name]
		if !ok {
			if name != "fake" {
				info.Backends = append(info.Backends, api.Backend{Name: name, Reason: "not available on this host (see banger doctor)"})
			}
			continue
		}
		b := api.Backend{Name: name, Available: true}
		if err := d.Available(ctx); err != nil {
			b.Available, b.Reason = false, err.Error()
		}
		if a, ok := d.(interface{ AccelInfo() (string, string) }); ok {
			b.Accel, _ = a.AccelInfo()
		}
		info.Backends = append(info.Backends, b)
	}
	return info, nil
}

func (h *handler) DaemonPing(context.Context) (api.Empty, error) { return api.Empty{}, nil }

func (h *handler) VMList(ctx context.Context, p api.VMListParams) (api.VMListResult, error) {
	return h.vms.List(ctx, p)
}
func (h *handler) VMShow(ctx context.Context, p api.VMRef) (api.VM, error) { return h.vms.Show(ctx, p) }
func (h *handler) VMCreate(ctx context.Context, p api.VMCreateParams) (api.Operation, error) {
	return wireOp(h.vms.Create(ctx, p))
}
func (h *handler) VMStart(ctx context.Context, p api.VMRef) (api.VM, error) {
	return h.vms.Start(ctx, p)
}
func (h *handler) VMStop(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	return h.vms.Stop(ctx, p)
}
func (h *handler) VMRestart(ctx context.Context, p api.VMStopParams) (api.VM, error) {
	return h.vms.Restart(ctx, p)
}
func (h *handler) VMKill(ctx context.Context, p api.VMRef) (api.VM, error) { return h.vms.Kill(ctx, p) }
func (h *handler) VMDelete(ctx context.Context, p api.VMDeleteParams) (api.Empty, error) {
	return h.vms.Delete(ctx, p)
}
func (h *handler) VMSet(ctx context.Context, p api.VMSetParams) (api.VM, error) {
	return h.vms.Set(ctx, p)
}
func (h *handler) VMStats(ctx context.Context, p api.VMRef) (api.VMStats, error) {
	return h.vms.Stats(ctx, p)
}
func (h *handler) VMHealth(ctx context.Context, p api.VMRef) (api.VMHealth, error) {
	return h.vms.Health(ctx, p)
}
func (h *handler) VMLogs(ctx context.Context, p api.VMLogsParams) (api.VMLogsResult, error) {
	return h.vms.Logs(ctx, p)
}
func (h *handler) VMExec(ctx context.Context, p api.VMExecParams) (api.VMExecResult, error) {
	return h.vms.Exec(ctx, p)
}
func (h *handler) VMSSHInfo(ctx context.Context, p api.VMRef) (api.SSHInfo, error) {
	return h.vms.SSHInfo(ctx, p)
}

func (h *handler) ImageList(ctx context.Context) (api.ImageListResult, error) {
	return h.images.List(ctx)
}
func (h *handler) ImageShow(ctx context.Context, p api.ImageRef) (api.Image, error) {
	return h.images.Show(ctx, p)
}
func (h *handler) ImageRegister(ctx context.Context, p api.ImageRegisterParams) (api.Image, error) {
	return h.images.Register(ctx, p)
}
func (h *handler) ImageDelete(ctx context.Context, p api.ImageRef) (api.Empty, error) {
	return h.images.Delete(ctx, p)
}
func (h *handler) ImageBuild(ctx context.Context, p api.ImageBuildParams) (api.Operation, error) {
	return wireOp(h.images.Build(ctx, p))
}

func (h *handler) OpList(ctx context.Context, p api.OpListParams) (api.OpListResult, error) {
	return h.ops.List(ctx, p)
}
func (h *handler) OpStatus(ctx context.Context, p api.OpRef) (api.Operation, error) {
	return h.ops.Status(ctx, p)
}
func (h *handler) OpWait(ctx context.Context, p api.OpWaitParams) (api.Operation, error) {
	return h.ops.Wait(ctx, p)
}
func (h *handler) OpCancel(ctx context.Context, p api.OpRef) (api.Operation, error) {
	return h.ops.Cancel(ctx, p)
}

func (h *handler) DoctorRun(ctx context.Context) (api.DoctorReport, error) {
	return h.doctor.Run(ctx), nil
}

func wireOp(s opstate.Snapshot, err error) (api.Operation, error) {
	if err != nil {
		return api.Operation{}, err
	}
	return snapToWire(s), nil
}

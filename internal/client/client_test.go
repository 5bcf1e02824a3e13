package client

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/api/apirpc"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/rpc"
)

// fakeService answers every api.Service method with a canned value and
// records which Go method ran with which params.
type fakeService struct {
	mu    sync.Mutex
	calls []fakeCall
}

type fakeCall struct {
	method string
	params any
}

func record[R any](f *fakeService, method string, params any, result R) (R, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{method, params})
	return result, nil
}

func (f *fakeService) takeCalls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	calls := f.calls
	f.calls = nil
	return calls
}

var (
	when          = time.Date(2026, 11, 28, 10, 30, 0, 0, time.UTC)
	sampleSession = api.Session{VM: "s", Name: "build", State: api.SessionExited, ExitCode: intPtr(3), Argv: []string{"make"}, PTY: true, LogBytes: 42}
	sampleVM      = api.VM{ID: "vm-1", Name: "web", State: api.VMRunning, Image: "debian", CPUs: 2, MemoryMiB: 1024,
		Pending: &api.VMSpec{CPUs: 4}, CreatedAt: when, StartedAt: when, Warnings: []string{"w"}}
	sampleOp = api.Operation{ID: "op-1", Kind: "vm.create", Target: "web", State: api.OpRunning, Stage: "disk",
		Progress: 0.5, Result: map[string]any{"vm": "vm-1"}, CreatedAt: when, UpdatedAt: when}
	sampleImage = api.Image{ID: "img-1", Name: "debian", Kernel: "/k", RootFS: "/r", SizeBytes: 1 << 30,
		Managed: true, CreatedAt: when, UsedBy: []string{"web"}}
	sampleVersion = api.VersionInfo{Version: "1.2.3", GoVersion: "go1.26", PID: 42, StartedAt: when,
		Backends: []api.Backend{{Name: "qemu", Available: true, Accel: "tcg"}}}
	sampleDoctor = api.DoctorReport{Checks: []api.Check{{Name: "kvm", Status: api.CheckWarn, Message: "pvm", Fix: "use tcg"}}}
)

func (f *fakeService) DaemonVersion(context.Context) (api.VersionInfo, error) {
	return record(f, "DaemonVersion", nil, sampleVersion)
}
func (f *fakeService) DaemonPing(context.Context) (api.Empty, error) {
	return record(f, "DaemonPing", nil, api.Empty{})
}
func (f *fakeService) VMList(_ context.Context, p api.VMListParams) (api.VMListResult, error) {
	return record(f, "VMList", p, api.VMListResult{VMs: []api.VM{sampleVM}})
}
func (f *fakeService) VMShow(_ context.Context, p api.VMRef) (api.VM, error) {
	return record(f, "VMShow", p, sampleVM)
}
func (f *fakeService) VMCreate(_ context.Context, p api.VMCreateParams) (api.Operation, error) {
	return record(f, "VMCreate", p, sampleOp)
}
func (f *fakeService) VMStart(_ context.Context, p api.VMRef) (api.VM, error) {
	return record(f, "VMStart", p, sampleVM)
}
func (f *fakeService) VMStop(_ context.Context, p api.VMStopParams) (api.VM, error) {
	return record(f, "VMStop", p, sampleVM)
}
func (f *fakeService) VMRestart(_ context.Context, p api.VMStopParams) (api.VM, error) {
	return record(f, "VMRestart", p, sampleVM)
}
func (f *fakeService) VMKill(_ context.Context, p api.VMRef) (api.VM, error) {
	return record(f, "VMKill", p, sampleVM)
}
func (f *fakeService) VMDelete(_ context.Context, p api.VMDeleteParams) (api.Empty, error) {
	return record(f, "VMDelete", p, api.Empty{})
}
func (f *fakeService) VMSet(_ context.Context, p api.VMSetParams) (api.VM, error) {
	return record(f, "VMSet", p, sampleVM)
}
func (f *fakeService) VMStats(_ context.Context, p api.VMRef) (api.VMStats, error) {
	return record(f, "VMStats", p, api.VMStats{VM: "web", State: api.VMRunning, CPUPercent: 12.5, RSSBytes: 1 << 20})
}
func (f *fakeService) VMHealth(_ context.Context, p api.VMRef) (api.VMHealth, error) {
	return record(f, "VMHealth", p, api.VMHealth{VM: "web", Reachable: true, LatencyMS: 3.25})
}
func (f *fakeService) VMLogs(_ context.Context, p api.VMLogsParams) (api.VMLogsResult, error) {
	return record(f, "VMLogs", p, api.VMLogsResult{Path: "/x/serial.log", Data: "boot <ok> & done\n"})
}
func (f *fakeService) VMExec(_ context.Context, p api.VMExecParams) (api.VMExecResult, error) {
	return record(f, "VMExec", p, api.VMExecResult{ExitCode: 3, Stdout: "out", Stderr: "err"})
}
func (f *fakeService) VMSSHInfo(_ context.Context, p api.VMRef) (api.SSHInfo, error) {
	return record(f, "VMSSHInfo", p, api.SSHInfo{VM: "web", Host: "10.0.0.2", Port: 22, User: "root"})
}
func (f *fakeService) VMPause(_ context.Context, p api.VMRef) (api.VM, error) {
	return record(f, "VMPause", p, sampleVM)
}
func (f *fakeService) VMResume(_ context.Context, p api.VMRef) (api.VM, error) {
	return record(f, "VMResume", p, sampleVM)
}
func (f *fakeService) VMSyncAuth(_ context.Context, p api.VMSyncAuthParams) (api.VMSyncAuthResult, error) {
	return record(f, "VMSyncAuth", p, api.VMSyncAuthResult{Files: []string{"/home/banger/.gitconfig"}})
}
func (f *fakeService) SessionStart(_ context.Context, p api.SessionStartParams) (api.Session, error) {
	return record(f, "SessionStart", p, sampleSession)
}
func (f *fakeService) SessionList(_ context.Context, p api.VMRef) (api.SessionListResult, error) {
	return record(f, "SessionList", p, api.SessionListResult{Sessions: []api.Session{sampleSession}})
}
func (f *fakeService) SessionShow(_ context.Context, p api.SessionRef) (api.Session, error) {
	return record(f, "SessionShow", p, sampleSession)
}
func (f *fakeService) SessionSend(_ context.Context, p api.SessionSendParams) (api.Empty, error) {
	return record(f, "SessionSend", p, api.Empty{})
}
func (f *fakeService) SessionSignal(_ context.Context, p api.SessionSignalParams) (api.Session, error) {
	return record(f, "SessionSignal", p, sampleSession)
}
func (f *fakeService) SessionStop(_ context.Context, p api.SessionStopParams) (api.Session, error) {
	return record(f, "SessionStop", p, sampleSession)
}
func (f *fakeService) SessionKill(_ context.Context, p api.SessionRef) (api.Session, error) {
	return record(f, "SessionKill", p, sampleSession)
}
func (f *fakeService) SessionRemove(_ context.Context, p api.SessionRef) (api.Empty, error) {
	return record(f, "SessionRemove", p, api.Empty{})
}
func (f *fakeService) SessionLogs(_ context.Context, p api.SessionLogsParams) (api.SessionLogsResult, error) {
	return record(f, "SessionLogs", p, api.SessionLogsResult{Data: []byte("tail\n"), Offset: 90, Next: 95, Size: 95})
}
func (f *fakeService) WorkspacePush(_ context.Context, p api.WorkspacePushParams) (api.WorkspaceStatus, error) {
	return record(f, "WorkspacePush", p, api.WorkspaceStatus{VM: "w", GuestPath: "/home/banger/work/r", BaseCommit: "abc", Changed: []string{}})
}
func (f *fakeService) WorkspaceExport(_ context.Context, p api.WorkspaceExportParams) (api.WorkspaceExportResult, error) {
	return record(f, "WorkspaceExport", p, api.WorkspaceExportResult{BaseCommit: "abc", HeadCommit: "def", Commits: 2, Files: []string{"a.go"}})
}
func (f *fakeService) WorkspaceStatus(_ context.Context, p api.VMRef) (api.WorkspaceStatus, error) {
	return record(f, "WorkspaceStatus", p, api.WorkspaceStatus{VM: "w", GuestPath: "/home/banger/work/r", Changed: []string{"x"}})
}
func (f *fakeService) ImagePromote(_ context.Context, p api.ImagePromoteParams) (api.Operation, error) {
	return record(f, "ImagePromote", p, sampleOp)
}
func (f *fakeService) ImageList(context.Context) (api.ImageListResult, error) {
	return record(f, "ImageList", nil, api.ImageListResult{Images: []api.Image{sampleImage}})
}
func (f *fakeService) ImageShow(_ context.Context, p api.ImageRef) (api.Image, error) {
	return record(f, "ImageShow", p, sampleImage)
}
func (f *fakeService) ImageRegister(_ context.Context, p api.ImageRegisterParams) (api.Image, error) {
	return record(f, "ImageRegister", p, sampleImage)
}
func (f *fakeService) ImageDelete(_ context.Context, p api.ImageRef) (api.Empty, error) {
	return record(f, "ImageDelete", p, api.Empty{})
}
func (f *fakeService) ImageBuild(_ context.Context, p api.ImageBuildParams) (api.Operation, error) {
	return record(f, "ImageBuild", p, sampleOp)
}
func (f *fakeService) OpList(_ context.Context, p api.OpListParams) (api.OpListResult, error) {
	return record(f, "OpList", p, api.OpListResult{Ops: []api.Operation{sampleOp}})
}
func (f *fakeService) OpStatus(_ context.Context, p api.OpRef) (api.Operation, error) {
	return record(f, "OpStatus", p, sampleOp)
}
func (f *fakeService) OpWait(_ context.Context, p api.OpWaitParams) (api.Operation, error) {
	return record(f, "OpWait", p, sampleOp)
}
func (f *fakeService) OpCancel(_ context.Context, p api.OpRef) (api.Operation, error) {
	return record(f, "OpCancel", p, sampleOp)
}
func (f *fakeService) DoctorRun(context.Context) (api.DoctorReport, error) {
	return record(f, "DoctorRun", nil, sampleDoctor)
}

// methodLog captures the "method" attribute of the server's debug log,
// which is the method name as it arrived on the wire.
type methodLog struct {
	mu      sync.Mutex
	methods []string
}

func (l *methodLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *methodLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *methodLog) WithGroup(string) slog.Handler            { return l }
func (l *methodLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "method" {
			l.mu.Lock()
			l.methods = append(l.methods, a.Value.String())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *methodLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.methods
	l.methods = nil
	return m
}

func socketDir(t *testing.T) string {
	// Unix socket paths are limited to 108 bytes; t.TempDir can exceed it.
	dir, err := os.MkdirTemp("", "bgcl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func intPtr(n int) *int { return &n }

func TestEveryMethodRoundTrips(t *testing.T) {
	fake := &fakeService{}
	wire := &methodLog{}
	server := rpc.NewServer(rpc.ServerOptions{Logger: slog.New(wire)})
	apirpc.Register(server, fake)
	if got, want := server.Methods(), apirpc.Methods(); !slices.Equal(got, sorted(want)) {
		t.Fatalf("registered %v, want %v", got, want)
	}

	socket := filepath.Join(socketDir(t), "d.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- server.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-served })

	c, err := Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	cases := []struct {
		wire   string
		goName string
		params any // nil for methods without params
		call   func(context.Context, *Client) (any, error)
		want   any
	}{
		{api.MethodDaemonVersion, "DaemonVersion", nil,
			func(ctx context.Context, c *Client) (any, error) { return c.DaemonVersion(ctx) }, sampleVersion},
		{api.MethodDaemonPing, "DaemonPing", nil,
			func(ctx context.Context, c *Client) (any, error) { return c.DaemonPing(ctx) }, api.Empty{}},
		{api.MethodVMList, "VMList", api.VMListParams{State: api.VMRunning},
			func(ctx context.Context, c *Client) (any, error) {
				return c.VMList(ctx, api.VMListParams{State: api.VMRunning})
			}, api.VMListResult{VMs: []api.VM{sampleVM}}},
		{api.MethodVMShow, "VMShow", api.VMRef{VM: "web"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMShow(ctx, api.VMRef{VM: "web"}) }, sampleVM},
		{api.MethodVMCreate, "VMCreate", api.VMCreateParams{Name: "web", Image: "debian", CPUs: 2, NoStart: true},
			func(ctx context.Context, c *Client) (any, error) {
				return c.VMCreate(ctx, api.VMCreateParams{Name: "web", Image: "debian", CPUs: 2, NoStart: true})
			}, sampleOp},
		{api.MethodVMStart, "VMStart", api.VMRef{VM: "a"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMStart(ctx, api.VMRef{VM: "a"}) }, sampleVM},
		{api.MethodVMStop, "VMStop", api.VMStopParams{VM: "b", TimeoutSeconds: 5},
			func(ctx context.Context, c *Client) (any, error) {
				return c.VMStop(ctx, api.VMStopParams{VM: "b", TimeoutSeconds: 5})
			}, sampleVM},
		{api.MethodVMRestart, "VMRestart", api.VMStopParams{VM: "c"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMRestart(ctx, api.VMStopParams{VM: "c"}) }, sampleVM},
		{api.MethodVMKill, "VMKill", api.VMRef{VM: "d"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMKill(ctx, api.VMRef{VM: "d"}) }, sampleVM},
		{api.MethodVMDelete, "VMDelete", api.VMDeleteParams{VM: "e", Force: true},
			func(ctx context.Context, c *Client) (any, error) {
				return c.VMDelete(ctx, api.VMDeleteParams{VM: "e", Force: true})
			}, api.Empty{}},
		{api.MethodVMSet, "VMSet", api.VMSetParams{VM: "f", CPUs: intPtr(4)},
			func(ctx context.Context, c *Client) (any, error) {
				return c.VMSet(ctx, api.VMSetParams{VM: "f", CPUs: intPtr(4)})
			}, sampleVM},
		{api.MethodVMStats, "VMStats", api.VMRef{VM: "g"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMStats(ctx, api.VMRef{VM: "g"}) },
			api.VMStats{VM: "web", State: api.VMRunning, CPUPercent: 12.5, RSSBytes: 1 << 20}},
		{api.MethodVMHealth, "VMHealth", api.VMRef{VM: "h"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMHealth(ctx, api.VMRef{VM: "h"}) },
			api.VMHealth{VM: "web", Reachable: true, LatencyMS: 3.25}},
		{api.MethodVMLogs, "VMLogs", api.VMLogsParams{VM: "i", TailBytes: 100},
			func(ctx context.Context, c *Client) (any, error) {
				return c.VMLogs(ctx, api.VMLogsParams{VM: "i", TailBytes: 100})
			}, api.VMLogsResult{Path: "/x/serial.log", Data: "boot <ok> & done\n"}},
		{api.MethodVMExec, "VMExec", api.VMExecParams{VM: "j", Argv: []string{"sh", "-c", "echo $1"}, Stdin: "in"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.VMExec(ctx, api.VMExecParams{VM: "j", Argv: []string{"sh", "-c", "echo $1"}, Stdin: "in"})
			}, api.VMExecResult{ExitCode: 3, Stdout: "out", Stderr: "err"}},
		{api.MethodVMSSHInfo, "VMSSHInfo", api.VMRef{VM: "k"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMSSHInfo(ctx, api.VMRef{VM: "k"}) },
			api.SSHInfo{VM: "web", Host: "10.0.0.2", Port: 22, User: "root"}},
		{api.MethodImageList, "ImageList", nil,
			func(ctx context.Context, c *Client) (any, error) { return c.ImageList(ctx) },
			api.ImageListResult{Images: []api.Image{sampleImage}}},
		{api.MethodImageShow, "ImageShow", api.ImageRef{Image: "debian"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.ImageShow(ctx, api.ImageRef{Image: "debian"})
			},
			sampleImage},
		{api.MethodImageRegister, "ImageRegister", api.ImageRegisterParams{Name: "n", Kernel: "/k", RootFS: "/r", Copy: true},
			func(ctx context.Context, c *Client) (any, error) {
				return c.ImageRegister(ctx, api.ImageRegisterParams{Name: "n", Kernel: "/k", RootFS: "/r", Copy: true})
			}, sampleImage},
		{api.MethodImageDelete, "ImageDelete", api.ImageRef{Image: "old"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.ImageDelete(ctx, api.ImageRef{Image: "old"})
			},
			api.Empty{}},
		{api.MethodImageBuild, "ImageBuild", api.ImageBuildParams{Name: "deb", Force: true},
			func(ctx context.Context, c *Client) (any, error) {
				return c.ImageBuild(ctx, api.ImageBuildParams{Name: "deb", Force: true})
			}, sampleOp},
		{api.MethodOpList, "OpList", api.OpListParams{All: true},
			func(ctx context.Context, c *Client) (any, error) { return c.OpList(ctx, api.OpListParams{All: true}) },
			api.OpListResult{Ops: []api.Operation{sampleOp}}},
		{api.MethodOpStatus, "OpStatus", api.OpRef{Op: "op-1"},
			func(ctx context.Context, c *Client) (any, error) { return c.OpStatus(ctx, api.OpRef{Op: "op-1"}) }, sampleOp},
		{api.MethodOpWait, "OpWait", api.OpWaitParams{Op: "op-1", TimeoutSeconds: 9, AfterUpdate: when},
			func(ctx context.Context, c *Client) (any, error) {
				return c.OpWait(ctx, api.OpWaitParams{Op: "op-1", TimeoutSeconds: 9, AfterUpdate: when})
			}, sampleOp},
		{api.MethodOpCancel, "OpCancel", api.OpRef{Op: "op-2"},
			func(ctx context.Context, c *Client) (any, error) { return c.OpCancel(ctx, api.OpRef{Op: "op-2"}) }, sampleOp},
		{api.MethodVMPause, "VMPause", api.VMRef{VM: "p"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMPause(ctx, api.VMRef{VM: "p"}) }, sampleVM},
		{api.MethodVMResume, "VMResume", api.VMRef{VM: "q"},
			func(ctx context.Context, c *Client) (any, error) { return c.VMResume(ctx, api.VMRef{VM: "q"}) }, sampleVM},
		{api.MethodVMSyncAuth, "VMSyncAuth", api.VMSyncAuthParams{VM: "r", GitName: "Ada", AuthorizedKeys: []string{"ssh-ed25519 AAAA"}},
			func(ctx context.Context, c *Client) (any, error) {
				return c.VMSyncAuth(ctx, api.VMSyncAuthParams{VM: "r", GitName: "Ada", AuthorizedKeys: []string{"ssh-ed25519 AAAA"}})
			}, api.VMSyncAuthResult{Files: []string{"/home/banger/.gitconfig"}}},
		{api.MethodSessionStart, "SessionStart", api.SessionStartParams{VM: "s", Name: "build", Env: []string{"A=1"}, PTY: true, Argv: []string{"make", "-j2"}},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SessionStart(ctx, api.SessionStartParams{VM: "s", Name: "build", Env: []string{"A=1"}, PTY: true, Argv: []string{"make", "-j2"}})
			}, sampleSession},
		{api.MethodSessionList, "SessionList", api.VMRef{VM: "s"},
			func(ctx context.Context, c *Client) (any, error) { return c.SessionList(ctx, api.VMRef{VM: "s"}) }, api.SessionListResult{Sessions: []api.Session{sampleSession}}},
		{api.MethodSessionShow, "SessionShow", api.SessionRef{VM: "s", Session: "build"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SessionShow(ctx, api.SessionRef{VM: "s", Session: "build"})
			}, sampleSession},
		{api.MethodSessionSend, "SessionSend", api.SessionSendParams{VM: "s", Session: "build", Data: []byte{0, 1, 0xff, '\n'}},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SessionSend(ctx, api.SessionSendParams{VM: "s", Session: "build", Data: []byte{0, 1, 0xff, '\n'}})
			}, api.Empty{}},
		{api.MethodSessionSignal, "SessionSignal", api.SessionSignalParams{VM: "s", Session: "build", Signal: "USR1"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SessionSignal(ctx, api.SessionSignalParams{VM: "s", Session: "build", Signal: "USR1"})
			}, sampleSession},
		{api.MethodSessionStop, "SessionStop", api.SessionStopParams{VM: "s", Session: "build", TimeoutSeconds: 3},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SessionStop(ctx, api.SessionStopParams{VM: "s", Session: "build", TimeoutSeconds: 3})
			}, sampleSession},
		{api.MethodSessionKill, "SessionKill", api.SessionRef{VM: "s", Session: "k"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SessionKill(ctx, api.SessionRef{VM: "s", Session: "k"})
			}, sampleSession},
		{api.MethodSessionRemove, "SessionRemove", api.SessionRef{VM: "s", Session: "old"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SessionRemove(ctx, api.SessionRef{VM: "s", Session: "old"})
			}, api.Empty{}},
		{api.MethodSessionLogs, "SessionLogs", api.SessionLogsParams{VM: "s", Session: "build", Offset: -1, TailBytes: 10},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SessionLogs(ctx, api.SessionLogsParams{VM: "s", Session: "build", Offset: -1, TailBytes: 10})
			}, api.SessionLogsResult{Data: []byte("tail\n"), Offset: 90, Next: 95, Size: 95}},
		{api.MethodWorkspacePush, "WorkspacePush", api.WorkspacePushParams{VM: "w", ArchivePath: "/tmp/a.tar", RepoName: "r", BaseCommit: "abc"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.WorkspacePush(ctx, api.WorkspacePushParams{VM: "w", ArchivePath: "/tmp/a.tar", RepoName: "r", BaseCommit: "abc"})
			}, api.WorkspaceStatus{VM: "w", GuestPath: "/home/banger/work/r", BaseCommit: "abc", Changed: []string{}}},
		{api.MethodWorkspaceExport, "WorkspaceExport", api.WorkspaceExportParams{VM: "w", BundlePath: "/tmp/b.bundle", Message: "agent work"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.WorkspaceExport(ctx, api.WorkspaceExportParams{VM: "w", BundlePath: "/tmp/b.bundle", Message: "agent work"})
			}, api.WorkspaceExportResult{BaseCommit: "abc", HeadCommit: "def", Commits: 2, Files: []string{"a.go"}}},
		{api.MethodWorkspaceStatus, "WorkspaceStatus", api.VMRef{VM: "w"},
			func(ctx context.Context, c *Client) (any, error) { return c.WorkspaceStatus(ctx, api.VMRef{VM: "w"}) }, api.WorkspaceStatus{VM: "w", GuestPath: "/home/banger/work/r", Changed: []string{"x"}}},
		{api.MethodImagePromote, "ImagePromote", api.ImagePromoteParams{VM: "v", Name: "tooling"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.ImagePromote(ctx, api.ImagePromoteParams{VM: "v", Name: "tooling"})
			}, sampleOp},
		{api.MethodDoctorRun, "DoctorRun", nil,
			func(ctx context.Context, c *Client) (any, error) { return c.DoctorRun(ctx) }, sampleDoctor},
	}

	var covered []string
	for _, tc := range cases {
		covered = append(covered, tc.wire)
		t.Run(tc.wire, func(t *testing.T) {
			got, err := tc.call(ctx, c)
			if err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if sent := wire.take(); len(sent) != 1 || sent[0] != tc.wire {
				t.Errorf("wire method = %v, want %s", sent, tc.wire)
			}
			calls := fake.takeCalls()
			if len(calls) != 1 || calls[0].method != tc.goName {
				t.Fatalf("service calls = %+v, want one call of %s", calls, tc.goName)
			}
			if jsonOf(t, calls[0].params) != jsonOf(t, tc.params) {
				t.Errorf("params arrived as %s, sent %s", jsonOf(t, calls[0].params), jsonOf(t, tc.params))
			}
			if jsonOf(t, got) != jsonOf(t, tc.want) {
				t.Errorf("result = %s\nwant %s", jsonOf(t, got), jsonOf(t, tc.want))
			}
		})
	}
	if !slices.Equal(sorted(covered), sorted(apirpc.Methods())) {
		t.Errorf("the table covers %v, apirpc.Methods() is %v", sorted(covered), sorted(apirpc.Methods()))
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestErrorsKeepTheirKind(t *testing.T) {
	server := rpc.NewServer(rpc.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	rpc.Register(server, api.MethodVMShow, func(_ context.Context, p api.VMRef) (api.VM, error) {
		return api.VM{}, api.NotFound("vm", p.VM).WithHint("see: banger vm list")
	})
	socket := filepath.Join(socketDir(t), "e.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- server.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-served })

	c, err := Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.VMShow(ctx, api.VMRef{VM: "ghost"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Kind() != api.KindNotFound || ae.Data.ID != "ghost" || ae.Data.Hint != "see: banger vm list" {
		t.Fatalf("VMShow error = %#v", err)
	}
}

func TestDialWithoutDaemon(t *testing.T) {
	dir := socketDir(t)

	// A socket file nobody listens on: connection refused.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	for name, socket := range map[string]string{"absent": filepath.Join(dir, "none.sock"), "refused": stale} {
		t.Run(name, func(t *testing.T) {
			_, err := Dial(context.Background(), socket)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Kind() != api.KindUnavailable {
				t.Fatalf("Dial = %v, want an unavailable api.Error", err)
			}
			if !strings.Contains(ae.Message, socket) {
				t.Errorf("message %q does not name the socket", ae.Message)
			}
			if !strings.Contains(ae.Data.Hint, "sudo banger daemon") {
				t.Errorf("hint %q does not say how to start the daemon", ae.Data.Hint)
			}
		})
	}
}

func TestSocketPath(t *testing.T) {
	t.Setenv(SocketEnv, "")
	if got := SocketPath(""); got != paths.DefaultSocket {
		t.Errorf("default = %q", got)
	}
	t.Setenv(SocketEnv, "/env.sock")
	if got := SocketPath(""); got != "/env.sock" {
		t.Errorf("env = %q", got)
	}
	if got := SocketPath("/flag.sock"); got != "/flag.sock" {
		t.Errorf("flag = %q", got)
	}
}

// Package api is banger's wire contract: JSON-RPC method names, the params
// and result types of every method, and banger's error codes.
//
// It imports nothing else of banger's. Both sides of the socket are checked
// against the Service interface at compile time: the daemon's RPC handler
// and the typed client in internal/client each implement it.
package api

import (
	"context"
	"time"
)

// Method names, always "noun.verb".
const (
	MethodDaemonVersion = "daemon.version"
	MethodDaemonPing    = "daemon.ping"

	MethodVMList    = "vm.list"
	MethodVMShow    = "vm.show"
	MethodVMCreate  = "vm.create"
	MethodVMStart   = "vm.start"
	MethodVMStop    = "vm.stop"
	MethodVMRestart = "vm.restart"
	MethodVMKill    = "vm.kill"
	MethodVMDelete  = "vm.delete"
	MethodVMSet     = "vm.set"
	MethodVMStats   = "vm.stats"
	MethodVMHealth  = "vm.health"
	MethodVMLogs    = "vm.logs"
	MethodVMExec    = "vm.exec"
	MethodVMSSHInfo = "vm.ssh_info"
	MethodVMPause   = "vm.pause"
	MethodVMResume  = "vm.resume"

	MethodImageList     = "image.list"
	MethodImageShow     = "image.show"
	MethodImageRegister = "image.register"
	MethodImageDelete   = "image.delete"
	MethodImageBuild    = "image.build"
	MethodImagePromote  = "image.promote"

	MethodOpList   = "op.list"
	MethodOpStatus = "op.status"
	MethodOpWait   = "op.wait"
	MethodOpCancel = "op.cancel"

	MethodDoctorRun = "doctor.run"
)

// Service is the whole RPC surface. internal/daemon serves it and
// internal/client calls it; both assert `var _ api.Service = ...`.
type Service interface {
	DaemonVersion(ctx context.Context) (VersionInfo, error)
	DaemonPing(ctx context.Context) (Empty, error)

	VMList(ctx context.Context, p VMListParams) (VMListResult, error)
	VMShow(ctx context.Context, p VMRef) (VM, error)
	VMCreate(ctx context.Context, p VMCreateParams) (Operation, error)
	VMStart(ctx context.Context, p VMRef) (VM, error)
	VMStop(ctx context.Context, p VMStopParams) (VM, error)
	VMRestart(ctx context.Context, p VMStopParams) (VM, error)
	VMKill(ctx context.Context, p VMRef) (VM, error)
	VMDelete(ctx context.Context, p VMDeleteParams) (Empty, error)
	VMSet(ctx context.Context, p VMSetParams) (VM, error)
	VMStats(ctx context.Context, p VMRef) (VMStats, error)
	VMHealth(ctx context.Context, p VMRef) (VMHealth, error)
	VMLogs(ctx context.Context, p VMLogsParams) (VMLogsResult, error)
	VMExec(ctx context.Context, p VMExecParams) (VMExecResult, error)
	VMSSHInfo(ctx context.Context, p VMRef) (SSHInfo, error)
	VMPause(ctx context.Context, p VMRef) (VM, error)
	VMResume(ctx context.Context, p VMRef) (VM, error)
	VMSyncAuth(ctx context.Context, p VMSyncAuthParams) (VMSyncAuthResult, error)

	SessionStart(ctx context.Context, p SessionStartParams) (Session, error)
	SessionList(ctx context.Context, p VMRef) (SessionListResult, error)
	SessionShow(ctx context.Context, p SessionRef) (Session, error)
	SessionSend(ctx context.Context, p SessionSendParams) (Empty, error)
	SessionSignal(ctx context.Context, p SessionSignalParams) (Session, error)
	SessionStop(ctx context.Context, p SessionStopParams) (Session, error)
	SessionKill(ctx context.Context, p SessionRef) (Session, error)
	SessionRemove(ctx context.Context, p SessionRef) (Empty, error)
	SessionLogs(ctx context.Context, p SessionLogsParams) (SessionLogsResult, error)

	WorkspacePush(ctx context.Context, p WorkspacePushParams) (WorkspaceStatus, error)
	WorkspaceExport(ctx context.Context, p WorkspaceExportParams) (WorkspaceExportResult, error)
	WorkspaceStatus(ctx context.Context, p VMRef) (WorkspaceStatus, error)

	ImageList(ctx context.Context) (ImageListResult, error)
	ImageShow(ctx context.Context, p ImageRef) (Image, error)
	ImageRegister(ctx context.Context, p ImageRegisterParams) (Image, error)
	ImageDelete(ctx context.Context, p ImageRef) (Empty, error)
	ImageBuild(ctx context.Context, p ImageBuildParams) (Operation, error)
	ImagePromote(ctx context.Context, p ImagePromoteParams) (Operation, error)

	OpList(ctx context.Context, p OpListParams) (OpListResult, error)
	OpStatus(ctx context.Context, p OpRef) (Operation, error)
	OpWait(ctx context.Context, p OpWaitParams) (Operation, error)
	OpCancel(ctx context.Context, p OpRef) (Operation, error)

	DoctorRun(ctx context.Context) (DoctorReport, error)
}

// Empty is the result (or params) of methods that carry nothing.
type Empty struct{}

// VersionInfo describes the running daemon.
type VersionInfo struct {
	Version   string    `json:"version"`
	Commit    string    `json:"commit,omitempty"`
	GoVersion string    `json:"go_version"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	StateDir  string    `json:"state_dir"`
	Backends  []Backend `json:"backends"`
}

// Backend reports whether one VMM backend can be used on this host.
type Backend struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	Accel     string `json:"accel,omitempty"`
}

// VMState is a VM's lifecycle state. The legal transitions live in
// internal/vm; the wire carries the name.
type VMState string

const (
	VMCreating VMState = "creating"
	VMStopped  VMState = "stopped"
	VMStarting VMState = "starting"
	VMRunning  VMState = "running"
	VMPaused   VMState = "paused"
	VMStopping VMState = "stopping"
	VMError    VMState = "error"
)

// VMRef names a VM by name or id (a unique id prefix is accepted).
type VMRef struct {
	VM string `json:"vm"`
}

// VM is the wire view of one VM.
type VM struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	State       VMState  `json:"state"`
	StateReason string   `json:"state_reason,omitempty"`
	Image       string   `json:"image"`
	ImageID     string   `json:"image_id"`
	VMM         string   `json:"vmm"`
	CPUs        int      `json:"cpus"`
	MemoryMiB   int      `json:"memory_mib"`
	DiskSizeMiB int      `json:"disk_size_mib"`
	IP          string   `json:"ip,omitempty"`
	MAC         string   `json:"mac,omitempty"`
	TAP         string   `json:"tap,omitempty"`
	PID         int      `json:"pid,omitempty"`
	Accel       string   `json:"accel,omitempty"`
	Overlay     string   `json:"overlay_strategy,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
	Pending     *VMSpec  `json:"pending,omitempty"`
	// Capabilities are the hooks enabled for the VM and their last outcome.
	Capabilities []CapabilityStatus `json:"capabilities,omitempty"`
	CreatedAt    time.Time          `json:"created_at"`
	StartedAt    time.Time          `json:"started_at,omitzero"`
	DNSName      string             `json:"dns_name,omitempty"`
}

// VMSpec is the resource set applied at next start when it differs from
// the running one.
type VMSpec struct {
	CPUs        int `json:"cpus,omitempty"`
	MemoryMiB   int `json:"memory_mib,omitempty"`
	DiskSizeMiB int `json:"disk_size_mib,omitempty"`
}

type VMListParams struct {
	State VMState `json:"state,omitempty"`
}

type VMListResult struct {
	VMs []VM `json:"vms"`
}

// VMCreateParams starts an asynchronous create. Zero values take the
// daemon's defaults.
type VMCreateParams struct {
	Name        string `json:"name"`
	Image       string `json:"image,omitempty"`
	VMM         string `json:"vmm,omitempty"`
	CPUs        int    `json:"cpus,omitempty"`
	MemoryMiB   int    `json:"memory_mib,omitempty"`
	DiskSizeMiB int    `json:"disk_size_mib,omitempty"`
	Overlay     string `json:"overlay_strategy,omitempty"`
	NoStart     bool   `json:"no_start,omitempty"`
	// Capabilities enables start hooks by name (see banger vm create --help).
	Capabilities []string `json:"capabilities,omitempty"`
	// AuthorizedKeys and the git identity are synced into the guest.
	AuthorizedKeys []string `json:"authorized_keys,omitempty"`
	GitName        string   `json:"git_name,omitempty"`
	GitEmail       string   `json:"git_email,omitempty"`
}

type VMStopParams struct {
	VM string `json:"vm"`
	// TimeoutSeconds bounds the graceful phase before the VM is killed.
	// Zero means the daemon default.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

type VMDeleteParams struct {
	VM    string `json:"vm"`
	Force bool   `json:"force,omitempty"`
}

// VMSetParams changes resources. Nil fields are left as they are.
type VMSetParams struct {
	VM          string `json:"vm"`
	CPUs        *int   `json:"cpus,omitempty"`
	MemoryMiB   *int   `json:"memory_mib,omitempty"`
	DiskSizeMiB *int   `json:"disk_size_mib,omitempty"`
}

type VMStats struct {
	VM            string  `json:"vm"`
	State         VMState `json:"state"`
	PID           int     `json:"pid,omitempty"`
	CPUPercent    float64 `json:"cpu_percent"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	RSSBytes      int64   `json:"rss_bytes"`
	DiskBytes     int64   `json:"disk_bytes"`
	UptimeSeconds float64 `json:"uptime_seconds"`
}

type VMHealth struct {
	VM        string  `json:"vm"`
	Reachable bool    `json:"reachable"`
	LatencyMS float64 `json:"latency_ms,omitempty"`
	Error     string  `json:"error,omitempty"`
}

type VMLogsParams struct {
	VM string `json:"vm"`
	// TailBytes limits the result to the last N bytes; zero means 64 KiB.
	TailBytes int64 `json:"tail_bytes,omitempty"`
}

type VMLogsResult struct {
	Path string `json:"path"`
	Data string `json:"data"`
}

type VMExecParams struct {
	VM   string   `json:"vm"`
	Argv []string `json:"argv"`
	// Stdin is passed to the command verbatim.
	Stdin          string `json:"stdin,omitempty"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
}

type VMExecResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// SSHInfo is what a client needs to reach a VM with plain OpenSSH.
type SSHInfo struct {
	VM             string `json:"vm"`
	Host           string `json:"host"`
	Port           int    `json:"port"`
	User           string `json:"user"`
	IdentityFile   string `json:"identity_file"`
	KnownHostsFile string `json:"known_hosts_file"`
	HostKeyAlias   string `json:"host_key_alias"`
}

// Image is the wire view of a registered image.
type Image struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Kernel      string    `json:"kernel"`
	KernelRaw   string    `json:"kernel_raw,omitempty"`
	Initrd      string    `json:"initrd,omitempty"`
	RootFS      string    `json:"rootfs"`
	WorkSeed    string    `json:"work_seed,omitempty"`
	KernelArgs  string    `json:"kernel_args,omitempty"`
	SizeBytes   int64     `json:"size_bytes"`
	Managed     bool      `json:"managed"`
	Recipe      string    `json:"recipe,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UsedBy      []string  `json:"used_by,omitempty"`
	Description string    `json:"description,omitempty"`
	// Parent is the image this one was built from or promoted out of.
	Parent             string         `json:"parent,omitempty"`
	Scripts            []ScriptDigest `json:"scripts,omitempty"`
	Children           []string       `json:"children,omitempty"`
	DiskBytes          int64          `json:"disk_bytes,omitempty"`
	HostKeyFingerprint string         `json:"host_key_fingerprint,omitempty"`
}

// ScriptDigest records a provisioning script an image was built with.
type ScriptDigest struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// ProvisionScript is run as root in the build VM, in order.
type ProvisionScript struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// FileCopy copies a host file (Src, read by the daemon) into the build VM.
type FileCopy struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// ImagePromoteParams turns a stopped VM's system disk into a new image.
type ImagePromoteParams struct {
	VM   string `json:"vm"`
	Name string `json:"name"`
}

// ImageRef names an image by name or id (a unique id prefix is accepted).
type ImageRef struct {
	Image string `json:"image"`
}

type ImageListResult struct {
	Images []Image `json:"images"`
}

type ImageRegisterParams struct {
	Name   string `json:"name"`
	Kernel string `json:"kernel"`
	// KernelRaw is the uncompressed vmlinux Firecracker needs.
	KernelRaw  string `json:"kernel_raw,omitempty"`
	Initrd     string `json:"initrd,omitempty"`
	RootFS     string `json:"rootfs"`
	WorkSeed   string `json:"work_seed,omitempty"`
	KernelArgs string `json:"kernel_args,omitempty"`
	// Copy copies the files into the daemon's state dir instead of
	// referencing them in place.
	Copy bool `json:"copy,omitempty"`
}

type ImageBuildParams struct {
	Name string `json:"name"`
	// Recipe selects a built-in recipe; empty means "default".
	Recipe string `json:"recipe,omitempty"`
	// Force rebuilds even when the recipe's cache is current.
	Force bool `json:"force,omitempty"`
	// From builds on an existing image through a transient build VM
	// instead of a recipe; Provision, Files and SizeMiB apply to it.
	From      string            `json:"from,omitempty"`
	Provision []ProvisionScript `json:"provision,omitempty"`
	Files     []FileCopy        `json:"files,omitempty"`
	SizeMiB   int               `json:"size_mib,omitempty"`
}

// OpState is an operation's lifecycle state.
type OpState string

const (
	OpRunning   OpState = "running"
	OpSucceeded OpState = "succeeded"
	OpFailed    OpState = "failed"
	OpCancelled OpState = "cancelled"
)

// Terminal reports whether the state is final.
func (s OpState) Terminal() bool { return s != OpRunning }

// Operation is an asynchronous operation: VM create, image build.
type Operation struct {
	ID         string         `json:"id"`
	Kind       string         `json:"kind"`
	Target     string         `json:"target"`
	State      OpState        `json:"state"`
	Stage      string         `json:"stage,omitempty"`
	Stages     []string       `json:"stages,omitempty"`
	Progress   float64        `json:"progress"`
	Error      string         `json:"error,omitempty"`
	Result     map[string]any `json:"result,omitempty"`
	LogTail    []string       `json:"log_tail,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
	FinishedAt time.Time      `json:"finished_at,omitzero"`
}

type OpRef struct {
	Op string `json:"op"`
}

type OpListParams struct {
	All bool `json:"all,omitempty"`
}

type OpListResult struct {
	Ops []Operation `json:"ops"`
}

type OpWaitParams struct {
	Op string `json:"op"`
	// TimeoutSeconds bounds the wait; zero waits until the op ends or
	// the call is cancelled. A wait that times out returns the current
	// snapshot, not an error.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
	// AfterUpdate returns as soon as the op changes after this time, so
	// clients can long-poll for progress.
	AfterUpdate time.Time `json:"after_update,omitzero"`
}

// CheckStatus is the outcome of one doctor check.
type CheckStatus string

const (
	CheckOK   CheckStatus = "ok"
	CheckWarn CheckStatus = "warn"
	CheckFail CheckStatus = "fail"
)

type Check struct {
	Name    string      `json:"name"`
	Status  CheckStatus `json:"status"`
	Message string      `json:"message"`
	Fix     string      `json:"fix,omitempty"`
}

type DoctorReport struct {
	Checks []Check `json:"checks"`
}

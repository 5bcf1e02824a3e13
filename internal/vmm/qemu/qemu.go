// Package qemu is banger's QEMU backend: it boots MachineSpecs with
// `qemu-system-x86_64 -M microvm`, using KVM where the host's KVM can run
// ordinary guests and TCG emulation otherwise, and manages the process
// through QMP on a unix socket in the VM's run directory.
//
// QEMU runs in its own session so it outlives the daemon; after a daemon
// restart Adopt re-identifies it by pid, start time and command line.
package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm"
)

// DefaultBinary is the QEMU system emulator looked up on PATH.
const DefaultBinary = "qemu-system-x86_64"

// Options configure a Driver. The zero value is usable.
type Options struct {
	// Binary is the QEMU executable: a name looked up on PATH or a path.
	Binary string
	// ProbeKVM decides between KVM and TCG; vmm.ProbeKVM by default.
	ProbeKVM func() vmm.KVMProbe
	// HostTSCkHz gives tsc_early_khz= for TCG guests; vmm.HostTSCkHz by
	// default. An error just leaves the parameter out.
	HostTSCkHz func() (int, error)
	// Logger receives diagnostics; slog.Default() when nil.
	Logger *slog.Logger
}

// Driver implements vmm.Driver with QEMU.
type Driver struct {
	binary     string
	probeKVM   func() vmm.KVMProbe
	hostTSCkHz func() (int, error)
	log        *slog.Logger

	accelOnce    sync.Once
	accel        string
	accelWarning string

	mu sync.Mutex
	// children are processes this Driver started and reaps; keyed by pid.
	children vmm.Children
	// qmpLocks serialise QMP sessions per socket: QEMU serves one client
	// at a time and a second one would just block.
	qmpLocks map[string]*sync.Mutex
}

// child is a QEMU process started by this Driver instance.
var _ vmm.Driver = (*Driver)(nil)

// New returns a QEMU driver.
func New(opts Options) *Driver {
	d := &Driver{
		binary:     opts.Binary,
		probeKVM:   opts.ProbeKVM,
		hostTSCkHz: opts.HostTSCkHz,
		log:        opts.Logger,
		qmpLocks:   map[string]*sync.Mutex{},
	}
	if d.binary == "" {
		d.binary = DefaultBinary
	}
	if d.probeKVM == nil {
		d.probeKVM = vmm.ProbeKVM
	}
	if d.hostTSCkHz == nil {
		d.hostTSCkHz = vmm.HostTSCkHz
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	return d
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "qemu" }

// Available reports whether the QEMU binary can be found.
func (d *Driver) Available(ctx context.Context) error {
	if _, err := exec.LookPath(d.binary); err != nil {
		return fmt.Errorf("%w: %s not found (install the qemu-system-x86 package or set the QEMU binary path): %v",
			vmm.ErrUnavailable, d.binary, err)
	}
	return nil
}

// AccelInfo returns the accelerator guests get ("kvm" or "tcg") and, for
// TCG, why KVM is not used, so the daemon can show it in `vm show` and
// doctor. The host is probed once per Driver.
func (d *Driver) AccelInfo() (accel, warning string) {
	d.accelOnce.Do(func() {
		p := d.probeKVM()
		if p.Usable {
			d.accel = AccelKVM
			return
		}
		d.accel = AccelTCG
		d.accelWarning = "guests run under TCG emulation (slow): " + p.Reason
	})
	return d.accel, d.accelWarning
}

// CommandLine returns the argv Start would run for spec, for diagnostics.
func (d *Driver) CommandLine(spec vmm.MachineSpec) []string {
	accel, _ := d.AccelInfo()
	return append([]string{d.binary}, buildArgs(spec, accel, d.tscKHz(accel))...)
}

func (d *Driver) tscKHz(accel string) int {
	if accel != AccelTCG {
		return 0
	}
	khz, err := d.hostTSCkHz()
	if err != nil {
		d.log.Warn("qemu: cannot read host TSC frequency; TCG guests calibrate it themselves", "err", err)
		return 0
	}
	return khz
}

// Start implements vmm.Driver. It returns once QMP answers and reports
// the machine running; it does not wait for the guest OS.
func (d *Driver) Start(ctx context.Context, spec vmm.MachineSpec) (vmm.Handle, error) {
	if err := validateSpec(spec); err != nil {
		return vmm.Handle{}, err
	}
	binPath, err := exec.LookPath(d.binary)
	if err != nil {
		return vmm.Handle{}, d.Available(ctx)
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return vmm.Handle{}, fmt.Errorf("qemu: create run directory: %w", err)
	}
	if pid, ok := d.runningFromPidFile(spec); ok {
		return vmm.Handle{}, api.Errorf(api.KindConflict, "qemu: VM %s already runs as pid %d", spec.ID, pid).
			WithHint("stop or kill the VM before starting it again")
	}
	// Leftovers of an earlier run would make QEMU fail or fool the
	// readiness check into talking to nothing.
	removeRunFiles(spec.RunDir)
	if spec.ConsoleLog != "" {
		// QEMU would create it world-readable; the console may show
		// secrets, so create it private first.
		f, err := os.OpenFile(spec.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return vmm.Handle{}, fmt.Errorf("qemu: create console log: %w", err)
		}
		f.Close()
	}
	stderrPath := filepath.Join(spec.RunDir, stderrName)
	stderr, err := os.OpenFile(stderrPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("qemu: create %s: %w", stderrPath, err)
	}
	defer stderr.Close()

	accel, _ := d.AccelInfo()
	// Not exec.CommandContext: the VM must outlive the request that
	// started it; cancellation during Start is handled below.
	cmd := exec.Command(binPath, buildArgs(spec, accel, d.tscKHz(accel))...)
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	cmd.Dir = spec.RunDir
	// A new session: signals to the daemon's process group or terminal
	// do not reach the VM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	c, err := d.children.Start(cmd)
	if err != nil {
		return vmm.Handle{}, fmt.Errorf("qemu: start %s: %w", binPath, err)
	}
	pid := c.PID

	fail := func(err error) (vmm.Handle, error) {
		cmd.Process.Kill()
		<-c.Done()
		removeRunFiles(spec.RunDir)
		return vmm.Handle{}, err
	}
	startTime, err := vmm.ProcessStartTime(pid)
	if err != nil {
		// Most likely QEMU already exited; give the reaper a moment to
		// say so, so the error carries QEMU's own message.
		select {
		case <-c.Done():
			return fail(exitError(c, stderrPath))
		case <-time.After(time.Second):
			return fail(fmt.Errorf("qemu: read start time of pid %d: %w", pid, err))
		}
	}
	d.children.Register(c, startTime)

	readyCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := d.waitReady(readyCtx, spec.RunDir, c, stderrPath); err != nil {
		return fail(err)
	}
	d.log.Debug("qemu: VM started", "vm", spec.ID, "pid", pid, "accel", accel)
	return vmm.Handle{
		PID:       pid,
		StartTime: startTime,
		RunDir:    spec.RunDir,
		Accel:     accel,
		StartedAt: time.Now().UTC(),
	}, nil
}

// readyTimeout bounds how long QEMU may take to answer QMP. It does not
// include the guest's boot, so it is generous even on a loaded host.
const readyTimeout = 30 * time.Second

// runningFromPidFile reports whether the pidfile in spec.RunDir names a
// live QEMU of this VM, which Start must not clobber.
func (d *Driver) runningFromPidFile(spec vmm.MachineSpec) (int, bool) {
	data, err := os.ReadFile(filepath.Join(spec.RunDir, pidFileName))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || !vmm.ProcessAlive(pid, 0) {
		return 0, false
	}
	argv, err := vmm.ProcessCmdline(pid)
	if err != nil || d.matchCmdline(argv, spec.ID) != nil {
		return 0, false
	}
	return pid, true
}

// waitReady polls the QMP socket until QEMU reports the machine running,
// the process exits, or ctx ends.
func (d *Driver) waitReady(ctx context.Context, runDir string, c *vmm.Child, stderrPath string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-c.Done():
			return exitError(c, stderrPath)
		case <-ctx.Done():
			err := fmt.Errorf("qemu: machine did not become ready: %w", ctx.Err())
			if lastErr != nil {
				err = fmt.Errorf("%w (last QMP error: %v)", err, lastErr)
			}
			return err
		case <-tick.C:
		}
		st, err := d.queryStatus(ctx, runDir)
		if err == nil && st.Running {
			return nil
		}
		lastErr = err
	}
}

// exitError describes an early exit with the tail of QEMU's stderr, which
// holds the reason ("could not open disk image ...").
func exitError(c *vmm.Child, stderrPath string) error {
	tail := stderrTail(stderrPath, 2048)
	if tail == "" {
		tail = "(no output)"
	}
	return fmt.Errorf("qemu exited during start (%v): %s", c.Err(), tail)
}

func stderrTail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(fi.Size()-max, 0)
	}
	buf := make([]byte, max)
	n, _ := f.Read(buf)
	return strings.TrimSpace(string(buf[:n]))
}

func removeRunFiles(runDir string) {
	for _, name := range []string{qmpSocketName, pidFileName} {
		if err := os.Remove(filepath.Join(runDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			slog.Warn("qemu: remove stale run file", "path", filepath.Join(runDir, name), "err", err)
		}
	}
}

// qmp runs fn in a QMP session with the VM's QEMU.
func (d *Driver) qmp(ctx context.Context, runDir string, fn func(*qmpClient) error) error {
	path := filepath.Join(runDir, qmpSocketName)
	d.mu.Lock()
	lock, ok := d.qmpLocks[path]
	if !ok {
		lock = &sync.Mutex{}
		d.qmpLocks[path] = lock
	}
	d.mu.Unlock()
	lock.Lock()
	defer lock.Unlock()
	c, err := dialQMP(ctx, path)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

func (d *Driver) queryStatus(ctx context.Context, runDir string) (vmm.Status, error) {
	var st vmm.Status
	err := d.qmp(ctx, runDir, func(c *qmpClient) error {
		raw, err := c.execute(ctx, "query-status", nil)
		if err != nil {
			return err
		}
		var r struct {
			Running bool   `json:"running"`
			Status  string `json:"status"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decode query-status reply: %w", err)
		}
		st.Running = r.Running
		st.Paused = r.Status == "paused"
		return nil
	})
	return st, err
}

// command runs one QMP command on a live process; if the process is gone
// it returns an error wrapping vmm.ErrNotRunning.
func (d *Driver) command(ctx context.Context, h vmm.Handle, name string) error {
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return notRunning(h)
	}
	err := d.qmp(ctx, h.RunDir, func(c *qmpClient) error {
		_, err := c.execute(ctx, name, nil)
		return err
	})
	if err != nil && !vmm.ProcessAlive(h.PID, h.StartTime) {
		return notRunning(h)
	}
	return err
}

func notRunning(h vmm.Handle) error {
	return fmt.Errorf("qemu pid %d: %w", h.PID, vmm.ErrNotRunning)
}

// ctrlAltDelete is the send-key argument for Ctrl-Alt-Del.
var ctrlAltDelete = map[string]any{"keys": []map[string]string{
	{"type": "qcode", "data": "ctrl"},
	{"type": "qcode", "data": "alt"},
	{"type": "qcode", "data": "delete"},
}}

// Shutdown presses the ACPI power button and Ctrl-Alt-Del, then waits for
// QEMU to exit (it runs with -no-reboot, so a guest power-off or reboot
// ends it). Both, because guests differ in which one they listen to: the
// power button needs systemd-logind (and so D-Bus), Ctrl-Alt-Del only
// PID 1.
func (d *Driver) Shutdown(ctx context.Context, h vmm.Handle) error {
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return nil
	}
	err := d.qmp(ctx, h.RunDir, func(c *qmpClient) error {
		if _, err := c.execute(ctx, "system_powerdown", nil); err != nil {
			return err
		}
		_, err := c.execute(ctx, "send-key", ctrlAltDelete)
		return err
	})
	if err != nil {
		if !vmm.ProcessAlive(h.PID, h.StartTime) {
			return nil
		}
		return fmt.Errorf("qemu: request guest power-off: %w", err)
	}
	if err := d.Wait(ctx, h); err != nil {
		return fmt.Errorf("qemu: guest did not power off: %w", err)
	}
	return nil
}

// Kill sends SIGKILL and waits until the process is gone. A process that
// is gone already is not an error.
func (d *Driver) Kill(ctx context.Context, h vmm.Handle) error {
	if err := vmm.SignalProcess(h.PID, h.StartTime, syscall.SIGKILL); err != nil && !errors.Is(err, vmm.ErrNotRunning) {
		return fmt.Errorf("qemu: kill: %w", err)
	}
	if err := d.Wait(ctx, h); err != nil {
		return fmt.Errorf("qemu: kill: %w", err)
	}
	removeRunFiles(h.RunDir)
	return nil
}

// Pause stops the vCPUs (QMP stop).
func (d *Driver) Pause(ctx context.Context, h vmm.Handle) error {
	if err := d.command(ctx, h, "stop"); err != nil {
		return fmt.Errorf("qemu: pause: %w", err)
	}
	return nil
}

// Resume restarts the vCPUs (QMP cont).
func (d *Driver) Resume(ctx context.Context, h vmm.Handle) error {
	if err := d.command(ctx, h, "cont"); err != nil {
		return fmt.Errorf("qemu: resume: %w", err)
	}
	return nil
}

// Status asks QEMU whether the vCPUs run. It returns an error wrapping
// vmm.ErrNotRunning when the process is gone.
func (d *Driver) Status(ctx context.Context, h vmm.Handle) (vmm.Status, error) {
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return vmm.Status{}, notRunning(h)
	}
	st, err := d.queryStatus(ctx, h.RunDir)
	if err != nil {
		if !vmm.ProcessAlive(h.PID, h.StartTime) {
			return vmm.Status{}, notRunning(h)
		}
		return vmm.Status{}, fmt.Errorf("qemu: status: %w", err)
	}
	return st, nil
}

// Wait blocks until the process exits or ctx ends. For processes this
// Driver started it also waits until they are reaped.
func (d *Driver) Wait(ctx context.Context, h vmm.Handle) error {
	return d.children.Wait(ctx, h, "qemu")
}

// Adopt checks that h still names the QEMU process of spec's VM and that
// its QMP socket answers.
func (d *Driver) Adopt(ctx context.Context, spec vmm.MachineSpec, h vmm.Handle) error {
	if h.PID <= 0 {
		return fmt.Errorf("qemu: handle has no pid: %w", vmm.ErrNotRunning)
	}
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return notRunning(h)
	}
	argv, err := vmm.ProcessCmdline(h.PID)
	if err != nil {
		return fmt.Errorf("qemu: adopt pid %d: %w", h.PID, err)
	}
	if err := d.matchCmdline(argv, spec.ID); err != nil {
		return fmt.Errorf("qemu: pid %d is not VM %s's QEMU (%v): %w", h.PID, spec.ID, err, vmm.ErrNotRunning)
	}
	if _, err := d.Status(ctx, h); err != nil {
		if errors.Is(err, vmm.ErrNotRunning) {
			return err
		}
		return api.Errorf(api.KindUnavailable, "qemu: VM %s (pid %d) runs but its QMP socket does not answer: %v", spec.ID, h.PID, err).
			WithHint("kill the VM and start it again")
	}
	return nil
}

// matchCmdline checks argv for the QEMU binary and the VM's -name tag.
func (d *Driver) matchCmdline(argv []string, vmID string) error {
	if len(argv) == 0 {
		return errors.New("empty command line")
	}
	if filepath.Base(argv[0]) != filepath.Base(d.binary) {
		return fmt.Errorf("runs %s, not %s", filepath.Base(argv[0]), filepath.Base(d.binary))
	}
	i := slices.Index(argv, "-name")
	if i < 0 || i+1 >= len(argv) {
		return errors.New("no -name argument")
	}
	tag := processTag(vmID)
	if name, _, _ := strings.Cut(argv[i+1], ","); name != tag {
		return fmt.Errorf("-name is %q, want %q", name, tag)
	}
	return nil
}

// Stats returns the QEMU process's CPU time and resident memory.
func (d *Driver) Stats(h vmm.Handle) (vmm.ProcessStats, error) {
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return vmm.ProcessStats{}, notRunning(h)
	}
	return vmm.ReadProcessStats(h.PID)
}

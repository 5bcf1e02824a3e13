package fakefc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/qemu"
)

// qemuGuest is the accepted configuration booted under QEMU.
type qemuGuest struct {
	runDir string
	cmd    *exec.Cmd
	done   chan struct{}
}

// guestSpec translates the accepted Firecracker configuration into the
// MachineSpec the QEMU backend boots. Like Firecracker, the root drive
// comes first (vda) and adds root=/dev/vda to the command line; the other
// drives follow in the order they were configured.
func guestSpec(m *machine, runDir string) vmm.MachineSpec {
	spec := vmm.MachineSpec{
		ID:        m.id,
		Name:      m.id,
		CPUs:      integer(m.machine, "vcpu_count"),
		MemoryMiB: integer(m.machine, "mem_size_mib"),
		// QEMU's microvm boots an uncompressed vmlinux through PVH.
		Kernel:     str(m.boot, "kernel_image_path"),
		Initrd:     str(m.boot, "initrd_path"),
		KernelArgs: str(m.boot, "boot_args"),
		RunDir:     runDir,
		// QEMU opens its own stdout, which is the fake's: the console
		// file the backend gave Firecracker.
		ConsoleLog: "/proc/self/fd/1",
	}
	var root []vmm.Drive
	var rest []vmm.Drive
	for _, d := range m.drives {
		drive := vmm.Drive{ID: str(d, "drive_id"), Path: str(d, "path_on_host"), ReadOnly: boolean(d, "is_read_only"), Format: "raw"}
		if boolean(d, "is_root_device") {
			root = append(root, drive)
			if !strings.Contains(" "+spec.KernelArgs, " root=") {
				mode := "rw"
				if drive.ReadOnly {
					mode = "ro"
				}
				spec.KernelArgs = strings.TrimSpace(spec.KernelArgs + " root=/dev/vda " + mode)
			}
		} else {
			rest = append(rest, drive)
		}
	}
	spec.Drives = append(root, rest...)
	for i, n := range m.nics {
		mac := str(n, "guest_mac")
		if mac == "" {
			mac = fmt.Sprintf("06:00:ac:10:00:%02x", i+2)
		}
		spec.NICs = append(spec.NICs, vmm.NIC{TAP: str(n, "host_dev_name"), MAC: mac})
	}
	return spec
}

// startQEMU boots the guest and waits until QEMU's QMP answers.
func startQEMU(m *machine) (*qemuGuest, error) {
	runDir := filepath.Join(filepath.Dir(m.apiSock), "fakefc-qemu")
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, err
	}
	spec := guestSpec(m, runDir)
	argv := qemu.New(qemu.Options{Binary: os.Getenv("FAKEFC_QEMU")}).CommandLine(spec)
	stderrPath := filepath.Join(runDir, "qemu.stderr")
	stderr, err := os.Create(stderrPath)
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	g := &qemuGuest{runDir: runDir, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig is tied to the thread that forks: keep this one for
		// QEMU's lifetime, so QEMU dies with the fake even on SIGKILL,
		// as a guest dies with its Firecracker.
		runtime.LockOSThread()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stdout, stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			close(g.done)
			return
		}
		g.cmd = cmd
		started <- nil
		_ = cmd.Wait()
		close(g.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := qemu.QMPCommand(ctx, qemu.QMPSocketPath(runDir), "query-status", nil); err == nil {
			return g, nil
		}
		select {
		case <-g.done:
			data, _ := os.ReadFile(stderrPath)
			return nil, fmt.Errorf("qemu exited: %s", strings.TrimSpace(string(data)))
		case <-ctx.Done():
			g.kill()
			return nil, fmt.Errorf("qemu did not answer QMP within 30s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (g *qemuGuest) qmp(command string, args any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := qemu.QMPCommand(ctx, qemu.QMPSocketPath(g.runDir), command, args)
	return err
}

func (g *qemuGuest) setPaused(paused bool) error {
	if paused {
		return g.qmp("stop", nil)
	}
	return g.qmp("cont", nil)
}

// ctrlAltDel presses Ctrl-Alt-Del on the guest's keyboard, as
// Firecracker's i8042 does.
func (g *qemuGuest) ctrlAltDel() error { return g.qmp("send-key", qemu.CtrlAltDeleteKeys()) }

func (g *qemuGuest) kill() {
	if g.cmd != nil && g.cmd.Process != nil {
		_ = g.cmd.Process.Kill()
	}
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
	}
}

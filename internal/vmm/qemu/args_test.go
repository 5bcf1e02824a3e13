package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func representativeSpec() vmm.MachineSpec {
	return vmm.MachineSpec{
		ID:         "vm-0123abcd",
		Name:       "dev",
		CPUs:       2,
		MemoryMiB:  1024,
		Kernel:     "/var/lib/banger/images/debian/vmlinuz",
		Initrd:     "/var/lib/banger/images/debian/initrd.img",
		KernelArgs: "console=ttyS0 root=/dev/vda rw",
		Drives: []vmm.Drive{
			{ID: "rootfs", Path: "/var/lib/banger/vms/vm-0123abcd/system.qcow2", Format: "qcow2"},
			{ID: "work", Path: "/var/lib/banger/vms/vm-0123abcd/work.ext4"},
			{ID: "config", Path: "/var/lib/banger/vms/vm-0123abcd/odd,name.img", Format: "raw", ReadOnly: true},
		},
		NICs:       []vmm.NIC{{TAP: "bgtap3", MAC: "02:42:ac:11:00:03"}},
		RunDir:     "/run/banger/vms/vm-0123abcd",
		ConsoleLog: "/var/lib/banger/vms/vm-0123abcd/console.log",
	}
}

// TestBuildArgsGolden pins the QEMU command line, one argument per line.
// Run `go test ./internal/vmm/qemu -run Golden -update` after an intended change.
func TestBuildArgsGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		accel  string
		tscKHz int
	}{
		{"argv-kvm.golden", AccelKVM, 2299998},
		{"argv-tcg.golden", AccelTCG, 2299998},
	} {
		t.Run(tc.accel, func(t *testing.T) {
			got := strings.Join(buildArgs(representativeSpec(), tc.accel, tc.tscKHz), "\n") + "\n"
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("argv differs from %s\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

func TestBuildArgsTSCParameter(t *testing.T) {
	spec := representativeSpec()
	appendArg := func(args []string) string {
		for i, a := range args {
			if a == "-append" {
				return args[i+1]
			}
		}
		return ""
	}
	if got := appendArg(buildArgs(spec, AccelTCG, 0)); strings.Contains(got, "tsc_early_khz") {
		t.Errorf("unknown TSC rate still added tsc_early_khz: %q", got)
	}
	spec.KernelArgs = "console=ttyS0 tsc_early_khz=1000"
	if got := appendArg(buildArgs(spec, AccelTCG, 2299998)); got != spec.KernelArgs {
		t.Errorf("caller's tsc_early_khz overridden: %q", got)
	}
	spec.KernelArgs = ""
	if got := appendArg(buildArgs(spec, AccelTCG, 5)); got != "tsc_early_khz=5" {
		t.Errorf("empty kernel args under TCG: %q", got)
	}
}

func TestValidateSpec(t *testing.T) {
	if err := validateSpec(representativeSpec()); err != nil {
		t.Fatalf("representative spec rejected: %v", err)
	}
	for name, mutate := range map[string]func(*vmm.MachineSpec){
		"id with comma":      func(s *vmm.MachineSpec) { s.ID = "a,b" },
		"empty id":           func(s *vmm.MachineSpec) { s.ID = "" },
		"no cpus":            func(s *vmm.MachineSpec) { s.CPUs = 0 },
		"no memory":          func(s *vmm.MachineSpec) { s.MemoryMiB = 0 },
		"no kernel":          func(s *vmm.MachineSpec) { s.Kernel = "" },
		"relative run dir":   func(s *vmm.MachineSpec) { s.RunDir = "run" },
		"bad drive format":   func(s *vmm.MachineSpec) { s.Drives[0].Format = "vmdk" },
		"duplicate drive":    func(s *vmm.MachineSpec) { s.Drives[1].ID = "rootfs" },
		"drive id with '='":  func(s *vmm.MachineSpec) { s.Drives[1].ID = "a=b" },
		"drive without path": func(s *vmm.MachineSpec) { s.Drives[1].Path = "" },
		"bad mac":            func(s *vmm.MachineSpec) { s.NICs[0].MAC = "02:42" },
		"tap with comma":     func(s *vmm.MachineSpec) { s.NICs[0].TAP = "tap0,script=/x" },
	} {
		spec := representativeSpec()
		mutate(&spec)
		err := validateSpec(spec)
		if !api.IsKind(err, api.KindInvalidInput) {
			t.Errorf("%s: err = %v, want invalid_input", name, err)
		}
	}
}

func TestMatchCmdline(t *testing.T) {
	d := New(Options{Binary: "/usr/bin/qemu-system-x86_64"})
	spec := representativeSpec()
	argv := append([]string{"qemu-system-x86_64"}, buildArgs(spec, AccelTCG, 0)...)
	if err := d.matchCmdline(argv, spec.ID); err != nil {
		t.Fatalf("own command line rejected: %v", err)
	}
	if err := d.matchCmdline(argv, "vm-other"); err == nil {
		t.Error("command line of another VM accepted")
	}
	if err := d.matchCmdline(argv, "vm-0123abc"); err == nil {
		t.Error("prefix of the VM id accepted")
	}
	other := append([]string{"/usr/bin/sleep"}, argv[1:]...)
	if err := d.matchCmdline(other, spec.ID); err == nil {
		t.Error("command line of another binary accepted")
	}
	if err := d.matchCmdline(nil, spec.ID); err == nil {
		t.Error("empty command line accepted")
	}
}

func TestAccelInfo(t *testing.T) {
	tcg := New(Options{ProbeKVM: func() vmm.KVMProbe {
		return vmm.KVMProbe{DevicePresent: true, PVM: true, Reason: "host KVM is kvm_pvm"}
	}})
	if accel, warn := tcg.AccelInfo(); accel != AccelTCG || !strings.Contains(warn, "kvm_pvm") {
		t.Errorf("PVM host: AccelInfo = %q, %q", accel, warn)
	}
	kvm := New(Options{ProbeKVM: func() vmm.KVMProbe { return vmm.KVMProbe{DevicePresent: true, Usable: true} }})
	if accel, warn := kvm.AccelInfo(); accel != AccelKVM || warn != "" {
		t.Errorf("KVM host: AccelInfo = %q, %q", accel, warn)
	}
}

func TestAvailable(t *testing.T) {
	d := New(Options{Binary: "/nonexistent/qemu-system-x86_64"})
	if err := d.Available(t.Context()); err == nil {
		t.Fatal("missing binary reported available")
	}
}

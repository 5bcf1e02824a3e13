package vmm

import (
	"fmt"
	"os"
)

// KVMProbe says whether hardware virtualisation can run ordinary guests.
type KVMProbe struct {
	DevicePresent bool
	// Usable is true when /dev/kvm opens and the host KVM is a normal
	// (VMX/SVM) implementation.
	Usable bool
	// PVM is true when the host's KVM is the paravirtualised kvm_pvm
	// module: it creates VMs, but ordinary guest kernels hang under it,
	// so banger must not use it (see HOST-NOTES).
	PVM    bool
	Reason string
}

// sysModuleDir is a variable so tests can point it at a fake tree.
var sysModuleDir = "/sys/module"

// kvmDevice is a variable so tests can point it elsewhere.
var kvmDevice = "/dev/kvm"

// ProbeKVM inspects /dev/kvm and the loaded KVM modules.
func ProbeKVM() KVMProbe {
	var p KVMProbe
	if _, err := os.Stat(kvmDevice); err != nil {
		p.Reason = fmt.Sprintf("%s is missing: load kvm_intel or kvm_amd, or enable nested virtualisation", kvmDevice)
		return p
	}
	p.DevicePresent = true
	if _, err := os.Stat(sysModuleDir + "/kvm_pvm"); err == nil {
		p.PVM = true
		p.Reason = "host KVM is kvm_pvm (paravirtualised): ordinary guest kernels hang under it, so guests run under TCG emulation"
		return p
	}
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		p.Reason = fmt.Sprintf("cannot open %s: %v", kvmDevice, err)
		return p
	}
	f.Close()
	p.Usable = true
	return p
}

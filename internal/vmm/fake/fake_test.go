package fake

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmtest"
)

var seq atomic.Int32

func TestContract(t *testing.T) {
	vmmtest.Run(t, vmmtest.Setup{
		NewDriver: func() vmm.Driver { return New() },
		Spec: func(t *testing.T) vmm.MachineSpec {
			dir := t.TempDir()
			return vmm.MachineSpec{ID: fmt.Sprintf("c0ffee%d", seq.Add(1)), Name: "contract", CPUs: 1, MemoryMiB: 128,
				RunDir: filepath.Join(dir, "run"), ConsoleLog: filepath.Join(dir, "console.log")}
		},
	})
}

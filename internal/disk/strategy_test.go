package disk

import (
	"os"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestParseStrategy(t *testing.T) {
	for _, s := range Strategies {
		got, err := ParseStrategy(string(s))
		if err != nil || got != s {
			t.Errorf("ParseStrategy(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "auto", "DM-SNAPSHOT", "qcow", "copy "} {
		if _, err := ParseStrategy(bad); !api.IsKind(err, api.KindInvalidInput) {
			t.Errorf("ParseStrategy(%q) error = %v, want invalid_input", bad, err)
		}
	}
}

func TestChoose(t *testing.T) {
	all := Host{HasDeviceMapper: true, HasQemuImg: true, HasReflink: true}
	none := Host{
		NoDeviceMapper: "no dm here",
		NoQemuImg:      "no qemu-img here",
		NoReflink:      "ext4 cannot reflink",
	}
	onlyQemuImg := none
	onlyQemuImg.HasQemuImg, onlyQemuImg.NoQemuImg = true, ""
	qemuImgReflink := onlyQemuImg
	qemuImgReflink.HasReflink, qemuImgReflink.NoReflink = true, ""

	tests := []struct {
		name     string
		host     Host
		vmm      string
		override string
		want     Strategy
		wantKind api.ErrorKind // "" means success
		wantMsg  string
	}{
		{"auto prefers dm", all, "firecracker", "", StrategyDMSnapshot, "", ""},
		{"auto keyword", all, "qemu", "auto", StrategyDMSnapshot, "", ""},
		{"auto qcow2 for qemu", qemuImgReflink, "qemu", "", StrategyQcow2, "", ""},
		{"auto no qcow2 for firecracker", qemuImgReflink, "firecracker", "", StrategyReflink, "", ""},
		{"auto qemu without qemu-img", func() Host { h := none; h.HasReflink = true; return h }(), "qemu", "", StrategyReflink, "", ""},
		{"auto copy last resort firecracker", onlyQemuImg, "firecracker", "", StrategyCopy, "", ""},
		{"auto copy last resort nothing", none, "qemu", "", StrategyCopy, "", ""},
		{"override copy over dm", all, "firecracker", "copy", StrategyCopy, "", ""},
		{"override reflink", all, "qemu", "reflink", StrategyReflink, "", ""},
		{"override qcow2 qemu", all, "qemu", "qcow2", StrategyQcow2, "", ""},
		{"override dm", all, "qemu", "dm-snapshot", StrategyDMSnapshot, "", ""},
		{"refuse dm without device-mapper", none, "qemu", "dm-snapshot", "", api.KindUnavailable, "no dm here"},
		{"refuse qcow2 with firecracker", all, "firecracker", "qcow2", "", api.KindInvalidInput, "needs the qemu VMM"},
		{"refuse qcow2 with fake vmm", all, "fake", "qcow2", "", api.KindInvalidInput, "needs the qemu VMM"},
		{"refuse qcow2 without qemu-img", none, "qemu", "qcow2", "", api.KindUnavailable, "no qemu-img here"},
		{"refuse reflink unsupported", none, "qemu", "reflink", "", api.KindUnavailable, "ext4 cannot reflink"},
		{"refuse reflink without reason", Host{}, "qemu", "reflink", "", api.KindUnavailable, "reason unknown"},
		{"refuse unknown strategy", all, "qemu", "zfs", "", api.KindInvalidInput, "unknown overlay strategy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Choose(tt.host, tt.vmm, tt.override)
			if tt.wantKind == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Choose = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if !api.IsKind(err, tt.wantKind) {
				t.Fatalf("Choose = %q, %v; want error of kind %s", got, err, tt.wantKind)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

// ProbeHost must agree with the facts it is built on.
func TestProbeHost(t *testing.T) {
	dir := t.TempDir()
	h := ProbeHost(dir)
	if !h.HasDeviceMapper && h.NoDeviceMapper == "" {
		t.Errorf("device-mapper unusable but no reason given")
	}
	if f, err := os.OpenFile(deviceMapperControl, os.O_RDWR, 0); err != nil {
		if h.HasDeviceMapper || !strings.Contains(h.NoDeviceMapper, deviceMapperControl) {
			t.Errorf("%s unusable (%v) but HasDeviceMapper=%v, reason %q", deviceMapperControl, err, h.HasDeviceMapper, h.NoDeviceMapper)
		}
	} else {
		f.Close()
	}
	if h.HasReflink != (ReflinkSupported(dir) == nil) {
		t.Errorf("HasReflink=%v disagrees with ReflinkSupported", h.HasReflink)
	}
	if !h.HasReflink && h.NoReflink == "" {
		t.Errorf("no reflink but no reason")
	}
	if left := dirEntries(t, dir); len(left) != 0 {
		t.Errorf("reflink probe left files behind: %v", left)
	}
}

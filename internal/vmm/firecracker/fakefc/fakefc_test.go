package fakefc

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type step struct {
	method, path, body string
	status             int
	fault              string // substring of fault_message
}

func run(t *testing.T, m *machine, steps []step) {
	t.Helper()
	for _, s := range steps {
		req := httptest.NewRequest(s.method, s.path, strings.NewReader(s.body))
		rec := httptest.NewRecorder()
		m.ServeHTTP(rec, req)
		if rec.Code != s.status {
			t.Fatalf("%s %s %s: status %d, want %d (%s)", s.method, s.path, s.body, rec.Code, s.status, rec.Body.String())
		}
		if s.fault != "" {
			var f struct {
				FaultMessage string `json:"fault_message"`
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &f)
			if !strings.Contains(f.FaultMessage, s.fault) {
				t.Fatalf("%s %s: fault_message %q, want it to contain %q", s.method, s.path, f.FaultMessage, s.fault)
			}
		}
	}
}

func newTestMachine(t *testing.T) (*machine, string) {
	dir := t.TempDir()
	for _, f := range []string{"vmlinux", "rootfs", "log"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return newMachine("vm1", DefaultVersion, filepath.Join(dir, "api.sock"), io.Discard, io.Discard), dir
}

func TestStrictBodies(t *testing.T) {
	m, dir := newTestMachine(t)
	run(t, m, []step{
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"ht_enabled":false}`, 400, "unknown field `ht_enabled`"},
		{"PUT", "/machine-config", `{"vcpu_count":1}`, 400, "missing field `mem_size_mib`"},
		{"PUT", "/machine-config", `{"vcpu_count":"1","mem_size_mib":128}`, 400, "invalid type for field `vcpu_count`"},
		{"PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":128}`, 400, "vCPU number is invalid"},
		{"PUT", "/boot-source", `{"kernel_image_path":"/nonexistent"}`, 400, "kernel file cannot be opened"},
		{"PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"` + dir + `/rootfs","is_read_only":false}`, 400, "missing field `is_root_device`"},
		{"PUT", "/drives/rootfs", `{"drive_id":"other","path_on_host":"` + dir + `/rootfs","is_root_device":true,"is_read_only":false}`, 400, "does not match the id from the body"},
		{"PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"` + dir + `/rootfs","is_root_device":true,"is_read_only":false,"format":"qcow2"}`, 400, "unknown field `format`"},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0"}`, 400, "missing field `host_dev_name`"},
		{"PUT", "/actions", `{"action_type":"Reboot"}`, 400, "unknown variant `Reboot`"},
		{"PUT", "/metrics", `{}`, 400, "missing field `metrics_path`"},
		{"PUT", "/nope", `{}`, 400, "Invalid request method and/or path"},
	})
}

func TestPhaseRules(t *testing.T) {
	m, dir := newTestMachine(t)
	run(t, m, []step{
		{"GET", "/", "", 200, ""},
		{"PATCH", "/vm", `{"state":"Paused"}`, 400, "not supported before starting"},
		{"PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, 400, "not supported before starting"},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, "without kernel configuration"},
		{"PUT", "/metrics", `{"metrics_path":"` + dir + `/log"}`, 204, ""},
		{"PUT", "/metrics", `{"metrics_path":"` + dir + `/log"}`, 400, "Reinitialization of metrics"},
		{"PUT", "/boot-source", `{"kernel_image_path":"` + dir + `/vmlinux"}`, 204, ""},
		{"PUT", "/snapshot/load", `{"snapshot_path":"x","mem_file_path":"y"}`, 400, "not allowed after configuring boot-specific resources"},
		{"PUT", "/drives/a", `{"drive_id":"a","path_on_host":"` + dir + `/rootfs","is_root_device":true,"is_read_only":false}`, 204, ""},
		{"PUT", "/drives/b", `{"drive_id":"b","path_on_host":"` + dir + `/rootfs","is_root_device":true,"is_read_only":true}`, 400, "root block device already exists"},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 204, ""},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, "not supported after starting"},
		{"PUT", "/drives/c", `{"drive_id":"c","path_on_host":"` + dir + `/rootfs","is_root_device":false,"is_read_only":true}`, 400, "not supported after starting"},
		{"PUT", "/snapshot/create", `{"snapshot_path":"` + dir + `/s","mem_file_path":"` + dir + `/m"}`, 400, "pause it first"},
		{"PATCH", "/vm", `{"state":"Paused"}`, 204, ""},
		{"PUT", "/snapshot/create", `{"snapshot_path":"` + dir + `/s","mem_file_path":"` + dir + `/m"}`, 204, ""},
		{"PATCH", "/vm", `{"state":"Resumed"}`, 204, ""},
		{"PUT", "/actions", `{"action_type":"FlushMetrics"}`, 204, ""},
	})
}

func TestGetAnswers(t *testing.T) {
	m, _ := newTestMachine(t)
	get := func(path string) map[string]any {
		rec := httptest.NewRecorder()
		m.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 {
			t.Fatalf("GET %s: %d", path, rec.Code)
		}
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	info := get("/")
	if info["app_name"] != "Firecracker" || info["id"] != "vm1" || info["state"] != "Not started" || info["vmm_version"] != DefaultVersion {
		t.Errorf("GET / = %v", info)
	}
	if mc := get("/machine-config"); mc["vcpu_count"] != float64(1) || mc["mem_size_mib"] != float64(128) {
		t.Errorf("default machine-config = %v", mc)
	}
	cfg := get("/vm/config")
	for _, k := range []string{"drives", "network-interfaces", "machine-config", "boot-source"} {
		if _, ok := cfg[k]; !ok {
			t.Errorf("GET /vm/config lacks %q: %v", k, cfg)
		}
	}
}

func TestMainVersionAndArgs(t *testing.T) {
	var out, errb strings.Builder
	if code := Main([]string{"--version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "Firecracker v"+DefaultVersion) {
		t.Errorf("--version: %d %q", code, out.String())
	}
	if code := Main([]string{"--bogus"}, &out, &errb); code == 0 {
		t.Error("unknown argument accepted")
	}
}

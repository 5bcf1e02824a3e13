package fakefc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// kind is a JSON value type of the API description.
type kind int

const (
	kString kind = iota
	kInt
	kBool
	kObject
	kArray
)

func (k kind) String() string {
	return [...]string{"a string", "an integer", "a boolean", "an object", "an array"}[k]
}

// schema is one request body definition of Firecracker's swagger
// (src/firecracker/swagger/firecracker.yaml): every property and which
// are required. Firecracker's serde structs deny unknown fields, so the
// fake does too.
type schema struct {
	name     string
	fields   map[string]kind
	required []string
	enums    map[string][]string
}

var (
	rateLimiter = kObject

	schemaMachineConfig = schema{name: "MachineConfiguration",
		fields: map[string]kind{"vcpu_count": kInt, "mem_size_mib": kInt, "smt": kBool, "track_dirty_pages": kBool,
			"cpu_template": kString, "huge_pages": kString},
		required: []string{"vcpu_count", "mem_size_mib"},
		enums: map[string][]string{"huge_pages": {"None", "2M", "Transparent"},
			"cpu_template": {"C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"}}}
	schemaBootSource = schema{name: "BootSource",
		fields:   map[string]kind{"kernel_image_path": kString, "boot_args": kString, "initrd_path": kString},
		required: []string{"kernel_image_path"}}
	schemaDrive = schema{name: "Drive",
		fields: map[string]kind{"drive_id": kString, "partuuid": kString, "is_root_device": kBool, "cache_type": kString,
			"is_read_only": kBool, "path_on_host": kString, "rate_limiter": rateLimiter, "io_engine": kString, "socket": kString},
		required: []string{"drive_id", "is_root_device"},
		enums:    map[string][]string{"cache_type": {"Unsafe", "Writeback"}, "io_engine": {"Sync", "Async"}}}
	schemaNetworkInterface = schema{name: "NetworkInterface",
		fields: map[string]kind{"iface_id": kString, "host_dev_name": kString, "guest_mac": kString,
			"rx_rate_limiter": rateLimiter, "tx_rate_limiter": rateLimiter},
		required: []string{"iface_id", "host_dev_name"}}
	schemaVsock = schema{name: "Vsock",
		fields:   map[string]kind{"guest_cid": kInt, "uds_path": kString, "vsock_id": kString},
		required: []string{"guest_cid", "uds_path"}}
	schemaMMDSConfig = schema{name: "MmdsConfig",
		fields:   map[string]kind{"version": kString, "network_interfaces": kArray, "ipv4_address": kString, "imds_compat": kBool},
		required: []string{"network_interfaces"},
		enums:    map[string][]string{"version": {"V1", "V2"}}}
	schemaLogger = schema{name: "Logger",
		fields: map[string]kind{"level": kString, "log_path": kString, "show_level": kBool, "show_log_origin": kBool, "module": kString},
		enums:  map[string][]string{"level": {"Error", "Warning", "Info", "Debug", "Trace", "Off"}}}
	schemaMetrics = schema{name: "Metrics",
		fields: map[string]kind{"metrics_path": kString}, required: []string{"metrics_path"}}
	schemaAction = schema{name: "InstanceActionInfo",
		fields: map[string]kind{"action_type": kString}, required: []string{"action_type"},
		enums: map[string][]string{"action_type": {"FlushMetrics", "InstanceStart", "SendCtrlAltDel"}}}
	schemaVM = schema{name: "Vm",
		fields: map[string]kind{"state": kString}, required: []string{"state"},
		enums: map[string][]string{"state": {"Paused", "Resumed"}}}
	schemaSnapshotCreate = schema{name: "SnapshotCreateParams",
		fields:   map[string]kind{"mem_file_path": kString, "snapshot_path": kString, "snapshot_type": kString},
		required: []string{"mem_file_path", "snapshot_path"},
		enums:    map[string][]string{"snapshot_type": {"Full", "Diff"}}}
	schemaSnapshotLoad = schema{name: "SnapshotLoadParams",
		fields: map[string]kind{"enable_diff_snapshots": kBool, "track_dirty_pages": kBool, "mem_file_path": kString,
			"mem_backend": kObject, "snapshot_path": kString, "resume_vm": kBool, "network_overrides": kArray,
			"vsock_override": kObject, "clock_realtime": kBool},
		required: []string{"snapshot_path"}}
)

// validate checks body against s and returns the decoded fields. The
// messages follow Firecracker's ("An error occurred when deserializing the
// json body of a request: ...").
func (s schema) validate(body []byte) (map[string]json.RawMessage, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("An error occurred when deserializing the json body of a request: "+format, args...)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, fail("EOF while parsing a value at line 1 column 0")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, fail("invalid type: expected struct %s", s.name)
	}
	names := make([]string, 0, len(s.fields))
	for n := range s.fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for name, raw := range fields {
		k, ok := s.fields[name]
		if !ok {
			return nil, fail("unknown field `%s`, expected one of `%s`", name, strings.Join(names, "`, `"))
		}
		if !hasKind(raw, k) {
			return nil, fail("invalid type for field `%s`: expected %s", name, k)
		}
		if allowed, ok := s.enums[name]; ok {
			var v string
			_ = json.Unmarshal(raw, &v)
			if !slices.Contains(allowed, v) {
				return nil, fail("unknown variant `%s`, expected one of `%s`", v, strings.Join(allowed, "`, `"))
			}
		}
	}
	for _, name := range s.required {
		if _, ok := fields[name]; !ok {
			return nil, fail("missing field `%s`", name)
		}
	}
	return fields, nil
}

func hasKind(raw json.RawMessage, k kind) bool {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return false
	}
	switch k {
	case kString:
		_, ok := v.(string)
		return ok
	case kBool:
		_, ok := v.(bool)
		return ok
	case kInt:
		f, ok := v.(float64)
		return ok && f == float64(int64(f)) && f >= 0
	case kObject:
		_, ok := v.(map[string]any)
		return ok
	case kArray:
		_, ok := v.([]any)
		return ok
	}
	return false
}

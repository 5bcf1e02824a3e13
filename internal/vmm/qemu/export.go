package qemu

import (
	"context"
	"encoding/json"
	"path/filepath"
)

// QMPCommand runs one QMP command on the QEMU whose QMP socket is at
// socketPath and returns its "return" value. It dials, negotiates and
// closes per call, so it suits occasional commands from other programs
// (the Firecracker test double drives its QEMU guest with it).
func QMPCommand(ctx context.Context, socketPath, command string, args any) (json.RawMessage, error) {
	c, err := dialQMP(ctx, socketPath)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.execute(ctx, command, args)
}

// CtrlAltDeleteKeys is the send-key argument that presses Ctrl-Alt-Del.
func CtrlAltDeleteKeys() any { return ctrlAltDelete }

// QMPSocketPath is where a QEMU started from Driver.CommandLine(spec)
// listens for QMP: a file in spec.RunDir.
func QMPSocketPath(runDir string) string { return filepath.Join(runDir, qmpSocketName) }

package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/banger-dev/banger/internal/api"
)

// maxFramePayload bounds one attach frame; input comes in keystrokes and
// pastes, never megabytes at once.
const maxFramePayload = 1 << 20

// WriteFrame writes one attach frame (see api.StreamFrame).
func WriteFrame(w io.Writer, t api.StreamFrame, payload []byte) error {
	if len(payload) > maxFramePayload {
		return fmt.Errorf("attach frame of %d bytes exceeds %d", len(payload), maxFramePayload)
	}
	msg := make([]byte, 5+len(payload))
	msg[0] = byte(t)
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(payload)))
	copy(msg[5:], payload)
	_, err := w.Write(msg)
	return err
}

// ReadFrame reads one attach frame.
func ReadFrame(r io.Reader) (api.StreamFrame, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFramePayload {
		return 0, nil, fmt.Errorf("attach frame of %d bytes exceeds %d", n, maxFramePayload)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return api.StreamFrame(hdr[0]), payload, nil
}

// ResizePayload encodes a FrameResize payload.
func ResizePayload(rows, cols int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], uint16(rows))
	binary.BigEndian.PutUint16(b[2:], uint16(cols))
	return b[:]
}

// parseResize decodes a FrameResize payload.
func parseResize(p []byte) (rows, cols int, err error) {
	if len(p) != 4 {
		return 0, 0, errors.New("resize frame: want 4 bytes")
	}
	return int(binary.BigEndian.Uint16(p[0:])), int(binary.BigEndian.Uint16(p[2:])), nil
}

package builder

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
)

// compression is one kernel payload format: its magic and how to undo it.
// Go's standard library covers gzip and bzip2; the rest use the usual tools
// (xz-utils, zstd, lz4, lzop), which must be on PATH for kernels using them.
type compression struct {
	name  string
	magic []byte
	tool  []string // external decompressor reading stdin, writing stdout
	inGo  func(io.Reader) (io.Reader, error)
}

var compressions = []compression{
	{name: "gzip", magic: []byte{0x1f, 0x8b, 0x08}, inGo: func(r io.Reader) (io.Reader, error) {
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		z.Multistream(false) // the payload is followed by a size trailer
		return z, nil
	}},
	{name: "bzip2", magic: []byte("BZh"), inGo: func(r io.Reader) (io.Reader, error) { return bzip2.NewReader(r), nil }},
	{name: "xz", magic: []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, tool: []string{"xz", "-dc"}},
	{name: "zstd", magic: []byte{0x28, 0xb5, 0x2f, 0xfd}, tool: []string{"zstd", "-dc"}},
	{name: "lzma", magic: []byte{0x5d, 0x00, 0x00}, tool: []string{"xz", "--format=lzma", "-dc"}},
	{name: "lz4", magic: []byte{0x02, 0x21, 0x4c, 0x18}, tool: []string{"lz4", "-dc"}},
	{name: "lzo", magic: []byte{0x89, 'L', 'Z', 'O'}, tool: []string{"lzop", "-dc"}},
}

// ExtractVmlinux writes the uncompressed ELF kernel (vmlinux) contained in
// the bzImage at bzImagePath to outPath, as Firecracker needs it. It uses
// the boot protocol header's payload location when present and otherwise
// scans for compression magics, accepting the first candidate that
// decompresses to a valid ELF image.
func ExtractVmlinux(ctx context.Context, bzImagePath, outPath string) error {
	image, err := os.ReadFile(bzImagePath)
	if err != nil {
		return fmt.Errorf("read kernel image: %w", err)
	}
	vmlinux, _, err := findVmlinux(ctx, image)
	if err != nil {
		return fmt.Errorf("extract vmlinux from %s: %w", bzImagePath, err)
	}
	if err := os.WriteFile(outPath, vmlinux, 0o644); err != nil {
		return fmt.Errorf("write vmlinux: %w", err)
	}
	return nil
}

func findVmlinux(ctx context.Context, image []byte) ([]byte, string, error) {
	if isELF(image) {
		return image, "none", nil
	}
	if payload, ok := bzImagePayload(image); ok {
		if out, name, err := decompressCandidate(ctx, payload); err == nil {
			return out, name, nil
		} else if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
	}
	// Fall back to scanning: every offset where some magic occurs, in order.
	type hit struct {
		off int
		c   compression
	}
	var hits []hit
	for _, c := range compressions {
		for off := 0; ; {
			i := bytes.Index(image[off:], c.magic)
			if i < 0 {
				break
			}
			hits = append(hits, hit{off + i, c})
			off += i + 1
		}
	}
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].off < hits[j].off })
	var lastErr error = errors.New("no compressed payload found")
	for _, h := range hits {
		out, err := decompress(ctx, h.c, image[h.off:])
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		if err == nil {
			return out, h.c.name, nil
		}
		lastErr = err
	}
	return nil, "", fmt.Errorf("no compressed ELF kernel found (last attempt: %v)", lastErr)
}

// bzImagePayload returns the compressed kernel as located by the x86 boot
// protocol header (version 2.08 and later record its offset and length).
func bzImagePayload(image []byte) ([]byte, bool) {
	if len(image) < 0x250 || string(image[0x202:0x206]) != "HdrS" {
		return nil, false
	}
	if binary.LittleEndian.Uint16(image[0x206:]) < 0x0208 {
		return nil, false
	}
	setupSects := int(image[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(image[0x248:]))
	length := int(binary.LittleEndian.Uint32(image[0x24c:]))
	if start <= 0 || length <= 0 || start+length > len(image) {
		return nil, false
	}
	return image[start : start+length], true
}

func decompressCandidate(ctx context.Context, payload []byte) ([]byte, string, error) {
	for _, c := range compressions {
		if bytes.HasPrefix(payload, c.magic) {
			out, err := decompress(ctx, c, payload)
			return out, c.name, err
		}
	}
	return nil, "", errors.New("unknown payload compression")
}

// decompress undoes one format. Trailing bytes after the compressed stream
// make some tools exit non-zero after writing everything, so the output is
// judged by whether it is a valid ELF file, not by the exit status.
func decompress(ctx context.Context, c compression, data []byte) ([]byte, error) {
	var out []byte
	if c.inGo != nil {
		r, err := c.inGo(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		out, _ = io.ReadAll(r)
	} else {
		if _, err := exec.LookPath(c.tool[0]); err != nil {
			return nil, fmt.Errorf("kernel is %s-compressed and %s is not installed: install it (Debian package for %s)", c.name, c.tool[0], c.tool[0])
		}
		cmd := exec.CommandContext(ctx, c.tool[0], c.tool[1:]...)
		cmd.Stdin = bytes.NewReader(data)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		_ = cmd.Run()
		out = stdout.Bytes()
	}
	if !isELF(out) {
		return nil, fmt.Errorf("%s: output is not an ELF image", c.name)
	}
	f, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("%s: output is not a valid ELF image: %w", c.name, err)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("%s: ELF image is %v, not an executable kernel", c.name, f.Type)
	}
	return out, nil
}

func isELF(b []byte) bool { return len(b) > 4 && string(b[:4]) == elf.ELFMAG }

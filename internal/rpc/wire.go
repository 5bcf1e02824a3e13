// Package rpc is banger's JSON-RPC 2.0 transport over a stream socket.
//
// Framing: every message is one JSON value on one line (newline-delimited
// JSON). Both requests and responses are single lines; a batch is a JSON
// array on one line and its responses come back as one array on one line.
//
// The server implements the whole of JSON-RPC 2.0: requests, notifications
// (never answered, not even with an error), batches, every id type (echoed
// back byte for byte), and the standard error codes. Calls on one
// connection run concurrently and their responses may come back out of
// order. When a client goes away, the contexts of its in-flight calls are
// cancelled.
//
// Handlers return *api.Error to choose the error code, message and data;
// context.Canceled becomes api.KindCancelled and any other error becomes
// -32603 (internal error) with the error's text.
//
// As an extension in the reserved "rpc." namespace, a client may send the
// notification "rpc.cancel" with params {"id": <id>} to cancel the context
// of one of its own in-flight calls. Client.Call sends it when its context
// ends before the response arrives.
package rpc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/banger-dev/banger/internal/api"
)

// DefaultMaxMessageBytes bounds one incoming line when
// ServerOptions.MaxMessageBytes is zero.
const DefaultMaxMessageBytes = 4 << 20

// MethodCancel is the notification that cancels an in-flight call of the
// same connection. Its params are {"id": <id of the call>}.
const MethodCancel = "rpc.cancel"

// cancelParams are the params of MethodCancel.
type cancelParams struct {
	ID json.RawMessage `json:"id"`
}

var nullID = json.RawMessage("null")

// errorObject is the "error" member of a response. Data stays raw on the
// client side so a non-banger data value does not break decoding.
type errorObject struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// response is the wire shape of a response as the client decodes it.
type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *errorObject    `json:"error"`
}

// marshalNoEscape encodes v without HTML escaping, so strings reach the
// peer as they were written.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// resultResponse builds a success response. The id is copied verbatim so
// the client sees exactly the bytes it sent.
func resultResponse(id json.RawMessage, result []byte) []byte {
	out := make([]byte, 0, len(id)+len(result)+40)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, id...)
	out = append(out, `,"result":`...)
	out = append(out, result...)
	return append(out, '}')
}

// errorResponse builds an error response. A nil id means null.
func errorResponse(id json.RawMessage, e *api.Error) []byte {
	if id == nil {
		id = nullID
	}
	body, err := marshalNoEscape(e)
	if err != nil {
		// api.Error holds only strings and ints; this cannot fail, but a
		// response must still go out.
		body = []byte(`{"code":-32603,"message":"cannot encode error"}`)
	}
	out := make([]byte, 0, len(id)+len(body)+40)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, id...)
	out = append(out, `,"error":`...)
	out = append(out, body...)
	return append(out, '}')
}

// protocolError is an error of the JSON-RPC protocol itself (no data).
func protocolError(code int, format string, args ...any) *api.Error {
	return &api.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// invalidParams is the -32602 error; its kind tells users the fault is in
// their input.
func invalidParams(format string, args ...any) *api.Error {
	return &api.Error{Code: api.CodeInvalidParams, Message: fmt.Sprintf(format, args...),
		Data: &api.ErrorData{Kind: api.KindInvalidInput}}
}

// errLineTooLong reports a line longer than the reader's limit. The rest
// of the line has been discarded, so the stream stays in sync.
var errLineTooLong = errors.New("line exceeds the maximum message size")

// lineReader reads newline-terminated messages of bounded size.
type lineReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its newline. The slice is valid
// until the following call. A final line without a newline is returned
// before io.EOF. errLineTooLong is returned once per oversized line, after
// that line has been consumed in full.
func (lr *lineReader) next() ([]byte, error) {
	lr.buf = lr.buf[:0]
	tooLong := false
	for {
		chunk, err := lr.r.ReadSlice('\n')
		if !tooLong {
			if len(lr.buf)+len(chunk) > lr.max+1 { // +1: the newline is not part of the message
				tooLong = true
				lr.buf = lr.buf[:0]
			} else {
				lr.buf = append(lr.buf, chunk...)
			}
		}
		switch {
		case err == nil:
			if tooLong {
				return nil, errLineTooLong
			}
			return bytes.TrimSuffix(lr.buf, []byte("\n")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(lr.buf) > 0 && !tooLong:
			// A last message without a newline is still a message; EOF
			// follows on the next call.
			if len(lr.buf) > lr.max {
				return nil, errLineTooLong
			}
			return lr.buf, nil
		default:
			return nil, err
		}
	}
}

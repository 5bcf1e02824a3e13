package api

import (
	"errors"
	"fmt"
)

// Standard JSON-RPC 2.0 error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603
)

// banger's own codes, in the implementation-defined server-error range.
// Each comes with an Error.Data whose Kind names it.
const (
	CodeNotFound     = -32001
	CodeConflict     = -32002
	CodeInvalidName  = -32003
	CodeBusy         = -32004
	CodeInvalidInput = -32005
	CodeUnavailable  = -32006
	CodeCancelled    = -32007
	CodeGuest        = -32008
)

// ErrorKind is the machine-readable name of a banger error.
type ErrorKind string

const (
	KindNotFound     ErrorKind = "not_found"
	KindConflict     ErrorKind = "conflict"
	KindInvalidName  ErrorKind = "invalid_name"
	KindBusy         ErrorKind = "busy"
	KindInvalidInput ErrorKind = "invalid_input"
	KindUnavailable  ErrorKind = "unavailable"
	KindCancelled    ErrorKind = "cancelled"
	KindGuest        ErrorKind = "guest_error"
	KindInternal     ErrorKind = "internal"
)

var kindCodes = map[ErrorKind]int{
	KindNotFound:     CodeNotFound,
	KindConflict:     CodeConflict,
	KindInvalidName:  CodeInvalidName,
	KindBusy:         CodeBusy,
	KindInvalidInput: CodeInvalidInput,
	KindUnavailable:  CodeUnavailable,
	KindCancelled:    CodeCancelled,
	KindGuest:        CodeGuest,
	KindInternal:     CodeInternal,
}

// Code returns the JSON-RPC code for a kind.
func (k ErrorKind) Code() int {
	if c, ok := kindCodes[k]; ok {
		return c
	}
	return CodeInternal
}

// ErrorData is the data object of every banger error.
type ErrorData struct {
	Kind ErrorKind `json:"kind"`
	// Resource and ID say what the error is about, when it is about one thing.
	Resource string `json:"resource,omitempty"`
	ID       string `json:"id,omitempty"`
	// Hint says what to do about it.
	Hint string `json:"hint,omitempty"`
}

// Error is a banger error as it crosses the wire. Domain packages return
// it (or wrap it) so the RPC layer can map it to a code.
type Error struct {
	Code    int        `json:"code"`
	Message string     `json:"message"`
	Data    *ErrorData `json:"data,omitempty"`
}

func (e *Error) Error() string {
	if e.Data != nil && e.Data.Hint != "" {
		return e.Message + " (hint: " + e.Data.Hint + ")"
	}
	return e.Message
}

// Kind returns the error's kind, or KindInternal.
func (e *Error) Kind() ErrorKind {
	if e.Data != nil && e.Data.Kind != "" {
		return e.Data.Kind
	}
	return KindInternal
}

// Errorf builds an Error of the given kind.
func Errorf(kind ErrorKind, format string, args ...any) *Error {
	return &Error{Code: kind.Code(), Message: fmt.Sprintf(format, args...), Data: &ErrorData{Kind: kind}}
}

// NotFound is the error for an unknown resource.
func NotFound(resource, id string) *Error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf("%s %q not found", resource, id),
		Data: &ErrorData{Kind: KindNotFound, Resource: resource, ID: id}}
}

// WithHint returns a copy of e with a hint.
func (e *Error) WithHint(hint string) *Error {
	c := *e
	d := ErrorData{Kind: e.Kind()}
	if e.Data != nil {
		d = *e.Data
	}
	d.Hint = hint
	c.Data = &d
	return &c
}

// IsKind reports whether err (or anything it wraps) is a banger Error of kind k.
func IsKind(err error, k ErrorKind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind() == k
}

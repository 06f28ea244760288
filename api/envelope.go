package api

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// Error codes of the admin API (spec §4).
const (
	codeBadRequest       = "BAD_REQUEST"
	codeUnauthorized     = "UNAUTHORIZED"
	codeForbidden        = "FORBIDDEN"
	codeNotFound         = "NOT_FOUND"
	codeMethodNotAllowed = "METHOD_NOT_ALLOWED"
	codeConflict         = "CONFLICT"
	codeBodyTooLarge     = "BODY_TOO_LARGE"
	codeHeaderTooLarge   = "HEADERS_TOO_LARGE"
	codeValidation       = "VALIDATION_FAILED"
	codeRateLimited      = "RATE_LIMITED"
	codeStale            = "STALE"
	codeNoLeader         = "NO_LEADER"
	codeOutcomeUnknown   = "OUTCOME_UNKNOWN"
	codeInternal         = "INTERNAL"
)

// FieldError names one bad field of a request and what is wrong with it.
type FieldError struct {
	Field string `json:"field"`
	Issue string `json:"issue"`
}

// apiError is an error answer: status, code, message and field details.
type apiError struct {
	Status  int
	Code    string
	Message string
	Details []FieldError
	// RetryAfter, when set, is sent as the Retry-After header (seconds).
	RetryAfter int
}

func newError(status int, code, msg string) *apiError {
	return &apiError{Status: status, Code: code, Message: msg}
}

func validationError(details []FieldError) *apiError {
	return &apiError{Status: fasthttp.StatusUnprocessableEntity, Code: codeValidation,
		Message: "the request has invalid fields", Details: details}
}

type meta struct {
	RequestID  string      `json:"request_id"`
	Timestamp  string      `json:"timestamp"`
	Index      uint64      `json:"index,omitempty"`
	NextCursor string      `json:"next_cursor,omitempty"`
	Wait       *waitResult `json:"wait,omitempty"` // ?wait=all on a write
}

// requestID is the client's X-Request-Id when it is sane, else a new one.
// It is echoed in the header and in meta.request_id.
func requestID(ctx *fasthttp.RequestCtx) string {
	if id, ok := ctx.UserValue(requestIDKey).(string); ok {
		return id
	}
	id := string(ctx.Request.Header.Peek("X-Request-Id"))
	if !saneRequestID(id) {
		var b [12]byte
		rand.Read(b[:])
		id = "req_" + hex.EncodeToString(b[:])
	}
	ctx.SetUserValue(requestIDKey, id)
	ctx.Response.Header.Set("X-Request-Id", id)
	return id
}

type ctxKey int

const requestIDKey ctxKey = iota

func saneRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

func newMeta(ctx *fasthttp.RequestCtx) meta {
	return meta{RequestID: requestID(ctx), Timestamp: time.Now().UTC().Format(time.RFC3339Nano)}
}

// writeData sends a success envelope.
func writeData(ctx *fasthttp.RequestCtx, status int, data any, m meta) {
	writeJSON(ctx, status, struct {
		Data any  `json:"data"`
		Meta meta `json:"meta"`
	}{data, m})
}

// writeError sends an error envelope.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	if e.RetryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	details := e.Details
	if details == nil {
		details = []FieldError{}
	}
	type body struct {
		Code    string       `json:"code"`
		Message string       `json:"message"`
		Details []FieldError `json:"details"`
	}
	writeJSON(ctx, e.Status, struct {
		Error body `json:"error"`
		Meta  meta `json:"meta"`
	}{body{e.Code, e.Message, details}, newMeta(ctx)})
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = fasthttp.StatusInternalServerError, []byte(`{"error":{"code":"INTERNAL","message":"encoding the answer failed","details":[]}}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

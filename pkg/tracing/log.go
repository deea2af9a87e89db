package tracing

import (
	"context"
	"log/slog"
)

// TraceIDKey is the log attribute that carries a message's trace id.
const TraceIDKey = "trace_id"

// LogHandler wraps h so that a record logged with a context carrying a
// span context (log.InfoContext(ctx, ...) inside a stage's handling of a
// message) gets the trace id as trace_id: a log line leads to the trace,
// and the trace to every stage's log lines for the same alert.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(logHandler); ok {
		return h
	}
	return logHandler{h}
}

type logHandler struct{ slog.Handler }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := TraceID(ctx); id != "" {
		r.AddAttrs(slog.String(TraceIDKey, id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(as)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	return logHandler{h.Handler.WithGroup(name)}
}

// Package logging makes the structured logger of both binaries.
package logging

import (
	"fmt"
	"io"
	"log/slog"
)

// New returns a slog logger writing text or JSON records to w.
func New(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: must be text or json, got %q", format)
}
